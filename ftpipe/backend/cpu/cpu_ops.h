/* cpu_ops: what the cpu backend's files share (see include/ftpipe/backend/backend.h for
 * the ops' contracts). Matrix products go through OpenBLAS's cblas_sgemm. */
#ifndef FTPIPE_CPU_OPS_H
#define FTPIPE_CPU_OPS_H

#include <stddef.h>

#include "ftpipe/backend/backend.h"

/* Memory (cpu_memory.c): the backend's context holds what alloc gives out, for the
 * peak, and one scratch block that the ops share. */
void *ft_cpu_memory_new(void);
void ft_cpu_memory_free(void *context);
void *ft_cpu_alloc(ft_backend *self, size_t bytes);
void ft_cpu_free(ft_backend *self, void *pointer);
size_t ft_cpu_reserved_bytes(const ft_backend *self);
size_t ft_cpu_peak_bytes(const ft_backend *self);
/* Sizes the scratch to at least `floats` up front; -1 with ft_error when the host
 * has not that much memory. */
int ft_cpu_scratch_reserve(ft_backend *self, size_t floats);
/* The scratch, at least `floats` long; a request beyond the reserve grows it (so a
 * planning slip costs time, not a crash). */
float *ft_cpu_scratch(ft_backend *self, size_t floats);

/* Scratch the linear and attention ops need for the given limits, in floats. */
size_t ft_cpu_linear_scratch_floats(const ft_backend_limits *limits);
size_t ft_cpu_attention_scratch_floats(const ft_backend_limits *limits);

/* The `void *` arrays are float: this backend's dtype. */
void ft_cpu_linear_forward(ft_backend *self, void *out, const void *x, const void *weight, const void *bias,
                           const ft_lora_op *lora, int rows, int in_features, int out_features);
void ft_cpu_linear_backward(ft_backend *self, void *grad_x, bool accumulate, float *grad_weight, float *grad_bias,
                            const void *grad_out, const void *x, const void *weight, const ft_lora_op *lora,
                            int rows, int in_features, int out_features);

void ft_cpu_attention_forward(ft_backend *self, void *out, float *logsumexp, const void *q, const void *k,
                              const void *v, const int32_t *segments, const ft_attention_shape *shape);
void ft_cpu_attention_backward(ft_backend *self, void *grad_q, void *grad_k, void *grad_v, const void *grad_out,
                               const void *out, const void *q, const void *k, const void *v,
                               const float *logsumexp, const int32_t *segments, const ft_attention_shape *shape);

/* cpu_vision_ops.c: the forward-only ops of the vision towers */
void ft_cpu_layernorm_forward(ft_backend *self, void *out, const void *x, const void *weight, const void *bias,
                              int rows, int dim, float eps);
void ft_cpu_activation_forward(ft_backend *self, void *out, const void *x, size_t n, ft_activation activation);
void ft_cpu_activation_backward(ft_backend *self, void *grad_x, const void *grad_out, const void *x, size_t n,
                                ft_activation activation);
void ft_cpu_layernorm_backward(ft_backend *self, void *grad_x, float *grad_weight, float *grad_bias,
                               const void *grad_out, const void *x, const void *weight, int rows, int dim, float eps);
void ft_cpu_add_forward(ft_backend *self, void *out, const void *a, const void *b, size_t n);

/* cpu_decode.c: generation with a KV cache */
void ft_cpu_argmax_rows(ft_backend *self, int32_t *out, const void *x, int rows, int width);
void ft_cpu_gather_rows(ft_backend *self, void *dst, const void *src, const int32_t *index, int rows, int width);
void ft_cpu_scatter_rows(ft_backend *self, void *dst, const void *src, const int32_t *index, int rows, int width);
void ft_cpu_attention_decode(ft_backend *self, void *out, const void *q, const void *k_cache, const void *v_cache,
                             const int32_t *lengths, int batch, int max_len, int n_heads, int n_kv_heads,
                             int head_dim);

#endif
