/* preprocessor_config: preprocessor_config.json into Qwen2-VL's image options. */
#include "ftpipe/formats/preprocessor_config.h"

#include <jansson.h>
#include <stdbool.h>
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

/* The model folder's preprocessor_config.json, an object (*path: its path, to free). */
static int load_config(const char *model_dir, char **path, json_t **root)
{
    *root = NULL;
    *path = ft_path_join(model_dir, FT_PREPROCESSOR_CONFIG_FILE);
    if (!ft_path_exists(*path))
        return ft_error("%s has no %s: images are preprocessed as the model's processor says, so the model "
                        "folder must hold it (download it with the model's other files)",
                        model_dir, FT_PREPROCESSOR_CONFIG_FILE);
    json_error_t error;
    *root = json_load_file(*path, 0, &error);
    if (!*root)
        return ft_error("%s: not valid JSON: %s (line %d)", *path, error.text, error.line);
    if (!json_is_object(*root))
        return ft_error("%s: expected an object", *path);
    return 0;
}

int ft_qwen2vl_image_options_load(const char *model_dir, ft_qwen2vl_image_options *options)
{
    ft_qwen2vl_image_options_default(options);
    char *path;
    json_t *root;
    int status = load_config(model_dir, &path, &root);
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

/* A size given as a number, or as an object's key (its other keys ignored). */
static int read_edge(const json_t *root, const char *key, const char *inner, const char *path, int *out)
{
    const json_t *value = json_object_get(root, key);
    if (value && json_is_object(value))
        return read_small(value, inner, path, out);
    return read_small(root, key, path, out);
}

/* A flag that must keep the value ftpipe computes. */
static int require_flag(const json_t *root, const char *key, bool expected, const char *path)
{
    const json_t *value = json_object_get(root, key);
    if (!value || json_is_null(value) || (json_is_boolean(value) && json_is_true(value) == expected))
        return 0;
    return ft_error("%s: \"%s\" must be %s: ftpipe preprocesses LLaVA images as CLIPImageProcessor does by default",
                    path, key, expected ? "true" : "false");
}

int ft_clip_image_options_load(const char *model_dir, ft_clip_image_options *options)
{
    ft_clip_image_options_default(options);
    char *path;
    json_t *root;
    int status = load_config(model_dir, &path, &root);
    const json_t *resample = root ? json_object_get(root, "resample") : NULL;
    if (status == 0 && resample && !json_is_null(resample) &&
        (!json_is_integer(resample) || json_integer_value(resample) != 3))
        status = invalid(path, "resample", "3 (bicubic), the only resampling ftpipe computes");
    if (status == 0 && (read_edge(root, "size", "shortest_edge", path, &options->shortest_edge) != 0 ||
                        read_edge(root, "crop_size", "height", path, &options->crop_height) != 0 ||
                        read_edge(root, "crop_size", "width", path, &options->crop_width) != 0 ||
                        read_triple(root, "image_mean", path, options->mean) != 0 ||
                        read_triple(root, "image_std", path, options->std) != 0 ||
                        require_flag(root, "do_resize", true, path) != 0 ||
                        require_flag(root, "do_center_crop", true, path) != 0 ||
                        require_flag(root, "do_rescale", true, path) != 0 ||
                        require_flag(root, "do_normalize", true, path) != 0))
        status = -1;
    if (status == 0 && json_is_integer(json_object_get(root, "crop_size")))
        options->crop_width = options->crop_height;
    for (int i = 0; i < 3 && status == 0; i++)
        if (!(options->std[i] > 0))
            status = invalid(path, "image_std", "3 positive numbers");
    json_decref(root);
    free(path);
    return status;
}
