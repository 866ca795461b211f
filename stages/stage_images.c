/* stage_images: records' images for the stages (see include/ftpipe/stages/stage_images.h). */
#include "ftpipe/stages/stage_images.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/formats/preprocessor_config.h"

int ft_stage_image_options(ft_stage *stage, const char *model_dir, ft_qwen2vl_image_options *options)
{
    char *folder = ft_path_is_dir(model_dir) ? ft_xstrdup(model_dir) : ft_path_dirname(model_dir);
    int status = ft_qwen2vl_image_options_load(folder, options);
    free(folder);
    if (status != 0)
        return -1;
    options->image_max_pixels = ft_stage_param_int(stage, "image_max_pixels");
    options->image_min_pixels = ft_stage_param_int(stage, "image_min_pixels");
    if (options->image_min_pixels < 1 || options->image_max_pixels < options->image_min_pixels)
        return ft_error("image_min_pixels = %lld, image_max_pixels = %lld: expected 1 <= image_min_pixels <= "
                        "image_max_pixels",
                        (long long)options->image_min_pixels, (long long)options->image_max_pixels);
    return 0;
}

/* LLaVA's CLIP table: the processor's crop must be the tower's image size. */
static int open_clip_table(ft_stage *stage, const char *folder, const char *scratch, ft_image_table **out)
{
    ft_llava_config config;
    ft_clip_image_options options;
    int status = ft_llava_config_load(folder, &config);
    if (status == 0)
        status = ft_clip_image_options_load(folder, &options);
    if (status == 0) {
        options.image_max_pixels = ft_stage_param_int(stage, "image_max_pixels");
        options.image_min_pixels = ft_stage_param_int(stage, "image_min_pixels");
        if (options.image_min_pixels < 1 || options.image_max_pixels < options.image_min_pixels)
            status = ft_error("image_min_pixels = %lld, image_max_pixels = %lld: expected 1 <= image_min_pixels <= "
                              "image_max_pixels",
                              (long long)options.image_min_pixels, (long long)options.image_max_pixels);
    }
    if (status == 0 && (options.crop_height != config.vision.image_size ||
                        options.crop_width != config.vision.image_size))
        status = ft_error("%s: the processor crops images to %d x %d, but the vision tower reads %d x %d: the "
                          "preprocessor_config.json and config.json are of different models",
                          folder, options.crop_width, options.crop_height, config.vision.image_size,
                          config.vision.image_size);
    if (status == 0)
        status = ft_image_table_open_clip(scratch, &options, ft_llava_image_tokens(&config), out);
    return status;
}

int ft_stage_image_table_open(ft_stage *stage, const char *model_dir, bool clip, const char *scratch,
                              ft_image_table **out)
{
    if (clip)
        return open_clip_table(stage, model_dir, scratch, out);
    ft_qwen2vl_image_options options;
    if (ft_stage_image_options(stage, model_dir, &options) != 0)
        return -1;
    return ft_image_table_open(scratch, &options, out);
}

int ft_stage_check_image_is_an_input(ft_stage *stage, const char *path, size_t first_input)
{
    char *real = realpath(path, NULL);
    bool inside = false;
    for (size_t i = first_input; real && i < ft_stage_input_count(stage) && !inside; i++) {
        char *input = realpath(ft_stage_input_path(stage, i), NULL);
        size_t length = input ? strlen(input) : 0;
        inside = input && ft_path_is_dir(input) && strncmp(real, input, length) == 0 &&
                 (real[length] == '/' || (length == 1 && input[0] == '/'));
        free(input);
    }
    free(real);
    if (inside)
        return 0;
    return ft_error("image %s is not inside an input folder of %s, so a change to it would not make the stage run "
                    "again: give the folder that holds the dataset and its images as the input (as LLaMA-Factory's "
                    "data folder with its dataset_info.json)",
                    path, ft_stage_target(stage));
}

int ft_stage_images_gather(ft_stage *stage, const char *model_dir, const ft_dataset *dataset, size_t count,
                           size_t first_input, ft_stage_images *out)
{
    memset(out, 0, sizeof *out);
    size_t n_with_images = 0;
    for (size_t i = 0; i < count; i++)
        n_with_images += dataset->conversations[i].n_images > 0;
    if (n_with_images == 0)
        return 0;
    if (ft_mkdir_p(ft_stage_work_dir(stage)) < 0) /* `ftpipe estimate` reads the images before any run made it */
        return -1;
    char *scratch = ft_path_join(ft_stage_work_dir(stage), "pixels.scratch");
    int status = ft_stage_image_table_open(stage, model_dir, ft_llava_config_is_llava(model_dir), scratch,
                                           &out->table);
    free(scratch);
    if (status != 0)
        return -1;
    out->count = count;
    out->per_conversation = ft_xcalloc(count, sizeof *out->per_conversation);
    out->per_sample = ft_xcalloc(count, sizeof *out->per_sample);
    uint32_t **indices = ft_xcalloc(count, sizeof *indices);
    for (size_t i = 0; i < count && status == 0; i++) {
        const ft_conversation *conversation = &dataset->conversations[i];
        size_t n = conversation->n_images;
        if (n == 0)
            continue;
        uint32_t *n_tokens = ft_xcalloc(n, sizeof *n_tokens);
        indices[i] = ft_xcalloc(n, sizeof *indices[i]);
        out->per_conversation[i] = (ft_conversation_images){n_tokens, n};
        for (size_t k = 0; k < n && status == 0; k++) {
            status = ft_stage_check_image_is_an_input(stage, conversation->images[k], first_input);
            if (status == 0 && ft_image_table_add(out->table, conversation->images[k], &indices[i][k]) != 0)
                status = ft_error_context("%s: record %zu: image %zu", conversation->file, conversation->record,
                                          k + 1);
            else if (status == 0)
                n_tokens[k] = ft_image_table_tokens(out->table, indices[i][k]);
        }
    }
    if (status == 0)
        status = ft_image_table_seal(out->table);
    for (size_t i = 0; i < count && status == 0; i++) {
        size_t n = out->per_conversation[i].count;
        ft_stored_image *stored = ft_xcalloc(n ? n : 1, sizeof *stored);
        for (size_t k = 0; k < n; k++)
            ft_image_table_image(out->table, indices[i][k], &stored[k]);
        out->per_sample[i] = (ft_sample_images){stored, n};
    }
    for (size_t i = 0; i < count; i++)
        free(indices[i]);
    free(indices);
    if (status == 0)
        ft_stage_log(stage, "%zu of %zu records with images, %zu distinct images preprocessed", n_with_images, count,
                     ft_image_table_count(out->table));
    return status;
}

void ft_stage_images_free(ft_stage_images *images)
{
    for (size_t i = 0; i < images->count; i++) {
        free((void *)images->per_conversation[i].n_tokens);
        free((void *)images->per_sample[i].images);
    }
    free(images->per_conversation);
    free(images->per_sample);
    ft_image_table_free(images->table);
    memset(images, 0, sizeof *images);
}
