/* Tests of utf8: every length of sequence, and each way a sequence can be
 * malformed (stray continuation, truncation, overlong form, surrogate, beyond
 * U+10FFFF), decoding one byte on and validation naming the first bad byte. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/utf8.h"

static int32_t first_codepoint(const char *text, size_t *advance)
{
    size_t offset = 0;
    int32_t codepoint = ft_utf8_next(text, strlen(text), &offset);
    *advance = offset;
    return codepoint;
}

TEST(decodes_one_to_four_byte_sequences)
{
    static const struct { const char *text; int32_t codepoint; size_t bytes; } cases[] = {
        {"A", 0x41, 1}, {"\xc3\xa9", 0xe9, 2}, {"\xe2\x82\xac", 0x20ac, 3},
        {"\xf0\x9f\x98\x80", 0x1f600, 4}, {"\xf4\x8f\xbf\xbf", 0x10ffff, 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t advance;
        CHECK_INT(first_codepoint(cases[i].text, &advance), cases[i].codepoint);
        CHECK_INT(advance, cases[i].bytes);
    }
}

TEST(refuses_malformed_sequences_one_byte_at_a_time)
{
    const char *bad[] = {
        "\x80",             /* a continuation byte alone */
        "\xc3",             /* truncated */
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong, three bytes */
        "\xed\xa0\x80",     /* a surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xe2\x28\xa1",     /* a lead byte followed by ASCII */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t advance;
        CHECK_INT(first_codepoint(bad[i], &advance), -1);
        CHECK_INT(advance, 1);
    }
}

TEST(validation_names_the_first_bad_byte)
{
    const char *text = "plain ASCII past eight bytes, then \xc3\xa9 and \xff here";
    size_t length = strlen(text);
    CHECK_INT(ft_utf8_invalid_offset(text, length), strstr(text, "\xff") - text);
    CHECK_INT(ft_utf8_invalid_offset(text, length - 7), length - 7); /* cut before the bad byte */
    CHECK_INT(ft_utf8_invalid_offset("", 0), 0);
    CHECK_INT(ft_utf8_invalid_offset("\xe2\x82", 2), 0);
}

TEST(steps_back_over_one_code_point)
{
    const char *text = "a\xc3\xa9\xe2\x82\xac";
    size_t start = 99;
    CHECK_INT(ft_utf8_previous(text, 6, &start), 0x20ac);
    CHECK_INT(start, 3);
    CHECK_INT(ft_utf8_previous(text, 3, &start), 0xe9);
    CHECK_INT(start, 1);
    CHECK_INT(ft_utf8_previous(text, 1, &start), 'a');
    CHECK_INT(start, 0);
}

/* As Rust's from_utf8_lossy: one U+FFFD per longest start of a valid sequence. */
TEST(lossy_decoding_replaces_the_longest_valid_start)
{
    CHECK_INT(ft_utf8_invalid_length("A", 1), 0);
    CHECK_INT(ft_utf8_invalid_length("\xc3\xa9", 2), 0);
    CHECK_INT(ft_utf8_invalid_length("\xff", 1), 1);
    CHECK_INT(ft_utf8_invalid_length("\xe2\x82", 2), 2);     /* a truncated euro sign: one U+FFFD */
    CHECK_INT(ft_utf8_invalid_length("\xe2\x82" "A", 3), 2);
    CHECK_INT(ft_utf8_invalid_length("\xed\xa0\x80", 3), 1); /* a surrogate's second byte is out of range */
    CHECK_INT(ft_utf8_invalid_length("\xf0\x9f\x98", 3), 3);
}

TEST(encodes_every_length_and_decodes_back)
{
    const uint32_t codepoints[] = {0x41, 0x7f, 0x80, 0x7ff, 0x800, 0x20ac, 0xffff, 0x10000, 0x1f600, 0x10ffff};
    for (size_t i = 0; i < sizeof codepoints / sizeof codepoints[0]; i++) {
        char bytes[4];
        size_t n = ft_utf8_encode(codepoints[i], bytes), offset = 0;
        CHECK_INT(n, codepoints[i] < 0x80 ? 1 : codepoints[i] < 0x800 ? 2 : codepoints[i] < 0x10000 ? 3 : 4);
        CHECK_INT(ft_utf8_next(bytes, n, &offset), codepoints[i]);
        CHECK_INT(offset, n);
    }
}

int main(void)
{
    RUN(decodes_one_to_four_byte_sequences);
    RUN(refuses_malformed_sequences_one_byte_at_a_time);
    RUN(validation_names_the_first_bad_byte);
    RUN(steps_back_over_one_code_point);
    RUN(lossy_decoding_replaces_the_longest_valid_start);
    RUN(encodes_every_length_and_decodes_back);
    return check_done();
}
