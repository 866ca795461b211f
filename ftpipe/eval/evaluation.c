/* evaluation: answers and loss over an evaluation set, batched by length. */
#include "ftpipe/eval/evaluation.h"

#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"

typedef struct {
    size_t length;
    size_t index;
} length_entry;

static int longest_first(const void *a, const void *b)
{
    const length_entry *x = a, *y = b;
    if (x->length != y->length)
        return x->length > y->length ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

void ft_order_by_length(const size_t *lengths, size_t count, size_t *order)
{
    length_entry *entries = ft_xmalloc((count ? count : 1) * sizeof *entries);
    for (size_t i = 0; i < count; i++)
        entries[i] = (length_entry){lengths[i], i};
    qsort(entries, count, sizeof *entries, longest_first);
    for (size_t i = 0; i < count; i++)
        order[i] = entries[i].index;
    free(entries);
}

/* A batch's images: those of its samples (indices, in the batch's order) one after another. */
typedef struct {
    ft_stored_image *images;
    size_t count, capacity;
} batch_images;

static int hand_images(ft_model *model, const ft_sample_images *images, const size_t *samples, int n,
                       batch_images *batch)
{
    if (!images)
        return 0;
    batch->count = 0;
    for (int j = 0; j < n; j++) {
        const ft_sample_images *own = &images[samples[j]];
        if (batch->count + own->count > batch->capacity) {
            batch->capacity = 2 * (batch->count + own->count);
            batch->images = ft_xrealloc(batch->images, batch->capacity * sizeof *batch->images);
        }
        for (size_t k = 0; k < own->count; k++)
            batch->images[batch->count++] = own->images[k];
    }
    return ft_model_set_images(model, batch->images, (int)batch->count);
}

static int report(ft_evaluation_progress progress, void *context, size_t done, size_t total)
{
    if (progress && progress(done, total, context) != 0)
        return ft_error("evaluation stopped after %zu of %zu samples", done, total);
    return 0;
}

int ft_evaluate_answers(ft_generator *generator, const ft_token_span *prompts, const ft_sample_images *images,
                        size_t count, int batch_size, const ft_generate_options *options,
                        ft_evaluation_progress progress, void *context, int32_t *answers, int *answer_lengths)
{
    if (count == 0)
        return 0;
    size_t *lengths = ft_xmalloc(count * sizeof *lengths), *order = ft_xmalloc(count * sizeof *order);
    for (size_t i = 0; i < count; i++)
        lengths[i] = prompts[i].n_ids;
    ft_order_by_length(lengths, count, order);
    size_t longest = lengths[order[0]], n_new = (size_t)options->max_new_tokens;
    int32_t *prompt_ids = ft_xmalloc((size_t)batch_size * longest * sizeof *prompt_ids);
    const int32_t **batch_prompts = ft_xmalloc((size_t)batch_size * sizeof *batch_prompts);
    int *batch_lengths = ft_xmalloc((size_t)batch_size * sizeof *batch_lengths);
    int32_t *output = ft_xmalloc((size_t)batch_size * n_new * sizeof *output + 1);
    int *output_lengths = ft_xmalloc((size_t)batch_size * sizeof *output_lengths);
    ft_generate_options call = *options;
    batch_images held = {NULL, 0, 0};
    int status = 0;
    for (size_t start = 0, batch = 0; start < count && status == 0; start += (size_t)batch_size, batch++) {
        int n = count - start < (size_t)batch_size ? (int)(count - start) : batch_size;
        for (int j = 0; j < n; j++) {
            const ft_token_span *prompt = &prompts[order[start + (size_t)j]];
            int32_t *ids = prompt_ids + (size_t)j * longest;
            for (size_t t = 0; t < prompt->n_ids; t++)
                ids[t] = (int32_t)prompt->ids[t];
            batch_prompts[j] = ids;
            batch_lengths[j] = (int)prompt->n_ids;
        }
        call.seed = ft_random_stream(options->seed, batch);
        status = hand_images(ft_generator_model(generator), images, order + start, n, &held);
        if (status == 0)
            status = ft_generate(generator, batch_prompts, batch_lengths, n, &call, output, output_lengths);
        for (int j = 0; j < n && status == 0; j++) {
            size_t sample = order[start + (size_t)j];
            memcpy(answers + sample * n_new, output + (size_t)j * n_new, n_new * sizeof *output);
            answer_lengths[sample] = output_lengths[j];
        }
        if (status == 0)
            status = report(progress, context, start + (size_t)n, count);
    }
    free(lengths);
    free(order);
    free(prompt_ids);
    free(batch_prompts);
    free(batch_lengths);
    free(output);
    free(output_lengths);
    free(held.images);
    return status;
}

/* Rows of one loss batch, as the trainer lays them out: targets are the next
 * token where it is trained on; padding is its own segment, with no loss. */
typedef struct {
    int32_t *tokens, *positions, *segments, *targets;
} loss_rows;

static int64_t fill_row(const loss_rows *rows, size_t at, int seq_len, const ft_encoded_sample *sample)
{
    int64_t n_targets = 0;
    for (int t = 0; t < seq_len; t++) {
        size_t cell = at + (size_t)t;
        if ((size_t)t >= sample->n_tokens) {
            rows->tokens[cell] = 0;
            rows->positions[cell] = 0;
            rows->segments[cell] = 1;
            rows->targets[cell] = -1;
            continue;
        }
        bool trained = (size_t)t + 1 < sample->n_tokens && sample->loss_mask[t + 1];
        rows->tokens[cell] = (int32_t)sample->ids[t];
        rows->positions[cell] = t;
        rows->segments[cell] = 0;
        rows->targets[cell] = trained ? (int32_t)sample->ids[t + 1] : -1;
        n_targets += trained;
    }
    return n_targets;
}

static bool has_target(const ft_encoded_sample *sample)
{
    for (size_t t = 1; t < sample->n_tokens; t++)
        if (sample->loss_mask[t])
            return true;
    return false;
}

int ft_evaluate_loss(ft_model *model, const ft_encoded_sample *samples, const ft_sample_images *images, size_t count,
                     int batch_size, ft_evaluation_progress progress, void *context, double *loss,
                     uint64_t *n_tokens)
{
    *loss = 0.0;
    *n_tokens = 0;
    size_t *scored = ft_xmalloc((count ? count : 1) * sizeof *scored), n_scored = 0;
    for (size_t i = 0; i < count; i++)
        if (has_target(&samples[i]))
            scored[n_scored++] = i;
    if (n_scored == 0) {
        free(scored);
        return 0;
    }
    size_t *lengths = ft_xmalloc(n_scored * sizeof *lengths), *order = ft_xmalloc(n_scored * sizeof *order);
    for (size_t i = 0; i < n_scored; i++)
        lengths[i] = samples[scored[i]].n_tokens;
    ft_order_by_length(lengths, n_scored, order);
    size_t cells = (size_t)batch_size * lengths[order[0]];
    loss_rows rows = {ft_xmalloc(cells * sizeof(int32_t)), ft_xmalloc(cells * sizeof(int32_t)),
                      ft_xmalloc(cells * sizeof(int32_t)), ft_xmalloc(cells * sizeof(int32_t))};
    double loss_sum = 0.0;
    uint64_t total = 0;
    size_t *batch_samples = ft_xmalloc((size_t)batch_size * sizeof *batch_samples);
    batch_images held = {NULL, 0, 0};
    int status = 0;
    for (size_t start = 0; start < n_scored && status == 0; start += (size_t)batch_size) {
        int n = n_scored - start < (size_t)batch_size ? (int)(n_scored - start) : batch_size;
        int seq_len = (int)lengths[order[start]];
        int64_t n_targets = 0;
        for (int j = 0; j < n; j++) {
            batch_samples[j] = scored[order[start + (size_t)j]];
            n_targets += fill_row(&rows, (size_t)j * (size_t)seq_len, seq_len, &samples[batch_samples[j]]);
        }
        ft_batch batch = {n, seq_len, rows.tokens, rows.positions, rows.segments, rows.targets, 0, 0};
        double batch_loss = 0.0;
        status = hand_images(model, images, batch_samples, n, &held);
        if (status == 0)
            status = ft_model_forward(model, &batch, NULL, &batch_loss);
        loss_sum += batch_loss * (double)n_targets;
        total += (uint64_t)n_targets;
        if (status == 0)
            status = report(progress, context, start + (size_t)n, n_scored);
    }
    if (status == 0) {
        *loss = loss_sum / (double)total;
        *n_tokens = total;
    }
    free(held.images);
    free(batch_samples);
    free(scored);
    free(lengths);
    free(order);
    free(rows.tokens);
    free(rows.positions);
    free(rows.segments);
    free(rows.targets);
    return status;
}
