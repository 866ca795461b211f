/* rope: rotary position embeddings in place, in fp32 from bf16, one thread per
 * rotated pair. Backward is the opposite rotation. */
#include "cuda_internal.h"

__global__ void rope_kernel(bf16 *x, const int32_t *positions, const float *cos_table, const float *sin_table,
                            int rows, int n_heads, int head_dim, float direction)
{
    int half = head_dim / 2;
    size_t n = (size_t)rows * n_heads * half;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int pair = (int)(i % half);
        size_t row_head = i / half;
        int row = (int)(row_head / n_heads);
        size_t angle = (size_t)positions[row] * half + pair;
        float c = cos_table[angle], s = direction * sin_table[angle];
        bf16 *v = x + row_head * head_dim;
        float first = __bfloat162float(v[pair]), second = __bfloat162float(v[pair + half]);
        v[pair] = __float2bfloat16(first * c - second * s);
        v[pair + half] = __float2bfloat16(second * c + first * s);
    }
}

static void rotate(ft_backend *self, void *x, const int32_t *positions, const float *cos_table,
                   const float *sin_table, int rows, int n_heads, int head_dim, float direction)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    size_t n = (size_t)rows * n_heads * (head_dim / 2);
    rope_kernel<<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>((bf16 *)x, positions, cos_table, sin_table,
                                                                          rows, n_heads, head_dim, direction);
    LAUNCH_CHECK(context, "rope_kernel");
}

void ft_cuda_rope_forward(ft_backend *self, void *x, const int32_t *positions, const float *cos_table,
                          const float *sin_table, int rows, int n_heads, int head_dim)
{
    rotate(self, x, positions, cos_table, sin_table, rows, n_heads, head_dim, 1.0f);
}

void ft_cuda_rope_backward(ft_backend *self, void *grad_x, const int32_t *positions, const float *cos_table,
                           const float *sin_table, int rows, int n_heads, int head_dim)
{
    rotate(self, grad_x, positions, cos_table, sin_table, rows, n_heads, head_dim, -1.0f);
}
