/* backend: the operations the training core runs, as one table of functions, so
 * that the cpu backend (fp32, the reference) and the cuda backend (bf16) are
 * interchangeable under the model.
 *
 * Conventions every backend keeps:
 *   - Each backend computes in one dtype (`dtype`: F32 on cpu, BF16 on cuda).
 *     Activations, their gradients and the frozen base weights are arrays of
 *     that dtype: the `void *` arguments below. Always float: LoRA weights and
 *     their gradients, trained tensors' gradients, optimizer state, full
 *     fine-tuning's master weights (cast_from_float), per-row
 *     statistics (rstd, logsumexp, losses) and the RoPE tables.
 *   - Tensors live in the backend's memory, row-major. Activations are
 *     [rows, features] with rows = batch_size * seq_len tokens; a linear
 *     layer's weight is [out_features, in_features], as in Hugging Face files.
 *   - Backward ops write (=) the gradients of their inputs, unless an
 *     `accumulate` flag says +=, and always accumulate (+=) into parameter
 *     gradients, so that micro-batches add up. A NULL parameter gradient means
 *     the parameter is frozen.
 *   - Integer inputs (tokens, positions, segments, targets) are int32 arrays in
 *     the backend's memory; the caller has checked their ranges.
 *   - Ops do not return errors: the caller planned every buffer and reserved
 *     scratch for the largest shapes (reserve) before the first op. A device
 *     fault is kept by the backend and reported by `check`. */
#ifndef FTPIPE_BACKEND_H
#define FTPIPE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/base/dtype.h"

typedef struct ft_backend ft_backend;
typedef struct ft_backend_event ft_backend_event;

/* A LoRA adapter on one linear layer: y += scaling * dropout(x) A^T B^T. */
typedef struct {
    const float *a;         /* [rank, in_features] */
    const float *b;         /* [out_features, rank] */
    float *grad_a;          /* NULL: frozen */
    float *grad_b;
    void *xa;               /* [rows, rank], backend dtype: dropout(x) A^T, saved by forward for backward */
    int rank;
    float scaling;          /* alpha / rank, or alpha / sqrt(rank) with rsLoRA */
    float dropout;          /* probability of zeroing an input element; kept ones scale by 1/(1-p) */
    uint64_t dropout_seed;  /* element (r, c) is dropped when
                               ft_random_uniform(dropout_seed, r * in_features + c) < dropout */
} ft_lora_op;

/* q is [rows, n_heads * head_dim]; k and v are [rows, n_kv_heads * head_dim].
 * Query head h reads key/value head h / (n_heads / n_kv_heads). Token i of a row
 * attends to token j when j <= i and both carry the same segment id, so packed
 * samples never see each other. With `bidirectional` (the vision towers: forward
 * only), token i attends to every j of its segment; a row's segment ids then
 * run in ascending order (each image or window one run), so that a backend may
 * skip the key blocks outside a query block's runs. */
typedef struct {
    int batch_size;
    int seq_len;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    bool bidirectional;
} ft_attention_shape;

/* The activations of the vision towers' MLPs and projectors, elementwise. */
typedef enum {
    FT_ACTIVATION_QUICK_GELU,   /* x * sigmoid(1.702 x) (CLIP's, Qwen2-VL's) */
    FT_ACTIVATION_GELU,         /* x/2 (1 + erf(x / sqrt 2)), torch's exact GELU */
    FT_ACTIVATION_GELU_TANH,    /* x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), "gelu_pytorch_tanh" */
} ft_activation;

/* The largest shapes a model will run, and what it will allocate: what the
 * backend sizes its scratch by and checks against its memory. */
typedef struct {
    int max_rows;           /* batch_size * seq_len */
    int max_seq_len;
    int max_features;       /* the widest linear-layer input */
    int max_rank;           /* LoRA rank; 0 without LoRA */
    int head_dim;           /* 0: no attention (a backend may refuse head sizes it cannot run) */
    int vision_head_dim;    /* 0: none; else a vision tower's bidirectional attention, forward only */
    int max_heads;          /* query heads */
    bool lora_dropout;      /* LoRA dropout above 0 (needs a dropped copy of the input) */
    size_t planned_bytes;   /* weights, adapter, gradients, optimizer state, activations */
} ft_backend_limits;

/* torch.optim.AdamW's update, for one step. */
typedef struct {
    double learning_rate;
    double beta1;
    double beta2;
    double eps;             /* added outside the square root */
    double weight_decay;    /* decoupled: param *= 1 - lr * weight_decay, before the update */
    int64_t step;           /* 1 on the first step (bias correction) */
} ft_adamw_hyper;

struct ft_backend {
    const char *name;
    ft_dtype dtype;         /* of activations and frozen weights: FT_DTYPE_F32 or FT_DTYPE_BF16 */
    void *context;
    void (*destroy)(ft_backend *self);

    /* --- memory: alloc returns NULL with ft_error set --- */
    void *(*alloc)(ft_backend *self, size_t bytes);
    void (*free)(ft_backend *self, void *pointer);
    void (*upload)(ft_backend *self, void *device, const void *host, size_t bytes);
    void (*download)(ft_backend *self, void *host, const void *device, size_t bytes);
    void (*zero)(ft_backend *self, void *device, size_t bytes);
    /* bytes from `from` to `to`, either in the backend's memory or its host memory
     * (alloc_host's, or plain host memory), ordered with the ops; done on return
     * when either side is host memory. */
    void (*copy)(ft_backend *self, void *to, const void *from, size_t bytes);
    /* As copy, but never waited for: the host memory on either side must be
     * alloc_host's, and the host must leave it alone until check (or a later
     * record's event_sync) says the copy is done. For sums that go up and down
     * between ops without stalling the host (grad_shards.h's host shard). */
    void (*copy_queued)(ft_backend *self, void *to, const void *from, size_t bytes);
    /* Host memory that upload and download copy to and from directly (page-locked
     * on cuda, plain on cpu), for state kept on the host (offload_optimizer's). */
    void *(*alloc_host)(ft_backend *self, size_t bytes);
    void (*free_host)(ft_backend *self, void *pointer);
    /* Reserves scratch memory for ops up to these shapes, and checks that the
     * planned bytes fit beside it; -1 with ft_error (with the numbers) when not. */
    int (*reserve)(ft_backend *self, const ft_backend_limits *limits);
    size_t (*reserved_bytes)(const ft_backend *self);
    /* The most memory held at once so far: allocations and scratch. */
    size_t (*peak_bytes)(const ft_backend *self);
    /* Waits for the ops issued so far; -1 with ft_error when one failed on the
     * device (its results, and those of every op since, are undefined). */
    int (*check)(ft_backend *self);

    /* --- a side queue, so that one thread's copies run beside the compute
     * (ZeRO-3's gathers, ZeRO-2 and 3's reduce-scatters of full fine-tuning); NULL on a backend whose calls finish as they return
     * (cpu). Events order the two queues: record marks the work the calling
     * thread has issued so far, wait makes the calling thread's queue wait for
     * the last record's work, sync makes the host wait for it. --- */
    /* From now on this thread's upload, download, copy and collectives go to
     * the side queue (never its ops), or with side false back to the ops'
     * queue. Its uploads read the host memory until the queue reaches them:
     * keep that memory unchanged until then. */
    void (*use_side_queue)(ft_backend *self, bool side);
    ft_backend_event *(*event_new)(ft_backend *self); /* NULL with ft_error */
    void (*event_free)(ft_backend *self, ft_backend_event *event);
    void (*event_record)(ft_backend *self, ft_backend_event *event);
    void (*event_wait)(ft_backend *self, ft_backend_event *event);
    void (*event_sync)(ft_backend *self, ft_backend_event *event);

    /* --- elementwise and row ops --- */
    /* out[r] = table[tokens[r]] */
    void (*embedding_forward)(ft_backend *self, void *out, const void *table, const int32_t *tokens, int rows,
                              int dim);
    void (*embedding_backward)(ft_backend *self, float *grad_table, const void *grad_out, const int32_t *tokens,
                               int rows, int dim);
    /* out = x / sqrt(mean(x^2) + eps) * weight, per row; rstd[r] saved for backward
     * (NULL: not saved, for a forward-only pass). */
    void (*rmsnorm_forward)(ft_backend *self, void *out, float *rstd, const void *x, const void *weight, int rows,
                            int dim, float eps);
    /* The residual junction: sum = a + b (sum may be a or b), then out = rmsnorm(sum)
     * as rmsnorm_forward computes it from sum as stored. */
    void (*add_rmsnorm_forward)(ft_backend *self, void *sum, void *out, float *rstd, const void *a, const void *b,
                                const void *weight, int rows, int dim, float eps);
    void (*rmsnorm_backward)(ft_backend *self, void *grad_x, bool accumulate, float *grad_weight,
                             const void *grad_out, const void *x, const void *weight, const float *rstd, int rows,
                             int dim);
    /* Rotates x [rows, n_heads * head_dim] in place by the angles of each row's
     * position: pairs (i, i + head_dim/2), cos and sin tables [positions, head_dim/2]. */
    void (*rope_forward)(ft_backend *self, void *x, const int32_t *positions, const float *cos_table,
                         const float *sin_table, int rows, int n_heads, int head_dim);
    void (*rope_backward)(ft_backend *self, void *grad_x, const int32_t *positions, const float *cos_table,
                          const float *sin_table, int rows, int n_heads, int head_dim);
    /* torch.nn.LayerNorm, forward only: out = (x - mean) / sqrt(variance + eps) *
     * weight + bias per row (the biased variance; bias NULL: none). */
    void (*layernorm_forward)(ft_backend *self, void *out, const void *x, const void *weight, const void *bias,
                              int rows, int dim, float eps);
    /* The weights' gradients of that LayerNorm (bias NULL: none), recomputing
     * each row's mean and variance from x; grad_x (NULL: not wanted) is written.
     * A trained projector's norm (Qwen2-VL's merger); NULL on backends that do
     * not train one (cuda). */
    void (*layernorm_backward)(ft_backend *self, void *grad_x, float *grad_weight, float *grad_bias,
                               const void *grad_out, const void *x, const void *weight, int rows, int dim, float eps);
    /* out = activation(x), elementwise (out may be x). */
    void (*activation_forward)(ft_backend *self, void *out, const void *x, size_t n, ft_activation activation);
    /* grad_x = grad_out * activation'(x), elementwise (grad_x may be grad_out):
     * a trained projector's GELU. */
    void (*activation_backward)(ft_backend *self, void *grad_x, const void *grad_out, const void *x, size_t n,
                                ft_activation activation);
    /* out = a + b, elementwise (out may be a or b); forward only. */
    void (*add_forward)(ft_backend *self, void *out, const void *a, const void *b, size_t n);
    /* out = silu(gate) * up */
    void (*swiglu_forward)(ft_backend *self, void *out, const void *gate, const void *up, size_t n);
    void (*swiglu_backward)(ft_backend *self, void *grad_gate, void *grad_up, const void *grad_out,
                            const void *gate, const void *up, size_t n);

    /* --- matrix ops --- */
    /* out [rows, out_features] = x W^T + bias (NULL: none) + the LoRA term (NULL: none) */
    void (*linear_forward)(ft_backend *self, void *out, const void *x, const void *weight, const void *bias,
                           const ft_lora_op *lora, int rows, int in_features, int out_features);
    void (*linear_backward)(ft_backend *self, void *grad_x, bool accumulate, float *grad_weight, float *grad_bias,
                            const void *grad_out, const void *x, const void *weight, const ft_lora_op *lora,
                            int rows, int in_features, int out_features);
    /* Softmax attention with scale 1/sqrt(head_dim); logsumexp [batch, n_heads, seq_len]
     * saved for backward, which also reads forward's out (NULL: not saved, for a
     * forward-only pass; backward needs causal attention). */
    void (*attention_forward)(ft_backend *self, void *out, float *logsumexp, const void *q, const void *k,
                              const void *v, const int32_t *segments, const ft_attention_shape *shape);
    void (*attention_backward)(ft_backend *self, void *grad_q, void *grad_k, void *grad_v, const void *grad_out,
                               const void *out, const void *q, const void *k, const void *v,
                               const float *logsumexp, const int32_t *segments, const ft_attention_shape *shape);

    /* --- generation with a KV cache (rows of `width` elements in the backend's dtype) --- */
    /* dst[r] = src[index[r]] for r < rows */
    void (*gather_rows)(ft_backend *self, void *dst, const void *src, const int32_t *index, int rows, int width);
    /* dst[index[r]] = src[r] for r < rows */
    void (*scatter_rows)(ft_backend *self, void *dst, const void *src, const int32_t *index, int rows, int width);
    /* One new query per sequence against its cache: q [batch, n_heads * head_dim];
     * k_cache and v_cache [batch, max_len, n_kv_heads * head_dim]; sequence b
     * attends to cache positions [0, lengths[b]), its own new key and value
     * already stored at lengths[b] - 1. Scale 1/sqrt(head_dim), GQA as above. */
    void (*attention_decode)(ft_backend *self, void *out, const void *q, const void *k_cache, const void *v_cache,
                             const int32_t *lengths, int batch, int max_len, int n_heads, int n_kv_heads,
                             int head_dim);
    /* out[r] = the index of row r's largest value, the lowest index among equal ones:
     * greedy decoding picks its tokens where the logits are, and only ids travel. */
    void (*argmax_rows)(ft_backend *self, int32_t *out, const void *x, int rows, int width);
    /* --- loss --- */
    /* losses[r] = logsumexp(logits[r]) - logits[r][targets[r]]; 0 where targets[r] < 0.
     * With backward, the logits are then overwritten by their gradient,
     * (softmax(logits) - onehot(target)) * grad_scale, zero rows where targets[r] < 0:
     * loss and gradient from one log-sum-exp, without a second copy of the logits. */
    void (*cross_entropy)(ft_backend *self, float *losses, void *logits, const int32_t *targets, int rows,
                          int vocab, bool backward, float grad_scale);

    /* --- optimizer (trained tensors are float) --- */
    void (*adamw)(ft_backend *self, float *param, const float *grad, float *exp_avg, float *exp_avg_sq, size_t n,
                  const ft_adamw_hyper *hyper);
    /* The sum of the squares of every element of n_tensors arrays (tensor i has
     * counts[i] elements): each tensor's sum, added up in tensor order. One call for
     * all of a model's gradients, so the GPU is waited for once, not per tensor. */
    double (*sum_squares)(ft_backend *self, const float *const *xs, const size_t *counts, size_t n_tensors);
    void (*scale)(ft_backend *self, float *x, size_t n, float factor);
    /* to[i] += from[i], in float: ZeRO's sums of gradients over micro-batches (grad_shards.h). */
    void (*add_floats)(ft_backend *self, float *to, const float *from, size_t n);
    /* dst (n elements of the backend's dtype) = src rounded to nearest even: the
     * weights the passes read, made again from float master weights after each
     * update of full fine-tuning (on a float backend, a copy). */
    void (*cast_from_float)(ft_backend *self, void *dst, const float *src, size_t n);
};

/* The fp32 reference backend: plain C and OpenBLAS's sgemm with `threads`
 * threads (0: one per core). */
ft_backend *ft_backend_cpu_create(int threads);

/* The bf16 backend on CUDA GPU `device` (cuBLASLt and ftpipe's kernels). NULL
 * with ft_error when this ftpipe was built without CUDA, or no usable GPU or
 * driver is found. For `backend = auto`: cuda when ft_cuda_device_count() > 0,
 * else cpu. */
ft_backend *ft_backend_cuda_create(int device);
/* GPUs the cuda backend can use: 0 without CUDA, a driver, or a GPU. */
int ft_cuda_device_count(void);

static inline void ft_backend_destroy(ft_backend *backend)
{
    if (backend)
        backend->destroy(backend);
}

#endif
