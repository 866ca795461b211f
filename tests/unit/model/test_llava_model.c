/* llava_model: the whole tiny LLaVA (tests/fixtures/llava_parity) on the cpu
 * backend against transformers' logits for one image and text around it, within
 * 1e-4; the same tokens without the image features placed are far off (so the
 * placing is what the parity rests on); placing on its own; refusals. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/llava_model.h"

#define FIXTURE "tests/fixtures/llava_parity"
#define SEQ 24
#define VOCAB 300

static float *tensor(const ft_safetensors *set, const char *name, size_t *count)
{
    const ft_tensor_view *view = ft_safetensors_find(set, name);
    if (!view)
        abort();
    *count = view->size_bytes / 4;
    float *values = ft_xmalloc(view->size_bytes);
    if (view->dtype == FT_DTYPE_I32)
        memcpy(values, view->data, view->size_bytes);
    else
        CHECK_INT(ft_tensor_to_f32(view, values), 0);
    return values;
}

static double largest_difference(const float *a, const float *b, size_t count)
{
    double largest = 0.0;
    for (size_t i = 0; i < count; i++)
        largest = fmax(largest, fabs((double)a[i] - b[i]));
    return largest;
}

TEST(logits_equal_transformers_on_an_image_and_text)
{
    ft_backend *backend = ft_backend_cpu_create(1);
    ft_model_options options = {1, SEQ, FT_FINETUNE_NONE, false, {0}, false};
    ft_llava_model *model = NULL;
    CHECK_INT(ft_llava_model_load(FIXTURE "/model", backend, &options, &model), 0);
    if (!model) {
        fprintf(stderr, "  %s\n", ft_error_message());
        ft_backend_destroy(backend);
        return;
    }
    ft_safetensors *expected;
    CHECK_INT(ft_safetensors_open(FIXTURE "/expected.safetensors", &expected), 0);
    size_t n_pixels, n_ids, n_logits;
    float *pixels = tensor(expected, "pixel_values", &n_pixels);
    int32_t *ids = (int32_t *)tensor(expected, "input_ids", &n_ids);
    float *want = tensor(expected, "logits", &n_logits);
    CHECK_INT(n_ids, SEQ);
    CHECK_INT(n_logits, (size_t)SEQ * VOCAB);
    int32_t positions[SEQ], segments[SEQ], targets[SEQ];
    for (int i = 0; i < SEQ; i++) {
        positions[i] = i;
        segments[i] = 0;
        targets[i] = -100;
    }
    ft_batch batch = {1, SEQ, ids, positions, segments, targets, 0, 0};
    float *logits = ft_xcalloc(n_logits, sizeof(float));
    CHECK_INT(ft_llava_model_forward(model, &batch, pixels, 1, logits, NULL), 0);
    double difference = largest_difference(logits, want, n_logits);
    printf("  logits [%d, %d] within %.2g of transformers'\n", SEQ, VOCAB, difference);
    CHECK(difference < 1e-4);

    /* the image tokens' own embeddings instead of the features: far from transformers' */
    CHECK_INT(ft_model_forward(ft_llava_model_text(model), &batch, logits, NULL), 0);
    double without = largest_difference(logits, want, n_logits);
    printf("  without the image features placed: %.2g off\n", without);
    CHECK(without > 1e-2);

    /* an image too many for the tokens */
    CHECK_INT(ft_llava_model_forward(model, &batch, pixels, 2, logits, NULL), -1);
    CHECK_STR(ft_error_message(), "the batch holds 16 image tokens, but its 2 images give 32 features (16 an image)");
    free(logits);
    free(want);
    free(ids);
    free(pixels);
    ft_safetensors_close(expected);
    ft_llava_model_free(model);
    ft_backend_destroy(backend);
}

TEST(places_features_in_order_at_the_image_tokens)
{
    const int32_t tokens[] = {5, 9, 9, 6, 9};
    float embeddings[5 * 2] = {0};
    const float features[3 * 2] = {1, 2, 3, 4, 5, 6};
    CHECK_INT(ft_llava_count_image_tokens(tokens, 5, 9), 3);
    ft_llava_place_image_features(embeddings, tokens, 5, 2, 9, features);
    const float placed[5 * 2] = {0, 0, 1, 2, 3, 4, 0, 0, 5, 6};
    CHECK(memcmp(embeddings, placed, sizeof placed) == 0);
}

TEST(refuses_a_text_model_that_is_not_llava)
{
    ft_backend *backend = ft_backend_cpu_create(1);
    ft_model_options options = {1, SEQ, FT_FINETUNE_NONE, false, {0}, false};
    ft_llava_model *model = NULL;
    CHECK_INT(ft_llava_model_load("tests/fixtures/parity/llama3/model", backend, &options, &model), -1);
    CHECK(strstr(ft_error_message(), "not a LLaVA model") != NULL);
    ft_backend_destroy(backend);
}

int main(void)
{
    RUN(logits_equal_transformers_on_an_image_and_text);
    RUN(places_features_in_order_at_the_image_tokens);
    RUN(refuses_a_text_model_that_is_not_llava);
    return check_done();
}
