/* model_config: a Hugging Face config.json for the architectures ftpipe trains:
 * Qwen2/Qwen2.5 (qkv bias), Qwen3 (q/k RMSNorm, no bias), Llama 3 (rope scaling
 * "llama3"), and Qwen2-VL and Qwen2.5-VL (Qwen2VLForConditionalGeneration,
 * Qwen2_5_VLForConditionalGeneration: a Qwen2 language model with M-RoPE, and
 * a vision tower), read from the released checkpoints' flat layout and from
 * transformers 5's text_config / vision_config layout.
 * Any other architecture or an unsupported option is refused by name. */
#ifndef FTPIPE_MODEL_CONFIG_H
#define FTPIPE_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { FT_ARCH_QWEN2, FT_ARCH_QWEN3, FT_ARCH_LLAMA } ft_architecture;

/* Qwen2-VL's and Qwen2.5-VL's vision transformer (vision_config). */
typedef struct {
    int depth;                    /* blocks */
    int embed_dim;                /* width of the blocks (Qwen2.5-VL's hidden_size) */
    int num_heads;
    int mlp_hidden;               /* embed_dim * mlp_ratio (Qwen2.5-VL's intermediate_size) */
    int out_hidden;               /* hidden_size: the merger's output, the language model's width */
    int in_channels;
    int patch_size;
    int temporal_patch_size;
    int spatial_merge_size;
    double rope_theta;            /* of its 2-D rotary embedding */
    /* Qwen2.5-VL: RMSNorm, SwiGLU MLP, an RMSNorm merger, and attention within
     * windows of window_size pixels a side but in the full-attention blocks */
    bool qwen2_5;
    int window_size;
    uint64_t full_attention_blocks;   /* bit b: block b attends over the whole image (fullatt_block_indexes) */
    int tokens_per_second;            /* of video frames; written back, unused for images */
} ft_vision_config;

/* LLaVA's CLIP vision tower (vision_config) and the rest of its config.json
 * beside text_config (llava_config.h reads them). */
typedef struct {
    int hidden_size, intermediate_size, num_hidden_layers, num_attention_heads;
    int image_size, patch_size, num_channels;
    double layer_norm_eps;
} ft_clip_vision_config;

typedef struct {
    ft_clip_vision_config vision;
    int text_hidden_size;       /* the projector's output: text_config.hidden_size */
    int image_token_id;         /* image_token_index (image_token_id in transformers 5) */
    int vision_feature_layer;   /* an index into the tower's hidden states, negative from the end */
    bool select_default;        /* vision_feature_select_strategy "default": CLS dropped; "full": kept */
    bool projector_bias;        /* multimodal_projector_bias */
} ft_llava_config;

typedef struct {
    ft_architecture architecture; /* of the language model: FT_ARCH_QWEN2 for Qwen2-VL */
    char architecture_name[64];   /* as in config.json: "Qwen2ForCausalLM" */
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;
    int head_dim;                 /* hidden_size / heads unless given */
    int max_position_embeddings;
    double rms_norm_eps;
    double rope_theta;
    bool attention_bias;          /* q,k,v projections carry a bias (Qwen2) */
    bool qk_norm;                 /* RMSNorm on q and k per head (Qwen3) */
    bool tie_word_embeddings;
    /* rope_scaling {"rope_type": "llama3", ...}; has_llama3_rope_scaling false when absent. */
    bool has_llama3_rope_scaling;
    double rope_scaling_factor;
    double rope_low_freq_factor;
    double rope_high_freq_factor;
    int rope_original_max_position_embeddings;
    int bos_token_id;             /* -1 when absent */
    int eos_token_id;             /* the first one when a list; -1 when absent */
    char torch_dtype[16];         /* "bfloat16", "float32", ... ("" when absent) */
    /* Qwen2-VL: the vision tower, the special tokens, and M-RoPE, which gives
     * the head_dim/2 rotary frequencies to the (temporal, height, width)
     * positions in mrope_section's counts. */
    bool vision_language;
    ft_vision_config vision;
    int mrope_section[3];
    int image_token_id, video_token_id, vision_start_token_id, vision_end_token_id;
    /* LLaVA's language model (text_config): image features from a CLIP tower
     * at image_token_id, positions by plain RoPE (vision_language stays false). */
    bool llava;
    ft_llava_config llava_tower;  /* with llava: the whole config's tower and projector, for memory plans */
} ft_model_config;

/* path: a config.json or a model folder holding one. */
int ft_model_config_load(const char *path, ft_model_config *out);
int ft_model_config_parse(const char *json_text, const char *origin, ft_model_config *out);
/* config.json text for a config, as transformers writes it. Caller frees. */
char *ft_model_config_to_json(const ft_model_config *config);

/* Parameter count of the whole model (with its vision tower). */
size_t ft_model_config_parameter_count(const ft_model_config *config);

#endif
