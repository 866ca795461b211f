/* The cuda backend's generation ops against the cpu backend's on the same
 * (bf16-rounded) random inputs, and decode attention also against its
 * definition in double: gathering and scattering rows (exact), and
 * decode attention for every supported head size, GQA groups of 1 to 16 query
 * heads, sequences of different lengths in one batch, with the cache in one
 * block or split among several (flash-decoding). Outputs are poisoned first, so
 * an unwritten element fails. (Its bandwidth is a benchmark:
 * tests/bench/cuda_decode_bandwidth.c.) */
#include "gpu_check.h"
#include "ftpipe/base/fsutil.h"

#define BF16_TOLERANCE 2e-2

static void *poisoned_gpu_array(size_t bytes)
{
    void *device = gpu_array(bytes);
    uint8_t *ones = ft_xmalloc(bytes);
    memset(ones, 0xff, bytes); /* bf16 NaN */
    gpu->upload(gpu, device, ones, bytes);
    free(ones);
    return device;
}

/* --- gather and scatter --- */

static void check_rows(int src_rows, int rows, int width)
{
    size_t n_src = (size_t)src_rows * width, n = (size_t)rows * width;
    float *src = ft_xmalloc(n_src * 4), *gathered = ft_xmalloc(n * 4), *table = ft_xmalloc(n_src * 4);
    float *got = ft_xmalloc(n_src * 4);
    int32_t *index = ft_xmalloc(rows * sizeof(int32_t));
    for (int r = 0; r < rows; r++)
        index[r] = (int32_t)((r * 7 + 3) % src_rows); /* distinct while rows <= src_rows and 7 is coprime */
    fill(src, n_src, 60, 1.0f);
    void *dsrc = to_gpu_bf16(src, n_src);
    int32_t *dindex = to_gpu_bytes(index, rows * sizeof(int32_t));
    void *dgathered = poisoned_gpu_array(n * 2);
    cpu->gather_rows(cpu, gathered, src, index, rows, width);
    gpu->gather_rows(gpu, dgathered, dsrc, dindex, rows, width);
    from_gpu_bf16(got, dgathered, n);
    CHECK(memcmp(got, gathered, n * 4) == 0);
    /* scatter the gathered rows back into a copy of src: src again */
    memcpy(table, src, n_src * 4);
    void *dtable = to_gpu_bf16(table, n_src);
    cpu->scatter_rows(cpu, table, gathered, index, rows, width);
    gpu->scatter_rows(gpu, dtable, dgathered, dindex, rows, width);
    from_gpu_bf16(got, dtable, n_src);
    CHECK(memcmp(got, table, n_src * 4) == 0 && memcmp(table, src, n_src * 4) == 0);
    printf("# gather and scatter %d of %d rows of %d: exact\n", rows, src_rows, width);
    CHECK_NO_GPU_FAILURE();
    gpu_release();
    free(src), free(gathered), free(table), free(got), free(index);
}

TEST(gather_and_scatter_rows_match_cpu)
{
    check_rows(40, 33, 896); /* 16-byte rows */
    check_rows(11, 10, 7);   /* odd widths */
}

/* --- greedy choice --- */

/* bf16 logits over a large vocabulary tie often: the lowest index must win on both. */
static void check_argmax(int rows, int width)
{
    size_t n = (size_t)rows * width;
    float *x = ft_xmalloc(n * 4);
    fill(x, n, 61, 4.0f);
    x[(size_t)(rows - 1) * width + width - 1] = 100.0f; /* the last element can win */
    x[width - 2] = x[1] = 90.0f;                             /* a planted tie: index 1 wins */
    int32_t *want = ft_xmalloc(rows * sizeof(int32_t)), *got = ft_xmalloc(rows * sizeof(int32_t));
    void *dx = to_gpu_bf16(x, n);
    int32_t *dids = gpu_array(rows * sizeof(int32_t));
    cpu->argmax_rows(cpu, want, x, rows, width);
    gpu->argmax_rows(gpu, dids, dx, rows, width);
    gpu->download(gpu, got, dids, rows * sizeof(int32_t));
    CHECK_NO_GPU_FAILURE();
    CHECK(memcmp(got, want, rows * sizeof(int32_t)) == 0);
    CHECK_INT(want[rows - 1], width - 1);
    CHECK_INT(want[0], 1);
    int ties = 0;
    for (int r = 0; r < rows; r++) {
        const float *row = x + (size_t)r * width;
        for (int i = want[r] + 1; i < width; i++)
            ties += row[i] == row[want[r]];
    }
    printf("# argmax of %d rows of %d: same ids as the cpu backend (%d ties with a later index)\n", rows, width, ties);
    gpu_release();
    free(x), free(want), free(got);
}

TEST(argmax_rows_matches_cpu_with_ties)
{
    check_argmax(33, 151936);
    check_argmax(5, 7);
}

/* --- decode attention --- */

/* The definition, in double: softmax(q k^T / sqrt(head_dim)) v over each
 * sequence's first lengths[b] cache positions. */
static void reference_decode(float *out, const float *q, const float *k, const float *v, const int32_t *lengths,
                             int batch, int max_len, int heads, int kv_heads, int dim)
{
    double *scores = ft_xmalloc((size_t)max_len * sizeof(double));
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++) {
            const float *qh = q + ((size_t)b * heads + h) * dim;
            size_t kv = (size_t)h / (heads / kv_heads) * dim, row = (size_t)kv_heads * dim;
            double top = -INFINITY, sum = 0.0;
            for (int t = 0; t < lengths[b]; t++) {
                const float *kt = k + ((size_t)b * max_len + t) * row + kv;
                double dot = 0.0;
                for (int d = 0; d < dim; d++)
                    dot += (double)qh[d] * kt[d];
                scores[t] = dot / sqrt((double)dim);
                top = fmax(top, scores[t]);
            }
            for (int t = 0; t < lengths[b]; t++)
                sum += scores[t] = exp(scores[t] - top);
            for (int d = 0; d < dim; d++) {
                double total = 0.0;
                for (int t = 0; t < lengths[b]; t++)
                    total += scores[t] * v[((size_t)b * max_len + t) * row + kv + d];
                out[((size_t)b * heads + h) * dim + d] = (float)(total / sum);
            }
        }
    free(scores);
}

typedef struct {
    int batch, max_len, heads, kv_heads, head_dim;
} decode_size;

static void check_decode(decode_size s)
{
    size_t nq = (size_t)s.batch * s.heads * s.head_dim;
    size_t ncache = (size_t)s.batch * s.max_len * s.kv_heads * s.head_dim;
    float *q = ft_xmalloc(nq * 4), *k = ft_xmalloc(ncache * 4), *v = ft_xmalloc(ncache * 4);
    float *out = ft_xmalloc(nq * 4), *got = ft_xmalloc(nq * 4);
    int32_t *lengths = ft_xmalloc(s.batch * sizeof(int32_t));
    for (int b = 0; b < s.batch; b++) /* full, one, and lengths between */
        lengths[b] = b == 0 ? s.max_len : b == 1 ? 1 : 1 + (int32_t)((b * 977u) % (unsigned)s.max_len);
    fill(q, nq, 70, 2.0f);
    fill(k, ncache, 71, 1.0f);
    fill(v, ncache, 72, 1.0f);
    void *dq = to_gpu_bf16(q, nq), *dk = to_gpu_bf16(k, ncache), *dv = to_gpu_bf16(v, ncache);
    int32_t *dlengths = to_gpu_bytes(lengths, s.batch * sizeof(int32_t));
    void *dout = poisoned_gpu_array(nq * 2);
    gpu->attention_decode(gpu, dout, dq, dk, dv, dlengths, s.batch, s.max_len, s.heads, s.kv_heads, s.head_dim);
    from_gpu_bf16(got, dout, nq);
    char what[96];
    snprintf(what, sizeof what, "decode %dx%d heads %d/%d dim %d vs double", s.batch, s.max_len, s.heads,
             s.kv_heads, s.head_dim);
    reference_decode(out, q, k, v, lengths, s.batch, s.max_len, s.heads, s.kv_heads, s.head_dim);
    CHECK_CLOSE(what, got, out, nq, BF16_TOLERANCE);
    cpu->attention_decode(cpu, out, q, k, v, lengths, s.batch, s.max_len, s.heads, s.kv_heads, s.head_dim);
    CHECK_CLOSE("  ... vs the cpu backend", got, out, nq, BF16_TOLERANCE);
    CHECK_NO_GPU_FAILURE();
    gpu_release();
    free(q), free(k), free(v), free(out), free(got), free(lengths);
}

/* Scratch for splitting the cache, as a model of batch x max_len tokens reserves it. */
static void reserve_for(int batch, int max_len, int heads, int head_dim)
{
    ft_backend_limits limits = {.max_rows = batch * max_len, .max_seq_len = max_len, .max_features = 64,
                                .head_dim = head_dim, .max_heads = heads};
    if (gpu->reserve(gpu, &limits) < 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        check_case_failed = 1;
    }
}

TEST(decode_attention_in_one_block_per_sequence_matches_cpu)
{
    /* before any scratch is reserved: the cache is never split */
    check_decode((decode_size){3, 70, 4, 2, 16});
    check_decode((decode_size){2, 300, 14, 2, 64});
}

TEST(decode_attention_split_over_the_cache_matches_cpu)
{
    reserve_for(32, 1100, 32, 128);
    check_decode((decode_size){3, 200, 4, 2, 16});
    check_decode((decode_size){2, 1000, 4, 1, 32});     /* group of 4 */
    check_decode((decode_size){5, 333, 14, 2, 64});     /* group of 7 (Qwen2.5-0.5B) */
    check_decode((decode_size){32, 1100, 12, 2, 128});  /* group of 6 (Qwen2.5-1.5B) at batch 32 */
    check_decode((decode_size){2, 257, 32, 2, 128});    /* group of 16: two blocks per group */
    check_decode((decode_size){4, 500, 8, 8, 64});      /* no grouping */
}

int main(void)
{
    int started = start_backends();
    if (started < 0)
        return 1;
    GPU_RUN(gather_and_scatter_rows_match_cpu);
    GPU_RUN(argmax_rows_matches_cpu_with_ties);
    GPU_RUN(decode_attention_in_one_block_per_sequence_matches_cpu);
    GPU_RUN(decode_attention_split_over_the_cache_matches_cpu);
    ft_backend_destroy(gpu);
    ft_backend_destroy(cpu);
    return check_done();
}
