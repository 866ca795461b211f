/* vision_clip: LLaVA's image encoder, frozen, forward only (but for the
 * projector, which projector.h can train), through the backend's
 * ops (fp32 on cpu, bf16 on cuda, the weights in the backend's memory and dtype;
 * nothing kept for a backward pass): the CLIP
 * ViT vision tower (patch embedding as a matrix product, class and position
 * embeddings, pre-layernorm, encoder layers of LayerNorm, attention with biases
 * and a quick_gelu MLP), the hidden state of vision_feature_layer (no
 * post-layernorm, as LLaVA reads it), vision_feature_select_strategy ("default"
 * drops CLS), then the two-layer projector (linear, GELU, linear; projector.h,
 * which can train it), as
 * transformers' LlavaForConditionalGeneration.get_image_features computes them.
 *
 * Weights come from the model folder under the names transformers gives them:
 * llava-hf's hub checkpoints (vision_tower.vision_model.*), transformers 5's
 * saves (vision_tower.*) and transformers 4's (model.vision_tower.*), with the
 * projector under multi_modal_projector.* or model.multi_modal_projector.*. Only
 * the encoder layers up to the feature layer are loaded. */
#ifndef FTPIPE_VISION_CLIP_H
#define FTPIPE_VISION_CLIP_H

#include <stddef.h>
#include <stdint.h>

#include "ftpipe/backend/backend.h"
#include "ftpipe/formats/image_store.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/projector.h"

typedef struct ft_vision_clip ft_vision_clip;

/* Reads model_dir's config.json and weights into the backend's memory. */
int ft_vision_clip_load(const char *model_dir, ft_backend *backend, ft_vision_clip **out);
void ft_vision_clip_free(ft_vision_clip *clip);

const ft_llava_config *ft_vision_clip_config(const ft_vision_clip *clip);
/* The loaded tower's and projector's weights, in the backend's dtype. */
size_t ft_vision_clip_weight_bytes(const ft_vision_clip *clip);
/* The elements of the weights a config's tower and projector load (the encoder
 * layers up to the feature layer), for a memory plan made before loading. */
size_t ft_vision_clip_weight_count(const ft_llava_config *config);
/* Backend bytes a pass over n_images images needs beside the weights (element_bytes
 * activations, int32 indices; the cpu backend's attention scratch apart). */
size_t ft_vision_clip_work_bytes(const ft_llava_config *config, int n_images, size_t element_bytes);
/* Rows of features each image gives: ft_llava_image_tokens. */
int ft_vision_clip_tokens_per_image(const ft_vision_clip *clip);
/* Width of a feature row: the language model's hidden size. */
int ft_vision_clip_feature_width(const ft_vision_clip *clip);

/* The projector's shapes and names (weights NULL), as projector.h takes them. */
void ft_vision_clip_projector_shape(const ft_llava_config *config, ft_projector_weights *out);
/* The loaded projector: to train it (projector.h). */
ft_projector *ft_vision_clip_projector(ft_vision_clip *clip);
/* After a pass, when the projector is trained: the gradient of its features
 * (backend memory, [image tokens, feature_width]) into its trained gradients. */
void ft_vision_clip_backward(ft_vision_clip *clip, const void *grad_features);

/* features [n_images * tokens_per_image, feature_width], in host memory, of pixel_values
 * [n_images, 3, image_size, image_size] (channel-first, as CLIPImageProcessor
 * gives them and the image store keeps them). */
int ft_vision_clip_features(ft_vision_clip *clip, const float *pixel_values, int n_images, float *features);

/* The same for a tokenized split's stored images (CLIP layout, 1 x image_size
 * x image_size each, as the image store serves them), in order; an image of
 * another size or layout is an error that says to tokenize again. */
int ft_vision_clip_image_features(ft_vision_clip *clip, const ft_stored_image *images, size_t n_images,
                                  float *features);

#endif
