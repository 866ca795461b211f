/* Parity of the cpu core with transformers + peft, on the fixtures that
 * tests/fixtures/parity/make_parity.py made: tiny random Qwen2, Qwen3 and
 * Llama 3 models, a batch with two packed samples and padding. Logits, loss,
 * every weight's gradient (full fine-tuning), every LoRA gradient, and the LoRA
 * weights after one and two AdamW steps must match with a relative error (max
 * |difference| over max |reference|, per tensor) under 1e-4. */
#include <math.h>
#include <stdint.h>

#include "check.h"
#include "fixture_tensors.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/adamw.h"
#include "ftpipe/model/lora.h"
#include "ftpipe/model/model.h"

#define FIXTURES "tests/fixtures/parity"
#define TOLERANCE 1e-4

enum { BATCH = 2, SEQ = 16 };

static ft_backend *cpu;

typedef struct {
    int32_t tokens[BATCH * SEQ], positions[BATCH * SEQ], segments[BATCH * SEQ], targets[BATCH * SEQ];
    ft_batch batch;
} fixture_batch;

/* The worst relative error seen in one group of tensors. */
typedef struct {
    const char *group;
    double worst;
    char worst_name[160];
    int compared;
} comparison;

static ft_safetensors *open_fixture(const char *arch, const char *file)
{
    return fixture_open(FIXTURES, arch, file);
}

static void read_ints(const ft_safetensors *set, const char *name, int32_t *out)
{
    const ft_tensor_view *view = ft_safetensors_find(set, name);
    CHECK(view && view->dtype == FT_DTYPE_I32 && view->size_bytes == BATCH * SEQ * sizeof(int32_t));
    if (view)
        memcpy(out, view->data, BATCH * SEQ * sizeof(int32_t));
}

static void load_batch(const char *arch, fixture_batch *fb)
{
    ft_safetensors *set = open_fixture(arch, "batch.safetensors");
    if (!set)
        return;
    read_ints(set, "tokens", fb->tokens);
    read_ints(set, "positions", fb->positions);
    read_ints(set, "segments", fb->segments);
    read_ints(set, "targets", fb->targets);
    ft_safetensors_close(set);
    fb->batch = (ft_batch){BATCH, SEQ, fb->tokens, fb->positions, fb->segments, fb->targets, 0, 0};
}

static void compare(comparison *c, const char *name, const float *actual, size_t count,
                    const ft_safetensors *expected_set)
{
    const ft_tensor_view *view = ft_safetensors_find(expected_set, name);
    if (!view) {
        fprintf(stderr, "  %s: %s\n", c->group, ft_error_message());
        check_case_failed = 1;
        return;
    }
    size_t expected_count = view->size_bytes / ft_dtype_size(view->dtype);
    if (expected_count != count) {
        fprintf(stderr, "  %s: %s has %zu elements, the reference %zu\n", c->group, name, count, expected_count);
        check_case_failed = 1;
        return;
    }
    float *expected = ft_xmalloc(count * sizeof(float));
    CHECK_INT(ft_tensor_to_f32(view, expected), 0);
    double difference = 0.0, scale = 0.0;
    for (size_t i = 0; i < count; i++) {
        difference = fmax(difference, fabs((double)actual[i] - expected[i]));
        scale = fmax(scale, fabs((double)expected[i]));
    }
    double relative = scale > 0.0 ? difference / scale : difference;
    if (!(relative <= c->worst)) {
        c->worst = relative;
        snprintf(c->worst_name, sizeof c->worst_name, "%s", name);
    }
    c->compared++;
    free(expected);
}

static void report(const char *arch, const comparison *c, int expected_count)
{
    printf("# %s %-22s %3d tensors, worst relative error %.2e (%s)\n", arch, c->group, c->compared, c->worst,
           c->worst_name);
    if (!(c->worst < TOLERANCE) || c->compared != expected_count) {
        fprintf(stderr, "  %s %s: worst relative error %.3g in %s over %d of %d tensors\n", arch, c->group, c->worst,
                c->worst_name, c->compared, expected_count);
        check_case_failed = 1;
    }
}

static void compare_scalar(const char *arch, const char *group, double actual, const ft_safetensors *set,
                           const char *name)
{
    comparison c = {group, -1.0, "", 0};
    float value = (float)actual;
    compare(&c, name, &value, 1, set);
    report(arch, &c, 1);
}

static void compare_tensors(const char *arch, const char *group, const ft_param_tensor *tensors, size_t count,
                            bool grads, const ft_safetensors *set)
{
    comparison c = {group, -1.0, "", 0};
    for (size_t i = 0; i < count; i++)
        compare(&c, tensors[i].name, grads ? tensors[i].grad : tensors[i].value, tensors[i].count, set);
    report(arch, &c, (int)ft_safetensors_count(set));
}

static ft_model *load_model(const char *arch, ft_finetuning finetuning, const ft_lora_config *lora)
{
    char *dir = ft_xasprintf(FIXTURES "/%s/model", arch);
    ft_model_options options = {BATCH, SEQ, finetuning, lora != NULL, {0}, false, false, false, 0, 0, false};
    if (lora)
        options.lora = *lora;
    ft_model *model = NULL;
    if (ft_model_load(dir, cpu, &options, &model) < 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        check_case_failed = 1;
    }
    free(dir);
    return model;
}

static void check_full_finetuning(const char *arch)
{
    fixture_batch fb;
    load_batch(arch, &fb);
    ft_model *model = load_model(arch, FT_FINETUNE_FULL, NULL);
    ft_safetensors *expected = open_fixture(arch, "expected.safetensors");
    ft_safetensors *grads = open_fixture(arch, "full_grads.safetensors");
    if (!model || !expected || !grads)
        goto done;
    float *logits = ft_xmalloc((size_t)BATCH * SEQ * ft_model_get_config(model)->vocab_size * sizeof(float));
    double loss = 0.0, train_loss = 0.0;
    CHECK_INT(ft_model_forward(model, &fb.batch, logits, &loss), 0);
    comparison c = {"logits", -1.0, "", 0};
    compare(&c, "base_logits", logits, (size_t)BATCH * SEQ * ft_model_get_config(model)->vocab_size, expected);
    report(arch, &c, 1);
    compare_scalar(arch, "loss", loss, expected, "base_loss");
    CHECK_INT(ft_model_forward_backward(model, &fb.batch, &train_loss), 0);
    CHECK(train_loss == loss);
    size_t count;
    const ft_param_tensor *trainable = ft_model_trainable(model, &count);
    compare_tensors(arch, "weight gradients", trainable, count, true, grads);
    free(logits);
done:
    ft_safetensors_close(grads);
    ft_safetensors_close(expected);
    ft_model_free(model);
}

static void check_lora(const char *arch)
{
    char *adapter = ft_xasprintf(FIXTURES "/%s/adapter", arch);
    ft_lora_config lora = {0};
    CHECK_INT(ft_lora_config_load(adapter, &lora), 0);
    CHECK_INT(lora.rank, 4);
    CHECK(lora.alpha == 8.0 && lora.dropout == 0.0 && !lora.use_rslora);
    CHECK_INT(lora.targets, FT_LORA_ALL_TARGETS);
    fixture_batch fb;
    load_batch(arch, &fb);
    ft_model *model = load_model(arch, FT_FINETUNE_LORA, &lora);
    ft_safetensors *expected = open_fixture(arch, "expected.safetensors");
    ft_safetensors *grads = open_fixture(arch, "lora_grads.safetensors");
    ft_safetensors *step1 = open_fixture(arch, "lora_step1.safetensors");
    ft_safetensors *step2 = open_fixture(arch, "lora_step2.safetensors");
    ft_adamw *optimizer = NULL;
    if (!model || !expected || !grads || !step1 || !step2)
        goto done;
    if (ft_lora_load(ft_model_lora(model), adapter) < 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        check_case_failed = 1;
        goto done;
    }
    size_t vocab = (size_t)ft_model_get_config(model)->vocab_size;
    float *logits = ft_xmalloc((size_t)BATCH * SEQ * vocab * sizeof(float));
    double loss = 0.0;
    CHECK_INT(ft_model_forward(model, &fb.batch, logits, &loss), 0);
    comparison c = {"LoRA logits", -1.0, "", 0};
    compare(&c, "lora_logits", logits, (size_t)BATCH * SEQ * vocab, expected);
    report(arch, &c, 1);
    compare_scalar(arch, "LoRA loss", loss, expected, "lora_loss");
    free(logits);

    size_t count;
    const ft_param_tensor *trainable = ft_model_trainable(model, &count);
    CHECK_INT(count, 2 * 7 * ft_model_get_config(model)->num_hidden_layers);
    CHECK_INT(ft_model_forward_backward(model, &fb.batch, &loss), 0);
    compare_tensors(arch, "LoRA gradients", trainable, count, true, grads);
    ft_adamw_config adamw = {0.9, 0.999, 1e-8, 0.01};
    CHECK_INT(ft_adamw_create(cpu, trainable, count, &adamw, &optimizer), 0);
    ft_adamw_step(optimizer, 1e-3);
    compare_tensors(arch, "LoRA after 1 step", trainable, count, false, step1);
    ft_model_zero_grads(model);
    CHECK_INT(ft_model_forward_backward(model, &fb.batch, &loss), 0);
    compare_scalar(arch, "LoRA loss after 1 step", loss, expected, "lora_loss_after_step1");
    ft_adamw_step(optimizer, 1e-3);
    compare_tensors(arch, "LoRA after 2 steps", trainable, count, false, step2);
done:
    ft_adamw_free(optimizer);
    ft_safetensors_close(step2);
    ft_safetensors_close(step1);
    ft_safetensors_close(grads);
    ft_safetensors_close(expected);
    ft_model_free(model);
    free(adapter);
}

TEST(qwen2_full_finetuning_matches_transformers) { check_full_finetuning("qwen2"); }
TEST(qwen3_full_finetuning_matches_transformers) { check_full_finetuning("qwen3"); }
TEST(llama3_full_finetuning_matches_transformers) { check_full_finetuning("llama3"); }
TEST(qwen2_lora_matches_peft) { check_lora("qwen2"); }
TEST(qwen3_lora_matches_peft) { check_lora("qwen3"); }
TEST(llama3_lora_matches_peft) { check_lora("llama3"); }

int main(void)
{
    cpu = ft_backend_cpu_create(1);
    RUN(qwen2_full_finetuning_matches_transformers);
    RUN(qwen3_full_finetuning_matches_transformers);
    RUN(llama3_full_finetuning_matches_transformers);
    RUN(qwen2_lora_matches_peft);
    RUN(qwen3_lora_matches_peft);
    RUN(llama3_lora_matches_peft);
    ft_backend_destroy(cpu);
    return check_done();
}
