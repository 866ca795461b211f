/* cross_entropy: the loss and its gradient over a chunk of bf16 logits, one
 * block of 1024 threads per row. The row's log-sum-exp comes from one read of
 * it (a running max and a sum rescaled as the max grows), then in training a
 * second read writes the gradient over the logits in place: two reads and a
 * write per logit for loss and gradient together. Together with the model's
 * chunked lm_head, the [rows, vocab] logits never exist whole. */
#include <math.h>

#include "cuda_internal.h"

static const int threads = 1024;

/* A running log-sum-exp: sum of exp(x - max) over the values seen. */
struct running_sum {
    float max, sum;
};

__device__ __forceinline__ running_sum merge(running_sum a, running_sum b)
{
    float max = fmaxf(a.max, b.max);
    if (max == -INFINITY)
        return a;
    return {max, a.sum * expf(a.max - max) + b.sum * expf(b.max - max)};
}

__device__ __forceinline__ void add(running_sum *s, float x)
{
    if (x > s->max) {
        s->sum = s->sum * expf(s->max - x) + 1.0f;
        s->max = x;
    } else {
        s->sum += expf(x - s->max);
    }
}

/* Eight bf16 of a 16-byte load, as floats. */
__device__ __forceinline__ void unpack(const uint4 &v, float out[8])
{
    const bf16 *h = (const bf16 *)&v;
#pragma unroll
    for (int i = 0; i < 8; i++)
        out[i] = __bfloat162float(h[i]);
}

/* log(sum(exp(row))) for the whole block. */
__device__ float row_logsumexp(const bf16 *row, int vocab, bool vectors)
{
    __shared__ running_sum partial[32];
    running_sum s = {-INFINITY, 0.0f};
    int head = vectors ? vocab / 8 * 8 : 0;
    for (int c = threadIdx.x * 8; c < head; c += blockDim.x * 8) {
        float x[8];
        unpack(*(const uint4 *)(row + c), x);
#pragma unroll
        for (int i = 0; i < 8; i++)
            add(&s, x[i]);
    }
    for (int c = head + threadIdx.x; c < vocab; c += blockDim.x)
        add(&s, __bfloat162float(row[c]));
    for (int offset = 16; offset > 0; offset >>= 1) {
        running_sum other = {__shfl_xor_sync(0xffffffffu, s.max, offset),
                             __shfl_xor_sync(0xffffffffu, s.sum, offset)};
        s = merge(s, other);
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0)
        partial[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = lane < (int)(blockDim.x / 32) ? partial[lane] : running_sum{-INFINITY, 0.0f};
        for (int offset = 16; offset > 0; offset >>= 1) {
            running_sum other = {__shfl_xor_sync(0xffffffffu, s.max, offset),
                                 __shfl_xor_sync(0xffffffffu, s.sum, offset)};
            s = merge(s, other);
        }
        if (lane == 0)
            partial[0] = s;
    }
    __syncthreads();
    return partial[0].max + logf(partial[0].sum);
}

__global__ void cross_entropy_kernel(float *losses, bf16 *logits, const int32_t *targets, int vocab,
                                     bool backward, float grad_scale)
{
    int r = blockIdx.x, target = targets[r];
    bf16 *row = logits + (size_t)r * vocab;
    bool vectors = vocab % 8 == 0; /* rows then start on 16 bytes too */
    if (target < 0) {
        if (threadIdx.x == 0)
            losses[r] = 0.0f;
        if (backward)
            for (int c = threadIdx.x; c < vocab; c += blockDim.x)
                row[c] = __float2bfloat16(0.0f);
        return;
    }
    float lse = row_logsumexp(row, vocab, vectors);
    if (threadIdx.x == 0)
        losses[r] = lse - __bfloat162float(row[target]);
    if (!backward)
        return;
    __syncthreads(); /* the target's logit is read above before it is overwritten */
    int head = vectors ? vocab / 8 * 8 : 0;
    for (int c = threadIdx.x * 8; c < head; c += blockDim.x * 8) {
        float x[8];
        unpack(*(const uint4 *)(row + c), x);
        uint4 packed;
        bf16 *out = (bf16 *)&packed;
#pragma unroll
        for (int i = 0; i < 8; i++)
            out[i] = __float2bfloat16((expf(x[i] - lse) - (c + i == target ? 1.0f : 0.0f)) * grad_scale);
        *(uint4 *)(row + c) = packed;
    }
    for (int c = head + threadIdx.x; c < vocab; c += blockDim.x) {
        float p = expf(__bfloat162float(row[c]) - lse);
        row[c] = __float2bfloat16((p - (c == target ? 1.0f : 0.0f)) * grad_scale);
    }
}

void ft_cuda_cross_entropy(ft_backend *self, float *losses, void *logits, const int32_t *targets, int rows,
                           int vocab, bool backward, float grad_scale)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    cross_entropy_kernel<<<rows, threads, 0, context->stream>>>(losses, (bf16 *)logits, targets, vocab, backward,
                                                                grad_scale);
    LAUNCH_CHECK(context, "cross_entropy_kernel");
}
