/* evaluation: a model over an evaluation set, in batches of samples of
 * similar lengths (so that little is padded): its answers to the prompts by
 * batched generation, and its loss on the answers as training computes it
 * (the prompt masked, the mean over every answer token). Results come back in
 * the set's order whatever order the batches ran in. */
#ifndef FTPIPE_EVALUATION_H
#define FTPIPE_EVALUATION_H

#include <stddef.h>
#include <stdint.h>

#include "ftpipe/model/generate.h"
#include "ftpipe/model/model.h"
#include "ftpipe/text/sample_encoding.h"

/* Orders count items by length, longest first (equal lengths keep their input
 * order): consecutive items then make batches that pad little, and the
 * largest batch, the one most likely not to fit, runs first. */
void ft_order_by_length(const size_t *lengths, size_t count, size_t *order);

/* Called after each batch with the samples done so far; nonzero stops the work. */
typedef int (*ft_evaluation_progress)(size_t done, size_t total, void *context);

typedef struct {
    const uint32_t *ids;
    size_t n_ids;
} ft_token_span;

/* A sample's images, for a vision-language model: in the order of its image tokens. */
typedef struct {
    const ft_stored_image *images;
    size_t count;
} ft_sample_images;

/* Generates answers to count prompts (each of at least one token), batch_size
 * (<= the generator's max_batch) at a time. Answer i's ids go to
 * answers + i * options->max_new_tokens, answer_lengths[i] of them. Sampling
 * is reproducible: batch b draws from ft_random_stream(options->seed, b).
 * images (NULL: none): prompt i's are images[i], handed to the model with its batch. */
int ft_evaluate_answers(ft_generator *generator, const ft_token_span *prompts, const ft_sample_images *images,
                        size_t count, int batch_size,
                        const ft_generate_options *options, ft_evaluation_progress progress, void *context,
                        int32_t *answers, int *answer_lengths);

/* The mean loss over the trained tokens (loss_mask) of count samples,
 * batch_size (<= the model's max_batch_size) at a time, each batch padded to
 * its longest sample; *n_tokens receives how many tokens were scored. Samples
 * without a trained token add nothing. images as for ft_evaluate_answers. */
int ft_evaluate_loss(ft_model *model, const ft_encoded_sample *samples, const ft_sample_images *images, size_t count,
                     int batch_size,
                     ft_evaluation_progress progress, void *context, double *loss, uint64_t *n_tokens);

#endif
