/* Tests of units: sizes in powers of 1024, durations in milliseconds, and
 * errors that say what was expected. */
#include <stdint.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/units.h"

static void check_size(const char *text, long long bytes)
{
    int64_t parsed = -1;
    CHECK_INT(ft_parse_size_bytes(text, &parsed), 0);
    CHECK_INT(parsed, bytes);
}

static void check_duration(const char *text, long long ms)
{
    int64_t parsed = -1;
    CHECK_INT(ft_parse_duration_ms(text, &parsed), 0);
    CHECK_INT(parsed, ms);
}

TEST(sizes_parse_in_powers_of_1024)
{
    check_size("2G", 2147483648LL);
    check_size("512M", 536870912LL);
    check_size("1.5G", 1610612736LL);
    check_size("4096", 4096);
    check_size("0", 0);
    check_size("1K", 1024);
    check_size("3k", 3072);
    check_size("2GiB", 2147483648LL);
    check_size("2GB", 2147483648LL);
    check_size("1T", 1099511627776LL);
    check_size("100B", 100);
}

TEST(bad_sizes_say_what_was_expected)
{
    int64_t bytes;
    CHECK_INT(ft_parse_size_bytes("2X", &bytes), -1);
    CHECK_STR(ft_error_message(), "'2X' is not a size: expected a number with an optional unit K, M, G or T, like 2G");
    CHECK_INT(ft_parse_size_bytes("-1G", &bytes), -1);
    CHECK_STR(ft_error_message(), "'-1G' is not a size: expected a number with an optional unit K, M, G or T, like 2G");
    CHECK_INT(ft_parse_size_bytes("G", &bytes), -1);
    CHECK_INT(ft_parse_size_bytes("1.", &bytes), -1);
    CHECK_INT(ft_parse_size_bytes("1 G", &bytes), -1);
    CHECK_INT(ft_parse_size_bytes("99999999T", &bytes), -1);
    CHECK_STR(ft_error_message(), "'99999999T' is too large for a size");
}

TEST(durations_parse_to_milliseconds)
{
    check_duration("30m", 1800000);
    check_duration("1h30m", 5400000);
    check_duration("10s", 10000);
    check_duration("250ms", 250);
    check_duration("2d", 172800000);
    check_duration("0", 0);
    check_duration("1.5h", 5400000);
    check_duration("1m30s", 90000);
}

TEST(bad_durations_say_what_was_expected)
{
    int64_t ms;
    CHECK_INT(ft_parse_duration_ms("30", &ms), -1);
    CHECK_STR(ft_error_message(),
              "'30' is not a duration: expected numbers with units d, h, m, s or ms, like 30m or 1h30m");
    CHECK_INT(ft_parse_duration_ms("5x", &ms), -1);
    CHECK_STR(ft_error_message(),
              "'5x' is not a duration: expected numbers with units d, h, m, s or ms, like 30m or 1h30m");
    CHECK_INT(ft_parse_duration_ms("m", &ms), -1);
    CHECK_INT(ft_parse_duration_ms("1h 30m", &ms), -1);
    CHECK_INT(ft_parse_duration_ms("", &ms), -1);
}

int main(void)
{
    RUN(sizes_parse_in_powers_of_1024);
    RUN(bad_sizes_say_what_was_expected);
    RUN(durations_parse_to_milliseconds);
    RUN(bad_durations_say_what_was_expected);
    return check_done();
}
