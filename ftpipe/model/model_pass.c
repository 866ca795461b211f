/* model_pass: the activation plan, and forward and backward through the decoder
 * as a sequence of backend ops. The lm_head and the loss run in chunks of rows,
 * and in training the loss's gradient is taken chunk by chunk right after it,
 * so the [rows, vocab] logits never exist whole. A vision-language model's pass
 * first runs its tower over the batch's images, places the features at the
 * image tokens, and turns q and k by per-token M-RoPE tables. */
#include <stdlib.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/backend/host_floats.h"
#include "ftpipe/model/mrope.h"
#include "model_internal.h"

/* --- the activation plan --- */

typedef struct {
    char *base;            /* NULL: only counting */
    size_t used;           /* bytes */
    size_t element_bytes;  /* of the backend's dtype */
} cursor;

static void *take_bytes(cursor *c, size_t bytes)
{
    void *slice = c->base ? c->base + c->used : NULL;
    c->used += (bytes + 255) / 256 * 256; /* aligned for vector loads and the GEMM libraries */
    return slice;
}

/* count activations in the backend's dtype */
static void *take(cursor *c, size_t count) { return take_bytes(c, count * c->element_bytes); }
static float *take_floats(cursor *c, size_t count) { return take_bytes(c, count * sizeof(float)); }

static void plan_layer(cursor *c, const ft_model_config *config, const ft_model_options *options, size_t rows,
                       ft_layer_activations *a)
{
    size_t hidden = config->hidden_size, heads = config->num_attention_heads;
    size_t q_width = heads * config->head_dim;
    size_t kv_width = (size_t)config->num_key_value_heads * config->head_dim;
    size_t inner = config->intermediate_size;
    a->ln1 = take(c, rows * hidden);
    a->ln1_rstd = take_floats(c, rows);
    if (config->qk_norm) {
        a->q_lin = take(c, rows * q_width);
        a->q_rstd = take_floats(c, rows * heads);
        a->k_lin = take(c, rows * kv_width);
        a->k_rstd = take_floats(c, rows * config->num_key_value_heads);
    }
    a->q = take(c, rows * q_width);
    a->k = take(c, rows * kv_width);
    a->v = take(c, rows * kv_width);
    a->logsumexp = take_floats(c, rows * heads);
    a->attn = take(c, rows * q_width);
    a->mid = take(c, rows * hidden);
    a->ln2 = take(c, rows * hidden);
    a->ln2_rstd = take_floats(c, rows);
    a->gate = take(c, rows * inner);
    a->up = take(c, rows * inner);
    a->act = take(c, rows * inner);
    for (int t = 0; t < FT_LORA_TARGET_COUNT; t++)
        a->lora_xa[t] = options->use_lora && (options->lora.targets & (1u << t))
                            ? take(c, rows * (size_t)options->lora.rank)
                            : NULL;
}

size_t ft_model_plan_activations(const ft_model_config *config, const ft_model_options *options,
                                 size_t element_bytes, int head_chunk_rows, void *base, ft_activations *act)
{
    ft_activations counting = {0};
    if (!act)
        act = &counting;
    cursor c = {base, 0, element_bytes};
    bool training = options->finetuning != FT_FINETUNE_NONE;
    int layers = config->num_hidden_layers;
    size_t rows = (size_t)options->max_batch_size * options->max_seq_len;
    size_t hidden = config->hidden_size;
    /* Training keeps every layer's input and activations for backward (with
     * gradient checkpointing only the inputs, and one set that backward refills
     * layer by layer); inference alternates two residual buffers and gives every
     * layer one shared set. */
    int n_residuals = training ? layers + 1 : 2;
    int n_sets = training && !options->gradient_checkpointing ? layers : 1;
    void **residual = ft_xcalloc((size_t)layers + 1, sizeof *residual);
    for (int i = 0; i <= layers; i++)
        residual[i] = i < n_residuals ? take(&c, rows * hidden) : residual[i % 2];
    ft_layer_activations set = {0};
    for (int l = 0; l < layers; l++) {
        if (l < n_sets)
            plan_layer(&c, config, options, rows, &set);
        if (act->layers) {
            act->layers[l] = set;
            act->layers[l].input = residual[l];
        }
    }
    act->final_input = residual[layers];
    free(residual);
    act->final_norm = take(&c, rows * hidden);
    act->final_rstd = take_floats(&c, rows);
    act->logits = take(&c, (size_t)head_chunk_rows * config->vocab_size);
    act->losses = take_floats(&c, rows);
    act->rope_cos = take_floats(&c, (size_t)options->max_seq_len * (config->head_dim / 2));
    act->rope_sin = take_floats(&c, (size_t)options->max_seq_len * (config->head_dim / 2));
    act->tokens = take_bytes(&c, rows * sizeof(int32_t));
    act->positions = take_bytes(&c, rows * sizeof(int32_t));
    act->segments = take_bytes(&c, rows * sizeof(int32_t));
    act->targets = take_bytes(&c, rows * sizeof(int32_t));
    if (config->vision_language || config->llava) {
        act->image_features = take(&c, rows * hidden);
        act->image_rows = take_bytes(&c, rows * sizeof(int32_t));
    }
    if (config->vision_language) {
        act->mrope_cos = take_floats(&c, rows * (config->head_dim / 2));
        act->mrope_sin = take_floats(&c, rows * (config->head_dim / 2));
        act->row_index = take_bytes(&c, rows * sizeof(int32_t));
    }
    if (training) {
        size_t q_width = (size_t)config->num_attention_heads * config->head_dim;
        size_t kv_width = (size_t)config->num_key_value_heads * config->head_dim;
        size_t inner = config->intermediate_size;
        act->grad_residual = take(&c, rows * hidden);
        act->grad_hidden = take(&c, rows * hidden);
        act->grad_attn = take(&c, rows * q_width);
        act->grad_q = take(&c, rows * q_width);
        act->grad_k = take(&c, rows * kv_width);
        act->grad_v = take(&c, rows * kv_width);
        if (config->qk_norm) {
            act->grad_q_lin = take(&c, rows * q_width);
            act->grad_k_lin = take(&c, rows * kv_width);
        }
        act->grad_gate = take(&c, rows * inner);
        act->grad_up = take(&c, rows * inner);
        act->grad_act = take(&c, rows * inner);
    }
    return c.used;
}

/* --- a pass --- */

typedef struct {
    ft_model *model;
    ft_backend *backend;
    const ft_model_config *config;
    int rows;
    int n_targets;       /* target tokens in this batch */
    bool backward;
    uint64_t dropout_seed;
    bool generating;     /* no LoRA dropout */
    bool mrope;          /* rotate by the per-token M-RoPE tables */
} pass;

static const void *weight(const pass *p, size_t offset)
{
    if (offset == FT_ABSENT)
        return NULL;
    if (p->model->shards)
        return p->model->shard_calls->weight(p->model->shards, offset);
    return (const char *)p->model->params + offset * p->model->element_bytes;
}

/* ZeRO-3: the pass computes with the unit holding `current` from now on, and
 * with the one holding `next` (FT_ABSENT: none) after it, whose all-gather
 * starts now, to overlap the compute. */
static void prefetch(const pass *p, size_t current, size_t next)
{
    if (p->model->shards)
        p->model->shard_calls->prefetch(p->model->shards, current, next);
}

static float *grad(const pass *p, size_t offset)
{
    if (offset == FT_ABSENT)
        return NULL;
    if (p->model->grad_shards) /* ZeRO-2 and 3: its unit's window */
        return p->model->grad_calls->window(p->model->grad_shards, offset);
    return p->model->grads ? p->model->grads + offset : NULL;
}

/* Backward is done with the unit holding `offset`: ZeRO-2 and 3 reduce-scatter its gradients now. */
static void gradients_done(const pass *p, size_t offset)
{
    if (p->model->grad_shards)
        p->model->grad_calls->unit_done(p->model->grad_shards, offset);
}

/* element `index` of an activation array */
static void *at(const pass *p, void *base, size_t index)
{
    return (char *)base + index * p->model->element_bytes;
}

/* The adapter on one linear layer, or NULL. */
static const ft_lora_op *lora_op(const pass *p, int layer, ft_lora_target target, ft_lora_op *op)
{
    const ft_lora_weights *w = p->model->lora ? ft_lora_at(p->model->lora, layer, target) : NULL;
    if (!w)
        return NULL;
    const ft_lora_config *config = ft_lora_get_config(p->model->lora);
    *op = (ft_lora_op){w->a,
                       w->b,
                       p->backward ? w->grad_a : NULL,
                       p->backward ? w->grad_b : NULL,
                       p->model->act.layers[layer].lora_xa[target],
                       config->rank,
                       (float)ft_lora_scaling(config),
                       p->generating ? 0.0f : (float)config->dropout,
                       ft_random_stream(p->dropout_seed, (uint64_t)layer * 16 + target)};
    return op;
}

static int check_batch(const ft_model *model, const ft_batch *batch, int *n_targets)
{
    const ft_model_options *o = &model->options;
    if (batch->batch_size < 1 || batch->seq_len < 1 || batch->batch_size > o->max_batch_size ||
        batch->seq_len > o->max_seq_len)
        return ft_error("a batch of %d x %d tokens does not fit the model's plan of %d x %d", batch->batch_size,
                        batch->seq_len, o->max_batch_size, o->max_seq_len);
    int rows = batch->batch_size * batch->seq_len, vocab = model->config.vocab_size, count = 0;
    for (int i = 0; i < rows; i++) {
        int row = i / batch->seq_len, column = i % batch->seq_len;
        if (batch->tokens[i] < 0 || batch->tokens[i] >= vocab)
            return ft_error("batch row %d, token %d: id %d is outside the vocabulary (0..%d)", row, column,
                            batch->tokens[i], vocab - 1);
        if (batch->targets[i] >= vocab)
            return ft_error("batch row %d, token %d: target %d is outside the vocabulary (0..%d)", row, column,
                            batch->targets[i], vocab - 1);
        if (batch->positions[i] < 0 || batch->positions[i] >= o->max_seq_len)
            return ft_error("batch row %d, token %d: position %d is outside 0..%d", row, column,
                            batch->positions[i], o->max_seq_len - 1);
        count += batch->targets[i] >= 0;
    }
    *n_targets = count;
    return 0;
}

static void upload_batch(const pass *p, const ft_batch *batch)
{
    const ft_activations *act = &p->model->act;
    size_t bytes = (size_t)p->rows * sizeof(int32_t);
    p->backend->upload(p->backend, act->tokens, batch->tokens, bytes);
    p->backend->upload(p->backend, act->positions, batch->positions, bytes);
    p->backend->upload(p->backend, act->segments, batch->segments, bytes);
    p->backend->upload(p->backend, act->targets, batch->targets, bytes);
}

/* The rotary tables a pass reads: by position, or M-RoPE's by row. */
typedef struct {
    const int32_t *index;
    const float *cos, *sin;
} rope_tables;

static rope_tables rope_of(const pass *p)
{
    const ft_activations *act = &p->model->act;
    if (p->mrope)
        return (rope_tables){act->row_index, act->mrope_cos, act->mrope_sin};
    return (rope_tables){act->positions, act->rope_cos, act->rope_sin};
}

/* The normalisation that reads the residual stream after layer l: the next
 * layer's input_layernorm, or the final norm. */
typedef struct {
    void *out;
    float *rstd;
    const void *weight;
} next_norm;

static next_norm norm_after(const pass *p, int l)
{
    const ft_activations *act = &p->model->act;
    if (l + 1 < p->config->num_hidden_layers)
        return (next_norm){act->layers[l + 1].ln1, act->layers[l + 1].ln1_rstd,
                           weight(p, p->model->layers[l + 1].input_norm)};
    return (next_norm){act->final_norm, act->final_rstd, weight(p, p->model->final_norm)};
}

/* Layer l's attention inputs from its ln1 (made by the junction before it):
 * q, k and v, with q and k normalised (qk_norm) and rotated to act->positions. */
static void layer_qkv(const pass *p, int l)
{
    ft_backend *b = p->backend;
    const ft_model_config *c = p->config;
    const ft_layer_offsets *w = &p->model->layers[l];
    const ft_activations *act = &p->model->act;
    const ft_layer_activations *a = &act->layers[l];
    int rows = p->rows, hidden = c->hidden_size, dim = c->head_dim;
    int q_width = c->num_attention_heads * dim, kv_width = c->num_key_value_heads * dim;
    float eps = (float)c->rms_norm_eps;
    ft_lora_op op;

    void *q_out = c->qk_norm ? a->q_lin : a->q, *k_out = c->qk_norm ? a->k_lin : a->k;
    b->linear_forward(b, q_out, a->ln1, weight(p, w->q), weight(p, w->q_bias), lora_op(p, l, FT_LORA_Q, &op), rows,
                      hidden, q_width);
    b->linear_forward(b, k_out, a->ln1, weight(p, w->k), weight(p, w->k_bias), lora_op(p, l, FT_LORA_K, &op), rows,
                      hidden, kv_width);
    b->linear_forward(b, a->v, a->ln1, weight(p, w->v), weight(p, w->v_bias), lora_op(p, l, FT_LORA_V, &op), rows,
                      hidden, kv_width);
    if (c->qk_norm) {
        b->rmsnorm_forward(b, a->q, a->q_rstd, a->q_lin, weight(p, w->q_norm), rows * c->num_attention_heads, dim,
                           eps);
        b->rmsnorm_forward(b, a->k, a->k_rstd, a->k_lin, weight(p, w->k_norm), rows * c->num_key_value_heads,
                           dim, eps);
    }
    rope_tables rope = rope_of(p);
    b->rope_forward(b, a->q, rope.index, rope.cos, rope.sin, rows, c->num_attention_heads, dim);
    b->rope_forward(b, a->k, rope.index, rope.cos, rope.sin, rows, c->num_key_value_heads, dim);
}

/* From layer l's attention output to the MLP's activation, down_proj's input. */
static void layer_attention_to_mlp(const pass *p, int l)
{
    ft_backend *b = p->backend;
    const ft_model_config *c = p->config;
    const ft_layer_offsets *w = &p->model->layers[l];
    const ft_layer_activations *a = &p->model->act.layers[l];
    int rows = p->rows, hidden = c->hidden_size, inner = c->intermediate_size;
    int q_width = c->num_attention_heads * c->head_dim;
    ft_lora_op op;

    b->linear_forward(b, a->mid, a->attn, weight(p, w->o), NULL, lora_op(p, l, FT_LORA_O, &op), rows, q_width,
                      hidden);
    b->add_rmsnorm_forward(b, a->mid, a->ln2, a->ln2_rstd, a->mid, a->input, weight(p, w->post_norm), rows, hidden,
                           (float)c->rms_norm_eps);

    b->linear_forward(b, a->gate, a->ln2, weight(p, w->gate), NULL, lora_op(p, l, FT_LORA_GATE, &op), rows, hidden,
                      inner);
    b->linear_forward(b, a->up, a->ln2, weight(p, w->up), NULL, lora_op(p, l, FT_LORA_UP, &op), rows, hidden, inner);
    b->swiglu_forward(b, a->act, a->gate, a->up, (size_t)rows * inner);
}

/* Runs layer l from its input and ln1 up to the MLP's activation. */
static void layer_forward_to_mlp(const pass *p, int l, const ft_attention_shape *shape)
{
    const ft_activations *act = &p->model->act;
    const ft_layer_activations *a = &act->layers[l];
    layer_qkv(p, l);
    p->backend->attention_forward(p->backend, a->attn, a->logsumexp, a->q, a->k, a->v, act->segments, shape);
    layer_attention_to_mlp(p, l);
}

/* The residual stream after layer l: the next layer's input, or the final norm's. */
static void *layer_output(const pass *p, int l)
{
    const ft_activations *act = &p->model->act;
    return l + 1 < p->config->num_hidden_layers ? act->layers[l + 1].input : act->final_input;
}

/* From the MLP's activation to layer l's output, normalised for whatever reads it next. */
static void layer_down(const pass *p, int l)
{
    ft_backend *b = p->backend;
    const ft_model_config *c = p->config;
    const ft_layer_activations *a = &p->model->act.layers[l];
    void *output = layer_output(p, l);
    ft_lora_op op;
    b->linear_forward(b, output, a->act, weight(p, p->model->layers[l].down), NULL,
                      lora_op(p, l, FT_LORA_DOWN, &op), p->rows, c->intermediate_size, c->hidden_size);
    next_norm next = norm_after(p, l);
    b->add_rmsnorm_forward(b, output, next.out, next.rstd, output, a->mid, next.weight, p->rows, c->hidden_size,
                           (float)c->rms_norm_eps);
}

/* Gradient checkpointing: refills the shared activations with layer l's, from
 * its saved input, by the same ops on the same inputs (and dropout seeds) as
 * the forward pass, so they are the same bits. The layer's output is kept
 * already; down_proj runs again only for its adapter's saved xa, its product
 * going to grad_hidden, which layer_backward overwrites before reading. */
static void layer_recompute(const pass *p, int l, const ft_attention_shape *shape)
{
    ft_backend *b = p->backend;
    const ft_model_config *c = p->config;
    const ft_layer_offsets *w = &p->model->layers[l];
    const ft_layer_activations *a = &p->model->act.layers[l];
    ft_lora_op op;
    b->rmsnorm_forward(b, a->ln1, a->ln1_rstd, a->input, weight(p, w->input_norm), p->rows, c->hidden_size,
                       (float)c->rms_norm_eps);
    layer_forward_to_mlp(p, l, shape);
    const ft_lora_op *down = lora_op(p, l, FT_LORA_DOWN, &op);
    if (down)
        b->linear_forward(b, p->model->act.grad_hidden, a->act, weight(p, w->down), NULL, down, p->rows,
                          c->intermediate_size, c->hidden_size);
}

/* On entry grad_residual holds d(loss)/d(layer output); on return d/d(layer input). */
static void layer_backward(const pass *p, int l, const ft_attention_shape *shape)
{
    ft_backend *b = p->backend;
    const ft_model_config *c = p->config;
    const ft_layer_offsets *w = &p->model->layers[l];
    const ft_activations *act = &p->model->act;
    const ft_layer_activations *a = &act->layers[l];
    int rows = p->rows, hidden = c->hidden_size, inner = c->intermediate_size, dim = c->head_dim;
    int q_width = c->num_attention_heads * dim, kv_width = c->num_key_value_heads * dim;
    ft_lora_op op;

    /* output = mid + down(silu(gate(ln2)) * up(ln2)), ln2 = norm(mid) */
    b->linear_backward(b, act->grad_act, false, grad(p, w->down), NULL, act->grad_residual, a->act,
                       weight(p, w->down), lora_op(p, l, FT_LORA_DOWN, &op), rows, inner, hidden);
    b->swiglu_backward(b, act->grad_gate, act->grad_up, act->grad_act, a->gate, a->up, (size_t)rows * inner);
    b->linear_backward(b, act->grad_hidden, false, grad(p, w->gate), NULL, act->grad_gate, a->ln2,
                       weight(p, w->gate), lora_op(p, l, FT_LORA_GATE, &op), rows, hidden, inner);
    b->linear_backward(b, act->grad_hidden, true, grad(p, w->up), NULL, act->grad_up, a->ln2, weight(p, w->up),
                       lora_op(p, l, FT_LORA_UP, &op), rows, hidden, inner);
    b->rmsnorm_backward(b, act->grad_residual, true, grad(p, w->post_norm), act->grad_hidden, a->mid,
                        weight(p, w->post_norm), a->ln2_rstd, rows, hidden);

    /* mid = input + o(attention(rope(norm(q(ln1))), rope(norm(k(ln1))), v(ln1))), ln1 = norm(input) */
    b->linear_backward(b, act->grad_attn, false, grad(p, w->o), NULL, act->grad_residual, a->attn, weight(p, w->o),
                       lora_op(p, l, FT_LORA_O, &op), rows, q_width, hidden);
    b->attention_backward(b, act->grad_q, act->grad_k, act->grad_v, act->grad_attn, a->attn, a->q, a->k, a->v,
                          a->logsumexp, act->segments, shape);
    rope_tables rope = rope_of(p);
    b->rope_backward(b, act->grad_q, rope.index, rope.cos, rope.sin, rows, c->num_attention_heads, dim);
    b->rope_backward(b, act->grad_k, rope.index, rope.cos, rope.sin, rows, c->num_key_value_heads, dim);
    void *grad_q = act->grad_q, *grad_k = act->grad_k;
    if (c->qk_norm) {
        b->rmsnorm_backward(b, act->grad_q_lin, false, grad(p, w->q_norm), act->grad_q, a->q_lin,
                            weight(p, w->q_norm), a->q_rstd, rows * c->num_attention_heads, dim);
        b->rmsnorm_backward(b, act->grad_k_lin, false, grad(p, w->k_norm), act->grad_k, a->k_lin,
                            weight(p, w->k_norm), a->k_rstd, rows * c->num_key_value_heads, dim);
        grad_q = act->grad_q_lin;
        grad_k = act->grad_k_lin;
    }
    b->linear_backward(b, act->grad_hidden, false, grad(p, w->q), grad(p, w->q_bias), grad_q, a->ln1,
                       weight(p, w->q), lora_op(p, l, FT_LORA_Q, &op), rows, hidden, q_width);
    b->linear_backward(b, act->grad_hidden, true, grad(p, w->k), grad(p, w->k_bias), grad_k, a->ln1,
                       weight(p, w->k), lora_op(p, l, FT_LORA_K, &op), rows, hidden, kv_width);
    b->linear_backward(b, act->grad_hidden, true, grad(p, w->v), grad(p, w->v_bias), act->grad_v, a->ln1,
                       weight(p, w->v), lora_op(p, l, FT_LORA_V, &op), rows, hidden, kv_width);
    b->rmsnorm_backward(b, act->grad_residual, true, grad(p, w->input_norm), act->grad_hidden, a->input,
                        weight(p, w->input_norm), a->ln1_rstd, rows, hidden);
}

/* Copies a chunk of logits to the caller's floats, converting from the backend's dtype. */
static void download_logits(const pass *p, float *out, size_t count)
{
    ft_model *model = p->model;
    ft_backend *b = p->backend;
    if (b->dtype == FT_DTYPE_F32) {
        b->download(b, out, model->act.logits, count * sizeof(float));
        return;
    }
    if (!model->host_logits)
        model->host_logits = ft_xmalloc((size_t)model->head_chunk_rows * p->config->vocab_size * sizeof(uint16_t));
    b->download(b, model->host_logits, model->act.logits, count * sizeof(uint16_t));
    const uint16_t *bf16 = model->host_logits;
    for (size_t i = 0; i < count; i++)
        out[i] = ft_bf16_to_f32(bf16[i]);
}

/* lm_head and cross-entropy over chunks of rows; with backward, each chunk's
 * gradient goes straight into grad_hidden (d/d final norm's output) and lm_head's. */
static double head(const pass *p, float *logits_out, double grad_scale)
{
    ft_backend *b = p->backend;
    ft_model *model = p->model;
    const ft_activations *act = &model->act;
    int hidden = p->config->hidden_size, vocab = p->config->vocab_size, chunk = model->head_chunk_rows;
    const void *lm_head = weight(p, model->lm_head);
    double loss_sum = 0.0;
    for (int first = 0; first < p->rows; first += chunk) {
        int n = p->rows - first < chunk ? p->rows - first : chunk;
        const void *x = at(p, act->final_norm, (size_t)first * hidden);
        b->linear_forward(b, act->logits, x, lm_head, NULL, NULL, n, hidden, vocab);
        if (logits_out)
            download_logits(p, logits_out + (size_t)first * vocab, (size_t)n * vocab);
        b->cross_entropy(b, act->losses + first, act->logits, act->targets + first, n, vocab, p->backward,
                         (float)grad_scale);
        if (!p->backward)
            continue;
        b->linear_backward(b, at(p, act->grad_hidden, (size_t)first * hidden), false, grad(p, model->lm_head), NULL,
                           act->logits, x, lm_head, NULL, n, hidden, vocab);
    }
    b->download(b, model->host_losses, act->losses, (size_t)p->rows * sizeof(float));
    for (int r = 0; r < p->rows; r++)
        loss_sum += model->host_losses[r];
    return loss_sum;
}

/* The embeddings of act->tokens, the image features in place of the image
 * tokens' (ft_model_place_image_features), and the first layer's input_layernorm. */
static void embed(const pass *p)
{
    ft_model *model = p->model;
    const ft_layer_activations *first = &model->act.layers[0];
    prefetch(p, model->embed, model->layers[0].input_norm);
    p->backend->embedding_forward(p->backend, first->input, weight(p, model->embed), model->act.tokens, p->rows,
                                  p->config->hidden_size);
    if (model->n_image_rows > 0)
        p->backend->scatter_rows(p->backend, first->input, model->act.image_features, model->act.image_rows,
                                 model->n_image_rows, p->config->hidden_size);
    model->n_image_rows_placed = model->n_image_rows;
    model->n_image_rows = 0;
    p->backend->rmsnorm_forward(p->backend, first->ln1, first->ln1_rstd, first->input,
                                weight(p, p->model->layers[0].input_norm), p->rows, p->config->hidden_size,
                                (float)p->config->rms_norm_eps);
}

/* LLaVA's batch: the images of ft_model_set_images (taken) through the CLIP
 * tower and projector into the image tokens' places; positions stay plain. */
static int prepare_clip_images(ft_model *model, const int32_t *tokens, const int32_t *segments, int batch_size,
                               int seq_len, int32_t *row_next_position)
{
    int rows = batch_size * seq_len;
    const ft_stored_image *images = model->images;
    int n_images = model->n_images;
    model->images = NULL;
    model->n_images = 0;
    int64_t n_features = (int64_t)n_images * ft_vision_clip_tokens_per_image(model->clip);
    if (n_features > rows)
        return ft_error("the batch's %d images make %lld image tokens, more than its %d tokens", n_images,
                        (long long)n_features, rows);
    float *features = ft_xmalloc(((size_t)n_features * model->config.hidden_size + 1) * sizeof(float));
    int status = ft_vision_clip_image_features(model->clip, images, (size_t)n_images, features);
    if (status == 0)
        status = ft_model_place_image_features(model, tokens, rows, features, n_features);
    free(features);
    for (int b = 0; status == 0 && row_next_position && b < batch_size; b++) {
        int t = 0; /* the row's first sample, which generation continues */
        while (t < seq_len && segments[b * seq_len + t] == segments[b * seq_len])
            t++;
        row_next_position[b] = t;
    }
    return status;
}

int ft_model_prepare_vision(ft_model *model, const int32_t *tokens, const int32_t *segments, int batch_size,
                            int seq_len, int32_t *row_next_position)
{
    if (model->clip)
        return prepare_clip_images(model, tokens, segments, batch_size, seq_len, row_next_position);
    const ft_model_config *c = &model->config;
    const ft_stored_image *images = model->images;
    int n_images = model->n_images, rows = batch_size * seq_len;
    model->images = NULL;
    model->n_images = 0;
    int64_t n_features = 0;
    for (int i = 0; i < n_images; i++)
        n_features += ft_vision_qwen2_image_tokens(&c->vision, &images[i]);
    if (n_features > rows)
        return ft_error("the batch's %d images make %lld image tokens, more than its %d tokens", n_images,
                        (long long)n_features, rows);
    int32_t *positions = ft_xmalloc((size_t)rows * 3 * sizeof(int32_t));
    float *features = ft_xmalloc(((size_t)n_features * c->hidden_size + 1) * sizeof(float));
    int status = ft_mrope_positions(c, tokens, segments, batch_size, seq_len, images, (size_t)n_images, positions);
    if (status == 0)
        status = ft_vision_qwen2_forward(model->vision, images, (size_t)n_images, features);
    if (status == 0)
        status = ft_model_place_image_features(model, tokens, rows, features, n_features);
    if (status == 0) {
        size_t table = (size_t)rows * (c->head_dim / 2);
        float *cos_table = ft_xmalloc(table * sizeof(float)), *sin_table = ft_xmalloc(table * sizeof(float));
        ft_mrope_tables(c, positions, rows, cos_table, sin_table);
        model->backend->upload(model->backend, model->act.mrope_cos, cos_table, table * sizeof(float));
        model->backend->upload(model->backend, model->act.mrope_sin, sin_table, table * sizeof(float));
        free(cos_table);
        free(sin_table);
    }
    for (int b = 0; status == 0 && row_next_position && b < batch_size; b++) {
        int32_t largest = -1; /* over the row's first sample, which generation continues */
        for (int t = 0; t < seq_len && segments[b * seq_len + t] == segments[b * seq_len]; t++)
            for (int axis = 0; axis < 3; axis++)
                if (positions[axis * rows + b * seq_len + t] > largest)
                    largest = positions[axis * rows + b * seq_len + t];
        row_next_position[b] = largest + 1;
    }
    free(features);
    free(positions);
    return status;
}

int ft_model_set_images(ft_model *model, const ft_stored_image *images, int n_images)
{
    if (n_images > 0 && !model->vision && !model->clip)
        return ft_error("%d images were given, but %s is a text-only model: the data holds images, so use a "
                        "vision-language model (such as Qwen2VLForConditionalGeneration or "
                        "LlavaForConditionalGeneration)", n_images,
                        model->config.architecture_name);
    model->images = images;
    model->n_images = n_images;
    return 0;
}

int ft_model_place_image_features(ft_model *model, const int32_t *tokens, int rows, const float *features,
                                  int64_t n_features)
{
    const ft_model_config *c = &model->config;
    ft_backend *b = model->backend;
    int32_t *image_rows = ft_xmalloc(((size_t)rows + 1) * sizeof(int32_t));
    int64_t n = 0;
    for (int r = 0; r < rows; r++)
        if (tokens[r] == c->image_token_id)
            image_rows[n++] = r;
    if (n != n_features) {
        free(image_rows);
        return ft_error("the batch has %lld image tokens, but its images make %lld: the data and the images do "
                        "not match; tokenize the data again for this model", (long long)n, (long long)n_features);
    }
    ft_backend_upload_floats(b, model->act.image_features, features, (size_t)n * c->hidden_size);
    b->upload(b, model->act.image_rows, image_rows, (size_t)n * sizeof(int32_t));
    free(image_rows);
    model->n_image_rows = (int)n;
    return 0;
}

/* A trained projector's share of backward: the gradients at the image tokens'
 * rows of the first layer's input are its features' gradients. */
static void projector_backward(const pass *p)
{
    ft_model *model = p->model;
    if (!model->projector || !ft_projector_is_trained(model->projector) || model->n_image_rows_placed == 0)
        return;
    const ft_activations *act = &model->act;
    void *grad_features = act->image_features; /* the features are spent: their place holds their gradients */
    p->backend->gather_rows(p->backend, grad_features, act->grad_residual, act->image_rows,
                            model->n_image_rows_placed, p->config->hidden_size);
    if (model->vision)
        ft_vision_qwen2_backward(model->vision, grad_features);
    else
        ft_vision_clip_backward(model->clip, grad_features);
}

/* The image tokens' embeddings were replaced by features (transformers'
 * masked_scatter): their rows' gradients go to no embedding. */
static void drop_image_rows(const pass *p)
{
    ft_model *model = p->model;
    int n = model->n_image_rows_placed, hidden = p->config->hidden_size;
    if (n == 0)
        return;
    p->backend->zero(p->backend, model->act.image_features, (size_t)n * hidden * model->element_bytes);
    p->backend->scatter_rows(p->backend, model->act.grad_residual, model->act.image_features, model->act.image_rows,
                             n, hidden);
}

/* An offloaded update beside the passes (update_gate.h): position's values are its own on return. */
static void update_gate_wait(ft_model *model, size_t position)
{
    if (model->update_gate)
        model->update_gate_wait(model->update_gate, position);
}

static int run(ft_model *model, const ft_batch *batch, bool backward, float *logits, double *loss)
{
    if (backward && model->options.finetuning == FT_FINETUNE_NONE)
        return ft_error("the model was loaded for inference; load it for LoRA or full fine-tuning to train");
    pass p = {model, model->backend, &model->config, batch->batch_size * batch->seq_len, 0, backward, 0, false, false};
    if (check_batch(model, batch, &p.n_targets) < 0)
        return -1;
    if (model->lora)
        p.dropout_seed = ft_random_stream(ft_lora_get_config(model->lora)->seed, batch->dropout_seed);
    ft_backend *b = p.backend;
    const ft_model_config *c = &model->config;
    const ft_activations *act = &model->act;
    int hidden = c->hidden_size, layers = c->num_hidden_layers;
    ft_attention_shape shape = {batch->batch_size, batch->seq_len, c->num_attention_heads, c->num_key_value_heads,
                                c->head_dim, false};
    p.mrope = model->vision != NULL;
    /* an offloaded update beside the pass: the values outside the layers, and layer 0's (its input norm
     * ends embed) */
    update_gate_wait(model, 0);
    update_gate_wait(model, 1);
    if (model->projector) /* its adapters' dropout masks: a stream of their own */
        ft_projector_set_dropout_seed(model->projector, ft_random_stream(p.dropout_seed, (uint64_t)1 << 32));
    if ((model->vision || model->clip) && ft_model_prepare_vision(model, batch->tokens, batch->segments,
                                                                  batch->batch_size, batch->seq_len, NULL) < 0)
        return -1;
    upload_batch(&p, batch);
    embed(&p);
    for (int l = 0; l < layers; l++) {
        update_gate_wait(model, (size_t)l + 2); /* the next layer's input norm ends this one */
        prefetch(&p, model->layers[l].input_norm, l + 1 < layers ? model->layers[l + 1].input_norm : model->final_norm);
        layer_forward_to_mlp(&p, l, &shape);
        layer_down(&p, l);
    }
    int64_t denominator = batch->loss_denominator > 0 ? batch->loss_denominator : p.n_targets;
    double loss_sum = head(&p, logits, denominator > 0 ? 1.0 / (double)denominator : 0.0);
    if (loss)
        *loss = p.n_targets > 0 ? loss_sum / p.n_targets : 0.0;
    if (backward) {
        prefetch(&p, model->final_norm, model->layers[layers - 1].input_norm);
        b->rmsnorm_backward(b, act->grad_residual, false, grad(&p, model->final_norm), act->grad_hidden,
                            act->final_input, weight(&p, model->final_norm), act->final_rstd, p.rows, hidden);
        gradients_done(&p, model->final_norm);
        for (int l = layers - 1; l >= 0; l--) {
            prefetch(&p, model->layers[l].input_norm, l > 0 ? model->layers[l - 1].input_norm : FT_ABSENT);
            if (model->options.gradient_checkpointing)
                layer_recompute(&p, l, &shape);
            layer_backward(&p, l, &shape);
            gradients_done(&p, model->layers[l].input_norm);
            if (model->layer_gradients_done)
                model->layer_gradients_done(model->layer_gradients_context, l);
        }
        projector_backward(&p);
        float *grad_embed = grad(&p, model->embed);
        if (grad_embed) {
            drop_image_rows(&p);
            b->embedding_backward(b, grad_embed, act->grad_residual, act->tokens, p.rows, hidden);
        }
    }
    int ended = model->shards ? model->shard_calls->end_pass(model->shards) : 0;
    int reduced = backward && model->grad_shards ? model->grad_calls->finish(model->grad_shards) : 0;
    if (ended < 0 || reduced < 0) /* the reduce-scatter's message, when both failed */
        return -1;
    return b->check(b);
}

int ft_model_forward(ft_model *model, const ft_batch *batch, float *logits, double *loss)
{
    return run(model, batch, false, logits, loss);
}

int ft_model_forward_backward(ft_model *model, const ft_batch *batch, double *loss)
{
    return run(model, batch, true, NULL, loss);
}

/* --- the decoder in pieces, for generation --- */

static pass generation_pass(ft_model *model, int rows)
{
    return (pass){model, model->backend, &model->config, rows, 0, false, 0, true, model->generation_mrope};
}

void ft_model_embed(ft_model *model, int rows)
{
    pass p = generation_pass(model, rows);
    embed(&p);
}

void ft_model_layer_qkv(ft_model *model, int layer, int rows)
{
    pass p = generation_pass(model, rows);
    int layers = model->config.num_hidden_layers;
    prefetch(&p, model->layers[layer].input_norm,
             layer + 1 < layers ? model->layers[layer + 1].input_norm : model->final_norm);
    layer_qkv(&p, layer);
}

void ft_model_layer_finish(ft_model *model, int layer, int rows)
{
    pass p = generation_pass(model, rows);
    layer_attention_to_mlp(&p, layer);
    layer_down(&p, layer);
}

/* lm_head over x's rows in chunks: each chunk's logits to the host (logits), or
 * its greedy tokens chosen by the backend (ids, in the backend's memory). */
static void generation_head(ft_model *model, const void *x, int rows, float *logits, int32_t *ids)
{
    pass p = generation_pass(model, rows);
    int hidden = model->config.hidden_size, vocab = model->config.vocab_size, chunk = model->head_chunk_rows;
    for (int first = 0; first < rows; first += chunk) {
        int n = rows - first < chunk ? rows - first : chunk;
        p.backend->linear_forward(p.backend, model->act.logits, at(&p, (void *)x, (size_t)first * hidden),
                                  weight(&p, model->lm_head), NULL, NULL, n, hidden, vocab);
        if (ids)
            p.backend->argmax_rows(p.backend, ids + first, model->act.logits, n, vocab);
        else
            download_logits(&p, logits + (size_t)first * vocab, (size_t)n * vocab);
    }
}

void ft_model_head_logits(ft_model *model, const void *x, int rows, float *logits)
{
    generation_head(model, x, rows, logits, NULL);
}

void ft_model_head_greedy(ft_model *model, const void *x, int rows, int32_t *ids)
{
    generation_head(model, x, rows, NULL, ids);
}

int ft_model_pieces_done(ft_model *model)
{
    return model->shards ? model->shard_calls->end_pass(model->shards) : 0;
}
