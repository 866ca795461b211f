/* units: sizes and durations as people write them. Numbers are read by hand so
 * that "1.5G" means the same under every locale. */
#include "ftpipe/base/units.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "ftpipe/base/error.h"

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* A decimal number without sign or exponent ("1.5", "4096"), at most 18 digits:
 * *mantissa holds its digits and *scale the count of those after the point.
 * Returns the number of bytes read, 0 when there is no number. */
static size_t read_decimal(const char *text, uint64_t *mantissa, int *scale)
{
    size_t i = 0;
    int n_digits = 0;
    *mantissa = 0;
    *scale = 0;
    bool point = false;
    for (;; i++) {
        if (is_digit(text[i])) {
            if (++n_digits > 18)
                return 0;
            *mantissa = *mantissa * 10 + (uint64_t)(text[i] - '0');
            *scale += point;
        } else if (text[i] == '.' && !point) {
            point = true;
        } else {
            break;
        }
    }
    if (n_digits == 0 || text[i - 1] == '.')
        return 0;
    return i;
}

/* mantissa / 10^scale * unit, rounded; false when it exceeds int64. */
static bool scaled(uint64_t mantissa, int scale, int64_t unit, int64_t *out)
{
    if (scale == 0) {
        if (mantissa > (uint64_t)(INT64_MAX / unit))
            return false;
        *out = (int64_t)mantissa * unit;
        return true;
    }
    long double value = (long double)mantissa * (long double)unit;
    for (int i = 0; i < scale; i++)
        value /= 10;
    if (value >= 9.2e18L)
        return false;
    *out = (int64_t)llroundl(value);
    return true;
}

/* -1: not of the form; -2: out of range. */
static int parse_size(const char *text, int64_t *bytes)
{
    uint64_t mantissa;
    int scale;
    size_t n = read_decimal(text, &mantissa, &scale);
    if (n == 0)
        return -1;
    const char *unit = text + n;
    int64_t multiplier = 1;
    static const char units[] = "KMGT";
    int power = 0; /* of 1024 */
    for (int i = 0; i < 4; i++)
        if (unit[0] == units[i] || unit[0] == units[i] + ('a' - 'A'))
            power = i + 1;
    for (int i = 0; i < power; i++)
        multiplier *= 1024;
    unit += power > 0;
    /* 2G, 2GB and 2GiB all mean 2 * 1024^3. */
    if (!(unit[0] == '\0' || strcasecmp(unit, "B") == 0 || (power > 0 && strcasecmp(unit, "iB") == 0)))
        return -1;
    return scaled(mantissa, scale, multiplier, bytes) ? 0 : -2;
}

static int parse_duration(const char *text, int64_t *ms)
{
    if (strcmp(text, "0") == 0) {
        *ms = 0;
        return 0;
    }
    static const struct {
        const char *name;
        int64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    int64_t total = 0;
    const char *p = text;
    if (!*p)
        return -1;
    while (*p) {
        uint64_t mantissa;
        int scale;
        size_t n = read_decimal(p, &mantissa, &scale);
        if (n == 0)
            return -1;
        p += n;
        size_t unit_length = 0;
        while (p[unit_length] >= 'a' && p[unit_length] <= 'z')
            unit_length++;
        int64_t part = -1;
        for (size_t u = 0; u < sizeof units / sizeof units[0] && part < 0; u++)
            if (strlen(units[u].name) == unit_length && strncmp(p, units[u].name, unit_length) == 0)
                if (!scaled(mantissa, scale, units[u].ms, &part))
                    return -2;
        if (part < 0)
            return -1;
        if (part > INT64_MAX - total)
            return -2;
        total += part;
        p += unit_length;
    }
    *ms = total;
    return 0;
}

int ft_parse_size_bytes(const char *text, int64_t *bytes)
{
    int result = parse_size(text, bytes);
    if (result == -2)
        return ft_error("'%s' is too large for a size", text);
    if (result != 0)
        return ft_error("'%s' is not a size: expected a number with an optional unit K, M, G or T, like 2G", text);
    return 0;
}

int ft_parse_duration_ms(const char *text, int64_t *ms)
{
    int result = parse_duration(text, ms);
    if (result == -2)
        return ft_error("'%s' is too long for a duration", text);
    if (result != 0)
        return ft_error("'%s' is not a duration: expected numbers with units d, h, m, s or ms, like 30m or 1h30m",
                        text);
    return 0;
}
