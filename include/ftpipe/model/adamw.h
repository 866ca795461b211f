/* adamw: the optimizer, exactly as torch.optim.AdamW computes it: decoupled
 * weight decay (param *= 1 - lr * weight_decay) before the update, bias-corrected
 * moments, eps added outside the square root. Also gradient-norm clipping as
 * torch.nn.utils.clip_grad_norm_ does it. Its two moments live in one
 * allocation in the backend's memory, or, offloaded (DeepSpeed's
 * offload_optimizer = cpu), in host memory beside an f32 master copy of the
 * values: a step then downloads the gradients, updates on the host's cores
 * (adamw_host.h, the same bits as the backend's op) and uploads the values. */
#ifndef FTPIPE_ADAMW_H
#define FTPIPE_ADAMW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/backend/backend.h"

/* A trained tensor: its values and gradient in the backend's memory. */
typedef struct {
    const char *name;      /* as in the files it is saved to (HF or peft names) */
    float *value;
    float *grad;           /* NULL when not trained */
    size_t count;
    bool weight_decay;     /* false for norms and biases, as the HF Trainer does */
    int n_dims;            /* 1 or 2 */
    int64_t shape[2];
} ft_param_tensor;

typedef struct {
    double beta1;          /* torch's defaults: 0.9, 0.999, 1e-8 */
    double beta2;
    double eps;
    double weight_decay;
} ft_adamw_config;

typedef struct ft_adamw ft_adamw;

/* Zeroed moments for the tensors (which must outlive the optimizer). */
int ft_adamw_create(ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                    const ft_adamw_config *config, ft_adamw **out);
/* The same, offloaded: the moments and an f32 master copy of the values in
 * the backend's host memory (alloc_host: page-locked on cuda), the update on
 * the host's cores. grads_on_host: the tensors' gradients are host memory
 * (offload_optimizer's sharded gradients, grad_shards.h), read in place;
 * otherwise each step downloads them into a host buffer. */
int ft_adamw_create_offloaded(ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                              const ft_adamw_config *config, bool grads_on_host, ft_adamw **out);
/* Offloaded too, for tensors whose values are host memory already (ZeRO-3's
 * float master shard with offload_optimizer, param_shards.h): the update
 * writes them in place, and no copy of them is kept. */
int ft_adamw_create_on_host(ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                            const ft_adamw_config *config, bool grads_on_host, ft_adamw **out);
void ft_adamw_free(ft_adamw *optimizer);

/* One update of every tensor from its gradient, at this step's learning rate. */
void ft_adamw_step(ft_adamw *optimizer, double learning_rate);
/* Offloaded, the same step in parts, with the same bits: begin counts the
 * step, then every range of tensors [first, first + count) is updated once,
 * in any grouping, from any one thread at a time (ZeRO-3 updates unit by
 * unit while the next pass gathers the units done, zero.h). */
void ft_adamw_step_begin(ft_adamw *optimizer);
void ft_adamw_step_tensors(ft_adamw *optimizer, double learning_rate, size_t first, size_t count);
/* Offloaded with the gradients in the backend's memory: this step's come down
 * now, all of them, so that the parts above read no backend memory but the
 * values they write (an update beside the next pass, which zeroes the
 * gradients: update_gate.h). ft_adamw_step downloads its own again. */
void ft_adamw_fetch_grads(ft_adamw *optimizer);
int64_t ft_adamw_step_count(const ft_adamw *optimizer);

/* The 2-norm of all gradients together; when max_norm > 0 and the norm exceeds
 * it, scales them by max_norm / (norm + 1e-6). Returns the norm before clipping. */
double ft_adamw_clip_grad_norm(ft_adamw *optimizer, double max_norm);
/* Its parts, where the gradients are (the backend's ops, or host_norm.h's on
 * the optimizer's threads when they are host memory): the sum of the squares
 * of n gradients, and one gradient scaled. */
double ft_adamw_grad_squares(ft_adamw *optimizer, const float *const *grads, const size_t *counts, size_t n);
void ft_adamw_scale_grad(ft_adamw *optimizer, float *grad, size_t count, float factor);

/* For checkpoints: the moments of tensor i (backend memory; host memory when
 * offloaded), and the step count. */
void ft_adamw_moments(const ft_adamw *optimizer, size_t index, float **exp_avg, float **exp_avg_sq);
/* Offloaded: every tensor's exp_avg in order, then every exp_avg_sq, in host
 * memory (checkpoint.h's host form); NULL when the state is in the backend's memory. */
float *ft_adamw_host_moments(const ft_adamw *optimizer);
/* Offloaded: the master copy reads the tensors' values again (after a resume
 * loaded them); nothing to do when the values are the host copy. */
void ft_adamw_reload_values(ft_adamw *optimizer);
void ft_adamw_set_step_count(ft_adamw *optimizer, int64_t steps);
size_t ft_adamw_state_bytes(const ft_adamw *optimizer);

#endif
