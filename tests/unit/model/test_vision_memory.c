/* vision_memory: a tower's weights counted from the config alone are what the
 * tower loads (in the backend's dtype: bf16 half of fp32) (tiny-llava's CLIP tower and projector, with the feature layer
 * before the last so that one encoder layer is not loaded; tiny-qwen2.5-vl's
 * tower), its pass work is counted, and a text model has none. */
#include <stdlib.h>

#include "check.h"
#include "ftpipe/backend/backend.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/llava_init.h"
#include "ftpipe/model/model_init.h"
#include "ftpipe/model/vision_clip.h"
#include "ftpipe/model/vision_memory.h"
#include "ftpipe/model/vision_qwen2.h"

static char root[] = "/tmp/ftpipe-vision-memory.XXXXXX";

TEST(llava_weights_from_the_config_are_what_the_clip_tower_loads)
{
    ft_llava_shape shape;
    CHECK_INT(ft_llava_shape_get("tiny-llava", &shape), 0);
    ft_model_init_options options = {.dtype = FT_DTYPE_F32, .seed = 3, .threads = 1};
    char *dir = ft_path_join(root, "llava");
    CHECK_INT(ft_llava_init_write(dir, &shape, &options), 0);
    ft_model_config config;
    CHECK_INT(ft_language_model_config_load(dir, &config), 0);
    CHECK(config.llava && config.llava_tower.vision.num_hidden_layers > 1);
    ft_backend *cpu = ft_backend_cpu_create(1);
    ft_vision_clip *clip = NULL;
    CHECK_INT(ft_vision_clip_load(dir, cpu, &clip), 0);
    if (clip) {
        CHECK_INT(ft_vision_tower_weight_bytes(&config, sizeof(float)), ft_vision_clip_weight_bytes(clip));
        ft_vision_clip_free(clip);
    }
    /* 1024 tokens hold the images whose tokens fit, each image's pass as the tower lays it out */
    int images = 1024 / (int)ft_llava_image_tokens(&config.llava_tower);
    CHECK_INT(ft_vision_tower_work_bytes(&config, 1024, 2),
              ft_vision_clip_work_bytes(&config.llava_tower, images > 0 ? images : 1, 2));
    CHECK(ft_vision_tower_work_bytes(&config, 1024, 2) < ft_vision_tower_work_bytes(&config, 1024, 4));
    ft_backend_destroy(cpu);
    free(dir);
}

TEST(qwen2_vl_weights_and_work_are_the_towers)
{
    ft_model_config config;
    CHECK_INT(ft_model_shape("tiny-qwen2.5-vl", &config), 0);
    CHECK_INT(ft_vision_tower_weight_bytes(&config, 4), ft_vision_qwen2_weight_bytes(&config.vision, 4));
    CHECK_INT(ft_vision_tower_weight_bytes(&config, 2) * 2, ft_vision_tower_weight_bytes(&config, 4));
    int64_t patches = 100 * config.vision.spatial_merge_size * config.vision.spatial_merge_size;
    CHECK_INT(ft_vision_tower_work_bytes(&config, 100, 2), ft_vision_qwen2_work_bytes(&config.vision, patches, 2));
}

TEST(a_text_model_has_no_tower)
{
    ft_model_config config;
    CHECK_INT(ft_model_shape("tiny", &config), 0);
    CHECK_INT(ft_vision_tower_weight_bytes(&config, 4), 0);
    CHECK_INT(ft_vision_tower_work_bytes(&config, 100, 4), 0);
}

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    RUN(llava_weights_from_the_config_are_what_the_clip_tower_loads);
    RUN(qwen2_vl_weights_and_work_are_the_towers);
    RUN(a_text_model_has_no_tower);
    ft_remove_tree(root);
    return check_done();
}
