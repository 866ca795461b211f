/* The cpu backend's forward-only vision ops against naive loops in double:
 * LayerNorm with and without a bias, the three activations (with values of
 * torch's at a few points), and the elementwise add, in place too. */
#include <math.h>
#include <stdint.h>

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

int main(void)
{
    cpu = ft_backend_cpu_create(1);
    RUN(layernorm_matches_a_naive_loop);
    RUN(activations_match_their_formulas);
    RUN(add_sums_elementwise_in_place_too);
    ft_backend_destroy(cpu);
    return check_done();
}
