/* vision_qwen2: Qwen2-VL's and Qwen2.5-VL's towers: image features against
 * transformers' (the merger's output for two images of different sizes,
 * fixtures from make_parity_vl.py; Qwen2.5-VL's windows ragged at the first
 * image's edge) at a relative error under 1e-4; the weight lists against the
 * saved names and shapes; the errors. The tower runs on the cpu backend's ops. */
#include "ftpipe/model/vision_qwen2.h"

#include "ftpipe/base/fsutil.h"
#include "vl_fixture.h"

static ft_model_config config;
static ft_backend *cpu;

/* Reads the current fixture set's config. */
static void load_config(void)
{
    char *dir = vl_path("model");
    CHECK_INT(ft_model_config_load(dir, &config), 0);
    free(dir);
}

static void check_features(void)
{
    load_config();
    char *dir = vl_path("model");
    vl_fixture f;
    ft_safetensors *expected = vl_open("expected.safetensors");
    ft_vision_qwen2 *tower = NULL;
    if (vl_fixture_open(&f) && expected && ft_vision_qwen2_load(dir, &config.vision, cpu, &tower) == 0) {
        int64_t tokens = ft_vision_qwen2_image_tokens(&config.vision, &f.images[0]) +
                         ft_vision_qwen2_image_tokens(&config.vision, &f.images[1]);
        CHECK_INT(tokens, 6 + 8);
        float *features = ft_xmalloc((size_t)tokens * config.hidden_size * sizeof(float));
        CHECK_INT(ft_vision_qwen2_forward(tower, f.images, VL_IMAGES, features), 0);
        CHECK(vl_relative_error(expected, "image_features", features, (size_t)tokens * config.hidden_size) <
              VL_TOLERANCE);
        /* each image alone gives its own rows: attention stays inside an image */
        float *alone = ft_xmalloc((size_t)8 * config.hidden_size * sizeof(float));
        CHECK_INT(ft_vision_qwen2_forward(tower, &f.images[1], 1, alone), 0);
        double worst = 0.0;
        for (size_t i = 0; i < (size_t)8 * config.hidden_size; i++)
            worst = fmax(worst, fabs(alone[i] - features[(size_t)6 * config.hidden_size + i]));
        CHECK(worst < 1e-5);
        free(alone);
        free(features);
    } else {
        CHECK(!"the fixture and its tower load");
    }
    ft_vision_qwen2_free(tower);
    ft_safetensors_close(expected);
    vl_fixture_close(&f);
    free(dir);
}

static void check_weight_list(void)
{
    load_config();
    ft_safetensors *set = vl_open("model/model.safetensors");
    size_t count;
    ft_vision_weight *list = ft_vision_qwen2_weight_list(&config.vision, &count);
    size_t saved_visual = 0;
    for (size_t i = 0; set && i < ft_safetensors_count(set); i++)
        saved_visual += strncmp(ft_safetensors_at(set, i)->name, "visual.", 7) == 0;
    CHECK_INT(count, saved_visual);
    for (size_t i = 0; set && i < count; i++) {
        const ft_tensor_view *view = ft_safetensors_find(set, list[i].name);
        CHECK(view && view->n_dims == list[i].n_dims);
        for (int d = 0; view && d < list[i].n_dims; d++)
            CHECK(view->shape[d] == list[i].shape[d]);
    }
    CHECK_STR(list[0].name, "visual.patch_embed.proj.weight");
    CHECK_INT(ft_vision_qwen2_patch_length(&config.vision), 3 * 2 * 14 * 14);
    free(list);
    ft_safetensors_close(set);
}

/* An image of 288 patches: more than a block of queries (and, for Qwen2.5-VL,
 * 4 x 5 windows of 2 x 2 merged patches, ragged at the right). */
static void check_large_image(void)
{
    load_config();
    char *dir = vl_path("model");
    ft_safetensors *set = vl_open("large_image.safetensors");
    ft_vision_qwen2 *tower = NULL;
    const ft_tensor_view *pixels = vl_tensor(set, "pixel_values", FT_DTYPE_F32, (size_t)288 * 1176);
    if (pixels && ft_vision_qwen2_load(dir, &config.vision, cpu, &tower) == 0) {
        ft_stored_image image = {{0, 0}, 1, 16, 18, pixels->data};
        float *features = ft_xmalloc((size_t)72 * config.hidden_size * sizeof(float));
        CHECK_INT(ft_vision_qwen2_forward(tower, &image, 1, features), 0);
        CHECK(vl_relative_error(set, "image_features", features, (size_t)72 * config.hidden_size) < VL_TOLERANCE);
        free(features);
    } else {
        CHECK(!"the large image and the tower load");
    }
    ft_vision_qwen2_free(tower);
    ft_safetensors_close(set);
    free(dir);
}

TEST(qwen2_vl_large_image_matches_transformers) { vl_architecture = "qwen2_vl", check_large_image(); }
TEST(qwen2_5_vl_large_image_matches_transformers) { vl_architecture = "qwen2_5_vl", check_large_image(); }
TEST(qwen2_vl_features_match_transformers) { vl_architecture = "qwen2_vl", check_features(); }
TEST(qwen2_5_vl_features_match_transformers) { vl_architecture = "qwen2_5_vl", check_features(); }
TEST(qwen2_vl_weight_list_matches_the_saved_model) { vl_architecture = "qwen2_vl", check_weight_list(); }
TEST(qwen2_5_vl_weight_list_matches_the_saved_model) { vl_architecture = "qwen2_5_vl", check_weight_list(); }

TEST(a_grid_that_does_not_merge_is_an_error)
{
    vl_architecture = "qwen2_vl";
    load_config();
    ft_vision_qwen2 *tower = NULL;
    if (ft_vision_qwen2_load(VL_FIXTURES "/model", &config.vision, cpu, &tower) == 0) {
        float pixels[3 * 1176] = {0}, features[64];
        ft_stored_image odd = {{0, 0}, 1, 1, 3, pixels};
        CHECK_INT(ft_vision_qwen2_forward(tower, &odd, 1, features), -1);
        CHECK(strstr(ft_error_message(), "does not split into 2 x 2 groups") != NULL);
    }
    ft_vision_qwen2_free(tower);
}

TEST(a_folder_without_the_tower_is_an_error)
{
    vl_architecture = "qwen2_vl";
    load_config();
    ft_vision_qwen2 *tower = NULL;
    CHECK_INT(ft_vision_qwen2_load("tests/fixtures/parity/qwen2/model", &config.vision, cpu, &tower), -1);
    CHECK(strstr(ft_error_message(), "visual.patch_embed.proj.weight") != NULL);
    CHECK(tower == NULL);
}

int main(void)
{
    cpu = ft_backend_cpu_create(1);
    RUN(qwen2_vl_features_match_transformers);
    RUN(qwen2_5_vl_features_match_transformers);
    RUN(qwen2_vl_large_image_matches_transformers);
    RUN(qwen2_5_vl_large_image_matches_transformers);
    RUN(qwen2_vl_weight_list_matches_the_saved_model);
    RUN(qwen2_5_vl_weight_list_matches_the_saved_model);
    RUN(a_grid_that_does_not_merge_is_an_error);
    RUN(a_folder_without_the_tower_is_an_error);
    ft_backend_destroy(cpu);
    return check_done();
}
