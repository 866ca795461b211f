/* cuda_scratch: the cuda backend's scratch — one allocation carved into the
 * cuBLASLt workspace, the LoRA products' buffers, attention's backward scratch and
 * the reductions' partial sums — sized in plain C, so that backend.cu carves the
 * slices these sizes give and `ftpipe estimate` counts the same bytes on a machine
 * without CUDA. */
#ifndef FTPIPE_CUDA_SCRATCH_H
#define FTPIPE_CUDA_SCRATCH_H

#include <stddef.h>

#include "ftpipe/backend/backend.h"

/* Elementwise kernels run in at most this many blocks (a partial sum each). */
#define FT_CUDA_MAX_BLOCKS 4096
/* Reductions over rows (the norm weights' gradient) go in this many fixed chunks
 * of rows, each added up in order, then the chunks in order: no atomics, so the
 * result does not depend on timing. */
#define FT_NORM_ROW_CHUNKS 64
/* cuBLASLt's workspace for the matrix products. */
#define FT_CUDA_GEMM_WORKSPACE_BYTES ((size_t)32 << 20)

/* The slices, in the order they are carved. */
typedef enum {
    FT_SCRATCH_GEMM_WORKSPACE,
    FT_SCRATCH_LORA_A,            /* [max_rank, max_features] bf16 */
    FT_SCRATCH_LORA_B,            /* [max_features, max_rank] bf16 */
    FT_SCRATCH_LORA_GRAD_XA,      /* [max_rows, max_rank] bf16 */
    FT_SCRATCH_LORA_DROPPED,      /* [max_rows, max_features] bf16, with LoRA dropout only */
    FT_SCRATCH_ATTENTION_GRAD_K_PART, /* [max_rows, max_heads * head_dim] f32, each of the two */
    FT_SCRATCH_ATTENTION_GRAD_V_PART,
    FT_SCRATCH_ATTENTION_DELTA,   /* [max_rows, max_heads] f32 */
    FT_SCRATCH_SUM_PARTS,         /* the total and one partial per block, f64 */
    FT_SCRATCH_TENSOR_SUMS,       /* one per block, f64 */
    FT_SCRATCH_NORM_WEIGHT_PARTS, /* [FT_NORM_ROW_CHUNKS, max_features] f32 */
    FT_SCRATCH_SLICES
} ft_cuda_scratch_slice;

/* Each slice's bytes for these limits. */
void ft_cuda_scratch_slice_bytes(const ft_backend_limits *limits, size_t bytes[FT_SCRATCH_SLICES]);
/* Where a slice of `bytes` ends up taking: rounded up to 256 bytes. */
size_t ft_cuda_scratch_aligned(size_t bytes);
/* The whole allocation. */
size_t ft_cuda_scratch_bytes(const ft_backend_limits *limits);

#endif
