/* host_adamw: the update loop (see host_adamw.h). */
#include "ftpipe/backend/host_adamw.h"

#include <math.h>

void ft_host_adamw_update(float *restrict param, const float *restrict grad, float *restrict exp_avg,
                          float *restrict exp_avg_sq, size_t n, const ft_adamw_hyper *hyper)
{
    /* the step's constants in double, each rounded to float once */
    float decay = (float)(1.0 - hyper->learning_rate * hyper->weight_decay);
    float one_minus_beta1 = (float)(1.0 - hyper->beta1), beta2 = (float)hyper->beta2;
    float one_minus_beta2 = (float)(1.0 - hyper->beta2);
    double bias_correction1 = 1.0 - pow(hyper->beta1, (double)hyper->step);
    double bias_correction2 = 1.0 - pow(hyper->beta2, (double)hyper->step);
    float step_size = (float)(hyper->learning_rate / bias_correction1);
    float bias_correction2_sqrt = (float)sqrt(bias_correction2);
    float eps = (float)hyper->eps;
    for (size_t i = 0; i < n; i++) {
        float g = grad[i], p = param[i] * decay;
        float m = exp_avg[i] + (g - exp_avg[i]) * one_minus_beta1;
        float v = exp_avg_sq[i] * beta2 + one_minus_beta2 * (g * g);
        float denom = __builtin_sqrtf(v) / bias_correction2_sqrt + eps;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        param[i] = p - step_size * (m / denom);
    }
}
