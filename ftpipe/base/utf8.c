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
