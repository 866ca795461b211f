/* The cuda backend's ops against the cpu backend's on the same (bf16-rounded)
 * random inputs: linear layers with LoRA (with and without dropout, bias and
 * accumulation), RMSNorm and its fused residual add, RoPE, SwiGLU, attention for
 * every supported head size with GQA and packed segments, embedding,
 * cross-entropy, AdamW (bit for bit), uploads; the vision towers' forward-only ops (bidirectional
 * attention in runs, LayerNorm, the GELU family, add, RMSNorm without rstd). Outputs in bf16 are allowed a relative error of 2e-2;
 * float results 1e-2 (from bf16 inputs) or 1e-5 (float throughout). The
 * reductions without atomics (attention's dQ, dK and dV, the norm weight's gradient,
 * sums of squares, embedding gradients of repeated tokens) must also give the
 * same bits when run again. */
#include "gpu_check.h"

#define BF16_TOLERANCE 2e-2
#define FLOAT_TOLERANCE 1e-2

/* --- linear --- */

typedef struct {
    int rows, in, out, rank;
    float dropout;
    bool bias, accumulate;
} linear_shape;

static void check_linear(linear_shape s)
{
    size_t nx = (size_t)s.rows * s.in, nw = (size_t)s.out * s.in, ny = (size_t)s.rows * s.out;
    size_t na = (size_t)s.rank * s.in, nb = (size_t)s.out * s.rank, nxa = (size_t)s.rows * s.rank;
    float *x = ft_xmalloc(nx * 4), *w = ft_xmalloc(nw * 4), *bias = ft_xmalloc(s.out * 4), *a = ft_xmalloc(na * 4);
    float *b = ft_xmalloc(nb * 4), *grad_out = ft_xmalloc(ny * 4), *grad_x = ft_xmalloc(nx * 4);
    float *out = ft_xcalloc(ny, 4), *xa = ft_xcalloc(nxa, 4), *grad_a = ft_xcalloc(na, 4), *grad_b = ft_xcalloc(nb, 4);
    float *grad_w = ft_xcalloc(nw, 4), *grad_bias = ft_xcalloc(s.out, 4), *got = ft_xmalloc((nw > nx ? nw : nx) * 4);
    fill(x, nx, 1, 1.0f);
    fill(w, nw, 2, 0.05f);
    fill(bias, s.out, 3, 0.1f);
    fill(a, na, 4, 0.05f);
    fill(b, nb, 5, 0.05f);
    fill(grad_out, ny, 6, 1.0f);
    fill(grad_x, nx, 7, 1.0f);
    void *dx = to_gpu_bf16(x, nx), *dw = to_gpu_bf16(w, nw), *dbias = to_gpu_bf16(bias, s.out);
    void *dgrad_out = to_gpu_bf16(grad_out, ny), *dgrad_x = to_gpu_bf16(grad_x, nx);
    float *da = to_gpu_bytes(a, na * 4), *db = to_gpu_bytes(b, nb * 4);
    float *dgrad_a = gpu_array(na * 4), *dgrad_b = gpu_array(nb * 4), *dgrad_w = gpu_array(nw * 4);
    float *dgrad_bias = gpu_array(s.out * 4);
    void *dout = gpu_array(ny * 2), *dxa = gpu_array(nxa * 2);

    ft_lora_op lora = {a, b, grad_a, grad_b, xa, s.rank, 2.0f, s.dropout, 1234};
    ft_lora_op dlora = {da, db, dgrad_a, dgrad_b, dxa, s.rank, 2.0f, s.dropout, 1234};
    cpu->linear_forward(cpu, out, x, w, s.bias ? bias : NULL, &lora, s.rows, s.in, s.out);
    gpu->linear_forward(gpu, dout, dx, dw, s.bias ? dbias : NULL, &dlora, s.rows, s.in, s.out);
    cpu->linear_backward(cpu, grad_x, s.accumulate, grad_w, s.bias ? grad_bias : NULL, grad_out, x, w, &lora, s.rows,
                         s.in, s.out);
    gpu->linear_backward(gpu, dgrad_x, s.accumulate, dgrad_w, s.bias ? dgrad_bias : NULL, dgrad_out, dx, dw, &dlora,
                         s.rows, s.in, s.out);
    CHECK_NO_GPU_FAILURE();
    char what[96];
    snprintf(what, sizeof what, "linear %dx%d->%d r%d p%.2f out", s.rows, s.in, s.out, s.rank, s.dropout);
    from_gpu_bf16(got, dout, ny);
    CHECK_CLOSE(what, got, out, ny, BF16_TOLERANCE);
    from_gpu_bf16(got, dxa, nxa);
    CHECK_CLOSE("  xa (dropout(x) A^T)", got, xa, nxa, BF16_TOLERANCE);
    from_gpu_bf16(got, dgrad_x, nx);
    CHECK_CLOSE("  grad_x", got, grad_x, nx, BF16_TOLERANCE);
    gpu->download(gpu, got, dgrad_a, na * 4);
    CHECK_CLOSE("  grad_a", got, grad_a, na, FLOAT_TOLERANCE);
    gpu->download(gpu, got, dgrad_b, nb * 4);
    CHECK_CLOSE("  grad_b", got, grad_b, nb, FLOAT_TOLERANCE);
    gpu->download(gpu, got, dgrad_w, nw * 4);
    CHECK_CLOSE("  grad_weight", got, grad_w, nw, FLOAT_TOLERANCE);
    if (s.bias) {
        gpu->download(gpu, got, dgrad_bias, s.out * 4);
        CHECK_CLOSE("  grad_bias", got, grad_bias, s.out, FLOAT_TOLERANCE);
    }
    gpu_release();
    free(x), free(w), free(bias), free(a), free(b), free(grad_out), free(grad_x), free(out), free(xa);
    free(grad_a), free(grad_b), free(grad_w), free(grad_bias), free(got);
}

TEST(linear_with_lora_matches_cpu)
{
    check_linear((linear_shape){70, 96, 80, 8, 0.0f, true, true});
    check_linear((linear_shape){256, 896, 128, 8, 0.0f, false, false});
}

TEST(linear_with_lora_dropout_matches_cpu_mask_for_mask)
{
    check_linear((linear_shape){33, 64, 48, 4, 0.25f, false, false});
    check_linear((linear_shape){64, 128, 64, 8, 0.1f, true, true});
}

/* --- rmsnorm --- */

static void check_rmsnorm(int rows, int dim)
{
    size_t n = (size_t)rows * dim;
    float *x = ft_xmalloc(n * 4), *y = ft_xmalloc(n * 4), *weight = ft_xmalloc(dim * 4), *grad = ft_xmalloc(n * 4);
    float *sum = ft_xmalloc(n * 4), *out = ft_xmalloc(n * 4), *rstd = ft_xmalloc(rows * 4), *grad_x = ft_xmalloc(n * 4);
    float *got = ft_xmalloc(n * 4);
    fill(x, n, 10, 1.0f);
    fill(y, n, 11, 1.0f);
    fill(weight, dim, 12, 0.3f);
    fill(grad, n, 13, 1.0f);
    fill(grad_x, n, 14, 1.0f);
    void *dx = to_gpu_bf16(x, n), *dy = to_gpu_bf16(y, n), *dweight = to_gpu_bf16(weight, dim);
    void *dgrad = to_gpu_bf16(grad, n), *dgrad_x = to_gpu_bf16(grad_x, n);
    void *dsum = gpu_array(n * 2), *dout = gpu_array(n * 2);
    float *drstd = gpu_array(rows * 4);
    /* the fused form: sum = x + y, rounded to bf16 before it is normalised */
    gpu->add_rmsnorm_forward(gpu, dsum, dout, drstd, dx, dy, dweight, rows, dim, 1e-6f);
    from_gpu_bf16(sum, dsum, n);
    for (size_t i = 0; i < n; i++)
        CHECK(sum[i] == ft_bf16_to_f32(ft_f32_to_bf16(x[i] + y[i])));
    cpu->rmsnorm_forward(cpu, out, rstd, sum, weight, rows, dim, 1e-6f);
    char what[64];
    snprintf(what, sizeof what, "add_rmsnorm %dx%d out", rows, dim);
    from_gpu_bf16(got, dout, n);
    CHECK_CLOSE(what, got, out, n, BF16_TOLERANCE);
    gpu->download(gpu, got, drstd, rows * 4);
    CHECK_CLOSE("  rstd", got, rstd, rows, 1e-5);
    /* plain forward in place of the fused one gives the same */
    gpu->rmsnorm_forward(gpu, dout, drstd, dsum, dweight, rows, dim, 1e-6f);
    from_gpu_bf16(got, dout, n);
    CHECK_CLOSE("  rmsnorm out", got, out, n, BF16_TOLERANCE);
    cpu->rmsnorm_backward(cpu, grad_x, true, NULL, grad, sum, weight, rstd, rows, dim);
    gpu->rmsnorm_backward(gpu, dgrad_x, true, NULL, dgrad, dsum, dweight, drstd, rows, dim);
    from_gpu_bf16(got, dgrad_x, n);
    CHECK_CLOSE("  grad_x (accumulated)", got, grad_x, n, BF16_TOLERANCE);
    CHECK_NO_GPU_FAILURE();
    gpu_release();
    free(x), free(y), free(weight), free(grad), free(sum), free(out), free(rstd), free(grad_x), free(got);
}

TEST(rmsnorm_and_residual_add_match_cpu)
{
    check_rmsnorm(37, 896);
    check_rmsnorm(4 * 37, 32); /* q/k norm: one row per head */
}

/* The weight's gradient (full fine-tuning) is a sum over rows: equal to the cpu
 * backend's, and the same bits however often it runs. */
TEST(rmsnorm_weight_gradient_matches_cpu_and_repeats_exactly)
{
    enum { ROWS = 1000, DIM = 896 };
    size_t n = (size_t)ROWS * DIM;
    float *x = ft_xmalloc(n * 4), *grad = ft_xmalloc(n * 4), *grad_x = ft_xmalloc(n * 4), *rstd = ft_xmalloc(ROWS * 4);
    float *out = ft_xmalloc(n * 4);
    static float weight[DIM], grad_weight[DIM], got[DIM], again[DIM];
    fill(x, n, 80, 1.0f);
    fill(grad, n, 81, 1.0f);
    fill(weight, DIM, 82, 1.0f);
    /* the cpu reference reads bf16-rounded inputs, as the GPU does */
    for (size_t i = 0; i < n; i++) {
        x[i] = ft_bf16_to_f32(ft_f32_to_bf16(x[i]));
        grad[i] = ft_bf16_to_f32(ft_f32_to_bf16(grad[i]));
    }
    for (int c = 0; c < DIM; c++)
        weight[c] = ft_bf16_to_f32(ft_f32_to_bf16(weight[c]));
    void *dx = to_gpu_bf16(x, n), *dgrad = to_gpu_bf16(grad, n), *dweight = to_gpu_bf16(weight, DIM);
    void *dout = gpu_array(n * 2), *dgrad_x = gpu_array(n * 2);
    float *drstd = gpu_array(ROWS * 4), *dgrad_weight = gpu_array(DIM * 4);
    cpu->rmsnorm_forward(cpu, out, rstd, x, weight, ROWS, DIM, 1e-6f);
    gpu->rmsnorm_forward(gpu, dout, drstd, dx, dweight, ROWS, DIM, 1e-6f);
    gpu->download(gpu, rstd, drstd, ROWS * 4); /* the same rstd on both sides */
    cpu->rmsnorm_backward(cpu, grad_x, false, grad_weight, grad, x, weight, rstd, ROWS, DIM);
    gpu->rmsnorm_backward(gpu, dgrad_x, false, dgrad_weight, dgrad, dx, dweight, drstd, ROWS, DIM);
    gpu->download(gpu, got, dgrad_weight, sizeof got);
    CHECK_CLOSE("rmsnorm grad_weight over 1000 rows", got, grad_weight, DIM, 1e-5);
    for (int run = 0; run < 3; run++) {
        gpu->zero(gpu, dgrad_weight, DIM * 4);
        gpu->rmsnorm_backward(gpu, dgrad_x, false, dgrad_weight, dgrad, dx, dweight, drstd, ROWS, DIM);
        gpu->download(gpu, again, dgrad_weight, sizeof again);
        CHECK(memcmp(got, again, sizeof got) == 0);
    }
    CHECK_NO_GPU_FAILURE();
    gpu_release();
    free(x), free(grad), free(grad_x), free(rstd), free(out);
}

/* Sums over many elements and over repeated tokens come out the same every time. */
TEST(sum_squares_and_embedding_gradient_repeat_exactly)
{
    enum { N = 3000000, VOCAB = 40, DIM = 64, ROWS = 4096 };
    float *values = ft_xmalloc((size_t)N * 4), *grad = ft_xmalloc((size_t)ROWS * DIM * 4);
    static float first[VOCAB * DIM], again[VOCAB * DIM];
    fill(values, N, 90, 1.0f);
    fill(grad, (size_t)ROWS * DIM, 91, 1.0f);
    float *dvalues = to_gpu_bytes(values, (size_t)N * 4);
    const float *tensors[1] = {dvalues};
    size_t counts[1] = {N};
    double once = gpu->sum_squares(gpu, tensors, counts, 1);
    for (int run = 0; run < 5; run++) {
        double twice = gpu->sum_squares(gpu, tensors, counts, 1);
        CHECK(memcmp(&once, &twice, sizeof once) == 0);
    }
    int32_t tokens[ROWS];
    for (int r = 0; r < ROWS; r++)
        tokens[r] = (r * 7) % VOCAB; /* each token about a hundred times */
    void *dgrad = to_gpu_bf16(grad, (size_t)ROWS * DIM);
    int32_t *dtokens = to_gpu_bytes(tokens, sizeof tokens);
    float *dtable = gpu_array(sizeof first);
    gpu->embedding_backward(gpu, dtable, dgrad, dtokens, ROWS, DIM);
    gpu->download(gpu, first, dtable, sizeof first);
    for (int run = 0; run < 3; run++) {
        gpu->zero(gpu, dtable, sizeof first);
        gpu->embedding_backward(gpu, dtable, dgrad, dtokens, ROWS, DIM);
        gpu->download(gpu, again, dtable, sizeof again);
        CHECK(memcmp(first, again, sizeof first) == 0);
    }
    CHECK_NO_GPU_FAILURE();
    gpu_release();
    free(values), free(grad);
}

/* --- rope --- */

TEST(rope_matches_cpu_and_backward_undoes_it)
{
    enum { ROWS = 20, HEADS = 3, DIM = 64, POSITIONS = 30 };
    size_t n = ROWS * HEADS * DIM, table = POSITIONS * DIM / 2;
    static float x[ROWS * HEADS * DIM], original[ROWS * HEADS * DIM], got[ROWS * HEADS * DIM];
    static float cos_table[POSITIONS * DIM / 2], sin_table[POSITIONS * DIM / 2];
    int32_t positions[ROWS];
    for (int r = 0; r < ROWS; r++)
        positions[r] = (r * 7) % POSITIONS;
    for (int p = 0; p < POSITIONS; p++)
        for (int i = 0; i < DIM / 2; i++) {
            cos_table[p * DIM / 2 + i] = cosf(p * powf(10000.0f, -2.0f * i / DIM));
            sin_table[p * DIM / 2 + i] = sinf(p * powf(10000.0f, -2.0f * i / DIM));
        }
    fill(x, n, 20, 1.0f);
    void *dx = to_gpu_bf16(x, n);
    memcpy(original, x, sizeof x);
    int32_t *dpositions = to_gpu_bytes(positions, sizeof positions);
    float *dcos = to_gpu_bytes(cos_table, table * 4), *dsin = to_gpu_bytes(sin_table, table * 4);
    cpu->rope_forward(cpu, x, positions, cos_table, sin_table, ROWS, HEADS, DIM);
    gpu->rope_forward(gpu, dx, dpositions, dcos, dsin, ROWS, HEADS, DIM);
    from_gpu_bf16(got, dx, n);
    CHECK_CLOSE("rope forward", got, x, n, BF16_TOLERANCE);
    gpu->rope_backward(gpu, dx, dpositions, dcos, dsin, ROWS, HEADS, DIM);
    from_gpu_bf16(got, dx, n);
    CHECK_CLOSE("rope backward of forward", got, original, n, BF16_TOLERANCE);
    CHECK_NO_GPU_FAILURE();
    gpu_release();
}

/* --- swiglu, embedding --- */

TEST(swiglu_matches_cpu)
{
    enum { N = 1000 };
    static float gate[N], up[N], grad[N], out[N], grad_gate[N], grad_up[N], got[N];
    fill(gate, N, 30, 2.0f);
    fill(up, N, 31, 1.0f);
    fill(grad, N, 32, 1.0f);
    void *dgate = to_gpu_bf16(gate, N), *dup = to_gpu_bf16(up, N), *dgrad = to_gpu_bf16(grad, N);
    void *dout = gpu_array(N * 2), *dgrad_gate = gpu_array(N * 2), *dgrad_up = gpu_array(N * 2);
    cpu->swiglu_forward(cpu, out, gate, up, N);
    gpu->swiglu_forward(gpu, dout, dgate, dup, N);
    cpu->swiglu_backward(cpu, grad_gate, grad_up, grad, gate, up, N);
    gpu->swiglu_backward(gpu, dgrad_gate, dgrad_up, dgrad, dgate, dup, N);
    from_gpu_bf16(got, dout, N);
    CHECK_CLOSE("swiglu out", got, out, N, BF16_TOLERANCE);
    from_gpu_bf16(got, dgrad_gate, N);
    CHECK_CLOSE("  grad_gate", got, grad_gate, N, BF16_TOLERANCE);
    from_gpu_bf16(got, dgrad_up, N);
    CHECK_CLOSE("  grad_up", got, grad_up, N, BF16_TOLERANCE);
    CHECK_NO_GPU_FAILURE();
    gpu_release();
}

TEST(embedding_gathers_and_adds_back_as_cpu)
{
    enum { VOCAB = 50, DIM = 32, ROWS = 20 };
    static float table[VOCAB * DIM], out[ROWS * DIM], grad[ROWS * DIM], grad_table[VOCAB * DIM], got[VOCAB * DIM];
    int32_t tokens[ROWS];
    for (int r = 0; r < ROWS; r++)
        tokens[r] = (r * 13) % VOCAB / 2; /* repeats: rows add into the same gradient row */
    fill(table, VOCAB * DIM, 40, 1.0f);
    fill(grad, ROWS * DIM, 41, 1.0f);
    void *dtable = to_gpu_bf16(table, VOCAB * DIM), *dgrad = to_gpu_bf16(grad, ROWS * DIM);
    int32_t *dtokens = to_gpu_bytes(tokens, sizeof tokens);
    void *dout = gpu_array(ROWS * DIM * 2);
    float *dgrad_table = gpu_array(VOCAB * DIM * 4);
    cpu->embedding_forward(cpu, out, table, tokens, ROWS, DIM);
    gpu->embedding_forward(gpu, dout, dtable, dtokens, ROWS, DIM);
    from_gpu_bf16(got, dout, ROWS * DIM);
    CHECK(memcmp(got, out, sizeof out) == 0);
    cpu->embedding_backward(cpu, grad_table, grad, tokens, ROWS, DIM);
    gpu->embedding_backward(gpu, dgrad_table, dgrad, dtokens, ROWS, DIM);
    gpu->download(gpu, got, dgrad_table, sizeof grad_table);
    CHECK_CLOSE("embedding grad_table", got, grad_table, VOCAB * DIM, 1e-6);
    CHECK_NO_GPU_FAILURE();
    gpu_release();
}

/* --- attention --- */

typedef struct {
    int batch, seq_len, heads, kv_heads, head_dim;
} attention_size;

static void check_attention(attention_size a)
{
    int rows = a.batch * a.seq_len;
    size_t nq = (size_t)rows * a.heads * a.head_dim, nkv = (size_t)rows * a.kv_heads * a.head_dim;
    size_t nlse = (size_t)rows * a.heads;
    float *q = ft_xmalloc(nq * 4), *k = ft_xmalloc(nkv * 4), *v = ft_xmalloc(nkv * 4), *grad = ft_xmalloc(nq * 4);
    float *out = ft_xmalloc(nq * 4), *lse = ft_xmalloc(nlse * 4), *grad_q = ft_xmalloc(nq * 4);
    float *grad_k = ft_xmalloc(nkv * 4), *grad_v = ft_xmalloc(nkv * 4), *got = ft_xmalloc(nq * 4);
    int32_t *segments = ft_xmalloc(rows * sizeof(int32_t));
    for (int t = 0; t < a.seq_len; t++) {
        segments[t] = t < 37 ? 0 : 1;                                  /* two packed samples */
        if (a.batch > 1)
            segments[a.seq_len + t] = t < a.seq_len - 10 ? 5 : 9;      /* a sample, then padding */
    }
    fill(q, nq, 50, 1.0f);
    fill(k, nkv, 51, 1.0f);
    fill(v, nkv, 52, 1.0f);
    fill(grad, nq, 53, 1.0f);
    void *dq = to_gpu_bf16(q, nq), *dk = to_gpu_bf16(k, nkv), *dv = to_gpu_bf16(v, nkv), *dgrad = to_gpu_bf16(grad, nq);
    int32_t *dsegments = to_gpu_bytes(segments, rows * sizeof(int32_t));
    void *dout = gpu_array(nq * 2), *dgrad_q = gpu_array(nq * 2), *dgrad_k = gpu_array(nkv * 2);
    void *dgrad_v = gpu_array(nkv * 2);
    float *dlse = gpu_array(nlse * 4);
    ft_attention_shape shape = {a.batch, a.seq_len, a.heads, a.kv_heads, a.head_dim, false};
    cpu->attention_forward(cpu, out, lse, q, k, v, segments, &shape);
    gpu->attention_forward(gpu, dout, dlse, dq, dk, dv, dsegments, &shape);
    char what[96];
    snprintf(what, sizeof what, "attention %dx%d heads %d/%d dim %d out", a.batch, a.seq_len, a.heads, a.kv_heads,
             a.head_dim);
    from_gpu_bf16(got, dout, nq);
    CHECK_CLOSE(what, got, out, nq, BF16_TOLERANCE);
    gpu->download(gpu, got, dlse, nlse * 4);
    CHECK_CLOSE("  logsumexp", got, lse, nlse, FLOAT_TOLERANCE);
    cpu->attention_backward(cpu, grad_q, grad_k, grad_v, grad, out, q, k, v, lse, segments, &shape);
    gpu->attention_backward(gpu, dgrad_q, dgrad_k, dgrad_v, dgrad, dout, dq, dk, dv, dlse, dsegments, &shape);
    from_gpu_bf16(got, dgrad_q, nq);
    CHECK_CLOSE("  grad_q", got, grad_q, nq, BF16_TOLERANCE);
    from_gpu_bf16(got, dgrad_k, nkv);
    CHECK_CLOSE("  grad_k", got, grad_k, nkv, BF16_TOLERANCE);
    from_gpu_bf16(got, dgrad_v, nkv);
    CHECK_CLOSE("  grad_v", got, grad_v, nkv, BF16_TOLERANCE);
    /* again, into the same arrays: dQ, dK and dV the same bits (no atomics) */
    size_t all = nq + 2 * nkv;
    uint16_t *first = ft_xmalloc(all * 2), *again = ft_xmalloc(all * 2);
    gpu->download(gpu, first, dgrad_q, nq * 2);
    gpu->download(gpu, first + nq, dgrad_k, nkv * 2);
    gpu->download(gpu, first + nq + nkv, dgrad_v, nkv * 2);
    gpu->attention_backward(gpu, dgrad_q, dgrad_k, dgrad_v, dgrad, dout, dq, dk, dv, dlse, dsegments, &shape);
    gpu->download(gpu, again, dgrad_q, nq * 2);
    gpu->download(gpu, again + nq, dgrad_k, nkv * 2);
    gpu->download(gpu, again + nq + nkv, dgrad_v, nkv * 2);
    CHECK(memcmp(first, again, all * 2) == 0);
    free(first), free(again);
    CHECK_NO_GPU_FAILURE();
    gpu_release();
    free(q), free(k), free(v), free(grad), free(out), free(lse), free(grad_q), free(grad_k), free(grad_v), free(got);
    free(segments);
}

TEST(attention_matches_cpu_for_each_head_size)
{
    check_attention((attention_size){2, 100, 4, 2, 16});
    check_attention((attention_size){1, 130, 4, 1, 32});
    check_attention((attention_size){2, 64, 2, 2, 64});
    check_attention((attention_size){2, 200, 4, 2, 128});
    check_attention((attention_size){1, 700, 2, 1, 64}); /* 11 key tiles */
}

/* --- the vision towers' forward-only ops --- */

/* Bidirectional attention in runs of segment ids (images, windows): the flash
 * kernel for the head sizes it takes (16 to 128 and Qwen2-VL's 80; skipping key
 * tiles outside a query tile's runs), the plain kernel for others (tiny-llava's 8). */
static void check_bidirectional_attention(int seq_len, int heads, int head_dim, int run)
{
    size_t n = (size_t)seq_len * heads * head_dim;
    float *q = ft_xmalloc(n * 4), *k = ft_xmalloc(n * 4), *v = ft_xmalloc(n * 4), *out = ft_xmalloc(n * 4);
    float *got = ft_xmalloc(n * 4);
    int32_t *segments = ft_xmalloc(seq_len * sizeof(int32_t));
    for (int t = 0; t < seq_len; t++)
        segments[t] = t < 5 ? 0 : 1 + (t - 5) / run; /* a short run, then runs of `run` (the last ragged) */
    fill(q, n, 80, 1.0f);
    fill(k, n, 81, 1.0f);
    fill(v, n, 82, 1.0f);
    void *dq = to_gpu_bf16(q, n), *dk = to_gpu_bf16(k, n), *dv = to_gpu_bf16(v, n), *dout = gpu_array(n * 2);
    int32_t *dsegments = to_gpu_bytes(segments, seq_len * sizeof(int32_t));
    ft_attention_shape shape = {1, seq_len, heads, heads, head_dim, true};
    cpu->attention_forward(cpu, out, NULL, q, k, v, segments, &shape);
    gpu->attention_forward(gpu, dout, NULL, dq, dk, dv, dsegments, &shape);
    CHECK_NO_GPU_FAILURE();
    char what[96];
    snprintf(what, sizeof what, "bidirectional attention %d heads %d dim %d runs %d", seq_len, heads, head_dim, run);
    from_gpu_bf16(got, dout, n);
    CHECK_CLOSE(what, got, out, n, BF16_TOLERANCE);
    gpu_release();
    free(q), free(k), free(v), free(out), free(got), free(segments);
}

TEST(bidirectional_attention_matches_cpu)
{
    check_bidirectional_attention(300, 2, 16, 64);   /* Qwen2.5-VL-tiny's windows */
    check_bidirectional_attention(600, 2, 64, 577);  /* CLIP-L's images of 577 positions */
    check_bidirectional_attention(200, 4, 128, 30);
    check_bidirectional_attention(250, 4, 8, 100);   /* the plain kernel */
    check_bidirectional_attention(300, 2, 80, 64);   /* Qwen2-VL's head size, tiled forward only */
    check_bidirectional_attention(140, 2, 48, 70);   /* the plain kernel, two lanes' worth of a row */
}

TEST(layernorm_activations_and_add_match_cpu)
{
    enum { ROWS = 77, DIM = 160, N = ROWS * DIM };
    static float x[N], y[N], weight[DIM], bias[DIM], out[N], got[N];
    fill(x, N, 90, 2.0f);
    for (int i = 0; i < N; i++)
        x[i] += 5.0f; /* a mean far from zero */
    fill(y, N, 91, 1.0f);
    fill(weight, DIM, 92, 1.0f);
    fill(bias, DIM, 93, 0.5f);
    void *dx = to_gpu_bf16(x, N), *dy = to_gpu_bf16(y, N), *dweight = to_gpu_bf16(weight, DIM);
    void *dbias = to_gpu_bf16(bias, DIM), *dout = gpu_array(N * 2);
    cpu->layernorm_forward(cpu, out, x, weight, bias, ROWS, DIM, 1e-5f);
    gpu->layernorm_forward(gpu, dout, dx, dweight, dbias, ROWS, DIM, 1e-5f);
    from_gpu_bf16(got, dout, N);
    CHECK_CLOSE("layernorm 77x160 with bias", got, out, N, BF16_TOLERANCE);
    cpu->layernorm_forward(cpu, out, x, weight, NULL, ROWS, DIM, 1e-6f);
    gpu->layernorm_forward(gpu, dout, dx, dweight, NULL, ROWS, DIM, 1e-6f);
    from_gpu_bf16(got, dout, N);
    CHECK_CLOSE("layernorm 77x160 without bias", got, out, N, BF16_TOLERANCE);
    static const char *const names[3] = {"quick_gelu", "gelu (erf)", "gelu (tanh)"};
    for (int kind = 0; kind < 3; kind++) {
        cpu->activation_forward(cpu, out, y, N, (ft_activation)kind);
        gpu->activation_forward(gpu, dout, dy, N, (ft_activation)kind);
        from_gpu_bf16(got, dout, N);
        CHECK_CLOSE(names[kind], got, out, N, BF16_TOLERANCE);
    }
    static const char *const backward_names[3] = {"quick_gelu backward", "gelu (erf) backward",
                                                  "gelu (tanh) backward"};
    void *dgrad = to_gpu_bf16(x, N); /* x as the gradient coming in */
    for (int kind = 0; kind < 3; kind++) {
        cpu->activation_backward(cpu, out, x, y, N, (ft_activation)kind);
        gpu->activation_backward(gpu, dout, dgrad, dy, N, (ft_activation)kind);
        from_gpu_bf16(got, dout, N);
        CHECK_CLOSE(backward_names[kind], got, out, N, BF16_TOLERANCE);
    }
    cpu->add_forward(cpu, out, x, y, N);
    gpu->add_forward(gpu, dx, dx, dy, N); /* in place */
    from_gpu_bf16(got, dx, N);
    CHECK_CLOSE("add (in place)", got, out, N, BF16_TOLERANCE);
    /* RMSNorm without rstd, as the Qwen2.5-VL tower runs it */
    cpu->rmsnorm_forward(cpu, out, NULL, y, weight, ROWS, DIM, 1e-6f);
    gpu->rmsnorm_forward(gpu, dout, NULL, dy, dweight, ROWS, DIM, 1e-6f);
    from_gpu_bf16(got, dout, N);
    CHECK_CLOSE("rmsnorm without rstd", got, out, N, BF16_TOLERANCE);
    CHECK_NO_GPU_FAILURE();
    gpu_release();
}

/* --- cross-entropy --- */

static void check_cross_entropy(int rows, int vocab)
{
    size_t n = (size_t)rows * vocab;
    float *logits = ft_xmalloc(n * 4), *grad = ft_xmalloc(n * 4), *losses = ft_xmalloc(rows * 4);
    float *got = ft_xmalloc(n * 4);
    int32_t *targets = ft_xmalloc(rows * sizeof(int32_t));
    for (int r = 0; r < rows; r++)
        targets[r] = r % 4 == 1 ? -100 : (r * 7919) % vocab;
    fill(logits, n, 60, 3.0f);
    void *dlogits = to_gpu_bf16(logits, n);
    int32_t *dtargets = to_gpu_bytes(targets, rows * sizeof(int32_t));
    float *dlosses = gpu_array(rows * 4);
    memcpy(grad, logits, n * sizeof(float));
    cpu->cross_entropy(cpu, losses, grad, targets, rows, vocab, true, 0.25f);
    gpu->cross_entropy(gpu, dlosses, dlogits, dtargets, rows, vocab, false, 0.25f); /* the loss alone */
    char what[64];
    snprintf(what, sizeof what, "cross-entropy %dx%d losses", rows, vocab);
    gpu->download(gpu, got, dlosses, rows * 4);
    CHECK_CLOSE(what, got, losses, rows, 1e-4);
    CHECK(got[1] == 0.0f);
    float *kept = ft_xmalloc(n * sizeof(float));
    from_gpu_bf16(kept, dlogits, n);
    CHECK_CLOSE("  logits untouched without backward", kept, logits, n, BF16_TOLERANCE);
    free(kept);
    gpu->cross_entropy(gpu, dlosses, dlogits, dtargets, rows, vocab, true, 0.25f); /* loss and gradient */
    gpu->download(gpu, got, dlosses, rows * 4);
    CHECK_CLOSE("  losses with backward", got, losses, rows, 1e-4);
    from_gpu_bf16(got, dlogits, n);
    CHECK_CLOSE("  grad_logits", got, grad, n, BF16_TOLERANCE);
    CHECK_NO_GPU_FAILURE();
    gpu_release();
    free(logits), free(grad), free(losses), free(got), free(targets);
}

TEST(cross_entropy_matches_cpu)
{
    check_cross_entropy(9, 300);
    check_cross_entropy(7, 301); /* not a multiple of 8: no 16-byte loads */
    check_cross_entropy(5, 151936);
}

/* --- optimizer --- */

TEST(adamw_sum_squares_scale_and_add_floats_match_cpu)
{
    enum { N = 1000 };
    static float param[N], grad[N], m[N], v[N], got[N];
    fill(param, N, 70, 1.0f);
    fill(grad, N, 71, 0.1f);
    float *dparam = to_gpu_bytes(param, sizeof param), *dgrad = to_gpu_bytes(grad, sizeof grad);
    float *dm = gpu_array(sizeof m), *dv = gpu_array(sizeof v);
    for (int step = 1; step <= 2; step++) {
        ft_adamw_hyper hyper = {1e-3, 0.9, 0.999, 1e-8, 0.01, step};
        cpu->adamw(cpu, param, grad, m, v, N, &hyper);
        gpu->adamw(gpu, dparam, dgrad, dm, dv, N, &hyper);
    }
    /* rounded operation for operation as on the host: the same bits, which is what
     * lets offload_optimizer move AdamW to the host without changing a weight */
    gpu->download(gpu, got, dparam, sizeof got);
    CHECK_CLOSE("adamw after 2 steps", got, param, N, 1e-6);
    CHECK(memcmp(got, param, sizeof got) == 0);
    gpu->download(gpu, got, dm, sizeof got);
    CHECK(memcmp(got, m, sizeof got) == 0);
    gpu->download(gpu, got, dv, sizeof got);
    CHECK(memcmp(got, v, sizeof got) == 0);
    /* three tensors, the last empty, summed in one call */
    const float *host[3] = {grad, grad, grad}, *device[3] = {dgrad, dgrad, dgrad};
    size_t counts[3] = {N, N / 2, 0};
    double expected = cpu->sum_squares(cpu, host, counts, 3), actual = gpu->sum_squares(gpu, device, counts, 3);
    printf("# sum_squares of 3 tensors %.9g (cpu %.9g)\n", actual, expected);
    CHECK(fabs(actual - expected) < 1e-9 * expected);
    cpu->scale(cpu, grad, N, 0.5f);
    gpu->scale(gpu, dgrad, N, 0.5f);
    gpu->download(gpu, got, dgrad, sizeof got);
    CHECK(memcmp(got, grad, sizeof got) == 0);
    /* ZeRO's sums of gradients (grad_shards.h): one rounding each, as on the host */
    cpu->add_floats(cpu, grad, param, N - 3);
    gpu->add_floats(gpu, dgrad, dparam, N - 3);
    gpu->download(gpu, got, dgrad, sizeof got);
    CHECK(memcmp(got, grad, sizeof got) == 0);
    CHECK_NO_GPU_FAILURE();
    gpu_release();
}

/* Uploads are copied into pinned staging by several threads, a slice each:
 * lengths just past a multiple of every pool size's slices must arrive whole. */
TEST(upload_copies_every_byte)
{
    for (size_t slices = 2; slices <= 9; slices++)
        for (int last = 0; last < 2; last++) {
            size_t bytes = slices * 4096 * 128 + (last ? slices - 1 : 1);
            unsigned char *host = ft_xmalloc(bytes), *back = ft_xcalloc(bytes, 1);
            for (size_t i = 0; i < bytes; i++)
                host[i] = (unsigned char)(i * 7 + slices);
            void *device = to_gpu_bytes(host, bytes);
            gpu->download(gpu, back, device, bytes);
            CHECK_NO_GPU_FAILURE();
            if (memcmp(host, back, bytes) != 0) {
                fprintf(stderr, "  an upload of %zu bytes arrived with different bytes\n", bytes);
                check_case_failed = 1;
            }
            gpu_release();
            free(host);
            free(back);
        }
}

int main(void)
{
    int started = start_backends();
    if (started < 0)
        return 1;
    ft_backend_limits limits = {.max_rows = 1024, .max_seq_len = 1024, .max_features = 1024, .max_rank = 8,
                                .head_dim = 128, .max_heads = 4, .lora_dropout = true, .planned_bytes = 0};
    if (cpu->reserve(cpu, &limits) < 0 || (gpu && gpu->reserve(gpu, &limits) < 0)) {
        fprintf(stderr, "  %s\n", ft_error_message());
        return 1;
    }
    for (int d = 16; gpu && d <= 64; d *= 2) { /* every head size's shared memory is raised when a model asks for it */
        limits.head_dim = d;
        gpu->reserve(gpu, &limits);
    }
    /* the towers' head sizes: 80 runs the tiled kernel's forward, 8 the plain kernel */
    for (int d = 8; gpu && d <= 80; d += 72) {
        limits.vision_head_dim = d;
        if (gpu->reserve(gpu, &limits) < 0) {
            fprintf(stderr, "  %s\n", ft_error_message());
            return 1;
        }
    }
    GPU_RUN(linear_with_lora_matches_cpu);
    GPU_RUN(linear_with_lora_dropout_matches_cpu_mask_for_mask);
    GPU_RUN(rmsnorm_and_residual_add_match_cpu);
    GPU_RUN(rmsnorm_weight_gradient_matches_cpu_and_repeats_exactly);
    GPU_RUN(rope_matches_cpu_and_backward_undoes_it);
    GPU_RUN(swiglu_matches_cpu);
    GPU_RUN(embedding_gathers_and_adds_back_as_cpu);
    GPU_RUN(attention_matches_cpu_for_each_head_size);
    GPU_RUN(bidirectional_attention_matches_cpu);
    GPU_RUN(layernorm_activations_and_add_match_cpu);
    GPU_RUN(cross_entropy_matches_cpu);
    GPU_RUN(adamw_sum_squares_scale_and_add_floats_match_cpu);
    GPU_RUN(sum_squares_and_embedding_gradient_repeat_exactly);
    GPU_RUN(upload_copies_every_byte);
    if (gpu)
        printf("# peak GPU memory %zu bytes\n", gpu->peak_bytes(gpu));
    ft_backend_destroy(gpu);
    ft_backend_destroy(cpu);
    return check_done();
}
