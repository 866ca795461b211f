/* cpu_backend: the fp32 reference backend. Host memory, plain C loops for the
 * row and elementwise ops, OpenBLAS for matrix products (cpu_linear.c,
 * cpu_attention.c, cpu_decode.c); memory and scratch in cpu_memory.c. Sums that decide accuracy (norms, softmax
 * denominators) are taken in double. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_ops.h"
#include "ftpipe/backend/host_adamw.h"
#include "ftpipe/backend/host_norm.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

static void cpu_copy(ft_backend *self, void *to, const void *from, size_t bytes)
{
    if (bytes)
        memmove(to, from, bytes);
}

static void *cpu_alloc_host(ft_backend *self, size_t bytes)
{
    void *pointer = malloc(bytes ? bytes : 1);
    if (!pointer)
        ft_error("out of host memory: cannot allocate %zu bytes", bytes);
    return pointer;
}

static void cpu_free_host(ft_backend *self, void *pointer) { free(pointer); }

static void cpu_zero(ft_backend *self, void *device, size_t bytes)
{
    if (bytes)
        memset(device, 0, bytes);
}

static int cpu_reserve(ft_backend *self, const ft_backend_limits *limits)
{
    size_t linear = ft_cpu_linear_scratch_floats(limits), attention = ft_cpu_attention_scratch_floats(limits);
    return ft_cpu_scratch_reserve(self, linear > attention ? linear : attention);
}

/* Host ops finish before they return and cannot fault. */
static int cpu_check(ft_backend *self) { return 0; }

/* --- row and elementwise ops (every array is float: this backend's dtype) --- */

static void cpu_embedding_forward(ft_backend *self, void *out, const void *table, const int32_t *tokens, int rows,
                                  int dim)
{
    float *o = out;
    const float *t = table;
    for (int r = 0; r < rows; r++)
        memcpy(o + (size_t)r * dim, t + (size_t)tokens[r] * dim, (size_t)dim * sizeof(float));
}

static void cpu_embedding_backward(ft_backend *self, float *grad_table, const void *grad_out,
                                   const int32_t *tokens, int rows, int dim)
{
    for (int r = 0; r < rows; r++) {
        float *row = grad_table + (size_t)tokens[r] * dim;
        const float *grad = (const float *)grad_out + (size_t)r * dim;
        for (int c = 0; c < dim; c++)
            row[c] += grad[c];
    }
}

static void cpu_rmsnorm_forward(ft_backend *self, void *out, float *rstd, const void *x, const void *weight,
                                int rows, int dim, float eps)
{
    const float *w = weight;
    for (int r = 0; r < rows; r++) {
        const float *in = (const float *)x + (size_t)r * dim;
        float *o = (float *)out + (size_t)r * dim;
        double squares = 0.0;
        for (int c = 0; c < dim; c++)
            squares += (double)in[c] * in[c];
        float s = (float)(1.0 / sqrt(squares / dim + eps));
        if (rstd)
            rstd[r] = s;
        for (int c = 0; c < dim; c++)
            o[c] = w[c] * (in[c] * s);
    }
}

static void cpu_add_rmsnorm_forward(ft_backend *self, void *sum, void *out, float *rstd, const void *a,
                                    const void *b, const void *weight, int rows, int dim, float eps)
{
    float *s = sum;
    const float *x = a, *y = b;
    for (size_t i = 0, n = (size_t)rows * dim; i < n; i++)
        s[i] = x[i] + y[i];
    cpu_rmsnorm_forward(self, out, rstd, sum, weight, rows, dim, eps);
}

static void cpu_rmsnorm_backward(ft_backend *self, void *grad_x, bool accumulate, float *grad_weight,
                                 const void *grad_out, const void *x, const void *weight, const float *rstd,
                                 int rows, int dim)
{
    const float *w = weight;
    for (int r = 0; r < rows; r++) {
        const float *in = (const float *)x + (size_t)r * dim, *grad = (const float *)grad_out + (size_t)r * dim;
        float *gx = (float *)grad_x + (size_t)r * dim;
        float s = rstd[r];
        double dot = 0.0; /* sum of d(normalized) * normalized */
        for (int c = 0; c < dim; c++)
            dot += (double)grad[c] * w[c] * (in[c] * s);
        float mean = (float)(dot / dim);
        for (int c = 0; c < dim; c++) {
            float normalized = in[c] * s;
            float value = s * (grad[c] * w[c] - normalized * mean);
            gx[c] = accumulate ? gx[c] + value : value;
            if (grad_weight)
                grad_weight[c] += grad[c] * normalized;
        }
    }
}

static void rotate(float *x, const int32_t *positions, const float *cos_table, const float *sin_table, int rows,
                   int n_heads, int head_dim, float direction)
{
    int half = head_dim / 2;
    for (int r = 0; r < rows; r++) {
        const float *cos_row = cos_table + (size_t)positions[r] * half;
        const float *sin_row = sin_table + (size_t)positions[r] * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)r * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                float c = cos_row[i], s = direction * sin_row[i];
                float first = v[i], second = v[i + half];
                v[i] = first * c - second * s;
                v[i + half] = second * c + first * s;
            }
        }
    }
}

static void cpu_rope_forward(ft_backend *self, void *x, const int32_t *positions, const float *cos_table,
                             const float *sin_table, int rows, int n_heads, int head_dim)
{
    rotate(x, positions, cos_table, sin_table, rows, n_heads, head_dim, 1.0f);
}

/* A rotation's gradient is the opposite rotation. */
static void cpu_rope_backward(ft_backend *self, void *grad_x, const int32_t *positions, const float *cos_table,
                              const float *sin_table, int rows, int n_heads, int head_dim)
{
    rotate(grad_x, positions, cos_table, sin_table, rows, n_heads, head_dim, -1.0f);
}

static void cpu_swiglu_forward(ft_backend *self, void *out, const void *gate, const void *up, size_t n)
{
    float *o = out;
    const float *g = gate, *u = up;
    for (size_t i = 0; i < n; i++)
        o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void cpu_swiglu_backward(ft_backend *self, void *grad_gate, void *grad_up, const void *grad_out,
                                const void *gate, const void *up, size_t n)
{
    float *grad_g = grad_gate, *grad_u = grad_up;
    const float *grad = grad_out, *gates = gate, *ups = up;
    for (size_t i = 0; i < n; i++) {
        float g = gates[i], sigmoid = 1.0f / (1.0f + expf(-g));
        float silu = g * sigmoid;
        grad_u[i] = grad[i] * silu;
        grad_g[i] = grad[i] * ups[i] * sigmoid * (1.0f + g * (1.0f - sigmoid));
    }
}

/* --- loss --- */

static float row_logsumexp(const float *row, int vocab)
{
    float max = row[0];
    for (int c = 1; c < vocab; c++)
        if (row[c] > max)
            max = row[c];
    double sum = 0.0; /* float exponentials (each exact to an ulp), a double sum */
    for (int c = 0; c < vocab; c++)
        sum += expf(row[c] - max);
    return max + (float)log(sum);
}

static void cpu_cross_entropy(ft_backend *self, float *losses, void *logits, const int32_t *targets, int rows,
                              int vocab, bool backward, float grad_scale)
{
    for (int r = 0; r < rows; r++) {
        float *row = (float *)logits + (size_t)r * vocab;
        if (targets[r] < 0) {
            losses[r] = 0.0f;
            if (backward)
                memset(row, 0, (size_t)vocab * sizeof(float));
            continue;
        }
        float lse = row_logsumexp(row, vocab);
        losses[r] = lse - row[targets[r]];
        if (!backward)
            continue;
        for (int c = 0; c < vocab; c++)
            row[c] = expf(row[c] - lse) * grad_scale;
        row[targets[r]] -= grad_scale;
    }
}

/* --- optimizer --- */

/* torch.optim.AdamW (single-tensor form), operation for operation (host_adamw). */
static void cpu_adamw(ft_backend *self, float *param, const float *grad, float *exp_avg, float *exp_avg_sq, size_t n,
                      const ft_adamw_hyper *hyper)
{
    ft_host_adamw_update(param, grad, exp_avg, exp_avg_sq, n, hyper);
}

static double cpu_sum_squares(ft_backend *self, const float *const *xs, const size_t *counts, size_t n_tensors)
{
    return ft_host_sum_squares(NULL, xs, counts, n_tensors);
}

static void cpu_scale(ft_backend *self, float *x, size_t n, float factor) { ft_host_scale(NULL, x, n, factor); }

static void cpu_add_floats(ft_backend *self, float *to, const float *from, size_t n)
{
    for (size_t i = 0; i < n; i++)
        to[i] += from[i];
}

/* float is the cpu backend's dtype: the master weights are the weights (a copy when apart) */
static void cpu_cast_from_float(ft_backend *self, void *dst, const float *src, size_t n)
{
    cpu_copy(self, dst, src, n * sizeof(float));
}

static void cpu_destroy(ft_backend *self)
{
    ft_cpu_memory_free(self->context);
    free(self);
}

ft_backend *ft_backend_cpu_create(int threads)
{
    if (threads <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > 0 ? (int)cores : 1;
    }
    openblas_set_num_threads(threads);
    ft_backend *backend = ft_xcalloc(1, sizeof *backend);
    backend->name = "cpu";
    backend->dtype = FT_DTYPE_F32;
    backend->context = ft_cpu_memory_new();
    backend->destroy = cpu_destroy;
    backend->alloc = ft_cpu_alloc;
    backend->free = ft_cpu_free;
    backend->upload = cpu_copy;
    backend->download = cpu_copy;
    backend->zero = cpu_zero;
    backend->copy = cpu_copy;
    backend->copy_queued = cpu_copy;
    backend->alloc_host = cpu_alloc_host;
    backend->free_host = cpu_free_host;
    backend->reserve = cpu_reserve;
    backend->reserved_bytes = ft_cpu_reserved_bytes;
    backend->peak_bytes = ft_cpu_peak_bytes;
    backend->check = cpu_check;
    backend->embedding_forward = cpu_embedding_forward;
    backend->embedding_backward = cpu_embedding_backward;
    backend->rmsnorm_forward = cpu_rmsnorm_forward;
    backend->add_rmsnorm_forward = cpu_add_rmsnorm_forward;
    backend->rmsnorm_backward = cpu_rmsnorm_backward;
    backend->rope_forward = cpu_rope_forward;
    backend->rope_backward = cpu_rope_backward;
    backend->layernorm_forward = ft_cpu_layernorm_forward;
    backend->layernorm_backward = ft_cpu_layernorm_backward;
    backend->activation_forward = ft_cpu_activation_forward;
    backend->activation_backward = ft_cpu_activation_backward;
    backend->add_forward = ft_cpu_add_forward;
    backend->swiglu_forward = cpu_swiglu_forward;
    backend->swiglu_backward = cpu_swiglu_backward;
    backend->linear_forward = ft_cpu_linear_forward;
    backend->linear_backward = ft_cpu_linear_backward;
    backend->attention_forward = ft_cpu_attention_forward;
    backend->attention_backward = ft_cpu_attention_backward;
    backend->gather_rows = ft_cpu_gather_rows;
    backend->argmax_rows = ft_cpu_argmax_rows;
    backend->scatter_rows = ft_cpu_scatter_rows;
    backend->attention_decode = ft_cpu_attention_decode;
    backend->cross_entropy = cpu_cross_entropy;
    backend->adamw = cpu_adamw;
    backend->sum_squares = cpu_sum_squares;
    backend->scale = cpu_scale;
    backend->add_floats = cpu_add_floats;
    backend->cast_from_float = cpu_cast_from_float;
    return backend;
}
