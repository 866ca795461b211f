/* preprocessor_config: preprocessor_config.json into Qwen2-VL's image options. */
#include "ftpipe/formats/preprocessor_config.h"

#include <jansson.h>
#include <stdlib.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"

static int invalid(const char *path, const char *key, const char *expected)
{
    return ft_error("%s: \"%s\" must be %s", path, key, expected);
}

/* A positive integer at key, if present. */
static int read_count(const json_t *object, const char *key, const char *path, int64_t limit, int64_t *out)
{
    const json_t *value = json_object_get(object, key);
    if (!value || json_is_null(value))
        return 0;
    if (!json_is_integer(value) || json_integer_value(value) < 1 || json_integer_value(value) > limit)
        return invalid(path, key, "a positive whole number");
    *out = json_integer_value(value);
    return 0;
}

static int read_small(const json_t *object, const char *key, const char *path, int *out)
{
    int64_t value = *out;
    if (read_count(object, key, path, 1024, &value) != 0)
        return -1;
    *out = (int)value;
    return 0;
}

static int read_triple(const json_t *object, const char *key, const char *path, float out[3])
{
    const json_t *value = json_object_get(object, key);
    if (!value || json_is_null(value))
        return 0;
    if (!json_is_array(value) || json_array_size(value) != 3)
        return invalid(path, key, "a list of 3 numbers (red, green, blue)");
    for (size_t i = 0; i < 3; i++) {
        const json_t *item = json_array_get(value, i);
        if (!json_is_number(item))
            return invalid(path, key, "a list of 3 numbers (red, green, blue)");
        out[i] = (float)json_number_value(item);
    }
    return 0;
}

int ft_qwen2vl_image_options_load(const char *model_dir, ft_qwen2vl_image_options *options)
{
    ft_qwen2vl_image_options_default(options);
    char *path = ft_path_join(model_dir, FT_PREPROCESSOR_CONFIG_FILE);
    if (!ft_path_exists(path)) {
        int status = ft_error("%s has no %s: images are preprocessed as the model's processor says, so the model "
                              "folder must hold it (download it with the model's other files)",
                              model_dir, FT_PREPROCESSOR_CONFIG_FILE);
        free(path);
        return status;
    }
    json_error_t error;
    json_t *root = json_load_file(path, 0, &error);
    int status = 0;
    if (!root)
        status = ft_error("%s: not valid JSON: %s (line %d)", path, error.text, error.line);
    else if (!json_is_object(root))
        status = ft_error("%s: expected an object", path);
    const int64_t pixel_limit = (int64_t)1 << 40;
    const json_t *size = root ? json_object_get(root, "size") : NULL;
    if (status == 0 && size && !json_is_null(size) && !json_is_object(size))
        status = invalid(path, "size", "an object {\"shortest_edge\", \"longest_edge\"}");
    if (status == 0 && size &&
        (read_count(size, "shortest_edge", path, pixel_limit, &options->min_pixels) != 0 ||
         read_count(size, "longest_edge", path, pixel_limit, &options->max_pixels) != 0))
        status = -1;
    if (status == 0 && (read_count(root, "min_pixels", path, pixel_limit, &options->min_pixels) != 0 ||
                        read_count(root, "max_pixels", path, pixel_limit, &options->max_pixels) != 0 ||
                        read_small(root, "patch_size", path, &options->patch_size) != 0 ||
                        read_small(root, "temporal_patch_size", path, &options->temporal_patch_size) != 0 ||
                        read_small(root, "merge_size", path, &options->merge_size) != 0 ||
                        read_triple(root, "image_mean", path, options->mean) != 0 ||
                        read_triple(root, "image_std", path, options->std) != 0))
        status = -1;
    for (int i = 0; i < 3 && status == 0; i++)
        if (!(options->std[i] > 0))
            status = invalid(path, "image_std", "3 positive numbers");
    if (status == 0 && options->min_pixels > options->max_pixels)
        status = ft_error("%s: the smallest image (%lld pixels) is larger than the largest (%lld)", path,
                          (long long)options->min_pixels, (long long)options->max_pixels);
    json_decref(root);
    free(path);
    return status;
}
