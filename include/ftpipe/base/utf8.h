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
/* Decodes the code point that ends at text[end - 1] (end > 0), setting *start to
 * where it begins; -1 when those bytes are not one valid sequence. */
int32_t ft_utf8_previous(const char *text, size_t end, size_t *start);
/* How many bytes at text one U+FFFD replaces when decoding lossily (the longest
 * start of a valid sequence, at least one byte, as Rust's from_utf8_lossy and
 * so Hugging Face's decode do); 0 when text starts with a valid sequence.
 * length > 0. */
size_t ft_utf8_invalid_length(const char *text, size_t length);
/* Writes a code point below U+110000 as UTF-8; returns its 1 to 4 bytes. */
size_t ft_utf8_encode(uint32_t codepoint, char out[4]);

#endif
