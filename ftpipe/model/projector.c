/* projector: the multi-modal projector's forward and backward through the
 * backend's ops, in its own pass memory (grown to the most rows seen). */
#include "ftpipe/model/projector.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"

/* A pass's arrays, in the backend's dtype but RMSNorm's 1/rms (float). */
typedef struct {
    void *normed;            /* the first linear's input when there is a norm */
    void *hidden;            /* the first linear's output, then (frozen) the activation's */
    void *activated;         /* the second linear's input (trained: hidden is kept for backward) */
    void *xa[2];             /* LoRA's x A^T per linear */
    float *rstd;             /* RMSNorm's, per norm row */
    void *grad_hidden;       /* backward: d/d activated, then d/d hidden */
    void *grad_in;           /* d/d the first linear's input */
    void *grad_norm_in;      /* RMSNorm's input gradient, which its op computes and the frozen tower drops */
} pass_arrays;

struct ft_projector {
    ft_projector_weights w;
    ft_backend *backend;
    size_t element_bytes;
    float *grads;            /* trained whole: every weight's gradient, one allocation */
    ft_param_tensor tensors[6];
    size_t n_tensors;
    ft_lora_op lora[2];
    bool has_lora[2];
    uint64_t dropout_seed;
    void *work;
    int64_t work_rows;
    pass_arrays a;
    const void *input;       /* the last forward's x, kept by the caller */
    int64_t rows;
};

static size_t aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }

static int64_t norm_rows(const ft_projector_weights *w, int64_t rows)
{
    return w->norm_weight ? rows * (w->in_features / w->norm_width) : 0;
}

static size_t lay_out(const ft_projector_weights *w, int64_t rows, int rank, bool trained, size_t element_bytes,
                      char *base, pass_arrays *a)
{
    size_t r = (size_t)rows, at = 0, in = (size_t)w->in_features, mid = (size_t)w->mid_features;
    pass_arrays scratch;
    if (!a)
        a = &scratch;
#define TAKE(field, type, bytes) (a->field = (type)(base ? base + at : NULL), at += aligned(bytes))
    TAKE(normed, void *, w->norm_weight ? r * in * element_bytes : 0);
    TAKE(hidden, void *, r * mid * element_bytes);
    TAKE(activated, void *, trained ? r * mid * element_bytes : 0);
    TAKE(xa[0], void *, r * (size_t)rank * element_bytes);
    TAKE(xa[1], void *, r * (size_t)rank * element_bytes);
    TAKE(rstd, float *, trained ? (size_t)norm_rows(w, rows) * sizeof(float) : 0);
    TAKE(grad_hidden, void *, trained ? r * mid * element_bytes : 0);
    TAKE(grad_in, void *, trained ? r * in * element_bytes : 0);
    TAKE(grad_norm_in, void *, trained && w->norm_weight && !w->norm_bias ? r * in * element_bytes : 0);
#undef TAKE
    if (!trained)
        a->activated = a->hidden;
    return at;
}

size_t ft_projector_work_bytes(const ft_projector_weights *weights, int64_t rows, int lora_rank, bool trained,
                               size_t element_bytes)
{
    return lay_out(weights, rows, lora_rank, trained, element_bytes, NULL, NULL);
}

ft_projector *ft_projector_create(ft_backend *backend, const ft_projector_weights *weights)
{
    ft_projector *p = ft_xcalloc(1, sizeof *p);
    p->w = *weights;
    p->backend = backend;
    p->element_bytes = ft_dtype_size(backend->dtype);
    return p;
}

void ft_projector_free(ft_projector *p)
{
    if (!p)
        return;
    if (p->work)
        p->backend->free(p->backend, p->work);
    if (p->grads)
        p->backend->free(p->backend, p->grads);
    for (size_t i = 0; i < p->n_tensors; i++)
        free((char *)p->tensors[i].name);
    free(p);
}

static bool trained(const ft_projector *p)
{
    return p->grads || (p->has_lora[0] && p->lora[0].grad_a) || (p->has_lora[1] && p->lora[1].grad_a);
}

bool ft_projector_is_trained(const ft_projector *p) { return trained(p); }

static void add_tensor(ft_projector *p, const char *module, const char *kind, const void *value, int64_t rows,
                       int64_t columns, size_t *offset)
{
    size_t count = (size_t)(rows * (columns ? columns : 1));
    p->tensors[p->n_tensors++] = (ft_param_tensor){
        ft_xasprintf("%s%s.%s", p->w.name_prefix, module, kind), (float *)value, p->grads + *offset, count,
        columns > 0, columns ? 2 : 1, {rows, columns}};
    *offset += count;
}

size_t ft_projector_parameter_count(const ft_projector_weights *w)
{
    return (size_t)w->mid_features * w->in_features + (size_t)w->out_features * w->mid_features +
           (w->bias_1 ? (size_t)w->mid_features : 0) + (w->bias_2 ? (size_t)w->out_features : 0) +
           (w->norm_weight ? (size_t)w->norm_width * (w->norm_bias ? 2 : 1) : 0);
}

int ft_projector_train_whole(ft_projector *p)
{
    const ft_projector_weights *w = &p->w;
    if (p->backend->dtype != FT_DTYPE_F32 || (w->norm_weight && w->norm_bias && !p->backend->layernorm_backward))
        return ft_error("training the multi-modal projector whole runs on the cpu backend only for now: use "
                        "backend = cpu, or LoRA on its linear layers");
    size_t count = ft_projector_parameter_count(w);
    p->grads = p->backend->alloc(p->backend, count * sizeof(float));
    if (!p->grads)
        return ft_error_context("the multi-modal projector's gradients");
    p->backend->zero(p->backend, p->grads, count * sizeof(float));
    size_t offset = 0;
    if (w->norm_weight) {
        add_tensor(p, "ln_q", "weight", w->norm_weight, w->norm_width, 0, &offset);
        if (w->norm_bias)
            add_tensor(p, "ln_q", "bias", w->norm_bias, w->norm_width, 0, &offset);
    }
    add_tensor(p, w->linear_names[0], "weight", w->weight_1, w->mid_features, w->in_features, &offset);
    if (w->bias_1)
        add_tensor(p, w->linear_names[0], "bias", w->bias_1, w->mid_features, 0, &offset);
    add_tensor(p, w->linear_names[1], "weight", w->weight_2, w->out_features, w->mid_features, &offset);
    if (w->bias_2)
        add_tensor(p, w->linear_names[1], "bias", w->bias_2, w->out_features, 0, &offset);
    return 0;
}

const ft_param_tensor *ft_projector_tensors(const ft_projector *p, size_t *count)
{
    *count = p->n_tensors;
    return p->tensors;
}

void ft_projector_set_lora(ft_projector *p, const ft_lora_weights *first, const ft_lora_weights *second,
                           const ft_lora_config *config)
{
    const ft_lora_weights *adapters[2] = {first, second};
    for (int i = 0; i < 2; i++) {
        p->has_lora[i] = adapters[i] != NULL;
        if (!adapters[i])
            continue;
        p->lora[i] = (ft_lora_op){adapters[i]->a, adapters[i]->b, adapters[i]->grad_a, adapters[i]->grad_b, NULL,
                                  config->rank, (float)ft_lora_scaling(config), (float)config->dropout, 0};
    }
}

void ft_projector_set_dropout_seed(ft_projector *p, uint64_t seed) { p->dropout_seed = seed; }

static int reserve(ft_projector *p, int64_t rows)
{
    int rank = p->has_lora[0] ? p->lora[0].rank : p->has_lora[1] ? p->lora[1].rank : 0;
    ft_backend *b = p->backend;
    if (rows > p->work_rows) {
        if (p->work)
            b->free(b, p->work);
        p->work_rows = 0;
        p->work = b->alloc(b, lay_out(&p->w, rows, rank, trained(p), p->element_bytes, NULL, NULL));
        if (!p->work)
            return ft_error_context("the multi-modal projector's pass over %lld rows", (long long)rows);
        p->work_rows = rows;
    }
    lay_out(&p->w, rows, rank, trained(p), p->element_bytes, p->work, &p->a);
    return 0;
}

/* The LoRA op of linear i for this pass, NULL without one. */
static const ft_lora_op *lora_op(ft_projector *p, int i)
{
    if (!p->has_lora[i])
        return NULL;
    p->lora[i].xa = p->a.xa[i];
    p->lora[i].dropout_seed = ft_random_stream(p->dropout_seed, (uint64_t)i);
    return &p->lora[i];
}

int ft_projector_forward(ft_projector *p, void *out, const void *x, int64_t rows)
{
    const ft_projector_weights *w = &p->w;
    ft_backend *b = p->backend;
    if (reserve(p, rows) < 0)
        return -1;
    const void *input = x;
    if (w->norm_weight) {
        int n = (int)norm_rows(w, rows);
        if (w->norm_bias)
            b->layernorm_forward(b, p->a.normed, x, w->norm_weight, w->norm_bias, n, w->norm_width, w->norm_eps);
        else
            b->rmsnorm_forward(b, p->a.normed, trained(p) ? p->a.rstd : NULL, x, w->norm_weight, n, w->norm_width,
                               w->norm_eps);
        input = p->a.normed;
    }
    b->linear_forward(b, p->a.hidden, input, w->weight_1, w->bias_1, lora_op(p, 0), (int)rows, w->in_features,
                      w->mid_features);
    b->activation_forward(b, p->a.activated, p->a.hidden, (size_t)rows * w->mid_features, w->activation);
    b->linear_forward(b, out, p->a.activated, w->weight_2, w->bias_2, lora_op(p, 1), (int)rows, w->mid_features,
                      w->out_features);
    p->input = x;
    p->rows = rows;
    return 0;
}

/* The gradient of the weight at `value` when it is trained whole, else NULL. */
static float *grad_of(const ft_projector *p, const void *value)
{
    for (size_t i = 0; value && i < p->n_tensors; i++)
        if (p->tensors[i].value == value)
            return p->tensors[i].grad;
    return NULL;
}

void ft_projector_backward(ft_projector *p, const void *grad_out)
{
    if (!trained(p) || p->rows == 0)
        return;
    const ft_projector_weights *w = &p->w;
    ft_backend *b = p->backend;
    int rows = (int)p->rows;
    const void *first_input = w->norm_weight ? p->a.normed : p->input;
    b->linear_backward(b, p->a.grad_hidden, false, grad_of(p, w->weight_2), grad_of(p, w->bias_2), grad_out,
                       p->a.activated, w->weight_2, p->has_lora[1] ? &p->lora[1] : NULL, rows, w->mid_features,
                       w->out_features);
    b->activation_backward(b, p->a.grad_hidden, p->a.grad_hidden, p->a.hidden, (size_t)rows * w->mid_features,
                           w->activation);
    b->linear_backward(b, p->a.grad_in, false, grad_of(p, w->weight_1), grad_of(p, w->bias_1), p->a.grad_hidden,
                       first_input, w->weight_1, p->has_lora[0] ? &p->lora[0] : NULL, rows, w->in_features,
                       w->mid_features);
    float *grad_norm = grad_of(p, w->norm_weight);
    if (grad_norm) {
        int n = (int)norm_rows(w, rows);
        if (w->norm_bias)
            b->layernorm_backward(b, NULL, grad_norm, grad_of(p, w->norm_bias), p->a.grad_in, p->input,
                                  w->norm_weight, n, w->norm_width, w->norm_eps);
        else
            b->rmsnorm_backward(b, p->a.grad_norm_in, false, grad_norm, p->a.grad_in, p->input, w->norm_weight,
                                p->a.rstd, n, w->norm_width);
    }
    p->rows = 0;
}
