/* vision_memory: a tower's weights and pass work from the model's config. */
#include "ftpipe/model/vision_memory.h"

#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/vision_qwen2.h"

/* The encoder layers vision_clip runs: those before the feature layer's hidden state. */
static size_t clip_layers_run(const ft_llava_config *llava)
{
    int layer = llava->vision_feature_layer; /* an index into [embeddings, layer 1, ..., layer L] */
    return (size_t)(layer >= 0 ? layer : llava->vision.num_hidden_layers + 1 + layer);
}

static size_t clip_positions(const ft_clip_vision_config *vision)
{
    size_t side = (size_t)(vision->image_size / vision->patch_size);
    return side * side + 1; /* the patches and CLS */
}

static size_t clip_weight_count(const ft_llava_config *llava)
{
    const ft_clip_vision_config *v = &llava->vision;
    size_t hidden = (size_t)v->hidden_size, inner = (size_t)v->intermediate_size;
    size_t text = (size_t)llava->text_hidden_size, projector_bias = llava->projector_bias ? text : 0;
    size_t embeddings = hidden * 3 * (size_t)(v->patch_size * v->patch_size) + hidden + clip_positions(v) * hidden;
    size_t pre_layernorm = 2 * hidden;
    size_t layer = 2 * hidden + 4 * (hidden * hidden + hidden) + 2 * hidden + (inner * hidden + inner) +
                   (hidden * inner + hidden);
    size_t projector = text * hidden + text * text + 2 * projector_bias;
    return embeddings + pre_layernorm + clip_layers_run(llava) * layer + projector;
}

/* One image's pass: the block of activations (the residual stream, its norm,
 * q, k, v, attention out, the selected features: 7 x positions x hidden; the
 * MLP's; a head's q, k, v^T and out; the scores), the patches, and the
 * projector's middle layer. */
static size_t clip_work_count(const ft_llava_config *llava)
{
    const ft_clip_vision_config *v = &llava->vision;
    size_t n = clip_positions(v), hidden = (size_t)v->hidden_size;
    size_t head = n * (size_t)(v->hidden_size / v->num_attention_heads);
    size_t block = 7 * n * hidden + n * (size_t)v->intermediate_size + 4 * head + n * n;
    size_t patches = (n - 1) * 3 * (size_t)(v->patch_size * v->patch_size);
    size_t middle = (size_t)ft_llava_image_tokens(llava) * (size_t)llava->text_hidden_size;
    return block + patches + middle;
}

size_t ft_vision_tower_weight_bytes(const ft_model_config *config)
{
    if (config->vision_language)
        return ft_vision_qwen2_weight_bytes(&config->vision);
    return config->llava ? clip_weight_count(&config->llava_tower) * sizeof(float) : 0;
}

size_t ft_vision_tower_work_bytes(const ft_model_config *config, int64_t rows)
{
    if (config->vision_language) { /* each image token is merge^2 patches, all in one frame at worst */
        const ft_vision_config *v = &config->vision;
        int64_t patches = rows * v->spatial_merge_size * v->spatial_merge_size;
        return ft_vision_qwen2_work_bytes(v, patches, patches);
    }
    return config->llava ? clip_work_count(&config->llava_tower) * sizeof(float) : 0;
}
