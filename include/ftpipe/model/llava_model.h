/* llava_model: a whole LlavaForConditionalGeneration on the cpu backend, forward
 * only: the CLIP vision tower and projector (vision_clip.h) and the language
 * model (a Llama or Qwen2 decoder, model.h, from text_config and the
 * language_model.* weights), the image features placed at the <image> tokens'
 * rows of the token embeddings before the first layer, as transformers'
 * LlavaModel does (masked_scatter: the features in order, image after image).
 *
 * ft_llava_place_image_features is that placing on its own, so that the
 * vision-language plumbing's shared embedding hook can take it over. */
#ifndef FTPIPE_LLAVA_MODEL_H
#define FTPIPE_LLAVA_MODEL_H

#include <stdint.h>

#include "ftpipe/backend/backend.h"
#include "ftpipe/model/model.h"
#include "ftpipe/model/vision_clip.h"

typedef struct ft_llava_model ft_llava_model;

/* options are the language model's (FT_FINETUNE_NONE: training with images is
 * not wired yet). */
int ft_llava_model_load(const char *model_dir, ft_backend *backend, const ft_model_options *options,
                        ft_llava_model **out);
void ft_llava_model_free(ft_llava_model *model);

ft_model *ft_llava_model_text(const ft_llava_model *model);
ft_vision_clip *ft_llava_model_vision(const ft_llava_model *model);

/* ft_model_forward on a batch whose image tokens stand for the n_images images
 * of pixel_values [n_images, 3, image_size, image_size], in order. A count of
 * image tokens other than n_images x tokens per image is an error. */
int ft_llava_model_forward(ft_llava_model *model, const ft_batch *batch, const float *pixel_values, int n_images,
                           float *logits, double *loss);

/* Writes feature rows [n_feature_rows, width], in order, over the rows of
 * embeddings [n_tokens, width] whose token is image_token_id. The counts must
 * agree (the caller checks: ft_llava_count_image_tokens). */
void ft_llava_place_image_features(float *embeddings, const int32_t *tokens, int n_tokens, int width,
                                   int32_t image_token_id, const float *features);
int64_t ft_llava_count_image_tokens(const int32_t *tokens, int n_tokens, int32_t image_token_id);

#endif
