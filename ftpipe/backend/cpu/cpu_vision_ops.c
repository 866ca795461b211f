/* cpu_vision_ops: the forward-only ops the vision towers add to the cpu backend:
 * LayerNorm with a bias, the GELU family, and an elementwise add. Row sums in
 * double, as torch's fp32 kernels come close to. */
#include <math.h>

#include "cpu_ops.h"

void ft_cpu_layernorm_forward(ft_backend *self, void *out, const void *x, const void *weight, const void *bias,
                              int rows, int dim, float eps)
{
    (void)self;
    const float *w = weight, *b = bias;
    for (int r = 0; r < rows; r++) {
        const float *in = (const float *)x + (size_t)r * dim;
        float *o = (float *)out + (size_t)r * dim;
        double mean = 0.0, variance = 0.0;
        for (int c = 0; c < dim; c++)
            mean += in[c];
        mean /= dim;
        for (int c = 0; c < dim; c++)
            variance += (in[c] - mean) * (in[c] - mean);
        double rstd = 1.0 / sqrt(variance / dim + eps);
        for (int c = 0; c < dim; c++)
            o[c] = (float)((in[c] - mean) * rstd) * w[c] + (b ? b[c] : 0.0f);
    }
}

void ft_cpu_activation_forward(ft_backend *self, void *out, const void *x, size_t n, ft_activation activation)
{
    (void)self;
    const float *in = x;
    float *o = out;
    switch (activation) {
    case FT_ACTIVATION_QUICK_GELU:
        for (size_t i = 0; i < n; i++)
            o[i] = in[i] / (1.0f + expf(-1.702f * in[i]));
        break;
    case FT_ACTIVATION_GELU:
        for (size_t i = 0; i < n; i++)
            o[i] = (float)(0.5 * in[i] * (1.0 + erf(in[i] * M_SQRT1_2)));
        break;
    case FT_ACTIVATION_GELU_TANH:
        for (size_t i = 0; i < n; i++) {
            double v = in[i];
            o[i] = (float)(0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v))));
        }
        break;
    }
}

void ft_cpu_add_forward(ft_backend *self, void *out, const void *a, const void *b, size_t n)
{
    (void)self;
    const float *x = a, *y = b;
    float *o = out;
    for (size_t i = 0; i < n; i++)
        o[i] = x[i] + y[i];
}
