/* sample_encoding: conversations turned into token ids and loss masks exactly as
 * LLaMA-Factory's supervised preprocessing makes them, and samples packed into
 * rows as its greedy knapsack packs them.
 *
 * The chat template renders prompt and answer segments. Each run of prompt
 * segments is a turn's source, the answer segments after it the turn's target
 * (assistant text and end-of-turn); every segment is tokenized on its own, as
 * LLaMA-Factory encodes each element. Sources are masked from the loss unless
 * train_on_prompt; every target is trained on, or with mask_history only the
 * last turn's. Past cutoff_len, each turn keeps what infer_seqlen grants it
 * from the remaining budget, and turns past the budget are dropped (with
 * mask_history the last turns are kept first). */
#ifndef FTPIPE_SAMPLE_ENCODING_H
#define FTPIPE_SAMPLE_ENCODING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/formats/dataset.h"
#include "ftpipe/formats/token_shards.h"
#include "ftpipe/text/chat_template.h"
#include "ftpipe/text/tokenizer.h"

/* A record's images for a vision-language template: each image's token count,
 * in the order of its <image> placeholders (image_placeholders.h). */
typedef struct {
    const uint32_t *n_tokens;
    size_t count;
} ft_conversation_images;

typedef struct {
    size_t cutoff_len;
    bool train_on_prompt;
    bool mask_history;
    bool enable_thinking; /* LLaMA-Factory's, for reasoning templates (ft_render_options) */
} ft_encoding_options;

typedef struct {
    uint32_t *ids;
    uint8_t *loss_mask;  /* 1: trained on */
    size_t n_tokens;
    size_t full_tokens;  /* before cutoff_len: truncated when larger than n_tokens */
} ft_encoded_sample;

void ft_encoded_sample_free(ft_encoded_sample *sample);

/* LLaMA-Factory's infer_seqlen: how much of a turn's source and target fit in
 * budget tokens. A short target is kept whole, else a short source, else both
 * are cut in proportion to their lengths. */
void ft_infer_seqlen(size_t source_len, size_t target_len, size_t budget, size_t *new_source_len,
                     size_t *new_target_len);

typedef struct {
    const uint32_t *source;
    size_t n_source;
    const uint32_t *target;
    size_t n_target;
} ft_turn_tokens;

/* Assembles tokenized turns into one sample (cut, masked). */
void ft_encode_turns(const ft_turn_tokens *turns, size_t n_turns, const ft_encoding_options *options,
                     ft_encoded_sample *out);

/* Renders, tokenizes and assembles one conversation. */
int ft_encode_conversation(const ft_tokenizer *tokenizer, const ft_chat_template *chat_template,
                           const ft_message *messages, size_t count, const ft_encoding_options *options,
                           ft_encoded_sample *out);
/* The same with images (NULL or none: as above): each <image> expanded into the
 * template's image tokens, which are never trained on. A template without image
 * tokens, or a cutoff_len that would cut an image's tokens, is an error. */
int ft_encode_conversation_with_images(const ft_tokenizer *tokenizer, const ft_chat_template *chat_template,
                                       const ft_message *messages, size_t count,
                                       const ft_conversation_images *images, const ft_encoding_options *options,
                                       ft_encoded_sample *out);

/* Called from the calling thread about every 100 ms; nonzero stops the work. */
typedef int (*ft_encode_progress)(size_t done, size_t total, void *context);

/* Encodes conversations[0..count) with `threads` threads (0: one per core) into
 * samples[i], in input order; conversation i's images are images[i] (images NULL:
 * none has images). A conversation that fails leaves samples[i] empty
 * and its message, "FILE: record N: why", in errors[i] (caller frees); others
 * go on. Returns -1 only when stopped by progress. */
int ft_encode_conversations(const ft_tokenizer *tokenizer, const ft_chat_template *chat_template,
                            const ft_conversation *conversations, size_t count,
                            const ft_conversation_images *images, const ft_encoding_options *options, int threads,
                            ft_encode_progress progress, void *context, ft_encoded_sample *samples, char **errors);

/* LLaMA-Factory's greedy knapsack: each row takes the longest remaining sample
 * that still fits (of equal lengths, the latest), until none does. Every length
 * must be in [1, capacity]. order[count] receives sample indices row by row;
 * row_starts (n_rows + 1 entries, caller frees) where each row begins in order. */
void ft_pack_rows(const size_t *lengths, size_t count, size_t capacity, size_t *order, size_t **row_starts,
                  size_t *n_rows);

/* Which of count samples form the validation set: val_size below 1 is a
 * fraction (rounded up, as Hugging Face's train_test_split rounds), from 1 on a
 * count. The choice is a seeded shuffle: the same for the same count and seed.
 * is_validation[count] is filled; at least one sample must stay for training. */
int ft_choose_validation(size_t count, double val_size, uint64_t seed, bool *is_validation, size_t *n_validation);

/* Writes samples[indices[0..count)] as a split into split_dir: in that order,
 * or packed into rows of row_length tokens, each filled to row_length - 1 as
 * LLaMA-Factory packs (then every sample must fit in row_length - 1).
 * written[count] (NULL: not wanted) receives the samples' indices in the order
 * the shards hold them, for what is stored beside them per sample. */
int ft_write_samples(const char *split_dir, const ft_encoded_sample *samples, const size_t *indices, size_t count,
                     bool packing, size_t row_length, uint64_t max_shard_tokens, ft_token_split_stats *stats,
                     size_t *written);

#endif
