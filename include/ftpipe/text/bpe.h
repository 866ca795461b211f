/* bpe: the BPE model: the vocabulary keyed by raw bytes, the merge
 * ranks, and the merge loop that turns one word into token ids, with a cache of
 * words already seen. Part of the tokenizer (include/ftpipe/text/tokenizer.h).
 *
 * Merging follows the `tokenizers` library: the pair of lowest rank merges
 * first, the leftmost of equal pairs first; a byte without a token becomes the
 * unknown token when there is one (runs of them fused into one if asked) and is
 * dropped otherwise; with ignore_merges a word that is itself a token is taken
 * whole. Byte-level models start a word from its bytes; SentencePiece-style
 * ones (ft_bpe_use_characters) from its UTF-8 characters, a character without
 * a token falling back to its bytes' <0xXX> tokens when asked.
 * A built model is read-only; each thread encodes with its own worker. */
#ifndef FTPIPE_BPE_H
#define FTPIPE_BPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/text/token_ids.h"

typedef struct ft_bpe ft_bpe;
/* One thread's scratch space and word cache. */
typedef struct ft_bpe_worker ft_bpe_worker;

/* The counts size the tables; more may be added. */
ft_bpe *ft_bpe_new(size_t expected_tokens, size_t expected_merges);
void ft_bpe_free(ft_bpe *bpe);

/* Building: tokens by their raw bytes, then merges in rank order. */
void ft_bpe_add_token(ft_bpe *bpe, uint32_t id, const void *bytes, size_t length);
/* A later merge of the same pair replaces an earlier one, as in `tokenizers`. */
void ft_bpe_add_merge(ft_bpe *bpe, uint32_t left_id, uint32_t right_id, uint32_t merged_id, uint32_t rank);
/* unknown_id < 0: bytes without a token are dropped. */
void ft_bpe_set_options(ft_bpe *bpe, bool ignore_merges, int64_t unknown_id, bool fuse_unknown);

/* Words start as UTF-8 characters (valid text only); with byte_fallback, a
 * character without a token becomes the tokens "<0xXX>" of its bytes. Call
 * after the vocabulary is added. */
void ft_bpe_use_characters(ft_bpe *bpe, bool byte_fallback);

/* The id of the token with these raw bytes, or -1. */
int64_t ft_bpe_token_id(const ft_bpe *bpe, const void *bytes, size_t length);

ft_bpe_worker *ft_bpe_worker_new(void);
void ft_bpe_worker_free(ft_bpe_worker *worker);

/* Appends the ids of one word (raw bytes) to out. */
void ft_bpe_encode_word(const ft_bpe *bpe, ft_bpe_worker *worker, const uint8_t *bytes, size_t length,
                        ft_token_ids *out);

#endif
