/* The cpu backend's ops: each backward against central finite differences of its
 * forward on tiny shapes, plus exact checks where a closed form exists. The
 * objective is sum(out * w) for fixed random w, so the upstream gradient is w. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "ftpipe/backend/backend.h"
#include "ftpipe/base/random.h"

static ft_backend *cpu;

typedef struct {
    void (*forward)(void *context);
    void *context;
    const float *out;
    const float *weights; /* upstream gradient */
    size_t n_out;
} objective;

static double evaluate(const objective *o)
{
    o->forward(o->context);
    double sum = 0.0;
    for (size_t i = 0; i < o->n_out; i++)
        sum += (double)o->out[i] * o->weights[i];
    return sum;
}

/* Largest |numeric - analytic| over the tensor, relative to its largest |analytic|. */
static double gradient_error(const objective *o, float *input, size_t n, const float *analytic)
{
    const float step = 1e-2f;
    double worst = 0.0, scale = 1e-3;
    for (size_t i = 0; i < n; i++)
        if (fabs(analytic[i]) > scale)
            scale = fabs(analytic[i]);
    for (size_t i = 0; i < n; i++) {
        float saved = input[i];
        input[i] = saved + step;
        double up = evaluate(o);
        input[i] = saved - step;
        double down = evaluate(o);
        input[i] = saved;
        double numeric = (up - down) / (2.0 * step);
        double error = fabs(numeric - analytic[i]) / scale;
        if (error > worst)
            worst = error;
    }
    evaluate(o);
    return worst;
}

static void fill(float *x, size_t n, uint64_t seed, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)ft_random_normal(seed, i) * scale;
}

#define CHECK_GRADIENT(o, input, n, analytic)                                            \
    do {                                                                                 \
        double error_ = gradient_error(o, input, n, analytic);                           \
        if (!(error_ < 2e-3)) {                                                          \
            fprintf(stderr, "  %s:%d: gradient of %s off by %.3g (relative)\n", __FILE__, \
                    __LINE__, #input, error_);                                           \
            check_case_failed = 1;                                                       \
        }                                                                                \
    } while (0)

/* --- linear with LoRA --- */

enum { ROWS = 5, IN = 6, OUT = 4, RANK = 2 };

typedef struct {
    float x[ROWS * IN], weight[OUT * IN], bias[OUT], a[RANK * IN], b[OUT * RANK], xa[ROWS * RANK];
    float out[ROWS * OUT];
    ft_lora_op lora;
} linear_case;

static void linear_forward(void *context)
{
    linear_case *c = context;
    cpu->linear_forward(cpu, c->out, c->x, c->weight, c->bias, &c->lora, ROWS, IN, OUT);
}

static void check_linear(float dropout)
{
    static linear_case c;
    fill(c.x, ROWS * IN, 1, 1.0f);
    fill(c.weight, OUT * IN, 2, 0.5f);
    fill(c.bias, OUT, 3, 0.5f);
    fill(c.a, RANK * IN, 4, 0.5f);
    fill(c.b, OUT * RANK, 5, 0.5f);
    float grad_x[ROWS * IN], grad_weight[OUT * IN] = {0}, grad_bias[OUT] = {0};
    float grad_a[RANK * IN] = {0}, grad_b[OUT * RANK] = {0}, w[ROWS * OUT];
    fill(w, ROWS * OUT, 6, 1.0f);
    c.lora = (ft_lora_op){c.a, c.b, grad_a, grad_b, c.xa, RANK, 1.5f, dropout, 77};
    linear_forward(&c);
    cpu->linear_backward(cpu, grad_x, false, grad_weight, grad_bias, w, c.x, c.weight, &c.lora, ROWS, IN, OUT);
    objective o = {linear_forward, &c, c.out, w, ROWS * OUT};
    CHECK_GRADIENT(&o, c.x, ROWS * IN, grad_x);
    CHECK_GRADIENT(&o, c.weight, OUT * IN, grad_weight);
    CHECK_GRADIENT(&o, c.bias, OUT, grad_bias);
    CHECK_GRADIENT(&o, c.a, RANK * IN, grad_a);
    CHECK_GRADIENT(&o, c.b, OUT * RANK, grad_b);
}

TEST(linear_with_lora_backward_matches_finite_differences) { check_linear(0.0f); }
TEST(linear_with_lora_dropout_backward_matches_finite_differences) { check_linear(0.3f); }

TEST(lora_dropout_zeroes_about_p_of_inputs_and_scales_the_rest)
{
    /* With B = I-like and A picking one input, out - base = scaling * dropout(x). */
    enum { R = 400, F = 1 };
    static float x[R], weight[1] = {0}, a[1] = {1}, b[1] = {1}, xa[R], out[R];
    for (int i = 0; i < R; i++)
        x[i] = 1.0f;
    ft_lora_op lora = {a, b, NULL, NULL, xa, 1, 1.0f, 0.25f, 9};
    cpu->linear_forward(cpu, out, x, weight, NULL, &lora, R, F, F);
    int dropped = 0, scaled = 0;
    for (int i = 0; i < R; i++) {
        dropped += out[i] == 0.0f;
        scaled += fabsf(out[i] - 1.0f / 0.75f) < 1e-6f;
    }
    CHECK_INT(dropped + scaled, R);
    CHECK(dropped > 70 && dropped < 130); /* 100 expected */
}

/* --- rmsnorm --- */

enum { NORM_ROWS = 3, NORM_DIM = 8 };

typedef struct {
    float x[NORM_ROWS * NORM_DIM], weight[NORM_DIM], out[NORM_ROWS * NORM_DIM], rstd[NORM_ROWS];
} norm_case;

static void norm_forward(void *context)
{
    norm_case *c = context;
    cpu->rmsnorm_forward(cpu, c->out, c->rstd, c->x, c->weight, NORM_ROWS, NORM_DIM, 1e-6f);
}

TEST(rmsnorm_backward_matches_finite_differences)
{
    static norm_case c;
    fill(c.x, NORM_ROWS * NORM_DIM, 10, 1.0f);
    fill(c.weight, NORM_DIM, 11, 0.3f);
    float w[NORM_ROWS * NORM_DIM], grad_x[NORM_ROWS * NORM_DIM], grad_weight[NORM_DIM] = {0};
    fill(w, NORM_ROWS * NORM_DIM, 12, 1.0f);
    norm_forward(&c);
    cpu->rmsnorm_backward(cpu, grad_x, false, grad_weight, w, c.x, c.weight, c.rstd, NORM_ROWS, NORM_DIM);
    objective o = {norm_forward, &c, c.out, w, NORM_ROWS * NORM_DIM};
    CHECK_GRADIENT(&o, c.x, NORM_ROWS * NORM_DIM, grad_x);
    CHECK_GRADIENT(&o, c.weight, NORM_DIM, grad_weight);
    /* accumulate adds onto what is there */
    float again[NORM_ROWS * NORM_DIM];
    for (int i = 0; i < NORM_ROWS * NORM_DIM; i++)
        again[i] = 1.0f;
    cpu->rmsnorm_backward(cpu, again, true, NULL, w, c.x, c.weight, c.rstd, NORM_ROWS, NORM_DIM);
    CHECK(fabsf(again[5] - (1.0f + grad_x[5])) < 1e-6f);
}

TEST(rmsnorm_forward_normalizes_rows)
{
    float x[4] = {1, 2, 3, 4}, weight[4] = {1, 1, 1, 2}, out[4], rstd[1];
    cpu->rmsnorm_forward(cpu, out, rstd, x, weight, 1, 4, 0.0f);
    float expected = 1.0f / sqrtf(7.5f); /* mean of squares: 30 / 4 */
    CHECK(fabsf(rstd[0] - expected) < 1e-7f);
    CHECK(fabsf(out[3] - 8.0f * expected) < 1e-6f);
}

/* --- rope --- */

TEST(rope_rotates_pairs_and_backward_undoes_it)
{
    enum { HEADS = 2, DIM = 4, POSITIONS = 3 };
    int32_t positions[2] = {2, 0};
    float cos_table[POSITIONS * DIM / 2], sin_table[POSITIONS * DIM / 2];
    for (int p = 0; p < POSITIONS; p++)
        for (int i = 0; i < DIM / 2; i++) {
            cos_table[p * 2 + i] = cosf(0.7f * p * (i + 1));
            sin_table[p * 2 + i] = sinf(0.7f * p * (i + 1));
        }
    float x[2 * HEADS * DIM], original[2 * HEADS * DIM];
    fill(x, 2 * HEADS * DIM, 20, 1.0f);
    memcpy(original, x, sizeof x);
    cpu->rope_forward(cpu, x, positions, cos_table, sin_table, 2, HEADS, DIM);
    /* row 0, head 1, pair (1, 3) at position 2: angle 0.7 * 2 * 2 */
    float angle = 2.8f, first = original[DIM + 1], second = original[DIM + 3];
    CHECK(fabsf(x[DIM + 1] - (first * cosf(angle) - second * sinf(angle))) < 1e-6f);
    CHECK(fabsf(x[DIM + 3] - (second * cosf(angle) + first * sinf(angle))) < 1e-6f);
    /* position 0 leaves the row as it was */
    CHECK(fabsf(x[HEADS * DIM + 2] - original[HEADS * DIM + 2]) < 1e-7f);
    /* a rotation is orthogonal: its backward is its inverse */
    cpu->rope_backward(cpu, x, positions, cos_table, sin_table, 2, HEADS, DIM);
    double worst = 0.0;
    for (int i = 0; i < 2 * HEADS * DIM; i++)
        worst = fmax(worst, fabs(x[i] - original[i]));
    CHECK(worst < 1e-6);
}

/* --- attention --- */

enum { A_BATCH = 2, A_SEQ = 5, A_HEADS = 4, A_KV = 2, A_DIM = 3 };
enum { Q_FLOATS = A_BATCH * A_SEQ * A_HEADS * A_DIM, KV_FLOATS = A_BATCH * A_SEQ * A_KV * A_DIM };

typedef struct {
    float q[Q_FLOATS], k[KV_FLOATS], v[KV_FLOATS], out[Q_FLOATS], lse[A_BATCH * A_HEADS * A_SEQ];
    int32_t segments[A_BATCH * A_SEQ];
    ft_attention_shape shape;
} attention_case;

static void attention_forward(void *context)
{
    attention_case *c = context;
    cpu->attention_forward(cpu, c->out, c->lse, c->q, c->k, c->v, c->segments, &c->shape);
}

static attention_case *attention_setup(void)
{
    static attention_case c;
    fill(c.q, Q_FLOATS, 30, 1.0f);
    fill(c.k, KV_FLOATS, 31, 1.0f);
    fill(c.v, KV_FLOATS, 32, 1.0f);
    int32_t segments[A_BATCH * A_SEQ] = {0, 0, 0, 1, 1, /* two packed samples */ 4, 4, 4, 4, 4};
    memcpy(c.segments, segments, sizeof segments);
    c.shape = (ft_attention_shape){A_BATCH, A_SEQ, A_HEADS, A_KV, A_DIM, false};
    attention_forward(&c);
    return &c;
}

TEST(attention_forward_matches_a_direct_computation)
{
    attention_case *c = attention_setup();
    double worst = 0.0;
    for (int b = 0; b < A_BATCH; b++)
        for (int h = 0; h < A_HEADS; h++)
            for (int i = 0; i < A_SEQ; i++) {
                const int32_t *seg = c->segments + b * A_SEQ;
                double scores[A_SEQ], sum = 0.0;
                for (int j = 0; j < A_SEQ; j++) {
                    scores[j] = 0.0;
                    if (j > i || seg[j] != seg[i])
                        continue;
                    for (int d = 0; d < A_DIM; d++)
                        scores[j] += (double)c->q[((b * A_SEQ + i) * A_HEADS + h) * A_DIM + d] *
                                     c->k[((b * A_SEQ + j) * A_KV + h / 2) * A_DIM + d];
                    scores[j] = exp(scores[j] / sqrt(A_DIM));
                    sum += scores[j];
                }
                for (int d = 0; d < A_DIM; d++) {
                    double expected = 0.0;
                    for (int j = 0; j <= i; j++)
                        if (seg[j] == seg[i])
                            expected += scores[j] / sum * c->v[((b * A_SEQ + j) * A_KV + h / 2) * A_DIM + d];
                    worst = fmax(worst, fabs(expected - c->out[((b * A_SEQ + i) * A_HEADS + h) * A_DIM + d]));
                }
            }
    CHECK(worst < 1e-6);
    /* the first token of the second sample sees only itself */
    for (int d = 0; d < A_DIM; d++)
        CHECK(fabsf(c->out[(3 * A_HEADS + 1) * A_DIM + d] - c->v[(3 * A_KV + 0) * A_DIM + d]) < 1e-6f);
}

/* The vision towers' attention: every token of a run of equal segment ids sees
 * every other, before and after it; runs longer than a block of queries (300
 * tokens) and a run of one; no logsumexp kept. */
TEST(bidirectional_attention_sees_its_whole_run)
{
    enum { N = 307, HEADS = 2, DIM = 4, WIDTH = HEADS * DIM };
    static float q[N * WIDTH], k[N * WIDTH], v[N * WIDTH], out[N * WIDTH];
    static int32_t segments[N];
    fill(q, N * WIDTH, 40, 0.5f);
    fill(k, N * WIDTH, 41, 0.5f);
    fill(v, N * WIDTH, 42, 1.0f);
    for (int i = 0; i < N; i++)
        segments[i] = i < 6 ? 0 : i < 7 ? 1 : 2; /* runs of 6, 1 and 300 */
    ft_attention_shape shape = {1, N, HEADS, HEADS, DIM, true};
    cpu->attention_forward(cpu, out, NULL, q, k, v, segments, &shape);
    double worst = 0.0;
    static double scores[N];
    for (int h = 0; h < HEADS; h++)
        for (int i = 0; i < N; i++) {
            double largest = -INFINITY, sum = 0.0;
            for (int j = 0; j < N; j++) {
                scores[j] = -INFINITY;
                if (segments[j] != segments[i])
                    continue;
                double dot = 0.0;
                for (int d = 0; d < DIM; d++)
                    dot += (double)q[i * WIDTH + h * DIM + d] * k[j * WIDTH + h * DIM + d];
                scores[j] = dot / sqrt(DIM);
                largest = fmax(largest, scores[j]);
            }
            for (int j = 0; j < N; j++)
                sum += segments[j] == segments[i] ? exp(scores[j] - largest) : 0.0;
            for (int d = 0; d < DIM; d++) {
                double expected = 0.0;
                for (int j = 0; j < N; j++)
                    if (segments[j] == segments[i])
                        expected += exp(scores[j] - largest) / sum * v[j * WIDTH + h * DIM + d];
                worst = fmax(worst, fabs(expected - out[i * WIDTH + h * DIM + d]));
            }
        }
    CHECK(worst < 1e-5);
    /* the run of one reads its own value back; the first token sees the ones after it */
    for (int d = 0; d < WIDTH; d++)
        CHECK(fabsf(out[6 * WIDTH + d] - v[6 * WIDTH + d]) < 1e-6f);
    CHECK(fabsf(out[0] - v[0]) > 1e-3f);
}

TEST(rmsnorm_forward_without_rstd_gives_the_same_rows)
{
    float x[2 * 3] = {1, -2, 3, 0.5f, 0.25f, -4}, w[3] = {1, 2, 0.5f}, with[6], without[6], rstd[2];
    cpu->rmsnorm_forward(cpu, with, rstd, x, w, 2, 3, 1e-6f);
    cpu->rmsnorm_forward(cpu, without, NULL, x, w, 2, 3, 1e-6f);
    CHECK(memcmp(with, without, sizeof with) == 0);
}

enum { D_BATCH = 3, D_MAX = 6, D_HEADS = 4, D_KV = 2, D_DIM = 4 };

/* Each sequence's decode step equals the last row of attention_forward over
 * the same tokens (GQA, sequences of different lengths in one cache). */
TEST(attention_decode_matches_the_last_row_of_attention_forward)
{
    enum { Q_WIDTH = D_HEADS * D_DIM, KV_WIDTH = D_KV * D_DIM };
    static const int32_t lengths[D_BATCH] = {5, 1, 6};
    static float q[D_MAX * Q_WIDTH], k_cache[D_BATCH * D_MAX * KV_WIDTH], v_cache[D_BATCH * D_MAX * KV_WIDTH];
    static float q_last[D_BATCH * Q_WIDTH], decoded[D_BATCH * Q_WIDTH], expected[D_BATCH * Q_WIDTH];
    static float full[D_MAX * Q_WIDTH];
    float lse[D_HEADS * D_MAX];
    double worst = 0.0;
    int32_t segments[D_MAX] = {0};
    for (int i = 0; i < D_BATCH * D_MAX * KV_WIDTH; i++) {
        k_cache[i] = (float)ft_random_normal(31, i);
        v_cache[i] = (float)ft_random_normal(32, i);
    }
    for (int b = 0; b < D_BATCH; b++) {
        int n = lengths[b];
        for (int i = 0; i < n * Q_WIDTH; i++)
            q[i] = (float)ft_random_normal(33 + b, i);
        memcpy(q_last + b * Q_WIDTH, q + (n - 1) * Q_WIDTH, Q_WIDTH * sizeof(float));
        ft_attention_shape shape = {1, n, D_HEADS, D_KV, D_DIM, false};
        const float *k = k_cache + b * D_MAX * KV_WIDTH, *v = v_cache + b * D_MAX * KV_WIDTH;
        cpu->attention_forward(cpu, full, lse, q, k, v, segments, &shape);
        memcpy(expected + b * Q_WIDTH, full + (n - 1) * Q_WIDTH, Q_WIDTH * sizeof(float));
    }
    cpu->attention_decode(cpu, decoded, q_last, k_cache, v_cache, lengths, D_BATCH, D_MAX, D_HEADS, D_KV, D_DIM);
    for (int i = 0; i < D_BATCH * Q_WIDTH; i++)
        worst = fmax(worst, fabs((double)decoded[i] - expected[i]));
    CHECK(worst < 1e-6);
    /* a sequence of one token reads its own value back */
    for (int h = 0; h < D_HEADS; h++)
        for (int d = 0; d < D_DIM; d++)
            CHECK(fabsf(decoded[Q_WIDTH + h * D_DIM + d] -
                        v_cache[D_MAX * KV_WIDTH + (h / 2) * D_DIM + d]) < 1e-6f);
}

TEST(gather_and_scatter_move_rows_by_index)
{
    float table[4 * 3], gathered[2 * 3], cache[5 * 3] = {0};
    for (int i = 0; i < 12; i++)
        table[i] = (float)i;
    int32_t from[2] = {3, 1}, to[2] = {4, 0};
    cpu->gather_rows(cpu, gathered, table, from, 2, 3);
    float expected_gathered[6] = {9, 10, 11, 3, 4, 5};
    CHECK(memcmp(gathered, expected_gathered, sizeof gathered) == 0);
    cpu->scatter_rows(cpu, cache, gathered, to, 2, 3);
    float expected_cache[15] = {3, 4, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 10, 11};
    CHECK(memcmp(cache, expected_cache, sizeof cache) == 0);
}

TEST(argmax_rows_takes_the_lowest_index_of_the_largest)
{
    float x[3 * 4] = {1, 5, 5, 2, /* a tie: the first */ -3, -1, -2, -1, 0, 0, 0, 7};
    int32_t ids[3];
    cpu->argmax_rows(cpu, ids, x, 3, 4);
    CHECK_INT(ids[0], 1);
    CHECK_INT(ids[1], 1);
    CHECK_INT(ids[2], 3);
}

TEST(attention_backward_matches_finite_differences)
{
    attention_case *c = attention_setup();
    float w[Q_FLOATS], grad_q[Q_FLOATS], grad_k[KV_FLOATS], grad_v[KV_FLOATS];
    fill(w, Q_FLOATS, 33, 1.0f);
    cpu->attention_backward(cpu, grad_q, grad_k, grad_v, w, c->out, c->q, c->k, c->v, c->lse, c->segments,
                            &c->shape);
    objective o = {attention_forward, c, c->out, w, Q_FLOATS};
    CHECK_GRADIENT(&o, c->q, Q_FLOATS, grad_q);
    CHECK_GRADIENT(&o, c->k, KV_FLOATS, grad_k);
    CHECK_GRADIENT(&o, c->v, KV_FLOATS, grad_v);
}

/* --- swiglu, embedding --- */

typedef struct {
    float gate[7], up[7], out[7];
} swiglu_case;

static void swiglu_forward(void *context)
{
    swiglu_case *c = context;
    cpu->swiglu_forward(cpu, c->out, c->gate, c->up, 7);
}

TEST(swiglu_backward_matches_finite_differences)
{
    static swiglu_case c;
    fill(c.gate, 7, 40, 2.0f);
    fill(c.up, 7, 41, 1.0f);
    float w[7], grad_gate[7], grad_up[7];
    fill(w, 7, 42, 1.0f);
    swiglu_forward(&c);
    CHECK(fabsf(c.out[0] - c.gate[0] / (1.0f + expf(-c.gate[0])) * c.up[0]) < 1e-6f);
    cpu->swiglu_backward(cpu, grad_gate, grad_up, w, c.gate, c.up, 7);
    objective o = {swiglu_forward, &c, c.out, w, 7};
    CHECK_GRADIENT(&o, c.gate, 7, grad_gate);
    CHECK_GRADIENT(&o, c.up, 7, grad_up);
}

TEST(embedding_gathers_rows_and_backward_adds_them_up)
{
    float table[3 * 2] = {1, 2, 3, 4, 5, 6}, out[3 * 2];
    int32_t tokens[3] = {2, 0, 2};
    cpu->embedding_forward(cpu, out, table, tokens, 3, 2);
    CHECK(out[0] == 5 && out[1] == 6 && out[2] == 1 && out[5] == 6);
    float grad[3 * 2] = {0}, grad_out[3 * 2] = {1, 1, 10, 10, 100, 100};
    cpu->embedding_backward(cpu, grad, grad_out, tokens, 3, 2);
    CHECK(grad[0] == 10 && grad[2] == 0 && grad[4] == 101 && grad[5] == 101);
}

/* --- cross-entropy --- */

enum { CE_ROWS = 4, VOCAB = 5 };

typedef struct {
    float logits[CE_ROWS * VOCAB], losses[CE_ROWS];
    float kept[CE_ROWS * VOCAB]; /* the logits after a call without backward */
    int32_t targets[CE_ROWS];
} ce_case;

static void ce_forward(void *context)
{
    ce_case *c = context;
    float scratch[CE_ROWS * VOCAB];
    memcpy(scratch, c->logits, sizeof scratch);
    cpu->cross_entropy(cpu, c->losses, scratch, c->targets, CE_ROWS, VOCAB, false, 1.0f);
    memcpy(c->kept, scratch, sizeof scratch);
}

TEST(cross_entropy_skips_masked_rows_and_backward_matches_finite_differences)
{
    static ce_case c;
    fill(c.logits, CE_ROWS * VOCAB, 50, 2.0f);
    int32_t targets[CE_ROWS] = {3, -100, 0, 4};
    memcpy(c.targets, targets, sizeof targets);
    ce_forward(&c);
    CHECK(memcmp(c.kept, c.logits, sizeof c.kept) == 0); /* without backward the logits stay */
    CHECK(c.losses[1] == 0.0f);
    double sum = 0.0;
    for (int j = 0; j < VOCAB; j++)
        sum += exp(c.logits[VOCAB * 2 + j]);
    CHECK(fabs(c.losses[2] - (log(sum) - c.logits[VOCAB * 2])) < 1e-5);
    /* mean over the three unmasked rows */
    float w[CE_ROWS] = {1.0f / 3, 1.0f / 3, 1.0f / 3, 1.0f / 3}, grad[CE_ROWS * VOCAB];
    float losses[CE_ROWS];
    memcpy(grad, c.logits, sizeof grad);
    cpu->cross_entropy(cpu, losses, grad, c.targets, CE_ROWS, VOCAB, true, 1.0f / 3);
    CHECK(memcmp(losses, c.losses, sizeof losses) == 0); /* the same losses with backward */
    for (int j = 0; j < VOCAB; j++)
        CHECK(grad[VOCAB + j] == 0.0f);
    objective o = {ce_forward, &c, c.losses, w, CE_ROWS};
    CHECK_GRADIENT(&o, c.logits, CE_ROWS * VOCAB, grad);
}

/* --- adamw --- */

TEST(adamw_matches_torch_formula_over_two_steps)
{
    float param[3] = {0.5f, -1.0f, 2.0f}, m[3] = {0}, v[3] = {0};
    const float grads[2][3] = {{0.1f, -0.2f, 1e-9f}, {-0.3f, 0.05f, 0.0f}};
    double p[3] = {0.5, -1.0, 2.0}, em[3] = {0}, ev[3] = {0};
    for (int step = 1; step <= 2; step++) {
        ft_adamw_hyper hyper = {1e-2, 0.9, 0.999, 1e-8, 0.1, step};
        cpu->adamw(cpu, param, grads[step - 1], m, v, 3, &hyper);
        for (int i = 0; i < 3; i++) {
            double g = grads[step - 1][i];
            p[i] *= 1.0 - 1e-2 * 0.1;
            em[i] = 0.9 * em[i] + 0.1 * g;
            ev[i] = 0.999 * ev[i] + 0.001 * g * g;
            double mhat = em[i] / (1.0 - pow(0.9, step));
            double denom = sqrt(ev[i]) / sqrt(1.0 - pow(0.999, step)) + 1e-8;
            p[i] -= 1e-2 * mhat / denom;
        }
    }
    for (int i = 0; i < 3; i++)
        CHECK(fabs(param[i] - p[i]) < 1e-6);
}

TEST(sum_squares_and_scale)
{
    float x[3] = {1, 2, 3}, y[2] = {0.5f, 4};
    const float *both[2] = {x, y};
    size_t counts[2] = {3, 2};
    CHECK(cpu->sum_squares(cpu, both, counts, 1) == 14.0);
    CHECK(cpu->sum_squares(cpu, both, counts, 2) == 14.0 + 16.25);
    cpu->scale(cpu, x, 3, 0.5f);
    CHECK(x[2] == 1.5f);
}

/* float is the cpu backend's dtype: the cast is an exact copy, NaN and denormals included */
TEST(cast_from_float_copies_exactly)
{
    float master[4] = {1.0f / 3.0f, -0.0f, 1e-40f, NAN}, weights[4] = {0};
    cpu->cast_from_float(cpu, weights, master, 4);
    CHECK(memcmp(weights, master, sizeof master) == 0);
    cpu->cast_from_float(cpu, weights, weights, 4); /* in place: the master copy is the weights */
    CHECK(memcmp(weights, master, sizeof master) == 0);
}

TEST(host_memory_is_writable_and_freed)
{
    float *state = cpu->alloc_host(cpu, 4 * sizeof(float));
    CHECK(state != NULL);
    for (int i = 0; state && i < 4; i++)
        state[i] = (float)i;
    CHECK(state && state[3] == 3.0f);
    cpu->free_host(cpu, state);
    cpu->free_host(cpu, NULL);
}

int main(void)
{
    cpu = ft_backend_cpu_create(1);
    ft_backend_limits limits = {.max_rows = 64, .max_seq_len = 8, .max_features = 8, .max_rank = 2};
    CHECK_INT(cpu->reserve(cpu, &limits), 0);
    RUN(linear_with_lora_backward_matches_finite_differences);
    RUN(linear_with_lora_dropout_backward_matches_finite_differences);
    RUN(lora_dropout_zeroes_about_p_of_inputs_and_scales_the_rest);
    RUN(rmsnorm_backward_matches_finite_differences);
    RUN(rmsnorm_forward_normalizes_rows);
    RUN(rope_rotates_pairs_and_backward_undoes_it);
    RUN(attention_forward_matches_a_direct_computation);
    RUN(attention_backward_matches_finite_differences);
    RUN(attention_decode_matches_the_last_row_of_attention_forward);
    RUN(bidirectional_attention_sees_its_whole_run);
    RUN(rmsnorm_forward_without_rstd_gives_the_same_rows);
    RUN(gather_and_scatter_move_rows_by_index);
    RUN(argmax_rows_takes_the_lowest_index_of_the_largest);
    RUN(swiglu_backward_matches_finite_differences);
    RUN(embedding_gathers_rows_and_backward_adds_them_up);
    RUN(cross_entropy_skips_masked_rows_and_backward_matches_finite_differences);
    RUN(adamw_matches_torch_formula_over_two_steps);
    RUN(sum_squares_and_scale);
    RUN(cast_from_float_copies_exactly);
    RUN(host_memory_is_writable_and_freed);
    ft_backend_destroy(cpu);
    return check_done();
}
