/* The cpu backend's vision ops against naive loops in double: LayerNorm with
 * and without a bias, the three activations (with values of torch's at a few
 * points), and the elementwise add, in place too; the backward ops (the
 * activations', LayerNorm's) against finite differences of the forward ops. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "ftpipe/backend/backend.h"
#include "ftpipe/base/random.h"

static ft_backend *cpu;

static void fill(float *x, size_t n, uint64_t seed, float scale, float shift)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)ft_random_normal(seed, i) * scale + shift;
}

TEST(layernorm_matches_a_naive_loop)
{
    enum { ROWS = 5, DIM = 37 };
    float x[ROWS * DIM], w[DIM], b[DIM], out[ROWS * DIM], no_bias[ROWS * DIM];
    fill(x, ROWS * DIM, 1, 3.0f, 100.0f); /* a large mean: the variance must not lose it */
    fill(w, DIM, 2, 1.0f, 0.0f);
    fill(b, DIM, 3, 1.0f, 0.0f);
    cpu->layernorm_forward(cpu, out, x, w, b, ROWS, DIM, 1e-5f);
    cpu->layernorm_forward(cpu, no_bias, x, w, NULL, ROWS, DIM, 1e-5f);
    double worst = 0.0, worst_no_bias = 0.0;
    for (int r = 0; r < ROWS; r++) {
        double mean = 0.0, variance = 0.0;
        for (int c = 0; c < DIM; c++)
            mean += x[r * DIM + c];
        mean /= DIM;
        for (int c = 0; c < DIM; c++)
            variance += (x[r * DIM + c] - mean) * (x[r * DIM + c] - mean);
        variance /= DIM;
        for (int c = 0; c < DIM; c++) {
            double normalized = (x[r * DIM + c] - mean) / sqrt(variance + 1e-5) * w[c];
            worst = fmax(worst, fabs(normalized + b[c] - out[r * DIM + c]));
            worst_no_bias = fmax(worst_no_bias, fabs(normalized - no_bias[r * DIM + c]));
        }
    }
    CHECK(worst < 1e-5);
    CHECK(worst_no_bias < 1e-5);
}

TEST(activations_match_their_formulas)
{
    enum { N = 101 };
    float x[N], out[N];
    for (int i = 0; i < N; i++)
        x[i] = -6.0f + 0.12f * (float)i;
    double worst[3] = {0};
    for (int kind = 0; kind < 3; kind++) {
        cpu->activation_forward(cpu, out, x, N, (ft_activation)kind);
        for (int i = 0; i < N; i++) {
            double v = x[i], expected = kind == FT_ACTIVATION_QUICK_GELU ? v / (1.0 + exp(-1.702 * v))
                                        : kind == FT_ACTIVATION_GELU
                                            ? 0.5 * v * (1.0 + erf(v / sqrt(2.0)))
                                            : 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
            worst[kind] = fmax(worst[kind], fabs(expected - out[i]));
        }
    }
    CHECK(worst[0] < 1e-6 && worst[1] < 1e-6 && worst[2] < 1e-6);
    /* torch.nn.functional.gelu(1.0) = 0.8413447, approximate="tanh": 0.8411920; quick_gelu(1.0) = 0.8457957 */
    float one = 1.0f, value;
    cpu->activation_forward(cpu, &value, &one, 1, FT_ACTIVATION_GELU);
    CHECK(fabsf(value - 0.8413447f) < 1e-6f);
    cpu->activation_forward(cpu, &value, &one, 1, FT_ACTIVATION_GELU_TANH);
    CHECK(fabsf(value - 0.8411920f) < 1e-6f);
    cpu->activation_forward(cpu, &value, &one, 1, FT_ACTIVATION_QUICK_GELU);
    CHECK(fabsf(value - 0.8457957f) < 1e-6f);
    /* in place */
    float copy[N];
    memcpy(copy, x, sizeof x);
    cpu->activation_forward(cpu, copy, copy, N, FT_ACTIVATION_GELU);
    cpu->activation_forward(cpu, out, x, N, FT_ACTIVATION_GELU);
    CHECK(memcmp(copy, out, sizeof out) == 0);
}

TEST(add_sums_elementwise_in_place_too)
{
    float a[7], b[7], out[7];
    fill(a, 7, 4, 1.0f, 0.0f);
    fill(b, 7, 5, 1.0f, 0.0f);
    cpu->add_forward(cpu, out, a, b, 7);
    for (int i = 0; i < 7; i++)
        CHECK(out[i] == a[i] + b[i]);
    cpu->add_forward(cpu, a, a, b, 7);
    CHECK(memcmp(a, out, sizeof out) == 0);
}

/* sum(g * f(x)) for a weighting g: the scalar whose finite differences the
 * backward ops must give. */
static double weighted_sum(const float *out, const float *g, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += (double)out[i] * g[i];
    return sum;
}

TEST(activation_backward_matches_finite_differences)
{
    enum { N = 64 };
    float x[N], g[N], grad[N], plus[N], minus[N], shifted[N];
    fill(x, N, 6, 2.0f, 0.0f);
    fill(g, N, 7, 1.0f, 0.0f);
    const float h = 1e-2f;
    for (int kind = 0; kind < 3; kind++) {
        cpu->activation_backward(cpu, grad, g, x, N, (ft_activation)kind);
        double worst = 0.0;
        for (int i = 0; i < N; i++) { /* elementwise: one difference per element */
            memcpy(shifted, x, sizeof x);
            shifted[i] = x[i] + h;
            cpu->activation_forward(cpu, plus, shifted, N, (ft_activation)kind);
            shifted[i] = x[i] - h;
            cpu->activation_forward(cpu, minus, shifted, N, (ft_activation)kind);
            double numeric = (double)g[i] * ((double)plus[i] - minus[i]) / (2.0 * h);
            worst = fmax(worst, fabs(numeric - grad[i]) / (fabs(numeric) + 1e-2));
        }
        CHECK(worst < 2e-3);
    }
    float in_place[N];
    memcpy(in_place, g, sizeof g);
    cpu->activation_backward(cpu, in_place, in_place, x, N, FT_ACTIVATION_GELU);
    cpu->activation_backward(cpu, grad, g, x, N, FT_ACTIVATION_GELU);
    CHECK(memcmp(in_place, grad, sizeof grad) == 0);
    /* torch: d gelu(x)/dx at 1.0 is 1.0833155, d quick_gelu/dx 1.0911 */
    float one = 1.0f, unit = 1.0f, slope;
    cpu->activation_backward(cpu, &slope, &unit, &one, 1, FT_ACTIVATION_GELU);
    CHECK(fabs(slope - 1.0833155) < 1e-6);
}

/* d sum(g * layernorm(x)) by x, weight and bias against central differences
 * of the forward op, with and without a bias. */
static void check_layernorm_backward(bool with_bias)
{
    enum { ROWS = 3, DIM = 11 };
    float x[ROWS * DIM], w[DIM], b[DIM], g[ROWS * DIM], out[ROWS * DIM];
    float grad_x[ROWS * DIM], grad_w[DIM] = {0}, grad_b[DIM] = {0};
    fill(x, ROWS * DIM, 8, 2.0f, 3.0f);
    fill(w, DIM, 9, 0.5f, 1.0f);
    fill(b, DIM, 10, 0.5f, 0.0f);
    fill(g, ROWS * DIM, 11, 1.0f, 0.0f);
    const float *bias = with_bias ? b : NULL;
    cpu->layernorm_backward(cpu, grad_x, grad_w, with_bias ? grad_b : NULL, g, x, w, ROWS, DIM, 1e-5f);
    const float h = 1e-2f;
    double worst = 0.0;
    float *inputs[3] = {x, w, b};
    const float *grads[3] = {grad_x, grad_w, grad_b};
    int counts[3] = {ROWS * DIM, DIM, with_bias ? DIM : 0};
    for (int which = 0; which < 3; which++)
        for (int i = 0; i < counts[which]; i++) {
            float keep = inputs[which][i];
            inputs[which][i] = keep + h;
            cpu->layernorm_forward(cpu, out, x, w, bias, ROWS, DIM, 1e-5f);
            double up = weighted_sum(out, g, ROWS * DIM);
            inputs[which][i] = keep - h;
            cpu->layernorm_forward(cpu, out, x, w, bias, ROWS, DIM, 1e-5f);
            double down = weighted_sum(out, g, ROWS * DIM);
            inputs[which][i] = keep;
            double numeric = (up - down) / (2.0 * h);
            worst = fmax(worst, fabs(numeric - grads[which][i]) / (fabs(numeric) + 1e-1));
        }
    CHECK(worst < 5e-3);
    /* without grad_x the weights' gradients still add up */
    float again_w[DIM] = {0};
    cpu->layernorm_backward(cpu, NULL, again_w, NULL, g, x, w, ROWS, DIM, 1e-5f);
    CHECK(memcmp(again_w, grad_w, sizeof again_w) == 0);
}

TEST(layernorm_backward_matches_finite_differences)
{
    check_layernorm_backward(true);
    check_layernorm_backward(false);
}

int main(void)
{
    cpu = ft_backend_cpu_create(1);
    RUN(layernorm_matches_a_naive_loop);
    RUN(activations_match_their_formulas);
    RUN(add_sums_elementwise_in_place_too);
    RUN(activation_backward_matches_finite_differences);
    RUN(layernorm_backward_matches_finite_differences);
    ft_backend_destroy(cpu);
    return check_done();
}
