/* vision_clip: LLaVA's image features on the cpu backend against transformers'
 * (tests/fixtures/llava_parity, made by its make_llava.py in float64 from a tiny
 * random LlavaForConditionalGeneration saved by transformers 5.17): the default
 * feature layer (-2) and strategy (CLS dropped), and layer -1 with "full"; the
 * hub checkpoints' tensor names; features of stored images; refusals. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixture_tensors.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/vision_clip.h"

#define FIXTURE "tests/fixtures/llava_parity"
#define TOLERANCE 1e-4

/* A model folder with the fixture's config.json edited by sed expression `edit`,
 * and a copy of weights (NULL: none). */
static char *edited_model(const char *edit, const char *weights)
{
    char *dir = ft_xstrdup("/tmp/ftpipe-test-vision-clip.XXXXXX");
    if (!mkdtemp(dir))
        abort();
    char command[1024];
    snprintf(command, sizeof command, "sed '%s' " FIXTURE "/model/config.json > %s/config.json", edit, dir);
    CHECK_INT(system(command), 0);
    if (weights) {
        snprintf(command, sizeof command, "cp %s %s/", weights, dir);
        CHECK_INT(system(command), 0);
    }
    return dir;
}

static void check_features(const char *model_dir, const char *expected_name, size_t expected_rows)
{
    ft_backend *backend = ft_backend_cpu_create(1);
    ft_vision_clip *clip;
    CHECK_INT(ft_vision_clip_load(model_dir, backend, &clip), 0);
    ft_safetensors *expected;
    CHECK_INT(ft_safetensors_open(FIXTURE "/expected.safetensors", &expected), 0);
    size_t n_pixels, n_expected;
    float *pixels = fixture_floats(expected, "pixel_values", &n_pixels);
    float *want = fixture_floats(expected, expected_name, &n_expected);
    CHECK_INT(n_expected, expected_rows * 64);
    CHECK_INT((size_t)2 * ft_vision_clip_tokens_per_image(clip), expected_rows);
    CHECK_INT(ft_vision_clip_feature_width(clip), 64);
    float *got = ft_xcalloc(n_expected, sizeof(float));
    CHECK_INT(ft_vision_clip_features(clip, pixels, 2, got), 0);
    double difference = largest_difference(got, want, n_expected);
    printf("  %s: %zu x 64 features within %.2g of transformers'\n", expected_name, expected_rows, difference);
    CHECK(difference < TOLERANCE);
    float largest = 0.0f; /* features far from zero, so that the tolerance means something */
    for (size_t i = 0; i < n_expected; i++)
        largest = fmaxf(largest, fabsf(want[i]));
    CHECK(largest > 0.1f);
    free(got);
    free(want);
    free(pixels);
    ft_safetensors_close(expected);
    ft_vision_clip_free(clip);
    ft_backend_destroy(backend);
}

TEST(features_equal_transformers_with_the_default_layer_and_strategy)
{
    check_features(FIXTURE "/model", "image_features", 32);
}

TEST(features_equal_transformers_with_the_last_layer_and_cls_kept)
{
    char *dir = edited_model("s/\"vision_feature_layer\": -2/\"vision_feature_layer\": -1/; "
                             "s/\"vision_feature_select_strategy\": \"default\"/\"vision_feature_select_strategy\": "
                             "\"full\"/",
                             FIXTURE "/model/model.safetensors");
    check_features(dir, "full_image_features", 34);
    ft_remove_tree(dir);
    free(dir);
}

/* llava-hf's hub checkpoints name the tower vision_tower.vision_model.* and the
 * language model language_model.model.*: the same weights under those names. */
TEST(reads_the_hub_checkpoints_names)
{
    char *dir = edited_model("", NULL);
    ft_safetensors *set;
    CHECK_INT(ft_safetensors_open(FIXTURE "/model", &set), 0);
    size_t count = ft_safetensors_count(set);
    ft_tensor_to_write *tensors = ft_xcalloc(count, sizeof *tensors);
    char **names = ft_xcalloc(count, sizeof *names);
    for (size_t i = 0; i < count; i++) {
        const ft_tensor_view *view = ft_safetensors_at(set, i);
        names[i] = strncmp(view->name, "vision_tower.", 13) == 0
                       ? ft_xasprintf("vision_tower.vision_model.%s", view->name + 13)
                       : ft_xstrdup(view->name);
        tensors[i] = (ft_tensor_to_write){names[i], view->dtype, view->n_dims, {0}, view->data};
        memcpy(tensors[i].shape, view->shape, sizeof view->shape);
    }
    char *path = ft_path_join(dir, "model.safetensors");
    CHECK_INT(ft_safetensors_write(path, tensors, count, NULL, NULL, 0), 0);
    ft_safetensors_close(set);
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
    free(tensors);
    free(path);
    check_features(dir, "image_features", 32);
    ft_remove_tree(dir);
    free(dir);
}

TEST(features_of_stored_images)
{
    char *dir = ft_xstrdup("/tmp/ftpipe-test-vision-store.XXXXXX");
    if (!mkdtemp(dir))
        abort();
    char *path = ft_path_join(dir, FT_IMAGE_STORE_FILE);
    ft_safetensors *expected;
    CHECK_INT(ft_safetensors_open(FIXTURE "/expected.safetensors", &expected), 0);
    size_t n_pixels, n_expected;
    float *pixels = fixture_floats(expected, "pixel_values", &n_pixels);
    float *want = fixture_floats(expected, "image_features", &n_expected);
    ft_image_store_writer *writer;
    CHECK_INT(ft_image_store_writer_open(path, FT_IMAGE_LAYOUT_CLIP, 3 * 56 * 56, &writer), 0);
    for (int i = 0; i < 2; i++) {
        ft_stored_image image = {{0, (uint64_t)i}, 1, 56, 56, pixels + (size_t)i * 3 * 56 * 56};
        CHECK_INT(ft_image_store_writer_add_image(writer, &image), i);
    }
    CHECK_INT(ft_image_store_writer_add_sample(writer, (const uint32_t[]){1, 0}, 2), 0);
    CHECK_INT(ft_image_store_writer_finish(writer), 0);
    ft_image_store *store;
    CHECK_INT(ft_image_store_open(path, &store), 0);
    ft_backend *backend = ft_backend_cpu_create(1);
    ft_vision_clip *clip;
    CHECK_INT(ft_vision_clip_load(FIXTURE "/model", backend, &clip), 0);
    size_t count;
    const uint32_t *images = ft_image_store_sample_images(store, 0, &count);
    float *got = ft_xcalloc(n_expected, sizeof(float));
    ft_stored_image stored[2];
    CHECK_INT(count, 2);
    for (size_t i = 0; i < count && i < 2; i++)
        ft_image_store_image(store, images[i], &stored[i]);
    CHECK_INT(ft_vision_clip_image_features(clip, stored, count, got), 0);
    /* the sample's images in its order: image 1, then image 0 */
    CHECK(largest_difference(got, want + n_expected / 2, n_expected / 2) < TOLERANCE);
    CHECK(largest_difference(got + n_expected / 2, want, n_expected / 2) < TOLERANCE);
    stored[0].grid_h = stored[0].grid_w = 28; /* another model's size */
    CHECK_INT(ft_vision_clip_image_features(clip, stored, 1, got), -1);
    CHECK_STR(ft_error_message(), "the tokenized images are not CLIP images of 56 x 56 pixels, which this LLaVA "
                                  "model reads: tokenize the data again with this model's folder");
    free(got);
    free(want);
    free(pixels);
    ft_vision_clip_free(clip);
    ft_backend_destroy(backend);
    ft_image_store_close(store);
    ft_safetensors_close(expected);
    ft_remove_tree(dir);
    free(path);
    free(dir);
}

TEST(refuses_weights_that_do_not_match)
{
    ft_backend *backend = ft_backend_cpu_create(1);
    ft_vision_clip *clip = NULL;
    char *dir = edited_model("s/\"hidden_size\": 32/\"hidden_size\": 48/", FIXTURE "/model/model.safetensors");
    CHECK_INT(ft_vision_clip_load(dir, backend, &clip), -1);
    CHECK(strstr(ft_error_message(), "tensor vision_tower.embeddings.patch_embedding.weight does not have the shape "
                                     "[48, 588] that config.json implies") != NULL);
    ft_remove_tree(dir);
    free(dir);
    dir = edited_model("", "tests/fixtures/parity/llama3/model/model.safetensors");
    CHECK_INT(ft_vision_clip_load(dir, backend, &clip), -1);
    CHECK(strstr(ft_error_message(), "no CLIP vision tower in the weights") != NULL);
    ft_remove_tree(dir);
    free(dir);
    CHECK_INT(ft_vision_clip_load("tests/fixtures/parity/llama3/model", backend, &clip), -1);
    CHECK(strstr(ft_error_message(), "not a LLaVA model") != NULL);
    ft_backend_destroy(backend);
}

int main(void)
{
    RUN(features_equal_transformers_with_the_default_layer_and_strategy);
    RUN(features_equal_transformers_with_the_last_layer_and_cls_kept);
    RUN(reads_the_hub_checkpoints_names);
    RUN(features_of_stored_images);
    RUN(refuses_weights_that_do_not_match);
    return check_done();
}
