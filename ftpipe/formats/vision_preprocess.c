/* vision_preprocess: LLaMA-Factory's image regularisation, then Qwen2-VL's or
 * CLIP's image processor, to the float pixel values the vision tower reads. */
#include "ftpipe/formats/vision_preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/image_resize.h"

/* OpenAI CLIP's statistics, which Qwen2-VL's processor uses too. */
static const float CLIP_MEAN[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float CLIP_STD[3] = {0.26862954f, 0.26130258f, 0.27577711f};

void ft_qwen2vl_image_options_default(ft_qwen2vl_image_options *options)
{
    *options = (ft_qwen2vl_image_options){
        .image_min_pixels = FT_IMAGE_MIN_PIXELS_DEFAULT,
        .image_max_pixels = FT_IMAGE_MAX_PIXELS_DEFAULT,
        .min_pixels = 56 * 56,
        .max_pixels = 28 * 28 * 1280,
        .patch_size = 14,
        .temporal_patch_size = 2,
        .merge_size = 2,
    };
    memcpy(options->mean, CLIP_MEAN, sizeof CLIP_MEAN);
    memcpy(options->std, CLIP_STD, sizeof CLIP_STD);
}

void ft_clip_image_options_default(ft_clip_image_options *options)
{
    *options = (ft_clip_image_options){
        .image_min_pixels = FT_IMAGE_MIN_PIXELS_DEFAULT,
        .image_max_pixels = FT_IMAGE_MAX_PIXELS_DEFAULT,
        .shortest_edge = 336,
        .crop_height = 336,
        .crop_width = 336,
    };
    memcpy(options->mean, CLIP_MEAN, sizeof CLIP_MEAN);
    memcpy(options->std, CLIP_STD, sizeof CLIP_STD);
}

void ft_vision_pixels_free(ft_vision_pixels *pixels)
{
    free(pixels->pixel_values);
    memset(pixels, 0, sizeof *pixels);
}

/* Python's round(): halves go to the even neighbour (nearbyint in the default mode). */
static int64_t python_round(double x) { return (int64_t)nearbyint(x); }

int ft_qwen2vl_smart_resize(int height, int width, int factor, int64_t min_pixels, int64_t max_pixels,
                            const char *name, int *resized_height, int *resized_width)
{
    int longer = height > width ? height : width, shorter = height > width ? width : height;
    if (shorter <= 0 || (double)longer / shorter > 200)
        return ft_error("image '%s' is %d x %d pixels: its aspect ratio must be under 200 for "
                        "Qwen2-VL's processor; crop it", name, width, height);
    int64_t h_bar = python_round((double)height / factor) * factor;
    int64_t w_bar = python_round((double)width / factor) * factor;
    if (h_bar * w_bar > max_pixels) {
        double beta = sqrt((double)height * width / (double)max_pixels);
        h_bar = (int64_t)floor(height / beta / factor) * factor;
        w_bar = (int64_t)floor(width / beta / factor) * factor;
        if (h_bar < factor)
            h_bar = factor;
        if (w_bar < factor)
            w_bar = factor;
    } else if (h_bar * w_bar < min_pixels) {
        double beta = sqrt((double)min_pixels / ((double)height * width));
        h_bar = (int64_t)ceil(height * beta / factor) * factor;
        w_bar = (int64_t)ceil(width * beta / factor) * factor;
    }
    *resized_height = (int)h_bar;
    *resized_width = (int)w_bar;
    return 0;
}

/* Resizes image in place; a side that would shrink to nothing, or a result too
 * large to hold, is an error naming the image (Pillow raises on the first). */
static int resize_in_place(ft_image *image, int64_t width, int64_t height, const char *name)
{
    if (width < 1 || height < 1)
        return ft_error("image '%s' is %d x %d pixels: it is too thin to shrink to %lld x %lld; crop it", name,
                        image->width, image->height, (long long)width, (long long)height);
    if (width * height > FT_VISION_MAX_RESIZED_PIXELS)
        return ft_error("image '%s' is %d x %d pixels: resized for the vision model it would be %lld x %lld, "
                        "too large; crop it to a less elongated shape",
                        name, image->width, image->height, (long long)width, (long long)height);
    ft_image resized;
    ft_image_resize_bicubic(image, (int)width, (int)height, &resized);
    ft_image_free(image);
    *image = resized;
    return 0;
}

int ft_llamafactory_regularize_image(ft_image *image, int64_t min_pixels, int64_t max_pixels, int qwen,
                                     const char *name)
{
    double pixels = (double)image->width * image->height;
    if (pixels > (double)max_pixels) {
        double factor = sqrt((double)max_pixels / pixels);
        if (resize_in_place(image, (int64_t)(image->width * factor), (int64_t)(image->height * factor), name) != 0)
            return -1;
        pixels = (double)image->width * image->height;
    }
    if (pixels < (double)min_pixels) {
        double factor = sqrt((double)min_pixels / pixels);
        if (resize_in_place(image, (int64_t)(image->width * factor), (int64_t)(image->height * factor), name) != 0)
            return -1;
    }
    if (!qwen)
        return 0;
    if ((image->width < 28 || image->height < 28) &&
        resize_in_place(image, image->width < 28 ? 28 : image->width, image->height < 28 ? 28 : image->height,
                        name) != 0)
        return -1;
    if ((double)image->width / image->height > 200 &&
        resize_in_place(image, (int64_t)image->height * 180, image->height, name) != 0)
        return -1;
    if ((double)image->height / image->width > 200 &&
        resize_in_place(image, image->width, (int64_t)image->width * 180, name) != 0)
        return -1;
    return 0;
}

/* x / 255 in double, to float, then (x - mean) / std in float: the processors' order. */
static float normalise(uint8_t value, float mean, float std)
{
    float scaled = (float)(value * (1.0 / 255.0));
    return (scaled - mean) / std;
}

static int regularized_copy(const ft_image *image, int64_t min_pixels, int64_t max_pixels, int qwen,
                            const char *name, ft_image *copy)
{
    ft_image_alloc(copy, image->width, image->height);
    memcpy(copy->rgb, image->rgb, (size_t)image->width * image->height * 3);
    if (ft_llamafactory_regularize_image(copy, min_pixels, max_pixels, qwen, name) != 0) {
        ft_image_free(copy);
        return -1;
    }
    return 0;
}

int ft_qwen2vl_preprocess(const ft_image *image, const ft_qwen2vl_image_options *options, const char *name,
                          ft_vision_pixels *out)
{
    memset(out, 0, sizeof *out);
    if (options->image_min_pixels > options->image_max_pixels)
        return ft_error("image_min_pixels (%lld) is larger than image_max_pixels (%lld): make it smaller",
                        (long long)options->image_min_pixels, (long long)options->image_max_pixels);
    ft_image regular;
    if (regularized_copy(image, options->image_min_pixels, options->image_max_pixels, 1, name, &regular) != 0)
        return -1;
    int patch = options->patch_size, merge = options->merge_size, temporal = options->temporal_patch_size;
    int height, width;
    if (ft_qwen2vl_smart_resize(regular.height, regular.width, patch * merge, options->min_pixels,
                                options->max_pixels, name, &height, &width) != 0) {
        ft_image_free(&regular);
        return -1;
    }
    if (resize_in_place(&regular, width, height, name) != 0) {
        ft_image_free(&regular);
        return -1;
    }
    ft_image resized = regular;

    int grid_h = height / patch, grid_w = width / patch;
    out->grid_t = 1; /* one image: a single frame repeated over the temporal patch */
    out->grid_h = grid_h;
    out->grid_w = grid_w;
    out->n_rows = (int64_t)grid_h * grid_w;
    out->row_length = (int64_t)3 * temporal * patch * patch;
    out->pixel_values = ft_xmalloc(sizeof(float) * out->n_rows * out->row_length);
    /* Rows run over (block row, block column, row in block, column in block), a block
     * being merge x merge patches; each row over (channel, frame, y, x) in the patch. */
    float *row = out->pixel_values;
    for (int block_y = 0; block_y < grid_h / merge; block_y++)
        for (int block_x = 0; block_x < grid_w / merge; block_x++)
            for (int in_y = 0; in_y < merge; in_y++)
                for (int in_x = 0; in_x < merge; in_x++, row += out->row_length) {
                    int top = (block_y * merge + in_y) * patch, left = (block_x * merge + in_x) * patch;
                    float *value = row;
                    for (int c = 0; c < 3; c++)
                        for (int t = 0; t < temporal; t++)
                            for (int y = 0; y < patch; y++)
                                for (int x = 0; x < patch; x++) {
                                    uint8_t sample = resized.rgb[((size_t)(top + y) * width + left + x) * 3 + c];
                                    *value++ = normalise(sample, options->mean[c], options->std[c]);
                                }
                }
    ft_image_free(&resized);
    return 0;
}

int64_t ft_qwen2vl_image_tokens(const ft_vision_pixels *pixels, int merge_size)
{
    return (int64_t)pixels->grid_t * pixels->grid_h * pixels->grid_w / ((int64_t)merge_size * merge_size);
}

int ft_clip_preprocess(const ft_image *image, const ft_clip_image_options *options, const char *name,
                       ft_vision_pixels *out)
{
    memset(out, 0, sizeof *out);
    if (options->crop_height > options->shortest_edge || options->crop_width > options->shortest_edge)
        return ft_error("the CLIP processor's crop_size (%d x %d) is larger than its shortest_edge (%d): "
                        "the crop would need padding, which is not supported",
                        options->crop_width, options->crop_height, options->shortest_edge);
    ft_image regular;
    if (regularized_copy(image, options->image_min_pixels, options->image_max_pixels, 0, name, &regular) != 0)
        return -1;
    /* transformers' get_resize_output_image_size: the short side to shortest_edge,
     * the long side scaled and truncated. */
    int short_side = regular.width <= regular.height ? regular.width : regular.height;
    int long_side = regular.width <= regular.height ? regular.height : regular.width;
    int new_short = options->shortest_edge;
    int64_t new_long = (int64_t)((double)new_short * long_side / short_side);
    int64_t width = regular.width <= regular.height ? new_short : new_long;
    int64_t height = regular.width <= regular.height ? new_long : new_short;
    if (resize_in_place(&regular, width, height, name) != 0) {
        ft_image_free(&regular);
        return -1;
    }
    ft_image resized = regular;

    int64_t top = (height - options->crop_height) / 2, left = (width - options->crop_width) / 2;
    out->grid_t = 1;
    out->grid_h = options->crop_height;
    out->grid_w = options->crop_width;
    out->n_rows = 3;
    out->row_length = (int64_t)options->crop_height * options->crop_width;
    out->pixel_values = ft_xmalloc(sizeof(float) * 3 * out->row_length);
    float *value = out->pixel_values;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < options->crop_height; y++)
            for (int x = 0; x < options->crop_width; x++) {
                uint8_t sample = resized.rgb[((size_t)(top + y) * width + left + x) * 3 + c];
                *value++ = normalise(sample, options->mean[c], options->std[c]);
            }
    ft_image_free(&resized);
    return 0;
}
