/* host_adamw: torch's AdamW update over several steps with weight decay (an odd
 * count, so a vectorised loop's tail runs too) against the same formula in
 * double (within float rounding), and the cpu backend's adamw op being this
 * update, bit for bit. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "ftpipe/backend/host_adamw.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"

#define N 10007

static void fill(float *x, size_t n, uint64_t seed, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (2.0f * ft_random_uniform(seed, i) - 1.0f) * scale;
}

TEST(follows_torch_adamw_within_float_rounding)
{
    float *param = ft_xmalloc(N * sizeof(float)), *grad = ft_xmalloc(N * sizeof(float));
    float *m = ft_xcalloc(N, sizeof(float)), *v = ft_xcalloc(N, sizeof(float));
    double *p64 = ft_xmalloc(N * sizeof(double)), *m64 = ft_xcalloc(N, sizeof(double)), *v64 = ft_xcalloc(N, sizeof(double));
    fill(param, N, 1, 0.5f);
    for (size_t i = 0; i < N; i++)
        p64[i] = param[i];
    float first = param[0];
    double worst = 0.0;
    for (int64_t step = 1; step <= 3; step++) {
        fill(grad, N, 100 + (uint64_t)step, 1e-2f);
        ft_adamw_hyper hyper = {1e-3, 0.9, 0.999, 1e-8, 0.1, step};
        ft_host_adamw_update(param, grad, m, v, N, &hyper);
        for (size_t i = 0; i < N; i++) { /* torch.optim.AdamW, decoupled decay first */
            p64[i] *= 1.0 - hyper.learning_rate * hyper.weight_decay;
            m64[i] = hyper.beta1 * m64[i] + (1.0 - hyper.beta1) * grad[i];
            v64[i] = hyper.beta2 * v64[i] + (1.0 - hyper.beta2) * grad[i] * grad[i];
            double corrected = sqrt(v64[i]) / sqrt(1.0 - pow(hyper.beta2, (double)step)) + hyper.eps;
            p64[i] -= hyper.learning_rate / (1.0 - pow(hyper.beta1, (double)step)) * m64[i] / corrected;
        }
    }
    for (size_t i = 0; i < N; i++)
        worst = fmax(worst, fabs(param[i] - p64[i]) / fmax(fabs(p64[i]), 1e-3));
    CHECK(worst < 1e-6);
    CHECK(param[0] != first); /* the steps moved the weights */
    free(param), free(grad), free(m), free(v), free(p64), free(m64), free(v64);
}

TEST(the_cpu_backends_adamw_op_is_this_update)
{
    ft_backend *cpu = ft_backend_cpu_create(1);
    float *a = ft_xmalloc(N * sizeof(float)), *b = ft_xmalloc(N * sizeof(float)), *grad = ft_xmalloc(N * sizeof(float));
    float *ma = ft_xcalloc(N, sizeof(float)), *va = ft_xcalloc(N, sizeof(float));
    float *mb = ft_xcalloc(N, sizeof(float)), *vb = ft_xcalloc(N, sizeof(float));
    fill(a, N, 1, 0.5f);
    memcpy(b, a, N * sizeof(float));
    for (int64_t step = 1; step <= 3; step++) {
        fill(grad, N, 200 + (uint64_t)step, 1e-2f);
        ft_adamw_hyper hyper = {1e-3, 0.9, 0.999, 1e-8, 0.1, step};
        ft_host_adamw_update(a, grad, ma, va, N, &hyper);
        cpu->adamw(cpu, b, grad, mb, vb, N, &hyper);
    }
    CHECK(memcmp(a, b, N * sizeof(float)) == 0 && memcmp(ma, mb, N * sizeof(float)) == 0 &&
          memcmp(va, vb, N * sizeof(float)) == 0);
    free(a), free(b), free(grad), free(ma), free(va), free(mb), free(vb);
    ft_backend_destroy(cpu);
}

int main(void)
{
    RUN(follows_torch_adamw_within_float_rounding);
    RUN(the_cpu_backends_adamw_op_is_this_update);
    return check_done();
}
