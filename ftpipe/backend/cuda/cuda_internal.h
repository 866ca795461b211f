/* cuda_internal: what the cuda backend's files share: its context, checks of
 * every CUDA and cuBLASLt call (file and line kept for the error), bf16 and
 * random-number helpers for kernels, and each op family's entry points. One
 * stream runs every kernel, so ops are ordered as they are called; a thread
 * that chose the side queue copies and communicates on a second stream. */
#ifndef FTPIPE_CUDA_INTERNAL_H
#define FTPIPE_CUDA_INTERNAL_H

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "ftpipe/backend/backend.h"
#include "ftpipe/backend/cuda_scratch.h"
#include "ftpipe/base/random.h"
#include "ftpipe/base/thread_pool.h"
}

typedef __nv_bfloat16 bf16;

/* cuBLASLt, opened at run time (matmul.cu). */
struct ft_cublaslt_api {
    void *library;
    decltype(&cublasLtCreate) create;
    decltype(&cublasLtDestroy) destroy;
    decltype(&cublasLtMatmulDescCreate) desc_create;
    decltype(&cublasLtMatmulDescDestroy) desc_destroy;
    decltype(&cublasLtMatmulDescSetAttribute) desc_set;
    decltype(&cublasLtMatrixLayoutCreate) layout_create;
    decltype(&cublasLtMatrixLayoutDestroy) layout_destroy;
    decltype(&cublasLtMatmulPreferenceCreate) preference_create;
    decltype(&cublasLtMatmulPreferenceDestroy) preference_destroy;
    decltype(&cublasLtMatmulPreferenceSetAttribute) preference_set;
    decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic;
    decltype(&cublasLtMatmul) matmul;
    decltype(&cublasLtGetStatusString) status_string;
};
/* -1 with ft_error when the library or one of its functions is missing. */
int ft_cublaslt_open(ft_cublaslt_api *api);
void ft_cublaslt_close(ft_cublaslt_api *api);

struct ft_gemm_plan_cache; /* matmul.cu: algorithms found for shapes seen before */
#define FT_STAGING_CHUNKS 4

/* Scratch, carved from one allocation by reserve (backend.cu). */
struct ft_cuda_scratch {
    void *gemm_workspace;
    size_t gemm_workspace_bytes;
    bf16 *lora_a;           /* [max_rank, max_features]: A in bf16 for one product */
    bf16 *lora_b;           /* [max_features, max_rank] */
    bf16 *lora_grad_xa;     /* [max_rows, max_rank] */
    bf16 *lora_dropped;     /* [max_rows, max_features] when LoRA has dropout, else NULL */
    float *attention_grad_k_part; /* [max_rows, max_heads * head_dim]: each query head's share of dK; */
    float *attention_grad_v_part; /* in decoding, the splits' partial outputs and their row maxima and sums */
    float *attention_delta;   /* [max_rows, max_heads] */
    double *sum_parts;      /* sum_squares: the total, then one partial per block (FT_CUDA_MAX_BLOCKS) */
    double *tensor_sums;    /* sum_squares: each tensor's sum (FT_CUDA_MAX_BLOCKS tensors at a time) */
    float *norm_weight_parts; /* [FT_NORM_ROW_CHUNKS, max_features]: rmsnorm weight-gradient partials */
};

struct ft_cuda_context {
    int device;
    cudaDeviceProp properties;
    cudaStream_t stream;
    cudaStream_t side_stream;   /* the side queue's (use_side_queue): a copying thread's copies and collectives */
    ft_cublaslt_api cublaslt;
    cublasLtHandle_t lt;
    ft_gemm_plan_cache *plans;
    /* scratch */
    void *scratch_memory;
    size_t scratch_bytes;
    ft_cuda_scratch scratch;
    ft_backend_limits limits;   /* what the scratch was sized for */
    /* pinned staging for uploads (upload.cu): chunks filled by the copy threads
     * while those before them are copied */
    void *staging[FT_STAGING_CHUNKS];
    cudaEvent_t staging_free[FT_STAGING_CHUNKS];
    size_t staging_bytes;
    int next_staging;           /* the chunk the next upload fills first */
    ft_thread_pool *copy_pool;  /* upload.cu: threads that fill staging chunks; NULL: the calling thread copies */
    /* accounting */
    struct allocation {
        void *pointer;
        size_t bytes;
    } *allocations;
    size_t n_allocations, allocations_capacity;
    size_t allocated_bytes, peak_bytes;
    /* the first failure since the last check */
    bool failed;
    char failure[512];
};

/* The context of the backend, with its GPU made current for this thread. */
ft_cuda_context *ft_cuda_enter(ft_backend *self);
/* The stream of this thread's copies and collectives: the side stream once it
 * chose the side queue, else the stream every kernel runs on. */
cudaStream_t ft_cuda_copy_stream(const ft_cuda_context *context);
/* Whether a pointer is host memory (page-locked or not), not the GPU's. */
bool ft_cuda_on_host(const void *pointer);

/* Keep the first failure; `what` is the call's text. */
void ft_cuda_fail(ft_cuda_context *context, const char *file, int line, const char *what, const char *reason);
static inline void ft_cuda_check_status(ft_cuda_context *context, cudaError_t status, const char *what,
                                        const char *file, int line)
{
    if (status != cudaSuccess)
        ft_cuda_fail(context, file, line, what, cudaGetErrorString(status));
}
void ft_cuda_check_cublas(ft_cuda_context *context, cublasStatus_t status, const char *what, const char *file,
                          int line);

#define CUDA_CHECK(context, call) ft_cuda_check_status((context), (call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(context, call) ft_cuda_check_cublas((context), (call), #call, __FILE__, __LINE__)
#define LAUNCH_CHECK(context, kernel) ft_cuda_check_status((context), cudaGetLastError(), kernel, __FILE__, __LINE__)

/* Elementwise kernels loop with a grid stride over n items, FT_CUDA_THREADS
 * threads a block, in at most enough blocks to fill any current GPU a few times. */
#define FT_CUDA_THREADS 256
static inline unsigned ft_cuda_grid(size_t n)
{
    size_t blocks = (n + FT_CUDA_THREADS - 1) / FT_CUDA_THREADS;
    return blocks == 0 ? 1 : blocks > FT_CUDA_MAX_BLOCKS ? (unsigned)FT_CUDA_MAX_BLOCKS : (unsigned)blocks;
}


/* --- for kernels --- */

/* Sum over a warp, every lane getting the total. */
__device__ __forceinline__ float ft_warp_sum(float value)
{
    for (int offset = 16; offset > 0; offset >>= 1)
        value += __shfl_xor_sync(0xffffffffu, value, offset);
    return value;
}

__device__ __forceinline__ float ft_warp_max(float value)
{
    for (int offset = 16; offset > 0; offset >>= 1)
        value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
    return value;
}

/* --- the op families (one file each) --- */

/* upload.cu: the staging chunks and copy threads (-1: no pinned memory), and the upload op. */
int ft_cuda_upload_start(ft_cuda_context *context);
void ft_cuda_upload_stop(ft_cuda_context *context);
void ft_cuda_upload(ft_backend *self, void *device, const void *host, size_t bytes);

/* matmul.cu: C[m, n] = alpha op(A) op(B) + beta C (+ bias[n] per row), row-major,
 * fp32 accumulation; A and B bf16, C bf16 or float. */
struct ft_gemm {
    bool trans_a, trans_b;     /* op(A) = A^T: A is stored [k, m]; op(B) = B^T: B is stored [n, k] */
    int m, n, k;
    const void *a;
    int lda;                   /* elements between rows as stored */
    const void *b;
    int ldb;
    void *c;
    int ldc;
    cudaDataType_t c_type;     /* CUDA_R_16BF or CUDA_R_32F */
    float alpha, beta;
    const bf16 *bias;          /* NULL: none; only with a bf16 C */
};
void ft_cuda_gemm(ft_cuda_context *context, const ft_gemm *gemm);
void ft_gemm_plan_cache_free(ft_cuda_context *context); /* and the descriptors it holds */
void ft_cuda_to_bf16(ft_cuda_context *context, bf16 *out, const float *in, size_t n);
void ft_cuda_linear_forward(ft_backend *self, void *out, const void *x, const void *weight, const void *bias,
                            const ft_lora_op *lora, int rows, int in_features, int out_features);
void ft_cuda_linear_backward(ft_backend *self, void *grad_x, bool accumulate, float *grad_weight, float *grad_bias,
                             const void *grad_out, const void *x, const void *weight, const ft_lora_op *lora,
                             int rows, int in_features, int out_features);

/* norm.cu */
void ft_cuda_rmsnorm_forward(ft_backend *self, void *out, float *rstd, const void *x, const void *weight, int rows,
                             int dim, float eps);
void ft_cuda_add_rmsnorm_forward(ft_backend *self, void *sum, void *out, float *rstd, const void *a, const void *b,
                                 const void *weight, int rows, int dim, float eps);
void ft_cuda_rmsnorm_backward(ft_backend *self, void *grad_x, bool accumulate, float *grad_weight,
                              const void *grad_out, const void *x, const void *weight, const float *rstd, int rows,
                              int dim);

/* rope.cu */
void ft_cuda_rope_forward(ft_backend *self, void *x, const int32_t *positions, const float *cos_table,
                          const float *sin_table, int rows, int n_heads, int head_dim);
void ft_cuda_rope_backward(ft_backend *self, void *grad_x, const int32_t *positions, const float *cos_table,
                           const float *sin_table, int rows, int n_heads, int head_dim);

/* swiglu.cu */
void ft_cuda_layernorm_forward(ft_backend *self, void *out, const void *x, const void *weight, const void *bias,
                               int rows, int dim, float eps);
void ft_cuda_activation_forward(ft_backend *self, void *out, const void *x, size_t n, ft_activation activation);
void ft_cuda_activation_backward(ft_backend *self, void *grad_x, const void *grad_out, const void *x, size_t n,
                                 ft_activation activation);
void ft_cuda_add_forward(ft_backend *self, void *out, const void *a, const void *b, size_t n);
void ft_cuda_swiglu_forward(ft_backend *self, void *out, const void *gate, const void *up, size_t n);
void ft_cuda_swiglu_backward(ft_backend *self, void *grad_gate, void *grad_up, const void *grad_out,
                             const void *gate, const void *up, size_t n);

/* attention.cu */
bool ft_cuda_attention_supports(int head_dim);
/* Head sizes the vision towers' bidirectional attention runs (a superset), and
 * its preparation (raised shared-memory limits where the tiled kernel runs it). */
bool ft_cuda_bidirectional_attention_supports(int head_dim);
int ft_cuda_bidirectional_attention_prepare(ft_cuda_context *context, int head_dim);
int ft_cuda_attention_prepare(ft_cuda_context *context, int head_dim); /* raises shared-memory limits */
void ft_cuda_attention_forward(ft_backend *self, void *out, float *logsumexp, const void *q, const void *k,
                               const void *v, const int32_t *segments, const ft_attention_shape *shape);
void ft_cuda_attention_backward(ft_backend *self, void *grad_q, void *grad_k, void *grad_v, const void *grad_out,
                                const void *out, const void *q, const void *k, const void *v,
                                const float *logsumexp, const int32_t *segments, const ft_attention_shape *shape);

/* decode.cu: the generation ops */
void ft_cuda_argmax_rows(ft_backend *self, int32_t *out, const void *x, int rows, int width);
void ft_cuda_gather_rows(ft_backend *self, void *dst, const void *src, const int32_t *index, int rows, int width);
void ft_cuda_scatter_rows(ft_backend *self, void *dst, const void *src, const int32_t *index, int rows, int width);
void ft_cuda_attention_decode(ft_backend *self, void *out, const void *q, const void *k_cache, const void *v_cache,
                              const int32_t *lengths, int batch, int max_len, int n_heads, int n_kv_heads,
                              int head_dim);

/* cross_entropy.cu */
void ft_cuda_cross_entropy(ft_backend *self, float *losses, void *logits, const int32_t *targets, int rows,
                           int vocab, bool backward, float grad_scale);

/* embedding.cu */
void ft_cuda_embedding_forward(ft_backend *self, void *out, const void *table, const int32_t *tokens, int rows,
                               int dim);
void ft_cuda_embedding_backward(ft_backend *self, float *grad_table, const void *grad_out, const int32_t *tokens,
                                int rows, int dim);

/* adamw.cu */
void ft_cuda_adamw(ft_backend *self, float *param, const float *grad, float *exp_avg, float *exp_avg_sq, size_t n,
                   const ft_adamw_hyper *hyper);
double ft_cuda_sum_squares(ft_backend *self, const float *const *xs, const size_t *counts, size_t n_tensors);
void ft_cuda_scale(ft_backend *self, float *x, size_t n, float factor);
void ft_cuda_add_floats(ft_backend *self, float *to, const float *from, size_t n);

#endif
