/* Parity of the cpu core with transformers + PEFT on a tiny random Qwen2-VL
 * and Qwen2.5-VL (tests/fixtures/parity_vl, made by make_parity_vl.py): one row of text with
 * two images of different sizes. The logits and loss of the base model, and
 * the logits, loss, every LoRA gradient and the LoRA weights after one and two
 * AdamW steps with PEFT's adapter (the language model's seven targets), must
 * match with a relative error under 1e-4. */
#include "fixtures.h"
#include "ftpipe/model/adamw.h"
#include "ftpipe/model/lora.h"
#include "ftpipe/model/model.h"
#include "vl_fixture.h"

static ft_backend *cpu;
static bool checkpointing; /* load with gradient_checkpointing: the same numbers */

static ft_model *load_model(ft_finetuning finetuning, const ft_lora_config *lora)
{
    ft_model_options options = {1, VL_MAX_SEQ, finetuning, lora != NULL, {0}, checkpointing, false, false, 0, 0, false};
    if (lora)
        options.lora = *lora;
    ft_model *model = NULL;
    char *dir = vl_path("model");
    if (ft_model_load(dir, cpu, &options, &model) < 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        check_case_failed = 1;
    }
    free(dir);
    return model;
}

static ft_batch batch_of(vl_fixture *f)
{
    return (ft_batch){1, VL_SEQ, f->tokens, f->positions, f->segments, f->targets, 0, 0};
}

static void check_base_model(void)
{
    vl_fixture f;
    ft_safetensors *expected = vl_open("expected.safetensors");
    ft_model *model = load_model(FT_FINETUNE_NONE, NULL);
    if (vl_fixture_open(&f) && expected && model) {
        size_t count = (size_t)VL_SEQ * ft_model_get_config(model)->vocab_size;
        float *logits = ft_xmalloc(count * sizeof(float));
        double loss = 0.0;
        ft_batch batch = batch_of(&f);
        CHECK_INT(ft_model_set_images(model, f.images, VL_IMAGES), 0);
        CHECK_INT(ft_model_forward(model, &batch, logits, &loss), 0);
        CHECK(vl_relative_error(expected, "logits", logits, count) < VL_TOLERANCE);
        float loss_value = (float)loss;
        CHECK(vl_relative_error(expected, "loss", &loss_value, 1) < VL_TOLERANCE);
        /* the pass took the images: the same batch again without them is an error */
        CHECK_INT(ft_model_forward(model, &batch, logits, &loss), -1);
        CHECK(strstr(ft_error_message(), "the batch's 0 images are used up") != NULL);
        free(logits);
    }
    ft_model_free(model);
    ft_safetensors_close(expected);
    vl_fixture_close(&f);
}

/* The worst relative error of the tensors' gradients or values against set's. */
static double worst_error(const ft_safetensors *set, const ft_param_tensor *tensors, size_t n, bool grads,
                          const char *what)
{
    double worst = n == ft_safetensors_count(set) ? 0.0 : 1e30;
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, vl_relative_error(set, tensors[i].name, grads ? tensors[i].grad : tensors[i].value,
                                              tensors[i].count));
    printf("# %s: %zu tensors, worst relative error %.2e\n", what, n, worst);
    return worst;
}

static void check_lora(void)
{
    ft_lora_config lora = {.rank = 4, .alpha = 8.0, .targets = FT_LORA_ALL_TARGETS};
    vl_fixture f;
    ft_safetensors *expected = vl_open("expected.safetensors");
    ft_safetensors *grads = vl_open("lora_grads.safetensors");
    ft_safetensors *step1 = vl_open("lora_step1.safetensors"), *step2 = vl_open("lora_step2.safetensors");
    ft_model *model = load_model(FT_FINETUNE_LORA, &lora);
    ft_adamw *optimizer = NULL;
    if (vl_fixture_open(&f) && expected && grads && step1 && step2 && model) {
        char *adapter = vl_path("adapter");
        CHECK_INT(ft_lora_load(ft_model_lora(model), adapter), 0);
        free(adapter);
        size_t count = (size_t)VL_SEQ * ft_model_get_config(model)->vocab_size;
        float *logits = ft_xmalloc(count * sizeof(float));
        double loss = 0.0, train_loss = 0.0;
        ft_batch batch = batch_of(&f);
        CHECK_INT(ft_model_set_images(model, f.images, VL_IMAGES), 0);
        CHECK_INT(ft_model_forward(model, &batch, logits, &loss), 0);
        CHECK(vl_relative_error(expected, "lora_logits", logits, count) < VL_TOLERANCE);
        float loss_value = (float)loss;
        CHECK(vl_relative_error(expected, "lora_loss", &loss_value, 1) < VL_TOLERANCE);
        CHECK_INT(ft_model_set_images(model, f.images, VL_IMAGES), 0);
        CHECK_INT(ft_model_forward_backward(model, &batch, &train_loss), 0);
        CHECK(train_loss == loss);
        size_t n;
        const ft_param_tensor *trainable = ft_model_trainable(model, &n);
        CHECK_INT(n, ft_safetensors_count(grads));
        CHECK(worst_error(grads, trainable, n, true, "LoRA gradients") < VL_TOLERANCE);
        ft_adamw_config adamw = {0.9, 0.999, 1e-8, 0.01};
        CHECK_INT(ft_adamw_create(cpu, trainable, n, &adamw, &optimizer), 0);
        ft_adamw_step(optimizer, 1e-3);
        CHECK(worst_error(step1, trainable, n, false, "LoRA after 1 step") < VL_TOLERANCE);
        ft_model_zero_grads(model);
        CHECK_INT(ft_model_set_images(model, f.images, VL_IMAGES), 0);
        CHECK_INT(ft_model_forward_backward(model, &batch, &train_loss), 0);
        loss_value = (float)train_loss;
        CHECK(vl_relative_error(expected, "lora_loss_after_step1", &loss_value, 1) < VL_TOLERANCE);
        ft_adamw_step(optimizer, 1e-3);
        CHECK(worst_error(step2, trainable, n, false, "LoRA after 2 steps") < VL_TOLERANCE);
        free(logits);
    }
    ft_adamw_free(optimizer);
    ft_model_free(model);
    ft_safetensors_close(step2);
    ft_safetensors_close(step1);
    ft_safetensors_close(grads);
    ft_safetensors_close(expected);
    vl_fixture_close(&f);
}

TEST(qwen2_vl_matches_transformers) { vl_architecture = "qwen2_vl", check_base_model(); }
TEST(qwen2_5_vl_matches_transformers) { vl_architecture = "qwen2_5_vl", check_base_model(); }
TEST(qwen2_vl_lora_matches_peft) { vl_architecture = "qwen2_vl", check_lora(); }
TEST(qwen2_5_vl_lora_matches_peft) { vl_architecture = "qwen2_5_vl", check_lora(); }
TEST(qwen2_5_vl_lora_with_gradient_checkpointing_matches_peft)
{
    vl_architecture = "qwen2_5_vl";
    checkpointing = true;
    check_lora();
    checkpointing = false;
}

TEST(text_only_model_refuses_images)
{
    ft_model_options options = {1, 16, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    CHECK_INT(ft_model_load("tests/fixtures/parity/qwen2/model", cpu, &options, &model), 0);
    vl_fixture f;
    if (model && vl_fixture_open(&f)) {
        CHECK_INT(ft_model_set_images(model, f.images, VL_IMAGES), -1);
        CHECK(strstr(ft_error_message(), "Qwen2ForCausalLM is a text-only model") != NULL);
    }
    vl_fixture_close(&f);
    ft_model_free(model);
}

/* A bf16 backend (the cuda one) runs vision-language models with LoRA, but
 * refuses their full fine-tuning before anything is allocated, saying what to use. */
TEST(a_bf16_backend_refuses_full_fine_tuning_of_vision_language_models)
{
    ft_backend bf16 = *cpu;
    bf16.name = "cuda";
    bf16.dtype = FT_DTYPE_BF16;
    ft_model_options options = {1, VL_MAX_SEQ, FT_FINETUNE_FULL, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    CHECK_INT(ft_model_load(VL_FIXTURES "/model", &bf16, &options, &model), -1);
    CHECK_STR(ft_error_message(), "full fine-tuning of a vision-language model runs on the cpu backend only for now: "
                                  "use LoRA (finetuning_type = lora) on the cuda backend, or backend = cpu");
    CHECK(model == NULL);
}

/* transformers 4.5x saved model.language_model.* and model.visual.*: the same
 * weights under those names load and give the same logits. */
TEST(transformers_4_5x_names_load)
{
    char *dir = fixture_temporary_dir("parity_vl_names");
    ft_safetensors *set = vl_open("model/model.safetensors");
    size_t n = set ? ft_safetensors_count(set) : 0;
    ft_tensor_to_write *tensors = ft_xcalloc(n + 1, sizeof *tensors);
    char **names = ft_xcalloc(n + 1, sizeof *names);
    for (size_t i = 0; i < n; i++) {
        const ft_tensor_view *view = ft_safetensors_at(set, i);
        const char *name = view->name;
        names[i] = strncmp(name, "visual.", 7) == 0   ? ft_xasprintf("model.%s", name)
                   : strncmp(name, "model.", 6) == 0 ? ft_xasprintf("model.language_model.%s", name + 6)
                                                      : ft_xstrdup(name);
        tensors[i] = (ft_tensor_to_write){names[i], view->dtype, view->n_dims, {0}, view->data};
        memcpy(tensors[i].shape, view->shape, sizeof view->shape);
    }
    char *weights = ft_path_join(dir, "model.safetensors");
    CHECK_INT(ft_safetensors_write(weights, tensors, n, NULL, NULL, 0), 0);
    char *config = ft_path_join(dir, "config.json");
    CHECK_INT(ft_copy_file(VL_FIXTURES "/model/config.json", config), 0);
    ft_model_options options = {1, VL_MAX_SEQ, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *renamed = NULL;
    CHECK_INT(ft_model_load(dir, cpu, &options, &renamed), 0);
    ft_model *original = load_model(FT_FINETUNE_NONE, NULL);
    vl_fixture f;
    if (renamed && original && vl_fixture_open(&f)) {
        size_t count = (size_t)VL_SEQ * 300;
        float *a = ft_xmalloc(count * sizeof(float)), *b = ft_xmalloc(count * sizeof(float));
        ft_batch batch = batch_of(&f);
        CHECK_INT(ft_model_set_images(renamed, f.images, VL_IMAGES), 0);
        CHECK_INT(ft_model_forward(renamed, &batch, a, NULL), 0);
        CHECK_INT(ft_model_set_images(original, f.images, VL_IMAGES), 0);
        CHECK_INT(ft_model_forward(original, &batch, b, NULL), 0);
        CHECK(memcmp(a, b, count * sizeof(float)) == 0);
        free(a);
        free(b);
    }
    vl_fixture_close(&f);
    ft_model_free(original);
    ft_model_free(renamed);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(tensors);
    free(config);
    free(weights);
    ft_safetensors_close(set);
    ft_remove_tree(dir);
    free(dir);
}

int main(void)
{
    cpu = ft_backend_cpu_create(1);
    RUN(qwen2_vl_matches_transformers);
    RUN(qwen2_5_vl_matches_transformers);
    RUN(qwen2_vl_lora_matches_peft);
    RUN(qwen2_5_vl_lora_matches_peft);
    RUN(qwen2_5_vl_lora_with_gradient_checkpointing_matches_peft);
    vl_architecture = "qwen2_vl";
    RUN(text_only_model_refuses_images);
    RUN(transformers_4_5x_names_load);
    RUN(a_bf16_backend_refuses_full_fine_tuning_of_vision_language_models);
    ft_backend_destroy(cpu);
    return check_done();
}
