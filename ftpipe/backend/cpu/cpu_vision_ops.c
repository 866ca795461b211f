/* cpu_vision_ops: the ops the vision towers and their projectors add to the cpu
 * backend: LayerNorm with a bias (and its weights' gradients, for a trained
 * projector's norm), the GELU family forward and backward, and an elementwise
 * add. Row sums in double, as torch's fp32 kernels come close to. */
#include <math.h>

#include "cpu_ops.h"

/* A row's mean (into *mean) and 1 / its standard deviation, in double: the mean
 * first, then the variance around it. */
static double row_moments(const float *in, int dim, float eps, double *mean)
{
    double sum = 0.0, variance = 0.0;
    for (int c = 0; c < dim; c++)
        sum += in[c];
    *mean = sum / dim;
    for (int c = 0; c < dim; c++)
        variance += (in[c] - *mean) * (in[c] - *mean);
    return 1.0 / sqrt(variance / dim + eps);
}

void ft_cpu_layernorm_forward(ft_backend *self, void *out, const void *x, const void *weight, const void *bias,
                              int rows, int dim, float eps)
{
    (void)self;
    const float *w = weight, *b = bias;
    for (int r = 0; r < rows; r++) {
        const float *in = (const float *)x + (size_t)r * dim;
        float *o = (float *)out + (size_t)r * dim;
        double mean, rstd = row_moments(in, dim, eps, &mean);
        for (int c = 0; c < dim; c++)
            o[c] = (float)((in[c] - mean) * rstd) * w[c] + (b ? b[c] : 0.0f);
    }
}

void ft_cpu_layernorm_backward(ft_backend *self, void *grad_x, float *grad_weight, float *grad_bias,
                               const void *grad_out, const void *x, const void *weight, int rows, int dim, float eps)
{
    (void)self;
    const float *w = weight;
    for (int r = 0; r < rows; r++) {
        const float *in = (const float *)x + (size_t)r * dim, *g = (const float *)grad_out + (size_t)r * dim;
        double mean, rstd = row_moments(in, dim, eps, &mean);
        /* d/dx of (x - mean) rstd: g w rstd less its mean and its projection on the normalised row */
        double mean_g = 0.0, mean_g_normed = 0.0;
        for (int c = 0; c < dim; c++) {
            double normed = (in[c] - mean) * rstd, gw = (double)g[c] * w[c];
            if (grad_weight)
                grad_weight[c] += (float)(g[c] * normed);
            if (grad_bias)
                grad_bias[c] += g[c];
            mean_g += gw;
            mean_g_normed += gw * normed;
        }
        if (!grad_x)
            continue;
        mean_g /= dim;
        mean_g_normed /= dim;
        float *gx = (float *)grad_x + (size_t)r * dim;
        for (int c = 0; c < dim; c++) {
            double normed = (in[c] - mean) * rstd;
            gx[c] = (float)(rstd * ((double)g[c] * w[c] - mean_g - normed * mean_g_normed));
        }
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

void ft_cpu_activation_backward(ft_backend *self, void *grad_x, const void *grad_out, const void *x, size_t n,
                                ft_activation activation)
{
    (void)self;
    const float *in = x, *g = grad_out;
    float *o = grad_x;
    for (size_t i = 0; i < n; i++) {
        double v = in[i], slope = 0.0;
        switch (activation) {
        case FT_ACTIVATION_QUICK_GELU: {
            double s = 1.0 / (1.0 + exp(-1.702 * v));
            slope = s + 1.702 * v * s * (1.0 - s);
            break;
        }
        case FT_ACTIVATION_GELU: /* Phi(v) + v phi(v) */
            slope = 0.5 * (1.0 + erf(v * M_SQRT1_2)) + v * exp(-0.5 * v * v) * (M_2_SQRTPI * M_SQRT1_2 * 0.5);
            break;
        case FT_ACTIVATION_GELU_TANH: {
            double k = sqrt(2.0 / M_PI), t = tanh(k * (v + 0.044715 * v * v * v));
            slope = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * v * v);
            break;
        }
        }
        o[i] = (float)(g[i] * slope);
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
