/* attention: causal softmax attention with grouped key/value heads and
 * packed-sample segments, flash-style: tiles of 64 queries and 64 keys in
 * shared memory, products on bf16 tensor cores (wmma, fp32 accumulation), an
 * online softmax in fp32, so the [seq_len, seq_len] scores never exist in
 * device memory. Forward keeps each query's logsumexp.
 *
 * Backward runs two kernels, so that no two blocks ever add into the same
 * place and the same step gives the same bits every time. The first goes over
 * key tiles: a block owns 64 keys and one query head, visits every query tile
 * after them and keeps that head's share of dK and dV in registers (written as
 * fp32 partials that a third kernel adds up over the query heads of each
 * key/value group). The second goes over query tiles: a block owns 64 queries
 * of one head, visits every key tile before them, recomputes P and dS and keeps
 * dQ in registers, written once as bf16. Recomputing costs two of the five tile
 * products again; adding dQ with atomics instead would make the result depend
 * on the order blocks finish. The softmax's row sums come from
 * delta = rowsum(dO * O).
 *
 * Each of the four warps owns 16 rows of a tile; head_dim is 16, 32, 64 or 128.
 *
 * The vision towers' bidirectional attention (forward only) runs the same
 * forward kernel over every key tile whose segment runs meet the query tile's,
 * the others skipped unread, for head_dim 16, 32, 64, 80 (Qwen2-VL's and
 * Qwen2.5-VL's towers; forward only) and 128; a tower of another head_dim (as
 * tiny-llava's 8) runs a plain kernel instead: one warp per query, an online
 * softmax over the keys of its run, in fp32 without tensor cores. */
#include <limits.h>
#include <math.h>
#include <mma.h>

#include "cuda_internal.h"

extern "C" {
#include "ftpipe/base/error.h"
}

using namespace nvcuda;

namespace {

constexpr int tile = 64;
constexpr int warps = 4;
constexpr int threads = warps * 32;
constexpr int score_stride = tile + 4;  /* floats: a row of a score tile, padded against bank conflicts */
constexpr int prob_stride = tile + 8;   /* bf16: a row of a probability tile */

typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> accumulator;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> rows_a;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major> columns_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> rows_b;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> columns_b;

template <int D>
struct shape_of {
    static constexpr int stride = D + 8;       /* bf16: a row of a q, k, v or dO tile */
    static constexpr int out_stride = D + 4;   /* floats: a row of an output tile */
    static constexpr size_t tile_bytes = (size_t)tile * stride * sizeof(bf16);
    static constexpr size_t scores_bytes = (size_t)tile * score_stride * sizeof(float);
    static constexpr size_t probs_bytes = (size_t)tile * prob_stride * sizeof(bf16);
    static constexpr size_t out_bytes = (size_t)tile * out_stride * sizeof(float);
    static constexpr size_t rows_bytes = 4 * tile * sizeof(float);
    /* q, k, v | scores | probabilities | output | max, sum, segments of q and k */
    static constexpr size_t forward_bytes = 3 * tile_bytes + scores_bytes + probs_bytes + out_bytes + rows_bytes;
    /* k, v, q, dO | scores, dP | P, dS | dQ | logsumexp, delta, segments of q and k */
    static constexpr size_t backward_bytes = 4 * tile_bytes + 2 * scores_bytes + 2 * probs_bytes + out_bytes +
                                             rows_bytes;
};

/* Rows first..first+63 of one head into a shared tile; rows past seq_len are zero. */
template <int D>
__device__ void load_tile(bf16 *shared, const bf16 *head, int stride, int first, int seq_len)
{
    constexpr int chunks = D / 8; /* 16-byte pieces of a row */
    for (int i = threadIdx.x; i < tile * chunks; i += threads) {
        int r = i / chunks, c = i % chunks, t = first + r;
        uint4 value = make_uint4(0, 0, 0, 0);
        if (t < seq_len)
            value = *(const uint4 *)(head + (size_t)t * stride + c * 8);
        *(uint4 *)(shared + r * shape_of<D>::stride + c * 8) = value;
    }
}

__device__ void load_segments(int *shared, const int32_t *segments, int first, int seq_len)
{
    for (int r = threadIdx.x; r < tile; r += threads)
        shared[r] = first + r < seq_len ? segments[first + r] : 0;
}

/* out[16 x 64] (this warp's rows) = a[16 x D] b^T, b being a [64 x D] tile. */
template <int D>
__device__ void scores(float *out, const bf16 *a, const bf16 *b)
{
    constexpr int stride = shape_of<D>::stride;
#pragma unroll
    for (int n = 0; n < tile / 16; n++) {
        accumulator sum;
        wmma::fill_fragment(sum, 0.0f);
#pragma unroll
        for (int k = 0; k < D / 16; k++) {
            rows_a x;
            columns_b y;
            wmma::load_matrix_sync(x, a + k * 16, stride);
            wmma::load_matrix_sync(y, b + n * 16 * stride + k * 16, stride);
            wmma::mma_sync(sum, x, y, sum);
        }
        wmma::store_matrix_sync(out + n * 16, sum, score_stride, wmma::mem_row_major);
    }
}

template <int D>
__global__ void __launch_bounds__(threads) attention_forward_kernel(bf16 *out, float *logsumexp, const bf16 *q,
                                                                    const bf16 *k, const bf16 *v,
                                                                    const int32_t *segments, int seq_len,
                                                                    int n_heads, int n_kv_heads, float scale,
                                                                    bool bidirectional)
{
    typedef shape_of<D> s;
    extern __shared__ __align__(128) unsigned char shared[];
    bf16 *q_tile = (bf16 *)shared, *k_tile = q_tile + tile * s::stride, *v_tile = k_tile + tile * s::stride;
    float *score = (float *)(v_tile + tile * s::stride);
    bf16 *prob = (bf16 *)(score + tile * score_stride);
    float *acc = (float *)(prob + tile * prob_stride);
    float *row_max = acc + tile * s::out_stride, *row_sum = row_max + tile;
    int *q_segment = (int *)(row_sum + tile), *k_segment = q_segment + tile;

    int first_q = blockIdx.x * tile, h = blockIdx.y, b = blockIdx.z, kv_h = h / (n_heads / n_kv_heads);
    int q_stride = n_heads * D, kv_stride = n_kv_heads * D;
    size_t first_row = (size_t)b * seq_len;
    const int32_t *row_segments = segments + first_row;
    load_tile<D>(q_tile, q + first_row * q_stride + h * D, q_stride, first_q, seq_len);
    load_segments(q_segment, row_segments, first_q, seq_len);
    for (int i = threadIdx.x; i < tile * s::out_stride; i += threads)
        acc[i] = 0.0f;
    for (int r = threadIdx.x; r < tile; r += threads) {
        row_max[r] = -INFINITY;
        row_sum[r] = 0.0f;
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int r = warp * 16 + lane / 2, half = lane % 2, i = first_q + r; /* this lane's row and half of it */
    int last_key = bidirectional ? seq_len - 1 : min(seq_len, first_q + tile) - 1;
    int q_first_run = row_segments[first_q], q_last_run = row_segments[min(seq_len, first_q + tile) - 1];
    for (int first_k = 0; first_k <= last_key; first_k += tile) {
        /* ascending runs: a key tile that ends before the query tile's first run or
         * starts after its last has nothing it sees (the same test in every thread) */
        if (bidirectional && (row_segments[min(seq_len, first_k + tile) - 1] < q_first_run ||
                              row_segments[first_k] > q_last_run))
            continue;
        __syncthreads(); /* every warp is done with the previous k and v */
        load_tile<D>(k_tile, k + first_row * kv_stride + kv_h * D, kv_stride, first_k, seq_len);
        load_tile<D>(v_tile, v + first_row * kv_stride + kv_h * D, kv_stride, first_k, seq_len);
        load_segments(k_segment, row_segments, first_k, seq_len);
        __syncthreads();
        scores<D>(score + warp * 16 * score_stride, q_tile + warp * 16 * s::stride, k_tile);
        __syncwarp();

        /* online softmax over this lane's 32 columns of row r */
        const float *row = score + r * score_stride + half * 32;
        float tile_max = -INFINITY;
        for (int c = 0; c < 32; c++) {
            int j = first_k + half * 32 + c;
            if (i < seq_len && j < seq_len && (bidirectional || j <= i) && k_segment[half * 32 + c] == q_segment[r])
                tile_max = fmaxf(tile_max, row[c] * scale);
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        float old_max = row_max[r], new_max = fmaxf(old_max, tile_max);
        float rescale = new_max == -INFINITY ? 1.0f : expf(old_max - new_max);
        float sum = 0.0f;
        for (int c = 0; c < 32; c++) {
            int j = first_k + half * 32 + c;
            bool visible = i < seq_len && j < seq_len && (bidirectional || j <= i) &&
                           k_segment[half * 32 + c] == q_segment[r];
            float p = visible ? expf(row[c] * scale - new_max) : 0.0f;
            prob[r * prob_stride + half * 32 + c] = __float2bfloat16(p);
            sum += p;
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        for (int d = half * (D / 2); d < (half + 1) * (D / 2); d++)
            acc[r * s::out_stride + d] *= rescale;
        float old_sum = row_sum[r];
        __syncwarp();
        if (half == 0) {
            row_max[r] = new_max;
            row_sum[r] = old_sum * rescale + sum;
        }
        __syncwarp();

        /* acc += P V for this warp's rows */
#pragma unroll
        for (int n = 0; n < D / 16; n++) {
            accumulator o;
            float *o_at = acc + warp * 16 * s::out_stride + n * 16;
            wmma::load_matrix_sync(o, o_at, s::out_stride, wmma::mem_row_major);
#pragma unroll
            for (int kk = 0; kk < tile / 16; kk++) {
                rows_a p;
                rows_b value;
                wmma::load_matrix_sync(p, prob + warp * 16 * prob_stride + kk * 16, prob_stride);
                wmma::load_matrix_sync(value, v_tile + kk * 16 * s::stride + n * 16, s::stride);
                wmma::mma_sync(o, p, value, o);
            }
            wmma::store_matrix_sync(o_at, o, s::out_stride, wmma::mem_row_major);
        }
        __syncwarp();
    }
    if (i >= seq_len)
        return;
    float total = row_sum[r];
    bf16 *out_row = out + (first_row + i) * q_stride + h * D;
    for (int d = half * (D / 2); d < (half + 1) * (D / 2); d++)
        out_row[d] = __float2bfloat16(acc[r * s::out_stride + d] / total);
    if (half == 0 && logsumexp)
        logsumexp[((size_t)b * n_heads + h) * seq_len + i] = row_max[r] + logf(total);
}

/* Bidirectional attention for any head_dim up to 8 x 32: one warp per (row,
 * head), each lane holding every 32nd element of q, of the output and of its
 * accumulator; the keys are those of the query's run of equal segment ids. */
constexpr int any_head_most = 256;

__global__ void attention_forward_any_kernel(bf16 *out, float *logsumexp, const bf16 *q, const bf16 *k,
                                             const bf16 *v, const int32_t *segments, int batch_size, int seq_len,
                                             int n_heads, int n_kv_heads, int head_dim, float scale)
{
    size_t items = (size_t)batch_size * seq_len * n_heads;
    size_t item = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (item >= items)
        return;
    size_t row = item / n_heads;
    int h = (int)(item % n_heads), kv_h = h / (n_heads / n_kv_heads), i = (int)(row % seq_len);
    const int32_t *row_segments = segments + (row - i);
    int run = row_segments[i], start = i;
    while (start > 0 && row_segments[start - 1] == run)
        start--;
    int q_stride = n_heads * head_dim, kv_stride = n_kv_heads * head_dim;
    float query[any_head_most / 32], acc[any_head_most / 32];
    for (int e = 0; e < any_head_most / 32; e++) {
        int d = lane + 32 * e;
        query[e] = d < head_dim ? __bfloat162float(q[row * q_stride + h * head_dim + d]) : 0.0f;
        acc[e] = 0.0f;
    }
    float max = -INFINITY, sum = 0.0f;
    for (int j = start; j < seq_len && row_segments[j] == run; j++) {
        const bf16 *key = k + (row - i + j) * kv_stride + kv_h * head_dim;
        const bf16 *value = v + (row - i + j) * kv_stride + kv_h * head_dim;
        float dot = 0.0f;
        for (int e = 0; e < any_head_most / 32 && lane + 32 * e < head_dim; e++)
            dot += query[e] * __bfloat162float(key[lane + 32 * e]);
        float score = ft_warp_sum(dot) * scale, new_max = fmaxf(max, score);
        float rescale = expf(max - new_max), p = expf(score - new_max);
        sum = sum * rescale + p;
        for (int e = 0; e < any_head_most / 32 && lane + 32 * e < head_dim; e++)
            acc[e] = acc[e] * rescale + p * __bfloat162float(value[lane + 32 * e]);
        max = new_max;
    }
    for (int e = 0; e < any_head_most / 32 && lane + 32 * e < head_dim; e++)
        out[row * q_stride + h * head_dim + lane + 32 * e] = __float2bfloat16(acc[e] / sum);
    if (lane == 0 && logsumexp)
        logsumexp[((row / seq_len) * n_heads + h) * seq_len + i] = max + logf(sum);
}

/* delta[b, h, t] = sum over d of dO * O, one warp per (token, head). */
__global__ void attention_delta_kernel(float *delta, const bf16 *grad_out, const bf16 *out, int rows, int seq_len,
                                       int n_heads, int head_dim)
{
    size_t item = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (item >= (size_t)rows * n_heads)
        return;
    size_t row = item / n_heads;
    int h = (int)(item % n_heads);
    const bf16 *g = grad_out + item * head_dim, *o = out + item * head_dim;
    float sum = 0.0f;
    for (int d = lane; d < head_dim; d += 32)
        sum += __bfloat162float(g[d]) * __bfloat162float(o[d]);
    sum = ft_warp_sum(sum);
    if (lane == 0)
        delta[((row / seq_len) * n_heads + h) * seq_len + row % seq_len] = sum;
}

/* Backward's shared memory, as both backward kernels carve it. */
template <int D>
struct backward_tiles {
    bf16 *k, *v, *q, *grad_out;
    float *score, *grad_prob;        /* S = Q K^T and dP = dO V^T, [64 x 64] */
    bf16 *prob, *grad_score;         /* P and dS */
    float *out;                      /* staging for a warp's rows of a result */
    float *q_lse, *q_delta;          /* the query tile's logsumexp and delta */
    int *q_segment, *k_segment;

    __device__ explicit backward_tiles(unsigned char *shared)
    {
        typedef shape_of<D> s;
        k = (bf16 *)shared;
        v = k + tile * s::stride;
        q = v + tile * s::stride;
        grad_out = q + tile * s::stride;
        score = (float *)(grad_out + tile * s::stride);
        grad_prob = score + tile * score_stride;
        prob = (bf16 *)(grad_prob + tile * score_stride);
        grad_score = prob + tile * prob_stride;
        out = (float *)(grad_score + tile * prob_stride);
        q_lse = out + tile * s::out_stride;
        q_delta = q_lse + tile;
        q_segment = (int *)(q_delta + tile);
        k_segment = q_segment + tile;
    }
};

/* The query tile at first_q of head h: Q, dO, their segments, logsumexp and delta. */
template <int D>
__device__ void load_query_side(const backward_tiles<D> &t, const bf16 *q, const bf16 *grad_out,
                                const int32_t *row_segments, const float *head_lse, const float *head_delta,
                                int q_stride, int first_q, int seq_len)
{
    load_tile<D>(t.q, q, q_stride, first_q, seq_len);
    load_tile<D>(t.grad_out, grad_out, q_stride, first_q, seq_len);
    load_segments(t.q_segment, row_segments, first_q, seq_len);
    for (int i = threadIdx.x; i < tile; i += threads) {
        bool inside = first_q + i < seq_len;
        t.q_lse[i] = inside ? head_lse[first_q + i] : 0.0f;
        t.q_delta[i] = inside ? head_delta[first_q + i] : 0.0f;
    }
}

/* S and dP for this warp's 16 queries, then P and dS = P (dP - delta) for this
 * lane's half of its row r; both kernels compute them alike, so P and dS are the
 * same bits in each. */
template <int D>
__device__ void softmax_grad(const backward_tiles<D> &t, int first_q, int first_k, int seq_len, float scale)
{
    typedef shape_of<D> s;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int r = warp * 16 + lane / 2, half = lane % 2, i = first_q + r;
    scores<D>(t.score + warp * 16 * score_stride, t.q + warp * 16 * s::stride, t.k);
    scores<D>(t.grad_prob + warp * 16 * score_stride, t.grad_out + warp * 16 * s::stride, t.v);
    __syncwarp();
    for (int c = half * 32; c < half * 32 + 32; c++) {
        int j = first_k + c;
        bool visible = i < seq_len && j <= i && t.k_segment[c] == t.q_segment[r];
        float p = visible ? expf(t.score[r * score_stride + c] * scale - t.q_lse[r]) : 0.0f;
        t.prob[r * prob_stride + c] = __float2bfloat16(p);
        t.grad_score[r * prob_stride + c] = __float2bfloat16(p * (t.grad_prob[r * score_stride + c] - t.q_delta[r]));
    }
    __syncwarp();
}

/* This warp's 16 rows of `acc` (scaled) out to rows first.. of a [rows, stride]
 * array of T, through the staging tile; rows past seq_len are not written. */
template <int D, typename T>
__device__ void store_rows(T *array, size_t stride, accumulator (&acc)[D / 16], float scale, float *staging,
                           int first, int seq_len)
{
    typedef shape_of<D> s;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int r = warp * 16 + lane / 2, half = lane % 2;
    float *staged = staging + warp * 16 * s::out_stride;
#pragma unroll
    for (int n = 0; n < D / 16; n++) {
        for (int e = 0; e < acc[n].num_elements; e++)
            acc[n].x[e] *= scale;
        wmma::store_matrix_sync(staged + n * 16, acc[n], s::out_stride, wmma::mem_row_major);
    }
    __syncwarp();
    if (first + r < seq_len)
        for (int d = half * (D / 2); d < (half + 1) * (D / 2); d++)
            array[(size_t)(first + r) * stride + d] = (T)staging[r * s::out_stride + d];
    __syncwarp();
}

/* dK and dV of one key tile and one query head, as that head's fp32 partials. */
template <int D>
__global__ void __launch_bounds__(threads) attention_backward_kv_kernel(
    float *grad_k_part, float *grad_v_part, const bf16 *grad_out, const bf16 *q, const bf16 *k, const bf16 *v,
    const float *logsumexp, const float *delta, const int32_t *segments, int seq_len, int n_heads, int n_kv_heads,
    float scale)
{
    typedef shape_of<D> s;
    extern __shared__ __align__(128) unsigned char shared[];
    backward_tiles<D> t(shared);
    int first_k = blockIdx.x * tile, h = blockIdx.y, b = blockIdx.z, kv_h = h / (n_heads / n_kv_heads);
    int q_stride = n_heads * D, kv_stride = n_kv_heads * D, warp = threadIdx.x / 32;
    size_t first_row = (size_t)b * seq_len;
    const int32_t *row_segments = segments + first_row;
    const float *head_lse = logsumexp + ((size_t)b * n_heads + h) * seq_len;
    const float *head_delta = delta + ((size_t)b * n_heads + h) * seq_len;
    load_tile<D>(t.k, k + first_row * kv_stride + kv_h * D, kv_stride, first_k, seq_len);
    load_tile<D>(t.v, v + first_row * kv_stride + kv_h * D, kv_stride, first_k, seq_len);
    load_segments(t.k_segment, row_segments, first_k, seq_len);

    accumulator grad_k_acc[D / 16], grad_v_acc[D / 16]; /* this warp's 16 keys */
#pragma unroll
    for (int n = 0; n < D / 16; n++) {
        wmma::fill_fragment(grad_k_acc[n], 0.0f);
        wmma::fill_fragment(grad_v_acc[n], 0.0f);
    }
    for (int first_q = first_k; first_q < seq_len; first_q += tile) {
        __syncthreads(); /* every warp is done with the previous q tile */
        load_query_side<D>(t, q + first_row * q_stride + h * D, grad_out + first_row * q_stride + h * D,
                           row_segments, head_lse, head_delta, q_stride, first_q, seq_len);
        __syncthreads();
        softmax_grad<D>(t, first_q, first_k, seq_len, scale);
        __syncthreads(); /* P and dS of every warp are needed below */

        /* this warp's keys: dV += P^T dO, dK += dS^T Q (scaled at the end) */
#pragma unroll
        for (int n = 0; n < D / 16; n++) {
#pragma unroll
            for (int kk = 0; kk < tile / 16; kk++) {
                columns_a pt, dst;
                rows_b grad, query;
                wmma::load_matrix_sync(pt, t.prob + kk * 16 * prob_stride + warp * 16, prob_stride);
                wmma::load_matrix_sync(grad, t.grad_out + kk * 16 * s::stride + n * 16, s::stride);
                wmma::mma_sync(grad_v_acc[n], pt, grad, grad_v_acc[n]);
                wmma::load_matrix_sync(dst, t.grad_score + kk * 16 * prob_stride + warp * 16, prob_stride);
                wmma::load_matrix_sync(query, t.q + kk * 16 * s::stride + n * 16, s::stride);
                wmma::mma_sync(grad_k_acc[n], dst, query, grad_k_acc[n]);
            }
        }
    }
    size_t part_stride = (size_t)n_heads * D, first_part = (first_row * n_heads + h) * D;
    store_rows<D, float>(grad_k_part + first_part, part_stride, grad_k_acc, scale, t.out, first_k, seq_len);
    store_rows<D, float>(grad_v_part + first_part, part_stride, grad_v_acc, 1.0f, t.out, first_k, seq_len);
}

/* dQ of one query tile and head: dS K over every key tile it sees, written once. */
template <int D>
__global__ void __launch_bounds__(threads) attention_backward_q_kernel(
    bf16 *grad_q, const bf16 *grad_out, const bf16 *q, const bf16 *k, const bf16 *v, const float *logsumexp,
    const float *delta, const int32_t *segments, int seq_len, int n_heads, int n_kv_heads, float scale)
{
    typedef shape_of<D> s;
    extern __shared__ __align__(128) unsigned char shared[];
    backward_tiles<D> t(shared);
    int first_q = blockIdx.x * tile, h = blockIdx.y, b = blockIdx.z, kv_h = h / (n_heads / n_kv_heads);
    int q_stride = n_heads * D, kv_stride = n_kv_heads * D, warp = threadIdx.x / 32;
    size_t first_row = (size_t)b * seq_len;
    const int32_t *row_segments = segments + first_row;
    load_query_side<D>(t, q + first_row * q_stride + h * D, grad_out + first_row * q_stride + h * D, row_segments,
                       logsumexp + ((size_t)b * n_heads + h) * seq_len,
                       delta + ((size_t)b * n_heads + h) * seq_len, q_stride, first_q, seq_len);

    accumulator grad_q_acc[D / 16]; /* this warp's 16 queries */
#pragma unroll
    for (int n = 0; n < D / 16; n++)
        wmma::fill_fragment(grad_q_acc[n], 0.0f);
    int last_key = min(seq_len, first_q + tile) - 1;
    for (int first_k = 0; first_k <= last_key; first_k += tile) {
        __syncthreads(); /* every warp is done with the previous k and v */
        load_tile<D>(t.k, k + first_row * kv_stride + kv_h * D, kv_stride, first_k, seq_len);
        load_tile<D>(t.v, v + first_row * kv_stride + kv_h * D, kv_stride, first_k, seq_len);
        load_segments(t.k_segment, row_segments, first_k, seq_len);
        __syncthreads();
        softmax_grad<D>(t, first_q, first_k, seq_len, scale);

        /* dQ += dS K for this warp's queries (its own rows of dS: no block-wide wait) */
#pragma unroll
        for (int n = 0; n < D / 16; n++) {
#pragma unroll
            for (int kk = 0; kk < tile / 16; kk++) {
                rows_a ds;
                rows_b key;
                wmma::load_matrix_sync(ds, t.grad_score + warp * 16 * prob_stride + kk * 16, prob_stride);
                wmma::load_matrix_sync(key, t.k + kk * 16 * s::stride + n * 16, s::stride);
                wmma::mma_sync(grad_q_acc[n], ds, key, grad_q_acc[n]);
            }
        }
    }
    store_rows<D, bf16>(grad_q + first_row * q_stride + h * D, q_stride, grad_q_acc, scale, t.out, first_q,
                        seq_len);
}

/* grad[row, kv_h, d] = the sum of the partials of the query heads that read kv_h */
__global__ void attention_group_sum_kernel(bf16 *grad, const float *part, int rows, int n_heads, int n_kv_heads,
                                           int head_dim)
{
    int group = n_heads / n_kv_heads;
    size_t n = (size_t)rows * n_kv_heads * head_dim;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / ((size_t)n_kv_heads * head_dim);
        int kv_h = (int)(i / head_dim % n_kv_heads), d = (int)(i % head_dim);
        const float *first = part + (row * n_heads + (size_t)kv_h * group) * head_dim + d;
        float sum = 0.0f;
        for (int g = 0; g < group; g++)
            sum += first[(size_t)g * head_dim];
        grad[i] = __float2bfloat16(sum);
    }
}

template <int D>
int prepare(ft_cuda_context *context)
{
    size_t most = context->properties.sharedMemPerBlockOptin;
    if (shape_of<D>::backward_bytes > most || shape_of<D>::forward_bytes > most)
        return ft_error("GPU %d (%s) has %zu bytes of shared memory a block; attention with head_dim %d needs %zu: "
                        "use backend = cpu",
                        context->device, context->properties.name, most, D, shape_of<D>::backward_bytes);
    bool ok = cudaFuncSetAttribute(attention_forward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)shape_of<D>::forward_bytes) == cudaSuccess &&
              cudaFuncSetAttribute(attention_backward_kv_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)shape_of<D>::backward_bytes) == cudaSuccess &&
              cudaFuncSetAttribute(attention_backward_q_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)shape_of<D>::backward_bytes) == cudaSuccess;
    if (!ok)
        return ft_error("GPU %d (%s): cannot give attention %zu bytes of shared memory: %s", context->device,
                        context->properties.name, shape_of<D>::backward_bytes, cudaGetErrorString(cudaGetLastError()));
    return 0;
}

template <int D>
void forward(ft_cuda_context *context, void *out, float *logsumexp, const void *q, const void *k, const void *v,
             const int32_t *segments, const ft_attention_shape *shape)
{
    dim3 blocks((shape->seq_len + tile - 1) / tile, shape->n_heads, shape->batch_size);
    attention_forward_kernel<D><<<blocks, threads, shape_of<D>::forward_bytes, context->stream>>>(
        (bf16 *)out, logsumexp, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, segments, shape->seq_len,
        shape->n_heads, shape->n_kv_heads, 1.0f / sqrtf((float)D), shape->bidirectional);
    LAUNCH_CHECK(context, "attention_forward_kernel");
}

void forward_any(ft_cuda_context *context, void *out, float *logsumexp, const void *q, const void *k, const void *v,
                 const int32_t *segments, const ft_attention_shape *shape)
{
    size_t lanes = (size_t)shape->batch_size * shape->seq_len * shape->n_heads * 32;
    attention_forward_any_kernel<<<(unsigned)((lanes + FT_CUDA_THREADS - 1) / FT_CUDA_THREADS), FT_CUDA_THREADS, 0,
                                   context->stream>>>(
        (bf16 *)out, logsumexp, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, segments, shape->batch_size,
        shape->seq_len, shape->n_heads, shape->n_kv_heads, shape->head_dim, 1.0f / sqrtf((float)shape->head_dim));
    LAUNCH_CHECK(context, "attention_forward_any_kernel");
}

/* The forward kernel alone (head sizes that only the towers' forward runs). */
template <int D>
int prepare_forward(ft_cuda_context *context)
{
    (void)shape_of<D>::backward_bytes; /* no backward runs at this head size */
    size_t most = context->properties.sharedMemPerBlockOptin;
    if (shape_of<D>::forward_bytes > most ||
        cudaFuncSetAttribute(attention_forward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)shape_of<D>::forward_bytes) != cudaSuccess) {
        cudaGetLastError();
        return ft_error("GPU %d (%s): cannot give attention with head_dim %d %zu bytes of shared memory a block (it "
                        "has %zu): use backend = cpu",
                        context->device, context->properties.name, D, shape_of<D>::forward_bytes, most);
    }
    return 0;
}

template <int D>
void backward(ft_cuda_context *context, void *grad_q, float *const parts[2], const void *grad_out, const void *q,
              const void *k, const void *v, const float *logsumexp, const float *delta, const int32_t *segments,
              const ft_attention_shape *shape)
{
    dim3 blocks((shape->seq_len + tile - 1) / tile, shape->n_heads, shape->batch_size);
    float scale = 1.0f / sqrtf((float)D);
    attention_backward_kv_kernel<D><<<blocks, threads, shape_of<D>::backward_bytes, context->stream>>>(
        parts[0], parts[1], (const bf16 *)grad_out, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, logsumexp,
        delta, segments, shape->seq_len, shape->n_heads, shape->n_kv_heads, scale);
    LAUNCH_CHECK(context, "attention_backward_kv_kernel");
    attention_backward_q_kernel<D><<<blocks, threads, shape_of<D>::backward_bytes, context->stream>>>(
        (bf16 *)grad_q, (const bf16 *)grad_out, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, logsumexp, delta,
        segments, shape->seq_len, shape->n_heads, shape->n_kv_heads, scale);
    LAUNCH_CHECK(context, "attention_backward_q_kernel");
}

} // namespace

bool ft_cuda_attention_supports(int head_dim)
{
    return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128;
}

bool ft_cuda_bidirectional_attention_supports(int head_dim)
{
    return head_dim > 0 && head_dim <= any_head_most;
}

/* The head sizes whose bidirectional attention runs the tiled kernel. */
static bool tiled_bidirectional(int head_dim) { return ft_cuda_attention_supports(head_dim) || head_dim == 80; }

int ft_cuda_bidirectional_attention_prepare(ft_cuda_context *context, int head_dim)
{
    if (head_dim == 80)
        return prepare_forward<80>(context);
    return ft_cuda_attention_supports(head_dim) ? ft_cuda_attention_prepare(context, head_dim) : 0;
}

int ft_cuda_attention_prepare(ft_cuda_context *context, int head_dim)
{
    switch (head_dim) {
    case 16: return prepare<16>(context);
    case 32: return prepare<32>(context);
    case 64: return prepare<64>(context);
    case 128: return prepare<128>(context);
    }
    return ft_error("head_dim %d is not supported by the cuda backend's attention", head_dim);
}

void ft_cuda_attention_forward(ft_backend *self, void *out, float *logsumexp, const void *q, const void *k,
                               const void *v, const int32_t *segments, const ft_attention_shape *shape)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    if (shape->bidirectional && !tiled_bidirectional(shape->head_dim)) {
        if (shape->head_dim > any_head_most)
            ft_cuda_fail(context, __FILE__, __LINE__, "attention_forward", "unsupported head_dim");
        else
            forward_any(context, out, logsumexp, q, k, v, segments, shape);
        return;
    }
    if (shape->bidirectional && shape->head_dim == 80) {
        forward<80>(context, out, logsumexp, q, k, v, segments, shape);
        return;
    }
    switch (shape->head_dim) {
    case 16: forward<16>(context, out, logsumexp, q, k, v, segments, shape); break;
    case 32: forward<32>(context, out, logsumexp, q, k, v, segments, shape); break;
    case 64: forward<64>(context, out, logsumexp, q, k, v, segments, shape); break;
    case 128: forward<128>(context, out, logsumexp, q, k, v, segments, shape); break;
    default: ft_cuda_fail(context, __FILE__, __LINE__, "attention_forward", "unsupported head_dim");
    }
}

void ft_cuda_attention_backward(ft_backend *self, void *grad_q, void *grad_k, void *grad_v, const void *grad_out,
                                const void *out, const void *q, const void *k, const void *v,
                                const float *logsumexp, const int32_t *segments, const ft_attention_shape *shape)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    int rows = shape->batch_size * shape->seq_len, D = shape->head_dim;
    float *delta = context->scratch.attention_delta;
    float *const parts[2] = {context->scratch.attention_grad_k_part, context->scratch.attention_grad_v_part};
    size_t items = (size_t)rows * shape->n_heads;
    attention_delta_kernel<<<(unsigned)((items * 32 + FT_CUDA_THREADS - 1) / FT_CUDA_THREADS), FT_CUDA_THREADS, 0,
                             context->stream>>>(delta, (const bf16 *)grad_out, (const bf16 *)out, rows,
                                                shape->seq_len, shape->n_heads, D);
    LAUNCH_CHECK(context, "attention_delta_kernel");
    switch (D) {
    case 16: backward<16>(context, grad_q, parts, grad_out, q, k, v, logsumexp, delta, segments, shape); break;
    case 32: backward<32>(context, grad_q, parts, grad_out, q, k, v, logsumexp, delta, segments, shape); break;
    case 64: backward<64>(context, grad_q, parts, grad_out, q, k, v, logsumexp, delta, segments, shape); break;
    case 128: backward<128>(context, grad_q, parts, grad_out, q, k, v, logsumexp, delta, segments, shape); break;
    default: ft_cuda_fail(context, __FILE__, __LINE__, "attention_backward", "unsupported head_dim"); return;
    }
    size_t kv_elements = (size_t)rows * shape->n_kv_heads * D;
    void *grads[2] = {grad_k, grad_v};
    for (int i = 0; i < 2; i++) {
        attention_group_sum_kernel<<<ft_cuda_grid(kv_elements), FT_CUDA_THREADS, 0, context->stream>>>(
            (bf16 *)grads[i], parts[i], rows, shape->n_heads, shape->n_kv_heads, D);
        LAUNCH_CHECK(context, "attention_group_sum_kernel");
    }
}
