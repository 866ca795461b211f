/* llava_config: config.json of a LLaVA model, with transformers' defaults. */
#include "ftpipe/formats/llava_config.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

#define LLAVA_ARCHITECTURE "LlavaForConditionalGeneration"

typedef struct {
    const char *origin;
    const json_t *object;
    const char *prefix; /* "vision_config." for the nested object */
} reader;

static int wrong(const reader *r, const char *key, const char *expected)
{
    return ft_error("%s: \"%s%s\" must be %s", r->origin, r->prefix, key, expected);
}

static const json_t *field(const reader *r, const char *key)
{
    const json_t *value = r->object ? json_object_get(r->object, key) : NULL;
    return value && !json_is_null(value) ? value : NULL;
}

static int read_int(const reader *r, const char *key, int minimum, int fallback, int *out)
{
    const json_t *value = field(r, key);
    *out = fallback;
    if (!value)
        return 0;
    if (!json_is_integer(value) || json_integer_value(value) < minimum || json_integer_value(value) > (1 << 24))
        return wrong(r, key, minimum > 0 ? "a positive whole number" : "a whole number");
    *out = (int)json_integer_value(value);
    return 0;
}

static const char *read_string(const reader *r, const char *key, const char *fallback, int *status)
{
    const json_t *value = field(r, key);
    if (value && !json_is_string(value))
        *status = wrong(r, key, "a string");
    return value && json_is_string(value) ? json_string_value(value) : fallback;
}

/* CLIPVisionConfig's defaults where a key is absent; LlavaConfig's own defaults
 * (ViT-L/14 at 336) when vision_config is. */
static int read_vision(const reader *llava, ft_clip_vision_config *out)
{
    const json_t *object = field(llava, "vision_config");
    if (object && !json_is_object(object))
        return wrong(llava, "vision_config", "an object");
    bool llava_default = object == NULL;
    reader r = {llava->origin, object, "vision_config."};
    int status = 0;
    const char *model_type = read_string(&r, "model_type", "clip_vision_model", &status);
    if (status == 0 && strcmp(model_type, "clip_vision_model") != 0)
        return ft_error("%s: vision_config.model_type '%s' is not supported; ftpipe's LLaVA has a CLIP vision tower "
                        "(clip_vision_model)", llava->origin, model_type);
    const char *act = read_string(&r, "hidden_act", "quick_gelu", &status);
    if (status == 0 && strcmp(act, "quick_gelu") != 0)
        return wrong(&r, "hidden_act", "\"quick_gelu\" (CLIP's activation, the only one ftpipe's vision tower has)");
    const json_t *eps = field(&r, "layer_norm_eps");
    out->layer_norm_eps = 1e-5;
    if (eps && !(json_is_number(eps) && json_number_value(eps) > 0))
        return wrong(&r, "layer_norm_eps", "a positive number");
    if (eps)
        out->layer_norm_eps = json_number_value(eps);
    if (status != 0 || read_int(&r, "hidden_size", 1, llava_default ? 1024 : 768, &out->hidden_size) != 0 ||
        read_int(&r, "intermediate_size", 1, llava_default ? 4096 : 3072, &out->intermediate_size) != 0 ||
        read_int(&r, "num_hidden_layers", 1, llava_default ? 24 : 12, &out->num_hidden_layers) != 0 ||
        read_int(&r, "num_attention_heads", 1, llava_default ? 16 : 12, &out->num_attention_heads) != 0 ||
        read_int(&r, "image_size", 1, llava_default ? 336 : 224, &out->image_size) != 0 ||
        read_int(&r, "patch_size", 1, llava_default ? 14 : 32, &out->patch_size) != 0 ||
        read_int(&r, "num_channels", 1, 3, &out->num_channels) != 0)
        return -1;
    if (out->num_channels != 3)
        return wrong(&r, "num_channels", "3 (RGB)");
    if (out->hidden_size % out->num_attention_heads != 0)
        return ft_error("%s: vision_config.hidden_size %d is not a multiple of num_attention_heads %d", llava->origin,
                        out->hidden_size, out->num_attention_heads);
    if (out->image_size % out->patch_size != 0)
        return ft_error("%s: vision_config.image_size %d is not a multiple of patch_size %d", llava->origin,
                        out->image_size, out->patch_size);
    return 0;
}

static bool names_llava(const json_t *root)
{
    const json_t *names = json_object_get(root, "architectures");
    if (json_is_array(names) && json_array_size(names) > 0)
        return json_is_string(json_array_get(names, 0)) &&
               strcmp(json_string_value(json_array_get(names, 0)), LLAVA_ARCHITECTURE) == 0;
    const json_t *type = json_object_get(root, "model_type");
    return json_is_string(type) && strcmp(json_string_value(type), "llava") == 0;
}

int ft_llava_config_parse(const char *json_text, const char *origin, ft_llava_config *out)
{
    memset(out, 0, sizeof *out);
    json_error_t error;
    json_t *root = json_loads(json_text, 0, &error);
    if (!root)
        return ft_error("%s:%d:%d: not valid JSON: %s", origin, error.line, error.column, error.text);
    reader r = {origin, root, ""};
    int status = 0;
    if (!json_is_object(root) || !names_llava(root))
        status = ft_error("%s: not a LLaVA model (architectures [\"" LLAVA_ARCHITECTURE "\"])", origin);
    if (status == 0)
        status = read_vision(&r, &out->vision);
    const json_t *text = status == 0 ? field(&r, "text_config") : NULL;
    if (status == 0 && text && !json_is_object(text))
        status = wrong(&r, "text_config", "an object");
    reader text_reader = {origin, text, "text_config."};
    if (status == 0)
        status = read_int(&text_reader, "hidden_size", 1, 4096, &out->text_hidden_size);
    if (status == 0)
        status = read_int(&r, field(&r, "image_token_id") ? "image_token_id" : "image_token_index", 0, 32000,
                          &out->image_token_id);
    if (status == 0 && field(&r, "vision_feature_layer") && !json_is_integer(field(&r, "vision_feature_layer")))
        status = wrong(&r, "vision_feature_layer", "one layer index (several layers are not supported)");
    if (status == 0)
        status = read_int(&r, "vision_feature_layer", -(1 << 20), -2, &out->vision_feature_layer);
    int layers = out->vision.num_hidden_layers;
    if (status == 0 && (out->vision_feature_layer > layers || out->vision_feature_layer < -(layers + 1)))
        status = ft_error("%s: vision_feature_layer %d is outside the vision tower's %d hidden states (-%d to %d)",
                          origin, out->vision_feature_layer, layers + 1, layers + 1, layers);
    const char *strategy = status == 0 ? read_string(&r, "vision_feature_select_strategy", "default", &status) : "";
    if (status == 0 && strcmp(strategy, "default") != 0 && strcmp(strategy, "full") != 0)
        status = wrong(&r, "vision_feature_select_strategy", "\"default\" (CLS dropped) or \"full\"");
    out->select_default = strcmp(strategy, "default") == 0;
    const char *act = status == 0 ? read_string(&r, "projector_hidden_act", "gelu", &status) : "";
    if (status == 0 && strcmp(act, "gelu") != 0)
        status = wrong(&r, "projector_hidden_act", "\"gelu\" (LLaVA's projector; the only one ftpipe has)");
    const json_t *bias = status == 0 ? field(&r, "multimodal_projector_bias") : NULL;
    if (bias && !json_is_boolean(bias))
        status = wrong(&r, "multimodal_projector_bias", "true or false");
    out->projector_bias = bias ? json_is_true(bias) : true;
    json_decref(root);
    return status;
}

int ft_llava_config_load(const char *model_dir, ft_llava_config *out)
{
    char *path = ft_path_join(model_dir, "config.json");
    char *text;
    int status = ft_read_file(path, &text, NULL);
    if (status == 0) {
        status = ft_llava_config_parse(text, path, out);
        free(text);
    }
    free(path);
    return status;
}

bool ft_llava_config_is_llava(const char *model_dir)
{
    char *path = ft_path_join(model_dir, "config.json");
    json_error_t error;
    json_t *root = json_load_file(path, 0, &error);
    free(path);
    bool llava = root && json_is_object(root) && names_llava(root);
    json_decref(root);
    return llava;
}

/* transformers' LlamaConfig defaults, which llava-hf's text_config relies on. */
static void fill_llama_defaults(json_t *text)
{
    static const struct {
        const char *key;
        double value;
        bool integer;
    } defaults[] = {
        {"vocab_size", 32000, true},          {"hidden_size", 4096, true},   {"intermediate_size", 11008, true},
        {"num_hidden_layers", 32, true},      {"num_attention_heads", 32, true},
        {"max_position_embeddings", 2048, true}, {"rms_norm_eps", 1e-6, false}, {"rope_theta", 10000.0, false},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (!json_object_get(text, defaults[i].key))
            json_object_set_new(text, defaults[i].key, defaults[i].integer ? json_integer((json_int_t)defaults[i].value)
                                                                           : json_real(defaults[i].value));
}

int ft_llava_text_config_load(const char *model_dir, ft_model_config *out)
{
    char *path = ft_path_join(model_dir, "config.json");
    json_error_t error;
    json_t *root = json_load_file(path, 0, &error);
    int status = 0;
    if (!root)
        status = ft_error("%s:%d:%d: not valid JSON: %s", path, error.line, error.column, error.text);
    else if (!json_is_object(root) || !names_llava(root))
        status = ft_error("%s: not a LLaVA model (architectures [\"" LLAVA_ARCHITECTURE "\"])", path);
    json_t *given = status == 0 ? json_object_get(root, "text_config") : NULL;
    if (status == 0 && given && !json_is_object(given))
        status = ft_error("%s: \"text_config\" must be an object", path);
    json_t *text = status == 0 ? (given ? json_deep_copy(given) : json_object()) : NULL;
    if (text && !json_object_get(text, "model_type") && !json_object_get(text, "architectures"))
        json_object_set_new(text, "model_type", json_string("llama"));
    const json_t *type = text ? json_object_get(text, "model_type") : NULL;
    if (text && json_is_string(type) && strcmp(json_string_value(type), "llama") == 0)
        fill_llama_defaults(text);
    char *dumped = text ? json_dumps(text, 0) : NULL;
    if (dumped) {
        char *origin = ft_xasprintf("%s (text_config)", path);
        status = ft_model_config_parse(dumped, origin, out);
        free(origin);
        free(dumped);
    }
    json_decref(text);
    json_decref(root);
    ft_llava_config llava;
    if (status == 0 && ft_llava_config_load(model_dir, &llava) < 0)
        status = -1;
    else if (status == 0 && (llava.image_token_id < 0 || llava.image_token_id >= out->vocab_size))
        status = ft_error("%s: the image token %d is outside the vocabulary of %d", path, llava.image_token_id,
                          out->vocab_size);
    if (status == 0) {
        out->llava = true;
        out->image_token_id = llava.image_token_id;
        out->llava_tower = llava;
    }
    free(path);
    return status;
}

int ft_language_model_config_load(const char *model_dir, ft_model_config *out)
{
    return ft_llava_config_is_llava(model_dir) ? ft_llava_text_config_load(model_dir, out)
                                               : ft_model_config_load(model_dir, out);
}

uint32_t ft_llava_image_tokens(const ft_llava_config *config)
{
    uint32_t side = (uint32_t)(config->vision.image_size / config->vision.patch_size);
    return side * side + (config->select_default ? 0 : 1);
}
