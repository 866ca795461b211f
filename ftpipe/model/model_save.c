/* model_save: weights from the backend to model.safetensors, beside copies of
 * the base folder's other files. */
#include "ftpipe/model/model_save.h"

#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"

static const char *const copied_files[] = {"config.json", "tokenizer.json", "tokenizer_config.json",
                                           "special_tokens_map.json", "generation_config.json"};

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

static int write_weights(const ft_model *model, const char *path, ft_dtype dtype)
{
    size_t count, total = 0;
    const ft_param_tensor *weights = ft_model_weights(model, &count);
    for (size_t i = 0; i < count; i++)
        total += weights[i].count;
    size_t element_bytes = ft_dtype_size(dtype);
    float *host = malloc(total * sizeof(float));
    void *converted = dtype == FT_DTYPE_F32 ? host : malloc(total * element_bytes);
    if (!host || !converted) {
        free(host);
        return ft_error("out of host memory holding the %zu trained weights to write %s", total, path);
    }
    ft_backend *backend = ft_model_backend(model);
    ft_tensor_to_write *tensors = ft_xcalloc(count ? count : 1, sizeof *tensors);
    size_t at = 0;
    for (size_t i = 0; i < count; i++) {
        const ft_param_tensor *w = &weights[i];
        backend->download(backend, host + at, w->value, w->count * sizeof(float));
        for (size_t k = 0; dtype != FT_DTYPE_F32 && k < w->count; k++)
            ((uint16_t *)converted)[at + k] =
                dtype == FT_DTYPE_BF16 ? ft_f32_to_bf16(host[at + k]) : ft_f32_to_f16(host[at + k]);
        tensors[i] = (ft_tensor_to_write){w->name, dtype, w->n_dims, {w->shape[0], w->shape[1]},
                                          (char *)converted + at * element_bytes};
        at += w->count;
    }
    const char *key = "format", *value = "pt";
    int status = ft_safetensors_write(path, tensors, count, &key, &value, 1);
    free(tensors);
    if (converted != host)
        free(converted);
    free(host);
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
        status = write_weights(model, path, dtype);
    free(path);
    return status;
}
