/* normalizer: tokenizer.json's "normalizer" as a list of steps applied in order
 * to each stretch of text between added tokens: NFC (utf8proc), Prepend (a
 * text before a non-empty stretch) and Replace (a literal text by another), as
 * byte-level tokenizers (NFC) and SentencePiece-style ones (Prepend "▁", then
 * Replace " " by "▁") write them. Part of the tokenizer
 * (include/ftpipe/text/tokenizer.h). */
#ifndef FTPIPE_NORMALIZER_H
#define FTPIPE_NORMALIZER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/base/strbuf.h"

typedef struct ft_normalizer ft_normalizer;

/* The steps of a "normalizer" value (NULL or JSON null: none). -1 with ft_error
 * naming path and the unsupported step. */
int ft_normalizer_parse(const char *path, const json_t *value, ft_normalizer **out);
void ft_normalizer_free(ft_normalizer *normalizer);

/* Whether some step may change text. */
bool ft_normalizer_is_active(const ft_normalizer *normalizer);

/* The normalized form of valid UTF-8 text: *result points at text itself
 * (unchanged) or into out (reset first), with its length. */
int ft_normalizer_apply(const ft_normalizer *normalizer, const char *text, size_t length, ft_strbuf *out,
                        ft_strbuf *scratch, const char **result, size_t *result_length);

#endif
