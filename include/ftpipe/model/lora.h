/* lora: LoRA adapters as peft makes them. For each targeted linear layer W
 * [out, in] of each decoder layer: A [rank, in], initialised kaiming-uniform as
 * peft does (bound 1/sqrt(in)), and B [out, rank], zeros; the layer computes
 * W x + scaling * B A dropout(x), scaling = alpha / rank, or alpha / sqrt(rank)
 * with rsLoRA. Tensor names and the adapter folder (adapter_config.json,
 * adapter_model.safetensors) are peft's, both ways. */
#ifndef FTPIPE_LORA_H
#define FTPIPE_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/backend/backend.h"
#include "ftpipe/formats/model_config.h"
#include "ftpipe/model/adamw.h"

typedef enum {
    FT_LORA_Q,
    FT_LORA_K,
    FT_LORA_V,
    FT_LORA_O,
    FT_LORA_GATE,
    FT_LORA_UP,
    FT_LORA_DOWN,
    FT_LORA_TARGET_COUNT
} ft_lora_target;

#define FT_LORA_ALL_TARGETS ((1u << FT_LORA_TARGET_COUNT) - 1)
/* A vision-language model's projector's two linear layers (LLaVA's
 * multi_modal_projector.linear_1 and linear_2, Qwen2-VL's visual.merger.mlp.0
 * and mlp.2), which lora_target names as LLaMA-Factory matches them; "all"
 * leaves them out, as LLaMA-Factory's find_all_linear_modules does. */
#define FT_LORA_PROJECTOR_FIRST (1u << FT_LORA_TARGET_COUNT)
#define FT_LORA_PROJECTOR_SECOND (1u << (FT_LORA_TARGET_COUNT + 1))
#define FT_LORA_PROJECTOR_TARGETS (FT_LORA_PROJECTOR_FIRST | FT_LORA_PROJECTOR_SECOND)

typedef struct {
    int rank;
    double alpha;
    double dropout;       /* probability, in [0, 1) */
    bool use_rslora;
    unsigned targets;     /* bit (1 << ft_lora_target) for each targeted kind of layer */
    uint64_t seed;        /* A's initialisation and the dropout masks */
} ft_lora_config;

/* "all", or names separated by commas or blanks: q_proj or q, k_proj, v_proj,
 * o_proj, gate_proj, up_proj, down_proj, and the projector's linear_1 or mlp.0,
 * linear_2 or mlp.2. An unknown name is an error listing them. */
int ft_lora_parse_targets(const char *text, unsigned *targets);
const char *ft_lora_target_name(ft_lora_target target); /* "q_proj" */
/* Checks rank, alpha, dropout and targets; errors name the parameter. */
int ft_lora_config_check(const ft_lora_config *config);
double ft_lora_scaling(const ft_lora_config *config);
/* Reads rank, alpha, dropout, rsLoRA and targets from a peft adapter_config.json
 * (or the folder holding it). */
int ft_lora_config_load(const char *path, ft_lora_config *out);

/* The widths of the projector's first (which 0) or second (1) linear layer. */
void ft_lora_projector_shape(const ft_model_config *model, int which, int *in_features, int *out_features);
/* The input and output widths of a target's linear layer in this model. */
void ft_lora_target_shape(const ft_model_config *model, ft_lora_target target, int *in_features,
                          int *out_features);
/* peft's name: "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight". Caller frees. */
char *ft_lora_tensor_name(int layer, ft_lora_target target, char matrix /* 'A' or 'B' */);

typedef struct {
    float *a;             /* [rank, in_features], backend memory */
    float *b;             /* [out_features, rank] */
    float *grad_a;        /* NULL unless trainable */
    float *grad_b;
    int in_features;
    int out_features;
} ft_lora_weights;

typedef struct ft_lora ft_lora;

/* An adapter for the model, A initialised from config->seed and B zero; values
 * (and gradients when trainable) are one allocation each in the backend.
 * Projector targets on a model without a projector are an error. */
int ft_lora_create(const ft_model_config *model, const ft_lora_config *config, ft_backend *backend,
                   bool trainable, ft_lora **out);
void ft_lora_free(ft_lora *lora);
const ft_lora_config *ft_lora_get_config(const ft_lora *lora);
/* NULL when the layer kind is not targeted. */
const ft_lora_weights *ft_lora_at(const ft_lora *lora, int layer, ft_lora_target target);
/* The adapter on the projector's first (which 0) or second (1) linear layer;
 * NULL when it is not targeted. */
const ft_lora_weights *ft_lora_projector_at(const ft_lora *lora, int which);
/* A and B of every targeted layer, with peft's names, for the optimizer and for saving. */
const ft_param_tensor *ft_lora_tensors(const ft_lora *lora, size_t *count);
size_t ft_lora_parameter_count(const ft_lora *lora);

/* ZeRO-3 of LoRA (param_shards.h): decoder layer l's adapters are elements
 * [l x n, (l + 1) x n) of the values' layout, with n given here; 0 when the
 * adapter has a projector's adapters too, which this sharding leaves whole
 * (the adapter then stays whole). */
size_t ft_lora_layer_values(const ft_lora *lora);
/* Layer l's adapters read their values from `values` (n floats; NULL:
 * nowhere) from now on, their gradients staying where they are. */
void ft_lora_place_layer(ft_lora *lora, int layer, float *values);
/* The values' one allocation freed, every layer then read where
 * ft_lora_place_layer puts it. */
void ft_lora_release_values(ft_lora *lora);
/* While set (NULL: no longer), ft_lora_save writes these values, the whole
 * layout in host memory (ZeRO-3's gathered adapter), instead of the backend's. */
void ft_lora_save_from(ft_lora *lora, float *values);
/* The same count for an adapter of this config on this model, without making
 * it (the memory plan's). */
size_t ft_lora_planned_parameter_count(const ft_model_config *model, const ft_lora_config *config);

/* Replaces the weights with a peft adapter's (adapter_model.safetensors or its
 * folder); every tensor must be there with the right shape. */
int ft_lora_load(ft_lora *lora, const char *path);
/* Writes a peft adapter folder: adapter_config.json and adapter_model.safetensors (f32). */
int ft_lora_save(const ft_lora *lora, const char *dir, const char *base_model_name);

#endif
