/* vision_preprocess: an RGB image into the pixel values a vision-language model
 * reads, exactly as LLaMA-Factory's multimodal plugins followed by the models'
 * Hugging Face image processors compute them:
 *   - LLaMA-Factory first shrinks an image over image_max_pixels and enlarges one
 *     under image_min_pixels (keeping its aspect, Pillow bicubic); for Qwen2-VL it
 *     also widens a side under 28 and squeezes an aspect over 200 to 180.
 *   - Qwen2-VL / Qwen2.5-VL (Qwen2VLImageProcessor): smart_resize to multiples of
 *     patch_size x merge_size between min_pixels and max_pixels, bicubic, x 1/255,
 *     CLIP mean/std, then 14 x 14 patches, the frame repeated temporal_patch_size
 *     times, rows in the 2 x 2 merge order: (t, h/2, w/2, 2, 2) x (channel, t, 14, 14).
 *   - LLaVA (CLIPImageProcessor): shortest edge to 336, bicubic, centre crop
 *     336 x 336, x 1/255, CLIP mean/std; channel-first. */
#ifndef FTPIPE_VISION_PREPROCESS_H
#define FTPIPE_VISION_PREPROCESS_H

#include <stdint.h>

#include "ftpipe/formats/image.h"

/* LLaMA-Factory's image_max_pixels / image_min_pixels defaults. */
#define FT_IMAGE_MAX_PIXELS_DEFAULT (768 * 768)
#define FT_IMAGE_MIN_PIXELS_DEFAULT (32 * 32)
/* No resize makes more pixels than this (Pillow's decompression-bomb limit). */
#define FT_VISION_MAX_RESIZED_PIXELS 178956970

typedef struct {
    int64_t image_min_pixels, image_max_pixels; /* LLaMA-Factory's regularisation */
    int64_t min_pixels, max_pixels; /* the processor's size.shortest_edge / longest_edge */
    int patch_size, temporal_patch_size, merge_size;
    float mean[3], std[3];
} ft_qwen2vl_image_options;

typedef struct {
    int64_t image_min_pixels, image_max_pixels;
    int shortest_edge, crop_height, crop_width;
    float mean[3], std[3];
} ft_clip_image_options;

typedef struct {
    int grid_t, grid_h, grid_w; /* Qwen2-VL's image_grid_thw; 1, H, W for CLIP */
    int64_t n_rows, row_length; /* pixel_values is n_rows x row_length */
    float *pixel_values;        /* owned */
} ft_vision_pixels;

/* Qwen2-VL's preprocessor_config.json defaults and LLaMA-Factory's. */
void ft_qwen2vl_image_options_default(ft_qwen2vl_image_options *options);
/* llava-hf/llava-1.5's preprocessor_config.json and LLaMA-Factory's defaults. */
void ft_clip_image_options_default(ft_clip_image_options *options);

/* transformers' smart_resize; an aspect over 200 is an error naming the image. */
int ft_qwen2vl_smart_resize(int height, int width, int factor, int64_t min_pixels, int64_t max_pixels,
                            const char *name, int *resized_height, int *resized_width);

/* LLaMA-Factory's _preprocess_image (qwen: its Qwen2-VL additions); replaces image.
 * A side that would shrink to nothing, or a resize over FT_VISION_MAX_RESIZED_PIXELS,
 * is an error naming the image. */
int ft_llamafactory_regularize_image(ft_image *image, int64_t min_pixels, int64_t max_pixels, int qwen,
                                     const char *name);

/* pixel_values: (grid_t * grid_h * grid_w) rows of 3 * temporal * patch * patch. */
int ft_qwen2vl_preprocess(const ft_image *image, const ft_qwen2vl_image_options *options, const char *name,
                          ft_vision_pixels *out);
/* The image's token count in the language model: grid_t * grid_h * grid_w / merge_size^2. */
int64_t ft_qwen2vl_image_tokens(const ft_vision_pixels *pixels, int merge_size);

/* pixel_values: 3 rows (channels) of crop_height * crop_width. */
int ft_clip_preprocess(const ft_image *image, const ft_clip_image_options *options, const char *name,
                       ft_vision_pixels *out);

void ft_vision_pixels_free(ft_vision_pixels *pixels);

#endif
