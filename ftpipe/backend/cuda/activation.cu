/* activation: the vision towers' elementwise ops, the GELU family (forward, and
 * backward for a trained projector) and an add, in fp32 between bf16 loads and
 * stores. */
#include "cuda_internal.h"

__device__ __forceinline__ float activate(float x, ft_activation activation)
{
    switch (activation) {
    case FT_ACTIVATION_QUICK_GELU:
        return x / (1.0f + expf(-1.702f * x));
    case FT_ACTIVATION_GELU:
        return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case FT_ACTIVATION_GELU_TANH:
        return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    }
    return x;
}

/* d activation / dx */
__device__ __forceinline__ float activation_slope(float x, ft_activation activation)
{
    switch (activation) {
    case FT_ACTIVATION_QUICK_GELU: {
        float s = 1.0f / (1.0f + expf(-1.702f * x));
        return s + 1.702f * x * s * (1.0f - s);
    }
    case FT_ACTIVATION_GELU: /* Phi(x) + x phi(x) */
        return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) + x * expf(-0.5f * x * x) * 0.39894228040143268f;
    case FT_ACTIVATION_GELU_TANH: {
        const float k = 0.79788456080286536f;
        float t = tanhf(k * (x + 0.044715f * x * x * x));
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * 0.044715f * x * x);
    }
    }
    return 1.0f;
}

__global__ void activation_backward_kernel(bf16 *grad_x, const bf16 *grad_out, const bf16 *x, size_t n,
                                           ft_activation activation)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        grad_x[i] = __float2bfloat16(__bfloat162float(grad_out[i]) *
                                     activation_slope(__bfloat162float(x[i]), activation));
}

__global__ void activation_forward_kernel(bf16 *out, const bf16 *x, size_t n, ft_activation activation)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16(activate(__bfloat162float(x[i]), activation));
}

__global__ void add_forward_kernel(bf16 *out, const bf16 *a, const bf16 *b, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16(__bfloat162float(a[i]) + __bfloat162float(b[i]));
}

void ft_cuda_activation_forward(ft_backend *self, void *out, const void *x, size_t n, ft_activation activation)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    activation_forward_kernel<<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>((bf16 *)out, (const bf16 *)x,
                                                                                        n, activation);
    LAUNCH_CHECK(context, "activation_forward_kernel");
}

void ft_cuda_activation_backward(ft_backend *self, void *grad_x, const void *grad_out, const void *x, size_t n,
                                 ft_activation activation)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    activation_backward_kernel<<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>(
        (bf16 *)grad_x, (const bf16 *)grad_out, (const bf16 *)x, n, activation);
    LAUNCH_CHECK(context, "activation_backward_kernel");
}

void ft_cuda_add_forward(ft_backend *self, void *out, const void *a, const void *b, size_t n)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    add_forward_kernel<<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>((bf16 *)out, (const bf16 *)a,
                                                                                 (const bf16 *)b, n);
    LAUNCH_CHECK(context, "add_forward_kernel");
}
