/* The whole tiny LLaVA (tests/fixtures/llava_parity) loaded as any model
 * (ft_model_load on its folder) on the cpu backend, against transformers'
 * logits for one image and text around it, within 1e-4; the same tokens
 * without the image features placed are far off (so the placing is what the
 * parity rests on); refusals. With PEFT's adapter on the language model (the
 * tower and projector frozen), the loss and every LoRA gradient on that image
 * and text are PEFT's within 1e-4 (relative to each tensor's largest value).
 * Generation with the image: the prefill's last logits are transformers', and
 * each decode step's are the full forward pass's over the longer sequence
 * (LLaVA's positions stay plain after the image). The same weights under the
 * names transformers 4.5x saves give the same logits, bit for bit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixture_tensors.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/generate.h"
#include "ftpipe/model/lora.h"
#include "ftpipe/model/model.h"

#define FIXTURE "tests/fixtures/llava_parity"
#define SEQ 24
#define VOCAB 300

/* One sample of n tokens: positions 0.., one segment, no target. */
static void plain_rows(int32_t *positions, int32_t *segments, int32_t *targets, int n)
{
    for (int i = 0; i < n; i++) {
        positions[i] = i;
        segments[i] = 0;
        targets[i] = -100;
    }
}

TEST(logits_equal_transformers_on_an_image_and_text)
{
    ft_backend *backend = ft_backend_cpu_create(1);
    ft_model_options options = {1, SEQ, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    CHECK_INT(ft_model_load(FIXTURE "/model", backend, &options, &model), 0);
    if (!model) {
        fprintf(stderr, "  %s\n", ft_error_message());
        ft_backend_destroy(backend);
        return;
    }
    /* the memory plan holds the tower and projector beside the language model */
    size_t n_weights, text_bytes = 0;
    const ft_param_tensor *weights = ft_model_weights(model, &n_weights);
    for (size_t i = 0; i < n_weights; i++)
        text_bytes += weights[i].count * sizeof(float);
    size_t tower_bytes = ft_model_memory(model).parameter_bytes - text_bytes;
    printf("  plan: %zu bytes of language model, %zu of tower and projector\n", text_bytes, tower_bytes);
    CHECK(ft_model_memory(model).parameter_bytes > text_bytes && tower_bytes > 50000);
    ft_safetensors *expected;
    CHECK_INT(ft_safetensors_open(FIXTURE "/expected.safetensors", &expected), 0);
    size_t n_pixels, n_ids, n_logits;
    float *pixels = fixture_floats(expected, "pixel_values", &n_pixels);
    int32_t *ids = (int32_t *)fixture_floats(expected, "input_ids", &n_ids);
    float *want = fixture_floats(expected, "logits", &n_logits);
    CHECK_INT(n_ids, SEQ);
    CHECK_INT(n_logits, (size_t)SEQ * VOCAB);
    int32_t positions[SEQ], segments[SEQ], targets[SEQ];
    plain_rows(positions, segments, targets, SEQ);
    ft_batch batch = {1, SEQ, ids, positions, segments, targets, 0, 0};
    float *logits = ft_xcalloc(n_logits, sizeof(float));
    ft_stored_image images[2] = {{{0, 0}, 1, 56, 56, pixels}, {{0, 1}, 1, 56, 56, pixels}};
    CHECK_INT(ft_model_set_images(model, images, 1), 0);
    CHECK_INT(ft_model_forward(model, &batch, logits, NULL), 0);
    double difference = largest_difference(logits, want, n_logits);
    printf("  logits [%d, %d] within %.2g of transformers'\n", SEQ, VOCAB, difference);
    CHECK(difference < 1e-4);

    /* the image tokens' own embeddings instead of the features: far from transformers' */
    CHECK_INT(ft_model_forward(model, &batch, logits, NULL), -1);
    CHECK_STR(ft_error_message(), "the batch has 16 image tokens, but its images make 0: the data and the images "
                                  "do not match; tokenize the data again for this model");
    /* an image too many for the tokens */
    CHECK_INT(ft_model_set_images(model, images, 2), 0);
    CHECK_INT(ft_model_forward(model, &batch, logits, NULL), -1);
    CHECK_STR(ft_error_message(), "the batch's 2 images make 32 image tokens, more than its 24 tokens");
    /* a Qwen2-VL patch image (grid 1 x 4 x 4) for CLIP */
    ft_stored_image patches = {{0, 2}, 1, 4, 4, pixels};
    CHECK_INT(ft_model_set_images(model, &patches, 1), 0);
    CHECK_INT(ft_model_forward(model, &batch, logits, NULL), -1);
    CHECK(strstr(ft_error_message(), "not CLIP images of 56 x 56 pixels") != NULL);
    free(logits);
    free(want);
    free(ids);
    free(pixels);
    ft_safetensors_close(expected);
    ft_model_free(model);
    ft_backend_destroy(backend);
}

TEST(the_language_model_alone_is_far_from_transformers)
{
    /* the image tokens' own embeddings instead of the features */
    ft_backend *backend = ft_backend_cpu_create(1);
    ft_model_options options = {1, SEQ, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    CHECK_INT(ft_model_load(FIXTURE "/model", backend, &options, &model), 0);
    ft_safetensors *expected;
    CHECK_INT(ft_safetensors_open(FIXTURE "/expected.safetensors", &expected), 0);
    size_t n_ids, n_logits;
    int32_t *ids = (int32_t *)fixture_floats(expected, "input_ids", &n_ids);
    float *want = fixture_floats(expected, "logits", &n_logits);
    int32_t image_token = ft_model_get_config(model)->image_token_id;
    int32_t positions[SEQ], segments[SEQ], targets[SEQ];
    for (int i = 0; i < SEQ; i++) {
        positions[i] = i;
        segments[i] = 0;
        targets[i] = -100;
        if (ids[i] == image_token)
            ids[i] = 3; /* any text token: the placing is skipped, nothing else changes */
    }
    ft_batch batch = {1, SEQ, ids, positions, segments, targets, 0, 0};
    float *logits = ft_xcalloc(n_logits, sizeof(float));
    CHECK_INT(ft_model_forward(model, &batch, logits, NULL), 0);
    double without = largest_difference(logits, want, n_logits);
    printf("  without the image features placed: %.2g off\n", without);
    CHECK(without > 1e-2);
    free(logits);
    free(want);
    free(ids);
    ft_safetensors_close(expected);
    ft_model_free(model);
    ft_backend_destroy(backend);
}

/* The largest difference from set's tensor name, over its largest magnitude. */
TEST(lora_loss_and_gradients_equal_peft)
{
    ft_backend *backend = ft_backend_cpu_create(1);
    ft_model_options options = {1, SEQ, FT_FINETUNE_LORA, true, {.rank = 4, .alpha = 8.0,
                                                               .targets = FT_LORA_ALL_TARGETS}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    CHECK_INT(ft_model_load(FIXTURE "/model", backend, &options, &model), 0);
    ft_safetensors *expected = NULL, *lora_expected = NULL, *grads = NULL;
    CHECK_INT(ft_safetensors_open(FIXTURE "/expected.safetensors", &expected), 0);
    CHECK_INT(ft_safetensors_open(FIXTURE "/lora_expected.safetensors", &lora_expected), 0);
    CHECK_INT(ft_safetensors_open(FIXTURE "/lora_grads.safetensors", &grads), 0);
    if (model && expected && lora_expected && grads) {
        CHECK_INT(ft_lora_load(ft_model_lora(model), FIXTURE "/adapter"), 0);
        size_t n_pixels, n_ids, n_targets;
        float *pixels = fixture_floats(expected, "pixel_values", &n_pixels);
        int32_t *ids = (int32_t *)fixture_floats(expected, "input_ids", &n_ids);
        int32_t *targets = (int32_t *)fixture_floats(lora_expected, "targets", &n_targets);
        CHECK_INT(n_targets, SEQ);
        int32_t positions[SEQ], segments[SEQ];
        for (int i = 0; i < SEQ; i++) {
            positions[i] = i;
            segments[i] = 0;
        }
        ft_batch batch = {1, SEQ, ids, positions, segments, targets, 0, 0};
        ft_stored_image image = {{0, 0}, 1, 56, 56, pixels};
        double loss = 0.0;
        CHECK_INT(ft_model_set_images(model, &image, 1), 0);
        CHECK_INT(ft_model_forward_backward(model, &batch, &loss), 0);
        float loss_value = (float)loss;
        double loss_error = fixture_relative_error(lora_expected, "lora_loss", &loss_value, 1);
        printf("  loss %.6f, relative error %.2e\n", loss, loss_error);
        CHECK(loss_error < 1e-4);
        size_t n;
        const ft_param_tensor *trainable = ft_model_trainable(model, &n);
        CHECK_INT(n, ft_safetensors_count(grads)); /* 28: 7 targets x A, B x 2 layers; none in the tower */
        double worst = 0.0;
        for (size_t i = 0; i < n; i++)
            worst = fmax(worst, fixture_relative_error(grads, trainable[i].name, trainable[i].grad, trainable[i].count));
        printf("  %zu LoRA gradients, worst relative error %.2e\n", n, worst);
        CHECK(worst < 1e-4);
        free(targets);
        free(ids);
        free(pixels);
    }
    ft_safetensors_close(grads);
    ft_safetensors_close(lora_expected);
    ft_safetensors_close(expected);
    ft_model_free(model);
    ft_backend_destroy(backend);
}

/* A bf16 backend (the cuda one) runs LLaVA with LoRA, but refuses its full
 * fine-tuning before anything is allocated. */
TEST(a_bf16_backend_refuses_full_fine_tuning_of_llava)
{
    ft_backend *cpu = ft_backend_cpu_create(1);
    ft_backend bf16 = *cpu;
    bf16.name = "cuda";
    bf16.dtype = FT_DTYPE_BF16;
    ft_model_options options = {1, SEQ, FT_FINETUNE_FULL, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    CHECK_INT(ft_model_load(FIXTURE "/model", &bf16, &options, &model), -1);
    CHECK_STR(ft_error_message(), "full fine-tuning of a vision-language model runs on the cpu backend only for now: "
                                  "use LoRA (finetuning_type = lora) on the cuda backend, or backend = cpu");
    CHECK(model == NULL);
    ft_backend_destroy(cpu);
}

enum { NEW_TOKENS = 4 };

typedef struct {
    float steps[NEW_TOKENS][VOCAB];
} step_logits;

static void keep_logits(void *user, int step, const float *logits, int n, int vocab)
{
    step_logits *kept = user;
    if (step < NEW_TOKENS && n == 1 && vocab == VOCAB)
        memcpy(kept->steps[step], logits, sizeof kept->steps[step]);
}

TEST(generation_with_the_image_matches_the_full_forward)
{
    ft_backend *backend = ft_backend_cpu_create(1);
    ft_model_options options = {1, SEQ + NEW_TOKENS, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    ft_generator *generator = NULL;
    ft_safetensors *expected = NULL;
    CHECK_INT(ft_model_load(FIXTURE "/model", backend, &options, &model), 0);
    CHECK_INT(ft_safetensors_open(FIXTURE "/expected.safetensors", &expected), 0);
    if (model && expected && ft_generator_create(model, 1, SEQ + NEW_TOKENS, &generator) == 0) {
        size_t n_pixels, n_ids, n_logits;
        float *pixels = fixture_floats(expected, "pixel_values", &n_pixels);
        int32_t *ids = (int32_t *)fixture_floats(expected, "input_ids", &n_ids);
        float *want = fixture_floats(expected, "logits", &n_logits);
        ft_stored_image image = {{0, 0}, 1, 56, 56, pixels};
        step_logits *kept = ft_xcalloc(1, sizeof *kept);
        ft_generate_options generate_options = {.max_new_tokens = NEW_TOKENS, .on_logits = keep_logits,
                                                .user = kept};
        const int32_t *prompts[1] = {ids};
        int prompt_length = SEQ, generated_length = 0;
        int32_t generated[NEW_TOKENS];
        CHECK_INT(ft_model_set_images(model, &image, 1), 0);
        CHECK_INT(ft_generate(generator, prompts, &prompt_length, 1, &generate_options, generated, &generated_length),
                  0);
        CHECK_INT(generated_length, NEW_TOKENS);
        double prefill = largest_difference(kept->steps[0], want + (size_t)(SEQ - 1) * VOCAB, VOCAB);
        printf("  prefill's last logits within %.2g of transformers'\n", prefill);
        CHECK(prefill < 1e-4);
        int32_t sequence[SEQ + NEW_TOKENS], positions[SEQ + NEW_TOKENS], segments[SEQ + NEW_TOKENS],
            targets[SEQ + NEW_TOKENS];
        memcpy(sequence, ids, SEQ * sizeof(int32_t));
        memcpy(sequence + SEQ, generated, NEW_TOKENS * sizeof(int32_t));
        plain_rows(positions, segments, targets, SEQ + NEW_TOKENS);
        float *logits = ft_xmalloc((size_t)(SEQ + NEW_TOKENS) * VOCAB * sizeof(float));
        double worst = 0.0;
        for (int step = 1; step < NEW_TOKENS; step++) {
            int length = SEQ + step;
            ft_batch batch = {1, length, sequence, positions, segments, targets, 0, 0};
            CHECK_INT(ft_model_set_images(model, &image, 1), 0);
            CHECK_INT(ft_model_forward(model, &batch, logits, NULL), 0);
            worst = fmax(worst, largest_difference(kept->steps[step], logits + (size_t)(length - 1) * VOCAB, VOCAB));
        }
        printf("  decode steps within %.2g of the full forward pass\n", worst);
        CHECK(worst < 1e-4);
        free(logits);
        free(kept);
        free(want);
        free(ids);
        free(pixels);
    }
    ft_generator_free(generator);
    ft_safetensors_close(expected);
    ft_model_free(model);
    ft_backend_destroy(backend);
}

/* The fixture's weights under the names transformers 4.5x saves: the language
 * model as model.language_model.*, the head as lm_head, the tower and the
 * projector under model.; returns the folder (caller removes and frees). */
static char *write_transformers_45_layout(void)
{
    char *folder = ft_xstrdup("/tmp/ftpipe-test-llava45.XXXXXX");
    if (!mkdtemp(folder))
        abort();
    ft_safetensors *set;
    CHECK_INT(ft_safetensors_open(FIXTURE "/model", &set), 0);
    size_t count = ft_safetensors_count(set);
    ft_tensor_to_write *tensors = ft_xcalloc(count, sizeof *tensors);
    char **names = ft_xcalloc(count, sizeof *names);
    for (size_t i = 0; i < count; i++) {
        const ft_tensor_view *view = ft_safetensors_at(set, i);
        const char *name = view->name;
        if (strncmp(name, "language_model.model.", 21) == 0)
            names[i] = ft_xasprintf("model.language_model.%s", name + 21);
        else if (strncmp(name, "language_model.lm_head.", 23) == 0)
            names[i] = ft_xasprintf("lm_head.%s", name + 23);
        else if (strncmp(name, "vision_tower.", 13) == 0)
            names[i] = ft_xasprintf("model.vision_tower.vision_model.%s", name + 13);
        else
            names[i] = ft_xasprintf("model.%s", name);
        tensors[i] = (ft_tensor_to_write){names[i], view->dtype, view->n_dims, {0}, view->data};
        memcpy(tensors[i].shape, view->shape, sizeof view->shape);
    }
    char *file = ft_xasprintf("%s/model.safetensors", folder);
    CHECK_INT(ft_safetensors_write(file, tensors, count, NULL, NULL, 0), 0);
    free(file);
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
    free(tensors);
    ft_safetensors_close(set);
    const char *copied[] = {"config.json", "preprocessor_config.json"};
    for (size_t i = 0; i < 2; i++) {
        char *from = ft_xasprintf(FIXTURE "/model/%s", copied[i]), *to = ft_xasprintf("%s/%s", folder, copied[i]);
        char *data;
        size_t length;
        CHECK_INT(ft_read_file(from, &data, &length), 0);
        CHECK_INT(ft_write_file_atomic(to, data, length), 0);
        free(data);
        free(from);
        free(to);
    }
    return folder;
}

/* The logits of the fixture's image and text through the model in folder, or NULL. */
static float *image_text_logits(const char *folder)
{
    ft_backend *backend = ft_backend_cpu_create(1);
    ft_model_options options = {1, SEQ, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    if (ft_model_load(folder, backend, &options, &model) < 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        ft_backend_destroy(backend);
        return NULL;
    }
    ft_safetensors *expected;
    CHECK_INT(ft_safetensors_open(FIXTURE "/expected.safetensors", &expected), 0);
    size_t n_pixels, n_ids;
    float *pixels = fixture_floats(expected, "pixel_values", &n_pixels);
    int32_t *ids = (int32_t *)fixture_floats(expected, "input_ids", &n_ids);
    int32_t positions[SEQ], segments[SEQ], targets[SEQ];
    plain_rows(positions, segments, targets, SEQ);
    ft_batch batch = {1, SEQ, ids, positions, segments, targets, 0, 0};
    float *logits = ft_xcalloc((size_t)SEQ * VOCAB, sizeof(float));
    ft_stored_image image = {{0, 0}, 1, 56, 56, pixels};
    CHECK_INT(ft_model_set_images(model, &image, 1), 0);
    CHECK_INT(ft_model_forward(model, &batch, logits, NULL), 0);
    free(ids);
    free(pixels);
    ft_safetensors_close(expected);
    ft_model_free(model);
    ft_backend_destroy(backend);
    return logits;
}

TEST(loads_the_layout_transformers_4_5x_saves)
{
    char *folder = write_transformers_45_layout();
    float *theirs = image_text_logits(FIXTURE "/model");
    float *ours = image_text_logits(folder);
    CHECK(theirs && ours);
    if (theirs && ours)
        CHECK(memcmp(theirs, ours, (size_t)SEQ * VOCAB * sizeof(float)) == 0);
    free(theirs);
    free(ours);
    ft_remove_tree(folder);
    free(folder);
}

int main(void)
{
    RUN(logits_equal_transformers_on_an_image_and_text);
    RUN(the_language_model_alone_is_far_from_transformers);
    RUN(lora_loss_and_gradients_equal_peft);
    RUN(generation_with_the_image_matches_the_full_forward);
    RUN(loads_the_layout_transformers_4_5x_saves);
    RUN(a_bf16_backend_refuses_full_fine_tuning_of_llava);
    return check_done();
}
