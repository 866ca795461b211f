/* token_decoder: ids back to text as tokenizer.json's "decoder" says. Byte-level
 * tokenizers (ByteLevel: each token's characters stand for raw bytes) and
 * SentencePiece-style ones (a Sequence of Replace or Metaspace, ByteFallback,
 * Fuse and Strip: "▁" back to spaces, "<0xXX>" tokens back to bytes, a leading
 * space stripped). Each id's bytes are worked out once, at loading. Part of the
 * tokenizer (include/ftpipe/text/tokenizer.h). */
#ifndef FTPIPE_TOKEN_DECODER_H
#define FTPIPE_TOKEN_DECODER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ft_token_decoder ft_token_decoder;

/* The "decoder" value of the tokenizer.json at path; byte_level: its
 * pre-tokenizer is ByteLevel (then the decoder must be too). -1 with ft_error
 * naming path and what is not supported. */
int ft_token_decoder_parse(const char *path, const json_t *value, bool byte_level, ft_token_decoder **out);
void ft_token_decoder_free(ft_token_decoder *decoder);

/* Makes ids below size known to the tables (absent until set). */
void ft_token_decoder_reserve(ft_token_decoder *decoder, size_t size);
/* What id decodes to: the token as tokenizer.json writes it. id < size. */
void ft_token_decoder_set(ft_token_decoder *decoder, uint32_t id, const char *token, size_t length);
/* One past the largest id reserved. */
size_t ft_token_decoder_size(const ft_token_decoder *decoder);

/* The text of ids (malloc'd): bytes that are not UTF-8 become U+FFFD. An id
 * never set is an error, or skipped with skip_unknown. */
int ft_token_decoder_decode(const ft_token_decoder *decoder, const uint32_t *ids, size_t count, bool skip_unknown,
                            char **text);

#endif
