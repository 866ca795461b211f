/* cuda_scratch: the slices' sizes (see cuda_scratch.h). */
#include "ftpipe/backend/cuda_scratch.h"

#include <stdint.h>

/* bf16 is two bytes, whatever the host knows of it */
#define BF16_BYTES 2

void ft_cuda_scratch_slice_bytes(const ft_backend_limits *limits, size_t bytes[FT_SCRATCH_SLICES])
{
    size_t rows = (size_t)limits->max_rows, rank = (size_t)limits->max_rank, features = (size_t)limits->max_features;
    size_t attention = rows * (size_t)limits->max_heads * (size_t)limits->head_dim * sizeof(float);
    bytes[FT_SCRATCH_GEMM_WORKSPACE] = FT_CUDA_GEMM_WORKSPACE_BYTES;
    bytes[FT_SCRATCH_LORA_A] = rank * features * BF16_BYTES;
    bytes[FT_SCRATCH_LORA_B] = features * rank * BF16_BYTES;
    bytes[FT_SCRATCH_LORA_GRAD_XA] = rows * rank * BF16_BYTES;
    bytes[FT_SCRATCH_LORA_DROPPED] = limits->lora_dropout && rank ? rows * features * BF16_BYTES : 0;
    bytes[FT_SCRATCH_ATTENTION_GRAD_K_PART] = attention;
    bytes[FT_SCRATCH_ATTENTION_GRAD_V_PART] = attention;
    bytes[FT_SCRATCH_ATTENTION_DELTA] = rows * (size_t)limits->max_heads * sizeof(float);
    bytes[FT_SCRATCH_SUM_PARTS] = (1 + FT_CUDA_MAX_BLOCKS) * sizeof(double);
    bytes[FT_SCRATCH_TENSOR_SUMS] = FT_CUDA_MAX_BLOCKS * sizeof(double);
    bytes[FT_SCRATCH_NORM_WEIGHT_PARTS] = (size_t)FT_NORM_ROW_CHUNKS * features * sizeof(float);
}

size_t ft_cuda_scratch_aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }

size_t ft_cuda_scratch_bytes(const ft_backend_limits *limits)
{
    size_t bytes[FT_SCRATCH_SLICES], total = 0;
    ft_cuda_scratch_slice_bytes(limits, bytes);
    for (int i = 0; i < FT_SCRATCH_SLICES; i++)
        total += ft_cuda_scratch_aligned(bytes[i]);
    return total;
}
