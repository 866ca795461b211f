/* The whole model on the cuda backend against the cpu backend and the
 * transformers + peft fixtures (tests/fixtures/parity: tiny Qwen2, Qwen3 and
 * Llama 3 with two packed samples and padding): the loss within a relative
 * error of 1e-2, every LoRA gradient with a cosine similarity above 0.99, the
 * loss after an AdamW step too; greedy generation whose every step's logits are
 * within 2e-2 of the cpu backend's; full fine-tuning in mixed precision (its
 * gradients, and 20 steps' losses against the cpu backend's, in place and
 * offloaded; its checkpoints loaded by the other backend); and the errors a user can meet (a plan too large for the GPU, an
 * unsupported head size). */
#include "gpu_check.h"
#include "model/fixture_tensors.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/model/adamw.h"
#include "ftpipe/model/checkpoint.h"
#include "ftpipe/model/lora.h"
#include "ftpipe/model/model.h"

#define FIXTURES "tests/fixtures/parity"
#define LOGITS_TOLERANCE 2e-2
#define MIN_COSINE 0.99

enum { BATCH = 2, SEQ = 16 };

typedef struct {
    int32_t tokens[BATCH * SEQ], positions[BATCH * SEQ], segments[BATCH * SEQ], targets[BATCH * SEQ];
    ft_batch batch;
} fixture_batch;

static void load_batch(const char *arch, fixture_batch *fb)
{
    ft_safetensors *set = fixture_open(FIXTURES, arch, "batch.safetensors");
    int32_t *arrays[] = {fb->tokens, fb->positions, fb->segments, fb->targets};
    const char *names[] = {"tokens", "positions", "segments", "targets"};
    for (int i = 0; set && i < 4; i++)
        memcpy(arrays[i], ft_safetensors_find(set, names[i])->data, sizeof fb->tokens);
    ft_safetensors_close(set);
    fb->batch = (ft_batch){BATCH, SEQ, fb->tokens, fb->positions, fb->segments, fb->targets, 0, 0};
}

/* A reference tensor as floats (caller frees), or NULL. */
static float *reference(const ft_safetensors *set, const char *name, size_t count)
{
    const ft_tensor_view *view = set ? ft_safetensors_find(set, name) : NULL;
    if (!view || view->size_bytes / ft_dtype_size(view->dtype) != count) {
        fprintf(stderr, "  reference %s missing or of another size\n", name);
        check_case_failed = 1;
        return NULL;
    }
    float *values = ft_xmalloc(count * sizeof(float));
    ft_tensor_to_f32(view, values);
    return values;
}

static ft_model *load_model(const char *arch, ft_backend *backend, ft_finetuning finetuning,
                            const ft_lora_config *lora, int max_batch, int max_seq)
{
    char *dir = ft_xasprintf(FIXTURES "/%s/model", arch), *adapter = ft_xasprintf(FIXTURES "/%s/adapter", arch);
    ft_model_options options = {max_batch, max_seq, finetuning, lora != NULL, {0}, false, false, false, 0, 0, false};
    if (lora)
        options.lora = *lora;
    ft_model *model = NULL;
    if (ft_model_load(dir, backend, &options, &model) < 0 ||
        (lora && ft_lora_load(ft_model_lora(model), adapter) < 0)) {
        fprintf(stderr, "  %s (%s backend)\n", ft_error_message(), backend->name);
        check_case_failed = 1;
        ft_model_free(model);
        model = NULL;
    }
    free(dir);
    free(adapter);
    return model;
}

/* Every trained tensor's gradient of the cuda model (LoRA's, or every weight's
 * in full fine-tuning) against the cpu model's and transformers' (+ peft). */
static void check_gradients(const char *arch, const char *what, ft_model *cuda, ft_model *reference_model,
                            const ft_safetensors *peft)
{
    size_t count;
    const ft_param_tensor *tensors = ft_model_trainable(cuda, &count);
    const ft_param_tensor *expected = ft_model_trainable(reference_model, &count);
    double worst_cpu = 2.0, worst_peft = 2.0;
    const char *worst_name = "";
    for (size_t i = 0; i < count; i++) {
        float *grad = ft_xmalloc(tensors[i].count * sizeof(float));
        gpu->download(gpu, grad, tensors[i].grad, tensors[i].count * sizeof(float));
        double versus_cpu = cosine(grad, expected[i].grad, tensors[i].count);
        float *from_peft = reference(peft, tensors[i].name, tensors[i].count);
        double versus_peft = from_peft ? cosine(grad, from_peft, tensors[i].count) : 0.0;
        if (versus_cpu < worst_cpu || versus_peft < worst_peft)
            worst_name = tensors[i].name;
        worst_cpu = fmin(worst_cpu, versus_cpu);
        worst_peft = fmin(worst_peft, versus_peft);
        if (!(versus_cpu > MIN_COSINE && versus_peft > MIN_COSINE)) {
            fprintf(stderr, "  %s %s: cosine %.5f with the cpu backend, %.5f with transformers\n", arch, tensors[i].name,
                    versus_cpu, versus_peft);
            check_case_failed = 1;
        }
        free(from_peft);
        free(grad);
    }
    printf("# %s %zu %s gradients: lowest cosine %.5f (cpu), %.5f (transformers) (%s)\n", arch, count, what,
           worst_cpu, worst_peft, worst_name);
}

static void check_lora(const char *arch)
{
    char *adapter = ft_xasprintf(FIXTURES "/%s/adapter", arch);
    ft_lora_config lora = {0};
    CHECK_INT(ft_lora_config_load(adapter, &lora), 0);
    free(adapter);
    fixture_batch fb;
    load_batch(arch, &fb);
    ft_model *cuda = load_model(arch, gpu, FT_FINETUNE_LORA, &lora, BATCH, SEQ);
    ft_model *reference_model = load_model(arch, cpu, FT_FINETUNE_LORA, &lora, BATCH, SEQ);
    ft_safetensors *expected = fixture_open(FIXTURES, arch, "expected.safetensors");
    ft_safetensors *grads = fixture_open(FIXTURES, arch, "lora_grads.safetensors");
    ft_adamw *gpu_optimizer = NULL, *cpu_optimizer = NULL;
    if (!cuda || !reference_model || !expected || !grads)
        goto done;
    size_t vocab = (size_t)ft_model_get_config(cuda)->vocab_size, n_logits = BATCH * SEQ * vocab;
    float *logits = ft_xmalloc(n_logits * sizeof(float)), *cpu_logits = ft_xmalloc(n_logits * sizeof(float));
    float *peft_logits = reference(expected, "lora_logits", n_logits), *peft_loss = reference(expected, "lora_loss", 1);
    double loss, cpu_loss;
    CHECK_INT(ft_model_forward(cuda, &fb.batch, logits, &loss), 0);
    CHECK_INT(ft_model_forward(reference_model, &fb.batch, cpu_logits, &cpu_loss), 0);
    char what[96];
    snprintf(what, sizeof what, "%s LoRA logits vs cpu", arch);
    CHECK_CLOSE(what, logits, cpu_logits, n_logits, LOGITS_TOLERANCE);
    if (peft_logits)
        CHECK_CLOSE("  ... vs transformers + peft", logits, peft_logits, n_logits, LOGITS_TOLERANCE);
    snprintf(what, sizeof what, "%s LoRA loss vs cpu", arch);
    gpu_check_loss(what, loss, cpu_loss);
    if (peft_loss)
        gpu_check_loss("  ... vs transformers + peft", loss, peft_loss[0]);

    CHECK_INT(ft_model_forward_backward(cuda, &fb.batch, &loss), 0);
    CHECK_INT(ft_model_forward_backward(reference_model, &fb.batch, &cpu_loss), 0);
    check_gradients(arch, "LoRA", cuda, reference_model, grads);

    size_t count;
    const ft_param_tensor *trainable = ft_model_trainable(cuda, &count);
    const ft_param_tensor *cpu_trainable = ft_model_trainable(reference_model, &count);
    ft_adamw_config adamw = {0.9, 0.999, 1e-8, 0.01};
    CHECK_INT(ft_adamw_create(gpu, trainable, count, &adamw, &gpu_optimizer), 0);
    CHECK_INT(ft_adamw_create(cpu, cpu_trainable, count, &adamw, &cpu_optimizer), 0);
    /* (the weights themselves are not compared: Adam's first step moves each by
     * about lr times the sign of its gradient, so a near-zero gradient that bf16
     * rounding flips moves its weight the other way; the loss tells) */
    ft_adamw_step(gpu_optimizer, 1e-3);
    ft_adamw_step(cpu_optimizer, 1e-3);
    ft_model_zero_grads(cuda);
    ft_model_zero_grads(reference_model);
    float *peft_after = reference(expected, "lora_loss_after_step1", 1);
    CHECK_INT(ft_model_forward_backward(cuda, &fb.batch, &loss), 0);
    CHECK_INT(ft_model_forward_backward(reference_model, &fb.batch, &cpu_loss), 0);
    snprintf(what, sizeof what, "%s loss after 1 step vs cpu", arch);
    gpu_check_loss(what, loss, cpu_loss);
    if (peft_after)
        gpu_check_loss("  ... vs transformers + peft", loss, peft_after[0]);
    CHECK_NO_GPU_FAILURE();
    free(peft_after);
    free(peft_logits);
    free(peft_loss);
    free(logits);
    free(cpu_logits);
done:
    ft_adamw_free(gpu_optimizer);
    ft_adamw_free(cpu_optimizer);
    ft_safetensors_close(grads);
    ft_safetensors_close(expected);
    ft_model_free(cuda);
    ft_model_free(reference_model);
}

TEST(qwen2_lora_matches_cpu_and_peft) { check_lora("qwen2"); }
TEST(qwen3_lora_matches_cpu_and_peft) { check_lora("qwen3"); }
TEST(llama3_lora_matches_cpu_and_peft) { check_lora("llama3"); }

/* Each step runs the whole prefix on both backends (the same tokens: the cpu
 * backend's choice, so that a near tie cannot send them apart) and compares the
 * last position's logits. */
static void check_generation(const char *arch)
{
    enum { PROMPT = 5, STEPS = 8 };
    fixture_batch fb;
    load_batch(arch, &fb);
    ft_model *cuda = load_model(arch, gpu, FT_FINETUNE_NONE, NULL, BATCH, SEQ);
    ft_model *reference_model = load_model(arch, cpu, FT_FINETUNE_NONE, NULL, BATCH, SEQ);
    if (!cuda || !reference_model)
        goto done;
    int vocab = ft_model_get_config(cuda)->vocab_size, same_choice = 0;
    int32_t sequence[BATCH][SEQ], tokens[BATCH * SEQ], positions[BATCH * SEQ], segments[BATCH * SEQ] = {0};
    int32_t targets[BATCH * SEQ];
    for (int b = 0; b < BATCH; b++)
        memcpy(sequence[b], fb.tokens + b * SEQ, PROMPT * sizeof(int32_t));
    float *logits = ft_xmalloc((size_t)BATCH * SEQ * vocab * sizeof(float));
    float *cpu_logits = ft_xmalloc((size_t)BATCH * SEQ * vocab * sizeof(float));
    double worst = 0.0;
    for (int length = PROMPT; length < PROMPT + STEPS; length++) {
        for (int b = 0; b < BATCH; b++)
            for (int t = 0; t < length; t++) {
                tokens[b * length + t] = sequence[b][t];
                positions[b * length + t] = t;
                targets[b * length + t] = -100;
            }
        ft_batch batch = {BATCH, length, tokens, positions, segments, targets, 0, 0};
        double loss;
        CHECK_INT(ft_model_forward(cuda, &batch, logits, &loss), 0);
        CHECK_INT(ft_model_forward(reference_model, &batch, cpu_logits, &loss), 0);
        for (int b = 0; b < BATCH; b++) {
            const float *last = logits + ((size_t)b * length + length - 1) * vocab;
            const float *cpu_last = cpu_logits + ((size_t)b * length + length - 1) * vocab;
            worst = fmax(worst, relative_error(last, cpu_last, vocab));
            int choice = 0, cuda_choice = 0;
            for (int v = 1; v < vocab; v++) {
                choice = cpu_last[v] > cpu_last[choice] ? v : choice;
                cuda_choice = last[v] > last[cuda_choice] ? v : cuda_choice;
            }
            sequence[b][length] = choice;
            same_choice += choice == cuda_choice;
        }
    }
    printf("# %s greedy generation, %d steps x %d rows: worst step logits relative error %.2e, same token %d of %d\n",
           arch, STEPS, BATCH, worst, same_choice, STEPS * BATCH);
    CHECK(worst < LOGITS_TOLERANCE);
    CHECK_NO_GPU_FAILURE();
    free(logits);
    free(cpu_logits);
done:
    ft_model_free(cuda);
    ft_model_free(reference_model);
}

TEST(greedy_generation_logits_match_cpu_at_every_step)
{
    check_generation("qwen2");
    check_generation("qwen3");
    check_generation("llama3");
}

TEST(lora_training_lowers_the_loss_on_the_gpu)
{
    char *adapter = ft_xasprintf(FIXTURES "/qwen2/adapter");
    ft_lora_config lora = {0};
    CHECK_INT(ft_lora_config_load(adapter, &lora), 0);
    free(adapter);
    fixture_batch fb;
    load_batch("qwen2", &fb);
    ft_model *model = load_model("qwen2", gpu, FT_FINETUNE_LORA, &lora, BATCH, SEQ);
    if (!model)
        return;
    size_t count;
    const ft_param_tensor *trainable = ft_model_trainable(model, &count);
    ft_adamw_config adamw = {0.9, 0.999, 1e-8, 0.0};
    ft_adamw *optimizer = NULL;
    CHECK_INT(ft_adamw_create(gpu, trainable, count, &adamw, &optimizer), 0);
    double first = 0.0, loss = 0.0;
    for (int step = 0; step < 20; step++) {
        ft_model_zero_grads(model);
        CHECK_INT(ft_model_forward_backward(model, &fb.batch, &loss), 0);
        if (step == 0)
            first = loss;
        ft_adamw_clip_grad_norm(optimizer, 1.0);
        ft_adamw_step(optimizer, 1e-2);
    }
    printf("# qwen2 LoRA on the GPU: loss %.4f -> %.4f in 20 steps\n", first, loss);
    CHECK(loss < first - 0.1);
    ft_memory_plan plan = ft_model_memory(model);
    CHECK_INT(plan.parameter_bytes, 93504 * 2); /* bf16 weights */
    CHECK(gpu->peak_bytes(gpu) >= plan.total_bytes);
    ft_adamw_free(optimizer);
    ft_model_free(model);
}

/* Full fine-tuning in mixed precision: the first pass's gradient of every
 * weight (float, from bf16 weights) against the cpu backend's and transformers';
 * then FULL_STEPS steps of AdamW on the float master weights, the bf16 weights
 * made from them after each, on the batch: the losses step by step against the
 * cpu backend's (fp32 throughout) within FULL_LOSS_TOLERANCE of the first
 * step's loss, falling; and offload_optimizer's path (master weights and
 * moments in host memory, AdamW on the host's cores, the GPU's AdamW's bits)
 * against AdamW on the GPU. */
enum { FULL_STEPS = 20 };
#define FULL_LOSS_TOLERANCE 2e-2
#define OFFLOAD_LOSS_TOLERANCE 1e-3

/* losses[FULL_STEPS] of a full fine-tuning of qwen2 on backend; 0 when it ran. */
static int train_full(ft_backend *backend, bool offload, double *losses)
{
    fixture_batch fb;
    load_batch("qwen2", &fb);
    ft_model *model = load_model("qwen2", backend, FT_FINETUNE_FULL, NULL, BATCH, SEQ);
    if (!model)
        return -1;
    size_t count;
    const ft_param_tensor *trainable = ft_model_trainable(model, &count);
    ft_adamw_config adamw = {0.9, 0.999, 1e-8, 0.01};
    ft_adamw *optimizer = NULL;
    int status = offload ? ft_adamw_create_offloaded(backend, trainable, count, &adamw, false, &optimizer)
                         : ft_adamw_create(backend, trainable, count, &adamw, &optimizer);
    for (int step = 0; step < FULL_STEPS && status == 0; step++) {
        ft_model_zero_grads(model);
        if ((status = ft_model_forward_backward(model, &fb.batch, &losses[step])) < 0)
            break;
        ft_adamw_clip_grad_norm(optimizer, 1.0);
        ft_adamw_step(optimizer, 1e-3);
        ft_model_refresh_weights(model);
    }
    if (status < 0 || backend->check(backend) < 0) {
        fprintf(stderr, "  full fine-tuning on %s: %s\n", backend->name, ft_error_message());
        status = -1;
    }
    ft_adamw_free(optimizer);
    ft_model_free(model);
    return status;
}

static double worst_relative(const double *actual, const double *expected, int n)
{
    double worst = 0.0;
    for (int i = 0; i < n; i++)
        worst = fmax(worst, fabs(actual[i] - expected[i]) / fabs(expected[i]));
    return worst;
}

/* The largest step's difference over the first step's loss: the curves' gap on
 * the scale of the loss they start from (relative to each step's own loss, a
 * loss near 0 after memorising the batch turns bf16's rounding of its logits
 * into a large ratio). */
static double worst_of_first(const double *actual, const double *expected, int n)
{
    double worst = 0.0;
    for (int i = 0; i < n; i++)
        worst = fmax(worst, fabs(actual[i] - expected[i]) / fabs(expected[0]));
    return worst;
}

TEST(full_finetuning_matches_cpu_and_transformers)
{
    fixture_batch fb;
    load_batch("qwen2", &fb);
    ft_model *cuda = load_model("qwen2", gpu, FT_FINETUNE_FULL, NULL, BATCH, SEQ);
    ft_model *reference_model = load_model("qwen2", cpu, FT_FINETUNE_FULL, NULL, BATCH, SEQ);
    ft_safetensors *grads = fixture_open(FIXTURES, "qwen2", "full_grads.safetensors");
    if (cuda && reference_model && grads) {
        size_t n_params = 93504; /* the fixture's weights */
        ft_memory_plan plan = ft_model_memory(cuda);
        CHECK_INT(plan.parameter_bytes, n_params * 2); /* bf16 for the passes */
        CHECK_INT(plan.master_bytes, n_params * 4);    /* the float master copy */
        CHECK_INT(plan.gradient_bytes, n_params * 4);
        CHECK_INT(plan.optimizer_bytes, n_params * 8);
        CHECK_INT(ft_model_memory(reference_model).master_bytes, 0); /* float weights are their own master */
        double loss, cpu_loss;
        CHECK_INT(ft_model_forward_backward(cuda, &fb.batch, &loss), 0);
        CHECK_INT(ft_model_forward_backward(reference_model, &fb.batch, &cpu_loss), 0);
        gpu_check_loss("qwen2 full fine-tuning loss vs cpu", loss, cpu_loss);
        check_gradients("qwen2", "full fine-tuning", cuda, reference_model, grads);
        CHECK_NO_GPU_FAILURE();
    }
    ft_safetensors_close(grads);
    ft_model_free(cuda);
    ft_model_free(reference_model);

    double on_gpu[FULL_STEPS], on_cpu[FULL_STEPS], offloaded[FULL_STEPS];
    if (train_full(gpu, false, on_gpu) < 0 || train_full(cpu, false, on_cpu) < 0 ||
        train_full(gpu, true, offloaded) < 0) {
        check_case_failed = 1;
        return;
    }
    double versus_cpu = worst_of_first(on_gpu, on_cpu, FULL_STEPS);
    double versus_in_place = worst_relative(offloaded, on_gpu, FULL_STEPS);
    printf("# qwen2 full fine-tuning, %d steps: loss %.4f -> %.4f on the GPU, %.4f -> %.4f on the cpu backend; worst "
           "step's difference %.2e of the first loss (tolerance %.0e), %.2e of its own\n",
           FULL_STEPS, on_gpu[0], on_gpu[FULL_STEPS - 1], on_cpu[0], on_cpu[FULL_STEPS - 1], versus_cpu,
           FULL_LOSS_TOLERANCE, worst_relative(on_gpu, on_cpu, FULL_STEPS));
    printf("# ... offload_optimizer's AdamW on the host against AdamW on the GPU: worst step's relative difference "
           "%.2e (tolerance %.0e), last loss %.4f\n",
           versus_in_place, OFFLOAD_LOSS_TOLERANCE, offloaded[FULL_STEPS - 1]);
    CHECK(versus_cpu < FULL_LOSS_TOLERANCE);
    CHECK(versus_in_place < OFFLOAD_LOSS_TOLERANCE);
    CHECK(on_gpu[FULL_STEPS - 1] < on_gpu[0] - 0.1);
    CHECK(offloaded[FULL_STEPS - 1] < offloaded[0] - 0.1);
}

/* Values of the tensors (backend memory) as host floats, one array after another. */
static float *values_of(ft_backend *backend, const ft_param_tensor *tensors, size_t count, size_t *total)
{
    *total = 0;
    for (size_t i = 0; i < count; i++)
        *total += tensors[i].count;
    float *host = ft_xmalloc(*total * sizeof(float)), *at = host;
    for (size_t i = 0; i < count; i++) {
        backend->download(backend, at, tensors[i].value, tensors[i].count * sizeof(float));
        at += tensors[i].count;
    }
    return host;
}

/* One step on `from`, its checkpoint loaded into `to`: the same float values
 * there (the master copy on cuda), and the next pass's losses alike. */
static void check_checkpoint_crossing(ft_model *from, ft_adamw *from_optimizer, ft_model *to, ft_adamw *to_optimizer,
                                      const fixture_batch *fb, int64_t step)
{
    ft_backend *from_backend = ft_model_backend(from), *to_backend = ft_model_backend(to);
    char dir[] = "/tmp/ftpipe-full-checkpoint.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    double loss, other_loss;
    ft_model_zero_grads(from);
    CHECK_INT(ft_model_forward_backward(from, &fb->batch, &loss), 0);
    ft_adamw_step(from_optimizer, 1e-3);
    ft_model_refresh_weights(from);
    size_t count, total, other_total;
    const ft_param_tensor *from_tensors = ft_model_trainable(from, &count);
    const ft_param_tensor *to_tensors = ft_model_trainable(to, &count);
    ft_checkpoint_state state = {.global_step = step}, loaded;
    CHECK_INT(ft_checkpoint_save(dir, from_backend, from_tensors, count, from_optimizer, &state, 0), 0);
    CHECK_INT(ft_checkpoint_load_latest(dir, to_backend, to_tensors, count, to_optimizer, "", &loaded), 1);
    ft_model_refresh_weights(to);
    CHECK_INT(loaded.global_step, step);
    float *written = values_of(from_backend, from_tensors, count, &total);
    float *read = values_of(to_backend, to_tensors, count, &other_total);
    CHECK(total == other_total && memcmp(written, read, total * sizeof(float)) == 0);
    CHECK_INT(ft_model_forward(from, &fb->batch, NULL, &loss), 0);
    CHECK_INT(ft_model_forward(to, &fb->batch, NULL, &other_loss), 0);
    char what[96];
    snprintf(what, sizeof what, "loss after a %s checkpoint on %s", from_backend->name, to_backend->name);
    gpu_check_loss(what, other_loss, loss);
    free(written);
    free(read);
    ft_remove_tree(dir);
}

/* A checkpoint of full fine-tuning on cuda holds its float master weights and
 * AdamW's moments, the cpu backend's files: either backend resumes from the
 * other's with the same float values. */
TEST(full_finetuning_checkpoints_cross_backends)
{
    fixture_batch fb;
    load_batch("qwen2", &fb);
    ft_model *cuda = load_model("qwen2", gpu, FT_FINETUNE_FULL, NULL, BATCH, SEQ);
    ft_model *reference_model = load_model("qwen2", cpu, FT_FINETUNE_FULL, NULL, BATCH, SEQ);
    ft_adamw *gpu_optimizer = NULL, *cpu_optimizer = NULL;
    ft_adamw_config adamw = {0.9, 0.999, 1e-8, 0.01};
    size_t gpu_count = 0, cpu_count = 0; /* read only after ft_model_trainable has set them */
    const ft_param_tensor *gpu_tensors = cuda ? ft_model_trainable(cuda, &gpu_count) : NULL;
    const ft_param_tensor *cpu_tensors = reference_model ? ft_model_trainable(reference_model, &cpu_count) : NULL;
    if (cuda && reference_model && gpu_count == cpu_count &&
        ft_adamw_create(gpu, gpu_tensors, gpu_count, &adamw, &gpu_optimizer) == 0 &&
        ft_adamw_create(cpu, cpu_tensors, cpu_count, &adamw, &cpu_optimizer) == 0) {
        check_checkpoint_crossing(cuda, gpu_optimizer, reference_model, cpu_optimizer, &fb, 1);
        check_checkpoint_crossing(reference_model, cpu_optimizer, cuda, gpu_optimizer, &fb, 2);
        CHECK_NO_GPU_FAILURE();
    } else {
        check_case_failed = 1;
    }
    ft_adamw_free(gpu_optimizer);
    ft_adamw_free(cpu_optimizer);
    ft_model_free(cuda);
    ft_model_free(reference_model);
}

TEST(what_the_gpu_cannot_run_is_a_clear_error)
{
    ft_backend_limits limits = {.max_rows = 16, .max_seq_len = 16, .max_features = 64, .head_dim = 80,
                                .max_heads = 4};
    CHECK_INT(gpu->reserve(gpu, &limits), -1);
    CHECK_STR(ft_error_message(), "head_dim 80 is not supported by the cuda backend's attention (it runs 16, 32, 64 "
                                  "and 128): use backend = cpu");
    limits.head_dim = 64;
    limits.planned_bytes = (size_t)1 << 40;
    CHECK_INT(gpu->reserve(gpu, &limits), -1);
    printf("# %s\n", ft_error_message());
    CHECK(strncmp(ft_error_message(), "the plan does not fit GPU 0 (", 29) == 0);
    CHECK(strstr(ft_error_message(), "it needs 1.0 TiB (weights, adapter, gradients, optimizer and activations)"));
    CHECK(strstr(ft_error_message(), "reduce the batch size or the sequence length"));
    CHECK_NO_GPU_FAILURE();
}

int main(void)
{
    int started = start_backends();
    if (started < 0)
        return 1;
    GPU_RUN(qwen2_lora_matches_cpu_and_peft);
    GPU_RUN(qwen3_lora_matches_cpu_and_peft);
    GPU_RUN(llama3_lora_matches_cpu_and_peft);
    GPU_RUN(greedy_generation_logits_match_cpu_at_every_step);
    GPU_RUN(lora_training_lowers_the_loss_on_the_gpu);
    GPU_RUN(full_finetuning_matches_cpu_and_transformers);
    GPU_RUN(full_finetuning_checkpoints_cross_backends);
    GPU_RUN(what_the_gpu_cannot_run_is_a_clear_error);
    ft_backend_destroy(gpu);
    ft_backend_destroy(cpu);
    return check_done();
}
