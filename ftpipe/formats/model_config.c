/* model_config: config.json in (validated field by field) and out (as transformers writes it). */
#include "ftpipe/formats/model_config.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

static const struct {
    ft_architecture architecture;
    const char *name;
    const char *model_type;
    bool vision_language;
} architectures[] = {
    {FT_ARCH_QWEN2, "Qwen2ForCausalLM", "qwen2", false},
    {FT_ARCH_QWEN3, "Qwen3ForCausalLM", "qwen3", false},
    {FT_ARCH_LLAMA, "LlamaForCausalLM", "llama", false},
    {FT_ARCH_QWEN2, "Qwen2VLForConditionalGeneration", "qwen2_vl", true},
    {FT_ARCH_QWEN2, "Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl", true},
};
#define N_ARCHITECTURES (sizeof architectures / sizeof architectures[0])

/* The object being read, the file to name in messages, and the path to the object
 * ("" at the top, "rope_scaling." inside it). */
typedef struct {
    const char *origin;
    const json_t *root;
    const char *prefix;
} reader;

/* "a string", "-3", "null": what was found where something else was expected. */
static const char *describe(const json_t *value, char *text, size_t size)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: snprintf(text, size, "%lld", (long long)json_integer_value(value)); return text;
    case JSON_REAL: snprintf(text, size, "%.15g", json_real_value(value)); return text;
    case JSON_TRUE: return "true";
    case JSON_FALSE: return "false";
    case JSON_NULL: return "null";
    }
    return "?";
}

static int wrong(const reader *r, const char *key, const char *expected, const json_t *value)
{
    char text[64];
    return ft_error("%s: %s%s must be %s, not %s", r->origin, r->prefix, key, expected,
                    describe(value, text, sizeof text));
}

/* A present, non-null value of key, or NULL. */
static const json_t *field(const reader *r, const char *key)
{
    const json_t *value = json_object_get(r->root, key);
    return json_is_null(value) ? NULL : value;
}

/* fallback < 0: the field is required. */
static int read_count(const reader *r, const char *key, int fallback, int *out)
{
    const json_t *value = json_object_get(r->root, key);
    if (!value || (json_is_null(value) && fallback >= 0)) {
        if (fallback < 0)
            return ft_error("%s: %s%s is missing (a positive integer)", r->origin, r->prefix, key);
        *out = fallback;
        return 0;
    }
    if (!json_is_integer(value) || json_integer_value(value) <= 0 || json_integer_value(value) > INT_MAX)
        return wrong(r, key, "a positive integer", value);
    *out = (int)json_integer_value(value);
    return 0;
}

static int read_positive_number(const reader *r, const char *key, double fallback, double *out)
{
    const json_t *value = json_object_get(r->root, key);
    if (!value || (json_is_null(value) && fallback > 0)) {
        if (fallback <= 0)
            return ft_error("%s: %s%s is missing (a positive number)", r->origin, r->prefix, key);
        *out = fallback;
        return 0;
    }
    if (!json_is_number(value) || !(json_number_value(value) > 0) || !isfinite(json_number_value(value)))
        return wrong(r, key, "a positive number", value);
    *out = json_number_value(value);
    return 0;
}

static int read_bool(const reader *r, const char *key, bool fallback, bool *out)
{
    const json_t *value = field(r, key);
    if (!value) {
        *out = fallback;
        return 0;
    }
    if (!json_is_boolean(value))
        return wrong(r, key, "true or false", value);
    *out = json_is_true(value);
    return 0;
}

/* A token id, or -1 when absent; a list gives its first. */
static int read_token_id(const reader *r, const char *key, int *out)
{
    const json_t *value = field(r, key);
    if (json_is_array(value))
        value = json_array_get(value, 0); /* NULL when the list is empty */
    *out = -1;
    if (!value)
        return 0;
    if (!json_is_integer(value) || json_integer_value(value) < 0 || json_integer_value(value) > INT_MAX)
        return wrong(r, key, "a token id (a non-negative integer) or a list of them", value);
    *out = (int)json_integer_value(value);
    return 0;
}

static int read_architecture(const reader *r, ft_model_config *out)
{
    const json_t *names = field(r, "architectures");
    const json_t *model_type = field(r, "model_type");
    if (model_type && !json_is_string(model_type))
        return wrong(r, "model_type", "a string", model_type);
    if (names && (!json_is_array(names) || json_array_size(names) == 0 ||
                  !json_is_string(json_array_get(names, 0))))
        return ft_error("%s: architectures must be a list of names such as [\"Qwen2ForCausalLM\"]", r->origin);
    if (!names && !model_type)
        return ft_error("%s: neither architectures nor model_type says which model this is", r->origin);

    const char *name = names ? json_string_value(json_array_get(names, 0)) : NULL;
    const char *type = model_type ? json_string_value(model_type) : NULL;
    for (size_t i = 0; i < N_ARCHITECTURES; i++) {
        if (name ? strcmp(name, architectures[i].name) != 0 : strcmp(type, architectures[i].model_type) != 0)
            continue;
        if (type && strcmp(type, architectures[i].model_type) != 0)
            return ft_error("%s: model_type '%s' does not match architecture %s (whose model_type is '%s')",
                            r->origin, type, architectures[i].name, architectures[i].model_type);
        out->architecture = architectures[i].architecture;
        out->vision_language = architectures[i].vision_language;
        snprintf(out->architecture_name, sizeof out->architecture_name, "%s", architectures[i].name);
        return 0;
    }
    if (name)
        return ft_error("%s: architecture '%s' is not supported; supported: Qwen2ForCausalLM, "
                        "Qwen3ForCausalLM, LlamaForCausalLM, Qwen2VLForConditionalGeneration, "
                        "Qwen2_5_VLForConditionalGeneration", r->origin, name);
    return ft_error("%s: model_type '%s' is not supported; supported: qwen2, qwen3, llama, qwen2_vl, qwen2_5_vl",
                    r->origin, type);
}

/* Qwen2-VL: {"type": "mrope", "mrope_section": [t, h, w]} in released
 * checkpoints, {"rope_type": "default", "mrope_section": ...} from transformers 5. */
static int read_mrope_section(const reader *r, const char *name, const json_t *scaling, const char *kind,
                              ft_model_config *out)
{
    if (strcmp(kind, "mrope") != 0 && strcmp(kind, "default") != 0)
        return ft_error("%s: %s type '%s' is not supported for %s; supported: mrope", r->origin, name, kind,
                        out->architecture_name);
    const json_t *section = json_object_get(scaling, "mrope_section");
    int sum = 0;
    for (int i = 0; i < 3; i++) {
        const json_t *item = json_array_get(section, (size_t)i);
        if (json_array_size(section) != 3 || !json_is_integer(item) || json_integer_value(item) < 0 ||
            json_integer_value(item) > INT_MAX / 4)
            return ft_error("%s: %s.mrope_section must be a list of three non-negative integers such as "
                            "[16, 24, 24]", r->origin, name);
        out->mrope_section[i] = (int)json_integer_value(item);
        sum += out->mrope_section[i];
    }
    if (sum * 2 != out->head_dim)
        return ft_error("%s: %s.mrope_section adds up to %d, but it must give each of head_dim / 2 = %d "
                        "frequencies a position", r->origin, name, sum, out->head_dim / 2);
    return 0;
}

/* transformers 5 writes "rope_parameters" (with rope_theta inside) where
 * released checkpoints have "rope_scaling" and a top-level rope_theta. */
static const char *rope_field_name(const reader *r)
{
    return !field(r, "rope_scaling") && field(r, "rope_parameters") ? "rope_parameters" : "rope_scaling";
}

static int read_rope_scaling(const reader *r, ft_model_config *out)
{
    const char *name = rope_field_name(r);
    const json_t *scaling = field(r, name);
    if (!scaling)
        return 0;
    if (!json_is_object(scaling))
        return wrong(r, name, "an object or null", scaling);
    if (strcmp(name, "rope_parameters") == 0 && json_object_get(scaling, "rope_theta")) {
        reader inner = {r->origin, scaling, "rope_parameters."};
        if (read_positive_number(&inner, "rope_theta", 10000.0, &out->rope_theta) != 0)
            return -1;
    }
    /* Older configs name the kind "type". */
    const json_t *kind = json_object_get(scaling, "rope_type");
    if (!kind)
        kind = json_object_get(scaling, "type");
    if (!json_is_string(kind))
        return ft_error("%s: %s has no rope_type", r->origin, name);
    if (out->vision_language)
        return read_mrope_section(r, name, scaling, json_string_value(kind), out);
    if (strcmp(json_string_value(kind), "default") == 0)
        return 0;
    if (strcmp(json_string_value(kind), "llama3") != 0)
        return ft_error("%s: %s type '%s' is not supported; supported: llama3 (or null)", r->origin, name,
                        json_string_value(kind));
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s.", name);
    reader inner = {r->origin, scaling, prefix};
    if (read_positive_number(&inner, "factor", 0, &out->rope_scaling_factor) != 0 ||
        read_positive_number(&inner, "low_freq_factor", 0, &out->rope_low_freq_factor) != 0 ||
        read_positive_number(&inner, "high_freq_factor", 0, &out->rope_high_freq_factor) != 0 ||
        read_count(&inner, "original_max_position_embeddings", -1, &out->rope_original_max_position_embeddings) != 0)
        return -1;
    out->has_llama3_rope_scaling = true;
    return 0;
}

static int read_strings(const reader *r, const reader *top, ft_model_config *out)
{
    const json_t *act = field(r, "hidden_act");
    if (act && !json_is_string(act))
        return wrong(r, "hidden_act", "a string", act);
    if (act && strcmp(json_string_value(act), "silu") != 0)
        return ft_error("%s: hidden_act '%s' is not supported; supported: silu", r->origin, json_string_value(act));
    /* transformers 4.56 renamed torch_dtype to dtype; a VL model's is beside text_config */
    if (!field(r, "torch_dtype") && !field(r, "dtype"))
        r = top;
    const char *key = field(r, "torch_dtype") ? "torch_dtype" : "dtype";
    const json_t *dtype = field(r, key);
    if (!dtype)
        return 0;
    if (!json_is_string(dtype))
        return wrong(r, key, "a string", dtype);
    const char *name = json_string_value(dtype);
    if (strlen(name) >= sizeof out->torch_dtype || name[strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_")])
        return ft_error("%s: %s '%s' is not a dtype name such as bfloat16", r->origin, key, name);
    strcpy(out->torch_dtype, name);
    return 0;
}

static int read_shape(const reader *r, ft_model_config *c)
{
    if (read_count(r, "vocab_size", -1, &c->vocab_size) != 0 ||
        read_count(r, "hidden_size", -1, &c->hidden_size) != 0 ||
        read_count(r, "intermediate_size", -1, &c->intermediate_size) != 0 ||
        read_count(r, "num_hidden_layers", -1, &c->num_hidden_layers) != 0 ||
        read_count(r, "num_attention_heads", -1, &c->num_attention_heads) != 0 ||
        read_count(r, "num_key_value_heads", c->num_attention_heads, &c->num_key_value_heads) != 0 ||
        read_count(r, "max_position_embeddings", -1, &c->max_position_embeddings) != 0)
        return -1;
    if (c->num_attention_heads % c->num_key_value_heads != 0)
        return ft_error("%s: num_attention_heads %d is not divisible by num_key_value_heads %d", r->origin,
                        c->num_attention_heads, c->num_key_value_heads);
    if (!field(r, "head_dim") && c->hidden_size % c->num_attention_heads != 0)
        return ft_error("%s: hidden_size %d is not divisible by num_attention_heads %d, and head_dim is not "
                        "given", r->origin, c->hidden_size, c->num_attention_heads);
    return read_count(r, "head_dim", c->hidden_size / c->num_attention_heads, &c->head_dim);
}

static int read_options(const reader *r, ft_model_config *c)
{
    bool sliding_window = false, attention_bias = false, mlp_bias = false;
    if (read_positive_number(r, "rms_norm_eps", 0, &c->rms_norm_eps) != 0 ||
        read_positive_number(r, "rope_theta", 10000.0, &c->rope_theta) != 0 ||
        read_bool(r, "tie_word_embeddings", false, &c->tie_word_embeddings) != 0 ||
        read_bool(r, "use_sliding_window", false, &sliding_window) != 0 ||
        read_bool(r, "attention_bias", false, &attention_bias) != 0 ||
        read_bool(r, "mlp_bias", false, &mlp_bias) != 0)
        return -1;
    if (sliding_window)
        return ft_error("%s: use_sliding_window true is not supported; set it to false", r->origin);
    /* Qwen2's q/k/v always carry a bias, whatever the field says; the others never may. */
    if (attention_bias && c->architecture != FT_ARCH_QWEN2)
        return ft_error("%s: attention_bias true is not supported for %s", r->origin, c->architecture_name);
    if (mlp_bias)
        return ft_error("%s: mlp_bias true is not supported", r->origin);
    c->attention_bias = c->architecture == FT_ARCH_QWEN2;
    c->qk_norm = c->architecture == FT_ARCH_QWEN3;
    return 0;
}

/* A required positive count of the vision config; alias: the older name (or NULL). */
static int read_vision_count(const reader *r, const char *key, const char *alias, int fallback, int *out)
{
    return read_count(r, alias && !field(r, key) && field(r, alias) ? alias : key, fallback, out);
}

/* Qwen2-VL's tower: LayerNorm, QuickGELU MLP of embed_dim x mlp_ratio, hidden_size the output. */
static int read_qwen2_vl_tower(const reader *r, ft_vision_config *v)
{
    double mlp_ratio;
    if (read_vision_count(r, "embed_dim", NULL, -1, &v->embed_dim) != 0 ||
        read_positive_number(r, "mlp_ratio", 4.0, &mlp_ratio) != 0 ||
        read_vision_count(r, "hidden_size", NULL, -1, &v->out_hidden) != 0)
        return -1;
    v->mlp_hidden = (int)(v->embed_dim * mlp_ratio);
    const json_t *act = field(r, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "quick_gelu") != 0))
        return wrong(r, "hidden_act", "\"quick_gelu\" (Qwen2-VL's)", act);
    return 0;
}

/* Qwen2.5-VL's: hidden_size the blocks' width, out_hidden_size the output,
 * SwiGLU of intermediate_size, windows but in fullatt_block_indexes. */
static int read_qwen2_5_vl_tower(const reader *r, ft_vision_config *v)
{
    v->qwen2_5 = true;
    if (read_vision_count(r, "hidden_size", NULL, -1, &v->embed_dim) != 0 ||
        read_vision_count(r, "intermediate_size", NULL, -1, &v->mlp_hidden) != 0 ||
        read_vision_count(r, "out_hidden_size", NULL, -1, &v->out_hidden) != 0 ||
        read_vision_count(r, "window_size", NULL, 112, &v->window_size) != 0 ||
        read_vision_count(r, "tokens_per_second", NULL, 4, &v->tokens_per_second) != 0)
        return -1;
    const json_t *act = field(r, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0))
        return wrong(r, "hidden_act", "\"silu\" (Qwen2.5-VL's)", act);
    if (v->depth > 64)
        return ft_error("%s: vision_config.depth %d: at most 64 blocks are supported", r->origin, v->depth);
    const json_t *full = field(r, "fullatt_block_indexes");
    if (!full) {
        v->full_attention_blocks = 0;
        for (int b = 7; b < v->depth; b += 8) /* transformers' default [7, 15, 23, 31] */
            v->full_attention_blocks |= 1ull << b;
        return 0;
    }
    size_t i;
    const json_t *item;
    if (!json_is_array(full))
        return wrong(r, "fullatt_block_indexes", "a list of block numbers", full);
    json_array_foreach(full, i, item) {
        if (!json_is_integer(item) || json_integer_value(item) < 0 || json_integer_value(item) >= v->depth)
            return ft_error("%s: vision_config.fullatt_block_indexes must list block numbers below depth %d",
                            r->origin, v->depth);
        v->full_attention_blocks |= 1ull << json_integer_value(item);
    }
    return 0;
}

static int read_vision(const reader *top, ft_model_config *c)
{
    const json_t *object = field(top, "vision_config");
    if (!json_is_object(object))
        return ft_error("%s: vision_config is missing or not an object; a %s needs its vision tower's shape",
                        top->origin, c->architecture_name);
    reader r = {top->origin, object, "vision_config."};
    ft_vision_config *v = &c->vision;
    if (read_vision_count(&r, "depth", NULL, -1, &v->depth) != 0 ||
        read_vision_count(&r, "num_heads", NULL, -1, &v->num_heads) != 0 ||
        read_vision_count(&r, "in_channels", "in_chans", 3, &v->in_channels) != 0 ||
        read_vision_count(&r, "patch_size", "spatial_patch_size", 14, &v->patch_size) != 0 ||
        read_vision_count(&r, "temporal_patch_size", NULL, 2, &v->temporal_patch_size) != 0 ||
        read_vision_count(&r, "spatial_merge_size", NULL, 2, &v->spatial_merge_size) != 0)
        return -1;
    bool qwen2_5 = strcmp(c->architecture_name, "Qwen2_5_VLForConditionalGeneration") == 0;
    if ((qwen2_5 ? read_qwen2_5_vl_tower(&r, v) : read_qwen2_vl_tower(&r, v)) != 0)
        return -1;
    v->rope_theta = 10000.0;
    const json_t *rope = field(&r, "rope_parameters");
    if (json_is_object(rope)) {
        reader inner = {top->origin, rope, "vision_config.rope_parameters."};
        if (read_positive_number(&inner, "rope_theta", 10000.0, &v->rope_theta) != 0)
            return -1;
    }
    if (v->embed_dim % v->num_heads != 0 || (v->embed_dim / v->num_heads) % 4 != 0)
        return ft_error("%s: the vision tower's width %d over num_heads %d must give a head size divisible by 4 "
                        "(its 2-D rotary embedding)", top->origin, v->embed_dim, v->num_heads);
    if (v->out_hidden != c->hidden_size)
        return ft_error("%s: vision_config.%s %d differs from the language model's hidden_size %d", top->origin,
                        qwen2_5 ? "out_hidden_size" : "hidden_size", v->out_hidden, c->hidden_size);
    const char *ids[] = {"image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"};
    int *targets[] = {&c->image_token_id, &c->video_token_id, &c->vision_start_token_id, &c->vision_end_token_id};
    for (int i = 0; i < 4; i++) {
        if (read_token_id(top, ids[i], targets[i]) != 0)
            return -1;
        if (*targets[i] < 0 || *targets[i] >= c->vocab_size)
            return ft_error("%s: %s must be a token id below vocab_size %d", top->origin, ids[i], c->vocab_size);
    }
    return 0;
}

int ft_model_config_parse(const char *json_text, const char *origin, ft_model_config *out)
{
    memset(out, 0, sizeof *out);
    json_error_t error;
    json_t *root = json_loads(json_text, JSON_REJECT_DUPLICATES, &error);
    if (!root)
        return ft_error("%s:%d:%d: not valid JSON: %s", origin, error.line, error.column, error.text);
    reader top = {origin, root, ""};
    int result = 0;
    if (!json_is_object(root))
        result = ft_error("%s: not a JSON object", origin);
    else if (read_architecture(&top, out) != 0)
        result = -1;
    /* a VL model's language model is in text_config (transformers 5) or at the top */
    const json_t *text = out->vision_language ? field(&top, "text_config") : NULL;
    reader r = json_is_object(text) ? (reader){origin, text, "text_config."} : top;
    if (result == 0 &&
        (read_shape(&r, out) != 0 || read_options(&r, out) != 0 || read_rope_scaling(&r, out) != 0 ||
         read_strings(&r, &top, out) != 0 || read_token_id(&r, "bos_token_id", &out->bos_token_id) != 0 ||
         read_token_id(&r, "eos_token_id", &out->eos_token_id) != 0 ||
         (out->vision_language && read_vision(&top, out) != 0)))
        result = -1;
    if (result == 0 && out->vision_language && !out->mrope_section[0] && !out->mrope_section[1] &&
        !out->mrope_section[2])
        result = ft_error("%s: a %s needs rope_scaling.mrope_section (its M-RoPE sections, such as "
                          "[16, 24, 24])", origin, out->architecture_name);
    json_decref(root);
    return result;
}

int ft_model_config_load(const char *path, ft_model_config *out)
{
    char *file = ft_path_is_dir(path) ? ft_path_join(path, "config.json") : ft_xstrdup(path);
    char *text;
    int result = ft_read_file(file, &text, NULL);
    if (result == 0) {
        result = ft_model_config_parse(text, file, out);
        free(text);
    }
    free(file);
    return result;
}

/* ---- writing ---- */

/* Python's repr of a float, which json.dumps uses: the shortest digits that read back
 * exactly, positional from 1e-4 up to 1e16, with ".0" on whole numbers. */
static void put_real(ft_strbuf *out, double value)
{
    char text[40];
    int digits = 1;
    for (; digits < 17; digits++) {
        snprintf(text, sizeof text, "%.*e", digits - 1, value);
        if (strtod(text, NULL) == value)
            break;
    }
    snprintf(text, sizeof text, "%.*e", digits - 1, value);
    int exponent = atoi(strchr(text, 'e') + 1);
    if (exponent < -4 || exponent >= 16) {
        ft_strbuf_puts(out, text);
        return;
    }
    int decimals = digits - 1 - exponent;
    ft_strbuf_printf(out, "%.*f", decimals > 1 ? decimals : 1, value);
}

/* Keys must come in sorted order, as transformers writes them (sort_keys=True, indent=2). */
static void put_key(ft_strbuf *out, const char *indent, const char *key)
{
    if (out->data[out->length - 1] != '{')
        ft_strbuf_putc(out, ',');
    ft_strbuf_printf(out, "\n%s\"%s\": ", indent, key);
}

static void put_int(ft_strbuf *out, const char *key, long long value)
{
    put_key(out, "  ", key);
    ft_strbuf_printf(out, "%lld", value);
}

static void put_bool(ft_strbuf *out, const char *key, bool value)
{
    put_key(out, "  ", key);
    ft_strbuf_puts(out, value ? "true" : "false");
}

/* Qwen2-VL's, as its released checkpoints write it */
static void put_mrope_scaling(ft_strbuf *out, const ft_model_config *c)
{
    ft_strbuf_putc(out, '{');
    put_key(out, "    ", "mrope_section");
    ft_strbuf_printf(out, "[%d, %d, %d]", c->mrope_section[0], c->mrope_section[1], c->mrope_section[2]);
    put_key(out, "    ", "rope_type");
    ft_strbuf_puts(out, "\"default\"");
    put_key(out, "    ", "type");
    ft_strbuf_puts(out, "\"mrope\"\n  }");
}

/* Qwen2.5-VL's fullatt_block_indexes */
static void put_full_attention_blocks(ft_strbuf *out, const ft_vision_config *v)
{
    put_key(out, "    ", "fullatt_block_indexes");
    ft_strbuf_putc(out, '[');
    const char *separator = "";
    for (int b = 0; b < v->depth; b++)
        if (v->full_attention_blocks >> b & 1) {
            ft_strbuf_printf(out, "%s%d", separator, b);
            separator = ", ";
        }
    ft_strbuf_putc(out, ']');
}

static void put_vision_config(ft_strbuf *out, const ft_vision_config *v)
{
    put_key(out, "  ", "vision_config");
    ft_strbuf_putc(out, '{');
    put_key(out, "    ", "depth");
    ft_strbuf_printf(out, "%d", v->depth);
    if (v->qwen2_5)
        put_full_attention_blocks(out, v);
    put_key(out, "    ", "hidden_act");
    ft_strbuf_puts(out, v->qwen2_5 ? "\"silu\"" : "\"quick_gelu\"");
    const char *qwen2_keys[] = {"embed_dim", "hidden_size", "in_channels", "mlp_ratio", "num_heads",
                                "patch_size", "spatial_merge_size", "temporal_patch_size"};
    int qwen2_values[] = {v->embed_dim, v->out_hidden, v->in_channels, v->mlp_hidden / v->embed_dim,
                          v->num_heads, v->patch_size, v->spatial_merge_size, v->temporal_patch_size};
    const char *qwen2_5_keys[] = {"hidden_size", "in_channels", "intermediate_size", "num_heads",
                                  "out_hidden_size", "patch_size", "spatial_merge_size", "temporal_patch_size",
                                  "tokens_per_second", "window_size"};
    int qwen2_5_values[] = {v->embed_dim, v->in_channels, v->mlp_hidden, v->num_heads, v->out_hidden,
                            v->patch_size, v->spatial_merge_size, v->temporal_patch_size, v->tokens_per_second,
                            v->window_size};
    const char *const *keys = v->qwen2_5 ? qwen2_5_keys : qwen2_keys;
    const int *values = v->qwen2_5 ? qwen2_5_values : qwen2_values;
    size_t n = v->qwen2_5 ? sizeof qwen2_5_values / sizeof *qwen2_5_values : sizeof qwen2_values / sizeof *qwen2_values;
    for (size_t i = 0; i < n; i++) {
        put_key(out, "    ", keys[i]);
        ft_strbuf_printf(out, "%d", values[i]);
    }
    ft_strbuf_puts(out, "\n  }");
}

static void put_rope_scaling(ft_strbuf *out, const ft_model_config *c)
{
    put_key(out, "  ", "rope_scaling");
    if (c->vision_language) {
        put_mrope_scaling(out, c);
        return;
    }
    if (!c->has_llama3_rope_scaling) {
        ft_strbuf_puts(out, "null");
        return;
    }
    ft_strbuf_putc(out, '{');
    put_key(out, "    ", "factor");
    put_real(out, c->rope_scaling_factor);
    put_key(out, "    ", "high_freq_factor");
    put_real(out, c->rope_high_freq_factor);
    put_key(out, "    ", "low_freq_factor");
    put_real(out, c->rope_low_freq_factor);
    put_key(out, "    ", "original_max_position_embeddings");
    ft_strbuf_printf(out, "%d", c->rope_original_max_position_embeddings);
    put_key(out, "    ", "rope_type");
    ft_strbuf_puts(out, "\"llama3\"\n  }");
}

char *ft_model_config_to_json(const ft_model_config *c)
{
    bool qwen = c->architecture != FT_ARCH_LLAMA;
    const char *model_type = "";
    for (size_t i = 0; i < N_ARCHITECTURES; i++)
        if (strcmp(architectures[i].name, c->architecture_name) == 0)
            model_type = architectures[i].model_type;
    ft_strbuf out;
    ft_strbuf_init(&out);
    ft_strbuf_putc(&out, '{');
    put_key(&out, "  ", "architectures");
    ft_strbuf_printf(&out, "[\n    \"%s\"\n  ]", c->architecture_name);
    if (c->architecture != FT_ARCH_QWEN2)
        put_bool(&out, "attention_bias", false);
    if (c->bos_token_id >= 0)
        put_int(&out, "bos_token_id", c->bos_token_id);
    if (c->eos_token_id >= 0)
        put_int(&out, "eos_token_id", c->eos_token_id);
    put_int(&out, "head_dim", c->head_dim);
    put_key(&out, "  ", "hidden_act");
    ft_strbuf_puts(&out, "\"silu\"");
    put_int(&out, "hidden_size", c->hidden_size);
    if (c->vision_language)
        put_int(&out, "image_token_id", c->image_token_id);
    put_int(&out, "intermediate_size", c->intermediate_size);
    put_int(&out, "max_position_embeddings", c->max_position_embeddings);
    if (qwen)
        put_int(&out, "max_window_layers", c->num_hidden_layers);
    if (!qwen)
        put_bool(&out, "mlp_bias", false);
    put_key(&out, "  ", "model_type");
    ft_strbuf_printf(&out, "\"%s\"", model_type);
    put_int(&out, "num_attention_heads", c->num_attention_heads);
    put_int(&out, "num_hidden_layers", c->num_hidden_layers);
    put_int(&out, "num_key_value_heads", c->num_key_value_heads);
    put_key(&out, "  ", "rms_norm_eps");
    put_real(&out, c->rms_norm_eps);
    put_rope_scaling(&out, c);
    put_key(&out, "  ", "rope_theta");
    put_real(&out, c->rope_theta);
    if (qwen) { /* sliding windows are off; the values are the ones Qwen's own files carry */
        put_key(&out, "  ", "sliding_window");
        if (c->architecture == FT_ARCH_QWEN2)
            ft_strbuf_printf(&out, "%d", c->max_position_embeddings);
        else
            ft_strbuf_puts(&out, "null");
    }
    put_bool(&out, "tie_word_embeddings", c->tie_word_embeddings);
    if (c->torch_dtype[0]) {
        put_key(&out, "  ", "torch_dtype");
        ft_strbuf_printf(&out, "\"%s\"", c->torch_dtype);
    }
    if (qwen)
        put_bool(&out, "use_sliding_window", false);
    if (c->vision_language)
        put_int(&out, "video_token_id", c->video_token_id);
    if (c->vision_language) {
        put_vision_config(&out, &c->vision);
        put_int(&out, "vision_end_token_id", c->vision_end_token_id);
        put_int(&out, "vision_start_token_id", c->vision_start_token_id);
    }
    put_int(&out, "vocab_size", c->vocab_size);
    ft_strbuf_puts(&out, "\n}\n");
    return out.data; /* the buffer's string becomes the caller's */
}

size_t ft_model_config_parameter_count(const ft_model_config *c)
{
    size_t hidden = (size_t)c->hidden_size;
    size_t q_width = (size_t)c->num_attention_heads * (size_t)c->head_dim;
    size_t kv_width = (size_t)c->num_key_value_heads * (size_t)c->head_dim;
    size_t attention = hidden * q_width + 2 * hidden * kv_width + q_width * hidden;
    if (c->attention_bias)
        attention += q_width + 2 * kv_width;
    if (c->qk_norm)
        attention += 2 * (size_t)c->head_dim;
    size_t mlp = 3 * hidden * (size_t)c->intermediate_size;
    size_t layer = attention + mlp + 2 * hidden; /* input and post-attention RMSNorms */
    size_t embedding = (size_t)c->vocab_size * hidden;
    size_t total = embedding + (size_t)c->num_hidden_layers * layer + hidden; /* + final norm */
    if (!c->tie_word_embeddings)
        total += embedding; /* lm_head */
    if (c->vision_language) {
        const ft_vision_config *v = &c->vision;
        size_t width = (size_t)v->embed_dim, merged = width * v->spatial_merge_size * v->spatial_merge_size;
        size_t patch = (size_t)v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size;
        size_t inner = (size_t)v->mlp_hidden, norms = v->qwen2_5 ? 2 * width : 4 * width; /* RMSNorm: no bias */
        size_t tower_mlp = v->qwen2_5 ? 3 * width * inner + 2 * inner + width : 2 * width * inner + inner + width;
        size_t block = norms + (3 * width * width + 3 * width) + (width * width + width) + tower_mlp;
        total += patch * width + (size_t)v->depth * block + (v->qwen2_5 ? width : 2 * width) + merged * merged +
                 merged + merged * (size_t)v->out_hidden + (size_t)v->out_hidden;
    }
    return total;
}
