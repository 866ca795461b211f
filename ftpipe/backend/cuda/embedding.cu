/* embedding: gathering rows of the table by token, and adding the gradient back
 * into the (float) table's gradient. */
#include "cuda_internal.h"

__global__ void embedding_forward_kernel(bf16 *out, const bf16 *table, const int32_t *tokens, int rows, int dim)
{
    size_t n = (size_t)rows * dim;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / dim;
        out[i] = table[(size_t)tokens[row] * dim + i % dim];
    }
}

/* Rows with the same token add into the same gradient row: each thread owns one
 * column and adds the rows in order, so repeated tokens need no atomics and the
 * sums come out the same every time. */
__global__ void embedding_backward_kernel(float *grad_table, const bf16 *grad_out, const int32_t *tokens, int rows,
                                          int dim)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= dim)
        return;
    for (int r = 0; r < rows; r++)
        grad_table[(size_t)tokens[r] * dim + c] += __bfloat162float(grad_out[(size_t)r * dim + c]);
}

void ft_cuda_embedding_forward(ft_backend *self, void *out, const void *table, const int32_t *tokens, int rows,
                               int dim)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    size_t n = (size_t)rows * dim;
    embedding_forward_kernel<<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>(
        (bf16 *)out, (const bf16 *)table, tokens, rows, dim);
    LAUNCH_CHECK(context, "embedding_forward_kernel");
}

void ft_cuda_embedding_backward(ft_backend *self, float *grad_table, const void *grad_out, const int32_t *tokens,
                                int rows, int dim)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    const unsigned threads = 32; /* many small blocks: dim columns is all the parallelism there is */
    embedding_backward_kernel<<<(unsigned)((dim + threads - 1) / threads), threads, 0, context->stream>>>(
        grad_table, (const bf16 *)grad_out, tokens, rows, dim);
    LAUNCH_CHECK(context, "embedding_backward_kernel");
}
