/* generate: batched text generation with a KV cache, for the evaluate stage.
 *
 * A generator holds a KV cache in the model's backend for up to max_batch
 * sequences of up to max_tokens tokens (prompt plus generated). Prompts of
 * different lengths run together: one prefill pass over the prompts (padded on
 * the right), then one decode step per new token, each sequence at its own
 * position; a finished sequence stops growing while the others go on.
 *
 * The model must have been loaded with max_batch_size >= max_batch and
 * max_seq_len >= max_tokens (any finetuning; an adapter, if it has one, is
 * applied, without dropout). */
#ifndef FTPIPE_GENERATE_H
#define FTPIPE_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "ftpipe/model/model.h"

typedef struct {
    int max_new_tokens;
    double temperature;            /* 0: greedy (argmax; the lowest id wins a tie) */
    double top_p;                  /* sampling: the smallest set of tokens whose probability reaches top_p; 1: all (unread when greedy) */
    uint64_t seed;                 /* sampling: sequence i of a call draws from ft_random_stream(seed, i) */
    const int32_t *stop_tokens;    /* generation of a sequence ends at one of these (not included in the output) */
    int n_stop_tokens;
    /* Optional, for tests and parity checks: called after each step with the
     * logits [n, vocab] (host floats) of the n sequences of the call, step 0
     * being the prefill's last position. Sequences already stopped still have a row. */
    void (*on_logits)(void *user, int step, const float *logits, int n, int vocab);
    void *user;
} ft_generate_options;

typedef struct ft_generator ft_generator;

int ft_generator_create(ft_model *model, int max_batch, int max_tokens, ft_generator **out);
void ft_generator_free(ft_generator *generator);
/* The model it generates with (to hand it a batch's images: ft_model_set_images). */
ft_model *ft_generator_model(const ft_generator *generator);

/* Generates for n <= max_batch prompts (prompts[i] has prompt_lengths[i] >= 1
 * ids; prompt_lengths[i] + max_new_tokens <= max_tokens). output receives
 * n * max_new_tokens ids, sequence i's at output + i * max_new_tokens, and
 * output_lengths[i] how many it generated. */
int ft_generate(ft_generator *generator, const int32_t *const *prompts, const int *prompt_lengths, int n,
                const ft_generate_options *options, int32_t *output, int *output_lengths);

/* The KV cache's size for a model and these limits, for planning. */
size_t ft_generator_cache_bytes(const ft_model_config *config, int max_batch, int max_tokens, size_t element_bytes);

#endif
