/* cpu_ops: what the cpu backend's files share (see include/ftpipe/backend.h for
 * the ops' contracts). Matrix products go through OpenBLAS's cblas_sgemm. */
#ifndef FTPIPE_CPU_OPS_H
#define FTPIPE_CPU_OPS_H

#include <stddef.h>

#include "ftpipe/backend.h"

/* The backend's scratch memory, at least `floats` long. reserve() sizes it up
 * front; a larger request grows it (so a planning slip costs time, not a crash). */
float *ft_cpu_scratch(ft_backend *self, size_t floats);

/* Scratch the linear and attention ops need for the given limits, in floats. */
size_t ft_cpu_linear_scratch_floats(const ft_backend_limits *limits);
size_t ft_cpu_attention_scratch_floats(const ft_backend_limits *limits);

void ft_cpu_linear_forward(ft_backend *self, float *out, const float *x, const float *weight, const float *bias,
                           const ft_lora_op *lora, int rows, int in_features, int out_features);
void ft_cpu_linear_backward(ft_backend *self, float *grad_x, bool accumulate, float *grad_weight,
                            float *grad_bias, const float *grad_out, const float *x, const float *weight,
                            const ft_lora_op *lora, int rows, int in_features, int out_features);

void ft_cpu_attention_forward(ft_backend *self, float *out, float *logsumexp, const float *q, const float *k,
                              const float *v, const int32_t *segments, const ft_attention_shape *shape);
void ft_cpu_attention_backward(ft_backend *self, float *grad_q, float *grad_k, float *grad_v,
                               const float *grad_out, const float *q, const float *k, const float *v,
                               const float *logsumexp, const int32_t *segments,
                               const ft_attention_shape *shape);

#endif
