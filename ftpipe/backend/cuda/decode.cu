/* decode: the generation ops: gathering and scattering rows (the KV cache's
 * bookkeeping), and attention of one new query per sequence against its cache.
 *
 * Decode attention is memory-bound: each sequence's cache must be read once.
 * A block takes one sequence, one key/value head and up to eight of the query
 * heads that read it (GQA), so each K and V row is read from device memory once
 * for all of them, through shared-memory tiles of 64 positions, with an online
 * softmax in fp32. When batch x key/value heads gives too few blocks to fill
 * the GPU, the cache length is split among blocks too (flash-decoding): each
 * split leaves its unnormalised output, running max and sum in scratch, and a
 * second kernel combines the splits. */
#include <math.h>

#include "cuda_internal.h"

namespace {

constexpr int tile = 64;            /* cache positions a block holds in shared memory at once */
constexpr int threads = 128;
constexpr int warps = threads / 32;
constexpr int heads_per_block = 8;  /* query heads of one key/value group that a block serves */

template <int D>
struct decode_shape {
    static constexpr int stride = D + 8;            /* bf16: a K or V row, padded against bank conflicts */
    static constexpr int head_lanes = threads / D;  /* threads that share an output dimension */
    static constexpr int per_thread = (heads_per_block + head_lanes - 1) / head_lanes;
};

/* Where a block's work lies. */
struct decode_args {
    const bf16 *q, *k_cache, *v_cache;
    const int32_t *lengths;
    bf16 *out;             /* written directly when there is one split */
    float *part_out;       /* [batch, n_heads, splits, D] unnormalised, else */
    float *part_stats;     /* [batch, n_heads, splits, 2]: running max, sum */
    int max_len, n_heads, n_kv_heads, splits, split_len;
    float scale;
};

template <int D>
__global__ void __launch_bounds__(threads) decode_kernel(decode_args a)
{
    typedef decode_shape<D> S;
    __shared__ __align__(16) bf16 k_tile[tile * S::stride];
    __shared__ __align__(16) bf16 v_tile[tile * S::stride];
    __shared__ __align__(16) float q_rows[heads_per_block * D];
    __shared__ float probs[heads_per_block * tile];
    __shared__ float row_max[heads_per_block], row_sum[heads_per_block], rescale[heads_per_block];

    const int split = blockIdx.x, b = blockIdx.z, tid = threadIdx.x;
    const int group = a.n_heads / a.n_kv_heads, chunks = (group + heads_per_block - 1) / heads_per_block;
    const int kv_head = blockIdx.y / chunks, first_head = kv_head * group + blockIdx.y % chunks * heads_per_block;
    const int n_group = min(heads_per_block, kv_head * group + group - first_head);
    const int length = a.lengths[b];
    const int begin = split * a.split_len, end = min(length, begin + a.split_len);

    for (int i = tid; i < n_group * D; i += threads)
        q_rows[i] = __bfloat162float(a.q[((size_t)b * a.n_heads + first_head) * D + i]) * a.scale;
    if (tid < heads_per_block) {
        row_max[tid] = -INFINITY;
        row_sum[tid] = 0.0f;
    }
    float acc[S::per_thread];
#pragma unroll
    for (int j = 0; j < S::per_thread; j++)
        acc[j] = 0.0f;
    const int d = tid % D, lane_head = tid / D;
    const size_t row_stride = (size_t)a.n_kv_heads * D;
    const bf16 *k_base = a.k_cache + (size_t)b * a.max_len * row_stride + (size_t)kv_head * D;
    const bf16 *v_base = a.v_cache + (size_t)b * a.max_len * row_stride + (size_t)kv_head * D;

    for (int first = begin; first < end; first += tile) {
        const int valid = min(tile, end - first);
        __syncthreads(); /* the last tile's readers are done */
#pragma unroll /* every load of the tile in flight before the first store */
        for (int i = tid; i < tile * (D / 8); i += threads) {
            int t = i / (D / 8), c = i % (D / 8) * 8;
            uint4 kv = {0, 0, 0, 0}, vv = {0, 0, 0, 0};
            if (t < valid) {
                kv = *(const uint4 *)(k_base + (size_t)(first + t) * row_stride + c);
                vv = *(const uint4 *)(v_base + (size_t)(first + t) * row_stride + c);
            }
            *(uint4 *)(k_tile + t * S::stride + c) = kv;
            *(uint4 *)(v_tile + t * S::stride + c) = vv;
        }
        __syncthreads();
        for (int i = tid; i < n_group * tile; i += threads) {
            int g = i / tile, t = i % tile;
            float score = -INFINITY;
            if (t < valid) {
                score = 0.0f;
                const float *qg = q_rows + g * D;
#pragma unroll
                for (int c = 0; c < D; c += 8) {
                    uint4 packed = *(const uint4 *)(k_tile + t * S::stride + c);
                    const __nv_bfloat162 *pairs = (const __nv_bfloat162 *)&packed;
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        float2 kf = __bfloat1622float2(pairs[e]);
                        score += qg[c + 2 * e] * kf.x + qg[c + 2 * e + 1] * kf.y;
                    }
                }
            }
            probs[i] = score;
        }
        __syncthreads();
        /* the online softmax: a warp per head */
        for (int g = tid / 32; g < n_group; g += warps) {
            int lane = tid % 32;
            float s0 = probs[g * tile + lane], s1 = probs[g * tile + lane + 32];
            float old_max = row_max[g], new_max = fmaxf(old_max, ft_warp_max(fmaxf(s0, s1)));
            float p0 = __expf(s0 - new_max), p1 = __expf(s1 - new_max);
            probs[g * tile + lane] = p0;
            probs[g * tile + lane + 32] = p1;
            float sum = ft_warp_sum(p0 + p1);
            __syncwarp();
            if (lane == 0) {
                float factor = __expf(old_max - new_max);
                rescale[g] = factor;
                row_sum[g] = row_sum[g] * factor + sum;
                row_max[g] = new_max;
            }
        }
        __syncthreads();
#pragma unroll
        for (int j = 0; j < S::per_thread; j++) {
            int g = lane_head + j * S::head_lanes;
            if (g < n_group) {
                float total = acc[j] * rescale[g];
                const float *pg = probs + g * tile;
                for (int t = 0; t < valid; t++)
                    total += pg[t] * __bfloat162float(v_tile[t * S::stride + d]);
                acc[j] = total;
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < S::per_thread; j++) {
        int g = lane_head + j * S::head_lanes;
        if (g >= n_group)
            continue;
        size_t head = (size_t)b * a.n_heads + first_head + g;
        if (a.splits == 1) {
            float sum = row_sum[g];
            a.out[head * D + d] = __float2bfloat16(sum > 0.0f ? acc[j] / sum : 0.0f);
        } else {
            size_t part = head * a.splits + split;
            a.part_out[part * D + d] = acc[j];
            if (d == 0) {
                a.part_stats[part * 2] = row_max[g];
                a.part_stats[part * 2 + 1] = row_sum[g];
            }
        }
    }
}

/* One block per (sequence, query head): the splits' outputs rescaled to their
 * common max and divided by the common sum. */
__global__ void combine_kernel(bf16 *out, const float *part_out, const float *part_stats, int splits, int D)
{
    size_t head = blockIdx.x;
    const float *stats = part_stats + head * splits * 2;
    float top = -INFINITY;
    for (int s = 0; s < splits; s++)
        top = fmaxf(top, stats[s * 2]);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float total = 0.0f, sum = 0.0f;
        for (int s = 0; s < splits; s++) {
            float weight = stats[s * 2 + 1] > 0.0f ? __expf(stats[s * 2] - top) : 0.0f;
            total += weight * part_out[(head * splits + s) * D + d];
            sum += weight * stats[s * 2 + 1];
        }
        out[head * D + d] = __float2bfloat16(sum > 0.0f ? total / sum : 0.0f);
    }
}

template <typename T>
__global__ void move_rows_kernel(T *dst, const T *src, const int32_t *index, int rows, int width, bool scatter)
{
    size_t n = (size_t)rows * width;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / width, c = i % width, other = (size_t)index[r] * width + c;
        if (scatter)
            dst[other] = src[i];
        else
            dst[i] = src[other];
    }
}

/* Rows of bf16, 16 bytes at a time where widths and addresses allow. */
void move_rows(ft_backend *self, void *dst, const void *src, const int32_t *index, int rows, int width,
               bool scatter)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    size_t bytes = (size_t)width * sizeof(bf16);
    if (bytes % 16 == 0 && ((uintptr_t)dst | (uintptr_t)src) % 16 == 0) {
        int units = (int)(bytes / 16);
        size_t n = (size_t)rows * units;
        move_rows_kernel<uint4><<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>(
            (uint4 *)dst, (const uint4 *)src, index, rows, units, scatter);
    } else {
        size_t n = (size_t)rows * width;
        move_rows_kernel<bf16><<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>(
            (bf16 *)dst, (const bf16 *)src, index, rows, width, scatter);
    }
    LAUNCH_CHECK(context, "move_rows_kernel");
}

/* Splits of the cache length: enough blocks to fill every multiprocessor four
 * times over (loads of more blocks in flight hide the memory's latency), each
 * split at least a tile long, and no more than the scratch holds. */
int split_count(const ft_cuda_context *context, int batch, int n_heads, int blocks, int max_len, int head_dim)
{
    const ft_backend_limits *limits = &context->limits;
    size_t capacity = context->scratch.attention_grad_k_part && context->scratch.attention_grad_v_part
                          ? (size_t)limits->max_rows * limits->max_heads * limits->head_dim
                          : 0;
    size_t per_split = (size_t)batch * n_heads * head_dim;
    int most = (max_len + tile - 1) / tile;
    int wanted = (4 * context->properties.multiProcessorCount + blocks - 1) / blocks;
    int splits = wanted < most ? wanted : most;
    if ((size_t)splits * per_split > capacity)
        splits = (int)(capacity / per_split);
    return splits < 1 ? 1 : splits;
}

constexpr int argmax_threads = 1024;

/* The better of two candidates: the larger value, the lower index on a tie. */
__device__ bool better(float value, int index, float best_value, int best_index)
{
    return value > best_value || (value == best_value && index < best_index);
}

/* One block per row: each thread scans a strided slice in increasing order (so
 * the first of equal values stays), then the block reduces. */
__global__ void __launch_bounds__(argmax_threads) argmax_kernel(int32_t *out, const bf16 *x, int width)
{
    __shared__ float values[argmax_threads];
    __shared__ int indices[argmax_threads];
    const bf16 *row = x + (size_t)blockIdx.x * width;
    float best = -INFINITY;
    int best_index = width;
    for (int i = threadIdx.x; i < width; i += argmax_threads) {
        float v = __bfloat162float(row[i]);
        if (better(v, i, best, best_index))
            best = v, best_index = i;
    }
    values[threadIdx.x] = best;
    indices[threadIdx.x] = best_index;
    __syncthreads();
    for (int half = argmax_threads / 2; half > 0; half /= 2) {
        if (threadIdx.x < half &&
            better(values[threadIdx.x + half], indices[threadIdx.x + half], values[threadIdx.x], indices[threadIdx.x])) {
            values[threadIdx.x] = values[threadIdx.x + half];
            indices[threadIdx.x] = indices[threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = indices[0] < width ? indices[0] : 0; /* a row of NaNs: id 0, as the host's scan gives */
}

template <int D>
void launch_decode(ft_cuda_context *context, decode_args args, dim3 grid)
{
    decode_kernel<D><<<grid, threads, 0, context->stream>>>(args);
}

} // namespace

void ft_cuda_argmax_rows(ft_backend *self, int32_t *out, const void *x, int rows, int width)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    if (rows < 1)
        return;
    argmax_kernel<<<rows, argmax_threads, 0, context->stream>>>(out, (const bf16 *)x, width);
    LAUNCH_CHECK(context, "argmax_kernel");
}

void ft_cuda_gather_rows(ft_backend *self, void *dst, const void *src, const int32_t *index, int rows, int width)
{
    move_rows(self, dst, src, index, rows, width, false);
}

void ft_cuda_scatter_rows(ft_backend *self, void *dst, const void *src, const int32_t *index, int rows, int width)
{
    move_rows(self, dst, src, index, rows, width, true);
}

void ft_cuda_attention_decode(ft_backend *self, void *out, const void *q, const void *k_cache, const void *v_cache,
                              const int32_t *lengths, int batch, int max_len, int n_heads, int n_kv_heads,
                              int head_dim)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    if (((uintptr_t)k_cache | (uintptr_t)v_cache) % 16 != 0) {
        ft_cuda_fail(context, __FILE__, __LINE__, "attention_decode", "the KV cache is not 16-byte aligned");
        return;
    }
    int group = n_heads / n_kv_heads, chunks = (group + heads_per_block - 1) / heads_per_block;
    int blocks = batch * n_kv_heads * chunks;
    int splits = split_count(context, batch, n_heads, blocks, max_len, head_dim);
    int split_len = ((max_len + splits - 1) / splits + tile - 1) / tile * tile;
    splits = (max_len + split_len - 1) / split_len;
    decode_args args = {(const bf16 *)q, (const bf16 *)k_cache, (const bf16 *)v_cache, lengths, (bf16 *)out,
                        context->scratch.attention_grad_k_part, context->scratch.attention_grad_v_part, max_len, n_heads,
                        n_kv_heads, splits, split_len, 1.0f / sqrtf((float)head_dim)};
    dim3 grid(splits, n_kv_heads * chunks, batch);
    switch (head_dim) {
    case 16: launch_decode<16>(context, args, grid); break;
    case 32: launch_decode<32>(context, args, grid); break;
    case 64: launch_decode<64>(context, args, grid); break;
    case 128: launch_decode<128>(context, args, grid); break;
    default:
        ft_cuda_fail(context, __FILE__, __LINE__, "attention_decode", "head_dim is not 16, 32, 64 or 128");
        return;
    }
    LAUNCH_CHECK(context, "decode_kernel");
    if (splits > 1) {
        combine_kernel<<<batch * n_heads, head_dim < 128 ? head_dim : 128, 0, context->stream>>>(
            (bf16 *)out, context->scratch.attention_grad_k_part, context->scratch.attention_grad_v_part, splits, head_dim);
        LAUNCH_CHECK(context, "combine_kernel");
    }
}
