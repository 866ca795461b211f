/* projector: a vision-language model's multi-modal projector, as the towers
 * run it and as it is trained. LLaVA's multi_modal_projector is Linear, GELU,
 * Linear over the selected patch features; Qwen2-VL's and Qwen2.5-VL's merger
 * first normalises each patch (LayerNorm, or RMSNorm in Qwen2.5-VL) and
 * concatenates merge x merge of them into a row, then Linear, GELU, Linear.
 *
 * Frozen, it is forward only. Trained (LLaMA-Factory's freeze_multi_modal_projector
 * = false), forward keeps what backward reads, and backward takes the
 * gradient of its output rows (the language model's inputs at the image
 * tokens) into the gradients of its weights (trained whole: the norm's too)
 * or of LoRA adapters on its two linear layers. Nothing flows on into the
 * tower, which stays frozen. The weights stay where the tower keeps them. */
#ifndef FTPIPE_PROJECTOR_H
#define FTPIPE_PROJECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/backend/backend.h"
#include "ftpipe/model/adamw.h"
#include "ftpipe/model/lora.h"

/* The weights (backend memory, the backend's dtype) and shapes. */
typedef struct {
    const char *name_prefix;    /* of the weights' HF names: "visual.merger." or "multi_modal_projector." */
    const char *linear_names[2]; /* "mlp.0", "mlp.2" or "linear_1", "linear_2" */
    const void *norm_weight;    /* NULL: no norm (LLaVA) */
    const void *norm_bias;      /* NULL: RMSNorm */
    int norm_width;             /* the norm runs over rows of norm_width; in_features / norm_width make a row */
    float norm_eps;
    const void *weight_1, *bias_1; /* [mid, in], [mid] (bias NULL: none) */
    const void *weight_2, *bias_2; /* [out, mid], [out] */
    int in_features, mid_features, out_features;
    ft_activation activation;
} ft_projector_weights;

typedef struct ft_projector ft_projector;

ft_projector *ft_projector_create(ft_backend *backend, const ft_projector_weights *weights);
void ft_projector_free(ft_projector *projector);

/* Trains the weights whole from now on: float gradients (zeroed) for each, the
 * weights being float (the cpu backend). -1 with ft_error on another dtype. */
int ft_projector_train_whole(ft_projector *projector);
/* The trained weights with HF names, values and gradients (NULL before
 * ft_projector_train_whole). */
const ft_param_tensor *ft_projector_tensors(const ft_projector *projector, size_t *count);
/* LoRA adapters on the two linear layers (either NULL: none), from the model's
 * adapter (ft_lora_projector_at): applied in forward, and their gradients
 * filled in backward when they have them. */
void ft_projector_set_lora(ft_projector *projector, const ft_lora_weights *first, const ft_lora_weights *second,
                           const ft_lora_config *config);
/* The dropout masks of the next forward (a micro-batch's seed). */
void ft_projector_set_dropout_seed(ft_projector *projector, uint64_t seed);
/* Whether backward has anything to fill. */
bool ft_projector_is_trained(const ft_projector *projector);

/* The elements of its weights (a NULL weight or bias counts as absent). */
size_t ft_projector_parameter_count(const ft_projector_weights *weights);
/* Backend bytes for a pass over `rows` output rows beside the weights
 * (activations kept for backward and backward's own when trained). */
size_t ft_projector_work_bytes(const ft_projector_weights *weights, int64_t rows, int lora_rank, bool trained,
                               size_t element_bytes);

/* out [rows, out_features] of x [rows, in_features] (as norm_width-wide rows
 * when there is a norm), in the backend's memory. When trained, x must stay
 * unchanged until ft_projector_backward. -1 with ft_error when memory fails. */
int ft_projector_forward(ft_projector *projector, void *out, const void *x, int64_t rows);
/* From the gradient of the last forward's output [rows, out_features], adds
 * into the trained gradients (weights' or adapters'). */
void ft_projector_backward(ft_projector *projector, const void *grad_out);

#endif
