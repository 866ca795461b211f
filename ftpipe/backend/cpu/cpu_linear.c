/* cpu_linear: linear layers with an optional LoRA adapter, forward and backward,
 * on the cpu backend. Every product is one cblas_sgemm. */
#include <cblas.h>
#include <stdint.h>
#include <string.h>

#include "cpu_ops.h"
#include "ftpipe/base/random.h"

size_t ft_cpu_linear_scratch_floats(const ft_backend_limits *limits)
{
    /* the dropped-out input, then the [rows, rank] product */
    return (size_t)limits->max_rows * (size_t)limits->max_features + (size_t)limits->max_rows * limits->max_rank;
}

/* dropout(x) into out: kept elements scaled by 1/(1-p), as torch.nn.Dropout does. */
static void apply_dropout(float *out, const float *x, const ft_lora_op *lora, int rows, int in_features)
{
    float keep_scale = 1.0f / (1.0f - lora->dropout);
    size_t n = (size_t)rows * in_features;
    for (size_t i = 0; i < n; i++)
        out[i] = ft_random_uniform(lora->dropout_seed, i) < lora->dropout ? 0.0f : x[i] * keep_scale;
}

void ft_cpu_linear_forward(ft_backend *self, void *out_memory, const void *x_memory, const void *weight,
                           const void *bias_memory, const ft_lora_op *lora, int rows, int in_features,
                           int out_features)
{
    float *out = out_memory;
    const float *x = x_memory, *bias = bias_memory;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out_features, in_features, 1.0f, x, in_features,
                weight, in_features, 0.0f, out, out_features);
    if (bias)
        for (int r = 0; r < rows; r++) {
            float *row = out + (size_t)r * out_features;
            for (int c = 0; c < out_features; c++)
                row[c] += bias[c];
        }
    if (!lora)
        return;
    float *xa = lora->xa;
    const float *input = x;
    if (lora->dropout > 0.0f) {
        float *dropped = ft_cpu_scratch(self, (size_t)rows * in_features);
        apply_dropout(dropped, x, lora, rows, in_features);
        input = dropped;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, lora->rank, in_features, 1.0f, input, in_features,
                lora->a, in_features, 0.0f, xa, lora->rank);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out_features, lora->rank, lora->scaling, xa,
                lora->rank, lora->b, lora->rank, 1.0f, out, out_features);
}

/* The adapter's share of backward: grad_b, grad_a, and its term of grad_x. */
static void lora_backward(ft_backend *self, float *grad_x, const float *grad_out, const float *x,
                          const ft_lora_op *lora, int rows, int in_features, int out_features)
{
    size_t input_floats = (size_t)rows * in_features;
    float *scratch = ft_cpu_scratch(self, input_floats + (size_t)rows * lora->rank);
    float *dropped = scratch;
    float *grad_xa = scratch + input_floats; /* grad_out B: [rows, rank], without the scaling */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, lora->rank, out_features, 1.0f, grad_out,
                out_features, lora->b, lora->rank, 0.0f, grad_xa, lora->rank);
    if (lora->grad_b)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out_features, lora->rank, rows, lora->scaling,
                    grad_out, out_features, lora->xa, lora->rank, 1.0f, lora->grad_b, lora->rank);
    const float *input = x;
    if (lora->dropout > 0.0f) {
        apply_dropout(dropped, x, lora, rows, in_features);
        input = dropped;
    }
    if (lora->grad_a)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, lora->rank, in_features, rows, lora->scaling, grad_xa,
                    lora->rank, input, in_features, 1.0f, lora->grad_a, in_features);
    if (lora->dropout <= 0.0f) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in_features, lora->rank, lora->scaling,
                    grad_xa, lora->rank, lora->a, in_features, 1.0f, grad_x, in_features);
        return;
    }
    /* Through the dropout: the gradient of a dropped element is 0, of a kept one scaled. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in_features, lora->rank, lora->scaling, grad_xa,
                lora->rank, lora->a, in_features, 0.0f, dropped, in_features);
    float keep_scale = 1.0f / (1.0f - lora->dropout);
    for (size_t i = 0; i < input_floats; i++)
        if (ft_random_uniform(lora->dropout_seed, i) >= lora->dropout)
            grad_x[i] += dropped[i] * keep_scale;
}

void ft_cpu_linear_backward(ft_backend *self, void *grad_x_memory, bool accumulate, float *grad_weight,
                            float *grad_bias, const void *grad_out_memory, const void *x_memory, const void *weight,
                            const ft_lora_op *lora, int rows, int in_features, int out_features)
{
    float *grad_x = grad_x_memory;
    const float *grad_out = grad_out_memory, *x = x_memory;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in_features, out_features, 1.0f, grad_out,
                out_features, weight, in_features, accumulate ? 1.0f : 0.0f, grad_x, in_features);
    if (grad_weight)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out_features, in_features, rows, 1.0f, grad_out,
                    out_features, x, in_features, 1.0f, grad_weight, in_features);
    if (grad_bias)
        for (int r = 0; r < rows; r++) {
            const float *row = grad_out + (size_t)r * out_features;
            for (int c = 0; c < out_features; c++)
                grad_bias[c] += row[c];
        }
    if (lora)
        lora_backward(self, grad_x, grad_out, x, lora, rows, in_features, out_features);
}
