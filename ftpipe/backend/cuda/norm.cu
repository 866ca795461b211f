/* norm: RMSNorm forward (alone, or fused with the residual add before it) and
 * backward, and the vision towers' LayerNorm (forward only), one warp per row,
 * sums in fp32. The weight's gradient is a sum over
 * rows, taken in fixed chunks of rows and then over the chunks in order (no
 * atomics), so a step gives the same bits every time. */
#include "cuda_internal.h"

static const int rows_per_block = FT_CUDA_THREADS / 32;

static inline unsigned blocks_for_rows(int rows) { return (unsigned)((rows + rows_per_block - 1) / rows_per_block); }

__device__ __forceinline__ float load(const bf16 *p, size_t i) { return __bfloat162float(p[i]); }

/* With `b`: sum = a + b (stored as bf16, which is what gets normalised); else the
 * row of `a` is normalised as it is. */
template <bool Add>
__global__ void rmsnorm_forward_kernel(bf16 *sum, bf16 *out, float *rstd, const bf16 *a, const bf16 *b,
                                       const bf16 *weight, int rows, int dim, float eps)
{
    int row = blockIdx.x * rows_per_block + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows)
        return;
    size_t first = (size_t)row * dim;
    const bf16 *x = Add ? sum : a;
    float squares = 0.0f;
    for (int c = lane; c < dim; c += 32) {
        float value;
        if (Add) {
            bf16 rounded = __float2bfloat16(load(a, first + c) + load(b, first + c));
            sum[first + c] = rounded;
            value = __bfloat162float(rounded);
        } else {
            value = load(a, first + c);
        }
        squares += value * value;
    }
    squares = ft_warp_sum(squares);
    float s = 1.0f / sqrtf(squares / (float)dim + eps);
    if (lane == 0 && rstd)
        rstd[row] = s;
    for (int c = lane; c < dim; c += 32)
        out[first + c] = __float2bfloat16(load(weight, c) * (load(x, first + c) * s));
}

/* The mean first, then the variance around it (two passes over the row, which
 * the warp's loads keep in cache), so a large mean costs no precision. */
__global__ void layernorm_forward_kernel(bf16 *out, const bf16 *x, const bf16 *weight, const bf16 *bias, int rows,
                                         int dim, float eps)
{
    int row = blockIdx.x * rows_per_block + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows)
        return;
    size_t first = (size_t)row * dim;
    float sum = 0.0f;
    for (int c = lane; c < dim; c += 32)
        sum += load(x, first + c);
    float mean = ft_warp_sum(sum) / (float)dim, squares = 0.0f;
    for (int c = lane; c < dim; c += 32) {
        float centred = load(x, first + c) - mean;
        squares += centred * centred;
    }
    float s = rsqrtf(ft_warp_sum(squares) / (float)dim + eps);
    for (int c = lane; c < dim; c += 32) {
        float value = (load(x, first + c) - mean) * s * load(weight, c);
        out[first + c] = __float2bfloat16(bias ? value + load(bias, c) : value);
    }
}

void ft_cuda_layernorm_forward(ft_backend *self, void *out, const void *x, const void *weight, const void *bias,
                               int rows, int dim, float eps)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    layernorm_forward_kernel<<<blocks_for_rows(rows), FT_CUDA_THREADS, 0, context->stream>>>(
        (bf16 *)out, (const bf16 *)x, (const bf16 *)weight, (const bf16 *)bias, rows, dim, eps);
    LAUNCH_CHECK(context, "layernorm_forward_kernel");
}

void ft_cuda_rmsnorm_forward(ft_backend *self, void *out, float *rstd, const void *x, const void *weight, int rows,
                             int dim, float eps)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    rmsnorm_forward_kernel<false><<<blocks_for_rows(rows), FT_CUDA_THREADS, 0, context->stream>>>(
        NULL, (bf16 *)out, rstd, (const bf16 *)x, NULL, (const bf16 *)weight, rows, dim, eps);
    LAUNCH_CHECK(context, "rmsnorm_forward_kernel");
}

void ft_cuda_add_rmsnorm_forward(ft_backend *self, void *sum, void *out, float *rstd, const void *a, const void *b,
                                 const void *weight, int rows, int dim, float eps)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    rmsnorm_forward_kernel<true><<<blocks_for_rows(rows), FT_CUDA_THREADS, 0, context->stream>>>(
        (bf16 *)sum, (bf16 *)out, rstd, (const bf16 *)a, (const bf16 *)b, (const bf16 *)weight, rows, dim, eps);
    LAUNCH_CHECK(context, "add_rmsnorm_forward_kernel");
}

/* grad_x = rstd (g w - n mean(g w n)), n = x rstd */
__global__ void rmsnorm_backward_kernel(bf16 *grad_x, bool accumulate, const bf16 *grad_out, const bf16 *x,
                                        const bf16 *weight, const float *rstd, int rows, int dim)
{
    int row = blockIdx.x * rows_per_block + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows)
        return;
    size_t first = (size_t)row * dim;
    float s = rstd[row], dot = 0.0f;
    for (int c = lane; c < dim; c += 32)
        dot += load(grad_out, first + c) * load(weight, c) * (load(x, first + c) * s);
    float mean = ft_warp_sum(dot) / (float)dim;
    for (int c = lane; c < dim; c += 32) {
        float g = load(grad_out, first + c), normalized = load(x, first + c) * s;
        float value = s * (g * load(weight, c) - normalized * mean);
        if (accumulate)
            value += load(grad_x, first + c);
        grad_x[first + c] = __float2bfloat16(value);
    }
}

/* parts[chunk, c] = the sum over the chunk's rows, in order, of g n: blockIdx.y is the
 * chunk, each thread one column (neighbouring threads read neighbouring bytes). */
__global__ void rmsnorm_weight_parts_kernel(float *parts, const bf16 *grad_out, const bf16 *x, const float *rstd,
                                            int rows, int dim)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= dim)
        return;
    int per_chunk = (rows + FT_NORM_ROW_CHUNKS - 1) / FT_NORM_ROW_CHUNKS;
    int first = blockIdx.y * per_chunk, last = min(rows, first + per_chunk);
    float sum = 0.0f;
    for (int r = first; r < last; r++) {
        size_t i = (size_t)r * dim + c;
        sum += load(grad_out, i) * (load(x, i) * rstd[r]);
    }
    parts[(size_t)blockIdx.y * dim + c] = sum;
}

__global__ void rmsnorm_weight_sum_kernel(float *grad_weight, const float *parts, int dim)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= dim)
        return;
    float sum = 0.0f;
    for (int chunk = 0; chunk < FT_NORM_ROW_CHUNKS; chunk++)
        sum += parts[(size_t)chunk * dim + c];
    grad_weight[c] += sum;
}

void ft_cuda_rmsnorm_backward(ft_backend *self, void *grad_x, bool accumulate, float *grad_weight,
                              const void *grad_out, const void *x, const void *weight, const float *rstd, int rows,
                              int dim)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    rmsnorm_backward_kernel<<<blocks_for_rows(rows), FT_CUDA_THREADS, 0, context->stream>>>(
        (bf16 *)grad_x, accumulate, (const bf16 *)grad_out, (const bf16 *)x, (const bf16 *)weight, rstd, rows, dim);
    LAUNCH_CHECK(context, "rmsnorm_backward_kernel");
    if (!grad_weight)
        return;
    unsigned column_blocks = (unsigned)((dim + FT_CUDA_THREADS - 1) / FT_CUDA_THREADS);
    float *parts = context->scratch.norm_weight_parts;
    rmsnorm_weight_parts_kernel<<<dim3(column_blocks, FT_NORM_ROW_CHUNKS), FT_CUDA_THREADS, 0, context->stream>>>(
        parts, (const bf16 *)grad_out, (const bf16 *)x, rstd, rows, dim);
    LAUNCH_CHECK(context, "rmsnorm_weight_parts_kernel");
    rmsnorm_weight_sum_kernel<<<column_blocks, FT_CUDA_THREADS, 0, context->stream>>>(grad_weight, parts, dim);
    LAUNCH_CHECK(context, "rmsnorm_weight_sum_kernel");
}
