/* utf8: decoding by the Unicode standard's table of well-formed sequences
 * (no overlong forms, no surrogates, nothing above U+10FFFF). */
#include "ftpipe/base/utf8.h"

#include <string.h>

int32_t ft_utf8_next(const char *text, size_t length, size_t *offset)
{
    const unsigned char *s = (const unsigned char *)text + *offset;
    size_t left = length - *offset;
    unsigned char lead = s[0];
    if (lead < 0x80) {
        *offset += 1;
        return lead;
    }
    size_t n;
    uint32_t codepoint, minimum;
    if (lead >= 0xC2 && lead <= 0xDF) {
        n = 2, codepoint = lead & 0x1F, minimum = 0x80;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        n = 3, codepoint = lead & 0x0F, minimum = 0x800;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        n = 4, codepoint = lead & 0x07, minimum = 0x10000;
    } else {
        *offset += 1;
        return -1;
    }
    if (left < n) {
        *offset += 1;
        return -1;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *offset += 1;
            return -1;
        }
        codepoint = (codepoint << 6) | (s[i] & 0x3F);
    }
    if (codepoint < minimum || codepoint > 0x10FFFF || (codepoint >= 0xD800 && codepoint <= 0xDFFF)) {
        *offset += 1;
        return -1;
    }
    *offset += n;
    return (int32_t)codepoint;
}

size_t ft_utf8_invalid_offset(const char *text, size_t length)
{
    size_t offset = 0;
    while (offset < length) {
        /* Most text is ASCII: skip it eight bytes at a time. */
        while (offset + 8 <= length) {
            uint64_t word;
            memcpy(&word, text + offset, 8);
            if (word & 0x8080808080808080ull)
                break;
            offset += 8;
        }
        if (offset >= length)
            break;
        size_t at = offset;
        if (ft_utf8_next(text, length, &offset) < 0)
            return at;
    }
    return length;
}

int32_t ft_utf8_previous(const char *text, size_t end, size_t *start)
{
    size_t at = end - 1;
    while (at > 0 && ((unsigned char)text[at] & 0xC0) == 0x80 && end - at < 4)
        at--;
    *start = at;
    size_t offset = at;
    return ft_utf8_next(text, end, &offset);
}

/* The longest start of a valid sequence, as Rust's from_utf8_lossy cuts. */
size_t ft_utf8_invalid_length(const char *text, size_t length)
{
    const unsigned char *s = (const unsigned char *)text;
    unsigned char lead = s[0];
    if (lead < 0x80)
        return 0;
    size_t width = lead >= 0xC2 && lead <= 0xDF ? 2 : lead >= 0xE0 && lead <= 0xEF ? 3 : lead >= 0xF0 && lead <= 0xF4 ? 4 : 0;
    if (width == 0 || length < 2)
        return 1;
    unsigned char low = 0x80, high = 0xBF; /* the allowed range of the second byte */
    if (lead == 0xE0)
        low = 0xA0;
    else if (lead == 0xED)
        high = 0x9F;
    else if (lead == 0xF0)
        low = 0x90;
    else if (lead == 0xF4)
        high = 0x8F;
    if (s[1] < low || s[1] > high)
        return 1;
    for (size_t i = 2; i < width; i++)
        if (i >= length || (s[i] & 0xC0) != 0x80)
            return i;
    return 0;
}

size_t ft_utf8_encode(uint32_t codepoint, char out[4])
{
    if (codepoint < 0x80) {
        out[0] = (char)codepoint;
        return 1;
    }
    if (codepoint < 0x800) {
        out[0] = (char)(0xC0 | (codepoint >> 6));
        out[1] = (char)(0x80 | (codepoint & 0x3F));
        return 2;
    }
    if (codepoint < 0x10000) {
        out[0] = (char)(0xE0 | (codepoint >> 12));
        out[1] = (char)(0x80 | ((codepoint >> 6) & 0x3F));
        out[2] = (char)(0x80 | (codepoint & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (codepoint >> 18));
    out[1] = (char)(0x80 | ((codepoint >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((codepoint >> 6) & 0x3F));
    out[3] = (char)(0x80 | (codepoint & 0x3F));
    return 4;
}
