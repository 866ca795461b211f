/* model_save: weights from the backend to model.safetensors, beside copies of
 * the base folder's other files. A vision-language model's trained weights keep
 * the names the base's files give them (its projector's too, when trained
 * whole), and its frozen tower (and projector) is copied from those files as
 * it is. */
#include "ftpipe/model/model_save.h"

#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"
#include "model_internal.h"

static const char *const copied_files[] = {"config.json",           "tokenizer.json",         "tokenizer_config.json",
                                           "special_tokens_map.json", "generation_config.json", "preprocessor_config.json",
                                           "processor_config.json",  "chat_template.json"};

static int output_dtype(const ft_model_config *config, ft_dtype *out)
{
    const char *name = config->torch_dtype;
    if (!name[0] || strcmp(name, "float32") == 0)
        *out = FT_DTYPE_F32;
    else if (strcmp(name, "bfloat16") == 0)
        *out = FT_DTYPE_BF16;
    else if (strcmp(name, "float16") == 0)
        *out = FT_DTYPE_F16;
    else
        return ft_error("config.json's torch_dtype is %s; a trained model is written as float32, bfloat16 or float16",
                        name);
    return 0;
}

/* The weights written: the language model's, then a projector's trained whole
 * (caller frees the array). */
static ft_param_tensor *saved_weights(const ft_model *model, size_t *count, size_t *n_language)
{
    size_t n_projector = 0;
    const ft_param_tensor *weights = ft_model_weights(model, n_language);
    const ft_param_tensor *projector = model->projector ? ft_projector_tensors(model->projector, &n_projector) : NULL;
    *count = *n_language + n_projector;
    ft_param_tensor *all = ft_xcalloc(*count ? *count : 1, sizeof *all);
    memcpy(all, weights, *n_language * sizeof *all);
    if (n_projector)
        memcpy(all + *n_language, projector, n_projector * sizeof *all);
    return all;
}

/* A projector's weight in the base's files: as named, or under transformers
 * 4's "model." */
static const ft_tensor_view *find_projector_weight(const ft_safetensors *base, const char *name)
{
    const ft_tensor_view *view = ft_safetensors_find(base, name);
    if (view)
        return view;
    char *older = ft_xasprintf("model.%s", name);
    view = ft_safetensors_find(base, older);
    free(older);
    return view;
}

/* A vision-language model: each trained weight's name in the base's files, and
 * the base's tensors that are not trained weights (the tower), to copy as they
 * are; *n_frozen of them in frozen (caller frees both arrays). */
static int vision_layout(const ft_model *model, const char *base_model_dir, const ft_safetensors *base,
                         const ft_param_tensor *weights, size_t count, size_t n_language, const char ***file_names,
                         const ft_tensor_view ***frozen, size_t *n_frozen)
{
    size_t n_base = ft_safetensors_count(base);
    bool *trained = ft_xcalloc(n_base ? n_base : 1, sizeof *trained);
    *file_names = ft_xcalloc(count ? count : 1, sizeof **file_names);
    *frozen = ft_xcalloc(n_base ? n_base : 1, sizeof **frozen);
    *n_frozen = 0;
    for (size_t i = 0; i < count; i++) {
        char *name = ft_xasprintf("%s%s", model->weight_prefix, weights[i].name);
        const ft_tensor_view *view = i < n_language ? ft_model_find_weight(model, base, name)
                                                    : find_projector_weight(base, weights[i].name);
        free(name);
        if (!view) {
            free(trained);
            return ft_error_context("%s: the base model's files no longer hold the trained weights", base_model_dir);
        }
        (*file_names)[i] = view->name;
        for (size_t b = 0; b < n_base; b++)
            if (ft_safetensors_at(base, b) == view)
                trained[b] = true;
    }
    for (size_t b = 0; b < n_base; b++)
        if (!trained[b])
            (*frozen)[(*n_frozen)++] = ft_safetensors_at(base, b);
    free(trained);
    return 0;
}

/* The trained weights made one at a time as the file is written: read from
 * host memory, through ZeRO-3's shards a unit at a time (the first
 * n_on_host), or downloaded (into scratch when converted), then converted to
 * the file's dtype, so that the host holds one tensor (and one unit) at a
 * time. */
typedef struct {
    ft_backend *backend;
    const ft_param_tensor *weights;
    size_t n_on_host;
    ft_param_values *sharded;  /* NULL: the first n_on_host are in host memory */
    ft_dtype dtype;
    float *scratch;            /* the largest downloaded (or read) tensor's floats, when converted */
} producing;

static int produce(void *context, size_t index, void *buffer, size_t size_bytes)
{
    const producing *p = context;
    const ft_param_tensor *w = &p->weights[index];
    const float *values = w->value;
    float *floats = p->dtype == FT_DTYPE_F32 ? buffer : p->scratch;
    if (index < p->n_on_host && p->sharded) {
        if (ft_param_values_read(p->sharded, index, floats) < 0)
            return -1;
        values = floats;
    } else if (index >= p->n_on_host) {
        p->backend->download(p->backend, floats, w->value, w->count * sizeof(float));
        values = floats;
    }
    if (p->dtype == FT_DTYPE_F32) {
        if (values != buffer)
            memcpy(buffer, values, size_bytes);
        return 0;
    }
    uint16_t *to = buffer;
    for (size_t k = 0; k < w->count; k++)
        to[k] = p->dtype == FT_DTYPE_BF16 ? ft_f32_to_bf16(values[k]) : ft_f32_to_f16(values[k]);
    return 0;
}

static int write_weights(const ft_model *model, const char *base_model_dir, const char *path, ft_dtype dtype)
{
    size_t count, n_language;
    ft_param_tensor *weights = saved_weights(model, &count, &n_language);
    const ft_model_config *config = ft_model_get_config(model);
    ft_safetensors *base = NULL;
    const char **file_names = NULL;
    const ft_tensor_view **frozen = NULL;
    size_t n_frozen = 0;
    if (config->vision_language || config->llava) {
        if (ft_safetensors_open(base_model_dir, &base) < 0 ||
            vision_layout(model, base_model_dir, base, weights, count, n_language, &file_names, &frozen,
                          &n_frozen) < 0) {
            ft_safetensors_close(base);
            free(weights);
            return -1;
        }
    }
    /* ZeRO-3 holds the language model's weights (the first n_on_host): read through its shards in their
     * order, or gathered whole into host memory */
    bool on_host = model->save_values || ft_model_weights_on_host(model);
    producing p = {ft_model_backend(model), weights, on_host ? n_language : 0, model->save_values, dtype, NULL};
    size_t largest = 0;
    for (size_t i = p.sharded ? 0 : p.n_on_host; i < count; i++)
        largest = weights[i].count > largest ? weights[i].count : largest;
    if (largest && dtype != FT_DTYPE_F32 && !(p.scratch = malloc(largest * sizeof(float)))) {
        free(file_names);
        free(frozen);
        free(weights);
        ft_safetensors_close(base);
        return ft_error("out of host memory for a tensor of %zu weights to write %s", largest, path);
    }
    ft_tensor_to_write *tensors = ft_xcalloc(count + n_frozen + 1, sizeof *tensors);
    for (size_t i = 0; i < count; i++) { /* made one at a time, but floats already in host memory */
        const ft_param_tensor *w = &weights[i];
        bool as_is = i < p.n_on_host && !p.sharded && dtype == FT_DTYPE_F32;
        tensors[i] = (ft_tensor_to_write){file_names ? file_names[i] : w->name, dtype, w->n_dims,
                                          {w->shape[0], w->shape[1]}, as_is ? w->value : NULL};
    }
    for (size_t f = 0; f < n_frozen; f++) {
        const ft_tensor_view *view = frozen[f];
        tensors[count + f] = (ft_tensor_to_write){view->name, view->dtype, view->n_dims, {0}, view->data};
        memcpy(tensors[count + f].shape, view->shape, sizeof view->shape);
    }
    const char *key = "format", *value = "pt";
    int status = (p.sharded ? ft_safetensors_write_produced_in_order : ft_safetensors_write_produced)(
        path, tensors, count + n_frozen, &key, &value, 1, produce, &p);
    free(tensors);
    free(file_names);
    free(frozen);
    free(weights);
    ft_safetensors_close(base);
    free(p.scratch);
    return status;
}

int ft_model_save(const ft_model *model, const char *base_model_dir, const char *out_dir)
{
    ft_dtype dtype = FT_DTYPE_F32;
    if (output_dtype(ft_model_get_config(model), &dtype) < 0 || ft_mkdir_p(out_dir) < 0)
        return -1;
    int status = 0;
    for (size_t i = 0; i < sizeof copied_files / sizeof copied_files[0] && status == 0; i++) {
        char *source = ft_path_join(base_model_dir, copied_files[i]);
        char *destination = ft_path_join(out_dir, copied_files[i]);
        if (ft_path_exists(source))
            status = ft_copy_file(source, destination);
        free(source);
        free(destination);
    }
    char *path = ft_path_join(out_dir, "model.safetensors");
    if (status == 0)
        status = write_weights(model, base_model_dir, path, dtype);
    free(path);
    return status;
}
