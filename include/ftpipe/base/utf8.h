/* utf8: decoding and validating UTF-8 text. */
#ifndef FTPIPE_UTF8_H
#define FTPIPE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Decodes the code point at text[*offset] and advances *offset past it; returns
 * -1 (advancing one byte) on an invalid or truncated sequence. */
int32_t ft_utf8_next(const char *text, size_t length, size_t *offset);
/* Offset of the first byte that is not valid UTF-8; length when all is valid. */
size_t ft_utf8_invalid_offset(const char *text, size_t length);

#endif
