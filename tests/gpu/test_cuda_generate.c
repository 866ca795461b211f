/* Greedy generation with the KV cache on the cuda backend against the cpu
 * backend's, on the tiny Qwen2 (also with its LoRA adapter), Qwen3 and Llama 3
 * fixtures, with prompts of different lengths in one batch: every step's
 * logits within a relative error of 2e-2 of the cpu backend's while both have
 * been fed the same tokens, and the same tokens chosen except at near ties of
 * the cpu backend's logits (where bf16 rounding may pick the other). */
#include "gpu_check.h"
#include "ftpipe/model/generate.h"
#include "ftpipe/model/lora.h"
#include "ftpipe/model/model.h"

#define FIXTURES "tests/fixtures/parity"
#define LOGITS_TOLERANCE 2e-2
#define NEAR_TIE 2e-2 /* of the largest logit's magnitude */

enum { BATCH = 4, NEW = 12, MAX_TOKENS = 24 };

static const int prompt_lengths[BATCH] = {3, 9, 1, 6};

typedef struct {
    float *logits; /* [NEW, BATCH, vocab] */
    int vocab, steps;
} recording;

static void record(void *user, int step, const float *logits, int n, int vocab)
{
    recording *r = user;
    if (step < NEW && n == BATCH) {
        memcpy(r->logits + (size_t)step * BATCH * vocab, logits, (size_t)n * vocab * sizeof(float));
        r->steps = step + 1;
    }
}

static ft_model *load_model(const char *arch, ft_backend *backend, bool adapter)
{
    char *dir = ft_xasprintf(FIXTURES "/%s/model", arch), *adapter_dir = ft_xasprintf(FIXTURES "/%s/adapter", arch);
    ft_model_options options = {BATCH, MAX_TOKENS, FT_FINETUNE_NONE, adapter, {0}, false, false, false, 0, 0, false};
    if (adapter && ft_lora_config_load(adapter_dir, &options.lora) < 0)
        check_case_failed = 1;
    ft_model *model = NULL;
    if (ft_model_load(dir, backend, &options, &model) < 0 ||
        (adapter && ft_lora_load(ft_model_lora(model), adapter_dir) < 0)) {
        fprintf(stderr, "  %s (%s backend)\n", ft_error_message(), backend->name);
        check_case_failed = 1;
        ft_model_free(model);
        model = NULL;
    }
    free(dir);
    free(adapter_dir);
    return model;
}

/* Generates on one backend, recording every step's logits. */
static int run(ft_model *model, int32_t *const *prompts, recording *r, int32_t *output, int *output_lengths)
{
    ft_generator *generator = NULL;
    if (ft_generator_create(model, BATCH, MAX_TOKENS, &generator) < 0)
        return -1;
    ft_generate_options options = {.max_new_tokens = NEW, .temperature = 0.0, .top_p = 1.0, .on_logits = record,
                                   .user = r};
    int status = ft_generate(generator, (const int32_t *const *)prompts, prompt_lengths, BATCH, &options, output,
                             output_lengths);
    ft_generator_free(generator);
    return status;
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        best = x[i] > x[best] ? i : best;
    return best;
}

static void check_generation(const char *arch, bool adapter)
{
    ft_model *cuda = load_model(arch, gpu, adapter), *reference_model = load_model(arch, cpu, adapter);
    if (!cuda || !reference_model)
        goto done;
    int vocab = ft_model_get_config(cuda)->vocab_size;
    int32_t *prompts[BATCH], gpu_out[BATCH * NEW], cpu_out[BATCH * NEW];
    int gpu_lengths[BATCH], cpu_lengths[BATCH];
    for (int b = 0; b < BATCH; b++) {
        prompts[b] = ft_xmalloc(prompt_lengths[b] * sizeof(int32_t));
        for (int t = 0; t < prompt_lengths[b]; t++)
            prompts[b][t] = (int32_t)(ft_random_u64(90 + b, t) % (uint64_t)vocab);
    }
    recording on_gpu = {ft_xcalloc((size_t)NEW * BATCH * vocab, sizeof(float)), vocab, 0};
    recording on_cpu = {ft_xcalloc((size_t)NEW * BATCH * vocab, sizeof(float)), vocab, 0};
    CHECK_INT(run(cuda, prompts, &on_gpu, gpu_out, gpu_lengths), 0);
    CHECK_INT(run(reference_model, prompts, &on_cpu, cpu_out, cpu_lengths), 0);
    CHECK_INT(on_gpu.steps, NEW);
    CHECK_INT(on_cpu.steps, NEW);
    CHECK_NO_GPU_FAILURE();
    double worst = 0.0;
    int compared = 0, same = 0, ties = 0;
    for (int b = 0; b < BATCH; b++) {
        CHECK_INT(gpu_lengths[b], NEW);
        CHECK_INT(cpu_lengths[b], NEW);
        for (int s = 0; s < NEW; s++) { /* while the tokens fed so far are the same */
            const float *got = on_gpu.logits + ((size_t)s * BATCH + b) * vocab;
            const float *expected = on_cpu.logits + ((size_t)s * BATCH + b) * vocab;
            worst = fmax(worst, relative_error(got, expected, vocab));
            compared++;
            int cpu_choice = cpu_out[b * NEW + s], gpu_choice = gpu_out[b * NEW + s];
            CHECK_INT(cpu_choice, argmax(expected, vocab));
            CHECK_INT(gpu_choice, argmax(got, vocab));
            if (cpu_choice == gpu_choice) {
                same++;
                continue;
            }
            double scale = fmax(fabs(expected[cpu_choice]), 1e-30);
            double gap = (expected[cpu_choice] - expected[gpu_choice]) / scale;
            if (gap > NEAR_TIE) {
                fprintf(stderr, "  %s row %d step %d: token %d on cuda, %d on cpu, whose logits differ by %.3g\n", arch,
                        b, s, gpu_choice, cpu_choice, gap);
                check_case_failed = 1;
            }
            ties++;
            break; /* the sequences part here: later steps see different tokens */
        }
    }
    printf("# %s%s greedy generation, %d new tokens x %d prompts (lengths 3, 9, 1, 6): worst step logits relative "
           "error %.2e over %d steps, same token %d of %d, near ties %d\n",
           arch, adapter ? " + adapter" : "", NEW, BATCH, worst, compared, same, compared, ties);
    CHECK(worst < LOGITS_TOLERANCE);
    CHECK(compared >= BATCH * NEW / 2);
    for (int b = 0; b < BATCH; b++)
        free(prompts[b]);
    free(on_gpu.logits);
    free(on_cpu.logits);
done:
    ft_model_free(cuda);
    ft_model_free(reference_model);
}

TEST(qwen2_generation_matches_cpu) { check_generation("qwen2", false); }
TEST(qwen2_with_adapter_generation_matches_cpu) { check_generation("qwen2", true); }
TEST(qwen3_generation_matches_cpu) { check_generation("qwen3", false); }
TEST(llama3_generation_matches_cpu) { check_generation("llama3", false); }

int main(void)
{
    int started = start_backends();
    if (started < 0)
        return 1;
    GPU_RUN(qwen2_generation_matches_cpu);
    GPU_RUN(qwen2_with_adapter_generation_matches_cpu);
    GPU_RUN(qwen3_generation_matches_cpu);
    GPU_RUN(llama3_generation_matches_cpu);
    ft_backend_destroy(gpu);
    ft_backend_destroy(cpu);
    return check_done();
}
