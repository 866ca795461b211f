/* vision_memory: a tower's weights and pass work from the model's config, as
 * the towers count them. */
#include "ftpipe/model/vision_memory.h"

#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/vision_clip.h"
#include "ftpipe/model/vision_qwen2.h"

size_t ft_vision_tower_weight_bytes(const ft_model_config *config, size_t element_bytes)
{
    if (config->vision_language)
        return ft_vision_qwen2_weight_bytes(&config->vision, element_bytes);
    return config->llava ? ft_vision_clip_weight_count(&config->llava_tower) * element_bytes : 0;
}

size_t ft_vision_tower_work_bytes(const ft_model_config *config, int64_t rows, size_t element_bytes)
{
    if (config->vision_language) { /* each image token is merge^2 patches */
        const ft_vision_config *v = &config->vision;
        return ft_vision_qwen2_work_bytes(v, rows * v->spatial_merge_size * v->spatial_merge_size, element_bytes);
    }
    if (!config->llava)
        return 0;
    int64_t images = rows / (int64_t)ft_llava_image_tokens(&config->llava_tower);
    return ft_vision_clip_work_bytes(&config->llava_tower, images > 0 ? (int)images : 1, element_bytes);
}
