/* generate: batched generation with a KV cache, on any backend.
 *
 * The prefill runs the prompts, padded on the right into one [n, longest]
 * batch, through the decoder layer by layer, storing each layer's rotated keys
 * and values in the cache (padding only fills slots that a later step
 * overwrites before it reads them; causal attention keeps it out of the
 * prompts' own rows). Each decode step then runs one token per sequence at its
 * own position, attending to its cache. Every sequence keeps its row in every
 * step, a finished one re-running its last slot, so that row b of the batch is
 * always cache block b. Tokens are chosen on the host. */
#include "ftpipe/generate.h"

#include <math.h>
#include <stdlib.h>

#include "ftpipe/error.h"
#include "ftpipe/mem.h"
#include "ftpipe/random.h"
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
    /* on the host */
    int32_t *host_rows, *host_tokens, *host_positions, *host_segments, *host_lengths;
    float *logits;                /* [max_batch, vocab] */
    candidate *candidates;        /* [vocab], for top-p */
};

size_t ft_generator_cache_bytes(const ft_model_config *config, int max_batch, int max_tokens, size_t element_bytes)
{
    return 2 * (size_t)config->num_hidden_layers * (size_t)max_batch * (size_t)max_tokens *
           (size_t)config->num_key_value_heads * (size_t)config->head_dim * element_bytes;
}

static void *cache_of(const ft_generator *g, int layer, int which)
{
    size_t index = ((size_t)layer * 2 + (size_t)which) * g->cache_layer_elements;
    return (char *)g->cache + index * g->model->element_bytes;
}

static void *backend_alloc(ft_generator *g, size_t bytes, const char *what)
{
    void *memory = g->model->backend->alloc(g->model->backend, bytes ? bytes : 1);
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
    ft_generator *g = ft_xcalloc(1, sizeof *g);
    *g = (ft_generator){.model = model, .max_batch = max_batch, .max_tokens = max_tokens};
    g->cache_layer_elements = (size_t)max_batch * max_tokens * c->num_key_value_heads * c->head_dim;
    size_t slots = (size_t)max_batch * max_tokens;
    g->cache = backend_alloc(g, ft_generator_cache_bytes(c, max_batch, max_tokens, model->element_bytes),
                             "KV cache");
    g->rows = g->cache ? backend_alloc(g, slots * sizeof(int32_t), "row indices") : NULL;
    g->lengths = g->rows ? backend_alloc(g, (size_t)max_batch * sizeof(int32_t), "lengths") : NULL;
    g->last_hidden = g->lengths ? backend_alloc(g, (size_t)max_batch * c->hidden_size * model->element_bytes,
                                                "hidden states")
                                : NULL;
    if (!g->last_hidden) {
        ft_generator_free(g);
        return -1;
    }
    g->host_rows = ft_xmalloc(slots * sizeof(int32_t));
    g->host_tokens = ft_xmalloc(slots * sizeof(int32_t));
    g->host_positions = ft_xmalloc(slots * sizeof(int32_t));
    g->host_segments = ft_xcalloc(slots, sizeof(int32_t));
    g->host_lengths = ft_xmalloc((size_t)max_batch * sizeof(int32_t));
    g->logits = ft_xmalloc((size_t)max_batch * c->vocab_size * sizeof(float));
    g->candidates = ft_xmalloc((size_t)c->vocab_size * sizeof(candidate));
    *out = g;
    return 0;
}

void ft_generator_free(ft_generator *g)
{
    if (!g)
        return;
    ft_backend *b = g->model->backend;
    b->free(b, g->cache);
    b->free(b, g->rows);
    b->free(b, g->lengths);
    b->free(b, g->last_hidden);
    free(g->host_rows);
    free(g->host_tokens);
    free(g->host_positions);
    free(g->host_segments);
    free(g->host_lengths);
    free(g->logits);
    free(g->candidates);
    free(g);
}

/* --- checks --- */

static int check_call(const ft_generator *g, const int32_t *const *prompts, const int *prompt_lengths, int n,
                      const ft_generate_options *options)
{
    int vocab = g->model->config.vocab_size;
    if (n < 1 || n > g->max_batch)
        return ft_error("%d prompts given to a generator made for 1 to %d at once", n, g->max_batch);
    if (options->max_new_tokens < 1)
        return ft_error("max_new_tokens is %d; it must be at least 1", options->max_new_tokens);
    if (!(options->temperature >= 0.0) || !(options->top_p > 0.0 && options->top_p <= 1.0))
        return ft_error("temperature %g and top_p %g: the temperature must be 0 (greedy) or more, top_p in (0, 1]",
                        options->temperature, options->top_p);
    for (int i = 0; i < n; i++) {
        if (prompt_lengths[i] < 1)
            return ft_error("prompt %d is empty; generation needs at least one token to start from", i);
        if (prompt_lengths[i] > g->max_tokens - options->max_new_tokens)
            return ft_error("prompt %d has %d tokens: with %d new ones that exceeds the generator's %d tokens a "
                            "sequence (shorten the prompt, generate fewer tokens, or make a larger generator)",
                            i, prompt_lengths[i], options->max_new_tokens, g->max_tokens);
        for (int t = 0; t < prompt_lengths[i]; t++)
            if (prompts[i][t] < 0 || prompts[i][t] >= vocab)
                return ft_error("prompt %d, token %d: id %d is outside the vocabulary (0..%d)", i, t, prompts[i][t],
                                vocab - 1);
    }
    return 0;
}

/* --- the passes --- */

/* Stores layer l's k and v (act rows 0..rows-1) at the cache rows in g->rows. */
static void store_kv(ft_generator *g, int l, int rows)
{
    ft_backend *b = g->model->backend;
    const ft_layer_activations *a = &g->model->act.layers[l];
    int kv_width = g->model->config.num_key_value_heads * g->model->config.head_dim;
    b->scatter_rows(b, cache_of(g, l, 0), a->k, g->rows, rows, kv_width);
    b->scatter_rows(b, cache_of(g, l, 1), a->v, g->rows, rows, kv_width);
}

/* The prompts through the decoder into the cache; logits of their last positions. */
static int prefill(ft_generator *g, const int32_t *const *prompts, const int *prompt_lengths, int n)
{
    ft_model *model = g->model;
    ft_backend *b = model->backend;
    const ft_model_config *c = &model->config;
    const ft_activations *act = &model->act;
    int longest = 0;
    for (int i = 0; i < n; i++)
        longest = prompt_lengths[i] > longest ? prompt_lengths[i] : longest;
    int rows = n * longest;
    for (int i = 0; i < n; i++)
        for (int t = 0; t < longest; t++) {
            int r = i * longest + t;
            g->host_tokens[r] = t < prompt_lengths[i] ? prompts[i][t] : 0;
            g->host_positions[r] = t;
            g->host_rows[r] = i * g->max_tokens + t;
        }
    size_t bytes = (size_t)rows * sizeof(int32_t);
    b->upload(b, act->tokens, g->host_tokens, bytes);
    b->upload(b, act->positions, g->host_positions, bytes);
    b->upload(b, act->segments, g->host_segments, bytes);
    b->upload(b, g->rows, g->host_rows, bytes);
    ft_attention_shape shape = {n, longest, c->num_attention_heads, c->num_key_value_heads, c->head_dim};
    ft_model_embed(model, rows);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const ft_layer_activations *a = &act->layers[l];
        ft_model_layer_qkv(model, l, rows);
        b->attention_forward(b, a->attn, a->logsumexp, a->q, a->k, a->v, act->segments, &shape);
        store_kv(g, l, rows);
        ft_model_layer_finish(model, l, rows);
    }
    for (int i = 0; i < n; i++)
        g->host_rows[i] = i * longest + prompt_lengths[i] - 1;
    b->upload(b, g->rows, g->host_rows, (size_t)n * sizeof(int32_t));
    b->gather_rows(b, g->last_hidden, act->final_norm, g->rows, n, c->hidden_size);
    ft_model_head_logits(model, g->last_hidden, n, g->logits);
    return b->check(b);
}

/* One token per sequence: tokens[i] at position cached[i], which becomes cached. */
static int decode_step(ft_generator *g, int n, const int32_t *tokens, const int *cached)
{
    ft_model *model = g->model;
    ft_backend *b = model->backend;
    const ft_model_config *c = &model->config;
    const ft_activations *act = &model->act;
    for (int i = 0; i < n; i++) {
        g->host_positions[i] = cached[i];
        g->host_rows[i] = i * g->max_tokens + cached[i];
        g->host_lengths[i] = cached[i] + 1;
    }
    size_t bytes = (size_t)n * sizeof(int32_t);
    b->upload(b, act->tokens, tokens, bytes);
    b->upload(b, act->positions, g->host_positions, bytes);
    b->upload(b, g->rows, g->host_rows, bytes);
    b->upload(b, g->lengths, g->host_lengths, bytes);
    ft_model_embed(model, n);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const ft_layer_activations *a = &act->layers[l];
        ft_model_layer_qkv(model, l, n);
        store_kv(g, l, n);
        b->attention_decode(b, a->attn, a->q, cache_of(g, l, 0), cache_of(g, l, 1), g->lengths, n, g->max_tokens,
                            c->num_attention_heads, c->num_key_value_heads, c->head_dim);
        ft_model_layer_finish(model, l, n);
    }
    ft_model_head_logits(model, act->final_norm, n, g->logits);
    return b->check(b);
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
static int32_t sample(ft_generator *g, const float *logits, int vocab, const ft_generate_options *options, float u)
{
    float max = logits[argmax(logits, vocab)];
    double total = 0.0;
    candidate *candidates = g->candidates;
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

int ft_generate(ft_generator *g, const int32_t *const *prompts, const int *prompt_lengths, int n,
                const ft_generate_options *options, int32_t *output, int *output_lengths)
{
    if (check_call(g, prompts, prompt_lengths, n, options) < 0 || prefill(g, prompts, prompt_lengths, n) < 0)
        return -1;
    int vocab = g->model->config.vocab_size, new_tokens = options->max_new_tokens;
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
            options->on_logits(options->user, step, g->logits, n, vocab);
        int running = 0;
        for (int i = 0; i < n; i++) {
            if (done[i])
                continue;
            const float *row = g->logits + (size_t)i * vocab;
            uint64_t stream = ft_random_stream(options->seed, (uint64_t)i);
            int32_t token = options->temperature > 0.0
                                ? sample(g, row, vocab, options, ft_random_uniform(stream, (uint64_t)step))
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
        if ((status = decode_step(g, n, fed, cached)) < 0)
            break;
        for (int i = 0; i < n; i++)
            cached[i] += !done[i];
    }
    free(cached);
    free(fed);
    free(done);
    return status;
}
