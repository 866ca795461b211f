/* Generation with a KV cache on the cpu backend, on tiny random Qwen2 (qkv
 * bias), Qwen3 (q/k norm) and Llama 3 models: every step's logits are the full
 * forward pass's at the last position of the sequence so far (also with a
 * LoRA adapter); a batch of prompts of different lengths gives each prompt's
 * tokens alone; greedy and seeded sampling repeat; stop tokens end a sequence;
 * bad calls fail with a message. On the Qwen2-VL parity fixture, prompts with
 * images of different sizes batched together: every step's logits are the
 * full forward pass's (M-RoPE's positions go on after the images). */
#include <math.h>

#include "check.h"
#include "tiny_models.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"
#include "ftpipe/model/generate.h"
#include "ftpipe/model/model.h"
#include "ftpipe/model/model_init.h"
#include "vl_fixture.h"

enum { BATCH = 4, MAX_TOKENS = 16, NEW = 6 };

static const int prompt_lengths[BATCH] = {3, 9, 1, 6};
static int32_t prompt_ids[BATCH][MAX_TOKENS];
static const int32_t *prompts[BATCH] = {prompt_ids[0], prompt_ids[1], prompt_ids[2], prompt_ids[3]};

static ft_backend *cpu;
static char root[] = "/tmp/ftpipe-generate.XXXXXX";
static char *qwen2_dir, *qwen3_dir, *llama_dir;

/* For inference, or with a LoRA adapter whose B is not zero (so that it counts). */
static ft_model *load(const char *dir, bool adapter)
{
    ft_model_options options = {BATCH, MAX_TOKENS, FT_FINETUNE_NONE, adapter,
                                {4, 8.0, 0.0, false, FT_LORA_ALL_TARGETS, 5}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    if (ft_model_load(dir, cpu, &options, &model) < 0)
        fprintf(stderr, "  %s\n", ft_error_message());
    CHECK(model != NULL);
    if (model && adapter) {
        size_t count;
        const ft_param_tensor *tensors = ft_lora_tensors(ft_model_lora(model), &count);
        for (size_t i = 1; i < count; i += 2) /* A, B, A, B, ... */
            for (size_t k = 0; k < tensors[i].count; k++)
                tensors[i].value[k] = 0.05f * (float)(k % 7) - 0.15f;
    }
    return model;
}

typedef struct {
    float *logits; /* [NEW, n, vocab] */
    int n, vocab, steps;
} recording;

static void record(void *user, int step, const float *logits, int n, int vocab)
{
    recording *r = user;
    CHECK(step == r->steps && step < NEW && n == r->n && vocab == r->vocab);
    if (step < NEW && n == r->n) {
        memcpy(r->logits + (size_t)step * n * vocab, logits, (size_t)n * vocab * sizeof(float));
        r->steps = step + 1;
    }
}

typedef struct {
    int32_t tokens[BATCH * NEW];
    int lengths[BATCH];
} generated;

/* Generates for the first n prompts from `first`; 0 or -1. */
static int generate(ft_model *model, int first, int n, const ft_generate_options *options, generated *out)
{
    ft_generator *generator = NULL;
    if (ft_generator_create(model, BATCH, MAX_TOKENS, &generator) < 0)
        return -1;
    int status = ft_generate(generator, prompts + first, prompt_lengths + first, n, options, out->tokens,
                             out->lengths);
    if (status < 0)
        fprintf(stderr, "  %s\n", ft_error_message());
    ft_generator_free(generator);
    return status;
}

static ft_generate_options greedy(void)
{
    return (ft_generate_options){.max_new_tokens = NEW, .temperature = 0.0, .top_p = 1.0};
}

static double relative_error(const float *actual, const float *expected, int n)
{
    double difference = 0.0, scale = 0.0;
    for (int i = 0; i < n; i++) {
        difference = fmax(difference, fabs((double)actual[i] - expected[i]));
        scale = fmax(scale, fabs((double)expected[i]));
    }
    return difference / scale;
}

/* The logits of the full forward pass over tokens, at its last position. */
static void forward_last(ft_model *model, const int32_t *tokens, int length, float *out)
{
    int vocab = ft_model_get_config(model)->vocab_size;
    int32_t positions[MAX_TOKENS], segments[MAX_TOKENS] = {0}, targets[MAX_TOKENS];
    for (int t = 0; t < length; t++) {
        positions[t] = t;
        targets[t] = -100;
    }
    float *logits = ft_xmalloc((size_t)length * vocab * sizeof(float));
    ft_batch batch = {1, length, tokens, positions, segments, targets, 0, 0};
    CHECK_INT(ft_model_forward(model, &batch, logits, NULL), 0);
    memcpy(out, logits + (size_t)(length - 1) * vocab, (size_t)vocab * sizeof(float));
    free(logits);
}

/* (a), (e): every step's logits against the full forward pass over the sequence so far. */
static void check_steps_match_forward(const char *dir, bool adapter)
{
    ft_model *model = load(dir, adapter);
    if (!model)
        return;
    int vocab = ft_model_get_config(model)->vocab_size;
    recording r = {ft_xcalloc((size_t)NEW * BATCH * vocab, sizeof(float)), BATCH, vocab, 0};
    ft_generate_options options = greedy();
    options.on_logits = record;
    options.user = &r;
    generated out;
    CHECK_INT(generate(model, 0, BATCH, &options, &out), 0);
    CHECK_INT(r.steps, NEW);
    float *expected = ft_xmalloc((size_t)vocab * sizeof(float));
    double worst = 0.0;
    for (int b = 0; b < BATCH; b++) {
        CHECK_INT(out.lengths[b], NEW);
        int32_t sequence[MAX_TOKENS];
        memcpy(sequence, prompts[b], (size_t)prompt_lengths[b] * sizeof(int32_t));
        for (int s = 0; s < NEW; s++) {
            forward_last(model, sequence, prompt_lengths[b] + s, expected);
            const float *got = r.logits + ((size_t)s * BATCH + b) * vocab;
            worst = fmax(worst, relative_error(got, expected, vocab));
            sequence[prompt_lengths[b] + s] = out.tokens[b * NEW + s];
        }
    }
    printf("# %s%s: worst step logits relative error %.2e\n", dir + sizeof root, adapter ? " + adapter" : "", worst);
    CHECK(worst < 1e-5);
    free(expected);
    free(r.logits);
    ft_model_free(model);
}

TEST(qwen2_steps_match_the_full_forward) { check_steps_match_forward(qwen2_dir, false); }
TEST(qwen3_steps_match_the_full_forward) { check_steps_match_forward(qwen3_dir, false); }
TEST(llama_steps_match_the_full_forward) { check_steps_match_forward(llama_dir, false); }
TEST(qwen2_with_an_adapter_steps_match_the_full_forward) { check_steps_match_forward(qwen2_dir, true); }

/* (b) */
TEST(a_batch_gives_each_prompt_its_tokens_alone)
{
    ft_model *model = load(qwen3_dir, false);
    if (!model)
        return;
    ft_generate_options options = greedy();
    generated together, alone;
    CHECK_INT(generate(model, 0, BATCH, &options, &together), 0);
    for (int b = 0; b < BATCH; b++) {
        CHECK_INT(generate(model, b, 1, &options, &alone), 0);
        CHECK_INT(alone.lengths[0], together.lengths[b]);
        CHECK(memcmp(alone.tokens, together.tokens + b * NEW, NEW * sizeof(int32_t)) == 0);
    }
    ft_model_free(model);
}

/* (c) */
static void ignore_logits(void *user, int step, const float *logits, int n, int vocab)
{
    (void)user, (void)step, (void)logits, (void)n, (void)vocab;
}

TEST(greedy_repeats_sampling_repeats_by_seed_and_tiny_top_p_is_greedy)
{
    ft_model *model = load(qwen2_dir, false);
    if (!model)
        return;
    ft_generate_options options = greedy();
    generated first, second;
    CHECK_INT(generate(model, 0, BATCH, &options, &first), 0);
    CHECK_INT(generate(model, 0, BATCH, &options, &second), 0);
    CHECK(memcmp(first.tokens, second.tokens, sizeof first.tokens) == 0);
    /* asking for the logits moves the greedy choice to the host: the same tokens */
    options.on_logits = ignore_logits;
    CHECK_INT(generate(model, 0, BATCH, &options, &second), 0);
    CHECK(memcmp(first.tokens, second.tokens, sizeof first.tokens) == 0);
    options.on_logits = NULL;

    generated greedy_out = first, sampled, again, other_seed;
    options.temperature = 1.0;
    options.top_p = 1e-9;
    CHECK_INT(generate(model, 0, BATCH, &options, &sampled), 0);
    CHECK(memcmp(sampled.tokens, greedy_out.tokens, sizeof sampled.tokens) == 0);

    options.top_p = 0.9;
    options.seed = 7;
    CHECK_INT(generate(model, 0, BATCH, &options, &sampled), 0);
    CHECK_INT(generate(model, 0, BATCH, &options, &again), 0);
    CHECK(memcmp(sampled.tokens, again.tokens, sizeof sampled.tokens) == 0);
    options.seed = 8;
    CHECK_INT(generate(model, 0, BATCH, &options, &other_seed), 0);
    CHECK(memcmp(sampled.tokens, other_seed.tokens, sizeof sampled.tokens) != 0);
    /* the tiny random model's distribution is nearly flat: sampling leaves greedy's path */
    CHECK(memcmp(sampled.tokens, greedy_out.tokens, sizeof sampled.tokens) != 0);
    ft_model_free(model);
}

/* (d) */
TEST(stop_tokens_end_a_sequence_and_are_left_out)
{
    ft_model *model = load(llama_dir, false);
    if (!model)
        return;
    ft_generate_options options = greedy();
    generated free_run, stopped;
    CHECK_INT(generate(model, 0, BATCH, &options, &free_run), 0);
    int32_t stops[2] = {free_run.tokens[1 * NEW + 2], free_run.tokens[3 * NEW + 4]};
    options.stop_tokens = stops;
    options.n_stop_tokens = 2;
    CHECK_INT(generate(model, 0, BATCH, &options, &stopped), 0);
    for (int b = 0; b < BATCH; b++) {
        int expected = NEW;
        for (int s = NEW - 1; s >= 0; s--)
            if (free_run.tokens[b * NEW + s] == stops[0] || free_run.tokens[b * NEW + s] == stops[1])
                expected = s;
        CHECK_INT(stopped.lengths[b], expected);
        CHECK(memcmp(stopped.tokens + b * NEW, free_run.tokens + b * NEW, (size_t)expected * sizeof(int32_t)) == 0);
    }
    CHECK(stopped.lengths[1] <= 2 && stopped.lengths[3] <= 4);
    ft_model_free(model);
}

/* (f) */
TEST(bad_calls_fail_with_a_message)
{
    ft_model *model = load(qwen2_dir, false);
    if (!model)
        return;
    ft_generator *generator = NULL;
    CHECK_INT(ft_generator_create(model, BATCH + 1, MAX_TOKENS, &generator), -1);
    CHECK(strstr(ft_error_message(), "max_batch_size >= 5") != NULL);
    CHECK_INT(ft_generator_create(model, BATCH, MAX_TOKENS + 1, &generator), -1);
    CHECK(strstr(ft_error_message(), "max_seq_len >= 17") != NULL);
    CHECK_INT(ft_generator_create(model, 2, MAX_TOKENS, &generator), 0);
    ft_generate_options options = greedy();
    int32_t output[3 * NEW];
    int lengths[3];
    CHECK_INT(ft_generate(generator, prompts, prompt_lengths, 3, &options, output, lengths), -1);
    CHECK(strstr(ft_error_message(), "3 prompts") != NULL);
    CHECK_INT(ft_generate(generator, prompts + 1, prompt_lengths + 1, 1, &options, output, lengths), 0);
    options.max_new_tokens = MAX_TOKENS - prompt_lengths[1] + 1;
    CHECK_INT(ft_generate(generator, prompts + 1, prompt_lengths + 1, 1, &options, output, lengths), -1);
    CHECK(strstr(ft_error_message(), "prompt 0 has 9 tokens") != NULL);
    options.max_new_tokens = NEW;
    int empty[2] = {2, 0};
    CHECK_INT(ft_generate(generator, prompts, empty, 2, &options, output, lengths), -1);
    CHECK(strstr(ft_error_message(), "prompt 1 is empty") != NULL);
    int32_t outside[1] = {100000};
    const int32_t *bad[1] = {outside};
    int one[1] = {1};
    CHECK_INT(ft_generate(generator, bad, one, 1, &options, output, lengths), -1);
    CHECK(strstr(ft_error_message(), "outside the vocabulary") != NULL);
    /* top_p is checked when sampling only: greedy options may leave it 0 */
    ft_generate_options sampling = options;
    sampling.temperature = 1.0;
    sampling.top_p = 0.0;
    CHECK_INT(ft_generate(generator, prompts + 1, prompt_lengths + 1, 1, &sampling, output, lengths), -1);
    CHECK(strstr(ft_error_message(), "top_p in (0, 1]") != NULL);
    ft_generate_options greedy = options;
    greedy.top_p = 0.0;
    CHECK_INT(ft_generate(generator, prompts + 1, prompt_lengths + 1, 1, &greedy, output, lengths), 0);
    ft_generator_free(generator);
    ft_model_free(model);
}

/* The logits of the full forward pass over a VL sequence with its images, at its last position. */
static void vl_forward_last(ft_model *model, const int32_t *tokens, int length, const ft_stored_image *images,
                            int n_images, float *out)
{
    int vocab = ft_model_get_config(model)->vocab_size;
    int32_t positions[VL_MAX_SEQ], segments[VL_MAX_SEQ] = {0}, targets[VL_MAX_SEQ];
    for (int t = 0; t < length; t++) {
        positions[t] = t;
        targets[t] = -100;
    }
    float *logits = ft_xmalloc((size_t)length * vocab * sizeof(float));
    ft_batch batch = {1, length, tokens, positions, segments, targets, 0, 0};
    CHECK_INT(ft_model_set_images(model, images, n_images), 0);
    CHECK_INT(ft_model_forward(model, &batch, logits, NULL), 0);
    memcpy(out, logits + (size_t)(length - 1) * vocab, (size_t)vocab * sizeof(float));
    free(logits);
}

TEST(vision_language_steps_match_the_full_forward)
{
    enum { VL_NEW = 4 };
    ft_model_options options = {2, VL_MAX_SEQ, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    vl_fixture f;
    CHECK_INT(ft_model_load(VL_FIXTURES "/model", cpu, &options, &model), 0);
    if (!model || !vl_fixture_open(&f)) {
        ft_model_free(model);
        vl_fixture_close(&f);
        return;
    }
    int vocab = ft_model_get_config(model)->vocab_size;
    /* the whole row (two images), and its first 14 tokens (the first image and one token after) */
    const int32_t *vl_prompts[2] = {f.tokens, f.tokens};
    int lengths[2] = {VL_SEQ, 14};
    ft_stored_image images[3] = {f.images[0], f.images[1], f.images[0]};
    recording r = {ft_xcalloc((size_t)VL_NEW * 2 * vocab, sizeof(float)), 2, vocab, 0};
    ft_generate_options generate_options = {.max_new_tokens = VL_NEW, .on_logits = record, .user = &r};
    int32_t tokens[2 * VL_NEW];
    int out_lengths[2];
    ft_generator *generator = NULL;
    CHECK_INT(ft_generator_create(model, 2, VL_SEQ + VL_NEW, &generator), 0);
    CHECK_INT(ft_model_set_images(model, images, 3), 0);
    CHECK_INT(ft_generate(generator, vl_prompts, lengths, 2, &generate_options, tokens, out_lengths), 0);
    CHECK_INT(r.steps, VL_NEW);
    float *expected = ft_xmalloc((size_t)vocab * sizeof(float));
    double worst = 0.0;
    for (int b = 0; b < 2; b++) {
        CHECK_INT(out_lengths[b], VL_NEW);
        int32_t sequence[VL_MAX_SEQ];
        memcpy(sequence, f.tokens, (size_t)lengths[b] * sizeof(int32_t));
        for (int s = 0; s < VL_NEW; s++) {
            vl_forward_last(model, sequence, lengths[b] + s, b == 0 ? images : images + 2, b == 0 ? 2 : 1, expected);
            worst = fmax(worst, relative_error(r.logits + ((size_t)s * 2 + b) * vocab, expected, vocab));
            sequence[lengths[b] + s] = tokens[b * VL_NEW + s];
        }
    }
    printf("# qwen2_vl with images: worst step logits relative error %.2e\n", worst);
    CHECK(worst < 1e-5);
    free(expected);
    free(r.logits);
    ft_generator_free(generator);
    ft_model_free(model);
    vl_fixture_close(&f);
}

int main(void)
{
    cpu = ft_backend_cpu_create(1);
    if (!mkdtemp(root))
        return 1;
    for (int b = 0; b < BATCH; b++)
        for (int t = 0; t < prompt_lengths[b]; t++)
            prompt_ids[b][t] = (int32_t)(ft_random_u64(60 + b, t) % FT_BUILTIN_TOKENIZER_VOCAB);
    qwen2_dir = tiny_model_write(root, "qwen2", FT_ARCH_QWEN2, 2, 17);
    qwen3_dir = tiny_model_write(root, "qwen3", FT_ARCH_QWEN3, 2, 17);
    llama_dir = tiny_model_write(root, "llama", FT_ARCH_LLAMA, 2, 17);
    RUN(qwen2_steps_match_the_full_forward);
    RUN(qwen3_steps_match_the_full_forward);
    RUN(llama_steps_match_the_full_forward);
    RUN(qwen2_with_an_adapter_steps_match_the_full_forward);
    RUN(a_batch_gives_each_prompt_its_tokens_alone);
    RUN(greedy_repeats_sampling_repeats_by_seed_and_tiny_top_p_is_greedy);
    RUN(stop_tokens_end_a_sequence_and_are_left_out);
    RUN(bad_calls_fail_with_a_message);
    RUN(vision_language_steps_match_the_full_forward);
    free(qwen2_dir);
    free(qwen3_dir);
    free(llama_dir);
    ft_remove_tree(root);
    ft_backend_destroy(cpu);
    return check_done();
}
