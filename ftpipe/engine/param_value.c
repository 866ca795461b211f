/* param_value: parameter values by type (sizes and durations through base/units,
 * bools, numbers, lists, choices), the canonical text that enters keys, and the
 * edit distance behind "did you mean". Numbers are parsed by hand so that "1.5"
 * means the same under every locale. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/base/units.h"
#include "ftpipe/engine/rules.h"

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static int parse_integer(const char *text, int64_t *out)
{
    const char *p = text + (text[0] == '-' || text[0] == '+');
    if (!*p)
        return ft_error("'%s' is not an integer: expected a whole number, like 8", text);
    uint64_t magnitude = 0;
    for (; *p; p++) {
        if (!is_digit(*p))
            return ft_error("'%s' is not an integer: expected a whole number, like 8", text);
        if (magnitude > (UINT64_MAX - 9) / 10)
            return ft_error("'%s' is too large for an integer", text);
        magnitude = magnitude * 10 + (uint64_t)(*p - '0');
    }
    if (magnitude > (uint64_t)INT64_MAX)
        return ft_error("'%s' is too large for an integer", text);
    *out = text[0] == '-' ? -(int64_t)magnitude : (int64_t)magnitude;
    return 0;
}

/* [+-] digits [. digits] [e [+-] digits], or [+-] . digits [...]: no hex, inf or nan. */
static bool is_float_text(const char *p)
{
    p += (*p == '-' || *p == '+');
    size_t digits = 0;
    while (is_digit(*p))
        p++, digits++;
    if (*p == '.')
        for (p++; is_digit(*p); p++)
            digits++;
    if (digits == 0)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        p += (*p == '-' || *p == '+');
        if (!is_digit(*p))
            return false;
        while (is_digit(*p))
            p++;
    }
    return *p == '\0';
}

/* The shortest digits that read back as `value`, written positionally between
 * 1e-7 and 1e21 and in exponent form beyond (JavaScript's rule). */
static char *canonical_float(double value)
{
    if (value == 0)
        return ft_xstrdup("0");
    char scientific[40];
    for (int precision = 0; precision < 17; precision++) {
        snprintf(scientific, sizeof scientific, "%.*e", precision, value);
        if (strtod(scientific, NULL) == value)
            break;
    }
    /* scientific is [-]d[.ddd]e[+-]xx */
    char digits[24];
    size_t n_digits = 0;
    const char *p = scientific + (scientific[0] == '-');
    for (; *p != 'e'; p++)
        if (is_digit(*p))
            digits[n_digits++] = *p;
    while (n_digits > 1 && digits[n_digits - 1] == '0')
        n_digits--;
    digits[n_digits] = '\0';
    int point = atoi(p + 1) + 1; /* digits before the decimal point */
    ft_strbuf out;
    ft_strbuf_init(&out);
    if (value < 0)
        ft_strbuf_putc(&out, '-');
    if (point > 21 || point < -5) {
        ft_strbuf_putc(&out, digits[0]);
        if (n_digits > 1)
            ft_strbuf_printf(&out, ".%s", digits + 1);
        ft_strbuf_printf(&out, "e%d", point - 1);
    } else if (point <= 0) {
        ft_strbuf_puts(&out, "0.");
        for (int i = point; i < 0; i++)
            ft_strbuf_putc(&out, '0');
        ft_strbuf_puts(&out, digits);
    } else if ((size_t)point >= n_digits) {
        ft_strbuf_puts(&out, digits);
        for (size_t i = n_digits; i < (size_t)point; i++)
            ft_strbuf_putc(&out, '0');
    } else {
        ft_strbuf_add(&out, digits, (size_t)point);
        ft_strbuf_printf(&out, ".%s", digits + point);
    }
    return ft_strbuf_take(&out);
}

static int parse_float(const char *text, double *out)
{
    if (!is_float_text(text))
        return ft_error("'%s' is not a number: expected a decimal number, like 0.0001 or 1e-4", text);
    double value = strtod(text, NULL);
    if (!isfinite(value))
        return ft_error("'%s' is too large for a number", text);
    *out = value == 0 ? 0 : value; /* -0 and 0 agree */
    return 0;
}

static int parse_bool(const char *text, int64_t *out)
{
    static const char *const truths[] = {"true", "yes", "on", "1"};
    static const char *const falsehoods[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, truths[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(text, falsehoods[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return ft_error("'%s' is not a bool: expected true or false (or yes/no, on/off, 1/0)", text);
}

static int check_choice(const ft_param_rule *rule, const char *text)
{
    for (size_t i = 0; i < rule->n_choices; i++)
        if (strcmp(rule->choices[i], text) == 0)
            return 0;
    ft_strbuf message;
    ft_strbuf_init(&message);
    if (text[0])
        ft_strbuf_printf(&message, "'%s' is not a valid choice", text);
    else
        ft_strbuf_puts(&message, "missing value");
    ft_strbuf_puts(&message, ": expected one of ");
    for (size_t i = 0; i < rule->n_choices; i++)
        ft_strbuf_printf(&message, "%s%s", i ? ", " : "", rule->choices[i]);
    const char *nearest = ft_closest_name(text, (const char *const *)rule->choices, rule->n_choices);
    if (nearest)
        ft_strbuf_printf(&message, " (did you mean '%s'?)", nearest);
    int result = ft_error("%s", message.data);
    ft_strbuf_free(&message);
    return result;
}

static void split_list(const char *text, ft_param_value *out)
{
    out->items = ft_xcalloc(strlen(text) / 2 + 1, sizeof *out->items);
    ft_strbuf joined;
    ft_strbuf_init(&joined);
    const char *p = text;
    for (;;) {
        while (is_blank(*p))
            p++;
        if (!*p)
            break;
        const char *end = p;
        while (*end && !is_blank(*end))
            end++;
        out->items[out->n_items++] = ft_xstrndup(p, (size_t)(end - p));
        if (joined.length)
            ft_strbuf_putc(&joined, ' ');
        ft_strbuf_add(&joined, p, (size_t)(end - p));
        p = end;
    }
    out->canonical = ft_strbuf_take(&joined);
}

static const char *const expected_by_type[] = {
    [FT_TYPE_INT] = "a whole number, like 8",
    [FT_TYPE_FLOAT] = "a decimal number, like 0.0001 or 1e-4",
    [FT_TYPE_SIZE] = "a number with an optional unit K, M, G or T, like 2G",
    [FT_TYPE_DURATION] = "numbers with units d, h, m, s or ms, like 30m or 1h30m",
    [FT_TYPE_BOOL] = "true or false (or yes/no, on/off, 1/0)",
    [FT_TYPE_PATH] = "a file or folder path",
};

/* A number's canonical text, without printf (every stage's resources are numbers). */
static char *decimal_text(int64_t value)
{
    char digits[24];
    size_t n = 0;
    uint64_t magnitude = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0)
        digits[sizeof digits - 1 - n++] = '-';
    return ft_xstrndup(digits + sizeof digits - n, n);
}

int ft_value_parse(const ft_param_rule *rule, const char *text, ft_param_value *out)
{
    memset(out, 0, sizeof *out);
    out->rule = rule;
    if (!text[0] && rule->type != FT_TYPE_STRING && rule->type != FT_TYPE_LIST && rule->type != FT_TYPE_CHOICE)
        return ft_error("missing value: expected %s", expected_by_type[rule->type]);
    int result = 0;
    switch (rule->type) {
    case FT_TYPE_STRING:
    case FT_TYPE_PATH:
        break;
    case FT_TYPE_CHOICE:
        result = check_choice(rule, text);
        break;
    case FT_TYPE_INT:
        result = parse_integer(text, &out->integer);
        break;
    case FT_TYPE_FLOAT:
        result = parse_float(text, &out->real);
        if (result == 0)
            out->canonical = canonical_float(out->real);
        break;
    case FT_TYPE_SIZE:
        result = ft_parse_size_bytes(text, &out->integer);
        break;
    case FT_TYPE_DURATION:
        result = ft_parse_duration_ms(text, &out->integer);
        break;
    case FT_TYPE_BOOL:
        result = parse_bool(text, &out->integer);
        if (result == 0)
            out->canonical = ft_xstrdup(out->integer ? "true" : "false");
        break;
    case FT_TYPE_LIST:
        split_list(text, out);
        break;
    }
    if (result != 0) {
        ft_value_free(out);
        return -1;
    }
    out->text = ft_xstrdup(text);
    if (!out->canonical) {
        bool numeric = rule->type == FT_TYPE_INT || rule->type == FT_TYPE_SIZE || rule->type == FT_TYPE_DURATION;
        out->canonical = numeric ? decimal_text(out->integer) : ft_xstrdup(text);
    }
    return 0;
}

void ft_value_free(ft_param_value *value)
{
    free(value->text);
    free(value->canonical);
    for (size_t i = 0; i < value->n_items; i++)
        free(value->items[i]);
    free(value->items);
    value->text = value->canonical = NULL;
    value->items = NULL;
    value->n_items = 0;
}

size_t ft_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t *previous = ft_xcalloc(lb + 1, sizeof *previous);
    size_t *current = ft_xcalloc(lb + 1, sizeof *current);
    for (size_t j = 0; j <= lb; j++)
        previous[j] = j;
    for (size_t i = 1; i <= la; i++) {
        current[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t substitute = previous[j - 1] + (a[i - 1] != b[j - 1]);
            size_t remove = previous[j] + 1;
            size_t insert = current[j - 1] + 1;
            size_t best = substitute < remove ? substitute : remove;
            current[j] = best < insert ? best : insert;
        }
        size_t *swap = previous;
        previous = current;
        current = swap;
    }
    size_t distance = previous[lb];
    free(previous);
    free(current);
    return distance;
}

const char *ft_closest_name(const char *wanted, const char *const *names, size_t n_names)
{
    /* Close enough to be a typo: two edits (a swap of two letters is two), or one
     * in three letters for long names; never a rewrite of the whole name. */
    size_t length = strlen(wanted);
    size_t limit = length / 3 > 2 ? length / 3 : 2;
    const char *best = NULL;
    size_t best_distance = limit + 1;
    for (size_t i = 0; i < n_names; i++) {
        size_t distance = ft_edit_distance(wanted, names[i]);
        if (distance < best_distance && distance < length) {
            best = names[i];
            best_distance = distance;
        }
    }
    return best;
}
