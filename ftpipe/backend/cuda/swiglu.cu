/* swiglu: out = silu(gate) * up and its backward, elementwise in fp32. */
#include "cuda_internal.h"

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void swiglu_forward_kernel(bf16 *out, const bf16 *gate, const bf16 *up, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = __bfloat162float(gate[i]);
        out[i] = __float2bfloat16(g * sigmoid(g) * __bfloat162float(up[i]));
    }
}

__global__ void swiglu_backward_kernel(bf16 *grad_gate, bf16 *grad_up, const bf16 *grad_out, const bf16 *gate,
                                       const bf16 *up, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = __bfloat162float(gate[i]), u = __bfloat162float(up[i]), grad = __bfloat162float(grad_out[i]);
        float s = sigmoid(g);
        grad_up[i] = __float2bfloat16(grad * g * s);
        grad_gate[i] = __float2bfloat16(grad * u * s * (1.0f + g * (1.0f - s)));
    }
}

void ft_cuda_swiglu_forward(ft_backend *self, void *out, const void *gate, const void *up, size_t n)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    swiglu_forward_kernel<<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>((bf16 *)out, (const bf16 *)gate,
                                                                                    (const bf16 *)up, n);
    LAUNCH_CHECK(context, "swiglu_forward_kernel");
}

void ft_cuda_swiglu_backward(ft_backend *self, void *grad_gate, void *grad_up, const void *grad_out,
                             const void *gate, const void *up, size_t n)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    swiglu_backward_kernel<<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>(
        (bf16 *)grad_gate, (bf16 *)grad_up, (const bf16 *)grad_out, (const bf16 *)gate, (const bf16 *)up, n);
    LAUNCH_CHECK(context, "swiglu_backward_kernel");
}
