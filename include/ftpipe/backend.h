/* backend: the operations the training core runs, as one table of functions, so
 * that the cpu backend (fp32, the reference) and an accelerator's backend are
 * interchangeable under the model.
 *
 * Conventions every backend keeps:
 *   - Tensors are float arrays in the backend's memory, row-major. Activations
 *     are [rows, features] with rows = batch_size * seq_len tokens; a linear
 *     layer's weight is [out_features, in_features], as in Hugging Face files.
 *   - Backward ops write (=) the gradients of their inputs, unless an
 *     `accumulate` flag says +=, and always accumulate (+=) into parameter
 *     gradients, so that micro-batches add up. A NULL parameter gradient means
 *     the parameter is frozen.
 *   - Integer inputs (tokens, positions, segments, targets) are int32 arrays in
 *     the backend's memory; the caller has checked their ranges.
 *   - Ops cannot fail: the caller planned every buffer and reserved the scratch
 *     memory for the largest shapes (reserve) before the first op. */
#ifndef FTPIPE_BACKEND_H
#define FTPIPE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ft_backend ft_backend;

/* A LoRA adapter on one linear layer: y += scaling * dropout(x) A^T B^T. */
typedef struct {
    const float *a;         /* [rank, in_features] */
    const float *b;         /* [out_features, rank] */
    float *grad_a;          /* NULL: frozen */
    float *grad_b;
    float *xa;              /* [rows, rank]: dropout(x) A^T, saved by forward for backward */
    int rank;
    float scaling;          /* alpha / rank, or alpha / sqrt(rank) with rsLoRA */
    float dropout;          /* probability of zeroing an input element; kept ones scale by 1/(1-p) */
    uint64_t dropout_seed;  /* element (r, c) is dropped when
                               ft_random_uniform(dropout_seed, r * in_features + c) < dropout */
} ft_lora_op;

/* q is [rows, n_heads * head_dim]; k and v are [rows, n_kv_heads * head_dim].
 * Query head h reads key/value head h / (n_heads / n_kv_heads). Token i of a row
 * attends to token j when j <= i and both carry the same segment id, so packed
 * samples never see each other. */
typedef struct {
    int batch_size;
    int seq_len;
    int n_heads;
    int n_kv_heads;
    int head_dim;
} ft_attention_shape;

/* The largest shapes a model will run: what the backend sizes its scratch by. */
typedef struct {
    int max_rows;           /* batch_size * seq_len */
    int max_seq_len;
    int max_features;       /* the widest linear-layer input */
    int max_rank;           /* LoRA rank; 0 without LoRA */
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
    void *context;
    void (*destroy)(ft_backend *self);

    /* --- memory: alloc returns NULL with ft_error set --- */
    void *(*alloc)(ft_backend *self, size_t bytes);
    void (*free)(ft_backend *self, void *pointer);
    void (*upload)(ft_backend *self, void *device, const void *host, size_t bytes);
    void (*download)(ft_backend *self, void *host, const void *device, size_t bytes);
    void (*zero)(ft_backend *self, void *device, size_t bytes);
    /* Reserves scratch memory for ops up to these shapes; -1 with ft_error when it cannot. */
    int (*reserve)(ft_backend *self, const ft_backend_limits *limits);
    size_t (*reserved_bytes)(const ft_backend *self);

    /* --- elementwise and row ops --- */
    /* out[r] = table[tokens[r]] */
    void (*embedding_forward)(ft_backend *self, float *out, const float *table, const int32_t *tokens,
                              int rows, int dim);
    void (*embedding_backward)(ft_backend *self, float *grad_table, const float *grad_out,
                               const int32_t *tokens, int rows, int dim);
    /* out = x / sqrt(mean(x^2) + eps) * weight, per row; rstd[r] saved for backward. */
    void (*rmsnorm_forward)(ft_backend *self, float *out, float *rstd, const float *x, const float *weight,
                            int rows, int dim, float eps);
    void (*rmsnorm_backward)(ft_backend *self, float *grad_x, bool accumulate, float *grad_weight,
                             const float *grad_out, const float *x, const float *weight, const float *rstd,
                             int rows, int dim);
    /* Rotates x [rows, n_heads * head_dim] in place by the angles of each row's
     * position: pairs (i, i + head_dim/2), cos and sin tables [positions, head_dim/2]. */
    void (*rope_forward)(ft_backend *self, float *x, const int32_t *positions, const float *cos_table,
                         const float *sin_table, int rows, int n_heads, int head_dim);
    void (*rope_backward)(ft_backend *self, float *grad_x, const int32_t *positions, const float *cos_table,
                          const float *sin_table, int rows, int n_heads, int head_dim);
    /* out = silu(gate) * up */
    void (*swiglu_forward)(ft_backend *self, float *out, const float *gate, const float *up, size_t n);
    void (*swiglu_backward)(ft_backend *self, float *grad_gate, float *grad_up, const float *grad_out,
                            const float *gate, const float *up, size_t n);
    /* out = a + b (out may be a or b) */
    void (*add)(ft_backend *self, float *out, const float *a, const float *b, size_t n);

    /* --- matrix ops --- */
    /* out [rows, out_features] = x W^T + bias (NULL: none) + the LoRA term (NULL: none) */
    void (*linear_forward)(ft_backend *self, float *out, const float *x, const float *weight, const float *bias,
                           const ft_lora_op *lora, int rows, int in_features, int out_features);
    void (*linear_backward)(ft_backend *self, float *grad_x, bool accumulate, float *grad_weight,
                            float *grad_bias, const float *grad_out, const float *x, const float *weight,
                            const ft_lora_op *lora, int rows, int in_features, int out_features);
    /* Softmax attention with scale 1/sqrt(head_dim); logsumexp [batch, n_heads, seq_len]
     * saved for backward. */
    void (*attention_forward)(ft_backend *self, float *out, float *logsumexp, const float *q, const float *k,
                              const float *v, const int32_t *segments, const ft_attention_shape *shape);
    void (*attention_backward)(ft_backend *self, float *grad_q, float *grad_k, float *grad_v,
                               const float *grad_out, const float *q, const float *k, const float *v,
                               const float *logsumexp, const int32_t *segments,
                               const ft_attention_shape *shape);

    /* --- loss --- */
    /* losses[r] = logsumexp(logits[r]) - logits[r][targets[r]]; 0 where targets[r] < 0. */
    void (*cross_entropy_forward)(ft_backend *self, float *losses, const float *logits, const int32_t *targets,
                                  int rows, int vocab);
    /* grad_logits = (softmax(logits) - onehot(target)) * grad_scale; 0 rows where
     * targets[r] < 0. grad_logits may be logits (in place). */
    void (*cross_entropy_backward)(ft_backend *self, float *grad_logits, const float *logits,
                                   const int32_t *targets, int rows, int vocab, float grad_scale);

    /* --- optimizer --- */
    void (*adamw)(ft_backend *self, float *param, const float *grad, float *exp_avg, float *exp_avg_sq, size_t n,
                  const ft_adamw_hyper *hyper);
    double (*sum_squares)(ft_backend *self, const float *x, size_t n);
    void (*scale)(ft_backend *self, float *x, size_t n, float factor);
};

/* The fp32 reference backend: plain C and OpenBLAS's sgemm with `threads`
 * threads (0: one per core). */
ft_backend *ft_backend_cpu_create(int threads);

static inline void ft_backend_destroy(ft_backend *backend)
{
    if (backend)
        backend->destroy(backend);
}

#endif
