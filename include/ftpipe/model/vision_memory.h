/* vision_memory: the memory a vision-language model's frozen tower takes, from
 * its config alone, so that `ftpipe estimate` (which has no loaded model) and
 * the loaded model's plan count the same: the tower's weights in the backend's
 * dtype (element_bytes; LLaVA: the CLIP encoder layers up to
 * vision_feature_layer, as vision_clip loads them, and the projector), and the
 * work of its forward pass for a batch of `rows` tokens (Qwen2-VL: at the most
 * patches the rows can hold; LLaVA: at the most images, each bringing its image
 * tokens), as vision_qwen2 and vision_clip lay it out. 0 for a text model. */
#ifndef FTPIPE_VISION_MEMORY_H
#define FTPIPE_VISION_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "ftpipe/formats/model_config.h"

size_t ft_vision_tower_weight_bytes(const ft_model_config *config, size_t element_bytes);
size_t ft_vision_tower_work_bytes(const ft_model_config *config, int64_t rows, size_t element_bytes);

#endif
