/* The training loop on a tiny random model (ft_model_init) and made-up rows:
 * the loss falls; 2 micro-batches of 4 make the same update as 1 of 8; two runs
 * give the same bytes; a run cancelled after a checkpoint and resumed ends with
 * the same bytes as one that never stopped; a diverging run stops naming the
 * step; step counts follow the HF Trainer; 2 and 4 ranks (forked processes over
 * the host collectives) log the losses of one rank with the same effective
 * batch and end with its adapter, within what reordering sums already makes;
 * save_strategy calls on_save at the HF Trainer's steps with the state the
 * resume checkpoint of that step holds; evaluation also follows the last step;
 * a vision-language model's micro-batches bring their images (the Qwen2-VL
 * parity fixture trains to the loss transformers gives it). */
#include <math.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "tiny_models.h"
#include "ftpipe/backend/comm_host.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/model_init.h"
#include "ftpipe/model/trainer.h"
#include "vl_fixture.h"

static ft_backend *cpu;
static char root[] = "/tmp/ftpipe-trainer.XXXXXX";
static char *model_dir;

#define ROW_LENGTH 32

/* A tiny model (hidden 64, 2 layers, the built-in byte tokenizer), f32. */
static void write_model(void) { model_dir = tiny_model_write(root, "model", FT_ARCH_QWEN2, 2, 3); }

/* n "a+b=c" samples of bytes, the answer trained on; packed: two per row. */
static char *write_data(const char *name, int n, bool packed)
{
    return tiny_addition_data_write(root, name, n, packed, ROW_LENGTH);
}

static ft_model *load_model(int batch_size, double dropout)
{
    ft_model_options options = {batch_size, ROW_LENGTH, FT_FINETUNE_LORA, true,
                                {8, 16.0, dropout, false, FT_LORA_ALL_TARGETS, 42}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    if (ft_model_load(model_dir, cpu, &options, &model) < 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        check_case_failed = 1;
    }
    return model;
}

static ft_train_options default_options(int batch_size, int accumulation, int64_t max_steps)
{
    ft_train_options options = {
        .batch_size = batch_size,
        .gradient_accumulation_steps = accumulation,
        .num_train_epochs = 3.0,
        .max_steps = max_steps,
        .lr_scheduler_type = FT_LR_LINEAR,
        .learning_rate = 1e-2,
        .max_grad_norm = 1.0,
        .adamw = {0.9, 0.999, 1e-8, 0.0},
        .seed = 42,
        .logging_steps = 1,
        .run_id = "0123456789abcdef0123456789abcdef",
    };
    return options;
}

typedef struct {
    double losses[64];
    int n;
    int cancel_after;           /* steps; 0: never */
    int stop_at_step;           /* should_stop answers yes here; 0: never */
    int64_t next_checkpoint_seen;
    char notes[256];
} recorder;

static void record_step(void *context, const ft_train_report *report)
{
    recorder *r = context;
    if (r->n < 64)
        r->losses[r->n++] = report->loss;
}

static void record_note(void *context, const char *text)
{
    recorder *r = context;
    size_t used = strlen(r->notes);
    snprintf(r->notes + used, sizeof r->notes - used, "%s;", text);
}

static bool cancel_when_due(void *context)
{
    recorder *r = context;
    return r->cancel_after > 0 && r->n >= r->cancel_after;
}

static bool stop_when_due(void *context, const ft_train_report *report)
{
    recorder *r = context;
    r->next_checkpoint_seen = report->next_checkpoint_step;
    if (r->stop_at_step == 0 || report->step != r->stop_at_step)
        return false;
    ft_error("the disk is filling up");
    return true;
}

static void attach(ft_train_options *options, recorder *r)
{
    memset(r, 0, sizeof *r);
    options->callbacks =
        (ft_train_callbacks){r, record_step, NULL, record_note, cancel_when_due, NULL, stop_when_due, NULL, NULL};
}

/* Trains a fresh model; returns a copy of its trained tensors (count floats). */
static float *train(const char *data_dir, const ft_train_options *options, double dropout, size_t *count,
                    int *status)
{
    ft_token_shards *shards = NULL;
    CHECK_INT(ft_token_shards_open(data_dir, "train", &shards), 0);
    ft_model *model = load_model(options->batch_size, dropout);
    if (!model || !shards) {
        ft_token_shards_close(shards);
        *status = -1;
        return NULL;
    }
    ft_train_result result;
    *status = ft_train(model, shards, options, &result);
    size_t n_tensors, total = 0;
    const ft_param_tensor *tensors = ft_model_trainable(model, &n_tensors);
    for (size_t i = 0; i < n_tensors; i++)
        total += tensors[i].count;
    float *values = ft_xmalloc(total * sizeof(float));
    for (size_t i = 0, at = 0; i < n_tensors; at += tensors[i].count, i++)
        memcpy(values + at, tensors[i].value, tensors[i].count * sizeof(float));
    *count = total;
    ft_model_free(model);
    ft_token_shards_close(shards);
    return values;
}

typedef struct {
    ft_eval_report reports[8];
    int n;
} eval_recorder;

static void record_evaluation(void *context, const ft_eval_report *report)
{
    eval_recorder *r = context;
    if (r->n < 8)
        r->reports[r->n++] = *report;
}

/* The mean over rows of each row's mean loss, one forward pass per row. */
static double eval_loss_by_hand(ft_model *model, const ft_token_shards *shards)
{
    double sum = 0.0;
    uint64_t n_rows = ft_token_shards_n_rows(shards);
    for (uint64_t r = 0; r < n_rows; r++) {
        ft_token_row row;
        ft_token_shards_row(shards, r, &row);
        int32_t tokens[ROW_LENGTH], positions[ROW_LENGTH], segments[ROW_LENGTH], targets[ROW_LENGTH];
        for (size_t t = 0; t < row.n_tokens; t++) {
            tokens[t] = (int32_t)row.ids[t];
            positions[t] = (int32_t)t;
            segments[t] = 0;
            targets[t] = t + 1 < row.n_tokens && row.loss_mask[t + 1] ? (int32_t)row.ids[t + 1] : -1;
        }
        ft_batch batch = {1, (int)row.n_tokens, tokens, positions, segments, targets, 0, 0};
        double loss = 0.0;
        CHECK_INT(ft_model_forward(model, &batch, NULL, &loss), 0);
        sum += loss;
    }
    return sum / (double)n_rows;
}

TEST(evaluates_during_training_without_changing_it)
{
    char *train_dir = write_data("eval-train", 8, false), *eval_dir = write_data("eval-rows", 5, false);
    ft_token_shards *shards = NULL, *eval_shards = NULL;
    CHECK_INT(ft_token_shards_open(train_dir, "train", &shards), 0);
    CHECK_INT(ft_token_shards_open(eval_dir, "train", &eval_shards), 0);
    ft_model *model = load_model(2, 0.0);
    ft_train_options options = default_options(2, 1, 4);
    eval_recorder evaluations = {0};
    options.eval_shards = eval_shards;
    options.eval_batch_size = 1;
    options.eval_steps = 2;
    options.callbacks = (ft_train_callbacks){.context = &evaluations, .on_evaluate = record_evaluation};
    ft_train_result result;
    if (model && shards && eval_shards) {
        CHECK_INT(ft_train(model, shards, &options, &result), 0);
        CHECK_INT(evaluations.n, 2);
        CHECK_INT(evaluations.reports[0].step, 2);
        CHECK_INT(evaluations.reports[1].step, 4);
        CHECK_INT(evaluations.reports[1].n_rows, 5);
        /* the last evaluation saw the final model */
        double expected = eval_loss_by_hand(model, eval_shards);
        CHECK(fabs(evaluations.reports[1].eval_loss - expected) < 1e-9);
        CHECK(evaluations.reports[0].eval_loss != evaluations.reports[1].eval_loss);
    }
    ft_model_free(model);

    /* the same run without evaluation trains the same bytes */
    size_t n_with = 0, n_without = 0;
    int status_with = 0, status_without = 0;
    options.callbacks = (ft_train_callbacks){0};
    float *with = train(train_dir, &options, 0.0, &n_with, &status_with);
    options.eval_shards = NULL;
    float *without = train(train_dir, &options, 0.0, &n_without, &status_without);
    CHECK(with && without && n_with == n_without && memcmp(with, without, n_with * sizeof(float)) == 0);
    free(with);
    free(without);
    ft_token_shards_close(shards);
    ft_token_shards_close(eval_shards);
    free(train_dir);
    free(eval_dir);
}

/* on_save's record: each step it ran at, with the trained tensors then. */
typedef struct {
    ft_model *model;
    int64_t steps[16];
    float *values[16];
    int n;
} save_recorder;

static int record_save(void *context, int64_t step, double epoch)
{
    save_recorder *r = context;
    size_t n_tensors, total = 0;
    const ft_param_tensor *tensors = ft_model_trainable(r->model, &n_tensors);
    for (size_t i = 0; i < n_tensors; i++)
        total += tensors[i].count;
    if (r->n == 16 || epoch <= 0.0)
        return ft_error("unexpected on_save at step %lld", (long long)step);
    r->steps[r->n] = step;
    r->values[r->n] = ft_xmalloc(total * sizeof(float));
    for (size_t i = 0, at = 0; i < n_tensors; at += tensors[i].count, i++)
        memcpy(r->values[r->n] + at, tensors[i].value, tensors[i].count * sizeof(float));
    r->n++;
    return 0;
}

/* Trains with on_save recording; the steps it ran at, as "4,8,9". */
static void train_recording_saves(const char *data, ft_train_options *options, save_recorder *r, char *steps,
                                  size_t steps_size)
{
    ft_token_shards *shards = NULL;
    CHECK_INT(ft_token_shards_open(data, "train", &shards), 0);
    memset(r, 0, sizeof *r);
    r->model = load_model(options->batch_size, 0.0);
    options->callbacks = (ft_train_callbacks){.context = r, .on_save = record_save};
    ft_train_result result;
    if (r->model && shards)
        CHECK_INT(ft_train(r->model, shards, options, &result), 0);
    steps[0] = '\0';
    for (int i = 0; i < r->n; i++)
        snprintf(steps + strlen(steps), steps_size - strlen(steps), "%s%lld", i ? "," : "", (long long)r->steps[i]);
    ft_token_shards_close(shards);
}

static void free_saves(save_recorder *r)
{
    ft_model_free(r->model);
    for (int i = 0; i < r->n; i++)
        free(r->values[i]);
}

TEST(save_strategy_runs_on_save_as_the_hf_trainer)
{
    char *data = write_data("keep", 11, false), *checkpoints = ft_path_join(root, "keep-checkpoints");
    ft_train_options options = default_options(2, 2, 0); /* 3 steps an epoch, 9 in all */
    options.save_strategy = FT_SAVE_STEPS;
    options.save_steps = 4;
    options.checkpoint_dir = checkpoints;
    save_recorder r;
    char steps[128];
    train_recording_saves(data, &options, &r, steps, sizeof steps);
    CHECK_STR(steps, "4,8,9"); /* every save_steps, and after the last step */
    /* what on_save saw at step N is the run's state at N: the resume checkpoint's tensors */
    size_t n_tensors = 0;
    const ft_param_tensor *tensors = r.model ? ft_model_trainable(r.model, &n_tensors) : NULL;
    for (int i = 0; i < r.n; i++) {
        char *name = ft_xasprintf("checkpoint-%lld/model.safetensors", (long long)r.steps[i]);
        char *path = ft_path_join(checkpoints, name);
        ft_safetensors *set = NULL;
        CHECK_INT(ft_safetensors_open(path, &set), 0);
        size_t at = 0, differ = 0;
        for (size_t t = 0; set && t < n_tensors; at += tensors[t].count, t++) {
            const ft_tensor_view *view = ft_safetensors_find(set, tensors[t].name);
            differ += !view || memcmp(view->data, r.values[i] + at, tensors[t].count * sizeof(float)) != 0;
        }
        CHECK(n_tensors > 0 && differ == 0);
        ft_safetensors_close(set);
        free(path);
        free(name);
    }
    CHECK(r.n == 3 && memcmp(r.values[0], r.values[1], 16) != 0);
    free_saves(&r);

    options.save_strategy = FT_SAVE_EPOCH;
    options.checkpoint_dir = NULL;
    train_recording_saves(data, &options, &r, steps, sizeof steps);
    CHECK_STR(steps, "3,6,9");
    free_saves(&r);
    options.max_steps = 7; /* stopped mid-epoch: the HF Trainer ends that epoch there */
    train_recording_saves(data, &options, &r, steps, sizeof steps);
    CHECK_STR(steps, "3,6,7");
    free_saves(&r);
    options.save_strategy = FT_SAVE_NO;
    train_recording_saves(data, &options, &r, steps, sizeof steps);
    CHECK_STR(steps, "");
    free_saves(&r);
    free(checkpoints);
    free(data);
}

TEST(evaluates_after_the_last_step_as_transformers_5)
{
    char *train_dir = write_data("eval-last", 8, false), *eval_dir = write_data("eval-last-rows", 3, false);
    ft_token_shards *shards = NULL, *eval_shards = NULL;
    CHECK_INT(ft_token_shards_open(train_dir, "train", &shards), 0);
    CHECK_INT(ft_token_shards_open(eval_dir, "train", &eval_shards), 0);
    ft_model *model = load_model(2, 0.0);
    ft_train_options options = default_options(2, 1, 5);
    eval_recorder evaluations = {0};
    options.eval_shards = eval_shards;
    options.eval_batch_size = 2;
    options.eval_steps = 2;
    options.callbacks = (ft_train_callbacks){.context = &evaluations, .on_evaluate = record_evaluation};
    ft_train_result result;
    if (model && shards && eval_shards) {
        CHECK_INT(ft_train(model, shards, &options, &result), 0);
        CHECK_INT(evaluations.n, 3);
        CHECK_INT(evaluations.reports[2].step, 5);
    }
    ft_model_free(model);
    ft_token_shards_close(shards);
    ft_token_shards_close(eval_shards);
    free(train_dir);
    free(eval_dir);
}

TEST(counts_steps_as_the_hf_trainer_does)
{
    ft_train_options options = default_options(4, 2, 0);
    ft_train_plan plan;
    CHECK_INT(ft_train_plan_steps(&options, 10, &plan), 0); /* 3 micro-batches, 2 steps per epoch */
    CHECK(plan.micro_batches_per_epoch == 3 && plan.steps_per_epoch == 2 && plan.total_steps == 6);
    options.num_train_epochs = 2.5;
    options.warmup_ratio = 0.1;
    CHECK_INT(ft_train_plan_steps(&options, 10, &plan), 0);
    CHECK(plan.total_steps == 5 && plan.warmup_steps == 1);
    options.max_steps = 7;
    CHECK_INT(ft_train_plan_steps(&options, 10, &plan), 0);
    CHECK_INT(plan.total_steps, 7);
    options.gradient_accumulation_steps = 0;
    CHECK_INT(ft_train_plan_steps(&options, 10, &plan), -1);
    CHECK_STR(ft_error_message(), "gradient_accumulation_steps = 0: expected at least 1");
}

/* Frozen random embeddings, norms and head (std 0.02) bound the logits, so
 * LoRA can take the loss from ln(259) = 5.56 down to about 4.3, no lower. */
TEST(loss_falls)
{
    char *data = write_data("falls", 8, false);
    ft_train_options options = default_options(8, 1, 30);
    options.lr_scheduler_type = FT_LR_CONSTANT;
    recorder r;
    attach(&options, &r);
    size_t count;
    int status;
    free(train(data, &options, 0.0, &count, &status));
    CHECK_INT(status, 0);
    CHECK_INT(r.n, 30);
    double last = (r.losses[27] + r.losses[28] + r.losses[29]) / 3.0;
    if (!(last < r.losses[0] - 1.0))
        fprintf(stderr, "  first loss %g, last %g\n", r.losses[0], last);
    CHECK(last < r.losses[0] - 1.0);
    free(data);
}

/* AdamW's eps = 1 makes the first update a smooth function of the gradients,
 * so that their rounding differences stay rounding-sized in the weights. */
TEST(two_micro_batches_of_four_update_as_one_of_eight)
{
    char *data = write_data("accumulate", 8, false);
    ft_train_options whole = default_options(8, 1, 1), split = default_options(4, 2, 1),
                     half = default_options(4, 1, 1);
    whole.adamw.eps = split.adamw.eps = half.adamw.eps = 1.0;
    whole.max_grad_norm = split.max_grad_norm = half.max_grad_norm = 0.0;
    recorder r_whole, r_split, r_half;
    attach(&whole, &r_whole);
    attach(&split, &r_split);
    attach(&half, &r_half);
    size_t n_whole, n_split, n_half;
    int status;
    float *a = train(data, &whole, 0.0, &n_whole, &status);
    float *b = train(data, &split, 0.0, &n_split, &status);
    float *c = train(data, &half, 0.0, &n_half, &status);
    CHECK(n_whole == n_split && n_whole == n_half);
    double split_diff = 0.0, half_diff = 0.0;
    for (size_t i = 0; i < n_whole; i++) {
        split_diff = fmax(split_diff, fabs((double)a[i] - b[i]));
        half_diff = fmax(half_diff, fabs((double)a[i] - c[i]));
    }
    if (split_diff > 1e-7 || half_diff < 1e-5)
        fprintf(stderr, "  2x4 differs by %g, 1x4 by %g\n", split_diff, half_diff);
    CHECK(split_diff <= 1e-7);
    CHECK(half_diff >= 1e-5); /* half the data is a different update: the comparison can tell */
    CHECK(fabs(r_whole.losses[0] - r_split.losses[0]) < 1e-6);
    free(a);
    free(b);
    free(c);
    free(data);
}

TEST(two_runs_give_the_same_bytes)
{
    char *data = write_data("same", 11, true);
    ft_train_options options = default_options(2, 2, 0);
    options.num_train_epochs = 2.0;
    size_t n1, n2;
    int s1, s2;
    float *a = train(data, &options, 0.1, &n1, &s1);
    float *b = train(data, &options, 0.1, &n2, &s2);
    CHECK(s1 == 0 && s2 == 0 && n1 == n2 && memcmp(a, b, n1 * sizeof(float)) == 0);
    free(a);
    free(b);
    free(data);
}

TEST(a_resumed_run_ends_with_the_same_bytes)
{
    char *data = write_data("resume", 11, false);
    char *straight_dir = ft_path_join(root, "straight"), *stopped_dir = ft_path_join(root, "stopped");
    ft_train_options options = default_options(2, 2, 0); /* 6 micro-batches: 3 steps an epoch, 9 in all */
    options.save_steps = 2;
    options.save_total_limit = 1;
    recorder r;
    attach(&options, &r);
    size_t n1, n2, n3;
    int status;
    options.checkpoint_dir = straight_dir;
    float *straight = train(data, &options, 0.1, &n1, &status);
    CHECK_INT(status, 0);
    CHECK_STR(r.notes, "saved checkpoint-2;saved checkpoint-4;saved checkpoint-6;saved checkpoint-8;"
                       "saved checkpoint-9;");
    options.checkpoint_dir = stopped_dir;
    attach(&options, &r);
    r.cancel_after = 5;
    free(train(data, &options, 0.1, &n2, &status));
    CHECK_INT(status, -1);
    CHECK_STR(ft_error_message(), "cancelled at step 5 of 9");
    CHECK_STR(r.notes, "saved checkpoint-2;saved checkpoint-4;saved checkpoint-5;");
    attach(&options, &r);
    float *resumed = train(data, &options, 0.1, &n3, &status);
    CHECK_INT(status, 0);
    CHECK_STR(r.notes, "resumed from checkpoint-5 (epoch 1.73);saved checkpoint-6;saved checkpoint-8;"
                       "saved checkpoint-9;");
    CHECK_INT(r.n, 4);
    CHECK(n1 == n3 && memcmp(straight, resumed, n1 * sizeof(float)) == 0);
    free(straight);
    free(resumed);
    free(straight_dir);
    free(stopped_dir);
    free(data);
}

/* train() in `ranks` forked ranks: rank 0 records and returns its tensors; the
 * others check that theirs are the same bytes. */
static float *train_in_ranks(const char *data_dir, ft_train_options options, int ranks, size_t *count, int *status)
{
    pid_t children[8];
    ft_comm *comm = NULL;
    int rank = ft_comm_host_fork(ranks, &comm, children);
    CHECK(rank >= 0);
    if (rank != 0)
        check_case_failed = 0; /* this process's own checks */
    options.ranks = ranks;
    options.comm = comm;
    if (rank != 0)
        memset(&options.callbacks, 0, sizeof options.callbacks);
    float *values = train(data_dir, &options, 0.0, count, status);
    float *rank0 = ft_xmalloc(*count * sizeof(float));
    memcpy(rank0, values, *count * sizeof(float));
    int shared = comm->broadcast(comm, rank0, *count * sizeof(float), 0);
    ft_comm_destroy(comm);
    if (rank != 0) {
        _exit(check_case_failed || *status != 0 || shared != 0 || memcmp(rank0, values, *count * sizeof(float)));
    }
    free(rank0);
    for (int k = 1; k < ranks; k++) {
        int wait_status = 0;
        waitpid(children[k], &wait_status, 0);
        CHECK(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0);
    }
    return values;
}

static double max_difference(const float *a, const float *b, size_t n)
{
    double most = 0.0;
    for (size_t i = 0; i < n; i++)
        most = fmax(most, fabs((double)a[i] - b[i]));
    return most;
}

/* Against one rank of 8 x 1: the losses of every step within 1e-5 relative, and
 * the adapter no further from it than one rank's run of the same micro-batches
 * (per-device batch x accumulation x ranks on one rank) is: Adam amplifies the
 * last-bit differences that summing in another order makes. */
TEST(ranks_match_one_rank_with_the_same_effective_batch)
{
    char *data = write_data("ranks", 21, false); /* 3 steps of 8 an epoch, the last of 5 rows */
    ft_train_options one = default_options(8, 1, 0);
    one.num_train_epochs = 2.0;
    recorder r_one;
    attach(&one, &r_one);
    size_t n_one;
    int status;
    float *reference = train(data, &one, 0.0, &n_one, &status);
    CHECK_INT(status, 0);
    CHECK_INT(r_one.n, 6);
    int shapes[][3] = {{2, 4, 1}, {4, 2, 1}, {2, 2, 2}}; /* ranks, per-device batch, accumulation */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int ranks = shapes[s][0], batch = shapes[s][1], accumulation = shapes[s][2];
        ft_train_options options = default_options(batch, accumulation, 0),
                         reordered = default_options(batch, accumulation * ranks, 0);
        options.num_train_epochs = reordered.num_train_epochs = 2.0;
        size_t n, n_reordered;
        float *on_one_rank = train(data, &reordered, 0.0, &n_reordered, &status);
        double reordering = n_reordered == n_one ? max_difference(reference, on_one_rank, n_one) : INFINITY;
        recorder r;
        attach(&options, &r);
        float *values = train_in_ranks(data, options, ranks, &n, &status);
        CHECK_INT(status, 0);
        CHECK_INT(r.n, r_one.n);
        for (int i = 0; i < r.n && i < r_one.n; i++)
            if (!(fabs(r.losses[i] - r_one.losses[i]) <= 1e-5 * fabs(r_one.losses[i]))) {
                fprintf(stderr, "  %d ranks x %d x %d: step %d's loss %.9g, one rank's %.9g\n", ranks, batch,
                        accumulation, i + 1, r.losses[i], r_one.losses[i]);
                check_case_failed = 1;
            }
        double difference = n == n_one ? max_difference(reference, values, n) : INFINITY;
        if (!(difference <= reordering))
            fprintf(stderr, "  %d ranks x %d x %d: the adapter differs by %g, one rank of %d x %d by %g\n", ranks,
                    batch, accumulation, difference, batch, accumulation * ranks, reordering);
        CHECK(difference <= reordering);
        free(values);
        free(on_one_rank);
    }
    free(reference);
    free(data);
}

TEST(should_stop_checkpoints_and_stops_and_the_rerun_resumes)
{
    char *data = write_data("guarded", 11, false);
    char *straight_dir = ft_path_join(root, "guard_straight"), *stopped_dir = ft_path_join(root, "guard_stopped");
    ft_train_options options = default_options(2, 2, 0); /* 9 steps */
    options.save_steps = 4;
    recorder r;
    attach(&options, &r);
    size_t n1, n2, n3;
    int status;
    options.checkpoint_dir = straight_dir;
    float *straight = train(data, &options, 0.0, &n1, &status);
    CHECK_INT(status, 0);
    options.checkpoint_dir = stopped_dir;
    attach(&options, &r);
    r.stop_at_step = 3;
    free(train(data, &options, 0.0, &n2, &status));
    CHECK_INT(status, -1);
    CHECK_STR(ft_error_message(), "the disk is filling up; stopped after step 3 of 9 with checkpoint-3 saved: the "
                                  "next run resumes from it");
    CHECK_INT(r.next_checkpoint_seen, 4); /* after step 3 the next is due at save_steps = 4 */
    attach(&options, &r);
    float *resumed = train(data, &options, 0.0, &n3, &status);
    CHECK_INT(status, 0);
    CHECK(strncmp(r.notes, "resumed from checkpoint-3", 25) == 0);
    CHECK(n1 == n3 && memcmp(straight, resumed, n1 * sizeof(float)) == 0);
    free(straight);
    free(resumed);
    free(straight_dir);
    free(stopped_dir);
    free(data);
}

TEST(a_diverging_run_stops_naming_the_step)
{
    char *data = write_data("diverge", 8, false);
    ft_train_options options = default_options(4, 1, 20);
    options.learning_rate = 1e30;
    options.lr_scheduler_type = FT_LR_CONSTANT;
    size_t count;
    int status;
    free(train(data, &options, 0.0, &count, &status));
    CHECK_INT(status, -1);
    const char *message = ft_error_message();
    CHECK(strncmp(message, "step ", 5) == 0 && strstr(message, "training diverged; try a lower learning_rate (now "
                                                               "1e+30)") != NULL);
    free(data);
}

/* The VL fixture's row as a tokenized split with its images.bin: two samples,
 * the fixture's row and the same row again, one row each. */
static char *write_vl_data(const vl_fixture *f)
{
    char *dir = ft_path_join(root, "vl_data"), *split = ft_path_join(dir, "train");
    char *store_path = ft_path_join(split, FT_IMAGE_STORE_FILE);
    ft_token_shard_writer *writer = NULL;
    ft_image_store_writer *images = NULL;
    uint32_t ids[VL_SEQ];
    uint8_t mask[VL_SEQ];
    for (int t = 0; t < VL_SEQ; t++) {
        ids[t] = (uint32_t)f->tokens[t];
        mask[t] = t > 0 && f->targets[t - 1] >= 0; /* target t - 1 is token t, trained on */
    }
    CHECK_INT(ft_token_shard_writer_open(split, false, VL_MAX_SEQ, 0, &writer), 0);
    CHECK_INT(ft_image_store_writer_open(store_path, FT_IMAGE_LAYOUT_PATCHES, 1176, &images), 0);
    uint32_t indices[VL_IMAGES];
    for (int i = 0; i < VL_IMAGES; i++)
        indices[i] = (uint32_t)ft_image_store_writer_add_image(images, &f->images[i]);
    for (int sample = 0; sample < 2; sample++) {
        CHECK_INT(ft_token_shard_writer_add_sample(writer, ids, mask, VL_SEQ), 0);
        CHECK_INT(ft_image_store_writer_add_sample(images, indices, VL_IMAGES), 0);
    }
    CHECK_INT(ft_image_store_writer_finish(images), 0);
    ft_token_dataset_meta meta;
    memset(&meta, 0, sizeof meta);
    strcpy(meta.tokenizer_hash, "0123456789abcdef0123456789abcdef");
    strcpy(meta.template_name, "qwen2_vl");
    strcpy(meta.vision_processor, "qwen2_vl");
    meta.cutoff_len = VL_MAX_SEQ;
    meta.n_records = 2;
    CHECK_INT(ft_token_shard_writer_finish(writer, &meta.train), 0);
    meta.train.n_images = VL_IMAGES;
    CHECK_INT(ft_token_dataset_meta_write(dir, &meta), 0);
    free(store_path);
    free(split);
    return dir;
}

TEST(vision_language_batches_bring_their_images)
{
    vl_fixture f;
    ft_safetensors *expected = vl_open("expected.safetensors");
    ft_model_options model_options = {2, VL_MAX_SEQ, FT_FINETUNE_LORA, true,
                                      {4, 8.0, 0.0, false, FT_LORA_ALL_TARGETS, 42}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    CHECK_INT(ft_model_load(VL_FIXTURES "/model", cpu, &model_options, &model), 0);
    if (vl_fixture_open(&f) && expected && model) {
        char *dir = write_vl_data(&f);
        ft_token_shards *shards = NULL;
        ft_image_store *store = NULL;
        char *store_path = ft_xasprintf("%s/train/%s", dir, FT_IMAGE_STORE_FILE);
        CHECK_INT(ft_token_shards_open(dir, "train", &shards), 0);
        CHECK_INT(ft_image_store_open(store_path, &store), 0);
        ft_train_options options = default_options(2, 1, 1);
        options.logging_steps = 0;
        options.run_id = NULL;
        /* the two rows in one micro-batch: each row's images, in order */
        options.images = store;
        ft_train_result result;
        CHECK_INT(ft_train(model, shards, &options, &result), 0);
        /* B is zero before the first step: the step's loss is the base model's */
        float loss = (float)result.train_loss;
        CHECK(vl_relative_error(expected, "loss", &loss, 1) < VL_TOLERANCE);
        /* without the images the image tokens have no features: refused */
        options.images = NULL;
        CHECK_INT(ft_train(model, shards, &options, &result), -1);
        CHECK(strstr(ft_error_message(), "images are used up") != NULL);
        ft_image_store_close(store);
        ft_token_shards_close(shards);
        free(store_path);
        free(dir);
    }
    ft_model_free(model);
    ft_safetensors_close(expected);
    vl_fixture_close(&f);
}

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    cpu = ft_backend_cpu_create(1);
    write_model();
    RUN(counts_steps_as_the_hf_trainer_does);
    RUN(loss_falls);
    RUN(two_micro_batches_of_four_update_as_one_of_eight);
    RUN(two_runs_give_the_same_bytes);
    RUN(a_resumed_run_ends_with_the_same_bytes);
    RUN(should_stop_checkpoints_and_stops_and_the_rerun_resumes);
    RUN(a_diverging_run_stops_naming_the_step);
    RUN(evaluates_during_training_without_changing_it);
    RUN(evaluates_after_the_last_step_as_transformers_5);
    RUN(save_strategy_runs_on_save_as_the_hf_trainer);
    RUN(ranks_match_one_rank_with_the_same_effective_batch);
    RUN(vision_language_batches_bring_their_images);
    ft_backend_destroy(cpu);
    free(model_dir);
    ft_remove_tree(root);
    return check_done();
}
