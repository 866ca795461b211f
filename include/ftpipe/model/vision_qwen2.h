/* vision_qwen2: Qwen2-VL's and Qwen2.5-VL's vision transformers, frozen, forward
 * only but for the merger, which projector.h can train, through the backend's ops (fp32 on cpu, bf16 on cuda, the weights in the
 * backend's memory and dtype; nothing kept for a backward pass), as transformers'
 * Qwen2VisionTransformerPretrainedModel and Qwen2_5_VisionTransformerPretrainedModel
 * compute them:
 *   - patch embed: the Conv3d (kernel = stride = temporal x patch x patch) is one
 *     product of the stored patch rows with the kernel as a matrix;
 *   - blocks: x += proj(attention(rope2d(qkv(LayerNorm(x))))), x += fc2(QuickGELU(
 *     fc1(LayerNorm(x)))); attention is bidirectional within each image frame
 *     only (cu_seqlens); the 2-D rotary embedding gives the first half of each
 *     head's frequencies the patch's row and the second half its column;
 *   - merger: LayerNorm, then each 2 x 2 group of patches (adjacent rows, as the
 *     processor orders them) concatenated through Linear, GELU, Linear into the
 *     language model's width (projector.h, which can train it);
 *   - Qwen2.5-VL (config.qwen2_5): RMSNorm for LayerNorm (blocks and merger), a
 *     SwiGLU MLP (gate, up, down, with biases), and attention within windows of
 *     window_size pixels a side (the patches reordered window by window as
 *     transformers' get_window_index does, put back in place after the merger)
 *     except in the full-attention blocks.
 * Weights are read from the model folder under transformers' names: visual.*
 * (released checkpoints, and what transformers 5 saves) or model.visual.*. */
#ifndef FTPIPE_VISION_QWEN2_H
#define FTPIPE_VISION_QWEN2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/backend/backend.h"
#include "ftpipe/formats/image_store.h"
#include "ftpipe/formats/model_config.h"
#include "ftpipe/model/projector.h"

/* One weight of the tower: its name and shape as transformers saves it. */
typedef struct {
    char name[80];
    int n_dims;
    int64_t shape[5];
    size_t count;
    size_t offset;      /* in elements, in the tower's weight buffer */
    bool is_norm;       /* a LayerNorm's scale (initialised to one) */
} ft_vision_weight;

typedef struct ft_vision_qwen2 ft_vision_qwen2;

/* The tower's weights in transformers' order; caller frees the array. */
ft_vision_weight *ft_vision_qwen2_weight_list(const ft_vision_config *config, size_t *count);

/* Floats per stored patch row: channels x temporal x patch x patch. */
int ft_vision_qwen2_patch_length(const ft_vision_config *config);
/* The language model tokens an image becomes: grid_t * grid_h * grid_w / merge^2. */
int64_t ft_vision_qwen2_image_tokens(const ft_vision_config *config, const ft_stored_image *image);

/* Loads the tower's weights (f32, f16 or bf16 in the files) from the model
 * folder into the backend's memory, in its dtype. */
int ft_vision_qwen2_load(const char *model_dir, const ft_vision_config *config, ft_backend *backend,
                         ft_vision_qwen2 **out);
void ft_vision_qwen2_free(ft_vision_qwen2 *tower);
/* Bytes the tower's weights take, element_bytes each. */
size_t ft_vision_qwen2_weight_bytes(const ft_vision_config *config, size_t element_bytes);
/* Backend bytes a forward pass over n_patches patches needs beside the weights
 * (activations of element_bytes, float rotary tables, int32 indices; the
 * attention keeps no scores in memory but the cpu backend's scratch). */
size_t ft_vision_qwen2_work_bytes(const ft_vision_config *config, int64_t n_patches, size_t element_bytes);

/* The merger's shapes and names (weights NULL), as projector.h takes them. */
void ft_vision_qwen2_merger_shape(const ft_vision_config *config, ft_projector_weights *out);
/* The loaded tower's merger: to train it (projector.h). */
ft_projector *ft_vision_qwen2_merger(ft_vision_qwen2 *tower);
/* After ft_vision_qwen2_forward, when the merger is trained: the gradient of
 * its features (backend memory, [image tokens, out_hidden], the order the
 * features came in) into the merger's trained gradients. */
void ft_vision_qwen2_backward(ft_vision_qwen2 *tower, const void *grad_features);

/* The features of n_images images, one after another: features holds
 * sum(image tokens) rows of config->out_hidden floats, in host memory (the pass
 * runs on the backend; only the features come back). An image whose grid does
 * not split into merge x merge groups is an error naming it. */
int ft_vision_qwen2_forward(ft_vision_qwen2 *tower, const ft_stored_image *images, size_t n_images,
                            float *features);

#endif
