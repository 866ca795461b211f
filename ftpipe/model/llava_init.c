/* llava_init: random LLaVA folders: shapes, configs, tokenizer, weights. */
#include "ftpipe/model/llava_init.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/text/tokenizer.h"

#define IMAGE_TOKEN "<image>"

/* llava-hf's CLIP ViT-L/14 at 336 pixels, which both released shapes use. */
static const ft_clip_vision_config clip_large_336 = {1024, 4096, 24, 16, 336, 14, 3, 1e-5};

static ft_model_config llama_text(int vocab, int hidden, int inner, int layers, int heads, int kv_heads,
                                  int max_positions, double theta)
{
    ft_model_config text = {
        .architecture = FT_ARCH_LLAMA,
        .vocab_size = vocab,
        .hidden_size = hidden,
        .intermediate_size = inner,
        .num_hidden_layers = layers,
        .num_attention_heads = heads,
        .num_key_value_heads = kv_heads,
        .head_dim = hidden / heads,
        .max_position_embeddings = max_positions,
        .rms_norm_eps = 1e-5,
        .rope_theta = theta,
        .bos_token_id = -1,
        .eos_token_id = -1,
    };
    snprintf(text.architecture_name, sizeof text.architecture_name, "LlamaForCausalLM");
    return text;
}

static ft_llava_config llava(ft_clip_vision_config vision, int text_hidden, int image_token_id)
{
    return (ft_llava_config){vision, text_hidden, image_token_id, -2, true, true};
}

bool ft_llava_is_shape(const char *name)
{
    return strcmp(name, "tiny-llava") == 0 || strcmp(name, "llava-1.5-7b") == 0 ||
           strcmp(name, "llava-llama3-8b") == 0;
}

int ft_llava_shape_get(const char *name, ft_llava_shape *out)
{
    memset(out, 0, sizeof *out);
    if (strcmp(name, "tiny-llava") == 0) { /* 336-pixel images and 576 image tokens, as the real ones */
        out->text = llama_text(0, 64, 128, 2, 4, 2, 2048, 500000.0);
        out->llava = llava((ft_clip_vision_config){32, 64, 2, 4, 336, 14, 3, 1e-5}, 64, -1);
    } else if (strcmp(name, "llava-1.5-7b") == 0) { /* llava-hf/llava-1.5-7b-hf: Vicuna-7B v1.5 */
        out->text = llama_text(32064, 4096, 11008, 32, 32, 32, 4096, 10000.0);
        out->llava = llava(clip_large_336, 4096, 32000);
    } else if (strcmp(name, "llava-llama3-8b") == 0) { /* xtuner/llava-llama-3-8b-v1_1-transformers */
        out->text = llama_text(128320, 4096, 14336, 32, 32, 8, 8192, 500000.0);
        out->llava = llava(clip_large_336, 4096, 128257);
    } else {
        return ft_error("unknown LLaVA shape '%s'; known: " FT_LLAVA_SHAPES, name);
    }
    return 0;
}

size_t ft_llava_parameter_count(const ft_llava_shape *shape)
{
    const ft_clip_vision_config *v = &shape->llava.vision;
    size_t hidden = (size_t)v->hidden_size, inner = (size_t)v->intermediate_size;
    size_t side = (size_t)(v->image_size / v->patch_size), text = (size_t)shape->text.hidden_size;
    size_t layer = 4 * (hidden * hidden + hidden) + 2 * hidden * inner + inner + hidden + 4 * hidden;
    size_t vision = hidden * 3 * (size_t)v->patch_size * (size_t)v->patch_size + hidden +
                    (side * side + 1) * hidden + 4 * hidden + (size_t)v->num_hidden_layers * layer;
    size_t projector = text * hidden + text + text * text + text;
    return ft_model_config_parameter_count(&shape->text) + vision + projector;
}

/* --- the tokenizer --- */

/* <image>'s id in the tokenizer at dir, after adding it at `wanted` (or, when
 * wanted is -1, the next free id) if it lacks one. */
static int place_image_token(const char *dir, int wanted, int *id)
{
    ft_tokenizer *tokenizer;
    if (ft_tokenizer_load(dir, &tokenizer) != 0)
        return -1;
    int64_t existing = ft_tokenizer_token_id(tokenizer, IMAGE_TOKEN);
    size_t size = ft_tokenizer_vocab_size(tokenizer);
    ft_tokenizer_free(tokenizer);
    if (existing >= 0) {
        *id = (int)existing;
        return 0;
    }
    *id = wanted >= 0 ? wanted : (int)size;
    if ((size_t)*id < size)
        return ft_error("the tokenizer has no %s, and the shape's image token id %d is taken by one of its %zu "
                        "tokens: give a tokenizer that has %s",
                        IMAGE_TOKEN, *id, size, IMAGE_TOKEN);
    char *path = ft_path_join(dir, "tokenizer.json");
    json_error_t error;
    json_t *root = json_load_file(path, 0, &error);
    json_t *added = root ? json_object_get(root, "added_tokens") : NULL;
    int status = 0;
    if (!json_is_array(added))
        status = ft_error("%s: no added_tokens list to add %s to", path, IMAGE_TOKEN);
    else
        json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", *id, "content",
                                               IMAGE_TOKEN, "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized",
                                               0, "special", 1));
    char *text = status == 0 ? json_dumps(root, JSON_INDENT(1) | JSON_ENSURE_ASCII) : NULL;
    if (text)
        status = ft_write_file_atomic(path, text, strlen(text));
    free(text);
    json_decref(root);
    free(path);
    return status;
}

/* --- configs --- */

static int write_json(const char *dir, const char *name, json_t *value)
{
    char *text = json_dumps(value, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
    json_decref(value);
    char *path = ft_path_join(dir, name);
    size_t length = strlen(text);
    text = ft_xrealloc(text, length + 2);
    memcpy(text + length, "\n", 2);
    int status = ft_write_file_atomic(path, text, length + 1);
    free(path);
    free(text);
    return status;
}

static int write_configs(const char *dir, const ft_model_config *text, const ft_llava_config *llava,
                         ft_dtype dtype)
{
    char *text_json = ft_model_config_to_json(text);
    json_t *text_config = json_loads(text_json, 0, NULL);
    free(text_json);
    if (!text_config)
        return ft_error("cannot write the text_config of %s", dir);
    const ft_clip_vision_config *v = &llava->vision;
    const char *dtype_name = dtype == FT_DTYPE_BF16 ? "bfloat16" : "float32";
    json_t *config = json_pack(
        "{s:[s], s:s, s:i, s:i, s:s, s:b, s:o, s:{s:i, s:f, s:s, s:i, s:f, s:s, s:i, s:i, s:i, s:i, s:i}, s:i, s:s, "
        "s:i, s:b, s:s}",
        "architectures", "LlavaForConditionalGeneration", "model_type", "llava", "image_token_index",
        llava->image_token_id, "ignore_index", -100, "projector_hidden_act", "gelu", "multimodal_projector_bias", 1,
        "text_config", text_config, "vision_config", "hidden_size", v->hidden_size, "layer_norm_eps",
        v->layer_norm_eps, "hidden_act", "quick_gelu", "image_size", v->image_size, "initializer_factor", 1.0,
        "model_type", "clip_vision_model", "intermediate_size", v->intermediate_size, "num_attention_heads",
        v->num_attention_heads, "num_hidden_layers", v->num_hidden_layers, "patch_size", v->patch_size,
        "projection_dim", 768, "vision_feature_layer", llava->vision_feature_layer,
        "vision_feature_select_strategy", "default", "image_seq_length", (int)ft_llava_image_tokens(llava),
        "tie_word_embeddings", text->tie_word_embeddings, "torch_dtype", dtype_name);
    json_t *preprocessor = json_pack(
        "{s:{s:i, s:i}, s:b, s:b, s:b, s:b, s:b, s:[f, f, f], s:s, s:[f, f, f], s:s, s:i, s:f, s:{s:i}}",
        "crop_size", "height", v->image_size, "width", v->image_size, "do_center_crop", 1, "do_convert_rgb", 1,
        "do_normalize", 1, "do_rescale", 1, "do_resize", 1, "image_mean", 0.48145466, 0.4578275, 0.40821073,
        "image_processor_type", "CLIPImageProcessor", "image_std", 0.26862954, 0.26130258, 0.27577711,
        "processor_class", "LlavaProcessor", "resample", 3, "rescale_factor", 1.0 / 255.0, "size", "shortest_edge",
        v->image_size);
    json_t *processor = json_pack("{s:s, s:i, s:i, s:s, s:s}", "image_token", IMAGE_TOKEN,
                                  "num_additional_image_tokens", 1, "patch_size", v->patch_size, "processor_class",
                                  "LlavaProcessor", "vision_feature_select_strategy", "default");
    if (!config || !preprocessor || !processor) {
        json_decref(config);
        json_decref(preprocessor);
        json_decref(processor);
        return ft_error("cannot write the configs of %s", dir);
    }
    int status = write_json(dir, "config.json", config);
    if (status == 0)
        status = write_json(dir, "preprocessor_config.json", preprocessor);
    else
        json_decref(preprocessor);
    if (status == 0)
        status = write_json(dir, "processor_config.json", processor);
    else
        json_decref(processor);
    return status;
}

/* --- weights --- */

typedef struct {
    ft_init_tensor *tensors;
    size_t count, capacity;
} tensor_list;

static void add(tensor_list *list, int n_dims, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const char *format,
                ...) __attribute__((format(printf, 7, 8)));
static void add(tensor_list *list, int n_dims, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const char *format,
                ...)
{
    ft_grow((void **)&list->tensors, &list->capacity, list->count + 1, sizeof *list->tensors);
    ft_init_tensor *tensor = &list->tensors[list->count++];
    char name[256];
    va_list args;
    va_start(args, format);
    vsnprintf(name, sizeof name, format, args);
    va_end(args);
    tensor->name = ft_xstrdup(name);
    tensor->n_dims = n_dims;
    tensor->shape[0] = d0;
    tensor->shape[1] = d1;
    tensor->shape[2] = d2;
    tensor->shape[3] = d3;
    tensor->shape[4] = 0;
    tensor->is_norm = false; /* norms are found by their names */
}

#define VISION "vision_tower.vision_model."

static void add_vision(tensor_list *list, const ft_llava_config *llava)
{
    const ft_clip_vision_config *v = &llava->vision;
    int64_t hidden = v->hidden_size, inner = v->intermediate_size, side = v->image_size / v->patch_size;
    int64_t text = llava->text_hidden_size;
    add(list, 1, hidden, 0, 0, 0, VISION "embeddings.class_embedding");
    add(list, 4, hidden, 3, v->patch_size, v->patch_size, VISION "embeddings.patch_embedding.weight");
    add(list, 2, side * side + 1, hidden, 0, 0, VISION "embeddings.position_embedding.weight");
    add(list, 1, hidden, 0, 0, 0, VISION "pre_layrnorm.weight");
    add(list, 1, hidden, 0, 0, 0, VISION "pre_layrnorm.bias");
    static const char *const projections[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    for (int i = 0; i < v->num_hidden_layers; i++) {
        for (int p = 0; p < 4; p++) {
            add(list, 2, hidden, hidden, 0, 0, VISION "encoder.layers.%d.self_attn.%s.weight", i, projections[p]);
            add(list, 1, hidden, 0, 0, 0, VISION "encoder.layers.%d.self_attn.%s.bias", i, projections[p]);
        }
        for (int n = 1; n <= 2; n++) {
            add(list, 1, hidden, 0, 0, 0, VISION "encoder.layers.%d.layer_norm%d.weight", i, n);
            add(list, 1, hidden, 0, 0, 0, VISION "encoder.layers.%d.layer_norm%d.bias", i, n);
        }
        add(list, 2, inner, hidden, 0, 0, VISION "encoder.layers.%d.mlp.fc1.weight", i);
        add(list, 1, inner, 0, 0, 0, VISION "encoder.layers.%d.mlp.fc1.bias", i);
        add(list, 2, hidden, inner, 0, 0, VISION "encoder.layers.%d.mlp.fc2.weight", i);
        add(list, 1, hidden, 0, 0, 0, VISION "encoder.layers.%d.mlp.fc2.bias", i);
    }
    add(list, 1, hidden, 0, 0, 0, VISION "post_layernorm.weight");
    add(list, 1, hidden, 0, 0, 0, VISION "post_layernorm.bias");
    add(list, 2, text, hidden, 0, 0, "multi_modal_projector.linear_1.weight");
    add(list, 1, text, 0, 0, 0, "multi_modal_projector.linear_1.bias");
    add(list, 2, text, text, 0, 0, "multi_modal_projector.linear_2.weight");
    add(list, 1, text, 0, 0, 0, "multi_modal_projector.linear_2.bias");
}

int ft_llava_init_write(const char *dir, const ft_llava_shape *shape, const ft_model_init_options *options)
{
    if (options->dtype != FT_DTYPE_BF16 && options->dtype != FT_DTYPE_F32)
        return ft_error("model weights can be written as bf16 or f32, not %s", ft_dtype_name(options->dtype));
    ft_model_config text = shape->text;
    ft_llava_config config = shape->llava;
    if (ft_mkdir_p(dir) < 0 || ft_model_init_place_tokenizer(dir, options->tokenizer_path, false) < 0 ||
        place_image_token(dir, config.image_token_id, &config.image_token_id) < 0 ||
        ft_model_init_fit_tokenizer(dir, &text) < 0)
        return -1;
    if (config.image_token_id >= text.vocab_size)
        return ft_error("the image token %d does not fit the vocabulary of %d: raise vocab_size",
                        config.image_token_id, text.vocab_size);
    snprintf(text.torch_dtype, sizeof text.torch_dtype, "%s", options->dtype == FT_DTYPE_BF16 ? "bfloat16" : "float32");
    config.text_hidden_size = text.hidden_size;
    if (write_configs(dir, &text, &config, options->dtype) != 0)
        return -1;
    size_t n_text;
    ft_init_tensor *text_tensors = ft_model_init_tensors(&text, "language_model.", &n_text);
    tensor_list list = {text_tensors, n_text, n_text};
    add_vision(&list, &config);
    int status = ft_model_init_write_weights(dir, list.tensors, list.count, options);
    ft_model_init_tensors_free(list.tensors, list.count);
    return status;
}
