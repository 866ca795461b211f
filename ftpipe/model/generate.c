/* generate: batched generation with a KV cache, on any backend.
 *
 * The prefill runs the prompts, padded on the right into one [n, longest]
 * batch, through the decoder layer by layer, storing each layer's rotated keys
 * and values in the cache (padding only fills slots that a later step
 * overwrites before it reads them; causal attention keeps it out of the
 * prompts' own rows). Each decode step then runs one token per sequence at its
 * own position, attending to its cache. Every sequence keeps its row in every
 * step, a finished one re-running its last slot, so that row b of the batch is
 * always cache block b. Greedy tokens are chosen by the backend, where the
 * logits are, so that only their ids travel; sampled ones (and any whose
 * logits the caller asked to see) on the host.
 *
 * A vision-language model's prompts bring their images (ft_model_set_images
 * before ft_generate): the prefill places their features and turns q and k by
 * M-RoPE's per-token tables; a decode step's token then has the same position
 * on all three axes, the one after its prompt's largest plus the tokens
 * generated since (transformers' rope_deltas), so the plain tables serve it. */
#include "ftpipe/model/generate.h"

#include <math.h>
#include <stdlib.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"
#include "model_internal.h"

typedef struct {
    int32_t id;
    double weight;
} candidate;

struct ft_generator {
    ft_model *model;
    int max_batch, max_tokens;
    void *cache;                  /* per layer k then v, each [max_batch, max_tokens, kv_width] */
    size_t cache_layer_elements;  /* of one of them */
    /* in the backend's memory */
    int32_t *rows;                /* [max_batch * max_tokens]: cache rows to scatter to, or rows to gather */
    int32_t *lengths;             /* [max_batch]: cached tokens per sequence, for attention_decode */
    void *last_hidden;            /* [max_batch, hidden]: each prompt's last position, final-normed */
    int32_t *chosen;              /* [max_batch]: greedy tokens */
    bool greedy_on_device;        /* this call's tokens come from `chosen` */
    /* on the host */
    int32_t *host_rows, *host_tokens, *host_positions, *host_segments, *host_lengths, *host_chosen;
    int32_t *position_shift;      /* [max_batch]: a decode step's position minus its cache slot (M-RoPE's delta) */
    float *logits;                /* [max_batch, vocab] */
    candidate *candidates;        /* [vocab], for top-p */
};

size_t ft_generator_cache_bytes(const ft_model_config *config, int max_batch, int max_tokens, size_t element_bytes)
{
    return 2 * (size_t)config->num_hidden_layers * (size_t)max_batch * (size_t)max_tokens *
           (size_t)config->num_key_value_heads * (size_t)config->head_dim * element_bytes;
}

static void *cache_of(const ft_generator *generator, int layer, int which)
{
    size_t index = ((size_t)layer * 2 + (size_t)which) * generator->cache_layer_elements;
    return (char *)generator->cache + index * generator->model->element_bytes;
}

static void *backend_alloc(ft_generator *generator, size_t bytes, const char *what)
{
    void *memory = generator->model->backend->alloc(generator->model->backend, bytes ? bytes : 1);
    if (!memory)
        ft_error_context("allocating the generator's %s", what);
    return memory;
}

int ft_generator_create(ft_model *model, int max_batch, int max_tokens, ft_generator **out)
{
    const ft_model_options *o = &model->options;
    if (max_batch < 1 || max_tokens < 2)
        return ft_error("generation needs a batch of at least 1 sequence and at least 2 tokens per sequence (got "
                        "%d and %d)",
                        max_batch, max_tokens);
    if (max_batch > o->max_batch_size || max_tokens > o->max_seq_len)
        return ft_error("generating %d sequences of up to %d tokens needs the model loaded with max_batch_size >= "
                        "%d and max_seq_len >= %d (it has %d and %d)",
                        max_batch, max_tokens, max_batch, max_tokens, o->max_batch_size, o->max_seq_len);
    const ft_model_config *c = &model->config;
    ft_generator *generator = ft_xcalloc(1, sizeof *generator);
    *generator = (ft_generator){.model = model, .max_batch = max_batch, .max_tokens = max_tokens};
    generator->cache_layer_elements = (size_t)max_batch * max_tokens * c->num_key_value_heads * c->head_dim;
    size_t slots = (size_t)max_batch * max_tokens;
    size_t cache_bytes = ft_generator_cache_bytes(c, max_batch, max_tokens, model->element_bytes);
    size_t hidden_bytes = (size_t)max_batch * c->hidden_size * model->element_bytes;
    if (!(generator->cache = backend_alloc(generator, cache_bytes, "KV cache")) ||
        !(generator->rows = backend_alloc(generator, slots * sizeof(int32_t), "row indices")) ||
        !(generator->lengths = backend_alloc(generator, (size_t)max_batch * sizeof(int32_t), "lengths")) ||
        !(generator->last_hidden = backend_alloc(generator, hidden_bytes, "hidden states")) ||
        !(generator->chosen = backend_alloc(generator, (size_t)max_batch * sizeof(int32_t), "greedy tokens"))) {
        ft_generator_free(generator);
        return -1;
    }
    generator->host_rows = ft_xmalloc(slots * sizeof(int32_t));
    generator->host_tokens = ft_xmalloc(slots * sizeof(int32_t));
    generator->host_positions = ft_xmalloc(slots * sizeof(int32_t));
    generator->host_segments = ft_xcalloc(slots, sizeof(int32_t));
    generator->host_lengths = ft_xmalloc((size_t)max_batch * sizeof(int32_t));
    generator->host_chosen = ft_xmalloc((size_t)max_batch * sizeof(int32_t));
    generator->position_shift = ft_xcalloc((size_t)max_batch, sizeof(int32_t));
    generator->logits = ft_xmalloc((size_t)max_batch * c->vocab_size * sizeof(float));
    generator->candidates = ft_xmalloc((size_t)c->vocab_size * sizeof(candidate));
    *out = generator;
    return 0;
}

ft_model *ft_generator_model(const ft_generator *generator) { return generator->model; }

void ft_generator_free(ft_generator *generator)
{
    if (!generator)
        return;
    ft_backend *b = generator->model->backend;
    b->free(b, generator->cache);
    b->free(b, generator->rows);
    b->free(b, generator->lengths);
    b->free(b, generator->last_hidden);
    b->free(b, generator->chosen);
    free(generator->host_rows);
    free(generator->host_tokens);
    free(generator->host_positions);
    free(generator->host_segments);
    free(generator->host_lengths);
    free(generator->host_chosen);
    free(generator->position_shift);
    free(generator->logits);
    free(generator->candidates);
    free(generator);
}

/* --- checks --- */

static int check_call(const ft_generator *generator, const int32_t *const *prompts, const int *prompt_lengths, int n,
                      const ft_generate_options *options)
{
    int vocab = generator->model->config.vocab_size;
    if (n < 1 || n > generator->max_batch)
        return ft_error("%d prompts given to a generator made for 1 to %d at once", n, generator->max_batch);
    if (options->max_new_tokens < 1)
        return ft_error("max_new_tokens is %d; it must be at least 1", options->max_new_tokens);
    /* top_p matters only when sampling: greedy options may leave it 0 */
    if (!(options->temperature >= 0.0) ||
        (options->temperature > 0.0 && !(options->top_p > 0.0 && options->top_p <= 1.0)))
        return ft_error("temperature %g and top_p %g: the temperature must be 0 (greedy) or more, top_p in (0, 1]",
                        options->temperature, options->top_p);
    for (int i = 0; i < n; i++) {
        if (prompt_lengths[i] < 1)
            return ft_error("prompt %d is empty; generation needs at least one token to start from", i);
        if (prompt_lengths[i] > generator->max_tokens - options->max_new_tokens)
            return ft_error("prompt %d has %d tokens: with %d new ones that exceeds the generator's %d tokens a "
                            "sequence (shorten the prompt, generate fewer tokens, or make a larger generator)",
                            i, prompt_lengths[i], options->max_new_tokens, generator->max_tokens);
        for (int t = 0; t < prompt_lengths[i]; t++)
            if (prompts[i][t] < 0 || prompts[i][t] >= vocab)
                return ft_error("prompt %d, token %d: id %d is outside the vocabulary (0..%d)", i, t, prompts[i][t],
                                vocab - 1);
    }
    return 0;
}

/* --- the passes --- */

/* Stores layer l's k and v (act rows 0..rows-1) at the cache rows in generator->rows. */
static void store_kv(ft_generator *generator, int l, int rows)
{
    ft_backend *b = generator->model->backend;
    const ft_layer_activations *a = &generator->model->act.layers[l];
    int kv_width = generator->model->config.num_key_value_heads * generator->model->config.head_dim;
    b->scatter_rows(b, cache_of(generator, l, 0), a->k, generator->rows, rows, kv_width);
    b->scatter_rows(b, cache_of(generator, l, 1), a->v, generator->rows, rows, kv_width);
}

/* lm_head over the n rows of x: their greedy tokens into host_chosen, or their logits. */
static void head(ft_generator *generator, const void *x, int n)
{
    ft_model *model = generator->model;
    if (!generator->greedy_on_device) {
        ft_model_head_logits(model, x, n, generator->logits);
        return;
    }
    ft_model_head_greedy(model, x, n, generator->chosen);
    model->backend->download(model->backend, generator->host_chosen, generator->chosen, (size_t)n * sizeof(int32_t));
}

/* The prompts through the decoder into the cache; logits of their last positions. */
static int prefill(ft_generator *generator, const int32_t *const *prompts, const int *prompt_lengths, int n)
{
    ft_model *model = generator->model;
    ft_backend *b = model->backend;
    const ft_model_config *c = &model->config;
    const ft_activations *act = &model->act;
    int longest = 0;
    for (int i = 0; i < n; i++)
        longest = prompt_lengths[i] > longest ? prompt_lengths[i] : longest;
    int rows = n * longest;
    bool vision = model->vision != NULL || model->clip != NULL;
    for (int i = 0; i < n; i++)
        for (int t = 0; t < longest; t++) {
            int r = i * longest + t;
            generator->host_tokens[r] = t < prompt_lengths[i] ? prompts[i][t] : 0;
            generator->host_positions[r] = t;
            generator->host_rows[r] = i * generator->max_tokens + t;
            generator->host_segments[r] = vision && t >= prompt_lengths[i]; /* the images' sample ends at the prompt */
        }
    if (vision) {
        if (ft_model_prepare_vision(model, generator->host_tokens, generator->host_segments, n, longest,
                                    generator->position_shift) < 0)
            return -1;
        for (int i = 0; i < n; i++)
            generator->position_shift[i] -= prompt_lengths[i];
        model->generation_mrope = model->vision != NULL; /* LLaVA's positions are plain */
    }
    size_t bytes = (size_t)rows * sizeof(int32_t);
    b->upload(b, act->tokens, generator->host_tokens, bytes);
    b->upload(b, act->positions, generator->host_positions, bytes);
    b->upload(b, act->segments, generator->host_segments, bytes);
    b->upload(b, generator->rows, generator->host_rows, bytes);
    ft_attention_shape shape = {n, longest, c->num_attention_heads, c->num_key_value_heads, c->head_dim, false};
    ft_model_embed(model, rows);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const ft_layer_activations *a = &act->layers[l];
        ft_model_layer_qkv(model, l, rows);
        b->attention_forward(b, a->attn, a->logsumexp, a->q, a->k, a->v, act->segments, &shape);
        store_kv(generator, l, rows);
        ft_model_layer_finish(model, l, rows);
    }
    model->generation_mrope = false;
    for (int i = 0; i < n; i++)
        generator->host_rows[i] = i * longest + prompt_lengths[i] - 1;
    b->upload(b, generator->rows, generator->host_rows, (size_t)n * sizeof(int32_t));
    b->gather_rows(b, generator->last_hidden, act->final_norm, generator->rows, n, c->hidden_size);
    head(generator, generator->last_hidden, n);
    return ft_model_pieces_done(model) < 0 ? -1 : b->check(b);
}

/* One token per sequence: tokens[i] at position cached[i], which becomes cached. */
static int decode_step(ft_generator *generator, int n, const int32_t *tokens, const int *cached)
{
    ft_model *model = generator->model;
    ft_backend *b = model->backend;
    const ft_model_config *c = &model->config;
    const ft_activations *act = &model->act;
    for (int i = 0; i < n; i++) {
        generator->host_positions[i] = cached[i] + generator->position_shift[i];
        generator->host_rows[i] = i * generator->max_tokens + cached[i];
        generator->host_lengths[i] = cached[i] + 1;
    }
    size_t bytes = (size_t)n * sizeof(int32_t);
    b->upload(b, act->tokens, tokens, bytes);
    b->upload(b, act->positions, generator->host_positions, bytes);
    b->upload(b, generator->rows, generator->host_rows, bytes);
    b->upload(b, generator->lengths, generator->host_lengths, bytes);
    ft_model_embed(model, n);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const ft_layer_activations *a = &act->layers[l];
        ft_model_layer_qkv(model, l, n);
        store_kv(generator, l, n);
        b->attention_decode(b, a->attn, a->q, cache_of(generator, l, 0), cache_of(generator, l, 1),
                            generator->lengths, n, generator->max_tokens, c->num_attention_heads,
                            c->num_key_value_heads, c->head_dim);
        ft_model_layer_finish(model, l, n);
    }
    head(generator, act->final_norm, n);
    return ft_model_pieces_done(model) < 0 ? -1 : b->check(b);
}

/* --- choosing tokens --- */

static int32_t argmax(const float *logits, int vocab)
{
    int32_t best = 0;
    for (int32_t i = 1; i < vocab; i++)
        best = logits[i] > logits[best] ? i : best;
    return best;
}

/* Larger weight first; the lower id first among equal ones. */
static int by_weight(const void *left, const void *right)
{
    const candidate *a = left, *b = right;
    if (a->weight != b->weight)
        return a->weight > b->weight ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

/* Softmax(logits / temperature) restricted to its smallest top set whose mass
 * reaches top_p, drawn from with uniform u. */
static int32_t sample(ft_generator *generator, const float *logits, int vocab, const ft_generate_options *options,
                      float u)
{
    float max = logits[argmax(logits, vocab)];
    double total = 0.0;
    candidate *candidates = generator->candidates;
    for (int32_t i = 0; i < vocab; i++) {
        candidates[i] = (candidate){i, exp((double)(logits[i] - max) / options->temperature)};
        total += candidates[i].weight;
    }
    int kept = vocab;
    double mass = total;
    if (options->top_p < 1.0) {
        qsort(candidates, (size_t)vocab, sizeof *candidates, by_weight);
        mass = 0.0;
        for (kept = 0; kept < vocab && mass < options->top_p * total; kept++)
            mass += candidates[kept].weight;
    }
    double target = (double)u * mass, sum = 0.0;
    for (int i = 0; i < kept; i++) {
        sum += candidates[i].weight;
        if (target < sum)
            return candidates[i].id;
    }
    return candidates[kept - 1].id; /* rounding left target at the very end */
}

static bool is_stop(const ft_generate_options *options, int32_t token)
{
    for (int i = 0; i < options->n_stop_tokens; i++)
        if (options->stop_tokens[i] == token)
            return true;
    return false;
}

int ft_generate(ft_generator *generator, const int32_t *const *prompts, const int *prompt_lengths, int n,
                const ft_generate_options *options, int32_t *output, int *output_lengths)
{
    if (check_call(generator, prompts, prompt_lengths, n, options) < 0)
        return -1;
    generator->greedy_on_device = options->temperature == 0.0 && !options->on_logits;
    if (prefill(generator, prompts, prompt_lengths, n) < 0)
        return -1;
    int vocab = generator->model->config.vocab_size, new_tokens = options->max_new_tokens;
    int *cached = ft_xmalloc((size_t)n * sizeof(int));
    int32_t *fed = ft_xmalloc((size_t)n * sizeof(int32_t));
    bool *done = ft_xcalloc((size_t)n, sizeof(bool));
    for (int i = 0; i < n; i++) {
        cached[i] = prompt_lengths[i];
        output_lengths[i] = 0;
        fed[i] = prompts[i][prompt_lengths[i] - 1];
    }
    int status = 0;
    for (int step = 0;; step++) {
        if (options->on_logits)
            options->on_logits(options->user, step, generator->logits, n, vocab);
        int running = 0;
        for (int i = 0; i < n; i++) {
            if (done[i])
                continue;
            const float *row = generator->logits + (size_t)i * vocab;
            uint64_t stream = ft_random_stream(options->seed, (uint64_t)i);
            int32_t token = generator->greedy_on_device ? generator->host_chosen[i]
                            : options->temperature > 0.0
                                ? sample(generator, row, vocab, options, ft_random_uniform(stream, (uint64_t)step))
                                : argmax(row, vocab);
            done[i] = is_stop(options, token);
            if (done[i])
                continue;
            output[(size_t)i * new_tokens + output_lengths[i]++] = token;
            fed[i] = token;
            done[i] = output_lengths[i] == new_tokens;
            running += !done[i];
        }
        if (running == 0)
            break;
        /* a finished sequence re-runs its free slot at `cached`, and stays there */
        if ((status = decode_step(generator, n, fed, cached)) < 0)
            break;
        for (int i = 0; i < n; i++)
            cached[i] += !done[i];
    }
    free(cached);
    free(fed);
    free(done);
    return status;
}
