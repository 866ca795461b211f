/* cross_entropy: the loss and its gradient over a chunk of bf16 logits, one
 * block per row: the row's logsumexp comes from an online (max, sum) reduction
 * in fp32, then the gradient is written over the logits in place. Together with
 * the model's chunked lm_head, the [rows, vocab] logits never exist whole. */
#include <math.h>

#include "cuda_internal.h"

struct max_sum {
    float max, sum; /* sum of exp(x - max) */
};

__device__ __forceinline__ max_sum combine(max_sum a, max_sum b)
{
    if (a.max == -INFINITY)
        return b;
    if (b.max == -INFINITY)
        return a;
    float max = fmaxf(a.max, b.max);
    return {max, a.sum * expf(a.max - max) + b.sum * expf(b.max - max)};
}

/* The logsumexp of one row, every thread of the block getting it. */
__device__ float row_logsumexp(const bf16 *row, int vocab)
{
    __shared__ max_sum warps[FT_CUDA_THREADS / 32];
    max_sum mine = {-INFINITY, 0.0f};
    for (int c = threadIdx.x; c < vocab; c += blockDim.x)
        mine = combine(mine, {__bfloat162float(row[c]), 1.0f});
    for (int offset = 16; offset > 0; offset >>= 1) {
        max_sum other = {__shfl_xor_sync(0xffffffffu, mine.max, offset),
                         __shfl_xor_sync(0xffffffffu, mine.sum, offset)};
        mine = combine(mine, other);
    }
    if (threadIdx.x % 32 == 0)
        warps[threadIdx.x / 32] = mine;
    __syncthreads();
    max_sum total = warps[0];
    for (int w = 1; w < FT_CUDA_THREADS / 32; w++)
        total = combine(total, warps[w]);
    __syncthreads(); /* warps[] is reused by the next call */
    return total.max + logf(total.sum);
}

__global__ void cross_entropy_forward_kernel(float *losses, const bf16 *logits, const int32_t *targets, int vocab)
{
    int r = blockIdx.x, target = targets[r];
    const bf16 *row = logits + (size_t)r * vocab;
    if (target < 0) {
        if (threadIdx.x == 0)
            losses[r] = 0.0f;
        return;
    }
    float lse = row_logsumexp(row, vocab);
    if (threadIdx.x == 0)
        losses[r] = lse - __bfloat162float(row[target]);
}

__global__ void cross_entropy_backward_kernel(bf16 *grad_logits, const bf16 *logits, const int32_t *targets,
                                              int vocab, float grad_scale)
{
    int r = blockIdx.x, target = targets[r];
    const bf16 *row = logits + (size_t)r * vocab;
    bf16 *grad = grad_logits + (size_t)r * vocab;
    if (target < 0) {
        for (int c = threadIdx.x; c < vocab; c += blockDim.x)
            grad[c] = __float2bfloat16(0.0f);
        return;
    }
    float lse = row_logsumexp(row, vocab);
    for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
        float p = expf(__bfloat162float(row[c]) - lse);
        grad[c] = __float2bfloat16((p - (c == target ? 1.0f : 0.0f)) * grad_scale);
    }
}

void ft_cuda_cross_entropy_forward(ft_backend *self, float *losses, const void *logits, const int32_t *targets,
                                   int rows, int vocab)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    cross_entropy_forward_kernel<<<rows, FT_CUDA_THREADS, 0, context->stream>>>(losses, (const bf16 *)logits,
                                                                                 targets, vocab);
    LAUNCH_CHECK(context, "cross_entropy_forward_kernel");
}

void ft_cuda_cross_entropy_backward(ft_backend *self, void *grad_logits, const void *logits,
                                    const int32_t *targets, int rows, int vocab, float grad_scale)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    cross_entropy_backward_kernel<<<rows, FT_CUDA_THREADS, 0, context->stream>>>(
        (bf16 *)grad_logits, (const bf16 *)logits, targets, vocab, grad_scale);
    LAUNCH_CHECK(context, "cross_entropy_backward_kernel");
}
