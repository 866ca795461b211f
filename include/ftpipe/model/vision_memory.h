/* vision_memory: the host memory a vision-language model's frozen tower takes,
 * from its config alone, so that `ftpipe estimate` (which has no loaded model)
 * and the loaded model's plan count the same: the tower's fp32 weights (LLaVA:
 * the CLIP encoder layers up to vision_feature_layer, as vision_clip loads
 * them, and the projector), and the work of its forward pass for a batch of
 * `rows` tokens (Qwen2-VL: vision_qwen2's at the most patches the rows can
 * hold; LLaVA: what one image's pass through vision_clip allocates, as it runs
 * the images one at a time). 0 for a text model. */
#ifndef FTPIPE_VISION_MEMORY_H
#define FTPIPE_VISION_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "ftpipe/formats/model_config.h"

size_t ft_vision_tower_weight_bytes(const ft_model_config *config);
size_t ft_vision_tower_work_bytes(const ft_model_config *config, int64_t rows);

#endif
