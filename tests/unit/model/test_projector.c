/* The multi-modal projector trained (projector.c, through the model) against
 * transformers + PEFT (tests/fixtures/projector, made by make_projector.py) on
 * the tiny Qwen2-VL, Qwen2.5-VL and LLaVA of the other vision-language
 * fixtures: with LoRA on its linear layers beside the language model's, every
 * LoRA gradient; trained whole (with the language model, and alone as
 * train_mm_proj_only), each of its weights' gradients, the merger's norm
 * included; relative errors under 1e-4. Then what the memory plan counts for
 * it, and the refusals. */
#include "fixtures.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/lora.h"
#include "ftpipe/model/model.h"
#include "ftpipe/model/projector.h"
#include "ftpipe/model/vision_qwen2.h"
#include "vl_fixture.h"

#define LLAVA "tests/fixtures/llava_parity"
#define LLAVA_SEQ 24

static ft_backend *cpu;

/* One architecture's batch: parity_vl's (two images) or llava_parity's (one). */
typedef struct {
    const char *arch;           /* "qwen2_vl", "qwen2_5_vl" or "llava" */
    vl_fixture vl;
    ft_safetensors *llava;
    float *pixels;
    int32_t *ids, *targets, positions[LLAVA_SEQ], segments[LLAVA_SEQ];
    ft_stored_image image;
    ft_batch batch;
    const ft_stored_image *images;
    int n_images;
} sample;

static bool is_llava(const char *arch) { return strcmp(arch, "llava") == 0; }

static char *model_dir(const char *arch)
{
    return is_llava(arch) ? ft_xstrdup(LLAVA "/model") : ft_xasprintf("tests/fixtures/parity_vl/%s/model", arch);
}

static bool sample_open(sample *s, const char *arch)
{
    memset(s, 0, sizeof *s);
    s->arch = arch;
    if (!is_llava(arch)) {
        vl_architecture = arch;
        if (!vl_fixture_open(&s->vl))
            return false;
        s->batch = (ft_batch){1, VL_SEQ, s->vl.tokens, s->vl.positions, s->vl.segments, s->vl.targets, 0, 0};
        s->images = s->vl.images;
        s->n_images = VL_IMAGES;
        return true;
    }
    ft_safetensors *targets = NULL;
    if (ft_safetensors_open(LLAVA "/expected.safetensors", &s->llava) < 0 ||
        ft_safetensors_open(LLAVA "/lora_expected.safetensors", &targets) < 0) {
        ft_safetensors_close(targets);
        CHECK(false);
        return false;
    }
    size_t n_pixels, n_ids, n_targets;
    s->pixels = fixture_floats(s->llava, "pixel_values", &n_pixels);
    s->ids = (int32_t *)fixture_floats(s->llava, "input_ids", &n_ids);
    s->targets = (int32_t *)fixture_floats(targets, "targets", &n_targets);
    ft_safetensors_close(targets);
    CHECK_INT(n_targets, LLAVA_SEQ);
    for (int i = 0; i < LLAVA_SEQ; i++)
        s->positions[i] = i;
    s->batch = (ft_batch){1, LLAVA_SEQ, s->ids, s->positions, s->segments, s->targets, 0, 0};
    s->image = (ft_stored_image){{0, 0}, 1, 56, 56, s->pixels};
    s->images = &s->image;
    s->n_images = 1;
    return true;
}

static void sample_close(sample *s)
{
    if (!is_llava(s->arch))
        vl_fixture_close(&s->vl);
    free(s->pixels);
    free(s->ids);
    free(s->targets);
    ft_safetensors_close(s->llava);
}

static ft_safetensors *open_expected(const char *arch, const char *file)
{
    return fixture_open("tests/fixtures/projector", arch, file);
}

static ft_model *load(const char *arch, const ft_model_options *options)
{
    char *dir = model_dir(arch);
    ft_model *model = NULL;
    if (ft_model_load(dir, cpu, options, &model) < 0) {
        fprintf(stderr, "  %s: %s\n", arch, ft_error_message());
        check_case_failed = 1;
    }
    free(dir);
    return model;
}

/* One forward and backward over the sample; the loss against set's `name`. */
static void train_once(ft_model *model, sample *s, const ft_safetensors *set, const char *loss_name)
{
    double loss = 0.0;
    CHECK_INT(ft_model_set_images(model, s->images, s->n_images), 0);
    CHECK_INT(ft_model_forward_backward(model, &s->batch, &loss), 0);
    float value = (float)loss;
    CHECK(fixture_relative_error(set, loss_name, &value, 1) < VL_TOLERANCE);
}

/* The worst relative error of the tensors' gradients against set's, every one
 * of which (but the `extra` others) must be among them. */
static double worst_gradient(const ft_safetensors *set, const ft_param_tensor *tensors, size_t n, size_t extra,
                             const char *what)
{
    double worst = n + extra == ft_safetensors_count(set) ? 0.0 : 1e30;
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fixture_relative_error(set, tensors[i].name, tensors[i].grad, tensors[i].count));
    printf("# %s: %zu gradients, worst relative error %.2e\n", what, n, worst);
    return worst;
}

static const char *const architectures[] = {"qwen2_vl", "qwen2_5_vl", "llava"};

TEST(lora_on_the_projector_gives_peft_gradients)
{
    for (size_t a = 0; a < sizeof architectures / sizeof *architectures; a++) {
        const char *arch = architectures[a];
        char *adapter = ft_xasprintf("tests/fixtures/projector/%s/adapter", arch);
        ft_model_options options = {1, VL_MAX_SEQ, FT_FINETUNE_LORA, true, {0}, false, false, false, 0, 0, false};
        CHECK_INT(ft_lora_config_load(adapter, &options.lora), 0);
        CHECK_INT(options.lora.targets, FT_LORA_ALL_TARGETS | FT_LORA_PROJECTOR_TARGETS);
        sample s;
        ft_safetensors *grads = open_expected(arch, "lora_grads.safetensors");
        ft_model *model = load(arch, &options);
        if (sample_open(&s, arch) && grads && model) {
            CHECK_INT(ft_lora_load(ft_model_lora(model), adapter), 0);
            train_once(model, &s, grads, "lora_loss");
            size_t n;
            const ft_param_tensor *trainable = ft_model_trainable(model, &n);
            CHECK_INT(n, 32); /* 7 targets x 2 layers and the projector's 2, A and B each */
            CHECK(ft_lora_projector_at(ft_model_lora(model), 0) && ft_lora_projector_at(ft_model_lora(model), 1));
            CHECK(worst_gradient(grads, trainable, n, 1, arch) < VL_TOLERANCE); /* and lora_loss */
        }
        ft_model_free(model);
        ft_safetensors_close(grads);
        sample_close(&s);
        free(adapter);
    }
}

/* Trained whole, with the language model or alone: the projector's gradients
 * are the same (the trainable list ends with its weights). With the language
 * model, its input embeddings' gradient too: none at the image token's row,
 * whose embeddings the features replace. */
static void check_whole(const char *arch, bool alone)
{
    ft_model_options options = {1, VL_MAX_SEQ, FT_FINETUNE_FULL, false, {0}, false, true, alone, 0, 0, false};
    sample s;
    ft_safetensors *grads = open_expected(arch, "full_grads.safetensors");
    ft_model *model = load(arch, &options);
    if (sample_open(&s, arch) && grads && model) {
        train_once(model, &s, grads, "loss");
        size_t n, n_weights;
        const ft_param_tensor *trainable = ft_model_trainable(model, &n);
        ft_model_weights(model, &n_weights);
        size_t n_projector = ft_safetensors_count(grads) - 2; /* beside the loss and the embeddings' gradient */
        CHECK_INT(n, (alone ? 0 : n_weights) + n_projector);
        CHECK(worst_gradient(grads, trainable + n - n_projector, n_projector, 2, arch) < VL_TOLERANCE);
        for (size_t i = 0; !alone && i < n; i++)
            if (strstr(trainable[i].name, "embed_tokens.weight")) {
                double error = fixture_relative_error(grads, "embed_tokens_grad", trainable[i].grad, trainable[i].count);
                printf("# %s: the input embeddings' gradient, relative error %.2e\n", arch, error);
                CHECK(error < VL_TOLERANCE);
            }
    }
    ft_model_free(model);
    ft_safetensors_close(grads);
    sample_close(&s);
}

TEST(the_projector_trained_whole_gives_transformers_gradients)
{
    for (size_t a = 0; a < sizeof architectures / sizeof *architectures; a++) {
        check_whole(architectures[a], false);
        check_whole(architectures[a], true);
    }
}

TEST(the_memory_plan_counts_the_projector)
{
    ft_model_config config;
    CHECK_INT(ft_language_model_config_load("tests/fixtures/parity_vl/qwen2_vl/model", &config), 0);
    ft_projector_weights merger;
    ft_vision_qwen2_merger_shape(&config.vision, &merger);
    /* ln_q's weight and bias, mlp.0 [128, 128] and bias, mlp.2 [64, 128] and bias */
    size_t merged = 128, n_merger = 2 * 32 + merged * merged + merged + 64 * merged + 64;
    ft_model_options frozen = {1, VL_MAX_SEQ, FT_FINETUNE_FULL, false, {0}, false, false, false, 0, 0, false};
    ft_model_options alone = frozen, both = frozen;
    alone.train_projector = alone.freeze_language_model = true;
    both.train_projector = true;
    ft_memory_plan plan_frozen, plan_alone, plan_both;
    CHECK_INT(ft_model_plan_memory(&config, &frozen, FT_DTYPE_F32, &plan_frozen), 0);
    CHECK_INT(ft_model_plan_memory(&config, &alone, FT_DTYPE_F32, &plan_alone), 0);
    CHECK_INT(ft_model_plan_memory(&config, &both, FT_DTYPE_F32, &plan_both), 0);
    CHECK_INT(plan_alone.gradient_bytes, n_merger * sizeof(float));
    CHECK_INT(plan_alone.optimizer_bytes, 2 * n_merger * sizeof(float));
    CHECK_INT(plan_both.gradient_bytes, plan_frozen.gradient_bytes + n_merger * sizeof(float));
    CHECK_INT(plan_both.optimizer_bytes, plan_frozen.optimizer_bytes + 2 * n_merger * sizeof(float));
    CHECK(plan_both.activation_bytes > plan_frozen.activation_bytes); /* kept for backward */
    /* LoRA on the merger's layers: rank x (in + out) each, their gradients and moments */
    ft_model_options lora = {1, VL_MAX_SEQ, FT_FINETUNE_LORA, true, {4, 8.0, 0.0, false, FT_LORA_ALL_TARGETS, 1},
                             false, false, false, 0, 0, false};
    ft_model_options lora_projector = lora;
    lora_projector.lora.targets |= FT_LORA_PROJECTOR_TARGETS;
    ft_memory_plan plan_lora, plan_lora_projector;
    CHECK_INT(ft_model_plan_memory(&config, &lora, FT_DTYPE_F32, &plan_lora), 0);
    CHECK_INT(ft_model_plan_memory(&config, &lora_projector, FT_DTYPE_F32, &plan_lora_projector), 0);
    size_t n_adapters = 4 * (merged + merged) + 4 * (merged + 64);
    CHECK_INT(plan_lora_projector.adapter_bytes, plan_lora.adapter_bytes + n_adapters * sizeof(float));
    CHECK_INT(plan_lora_projector.gradient_bytes, plan_lora.gradient_bytes + n_adapters * sizeof(float));
    CHECK_INT(plan_lora_projector.optimizer_bytes, plan_lora.optimizer_bytes + 2 * n_adapters * sizeof(float));
}

TEST(training_the_projector_is_refused_where_it_does_not_apply)
{
    ft_model_config config;
    CHECK_INT(ft_language_model_config_load("tests/fixtures/parity_vl/qwen2_vl/model", &config), 0);
    ft_memory_plan plan;
    ft_model_options lora = {1, VL_MAX_SEQ, FT_FINETUNE_LORA, true, {4, 8.0, 0.0, false, FT_LORA_ALL_TARGETS, 1},
                             false, true, false, 0, 0, false};
    CHECK_INT(ft_model_plan_memory(&config, &lora, FT_DTYPE_F32, &plan), -1);
    CHECK(strstr(ft_error_message(), "comes with full fine-tuning") != NULL);
    ft_model_options nothing = {1, VL_MAX_SEQ, FT_FINETUNE_FULL, false, {0}, false, false, true, 0, 0, false};
    CHECK_INT(ft_model_plan_memory(&config, &nothing, FT_DTYPE_F32, &plan), -1);
    CHECK(strstr(ft_error_message(), "nothing is left to train") != NULL);
    ft_model_config text;
    CHECK_INT(ft_model_config_load("tests/fixtures/parity/qwen2/model", &text), 0);
    lora.train_projector = false;
    lora.lora.targets |= FT_LORA_PROJECTOR_FIRST;
    CHECK_INT(ft_model_plan_memory(&text, &lora, FT_DTYPE_F32, &plan), -1);
    CHECK(strstr(ft_error_message(), "text-only model") != NULL);
    /* a bf16 backend (cuda's) does not train it whole */
    ft_backend bf16 = *cpu;
    bf16.name = "cuda";
    bf16.dtype = FT_DTYPE_BF16;
    ft_model_options whole = {1, VL_MAX_SEQ, FT_FINETUNE_FULL, false, {0}, false, true, true, 0, 0, false};
    ft_model *model = NULL;
    CHECK_INT(ft_model_load("tests/fixtures/parity_vl/qwen2_vl/model", &bf16, &whole, &model), -1);
    CHECK(strstr(ft_error_message(), "cpu backend only") != NULL);
}

TEST(lora_targets_name_the_projector_as_llamafactory_does)
{
    unsigned targets = 0;
    CHECK_INT(ft_lora_parse_targets("all", &targets), 0);
    CHECK_INT(targets, FT_LORA_ALL_TARGETS); /* find_all_linear_modules leaves the projector out */
    CHECK_INT(ft_lora_parse_targets("q_proj,linear_1,linear_2", &targets), 0);
    CHECK_INT(targets, (1u << FT_LORA_Q) | FT_LORA_PROJECTOR_TARGETS);
    CHECK_INT(ft_lora_parse_targets("mlp.0 mlp.2", &targets), 0);
    CHECK_INT(targets, FT_LORA_PROJECTOR_TARGETS);
    CHECK_INT(ft_lora_parse_targets("linear_3", &targets), -1);
    CHECK(strstr(ft_error_message(), "linear_1 linear_2 (LLaVA) or mlp.0 mlp.2") != NULL);
}

int main(void)
{
    cpu = ft_backend_cpu_create(1);
    RUN(lora_on_the_projector_gives_peft_gradients);
    RUN(the_projector_trained_whole_gives_transformers_gradients);
    RUN(the_memory_plan_counts_the_projector);
    RUN(training_the_projector_is_refused_where_it_does_not_apply);
    RUN(lora_targets_name_the_projector_as_llamafactory_does);
    ft_backend_destroy(cpu);
    return check_done();
}
