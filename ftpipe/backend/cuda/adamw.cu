/* adamw: torch.optim.AdamW's update on float tensors, in the cpu backend's
 * order of operations and roundings, so that it gives the host's bits (the
 * offloaded AdamW's too); the sum of squares (for clipping) and scaling. The sum
 * is added up in a fixed order (block partials, then one block over them), so
 * the same tensor always gives the same bits. */
#include <math.h>

#include "cuda_internal.h"

struct adamw_constants {
    float decay, one_minus_beta1, beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps;
};

__global__ void adamw_kernel(float *param, const float *grad, float *exp_avg, float *exp_avg_sq, size_t n,
                             adamw_constants k)
{
    /* each operation rounded on its own (no fused multiply-add), as the host computes it */
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = grad[i], p = __fmul_rn(param[i], k.decay);
        float m = __fadd_rn(exp_avg[i], __fmul_rn(__fsub_rn(g, exp_avg[i]), k.one_minus_beta1));
        float v = __fadd_rn(__fmul_rn(exp_avg_sq[i], k.beta2), __fmul_rn(k.one_minus_beta2, __fmul_rn(g, g)));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), k.bias_correction2_sqrt), k.eps);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        param[i] = __fsub_rn(p, __fmul_rn(k.step_size, __fdiv_rn(m, denom)));
    }
}

void ft_cuda_adamw(ft_backend *self, float *param, const float *grad, float *exp_avg, float *exp_avg_sq, size_t n,
                   const ft_adamw_hyper *hyper)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    adamw_constants k;
    k.decay = (float)(1.0 - hyper->learning_rate * hyper->weight_decay);
    k.one_minus_beta1 = (float)(1.0 - hyper->beta1);
    k.beta2 = (float)hyper->beta2;
    k.one_minus_beta2 = (float)(1.0 - hyper->beta2);
    double bias_correction1 = 1.0 - pow(hyper->beta1, (double)hyper->step);
    double bias_correction2 = 1.0 - pow(hyper->beta2, (double)hyper->step);
    k.step_size = (float)(hyper->learning_rate / bias_correction1);
    k.bias_correction2_sqrt = (float)sqrt(bias_correction2);
    k.eps = (float)hyper->eps;
    adamw_kernel<<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>(param, grad, exp_avg, exp_avg_sq, n, k);
    LAUNCH_CHECK(context, "adamw_kernel");
}

/* The block's threads' values added in a fixed tree; thread 0 gets the total. */
__device__ double block_sum(double mine)
{
    __shared__ double warps[FT_CUDA_THREADS / 32];
    for (int offset = 16; offset > 0; offset >>= 1)
        mine += __shfl_xor_sync(0xffffffffu, mine, offset);
    if (threadIdx.x % 32 == 0)
        warps[threadIdx.x / 32] = mine;
    __syncthreads();
    double total = 0.0;
    if (threadIdx.x == 0)
        for (int w = 0; w < FT_CUDA_THREADS / 32; w++)
            total += warps[w];
    return total;
}

/* parts[block]: the block's share; the grid stride fixes which elements each thread takes. */
__global__ void sum_squares_kernel(double *parts, const float *x, size_t n)
{
    double mine = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        mine += (double)x[i] * x[i];
    double total = block_sum(mine);
    if (threadIdx.x == 0)
        parts[blockIdx.x] = total;
}

__global__ void sum_parts_kernel(double *sum, const double *parts, unsigned n_parts)
{
    double mine = 0.0;
    for (unsigned i = threadIdx.x; i < n_parts; i += blockDim.x)
        mine += parts[i];
    double total = block_sum(mine);
    if (threadIdx.x == 0)
        *sum = total;
}

/* total += the tensors' sums, in tensor order */
__global__ void add_in_order_kernel(double *total, const double *sums, size_t n)
{
    double sum = *total;
    for (size_t i = 0; i < n; i++)
        sum += sums[i];
    *total = sum;
}

double ft_cuda_sum_squares(ft_backend *self, const float *const *xs, const size_t *counts, size_t n_tensors)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    double *total = context->scratch.sum_parts, *parts = total + 1, *sums = context->scratch.tensor_sums;
    double result = 0.0;
    CUDA_CHECK(context, cudaMemsetAsync(total, 0, sizeof *total, context->stream));
    for (size_t first = 0; first < n_tensors; first += FT_CUDA_MAX_BLOCKS) {
        size_t batch = n_tensors - first < FT_CUDA_MAX_BLOCKS ? n_tensors - first : FT_CUDA_MAX_BLOCKS;
        for (size_t t = 0; t < batch; t++) {
            unsigned blocks = ft_cuda_grid(counts[first + t]);
            sum_squares_kernel<<<blocks, FT_CUDA_THREADS, 0, context->stream>>>(parts, xs[first + t],
                                                                                counts[first + t]);
            LAUNCH_CHECK(context, "sum_squares_kernel");
            sum_parts_kernel<<<1, FT_CUDA_THREADS, 0, context->stream>>>(sums + t, parts, blocks);
            LAUNCH_CHECK(context, "sum_parts_kernel");
        }
        add_in_order_kernel<<<1, 1, 0, context->stream>>>(total, sums, batch);
        LAUNCH_CHECK(context, "add_in_order_kernel");
    }
    CUDA_CHECK(context, cudaMemcpyAsync(&result, total, sizeof result, cudaMemcpyDeviceToHost, context->stream));
    CUDA_CHECK(context, cudaStreamSynchronize(context->stream));
    return result;
}

__global__ void scale_kernel(float *x, size_t n, float factor)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= factor;
}

void ft_cuda_scale(ft_backend *self, float *x, size_t n, float factor)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    scale_kernel<<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>(x, n, factor);
    LAUNCH_CHECK(context, "scale_kernel");
}

__global__ void add_floats_kernel(float *to, const float *from, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        to[i] += from[i];
}

void ft_cuda_add_floats(ft_backend *self, float *to, const float *from, size_t n)
{
    if (n == 0)
        return;
    ft_cuda_context *context = ft_cuda_enter(self);
    add_floats_kernel<<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>(to, from, n);
    LAUNCH_CHECK(context, "add_floats_kernel");
}
