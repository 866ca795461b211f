/* The model's behaviour around the math (which test_parity checks): inference
 * against training plans, gradient accumulation over micro-batches, seeded LoRA
 * dropout, batch and weight checks, and the memory plan. Uses the qwen2 parity
 * fixture. */
#include <math.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/model.h"
#include "ftpipe/model/vision_qwen2.h"
#include "ftpipe/model/model_init.h"

#define MODEL "tests/fixtures/parity/qwen2/model"

enum { SEQ = 16, ROWS = 2 * SEQ, VOCAB = 300 };

static ft_backend *cpu;
static int32_t tokens[ROWS], positions[ROWS], segments[ROWS], targets[ROWS];

static void load_batch(void)
{
    ft_safetensors *set = NULL;
    CHECK_INT(ft_safetensors_open("tests/fixtures/parity/qwen2/batch.safetensors", &set), 0);
    int32_t *arrays[] = {tokens, positions, segments, targets};
    const char *names[] = {"tokens", "positions", "segments", "targets"};
    for (int i = 0; i < 4; i++)
        memcpy(arrays[i], ft_safetensors_find(set, names[i])->data, sizeof tokens);
    ft_safetensors_close(set);
}

static ft_batch rows_of_batch(int first_row, int n_rows)
{
    size_t at = (size_t)first_row * SEQ;
    return (ft_batch){n_rows, SEQ, tokens + at, positions + at, segments + at, targets + at, 0, 0};
}

static ft_model *load(ft_finetuning finetuning, int max_batch, double dropout)
{
    ft_model_options options = {max_batch, SEQ, finetuning, finetuning == FT_FINETUNE_LORA,
                                {4, 8.0, dropout, false, FT_LORA_ALL_TARGETS, 3}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    if (ft_model_load(MODEL, cpu, &options, &model) < 0)
        fprintf(stderr, "  %s\n", ft_error_message());
    CHECK(model != NULL);
    return model;
}

static double max_difference(const float *a, const float *b, size_t n)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs((double)a[i] - b[i]));
    return worst;
}

TEST(inference_plan_gives_the_training_plans_logits_in_less_memory)
{
    ft_model *inference = load(FT_FINETUNE_NONE, 2, 0.0), *training = load(FT_FINETUNE_FULL, 2, 0.0);
    if (!inference || !training)
        return;
    static float a[ROWS * VOCAB], b[ROWS * VOCAB];
    double loss_a, loss_b;
    ft_batch batch = rows_of_batch(0, 2);
    CHECK_INT(ft_model_forward(inference, &batch, a, &loss_a), 0);
    CHECK_INT(ft_model_forward(training, &batch, b, &loss_b), 0);
    CHECK(max_difference(a, b, ROWS * VOCAB) == 0.0);
    CHECK(loss_a == loss_b);
    CHECK(ft_model_memory(inference).activation_bytes < ft_model_memory(training).activation_bytes / 2);
    CHECK_INT(ft_model_forward_backward(inference, &batch, &loss_a), -1);
    CHECK_STR(ft_error_message(), "the model was loaded for inference; load it for LoRA or full fine-tuning to train");
    ft_model_free(inference);
    ft_model_free(training);
}

TEST(micro_batches_add_up_to_the_whole_batch)
{
    ft_model *whole = load(FT_FINETUNE_FULL, 2, 0.0), *parts = load(FT_FINETUNE_FULL, 1, 0.0);
    if (!whole || !parts)
        return;
    ft_batch batch = rows_of_batch(0, 2), first = rows_of_batch(0, 1), second = rows_of_batch(1, 1);
    int n_targets = 0;
    for (int i = 0; i < ROWS; i++)
        n_targets += targets[i] >= 0;
    first.loss_denominator = second.loss_denominator = n_targets;
    double loss, loss_first, loss_second;
    CHECK_INT(ft_model_forward_backward(whole, &batch, &loss), 0);
    CHECK_INT(ft_model_forward_backward(parts, &first, &loss_first), 0);
    CHECK_INT(ft_model_forward_backward(parts, &second, &loss_second), 0);
    size_t count;
    const ft_param_tensor *expected = ft_model_trainable(whole, &count);
    const ft_param_tensor *actual = ft_model_trainable(parts, &count);
    double worst = 0.0;
    for (size_t i = 0; i < count; i++)
        worst = fmax(worst, max_difference(actual[i].grad, expected[i].grad, expected[i].count));
    CHECK(worst < 1e-5);
    ft_model_zero_grads(parts);
    CHECK(actual[3].grad[0] == 0.0f && actual[count - 1].grad[5] == 0.0f);
    ft_model_free(whole);
    ft_model_free(parts);
}

/* The LoRA gradients after one forward_backward with this dropout seed. */
static float *lora_gradient(ft_model *model, uint64_t dropout_seed, double *loss)
{
    ft_batch batch = rows_of_batch(0, 2);
    batch.dropout_seed = dropout_seed;
    ft_model_zero_grads(model);
    CHECK_INT(ft_model_forward_backward(model, &batch, loss), 0);
    size_t count;
    const ft_param_tensor *tensors = ft_model_trainable(model, &count);
    float *copy = ft_xmalloc(tensors[0].count * sizeof(float));
    memcpy(copy, tensors[0].grad, tensors[0].count * sizeof(float));
    return copy;
}

/* B starts at zero, which hides the adapter; give it some weight. */
static void set_lora_b(ft_model *model)
{
    size_t count;
    const ft_param_tensor *tensors = ft_model_trainable(model, &count);
    for (size_t i = 1; i < count; i += 2)
        for (size_t k = 0; k < tensors[i].count; k++)
            tensors[i].value[k] = 0.01f * (float)(k % 7) - 0.03f;
}

TEST(lora_dropout_is_seeded_per_micro_batch)
{
    ft_model *model = load(FT_FINETUNE_LORA, 2, 0.3), *plain = load(FT_FINETUNE_LORA, 2, 0.0);
    if (!model || !plain)
        return;
    set_lora_b(model);
    set_lora_b(plain);
    double loss_1, loss_2, loss_3, loss_plain;
    float *first = lora_gradient(model, 1, &loss_1), *again = lora_gradient(model, 1, &loss_2);
    float *other = lora_gradient(model, 2, &loss_3), *without = lora_gradient(plain, 1, &loss_plain);
    size_t count = (size_t)4 * 64; /* layer 0's q_proj A */
    CHECK(loss_1 == loss_2 && memcmp(first, again, count * sizeof(float)) == 0);
    CHECK(loss_1 != loss_3 && max_difference(first, other, count) > 0.0);
    CHECK(loss_1 != loss_plain);
    free(first);
    free(again);
    free(other);
    free(without);
    ft_model_free(model);
    ft_model_free(plain);
}

TEST(batches_outside_the_plan_or_vocabulary_are_refused)
{
    ft_model *model = load(FT_FINETUNE_NONE, 1, 0.0);
    if (!model)
        return;
    ft_batch batch = rows_of_batch(0, 2);
    double loss;
    CHECK_INT(ft_model_forward(model, &batch, NULL, &loss), -1);
    CHECK_STR(ft_error_message(), "a batch of 2 x 16 tokens does not fit the model's plan of 1 x 16");
    int32_t bad[SEQ];
    memcpy(bad, tokens, sizeof bad);
    bad[5] = VOCAB;
    batch = rows_of_batch(0, 1);
    batch.tokens = bad;
    CHECK_INT(ft_model_forward(model, &batch, NULL, &loss), -1);
    CHECK_STR(ft_error_message(), "batch row 0, token 5: id 300 is outside the vocabulary (0..299)");
    /* no target at all: loss 0, not NaN */
    int32_t none[SEQ];
    for (int i = 0; i < SEQ; i++)
        none[i] = -100;
    batch = rows_of_batch(0, 1);
    batch.targets = none;
    CHECK_INT(ft_model_forward(model, &batch, NULL, &loss), 0);
    CHECK(loss == 0.0);
    ft_model_free(model);
}

/* A folder with the fixture's weights and an edited config.json. */
static char *folder_with_config(const char *from, const char *to)
{
    char *dir = ft_xstrdup("/tmp/ftpipe-model.XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    char *config = NULL, *weights = ft_path_absolute(MODEL "/model.safetensors");
    char *link = ft_path_join(dir, "model.safetensors"), *config_path = ft_path_join(dir, "config.json");
    size_t length;
    CHECK_INT(ft_read_file(MODEL "/config.json", &config, &length), 0);
    char *at = config ? strstr(config, from) : NULL;
    CHECK(at != NULL);
    if (at) {
        char *edited = ft_xasprintf("%.*s%s%s", (int)(at - config), config, to, at + strlen(from));
        CHECK_INT(ft_write_file_atomic(config_path, edited, strlen(edited)), 0);
        free(edited);
    }
    CHECK_INT(symlink(weights, link), 0);
    free(config);
    free(weights);
    free(link);
    free(config_path);
    return dir;
}

TEST(weights_that_do_not_match_the_config_are_refused)
{
    ft_model_options options = {1, SEQ, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    char *dir = folder_with_config("\"intermediate_size\": 128", "\"intermediate_size\": 96");
    CHECK_INT(ft_model_load(dir, cpu, &options, &model), -1);
    char *expected = ft_xasprintf("%s/model.safetensors: tensor model.layers.0.mlp.gate_proj.weight does not have "
                                  "the shape [96, 64] that config.json implies",
                                  dir);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    ft_remove_tree(dir);
    free(dir);
    dir = folder_with_config("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    CHECK_INT(ft_model_load(dir, cpu, &options, &model), -1);
    expected = ft_xasprintf("%s: the weights do not match config.json: tensor model.layers.2.input_layernorm.weight "
                            "not found in %s/model.safetensors",
                            dir, dir);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    ft_remove_tree(dir);
    free(dir);
}

TEST(memory_plan_is_known_before_loading)
{
    ft_model *model = load(FT_FINETUNE_LORA, 2, 0.0);
    if (!model)
        return;
    ft_model_options options = {2, SEQ, FT_FINETUNE_LORA, true, {4, 8.0, 0.0, false, FT_LORA_ALL_TARGETS, 3}, false, false, false, 0, 0, false};
    ft_memory_plan planned, actual = ft_model_memory(model);
    CHECK_INT(ft_model_plan_memory(ft_model_get_config(model), &options, FT_DTYPE_F32, &planned), 0);
    CHECK_INT(planned.parameter_bytes, 93504 * 4);
    CHECK_INT(planned.parameter_bytes, ft_model_config_parameter_count(ft_model_get_config(model)) * 4);
    CHECK_INT(planned.adapter_bytes, ft_lora_parameter_count(ft_model_lora(model)) * 4);
    CHECK_INT(planned.gradient_bytes, planned.adapter_bytes);
    CHECK_INT(planned.optimizer_bytes, 2 * planned.adapter_bytes);
    CHECK_INT(planned.activation_bytes, actual.activation_bytes);
    CHECK(actual.scratch_bytes > 0 && planned.scratch_bytes == 0);
    ft_model_free(model);
}

TEST(plans_a_7b_full_finetune_without_weights)
{
    ft_model_config config;
    CHECK_INT(ft_model_shape("qwen2.5-7b", &config), 0);
    ft_model_options options = {1, 1024, FT_FINETUNE_FULL, false, {0}, false, false, false, 0, 0, false};
    ft_memory_plan plan;
    CHECK_INT(ft_model_plan_memory(&config, &options, FT_DTYPE_F32, &plan), 0);
    CHECK_INT(plan.parameter_bytes, (size_t)7615616512 * 4);
    CHECK_INT(plan.gradient_bytes, plan.parameter_bytes);
    CHECK_INT(plan.total_bytes, plan.parameter_bytes * 4 + plan.activation_bytes);
    CHECK_INT(plan.master_bytes, 0); /* float weights are their own master copy */
    /* on a bf16 backend, mixed precision: bf16 weights for the passes, a float
     * master copy, float gradients and AdamW's two float moments: 18 bytes a weight */
    ft_memory_plan mixed;
    CHECK_INT(ft_model_plan_memory(&config, &options, FT_DTYPE_BF16, &mixed), 0);
    CHECK_INT(mixed.parameter_bytes, (size_t)7615616512 * 2);
    CHECK_INT(mixed.master_bytes, (size_t)7615616512 * 4);
    CHECK_INT(mixed.gradient_bytes, (size_t)7615616512 * 4);
    CHECK_INT(mixed.optimizer_bytes, (size_t)7615616512 * 8);
    CHECK_INT(mixed.total_bytes, (size_t)7615616512 * 18 + mixed.activation_bytes);
    /* on a bf16 backend the frozen weights and activations take half, the adapter and its state stay float */
    ft_model_options lora = {1, 1024, FT_FINETUNE_LORA, true, {8, 16.0, 0.0, false, FT_LORA_ALL_TARGETS, 3}, false, false, false, 0, 0, false};
    ft_memory_plan f32, bf16;
    CHECK_INT(ft_model_plan_memory(&config, &lora, FT_DTYPE_F32, &f32), 0);
    CHECK_INT(ft_model_plan_memory(&config, &lora, FT_DTYPE_BF16, &bf16), 0);
    CHECK_INT(bf16.parameter_bytes, (size_t)7615616512 * 2);
    CHECK_INT(bf16.adapter_bytes, f32.adapter_bytes);
    CHECK_INT(bf16.optimizer_bytes, f32.optimizer_bytes);
    CHECK(bf16.activation_bytes < f32.activation_bytes);
}

/* Qwen2-VL-2B: the tower's fp32 weights and, for the image tokens a batch can
 * hold, the features, the M-RoPE tables and the tower's pass, beside the
 * language model's plan. */
TEST(a_vision_language_plan_counts_the_tower_and_image_tokens)
{
    ft_model_config config;
    CHECK_INT(ft_model_shape("qwen2-vl-2b", &config), 0);
    ft_model_options lora = {1, 1024, FT_FINETUNE_LORA, true, {8, 16.0, 0.0, false, FT_LORA_ALL_TARGETS, 3}, false, false, false, 0, 0, false};
    ft_memory_plan vl, text;
    CHECK_INT(ft_model_plan_memory(&config, &lora, FT_DTYPE_F32, &vl), 0);
    config.vision_language = false;
    CHECK_INT(ft_model_plan_memory(&config, &lora, FT_DTYPE_F32, &text), 0);
    CHECK_INT(vl.parameter_bytes - text.parameter_bytes, (size_t)665271296 * 4); /* transformers' tower count */
    /* 1024 tokens: up to 4096 patches through the tower (beside the features and tables) */
    size_t pass = ft_vision_qwen2_work_bytes(&config.vision, 4096, 4);
    CHECK(vl.activation_bytes - text.activation_bytes > pass);
    /* in bf16: half the weights, and the activations' half of the pass */
    ft_memory_plan vl_bf16, text_bf16;
    config.vision_language = true;
    CHECK_INT(ft_model_plan_memory(&config, &lora, FT_DTYPE_BF16, &vl_bf16), 0);
    config.vision_language = false;
    CHECK_INT(ft_model_plan_memory(&config, &lora, FT_DTYPE_BF16, &text_bf16), 0);
    CHECK_INT(vl_bf16.parameter_bytes - text_bf16.parameter_bytes, (size_t)665271296 * 2);
    size_t pass_bf16 = ft_vision_qwen2_work_bytes(&config.vision, 4096, 2);
    CHECK(vl_bf16.activation_bytes - text_bf16.activation_bytes > pass_bf16);
    /* the rotary tables (2 x 4096 x 40 floats) and the indices (2 x 4096 int32) keep their size */
    size_t tables = 2 * 4096 * 40 * 4 + 2 * 4096 * 4;
    CHECK_INT(pass - tables, 2 * (pass_bf16 - tables));
    CHECK_INT(vl.adapter_bytes, text.adapter_bytes);
}

int main(void)
{
    cpu = ft_backend_cpu_create(1);
    load_batch();
    RUN(inference_plan_gives_the_training_plans_logits_in_less_memory);
    RUN(micro_batches_add_up_to_the_whole_batch);
    RUN(lora_dropout_is_seeded_per_micro_batch);
    RUN(batches_outside_the_plan_or_vocabulary_are_refused);
    RUN(weights_that_do_not_match_the_config_are_refused);
    RUN(memory_plan_is_known_before_loading);
    RUN(plans_a_7b_full_finetune_without_weights);
    RUN(a_vision_language_plan_counts_the_tower_and_image_tokens);
    ft_backend_destroy(cpu);
    return check_done();
}
