/* model: a Llama-family decoder (Qwen2/Qwen2.5, Qwen3, Llama 3) on a backend:
 * its weights loaded from a Hugging Face folder, forward and backward over a
 * batch, for full fine-tuning or a LoRA adapter. A Qwen2-VL model adds its
 * vision tower (vision_qwen2.h, frozen) and M-RoPE (mrope.h): a batch brings
 * its images' preprocessed patches, whose features replace the embeddings of
 * the image tokens. A trained projector (projector.h) takes the gradients at
 * those tokens.
 *
 * Memory is planned when the model is made, for the largest batch it will run:
 * parameters, gradients and activations are one allocation each, sliced into
 * named tensors, so ft_model_plan_memory tells the peak before anything is
 * loaded, and no step allocates. */
#ifndef FTPIPE_MODEL_H
#define FTPIPE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/backend/backend.h"
#include "ftpipe/formats/image_store.h"
#include "ftpipe/formats/model_config.h"
#include "ftpipe/model/adamw.h"
#include "ftpipe/model/lora.h"

typedef enum {
    FT_FINETUNE_NONE,  /* inference: no gradients, activations not kept per layer */
    FT_FINETUNE_LORA,  /* base weights frozen, a LoRA adapter trained */
    FT_FINETUNE_FULL,  /* every weight trained */
} ft_finetuning;

typedef struct {
    int max_batch_size;
    int max_seq_len;             /* also the largest position + 1 */
    ft_finetuning finetuning;
    bool use_lora;               /* apply an adapter (always with FT_FINETUNE_LORA; optional for NONE) */
    ft_lora_config lora;
    /* Keep only each layer's input in training and recompute the rest of its
     * activations during backward (HF's gradient_checkpointing): less memory,
     * one more forward pass of compute; the gradients are the same. */
    bool gradient_checkpointing;
    /* A vision-language model's multi-modal projector trained whole, beside the
     * language model (LLaMA-Factory's freeze_multi_modal_projector = false with
     * full fine-tuning), or alone with freeze_language_model (train_mm_proj_only):
     * FT_FINETUNE_FULL only, on a float backend. LoRA on the projector's linear
     * layers comes with the adapter's targets (FT_LORA_PROJECTOR_*). */
    bool train_projector;
    bool freeze_language_model;
    /* Full fine-tuning at ZeRO stage 2 or 3 over this many ranks: the model
     * allocates no whole float gradients, and the trainer gives it grad_shards.h's
     * shard and window before training. 0 or 1: whole gradients. */
    int gradient_shards;
    /* ZeRO over this many ranks (0 or 1: none): the plan, and so the cuda
     * backend's check before anything is allocated, counts one rank's share of
     * AdamW's moments, or none of them when offload_optimizer keeps them in host
     * memory (optimizer_offloaded); the trainer allocates them (zero.h). */
    int optimizer_shards;
    bool optimizer_offloaded;
} ft_model_options;

/* One batch of rows of seq_len tokens each, in host memory, [batch_size * seq_len]. */
typedef struct {
    int batch_size;
    int seq_len;
    const int32_t *tokens;
    const int32_t *positions;    /* RoPE position: restarts at 0 for each packed sample */
    const int32_t *segments;     /* token i sees token j <= i of its row only if their segments are equal */
    const int32_t *targets;      /* the next token to predict at each position; negative: no loss here */
    /* The loss is averaged over this many target tokens: those of the whole
     * accumulated batch when micro-batches add up; 0: this batch's own count. */
    int64_t loss_denominator;
    uint64_t dropout_seed;       /* LoRA dropout masks; give each micro-batch its own */
} ft_batch;

typedef struct {
    size_t parameter_bytes;      /* base weights */
    size_t master_bytes;         /* full fine-tuning on bf16: the weights' float master copy (ZeRO-3:
                                  * this rank's shard of it; 0 when offload_optimizer holds it in host memory) */
    size_t adapter_bytes;        /* LoRA A and B */
    size_t gradient_bytes;
    size_t optimizer_bytes;      /* AdamW's two moments of what is trained */
    size_t activation_bytes;
    size_t scratch_bytes;        /* the backend's, for the largest op (0 before a backend is known) */
    size_t total_bytes;
} ft_memory_plan;

typedef struct ft_model ft_model;

/* The float gradients of the language model's weights a rank holds in full
 * fine-tuning: whole (shards = 0), or with gradient_shards = shards its shard
 * of them and the windows a pass writes into (grad_shards.h; one shard: all of
 * them and the window, for one rank streaming its weights). */
size_t ft_model_weight_gradient_bytes(const ft_model_config *config, int shards);
/* Those windows' bytes: one of the largest unit, and when a unit's
 * reduce-scatter or its way down to host memory runs beside the next unit's
 * backward (over ranks, or with the shard in host memory) a second of the
 * largest decoder layer, which the layers take in turns with the first. */
size_t ft_model_gradient_window_bytes(const ft_model_config *config, int shards, bool on_host);
/* With offload_optimizer that shard is in host memory, and the backend holds
 * the windows and a staging buffer of the largest unit's part: its bytes. */
size_t ft_model_gradient_staging_bytes(const ft_model_config *config, int shards);
/* The weights of ZeRO's largest unit (the embeddings, a decoder layer, or the
 * final norm with an untied lm_head): what ZeRO-3 gathers at once. */
size_t ft_model_config_largest_unit(const ft_model_config *config);
/* The weights a ZeRO-3 rank holds on its backend besides its shard: the two
 * units a pass gathers at once (param_shards.h), and a vision tower whole
 * (frozen and small). With one rank streaming them from host memory, all of
 * the weights it holds there. */
size_t ft_model_config_gathered_weight_bytes(const ft_model_config *config, size_t element_bytes);

/* The memory a model of this config would take with these options on a backend
 * computing in `dtype` (its activations and frozen weights; FT_DTYPE_F32 on cpu,
 * FT_DTYPE_BF16 on cuda), before the backend's own scratch. */
int ft_model_plan_memory(const ft_model_config *config, const ft_model_options *options, ft_dtype dtype,
                         ft_memory_plan *out);

/* What a model of this config with these options hands its backend's reserve:
 * the largest shapes it runs (the backend sizes its scratch by them) and its
 * planned bytes on a backend computing in `dtype`. */
int ft_model_backend_limits(const ft_model_config *config, const ft_model_options *options, ft_dtype dtype,
                            ft_backend_limits *out);

/* The base weights a config has, with HF names and shapes (value and grad NULL),
 * in the order of Hugging Face's files; the tied lm_head is not listed. Free
 * with ft_model_weight_list_free. */
ft_param_tensor *ft_model_weight_list(const ft_model_config *config, size_t *count);
void ft_model_weight_list_free(ft_param_tensor *list, size_t count);

/* Loads config.json and the weights (*.safetensors, sharded or not; f32, f16 or
 * bf16) of a model folder; with LoRA, makes a fresh adapter (A random, B zero).
 * A vision-language folder brings its vision tower: Qwen2-VL's, or LLaVA's CLIP
 * tower and projector (LlavaForConditionalGeneration: the language model is
 * text_config, its weights language_model.*). Towers are frozen; the projector
 * is trained as the options and the adapter's targets say. */
int ft_model_load(const char *model_dir, ft_backend *backend, const ft_model_options *options, ft_model **out);
void ft_model_free(ft_model *model);

/* A test hook, never called by the program: models loaded for full
 * fine-tuning after ft_model_test_master_copy(true) keep a float master copy
 * even of float weights (the cpu backend's), so that the cpu backend runs the
 * mixed-precision path of bf16 backends (its cast_from_float is a copy) and
 * tests check it, ZeRO-3's sharded master copy included. */
void ft_model_test_master_copy(bool keep);

const ft_model_config *ft_model_get_config(const ft_model *model);
ft_backend *ft_model_backend(const ft_model *model);
/* The adapter (NULL without LoRA): to load a peft adapter into it, or save it. */
ft_lora *ft_model_lora(const ft_model *model);
ft_memory_plan ft_model_memory(const ft_model *model);
/* The vision tower's (and LLaVA's projector's) weights, part of the plan's
 * parameter_bytes; kept whole on every rank under ZeRO-3. 0: a text model. */
size_t ft_model_vision_weight_bytes(const ft_model *model);

/* A vision-language model's images for the next ft_model_forward or
 * ft_model_forward_backward (which takes them, so each batch sets its own), in
 * the order their image tokens come, row after row; their token counts must
 * match the batch's runs of image tokens. They must stay alive until that pass
 * returns. A text-only model refuses images. */
int ft_model_set_images(ft_model *model, const ft_stored_image *images, int n_images);

/* The forward pass: logits (host, [rows, vocab]) when logits is not NULL, and the
 * mean loss over the batch's target tokens when loss is not NULL (0 with none). */
int ft_model_forward(ft_model *model, const ft_batch *batch, float *logits, double *loss);
/* Forward and backward: adds this batch's gradients to the trained tensors'
 * (see ft_batch.loss_denominator) and returns its mean loss. */
int ft_model_forward_backward(ft_model *model, const ft_batch *batch, double *loss);
void ft_model_zero_grads(ft_model *model);
/* Optional: called during ft_model_forward_backward each time a layer's
 * trained tensors' gradients are done for the batch (the last layer first), so
 * that adding them over the ranks can start while the layers below still run.
 * done = NULL removes it. */
void ft_model_on_layer_gradients(ft_model *model, void (*done)(void *context, int layer), void *context);

/* What is trained: the adapter's tensors, or every weight (HF names), with the
 * projector's when it is trained whole (alone with freeze_language_model). */
const ft_param_tensor *ft_model_trainable(const ft_model *model, size_t *count);
/* Every base weight with its HF name (the tied lm_head is not listed twice),
 * as float: with full fine-tuning on a backend whose weights are not float
 * (cuda's bf16), their float master copy, which the optimizer updates, the
 * checkpoints hold and the result is written from. */
const ft_param_tensor *ft_model_weights(const ft_model *model, size_t *count);
/* The ranks full fine-tuning's weight gradients are sharded over
 * (ft_model_options.gradient_shards, when the weights are trained); 0: none
 * (whole gradients, or no weight trained). */
int ft_model_gradient_shards(const ft_model *model);
/* Whether the language model's weights are trained (full fine-tuning, not of the projector alone). */
bool ft_model_trains_weights(const ft_model *model);
/* Whether a run's result holds the weights (full fine-tuning, of the projector
 * alone too), not an adapter. */
bool ft_model_saves_weights(const ft_model *model);
/* Whether those values are in host memory, not the backend's: ZeRO-3
 * gathered them there for a checkpoint or the result (param_shards.h). */
bool ft_model_weights_on_host(const ft_model *model);
/* After the master copy changed (an optimizer step, a resume): the weights the
 * passes read are made from it again, rounded to the backend's dtype. Nothing
 * to do where the weights are float (they are the master copy). */
void ft_model_refresh_weights(ft_model *model);

#endif
