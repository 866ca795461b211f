/* model_internal: what model.c (weights, loading, plans) and model_pass.c
 * (forward and backward) share. */
#ifndef FTPIPE_MODEL_INTERNAL_H
#define FTPIPE_MODEL_INTERNAL_H

#include <stdint.h>

#include "ftpipe/model.h"

#define FT_ABSENT SIZE_MAX /* offset of a weight this architecture lacks */

/* Where each weight of a layer starts in the parameter (and gradient) buffer. */
typedef struct {
    size_t input_norm, q, q_bias, k, k_bias, v, v_bias, o, q_norm, k_norm, post_norm, gate, up, down;
} ft_layer_offsets;

/* Activations of one layer, saved by forward for backward. In inference every
 * layer shares one set (only the residual stream alternates). */
typedef struct {
    float *input;                  /* residual stream entering the layer [rows, hidden] */
    float *ln1, *ln1_rstd;         /* input_layernorm out, and its 1/rms per row */
    float *q_lin, *q_rstd;         /* q_proj out and q_norm's 1/rms per head (qk_norm only) */
    float *k_lin, *k_rstd;
    float *q, *k, *v;              /* attention inputs: q, k normalised and rotated */
    float *logsumexp;              /* [batch, heads, seq_len] */
    float *attn;                   /* attention out, o_proj's input */
    float *mid;                    /* residual stream after attention */
    float *ln2, *ln2_rstd;
    float *gate, *up, *act;        /* act = silu(gate) * up, down_proj's input */
    float *lora_xa[FT_LORA_TARGET_COUNT];
} ft_layer_activations;

typedef struct {
    ft_layer_activations *layers;
    float *final_input;            /* residual stream after the last layer */
    float *final_norm, *final_rstd;
    float *logits;                 /* a chunk of head_chunk_rows rows */
    float *losses;                 /* [rows] */
    float *rope_cos, *rope_sin;    /* [max_seq_len, head_dim / 2] */
    int32_t *tokens, *positions, *segments, *targets;
    /* backward's working gradients (training only) */
    float *grad_residual, *grad_hidden, *grad_attn;
    float *grad_q, *grad_k, *grad_v, *grad_q_lin, *grad_k_lin;
    float *grad_gate, *grad_up, *grad_act;
} ft_activations;

struct ft_model {
    ft_model_config config;
    ft_model_options options;
    ft_backend *backend;
    float *params;                 /* every base weight, one allocation */
    float *grads;                  /* same layout; full fine-tuning only */
    size_t n_params;
    size_t embed, final_norm, lm_head; /* offsets; lm_head == embed when tied */
    ft_layer_offsets *layers;
    ft_param_tensor *weights;      /* HF names, for loading, saving and the optimizer */
    size_t n_weights;
    ft_lora *lora;
    float *activation_memory;
    ft_activations act;
    int head_chunk_rows;
    float *host_losses;            /* [max_rows] */
    ft_memory_plan plan;
};

/* Slices `base` (NULL: only counts) into the activations for these options;
 * returns their size in floats. */
size_t ft_model_plan_activations(const ft_model_config *config, const ft_model_options *options,
                                 int head_chunk_rows, float *base, ft_activations *act);
/* Rows of logits computed at once: the head's output never exceeds ~64 MiB. */
int ft_model_head_chunk_rows(const ft_model_config *config, int max_rows);

#endif
