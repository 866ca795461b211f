/* preprocessor_config: a Hugging Face model folder's preprocessor_config.json,
 * read into the image options of its processor, as transformers reads it:
 * Qwen2VLImageProcessor's size {shortest_edge, longest_edge}, overridden by
 * min_pixels / max_pixels where given, patch_size, temporal_patch_size,
 * merge_size, image_mean and image_std; or CLIPImageProcessor's (LLaVA);
 * absent keys keep their defaults. */
#ifndef FTPIPE_PREPROCESSOR_CONFIG_H
#define FTPIPE_PREPROCESSOR_CONFIG_H

#include "ftpipe/formats/vision_preprocess.h"

#define FT_PREPROCESSOR_CONFIG_FILE "preprocessor_config.json"

/* options starts from ft_qwen2vl_image_options_default (LLaMA-Factory's
 * image_min_pixels / image_max_pixels are the caller's to set). A missing or
 * invalid file is an error naming it and the key. */
int ft_qwen2vl_image_options_load(const char *model_dir, ft_qwen2vl_image_options *options);

/* LLaVA's CLIPImageProcessor: size.shortest_edge (or a number), crop_size
 * {height, width} (or a number), image_mean, image_std; options starts from
 * ft_clip_image_options_default. Settings ftpipe does not compute (resample
 * other than bicubic, no centre crop, no resize) are errors naming the key. */
int ft_clip_image_options_load(const char *model_dir, ft_clip_image_options *options);

#endif
