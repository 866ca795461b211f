/* Evaluation over a data set in batches of similar lengths: the order by
 * length, answers put back in the set's order, and the loss, which must not
 * depend on how samples were batched. Uses the qwen2 parity fixture; with
 * images, the Qwen2-VL one: each batch hands the model its samples' images. */
#include <math.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"
#include "ftpipe/eval/evaluation.h"
#include "../model/vl_fixture.h"

#define MODEL "tests/fixtures/parity/qwen2/model"

enum { N_SAMPLES = 5, MAX_LEN = 24, NEW_TOKENS = 4, VOCAB = 300 };

static const size_t sample_lengths[N_SAMPLES] = {9, 24, 3, 17, 24};
static uint32_t ids[N_SAMPLES][MAX_LEN];
static uint8_t masks[N_SAMPLES][MAX_LEN];
static ft_encoded_sample samples[N_SAMPLES];

/* Samples whose last third is the answer; sample 2 has none. */
static void make_samples(void)
{
    for (size_t s = 0; s < N_SAMPLES; s++) {
        for (size_t t = 0; t < sample_lengths[s]; t++) {
            ids[s][t] = (uint32_t)(ft_random_u64(11, s * MAX_LEN + t) % VOCAB);
            masks[s][t] = s != 2 && t >= sample_lengths[s] * 2 / 3;
        }
        samples[s] = (ft_encoded_sample){ids[s], masks[s], sample_lengths[s], sample_lengths[s]};
    }
}

static ft_model *load(ft_backend *backend, int max_batch)
{
    ft_model_options options = {max_batch, MAX_LEN + NEW_TOKENS, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    if (ft_model_load(MODEL, backend, &options, &model) < 0)
        fprintf(stderr, "  %s\n", ft_error_message());
    CHECK(model != NULL);
    return model;
}

TEST(order_is_longest_first_and_stable)
{
    size_t lengths[] = {3, 7, 3, 9, 7, 0}, order[6];
    ft_order_by_length(lengths, 6, order);
    size_t expected[] = {3, 1, 4, 0, 2, 5};
    for (int i = 0; i < 6; i++)
        CHECK_INT(order[i], expected[i]);
    ft_order_by_length(lengths, 0, order);
}

/* The loss of one sample alone, times its trained tokens. */
static double sample_loss_sum(ft_model *model, const ft_encoded_sample *sample, int64_t *n_targets)
{
    int32_t tokens[MAX_LEN], positions[MAX_LEN], segments[MAX_LEN], targets[MAX_LEN];
    int n = (int)sample->n_tokens;
    *n_targets = 0;
    for (int t = 0; t < n; t++) {
        tokens[t] = (int32_t)sample->ids[t];
        positions[t] = t;
        segments[t] = 0;
        targets[t] = t + 1 < n && sample->loss_mask[t + 1] ? (int32_t)sample->ids[t + 1] : -1;
        *n_targets += targets[t] >= 0;
    }
    ft_batch batch = {1, n, tokens, positions, segments, targets, 0, 0};
    double loss = 0;
    CHECK_INT(ft_model_forward(model, &batch, NULL, &loss), 0);
    return loss * (double)*n_targets;
}

TEST(loss_does_not_depend_on_batching)
{
    ft_backend *cpu = ft_backend_cpu_create(1);
    ft_model *model = load(cpu, 2);
    if (!model) {
        ft_backend_destroy(cpu);
        return;
    }
    double sum = 0;
    int64_t total = 0;
    for (size_t s = 0; s < N_SAMPLES; s++) {
        int64_t n_targets;
        sum += sample_loss_sum(model, &samples[s], &n_targets);
        total += n_targets;
    }
    double loss = 0;
    uint64_t n_tokens = 0;
    CHECK_INT(ft_evaluate_loss(model, samples, NULL, N_SAMPLES, 2, NULL, NULL, &loss, &n_tokens), 0);
    CHECK_INT(n_tokens, total);
    CHECK(total == 3 + 8 + 6 + 8);
    CHECK(fabs(loss - sum / (double)total) < 1e-5 * loss);
    ft_model_free(model);
    ft_backend_destroy(cpu);
}

static int stop_after_first(size_t done, size_t total, void *context)
{
    (void)total;
    *(size_t *)context = done;
    return 1;
}

TEST(answers_come_back_in_the_sets_order)
{
    ft_backend *cpu = ft_backend_cpu_create(1);
    ft_model *model = load(cpu, 2);
    ft_generator *generator = NULL;
    if (!model || ft_generator_create(model, 2, MAX_LEN + NEW_TOKENS, &generator) != 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        CHECK(0);
        ft_model_free(model);
        ft_backend_destroy(cpu);
        return;
    }
    ft_token_span prompts[N_SAMPLES];
    for (size_t s = 0; s < N_SAMPLES; s++)
        prompts[s] = (ft_token_span){ids[s], sample_lengths[s]};
    ft_generate_options options = {.max_new_tokens = NEW_TOKENS};
    int32_t answers[N_SAMPLES * NEW_TOKENS];
    int lengths[N_SAMPLES];
    CHECK_INT(ft_evaluate_answers(generator, prompts, NULL, N_SAMPLES, 2, &options, NULL, NULL, answers, lengths), 0);
    for (size_t s = 0; s < N_SAMPLES; s++) {
        int32_t prompt[MAX_LEN], alone[NEW_TOKENS];
        for (size_t t = 0; t < sample_lengths[s]; t++)
            prompt[t] = (int32_t)ids[s][t];
        const int32_t *one[1] = {prompt};
        int prompt_length = (int)sample_lengths[s], alone_length = 0;
        CHECK_INT(ft_generate(generator, one, &prompt_length, 1, &options, alone, &alone_length), 0);
        CHECK_INT(lengths[s], alone_length);
        CHECK(memcmp(answers + s * NEW_TOKENS, alone, (size_t)alone_length * sizeof *alone) == 0);
    }
    size_t done = 0;
    CHECK_INT(ft_evaluate_answers(generator, prompts, NULL, N_SAMPLES, 2, &options, stop_after_first, &done, answers,
                                  lengths),
              -1);
    CHECK_INT(done, 2);
    CHECK_STR(ft_error_message(), "evaluation stopped after 2 of 5 samples");
    ft_generator_free(generator);
    ft_model_free(model);
    ft_backend_destroy(cpu);
}

/* The VL fixture's row (two images) and its first 14 tokens (the first image):
 * the loss over both in one batch is the token-weighted mean of each alone,
 * the row's alone is transformers', and each prompt's answer is the same
 * batched or alone. */
TEST(images_go_with_their_samples)
{
    vl_fixture f;
    ft_backend *cpu = ft_backend_cpu_create(1);
    ft_model_options options = {2, VL_MAX_SEQ, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    ft_safetensors *expected = vl_open("expected.safetensors");
    CHECK_INT(ft_model_load(VL_FIXTURES "/model", cpu, &options, &model), 0);
    if (model && expected && vl_fixture_open(&f)) {
        uint32_t row_ids[VL_SEQ];
        uint8_t row_mask[VL_SEQ];
        for (int t = 0; t < VL_SEQ; t++) {
            row_ids[t] = (uint32_t)f.tokens[t];
            row_mask[t] = t > 0 && f.targets[t - 1] >= 0;
        }
        uint8_t short_mask[14] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        ft_encoded_sample vl_samples[2] = {{row_ids, row_mask, VL_SEQ, VL_SEQ}, {row_ids, short_mask, 14, 14}};
        ft_sample_images images[2] = {{f.images, 2}, {f.images, 1}};
        double both = 0.0, alone[2] = {0.0, 0.0};
        uint64_t n_both = 0, n_alone[2] = {0, 0};
        CHECK_INT(ft_evaluate_loss(model, vl_samples, images, 2, 2, NULL, NULL, &both, &n_both), 0);
        for (int i = 0; i < 2; i++)
            CHECK_INT(ft_evaluate_loss(model, vl_samples + i, images + i, 1, 1, NULL, NULL, &alone[i], &n_alone[i]),
                      0);
        CHECK_INT(n_both, n_alone[0] + n_alone[1]);
        double mean = (alone[0] * (double)n_alone[0] + alone[1] * (double)n_alone[1]) / (double)n_both;
        CHECK(fabs(both - mean) < 1e-5 * mean);
        float row_loss = (float)alone[0];
        CHECK(vl_relative_error(expected, "loss", &row_loss, 1) < VL_TOLERANCE);

        ft_generator *generator = NULL;
        CHECK_INT(ft_generator_create(model, 2, VL_SEQ + NEW_TOKENS, &generator), 0);
        ft_token_span prompts[2] = {{row_ids, VL_SEQ}, {row_ids, 14}};
        ft_generate_options greedy = {.max_new_tokens = NEW_TOKENS};
        int32_t batched[2 * NEW_TOKENS], single[NEW_TOKENS];
        int batched_lengths[2], single_length;
        CHECK_INT(ft_evaluate_answers(generator, prompts, images, 2, 2, &greedy, NULL, NULL, batched,
                                      batched_lengths), 0);
        for (int i = 0; i < 2; i++) {
            CHECK_INT(ft_evaluate_answers(generator, prompts + i, images + i, 1, 1, &greedy, NULL, NULL, single,
                                          &single_length), 0);
            CHECK_INT(single_length, batched_lengths[i]);
            CHECK(memcmp(single, batched + i * NEW_TOKENS, sizeof single) == 0);
        }
        ft_generator_free(generator);
    }
    vl_fixture_close(&f);
    ft_safetensors_close(expected);
    ft_model_free(model);
    ft_backend_destroy(cpu);
}

int main(void)
{
    make_samples();
    RUN(order_is_longest_first_and_stable);
    RUN(loss_does_not_depend_on_batching);
    RUN(answers_come_back_in_the_sets_order);
    RUN(images_go_with_their_samples);
    return check_done();
}
