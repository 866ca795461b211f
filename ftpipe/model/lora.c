/* lora: adapter configuration, weights (layout, initialisation) and peft's
 * adapter folders in and out. */
#include "ftpipe/model/lora.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/formats/safetensors.h"

static const char *const target_names[FT_LORA_TARGET_COUNT] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
};

const char *ft_lora_target_name(ft_lora_target target) { return target_names[target]; }

static bool is_attention(ft_lora_target target) { return target <= FT_LORA_O; }

/* The projector's layers under LLaVA's and Qwen2-VL's names: first, second. */
static const char *const projector_names[2][2] = {{"linear_1", "mlp.0"}, {"linear_2", "mlp.2"}};

static bool is_word(const char *word, size_t length, const char *name)
{
    return length == strlen(name) && strncmp(word, name, length) == 0;
}

static int find_target(const char *word, size_t length, ft_lora_target *out)
{
    for (int t = 0; t < FT_LORA_TARGET_COUNT; t++) {
        size_t short_length = strlen(target_names[t]) - strlen("_proj");
        if ((length == strlen(target_names[t]) && strncmp(word, target_names[t], length) == 0) ||
            (length == short_length && strncmp(word, target_names[t], length) == 0)) {
            *out = (ft_lora_target)t;
            return 0;
        }
    }
    return ft_error("unknown LoRA target '%.*s'; expected all, or some of q_proj k_proj v_proj o_proj gate_proj "
                    "up_proj down_proj (or q k v o gate up down), and a vision-language model's projector's "
                    "linear_1 linear_2 (LLaVA) or mlp.0 mlp.2 (Qwen2-VL's merger)",
                    (int)length, word);
}

int ft_lora_parse_targets(const char *text, unsigned *targets)
{
    unsigned mask = 0;
    const char *p = text;
    while (*p) {
        p += strspn(p, ", \t\n");
        size_t length = strcspn(p, ", \t\n");
        if (length == 0)
            break;
        ft_lora_target target = FT_LORA_Q;
        if (length == 3 && strncmp(p, "all", 3) == 0)
            mask |= FT_LORA_ALL_TARGETS;
        else if (is_word(p, length, projector_names[0][0]) || is_word(p, length, projector_names[0][1]))
            mask |= FT_LORA_PROJECTOR_FIRST;
        else if (is_word(p, length, projector_names[1][0]) || is_word(p, length, projector_names[1][1]))
            mask |= FT_LORA_PROJECTOR_SECOND;
        else if (find_target(p, length, &target) == 0)
            mask |= 1u << target;
        else
            return -1;
        p += length;
    }
    if (!mask)
        return ft_error("no LoRA target given; expected all, or some of q_proj k_proj v_proj o_proj gate_proj "
                        "up_proj down_proj");
    *targets = mask;
    return 0;
}

int ft_lora_config_check(const ft_lora_config *config)
{
    if (config->rank < 1)
        return ft_error("lora_rank is %d; it must be at least 1", config->rank);
    if (!(config->alpha > 0.0))
        return ft_error("lora_alpha is %g; it must be positive", config->alpha);
    if (!(config->dropout >= 0.0 && config->dropout < 1.0))
        return ft_error("lora_dropout is %g; it must be in [0, 1)", config->dropout);
    if (!(config->targets & (FT_LORA_ALL_TARGETS | FT_LORA_PROJECTOR_TARGETS)))
        return ft_error("lora_target names no layer");
    return 0;
}

double ft_lora_scaling(const ft_lora_config *config)
{
    return config->use_rslora ? config->alpha / sqrt((double)config->rank) : config->alpha / config->rank;
}

void ft_lora_target_shape(const ft_model_config *model, ft_lora_target target, int *in_features, int *out_features)
{
    int hidden = model->hidden_size, q_width = model->num_attention_heads * model->head_dim;
    int kv_width = model->num_key_value_heads * model->head_dim, inner = model->intermediate_size;
    const int shapes[FT_LORA_TARGET_COUNT][2] = { /* in, out */
        {hidden, q_width}, {hidden, kv_width}, {hidden, kv_width}, {q_width, hidden},
        {hidden, inner},   {hidden, inner},    {inner, hidden},
    };
    *in_features = shapes[target][0];
    *out_features = shapes[target][1];
}

void ft_lora_projector_shape(const ft_model_config *model, int which, int *in_features, int *out_features)
{
    if (model->llava) {
        const ft_llava_config *llava = &model->llava_tower;
        *in_features = which == 0 ? llava->vision.hidden_size : llava->text_hidden_size;
        *out_features = llava->text_hidden_size;
        return;
    }
    const ft_vision_config *vision = &model->vision;
    int merged = vision->embed_dim * vision->spatial_merge_size * vision->spatial_merge_size;
    *in_features = merged;
    *out_features = which == 0 ? merged : vision->out_hidden;
}

char *ft_lora_tensor_name(int layer, ft_lora_target target, char matrix)
{
    return ft_xasprintf("base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer,
                        is_attention(target) ? "self_attn" : "mlp", target_names[target], matrix);
}

/* --- adapter_config.json --- */

static int config_number(const json_t *root, const char *path, const char *key, double *out)
{
    const json_t *value = json_object_get(root, key);
    if (!json_is_number(value))
        return ft_error("%s: '%s' is missing or not a number", path, key);
    *out = json_number_value(value);
    return 0;
}

/* A vision-language model's towers have modules named as the language model's
 * (Qwen2.5-VL's gate_proj, up_proj, down_proj; CLIP's q_proj, k_proj, v_proj),
 * so its adapter names its targets as LLaMA-Factory does: a regex PEFT matches
 * against every module's full name, excluding the tower's (and LLaVA's projector). */
#define VISION_EXCLUDED "^(?!.*visual).*"
#define LLAVA_VISION_EXCLUDED "^(?!.*(?:vision_tower|multi_modal_projector)).*"

/* The alternatives' group after a vision-language adapter's exclusion, or NULL. */
static const char *excluded_group(const char *modules)
{
    const char *prefixes[] = {VISION_EXCLUDED "(?:", LLAVA_VISION_EXCLUDED "(?:"};
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++)
        if (strncmp(modules, prefixes[i], strlen(prefixes[i])) == 0)
            return modules + strlen(prefixes[i]);
    return NULL;
}

/* The alternative a vision-language adapter's regex adds for the projector's
 * layers (the module names PEFT sees), its group listing them by their last
 * name: "|^.*visual\.merger\.mlp\.(?:0|2)$" or
 * "|^.*multi_modal_projector\.(?:linear_1|linear_2)$". */
#define QWEN_PROJECTOR "^.*visual\\.merger\\.mlp\\.(?:"
#define LLAVA_PROJECTOR "^.*multi_modal_projector\\.(?:"
static const char *const projector_last_names[2][2] = {{"linear_1", "0"}, {"linear_2", "2"}}; /* LLaVA, Qwen */

static void projector_pattern(ft_strbuf *pattern, const ft_model_config *model, unsigned targets)
{
    if (!(targets & FT_LORA_PROJECTOR_TARGETS))
        return;
    ft_strbuf_puts(pattern, pattern->length ? "|" : "");
    ft_strbuf_puts(pattern, model->llava ? LLAVA_PROJECTOR : QWEN_PROJECTOR);
    for (int which = 0, n = 0; which < 2; which++)
        if (targets & (FT_LORA_PROJECTOR_FIRST << which))
            ft_strbuf_printf(pattern, "%s%s", n++ ? "|" : "", projector_last_names[which][model->llava ? 0 : 1]);
    ft_strbuf_puts(pattern, ")$");
}

/* The projector's layers that a regex written by projector_pattern names. */
static unsigned projector_targets_in(const char *modules)
{
    const char *group = strstr(modules, QWEN_PROJECTOR);
    int naming = 1;
    if (!group) {
        group = strstr(modules, LLAVA_PROJECTOR);
        naming = 0;
    }
    if (!group)
        return 0;
    group += strlen(naming ? QWEN_PROJECTOR : LLAVA_PROJECTOR);
    unsigned targets = 0;
    while (*group && *group != ')') {
        size_t length = strcspn(group, "|)");
        for (int which = 0; which < 2; which++)
            if (is_word(group, length, projector_last_names[which][naming]))
                targets |= FT_LORA_PROJECTOR_FIRST << which;
        group += length + (group[length] == '|');
    }
    return targets;
}

static int config_targets(const json_t *root, const char *path, unsigned *targets)
{
    const json_t *modules = json_object_get(root, "target_modules");
    ft_strbuf words;
    ft_strbuf_init(&words);
    const char *group = json_is_string(modules) ? excluded_group(json_string_value(modules)) : NULL;
    unsigned projector = json_is_string(modules) ? projector_targets_in(json_string_value(modules)) : 0;
    if (group) { /* a vision-language adapter's regex: the alternatives of its group */
        for (; *group && *group != ')'; group++)
            ft_strbuf_putc(&words, *group == '|' ? ' ' : *group);
    } else if (json_is_string(modules) && !projector) {
        const char *text = json_string_value(modules);
        ft_strbuf_puts(&words, strcmp(text, "all-linear") == 0 ? "all" : text);
    } else if (json_is_array(modules)) {
        size_t i;
        const json_t *item;
        json_array_foreach(modules, i, item) {
            if (!json_is_string(item)) {
                ft_strbuf_free(&words);
                return ft_error("%s: 'target_modules' holds a non-string", path);
            }
            ft_strbuf_printf(&words, "%s ", json_string_value(item));
        }
    } else if (!projector) { /* the projector's layers alone need no words */
        ft_strbuf_free(&words);
        return ft_error("%s: 'target_modules' is missing or not a list", path);
    }
    int status = words.data && words.data[0] ? ft_lora_parse_targets(words.data, targets) : 0;
    if (status == 0 && !(words.data && words.data[0]))
        *targets = 0;
    if (status == 0)
        *targets |= projector;
    ft_strbuf_free(&words);
    return status < 0 ? ft_error_context("%s", path) : 0;
}

static int read_config(const json_t *root, const char *file, ft_lora_config *config)
{
    const json_t *type = json_object_get(root, "peft_type");
    if (type && !(json_is_string(type) && strcmp(json_string_value(type), "LORA") == 0))
        return ft_error("%s: peft_type is not LORA; only LoRA adapters are supported", file);
    if (json_is_true(json_object_get(root, "use_dora")))
        return ft_error("%s: DoRA adapters are not supported", file);
    double rank = 0.0, alpha = 0.0, dropout = 0.0;
    if (config_number(root, file, "r", &rank) < 0 || config_number(root, file, "lora_alpha", &alpha) < 0)
        return -1;
    if (json_object_get(root, "lora_dropout") && config_number(root, file, "lora_dropout", &dropout) < 0)
        return -1;
    if (config_targets(root, file, &config->targets) < 0)
        return -1;
    config->rank = (int)rank;
    config->alpha = alpha;
    config->dropout = dropout;
    config->use_rslora = json_is_true(json_object_get(root, "use_rslora"));
    return ft_lora_config_check(config) < 0 ? ft_error_context("%s", file) : 0;
}

int ft_lora_config_load(const char *path, ft_lora_config *out)
{
    char *file = ft_path_is_dir(path) ? ft_path_join(path, "adapter_config.json") : ft_xstrdup(path);
    json_error_t json_error;
    json_t *root = json_load_file(file, 0, &json_error);
    ft_lora_config config = {0};
    int status = root ? read_config(root, file, &config)
                      : ft_error("%s: not readable JSON: %s (line %d)", file, json_error.text, json_error.line);
    json_decref(root);
    free(file);
    if (status == 0)
        *out = config;
    return status;
}

static char *config_json(const ft_lora_config *config, const ft_model_config *model, const char *base_model_name)
{
    bool vision_language = model->vision_language || model->llava;
    json_t *root = json_object();
    json_t *targets = json_array();
    ft_strbuf pattern;
    ft_strbuf_init(&pattern);
    if (config->targets & FT_LORA_ALL_TARGETS)
        ft_strbuf_puts(&pattern, model->llava ? LLAVA_VISION_EXCLUDED "(?:" : VISION_EXCLUDED "(?:");
    for (int t = 0; t < FT_LORA_TARGET_COUNT; t++)
        if (config->targets & (1u << t)) {
            json_array_append_new(targets, json_string(target_names[t]));
            ft_strbuf_printf(&pattern, "%s%s", json_array_size(targets) > 1 ? "|" : "", target_names[t]);
        }
    if (config->targets & FT_LORA_ALL_TARGETS)
        ft_strbuf_puts(&pattern, ")$");
    projector_pattern(&pattern, model, config->targets);
    if (vision_language) {
        json_decref(targets);
        targets = json_string(pattern.data);
    }
    ft_strbuf_free(&pattern);
    json_object_set_new(root, "peft_type", json_string("LORA"));
    json_object_set_new(root, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(root, "base_model_name_or_path", json_string(base_model_name ? base_model_name : ""));
    json_object_set_new(root, "r", json_integer(config->rank));
    if (config->alpha == floor(config->alpha))
        json_object_set_new(root, "lora_alpha", json_integer((json_int_t)config->alpha));
    else
        json_object_set_new(root, "lora_alpha", json_real(config->alpha));
    json_object_set_new(root, "lora_dropout", json_real(config->dropout));
    json_object_set_new(root, "use_rslora", json_boolean(config->use_rslora));
    json_object_set_new(root, "target_modules", targets);
    json_object_set_new(root, "bias", json_string("none"));
    json_object_set_new(root, "fan_in_fan_out", json_false());
    json_object_set_new(root, "inference_mode", json_true());
    json_object_set_new(root, "init_lora_weights", json_true());
    json_object_set_new(root, "use_dora", json_false());
    json_object_set_new(root, "modules_to_save", json_null());
    json_object_set_new(root, "layers_to_transform", json_null());
    json_object_set_new(root, "layers_pattern", json_null());
    json_object_set_new(root, "rank_pattern", json_object());
    json_object_set_new(root, "alpha_pattern", json_object());
    /* The rest of what peft 0.10 to 0.15 write, at their defaults; no key newer
     * than 0.10, which refuses keys it does not know. */
    json_object_set_new(root, "auto_mapping", json_null());
    json_object_set_new(root, "revision", json_null());
    json_object_set_new(root, "loftq_config", json_object());
    json_object_set_new(root, "megatron_config", json_null());
    json_object_set_new(root, "megatron_core", json_string("megatron.core"));
    json_object_set_new(root, "layer_replication", json_null());
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    return text;
}

/* --- weights --- */

struct ft_lora {
    ft_model_config model;
    ft_lora_config config;
    ft_backend *backend;
    float *values;              /* every A and B, one allocation */
    float *grads;               /* same layout; NULL unless trainable */
    size_t total;
    ft_lora_weights *slots;     /* [layer * FT_LORA_TARGET_COUNT + target], then the projector's two;
                                 * a NULL when untargeted */
    ft_param_tensor *tensors;   /* A, B of each targeted slot, in layer then target order, the projector's last */
    size_t n_tensors;
    float *saved_values;        /* ft_lora_save_from's: what a save writes; NULL: the values */
};

static ft_lora_weights *slot(const ft_lora *lora, int layer, ft_lora_target target)
{
    return &lora->slots[(size_t)layer * FT_LORA_TARGET_COUNT + target];
}

static ft_lora_weights *projector_slot(const ft_lora *lora, int which)
{
    return &lora->slots[(size_t)lora->model.num_hidden_layers * FT_LORA_TARGET_COUNT + (size_t)which];
}

/* PEFT's names of the projector's adapters on transformers 5's VL models. */
static char *projector_tensor_name(const ft_lora *lora, int which, char matrix)
{
    return ft_xasprintf("base_model.model.model.%s%s.lora_%c.weight",
                        lora->model.llava ? "multi_modal_projector." : "visual.merger.",
                        projector_names[which][lora->model.llava ? 0 : 1], matrix);
}

/* kaiming_uniform_(a=sqrt(5)) as peft calls it: U(-1/sqrt(in), 1/sqrt(in)). */
static void initialise_a(float *host, const ft_lora_weights *weights, int rank, uint64_t seed)
{
    float bound = 1.0f / sqrtf((float)weights->in_features);
    size_t n = (size_t)rank * weights->in_features;
    for (size_t i = 0; i < n; i++)
        host[i] = (2.0f * ft_random_uniform(seed, i) - 1.0f) * bound;
}

/* PEFT on a vision-language model (transformers 5) names the language model's
 * modules model.language_model.*; older PEFT named them model.* as for a text
 * model. ftpipe writes the first and reads both. */
static char *adapter_tensor_name(const ft_lora *lora, int layer, ft_lora_target target, char matrix)
{
    char *name = ft_lora_tensor_name(layer, target, matrix);
    if (!lora->model.vision_language && !lora->model.llava) /* LLaVA's PEFT names are the same */
        return name;
    char *vl = ft_xasprintf("base_model.model.model.language_model.%s", name + strlen("base_model.model.model."));
    free(name);
    return vl;
}

/* A and B of one slot at offset, and their entries in the tensor list. */
static size_t place(ft_lora *lora, ft_lora_weights *w, bool trainable, size_t offset, char *a_name, char *b_name)
{
    int rank = lora->config.rank;
    size_t a_count = (size_t)rank * w->in_features, b_count = (size_t)w->out_features * rank;
    w->a = lora->values + offset;
    w->b = w->a + a_count;
    if (trainable) {
        w->grad_a = lora->grads + offset;
        w->grad_b = w->grad_a + a_count;
    }
    lora->tensors[lora->n_tensors++] = (ft_param_tensor){a_name, w->a, w->grad_a, a_count, true, 2,
                                                         {rank, w->in_features}};
    lora->tensors[lora->n_tensors++] = (ft_param_tensor){b_name, w->b, w->grad_b, b_count, true, 2,
                                                         {w->out_features, rank}};
    return offset + a_count + b_count;
}

static void lay_out(ft_lora *lora, bool trainable)
{
    size_t offset = 0;
    for (int layer = 0; layer < lora->model.num_hidden_layers; layer++)
        for (int t = 0; t < FT_LORA_TARGET_COUNT; t++) {
            if (!(lora->config.targets & (1u << t)))
                continue;
            ft_lora_weights *w = slot(lora, layer, (ft_lora_target)t);
            ft_lora_target_shape(&lora->model, (ft_lora_target)t, &w->in_features, &w->out_features);
            offset = place(lora, w, trainable, offset, adapter_tensor_name(lora, layer, (ft_lora_target)t, 'A'),
                           adapter_tensor_name(lora, layer, (ft_lora_target)t, 'B'));
        }
    for (int which = 0; which < 2; which++)
        if (lora->config.targets & (FT_LORA_PROJECTOR_FIRST << which)) {
            ft_lora_weights *w = projector_slot(lora, which);
            ft_lora_projector_shape(&lora->model, which, &w->in_features, &w->out_features);
            offset = place(lora, w, trainable, offset, projector_tensor_name(lora, which, 'A'),
                           projector_tensor_name(lora, which, 'B'));
        }
}

size_t ft_lora_planned_parameter_count(const ft_model_config *model, const ft_lora_config *config)
{
    size_t total = 0;
    for (int t = 0; t < FT_LORA_TARGET_COUNT; t++) {
        if (!(config->targets & (1u << t)))
            continue;
        int in_features, out_features;
        ft_lora_target_shape(model, (ft_lora_target)t, &in_features, &out_features);
        total += (size_t)config->rank * ((size_t)in_features + out_features);
    }
    total *= model->num_hidden_layers;
    for (int which = 0; which < 2; which++)
        if (config->targets & (FT_LORA_PROJECTOR_FIRST << which)) {
            int in_features, out_features;
            ft_lora_projector_shape(model, which, &in_features, &out_features);
            total += (size_t)config->rank * ((size_t)in_features + out_features);
        }
    return total;
}

int ft_lora_create(const ft_model_config *model, const ft_lora_config *config, ft_backend *backend, bool trainable,
                   ft_lora **out)
{
    if (ft_lora_config_check(config) < 0)
        return -1;
    if ((config->targets & FT_LORA_PROJECTOR_TARGETS) && !model->vision_language && !model->llava)
        return ft_error("lora_target names a multi-modal projector's layers (linear_1, linear_2, mlp.0, mlp.2), but "
                        "this is a text-only model (%s), which has none", model->architecture_name);
    ft_lora *lora = ft_xcalloc(1, sizeof *lora);
    lora->model = *model;
    lora->config = *config;
    lora->backend = backend;
    lora->total = ft_lora_planned_parameter_count(model, config);
    size_t bytes = lora->total * sizeof(float);
    lora->values = backend->alloc(backend, bytes);
    lora->grads = trainable && lora->values ? backend->alloc(backend, bytes) : NULL;
    if (!lora->values || (trainable && !lora->grads)) {
        ft_lora_free(lora);
        return ft_error_context("allocating the LoRA adapter");
    }
    size_t n_slots = (size_t)model->num_hidden_layers * FT_LORA_TARGET_COUNT + 2;
    lora->slots = ft_xcalloc(n_slots, sizeof *lora->slots);
    lora->tensors = ft_xcalloc(2 * n_slots, sizeof *lora->tensors);
    lay_out(lora, trainable);
    backend->zero(backend, lora->values, bytes);
    if (trainable)
        backend->zero(backend, lora->grads, bytes);
    for (int layer = 0; layer < model->num_hidden_layers; layer++)
        for (int t = 0; t < FT_LORA_TARGET_COUNT; t++) {
            const ft_lora_weights *w = slot(lora, layer, (ft_lora_target)t);
            if (!w->a)
                continue;
            size_t a_count = (size_t)config->rank * w->in_features;
            float *host = ft_xmalloc(a_count * sizeof(float));
            initialise_a(host, w, config->rank, ft_random_stream(config->seed, (uint64_t)layer * 16 + t));
            backend->upload(backend, w->a, host, a_count * sizeof(float));
            free(host);
        }
    for (int which = 0; which < 2; which++) {
        const ft_lora_weights *w = projector_slot(lora, which);
        if (!w->a)
            continue;
        size_t a_count = (size_t)config->rank * w->in_features;
        float *host = ft_xmalloc(a_count * sizeof(float));
        /* past every layer's streams (16 a layer) */
        initialise_a(host, w, config->rank,
                     ft_random_stream(config->seed, (uint64_t)model->num_hidden_layers * 16 + (uint64_t)which));
        backend->upload(backend, w->a, host, a_count * sizeof(float));
        free(host);
    }
    *out = lora;
    return 0;
}

void ft_lora_free(ft_lora *lora)
{
    if (!lora)
        return;
    if (lora->values)
        lora->backend->free(lora->backend, lora->values);
    if (lora->grads)
        lora->backend->free(lora->backend, lora->grads);
    for (size_t i = 0; i < lora->n_tensors; i++)
        free((char *)lora->tensors[i].name);
    free(lora->tensors);
    free(lora->slots);
    free(lora);
}

const ft_lora_config *ft_lora_get_config(const ft_lora *lora) { return &lora->config; }

const ft_lora_weights *ft_lora_at(const ft_lora *lora, int layer, ft_lora_target target)
{
    const ft_lora_weights *w = slot(lora, layer, target);
    return w->a ? w : NULL;
}

const ft_param_tensor *ft_lora_tensors(const ft_lora *lora, size_t *count)
{
    *count = lora->n_tensors;
    return lora->tensors;
}

const ft_lora_weights *ft_lora_projector_at(const ft_lora *lora, int which)
{
    const ft_lora_weights *w = projector_slot(lora, which);
    return w->a ? w : NULL;
}

size_t ft_lora_parameter_count(const ft_lora *lora) { return lora->total; }

size_t ft_lora_layer_values(const ft_lora *lora)
{
    if ((lora->config.targets & FT_LORA_PROJECTOR_TARGETS) || lora->model.num_hidden_layers == 0)
        return 0;
    return lora->total / (size_t)lora->model.num_hidden_layers;
}

void ft_lora_place_layer(ft_lora *lora, int layer, float *values)
{
    size_t offset = 0, tensor = (size_t)layer * (lora->n_tensors / (size_t)lora->model.num_hidden_layers);
    for (int t = 0; t < FT_LORA_TARGET_COUNT; t++) {
        ft_lora_weights *w = slot(lora, layer, (ft_lora_target)t);
        if (!(lora->config.targets & (1u << t)))
            continue;
        size_t a_count = (size_t)lora->config.rank * w->in_features;
        w->a = values ? values + offset : NULL;
        w->b = values ? w->a + a_count : NULL;
        lora->tensors[tensor++].value = w->a;
        lora->tensors[tensor++].value = w->b;
        offset += a_count + (size_t)w->out_features * lora->config.rank;
    }
}

void ft_lora_release_values(ft_lora *lora)
{
    if (lora->values)
        lora->backend->free(lora->backend, lora->values);
    lora->values = NULL;
    for (int layer = 0; layer < lora->model.num_hidden_layers; layer++)
        ft_lora_place_layer(lora, layer, NULL);
}

void ft_lora_save_from(ft_lora *lora, float *values) { lora->saved_values = values; }

/* --- peft folders --- */

int ft_lora_load(ft_lora *lora, const char *path)
{
    char *file = ft_path_is_dir(path) ? ft_path_join(path, "adapter_model.safetensors") : ft_xstrdup(path);
    ft_safetensors *set;
    if (ft_safetensors_open(file, &set) < 0) {
        free(file);
        return -1;
    }
    int status = 0;
    for (size_t i = 0; i < lora->n_tensors && status == 0; i++) {
        const ft_param_tensor *tensor = &lora->tensors[i];
        const ft_tensor_view *view = ft_safetensors_find(set, tensor->name);
        const char *language_model = strstr(tensor->name, "language_model.");
        if (!view && language_model) {
            char *older = ft_xasprintf("base_model.model.model.%s", language_model + strlen("language_model."));
            view = ft_safetensors_find(set, older);
            free(older);
        }
        const int64_t *shape = tensor->shape;
        if (!view) {
            status = -1;
        } else if (view->n_dims != 2 || view->shape[0] != shape[0] || view->shape[1] != shape[1]) {
            status = ft_error("%s: tensor %s is not [%lld, %lld] as the adapter's rank and the model's "
                              "dimensions require",
                              file, tensor->name, (long long)shape[0], (long long)shape[1]);
        } else {
            float *host = ft_xmalloc(tensor->count * sizeof(float));
            status = ft_tensor_to_f32(view, host);
            if (status == 0)
                lora->backend->upload(lora->backend, tensor->value, host, tensor->count * sizeof(float));
            free(host);
        }
    }
    ft_safetensors_close(set);
    free(file);
    return status;
}

int ft_lora_save(const ft_lora *lora, const char *dir, const char *base_model_name)
{
    if (ft_mkdir_p(dir) < 0)
        return -1;
    float *host = lora->saved_values ? NULL : ft_xmalloc((lora->total ? lora->total : 1) * sizeof(float));
    float *values = lora->saved_values ? lora->saved_values : host;
    ft_tensor_to_write *tensors = ft_xcalloc(lora->n_tensors ? lora->n_tensors : 1, sizeof *tensors);
    size_t offset = 0;
    for (size_t i = 0; i < lora->n_tensors; i++) {
        const ft_param_tensor *tensor = &lora->tensors[i];
        if (host)
            lora->backend->download(lora->backend, host + offset, tensor->value, tensor->count * sizeof(float));
        tensors[i] = (ft_tensor_to_write){tensor->name, FT_DTYPE_F32, 2, {tensor->shape[0], tensor->shape[1]},
                                          values + offset};
        offset += tensor->count;
    }
    char *weights_path = ft_path_join(dir, "adapter_model.safetensors");
    const char *key = "format", *value = "pt";
    int status = ft_safetensors_write(weights_path, tensors, lora->n_tensors, &key, &value, 1);
    free(weights_path);
    free(tensors);
    free(host);
    if (status < 0)
        return -1;
    char *text = config_json(&lora->config, &lora->model, base_model_name);
    char *config_path = ft_path_join(dir, "adapter_config.json");
    status = ft_write_file_atomic(config_path, text, strlen(text));
    free(config_path);
    free(text);
    return status;
}
