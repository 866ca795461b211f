/* added_tokens: a tokenizer's added and special tokens ("<|im_start|>"), found
 * in text before anything else touches it. Part of the tokenizer
 * (include/ftpipe/text/tokenizer.h).
 *
 * Matching follows the `tokenizers` library: at the leftmost position where a
 * token starts, the longest token there; a single_word token only where no word
 * character touches it (and the match is then passed over); lstrip and rstrip
 * tokens take the white space beside them along. */
#ifndef FTPIPE_ADDED_TOKENS_H
#define FTPIPE_ADDED_TOKENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/text/token_ids.h"

typedef struct ft_added_tokens ft_added_tokens;

ft_added_tokens *ft_added_tokens_new(void);
void ft_added_tokens_free(ft_added_tokens *tokens);

/* A later token with the same text replaces an earlier one. text is not empty. */
void ft_added_tokens_add(ft_added_tokens *tokens, const char *text, size_t length, uint32_t id, bool single_word,
                         bool lstrip, bool rstrip);
size_t ft_added_tokens_count(const ft_added_tokens *tokens);
/* The id of the token with exactly this text, or -1. */
int64_t ft_added_tokens_id(const ft_added_tokens *tokens, const char *text, size_t length);

/* Walks text in order: appends each token's id to out and hands each stretch
 * between tokens to encode_stretch (which appends its ids). Returns 0, or the
 * first negative value encode_stretch returned. */
typedef int (*ft_stretch_encoder)(void *context, const char *text, size_t length);
int ft_added_tokens_split(const ft_added_tokens *tokens, const char *text, size_t length,
                          ft_stretch_encoder encode_stretch, void *context, ft_token_ids *out);

#endif
