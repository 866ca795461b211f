/* model_internal: what model.c (weights, loading, plans) and model_pass.c
 * (forward and backward) share. */
#ifndef FTPIPE_MODEL_INTERNAL_H
#define FTPIPE_MODEL_INTERNAL_H

#include <stdint.h>

#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/model.h"
#include "ftpipe/model/param_shards.h"
#include "ftpipe/model/projector.h"
#include "ftpipe/model/vision_clip.h"
#include "ftpipe/model/vision_qwen2.h"

#define FT_ABSENT SIZE_MAX /* offset of a weight this architecture lacks */

/* Where each weight of a layer starts in the parameter (and gradient) buffer. */
typedef struct {
    size_t input_norm, q, q_bias, k, k_bias, v, v_bias, o, q_norm, k_norm, post_norm, gate, up, down;
} ft_layer_offsets;

/* Activations of one layer, saved by forward for backward. In inference every
 * layer shares one set (only the residual stream alternates). The `void *`
 * arrays are in the backend's dtype; statistics are float. */
typedef struct {
    void *input;                   /* residual stream entering the layer [rows, hidden] */
    void *ln1;                     /* input_layernorm out (made at the junction before the layer) */
    float *ln1_rstd;               /* ... and its 1/rms per row */
    void *q_lin, *k_lin;           /* q_proj, k_proj out (qk_norm only) */
    float *q_rstd, *k_rstd;        /* q_norm, k_norm's 1/rms per head */
    void *q, *k, *v;               /* attention inputs: q, k normalised and rotated */
    float *logsumexp;              /* [batch, heads, seq_len] */
    void *attn;                    /* attention out, o_proj's input */
    void *mid;                     /* residual stream after attention */
    void *ln2;
    float *ln2_rstd;
    void *gate, *up, *act;         /* act = silu(gate) * up, down_proj's input */
    void *lora_xa[FT_LORA_TARGET_COUNT];
} ft_layer_activations;

typedef struct {
    ft_layer_activations *layers;
    void *final_input;             /* residual stream after the last layer */
    void *final_norm;
    float *final_rstd;
    void *logits;                  /* a chunk of head_chunk_rows rows */
    float *losses;                 /* [rows] */
    float *rope_cos, *rope_sin;    /* [max_seq_len, head_dim / 2] */
    int32_t *tokens, *positions, *segments, *targets;
    /* vision-language models: M-RoPE's per-token tables [rows, head_dim / 2],
     * read through row_index (0, 1, ... rows - 1), and the image features with
     * the rows they replace */
    float *mrope_cos, *mrope_sin;
    int32_t *row_index;
    void *image_features;          /* [rows, hidden] at most */
    int32_t *image_rows;
    /* backward's working gradients (training only) */
    void *grad_residual, *grad_hidden, *grad_attn;
    void *grad_q, *grad_k, *grad_v, *grad_q_lin, *grad_k_lin;
    void *grad_gate, *grad_up, *grad_act;
} ft_activations;

/* What the model calls ZeRO-3's shards through (param_shards.c sets it with
 * them), so that the model needs nothing of that module. */
typedef struct {
    const void *(*weight)(ft_param_shards *shards, size_t offset); /* ft_param_shards_weight */
    void (*prefetch)(ft_param_shards *shards, size_t current, size_t next);
    int (*end_pass)(ft_param_shards *shards);
    void (*refresh)(ft_param_shards *shards);  /* ft_param_shards_refresh */
    void (*free)(ft_param_shards *shards);
} ft_param_shard_calls;

/* What the model calls full fine-tuning's sharded gradients through (grad_shards.c
 * sets it), so that the model needs nothing of that module. */
typedef struct ft_grad_shards ft_grad_shards;
typedef struct {
    float *(*window)(ft_grad_shards *grads, size_t offset); /* ft_grad_shards_window */
    void (*unit_done)(ft_grad_shards *grads, size_t offset);
    int (*finish)(ft_grad_shards *grads);
    void (*zero)(ft_grad_shards *grads);
} ft_grad_shard_calls;

struct ft_model {
    ft_model_config config;
    ft_model_options options;
    ft_backend *backend;
    size_t element_bytes;          /* of the backend's dtype */
    void *params;                  /* every base weight, one allocation, in the backend's dtype; NULL
                                    * while ZeRO-3 shards them */
    ft_param_shards *shards;       /* ZeRO-3: the passes read the weights through them */
    const ft_param_shard_calls *shard_calls;
    float *grads;                  /* same layout, float; full fine-tuning only, and NULL while
                                    * gradient_shards: a pass writes through grad_shards */
    ft_grad_shards *grad_shards;
    const ft_grad_shard_calls *grad_calls;
    float *master;                 /* same layout, float: full fine-tuning's master weights on a backend
                                    * whose weights are not float (cuda's bf16); NULL where they are float,
                                    * and while ZeRO-3's shards hold it */
    ft_param_tensor *master_weights; /* weights' names and shapes with values in master; NULL without a
                                      * master copy */
    bool whole_on_host;            /* params (or master) are host memory: ZeRO-3 gathered them there for a
                                    * checkpoint or the result (param_shards.h); no pass reads them */
    void *update_gate;             /* an offloaded update running beside the passes (update_gate.h); NULL:
                                    * none. A pass calls update_gate_wait(update_gate, position) before it
                                    * reads a position's values (a call, so that the model uses no module
                                    * above it) */
    void (*update_gate_wait)(void *gate, size_t position);
    ft_param_values *save_values;  /* ZeRO-3, while the weights are written: read through it unit by
                                          * unit (ft_param_shards_save_through); NULL otherwise */
    size_t n_params;
    size_t embed, final_norm, lm_head; /* offsets in elements; lm_head == embed when tied */
    ft_layer_offsets *layers;
    ft_param_tensor *weights;      /* HF names, for loading, saving and the optimizer */
    char *weight_prefix;           /* before those names in the files ("language_model." in LLaVA) */
    size_t n_weights;
    ft_lora *lora;
    void *adapter_shards;          /* ZeRO-3 of LoRA: its layers' values sharded (adapter_shards.h), freed with
                                    * the model through adapter_shards_free (before the weights' shards);
                                    * NULL: whole */
    void (*adapter_shards_free)(void *shards);
    void *activation_memory;
    ft_activations act;
    int head_chunk_rows;
    float *host_losses;            /* [max_rows] */
    void *host_logits;             /* a logits chunk in the backend's dtype, when not float */
    ft_memory_plan plan;
    void (*layer_gradients_done)(void *context, int layer); /* ft_model_on_layer_gradients */
    void *layer_gradients_context;
    /* the vision part, at most one: Qwen2-VL's tower (with M-RoPE), or LLaVA's
     * CLIP tower and projector (plain RoPE); both place their features through
     * ft_model_place_image_features */
    ft_vision_qwen2 *vision;
    ft_vision_clip *clip;
    int n_image_rows;              /* image features waiting for the next pass's embedding */
    int n_image_rows_placed;       /* ... and those the last embedding took, whose gradients a trained
                                    * projector reads */
    ft_projector *projector;       /* the tower's, when an adapter or the options train it */
    ft_param_tensor *trainable;    /* full fine-tuning with the projector: the weights' list and its */
    size_t n_trainable;
    const ft_stored_image *images; /* ft_model_set_images: the next pass's */
    int n_images;
    bool generation_mrope;         /* the pieces below rotate by M-RoPE's tables (a VL prefill) */
};

/* ZeRO's units of the weight layout: the embeddings, each decoder layer, then
 * the final norm with an untied lm_head, layers + 2 in all; unit u holds
 * elements [ft_model_unit_end(m, u - 1), ft_model_unit_end(m, u)). */
size_t ft_model_n_units(const ft_model *model);
size_t ft_model_unit_end(const ft_model *model, size_t unit);

/* The largest unit's elements: what ZeRO-3 gathers at once. */
size_t ft_model_largest_unit(const ft_model *model);
/* The elements of the windows full fine-tuning's sharded gradients are
 * written into (grad_shards.h): the largest unit's, and over ranks or with the
 * shard in host memory the largest decoder layer's beside it. */
size_t ft_model_gradient_window_elements(const ft_model *model, int ranks, bool on_host);

/* Whether full fine-tuning keeps a float master copy of the weights (their
 * dtype is not float, or a test asked for it: model.h). */
bool ft_model_keeps_master(const ft_model *model);

/* Loads weights [first, first + count) of the set into their value pointers
 * (those of master_weights when the model keeps a master copy). */
int ft_model_load_weight_range(ft_model *model, const char *model_dir, const ft_safetensors *set, size_t first,
                               size_t count);

/* What ZeRO-3's shards take of a rank's plan in the backend's memory: the
 * weights' (the shard and the gather buffers) and the float master copy's
 * shard (0 in host memory or without one). */
typedef struct {
    size_t weight_bytes;
    size_t master_bytes;
} ft_sharded_bytes;

/* Loading in steps, for param_shards.c's sharded loading: the config and the
 * weights' layout (offsets: each weight's first element; NULL with ft_error),
 * then the allocations (sharded not NULL: all but the weights and the master
 * copy, whose shards take that much of the plan), then the RoPE tables and
 * the plan. */
ft_model *ft_model_open(const char *model_dir, ft_backend *backend, const ft_model_options *options,
                        size_t **offsets);
int ft_model_allocate(ft_model *model, const size_t *offsets, const ft_sharded_bytes *sharded);
void ft_model_finish(ft_model *model, const ft_sharded_bytes *sharded);
/* A vision-language folder's tower (and LLaVA's projector), whole: after the
 * language model's weights, sharded or not. */
int ft_model_load_vision(ft_model *model, const char *model_dir);

/* Slices `base` (NULL: only counts) into the activations for these options,
 * with activations of element_bytes each; returns their size in bytes. */
size_t ft_model_plan_activations(const ft_model_config *config, const ft_model_options *options,
                                 size_t element_bytes, int head_chunk_rows, void *base, ft_activations *act);
/* The one way image features enter the language model, for any vision tower:
 * features [n_features, hidden] (host floats, one row per image token, in the
 * order of the tokens) replace the embeddings of tokens[0..rows) that are
 * config.image_token_id, in the next pass. -1 with ft_error when the counts
 * differ. */
int ft_model_place_image_features(ft_model *model, const int32_t *tokens, int rows, const float *features,
                                  int64_t n_features);

/* A vision-language model's batch of batch_size rows of seq_len tokens: the
 * images of ft_model_set_images (taken) through the tower into the image
 * tokens' places (for the next embedding), and, for Qwen2-VL, the tokens'
 * M-RoPE tables (LLaVA's positions stay plain).
 * row_next_position (NULL, or [batch_size]) receives, for each row, the
 * position that follows its first sample: where generation goes on. */
int ft_model_prepare_vision(ft_model *model, const int32_t *tokens, const int32_t *segments, int batch_size,
                            int seq_len, int32_t *row_next_position);

/* The tensor of the files that holds a weight named `name` (weight_prefix
 * included), under any of the layouts the model's kind is saved in; NULL with
 * ft_error naming it when none. */
const ft_tensor_view *ft_model_find_weight(const ft_model *model, const ft_safetensors *set, const char *name);

/* Rows of logits computed at once (2048 in bf16, 16M logits in float): see model.c. */
int ft_model_head_chunk_rows(const ft_model_config *config, int max_rows, size_t element_bytes);

/* The decoder in pieces, for generation (generate.c): the same ops as
 * ft_model_forward on the first `rows` rows of the activations, with the
 * adapter's dropout off. The caller uploads act.tokens and act.positions and
 * runs each layer's attention between qkv and finish; with generation_mrope
 * set, q and k turn by the tables ft_model_prepare_vision made instead. With
 * ZeRO-3's shards (evaluate's offload_param), qkv starts the next unit's
 * gather, as a pass's layer does. */
/* act.tokens' embeddings into layer 0's input, and its input_layernorm */
void ft_model_embed(ft_model *model, int rows);
/* layer's q, k, v (normalised and rotated) from its ln1 */
void ft_model_layer_qkv(ft_model *model, int layer, int rows);
/* from layer's attn to its output (the next layer's input, or act.final_input),
 * normalised by the next layer's input_layernorm, or the final norm */
void ft_model_layer_finish(ft_model *model, int layer, int rows);
/* logits [rows, vocab] (host floats) of x [rows, hidden], in chunks of head_chunk_rows */
void ft_model_head_logits(ft_model *model, const void *x, int rows, float *logits);
/* the greedy token of each of x's rows into ids [rows] (the backend's memory),
 * chosen by the backend where the logits are */
void ft_model_head_greedy(ft_model *model, const void *x, int rows, int32_t *ids);
/* The pieces of one prefill or decode step are done: ZeRO-3's gather buffers
 * (a model streaming its weights) are released, and a gather's failure
 * reported, -1 with ft_error; 0 otherwise. */
int ft_model_pieces_done(ft_model *model);

#endif
