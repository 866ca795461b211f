/* cross_entropy: the loss and its gradient over a chunk of bf16 logits, one
 * block of 1024 threads per row: the row's max, then the sum of exponentials
 * (two passes: one exponential per element), then the gradient is written over
 * the logits in place. Together with the model's chunked lm_head, the
 * [rows, vocab] logits never exist whole. */
#include <math.h>

#include "cuda_internal.h"

static const int threads = 1024;

/* The max or the sum over the block, every thread getting it. */
template <bool Max>
__device__ float block_reduce(float value)
{
    __shared__ float partial[32];
    value = Max ? ft_warp_max(value) : ft_warp_sum(value);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0)
        partial[warp] = value;
    __syncthreads();
    value = lane < (int)(blockDim.x / 32) ? partial[lane] : (Max ? -INFINITY : 0.0f);
    value = Max ? ft_warp_max(value) : ft_warp_sum(value);
    __syncthreads(); /* partial[] is reused by the next call */
    return value;
}

__device__ float row_logsumexp(const bf16 *row, int vocab)
{
    float max = -INFINITY;
    for (int c = threadIdx.x; c < vocab; c += blockDim.x)
        max = fmaxf(max, __bfloat162float(row[c]));
    max = block_reduce<true>(max);
    float sum = 0.0f;
    for (int c = threadIdx.x; c < vocab; c += blockDim.x)
        sum += expf(__bfloat162float(row[c]) - max);
    return max + logf(block_reduce<false>(sum));
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
    cross_entropy_forward_kernel<<<rows, threads, 0, context->stream>>>(losses, (const bf16 *)logits, targets, vocab);
    LAUNCH_CHECK(context, "cross_entropy_forward_kernel");
}

void ft_cuda_cross_entropy_backward(ft_backend *self, void *grad_logits, const void *logits,
                                    const int32_t *targets, int rows, int vocab, float grad_scale)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    cross_entropy_backward_kernel<<<rows, threads, 0, context->stream>>>((bf16 *)grad_logits, (const bf16 *)logits,
                                                                         targets, vocab, grad_scale);
    LAUNCH_CHECK(context, "cross_entropy_backward_kernel");
}
