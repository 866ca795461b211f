/* Tests of cuda_scratch: the slices the cuda backend carves its scratch into, and
 * their total, for the shapes a model runs. */
#include "check.h"
#include "ftpipe/backend/cuda_scratch.h"

static ft_backend_limits qwen_0_5b_lora(void)
{
    /* Qwen2.5-0.5B, 8 x 512 rows, LoRA rank 8: what model.c hands reserve */
    return (ft_backend_limits){.max_rows = 8 * 512, .max_seq_len = 512, .max_features = 4864, .max_rank = 8,
                               .head_dim = 64, .max_heads = 14, .lora_dropout = false};
}

TEST(slices_are_the_workspace_lora_attention_and_partial_sums)
{
    ft_backend_limits limits = qwen_0_5b_lora();
    size_t bytes[FT_SCRATCH_SLICES];
    ft_cuda_scratch_slice_bytes(&limits, bytes);
    CHECK_INT(bytes[FT_SCRATCH_GEMM_WORKSPACE], 32 << 20);
    CHECK_INT(bytes[FT_SCRATCH_LORA_A], 8 * 4864 * 2);
    CHECK_INT(bytes[FT_SCRATCH_LORA_GRAD_XA], 4096 * 8 * 2);
    CHECK_INT(bytes[FT_SCRATCH_LORA_DROPPED], 0); /* no dropout: no dropped copy */
    CHECK_INT(bytes[FT_SCRATCH_ATTENTION_GRAD_K_PART], 4096 * 14 * 64 * 4);
    CHECK_INT(bytes[FT_SCRATCH_ATTENTION_GRAD_V_PART], bytes[FT_SCRATCH_ATTENTION_GRAD_K_PART]);
    CHECK_INT(bytes[FT_SCRATCH_ATTENTION_DELTA], 4096 * 14 * 4);
    CHECK_INT(bytes[FT_SCRATCH_NORM_WEIGHT_PARTS], 64 * 4864 * 4);
    limits.lora_dropout = true;
    ft_cuda_scratch_slice_bytes(&limits, bytes);
    CHECK_INT(bytes[FT_SCRATCH_LORA_DROPPED], 4096 * 4864 * 2);
}

TEST(total_aligns_each_slice_to_256_bytes)
{
    ft_backend_limits limits = qwen_0_5b_lora();
    size_t bytes[FT_SCRATCH_SLICES], total = 0;
    ft_cuda_scratch_slice_bytes(&limits, bytes);
    for (int i = 0; i < FT_SCRATCH_SLICES; i++) {
        CHECK_INT(ft_cuda_scratch_aligned(bytes[i]) % 256, 0);
        CHECK(ft_cuda_scratch_aligned(bytes[i]) >= bytes[i] && ft_cuda_scratch_aligned(bytes[i]) < bytes[i] + 256);
        total += ft_cuda_scratch_aligned(bytes[i]);
    }
    CHECK_INT(ft_cuda_scratch_bytes(&limits), total);
    /* twice the rows: attention's share (dK and dV partials, delta) doubles, the workspace stays */
    size_t before = ft_cuda_scratch_bytes(&limits);
    limits.max_rows *= 2;
    CHECK_INT(ft_cuda_scratch_bytes(&limits) - before,
              2 * 4096 * 14 * 64 * 4 + 4096 * 14 * 4 + ft_cuda_scratch_aligned(4096 * 8 * 2) * 2 -
                  ft_cuda_scratch_aligned(4096 * 8 * 2));
}

int main(void)
{
    RUN(slices_are_the_workspace_lora_attention_and_partial_sums);
    RUN(total_aligns_each_slice_to_256_bytes);
    return check_done();
}
