/* model_merge: plan every output tensor (its dtype, its adapter, its shard),
 * then write the shards one by one, each changed tensor made only as the
 * writer reaches it. */
#include "ftpipe/model/model_merge.h"

#include <cblas.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/lora.h"
#include "ftpipe/model/model.h"

static const char *const copied_files[] = {"tokenizer.json",          "tokenizer_config.json",
                                           "special_tokens_map.json", "generation_config.json",
                                           "vocab.json",              "merges.txt",
                                           "preprocessor_config.json", "chat_template.json"};

#define ADAPTER_PREFIX "base_model.model."
#define LORA_A_SUFFIX ".lora_A.weight"
#define LORA_B_SUFFIX ".lora_B.weight"

typedef struct {
    const ft_tensor_view *view;
    const ft_tensor_view *lora_a; /* NULL unless an adapter is merged into it */
    const ft_tensor_view *lora_b;
    ft_dtype dtype;               /* as written */
    uint64_t bytes;
    size_t position;              /* in the model's weight order; those it does not know after, in file order */
    int shard;
} planned_tensor;

typedef struct {
    const char *model_dir;
    const ft_model_merge_options *options;
    ft_safetensors *model;
    ft_safetensors *adapter;
    float scaling;
    planned_tensor *tensors;      /* in the model's weight order */
    size_t count;
    int n_shards;
    size_t done;                  /* tensors written, for progress */
} merge;

void ft_lora_merge_into(float *w, const float *a, const float *b, int out_features, int in_features, int rank,
                        float scaling)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out_features, in_features, rank, scaling, b, rank, a,
                in_features, 1.0f, w, in_features);
}

const char *ft_dtype_torch_name(ft_dtype dtype)
{
    return dtype == FT_DTYPE_BF16 ? "bfloat16" : dtype == FT_DTYPE_F16 ? "float16" : "float32";
}

static bool is_float(ft_dtype dtype) { return dtype == FT_DTYPE_F32 || dtype == FT_DTYPE_F16 || dtype == FT_DTYPE_BF16; }

static uint64_t element_count(const ft_tensor_view *view)
{
    uint64_t count = 1;
    for (int d = 0; d < view->n_dims; d++)
        count *= (uint64_t)view->shape[d];
    return count;
}

static planned_tensor *planned_for(merge *m, const ft_tensor_view *view)
{
    for (size_t i = 0; i < m->count; i++)
        if (m->tensors[i].view == view)
            return &m->tensors[i];
    return NULL;
}

static bool has_suffix(const char *text, const char *suffix)
{
    size_t n = strlen(text), k = strlen(suffix);
    return n >= k && strcmp(text + n - k, suffix) == 0;
}

/* A vision-language model's language model is model.language_model.* to PEFT
 * on transformers 5 and model.* in released checkpoints (and the other way
 * round for transformers 4.5x's files), language_model.model.* in LLaVA's
 * (llava-hf's layout), its projector model.<name> or <name>: each name finds
 * the weight. */
static const ft_tensor_view *find_weight(const ft_safetensors *model, const char *name)
{
    const ft_tensor_view *view = ft_safetensors_find(model, name);
    const char *vl = "model.language_model.";
    if (view || strncmp(name, "model.", 6) != 0)
        return view;
    if (strncmp(name, vl, strlen(vl)) == 0) {
        char *llava = ft_xasprintf("language_model.model.%s", name + strlen(vl));
        view = ft_safetensors_find(model, llava);
        free(llava);
        if (view)
            return view;
    }
    char *other = strncmp(name, vl, strlen(vl)) == 0 ? ft_xasprintf("model.%s", name + strlen(vl))
                                                     : ft_xasprintf("%s%s", vl, name + 6);
    view = ft_safetensors_find(model, other);
    free(other);
    /* a projector's (model.visual.merger.*, model.multi_modal_projector.*) is
     * visual.merger.* or multi_modal_projector.* in released checkpoints */
    return view ? view : ft_safetensors_find(model, name + 6);
}

/* Pairs one lora_A tensor with its lora_B and the weight it belongs to. */
static int attach_adapter_tensor(merge *m, const ft_tensor_view *a, const char *adapter_file)
{
    size_t stem = strlen(a->name) - strlen(LORA_A_SUFFIX);
    char *weight_name = ft_xmalloc(stem + sizeof ".weight");
    snprintf(weight_name, stem + sizeof ".weight", "%.*s.weight", (int)(stem - strlen(ADAPTER_PREFIX)),
             a->name + strlen(ADAPTER_PREFIX));
    char *b_name = ft_xmalloc(stem + sizeof LORA_B_SUFFIX);
    snprintf(b_name, stem + sizeof LORA_B_SUFFIX, "%.*s" LORA_B_SUFFIX, (int)stem, a->name);
    const ft_tensor_view *b = ft_safetensors_find(m->adapter, b_name);
    const ft_tensor_view *weight = b ? find_weight(m->model, weight_name) : NULL;
    int status = -1;
    if (!b || !weight) {
        ft_error_context("merging %s into %s: the adapter does not fit this base model", adapter_file, m->model_dir);
    } else if (weight->n_dims != 2 || a->n_dims != 2 || b->n_dims != 2 || a->shape[1] != weight->shape[1] ||
               b->shape[0] != weight->shape[0] || b->shape[1] != a->shape[0]) {
        ft_error("%s: %s is [%lld, %lld] and %s [%lld, %lld], which do not fit %s [%lld, %lld] of %s: the adapter "
                 "was trained on another model",
                 adapter_file, a->name, (long long)a->shape[0], (long long)a->shape[1], b_name,
                 (long long)b->shape[0], (long long)b->shape[1], weight_name, (long long)weight->shape[0],
                 (long long)weight->shape[1], m->model_dir);
    } else if (!is_float(weight->dtype) || !is_float(a->dtype) || !is_float(b->dtype)) {
        ft_error("%s: %s is %s; only F32, F16 and BF16 weights take an adapter", m->model_dir, weight_name,
                 ft_dtype_name(weight->dtype));
    } else {
        planned_tensor *planned = planned_for(m, weight);
        if (planned->lora_a)
            ft_error("%s: two adapters for %s", adapter_file, weight_name);
        else {
            planned->lora_a = a;
            planned->lora_b = b;
            status = 0;
        }
    }
    free(weight_name);
    free(b_name);
    return status;
}

static int attach_adapter(merge *m)
{
    const char *dir = m->options->adapter_dir;
    ft_lora_config config;
    if (ft_lora_config_load(dir, &config) < 0)
        return -1;
    m->scaling = (float)ft_lora_scaling(&config);
    char *file = ft_path_join(dir, "adapter_model.safetensors");
    int status = ft_safetensors_open(file, &m->adapter);
    size_t n_a = 0, n = status == 0 ? ft_safetensors_count(m->adapter) : 0;
    for (size_t i = 0; i < n && status == 0; i++) {
        const ft_tensor_view *view = ft_safetensors_at(m->adapter, i);
        bool is_a = has_suffix(view->name, LORA_A_SUFFIX), is_b = has_suffix(view->name, LORA_B_SUFFIX);
        if (strncmp(view->name, ADAPTER_PREFIX, strlen(ADAPTER_PREFIX)) != 0 || (!is_a && !is_b))
            status = ft_error("%s: tensor %s is not a peft LoRA A or B matrix; only plain LoRA adapters merge", file,
                              view->name);
        else if (is_a && (status = attach_adapter_tensor(m, view, file)) == 0)
            n_a++;
    }
    if (status == 0 && 2 * n_a != n)
        status = ft_error("%s: %zu tensors but %zu lora_A matrices: a lora_B without its lora_A", file, n, n_a);
    if (status == 0 && n_a == 0)
        status = ft_error("%s holds no LoRA tensors", file);
    free(file);
    return status;
}

static int compare_positions(const void *a, const void *b)
{
    size_t left = ((const planned_tensor *)a)->position, right = ((const planned_tensor *)b)->position;
    return left < right ? -1 : left > right;
}

/* Puts the tensors in the order of ft_model_weight_list, as transformers'
 * save_pretrained walks the weights when it fills shards. */
static int order_as_the_model(merge *m)
{
    ft_model_config config;
    if (ft_language_model_config_load(m->model_dir, &config) < 0)
        return -1;
    size_t n_weights = 0;
    ft_param_tensor *weights = ft_model_weight_list(&config, &n_weights);
    for (size_t i = 0; i < m->count; i++) {
        planned_tensor *t = &m->tensors[i];
        t->position = n_weights + i;
        for (size_t w = 0; w < n_weights; w++)
            if (strcmp(weights[w].name, t->view->name) == 0)
                t->position = w;
    }
    ft_model_weight_list_free(weights, n_weights);
    qsort(m->tensors, m->count, sizeof *m->tensors, compare_positions);
    return 0;
}

static void close_shard(merge *m, planned_tensor **filling, size_t *n_filling, uint64_t *filled)
{
    for (size_t k = 0; k < *n_filling; k++)
        filling[k]->shard = m->n_shards;
    m->n_shards++;
    *n_filling = 0;
    *filled = 0;
}

/* Shards as huggingface_hub splits a state dict: tensors in order fill the
 * current shard until the next would tip it over the limit; a tensor above the
 * limit gets a shard of its own at once, numbered before the one being filled. */
static void plan_shards(merge *m, uint64_t limit)
{
    planned_tensor **filling = ft_xcalloc(m->count ? m->count : 1, sizeof *filling);
    size_t n_filling = 0;
    uint64_t filled = 0;
    m->n_shards = 0;
    for (size_t i = 0; i < m->count; i++) {
        planned_tensor *t = &m->tensors[i];
        if (t->bytes > limit) {
            t->shard = m->n_shards++;
            continue;
        }
        if (n_filling > 0 && filled + t->bytes > limit)
            close_shard(m, filling, &n_filling, &filled);
        filling[n_filling++] = t;
        filled += t->bytes;
    }
    if (n_filling > 0 || m->n_shards == 0)
        close_shard(m, filling, &n_filling, &filled);
    free(filling);
}

static int plan(merge *m)
{
    if (ft_safetensors_open(m->model_dir, &m->model) < 0)
        return -1;
    m->count = ft_safetensors_count(m->model);
    m->tensors = ft_xcalloc(m->count ? m->count : 1, sizeof *m->tensors);
    for (size_t i = 0; i < m->count; i++) {
        planned_tensor *t = &m->tensors[i];
        t->view = ft_safetensors_at(m->model, i);
        t->dtype = m->options->convert && is_float(t->view->dtype) ? m->options->dtype : t->view->dtype;
        t->bytes = element_count(t->view) * ft_dtype_size(t->dtype);
    }
    if (order_as_the_model(m) < 0)
        return -1;
    if (m->options->adapter_dir && attach_adapter(m) < 0)
        return -1;
    plan_shards(m, m->options->max_shard_bytes ? m->options->max_shard_bytes : FT_MERGE_SHARD_BYTES);
    return 0;
}

static bool is_changed(const planned_tensor *t) { return t->lora_a || t->dtype != t->view->dtype; }

static int report_tensor(merge *m)
{
    m->done++;
    if (m->options->progress && m->options->progress(m->options->progress_context, m->done, m->count) != 0)
        return ft_error("merging %s: stopped", m->model_dir);
    return 0;
}

static int merge_adapter(const merge *m, const planned_tensor *t, float *values)
{
    uint64_t a_count = element_count(t->lora_a), b_count = element_count(t->lora_b);
    float *a = malloc(a_count * sizeof(float)), *b = malloc(b_count * sizeof(float));
    int status = a && b ? 0 : ft_error("out of memory reading the adapter of %s", t->view->name);
    if (status == 0 && (ft_tensor_to_f32(t->lora_a, a) < 0 || ft_tensor_to_f32(t->lora_b, b) < 0))
        status = -1;
    if (status == 0)
        ft_lora_merge_into(values, a, b, (int)t->view->shape[0], (int)t->view->shape[1], (int)t->lora_a->shape[0],
                           m->scaling);
    free(a);
    free(b);
    return status;
}

typedef struct {
    merge *m;
    planned_tensor **shard; /* the tensors being written, as given to the writer */
} producing;

/* The writer's producer: one changed tensor's bytes, made in f32 (in the
 * output buffer itself when it is f32) and rounded to the written dtype. */
static int produce(void *context, size_t index, void *buffer, size_t size_bytes)
{
    producing *p = context;
    const planned_tensor *t = p->shard[index];
    uint64_t n = element_count(t->view);
    float *values = t->dtype == FT_DTYPE_F32 ? buffer : malloc(n * sizeof(float));
    if (!values)
        return ft_error("out of memory converting %s (%llu values)", t->view->name, (unsigned long long)n);
    int status = ft_tensor_to_f32(t->view, values);
    if (status == 0 && t->lora_a)
        status = merge_adapter(p->m, t, values);
    uint16_t *halves = buffer;
    for (uint64_t k = 0; status == 0 && t->dtype != FT_DTYPE_F32 && k < n; k++)
        halves[k] = t->dtype == FT_DTYPE_BF16 ? ft_f32_to_bf16(values[k]) : ft_f32_to_f16(values[k]);
    if (values != buffer)
        free(values);
    return status == 0 ? report_tensor(p->m) : -1;
}

static char *shard_name(const merge *m, int shard)
{
    if (m->n_shards == 1)
        return ft_xstrdup("model.safetensors");
    char name[64];
    snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", shard + 1, m->n_shards);
    return ft_xstrdup(name);
}

/* Tensors as they are go straight from the mapping; the changed ones are made
 * one at a time as the writer reaches them. */
static int write_shard(merge *m, int shard, const char *out_dir)
{
    ft_tensor_to_write *writes = ft_xcalloc(m->count ? m->count : 1, sizeof *writes);
    planned_tensor **in_shard = ft_xcalloc(m->count ? m->count : 1, sizeof *in_shard);
    size_t n = 0, n_as_is = 0;
    for (size_t i = 0; i < m->count; i++) {
        planned_tensor *t = &m->tensors[i];
        if (t->shard != shard)
            continue;
        ft_tensor_to_write *w = &writes[n];
        w->name = t->view->name;
        w->dtype = t->dtype;
        w->n_dims = t->view->n_dims;
        memcpy(w->shape, t->view->shape, sizeof w->shape);
        w->data = is_changed(t) ? NULL : t->view->data;
        n_as_is += !is_changed(t);
        in_shard[n++] = t;
    }
    char *name = shard_name(m, shard), *path = ft_path_join(out_dir, name);
    const char *key = "format", *value = "pt";
    producing context = {m, in_shard};
    int status = ft_safetensors_write_produced(path, writes, n, &key, &value, 1, produce, &context);
    for (size_t i = 0; i < n_as_is && status == 0; i++)
        status = report_tensor(m);
    free(in_shard);
    free(writes);
    free(name);
    free(path);
    return status;
}

static int write_index(const merge *m, const char *out_dir)
{
    json_t *root = json_object(), *metadata = json_object(), *weight_map = json_object();
    uint64_t total = 0;
    for (size_t i = 0; i < m->count; i++) {
        total += m->tensors[i].bytes;
        char *name = shard_name(m, m->tensors[i].shard);
        json_object_set_new(weight_map, m->tensors[i].view->name, json_string(name));
        free(name);
    }
    json_object_set_new(metadata, "total_size", json_integer((json_int_t)total));
    json_object_set_new(root, "metadata", metadata);
    json_object_set_new(root, "weight_map", weight_map);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    char *path = ft_path_join(out_dir, "model.safetensors.index.json");
    int status = ft_write_file_atomic(path, text, strlen(text));
    free(path);
    free(text);
    return status;
}

/* config.json, its dtype naming the converted weights'. */
static int write_config(const merge *m, const char *out_dir)
{
    char *source = ft_path_join(m->model_dir, "config.json"), *destination = ft_path_join(out_dir, "config.json");
    int status;
    if (!m->options->convert) {
        status = ft_copy_file(source, destination);
    } else {
        json_error_t error;
        json_t *root = json_load_file(source, JSON_PRESERVE_ORDER, &error);
        if (!root) {
            status = ft_error("%s: not readable JSON: %s (line %d)", source, error.text, error.line);
        } else {
            const char *name = ft_dtype_torch_name(m->options->dtype);
            json_object_set_new(root, "torch_dtype", json_string(name));
            if (json_object_get(root, "dtype")) /* transformers 4.56 and later write both */
                json_object_set_new(root, "dtype", json_string(name));
            char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            status = ft_write_file_atomic(destination, text, strlen(text));
            free(text);
            json_decref(root);
        }
    }
    free(source);
    free(destination);
    return status;
}

int ft_model_merge_write(const char *model_dir, const char *out_dir, const ft_model_merge_options *options)
{
    merge m = {.model_dir = model_dir, .options = options};
    int status = plan(&m);
    if (status == 0)
        status = ft_mkdir_p(out_dir);
    for (int shard = 0; shard < m.n_shards && status == 0; shard++)
        status = write_shard(&m, shard, out_dir);
    if (status == 0 && m.n_shards > 1)
        status = write_index(&m, out_dir);
    if (status == 0)
        status = write_config(&m, out_dir);
    for (size_t i = 0; i < sizeof copied_files / sizeof copied_files[0] && status == 0; i++) {
        char *source = ft_path_join(model_dir, copied_files[i]), *destination = ft_path_join(out_dir, copied_files[i]);
        if (ft_path_exists(source))
            status = ft_copy_file(source, destination);
        free(source);
        free(destination);
    }
    free(m.tensors);
    if (m.adapter)
        ft_safetensors_close(m.adapter);
    if (m.model)
        ft_safetensors_close(m.model);
    return status;
}
