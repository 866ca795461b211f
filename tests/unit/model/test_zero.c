/* ZeRO stages 1, 2 and 3 on the trainer, with ranks as forked processes over the
 * host collectives, on a tiny random model (LoRA and full fine-tuning):
 *   - with 2, 3 and 4 ranks, stage 1 ends with stage 0's tensors bit for bit and
 *     stage 2 within 1e-6 of them (its gradient norm adds in another order),
 *     with the same losses within 1e-6 relative, with and without
 *     offload_optimizer (the update on the host's threads, beside the next
 *     pass, slowed so that a pass that did not wait for it would differ);
 *   - each rank's optimizer state (the trainer's counter) is its 1 / ranks
 *     share, give or take the few shared elements;
 *   - with 2 and 4 ranks, stage 3 (base weights sharded and gathered layer by
 *     layer), with offload_param and with both offloads, ends within 1e-6 of
 *     stage 0 with the same losses within 1e-6 relative, and offload_param
 *     (with the shards loaded straight from the files) changes no bit of
 *     stage 3's result (which shards a model loaded whole); each rank's weights (the trainer's
 *     counters) are its 1 / ranks shard plus two gathered units;
 *   - full fine-tuning on 4 ranks at ZeRO-3 with offload_param, cancelled after
 *     a checkpoint, resumes on 2 ranks at ZeRO-1 with the uninterrupted run's
 *     losses within 1e-5 and its weights no further from it than 2 ranks
 *     throughout are (the sums in another order), and so does the reverse,
 *     2 ranks at ZeRO-1 resumed on 4 at ZeRO-3 (each rank taking its shard
 *     of the checkpoint's values), with and without the master copy;
 *   - full fine-tuning with a float master copy of the weights (the path of
 *     cuda's bf16 weights, which ft_model_test_master_copy makes the cpu
 *     backend take, its cast_from_float a copy; stage 0 with it is stage 0
 *     without it bit for bit): ZeRO-3 on 2 and 4 ranks, with and without
 *     offload_optimizer (AdamW on the master shard in host memory) and
 *     offload_param, ends within 1e-6 of stage 0 with the master copy, with
 *     the same losses within 1e-6 relative, each rank keeping 1 / ranks of
 *     the master copy; on 4 ranks with offload_optimizer, cancelled after a
 *     checkpoint, it resumes on 2 ranks at ZeRO-1 as the run without the
 *     master copy does;
 *   - a 2-rank ZeRO-2 run cancelled after a checkpoint resumes with 1 rank at
 *     stage 0 and with 3 ranks at stage 1 (the same global batch), ending as
 *     close to the uninterrupted run as running with those ranks throughout
 *     is (what reordering the sums does), and bit for bit with 2 ranks at
 *     stage 1 and at stage 2 with offload;
 *   - a model whose weights a ZeRO-3 run gathered whole into rank 0's host
 *     memory is refused another run on every rank;
 *   - one rank with offload_optimizer, its update beside the next pass, ends
 *     with the bytes and losses of the update in place (LoRA, full, and full
 *     with the master copy). */
#include <dirent.h>
#include <math.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "tiny_models.h"
#include "ftpipe/backend/comm_host.h"
#include "ftpipe/backend/comm_solo.h"
#include "ftpipe/model/adapter_shards.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/checkpoint.h"
#include "ftpipe/model/model_init.h"
#include "ftpipe/model/param_shards.h"
#include "ftpipe/model/trainer.h"
#include "ftpipe/model/update_gate.h"

static ft_backend *cpu;
static char root[] = "/tmp/ftpipe-zero.XXXXXX";
static char *model_dir;

#define ROW_LENGTH 32

static void write_model(void) { model_dir = tiny_model_write(root, "model", FT_ARCH_QWEN2, 2, 3); }

/* n "a+b=c" rows of bytes, the answer trained on. */
static char *write_data(const char *name, int n) { return tiny_addition_data_write(root, name, n, false, ROW_LENGTH); }

typedef struct {
    double losses[64];
    int n;
    int cancel_after;     /* steps; 0: never */
} recorder;

static void record_step(void *context, const ft_train_report *report)
{
    recorder *r = context;
    if (r->n < 64)
        r->losses[r->n++] = report->loss;
}

static bool cancel_when_due(void *context)
{
    recorder *r = context;
    return r->cancel_after > 0 && r->n >= r->cancel_after;
}

typedef struct {
    int ranks, zero_stage, batch_size, accumulation;
    ft_finetuning finetuning;
    const char *checkpoint_dir;
    int cancel_after;
    bool offload;               /* offload_optimizer = cpu */
    bool offload_param;         /* offload_param = cpu (stage 3) */
} run_shape;

typedef struct {
    float *values;                 /* rank 0's trained tensors */
    size_t count;
    int status;
    recorder steps;                /* rank 0's losses */
    size_t optimizer_state_bytes;  /* rank 0's */
    size_t parameter_bytes, parameter_host_bytes; /* rank 0's */
    size_t master_bytes, master_host_bytes;       /* rank 0's */
    size_t gradient_bytes, gradient_host_bytes;   /* rank 0's */
    size_t adapter_bytes;                         /* rank 0's */
    char error[512];                              /* rank 0's ft_error when the run failed */
    char again_error[512];                        /* rank 0's ft_error of train_again's run */
} run_result;

/* A case's: rank 0's checkpoint files fail once this many tensors are made
 * (checkpoint.h's test hook; 0: never), and every rank must then fail. */
static size_t rank0_checkpoint_fails_after;
/* A case's: after the run, ft_train once more on the same model, which every rank must refuse. */
static bool train_again;

/* Trains a fresh model in shape.ranks forked ranks; every other rank checks
 * that it ends with rank 0's bytes, or (ZeRO-3 of full fine-tuning, whose
 * result only rank 0 writes) with none. */
static run_result run(const char *data_dir, run_shape shape)
{
    run_result out = {0};
    pid_t children[8];
    ft_comm *comm = NULL;
    int rank = shape.ranks > 1 ? ft_comm_host_fork(shape.ranks, &comm, children) : 0;
    CHECK(rank >= 0);
    if (shape.ranks <= 1 && shape.zero_stage == 3 && shape.offload_param) /* as the train stage: one rank streaming */
        comm = ft_comm_solo_create(cpu);
    if (rank != 0)
        check_case_failed = 0;
    ft_train_options options = {
        .batch_size = shape.batch_size,
        .gradient_accumulation_steps = shape.accumulation,
        .num_train_epochs = 2.0,
        .lr_scheduler_type = FT_LR_LINEAR,
        .learning_rate = 1e-2,
        .max_grad_norm = 0.5, /* clips: the norm over the shards matters */
        .adamw = {0.9, 0.999, 1e-8, 0.01},
        .offload_optimizer = shape.offload,
        .offload_param = shape.offload_param,
        .seed = 42,
        .logging_steps = 1,
        .save_steps = 2,
        .checkpoint_dir = shape.checkpoint_dir,
        .run_id = "0123456789abcdef0123456789abcdef",
        .ranks = shape.ranks,
        .comm = comm,
        .saves_checkpoints = rank == 0,
        .zero_stage = shape.zero_stage,
    };
    out.steps.cancel_after = shape.cancel_after;
    if (rank == 0)
        options.callbacks = (ft_train_callbacks){&out.steps, record_step, NULL, NULL, cancel_when_due, NULL, NULL, NULL,
                                                   NULL};
    ft_token_shards *shards = NULL;
    CHECK_INT(ft_token_shards_open(data_dir, "train", &shards), 0);
    bool lora = shape.finetuning == FT_FINETUNE_LORA;
    ft_model_options model_options = {shape.batch_size, ROW_LENGTH, shape.finetuning, lora,
                                      {lora ? 8 : 0, 16.0, 0.0, false, lora ? FT_LORA_ALL_TARGETS : 0, 42}, false, false, false,
                                      /* as the train stage sets them: sharded gradients at stages 2 and 3,
                                       * the plan's share of AdamW at every stage */
                                      !lora && comm && shape.zero_stage >= 2 ? shape.ranks : 0,
                                      comm && shape.zero_stage >= 1 ? shape.ranks : 0, comm && shape.offload};
    ft_model *model = NULL;
    /* stage 3 with offload_param loads the shards straight from the files, the
     * other stage 3 runs shard a whole model: the test compares them bit for bit */
    if ((comm && shape.zero_stage == 3 && shape.offload_param
             ? ft_model_load_sharded(model_dir, cpu, &model_options, comm, true, shape.offload, &model)
             : ft_model_load(model_dir, cpu, &model_options, &model)) < 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        check_case_failed = 1;
    }
    ft_train_result result = {0};
    if (rank == 0)
        ft_checkpoint_test_fail_after(rank0_checkpoint_fails_after);
    out.status = model ? ft_train(model, shards, &options, &result) : -1;
    ft_checkpoint_test_fail_after(0);
    if (out.status < 0)
        snprintf(out.error, sizeof out.error, "%s", ft_error_message());
    if (out.status < 0 && shape.cancel_after == 0 && !rank0_checkpoint_fails_after)
        fprintf(stderr, "  rank %d: %s\n", rank, ft_error_message());
    int again = 0;
    if (train_again) {
        ft_train_result second = {0};
        again = ft_train(model, shards, &options, &second);
        snprintf(out.again_error, sizeof out.again_error, "%s", again < 0 ? ft_error_message() : "");
    }
    out.optimizer_state_bytes = result.optimizer_state_bytes;
    out.parameter_bytes = result.parameter_bytes;
    out.parameter_host_bytes = result.parameter_host_bytes;
    out.master_bytes = result.master_bytes;
    out.master_host_bytes = result.master_host_bytes;
    out.gradient_bytes = result.gradient_bytes;
    out.gradient_host_bytes = result.gradient_host_bytes;
    out.adapter_bytes = result.adapter_bytes;
    size_t n_tensors = 0;
    const ft_param_tensor *tensors = model ? ft_model_trainable(model, &n_tensors) : NULL;
    for (size_t i = 0; i < n_tensors; i++)
        out.count += tensors[i].count;
    out.values = ft_xcalloc(out.count ? out.count : 1, sizeof(float));
    /* ZeRO-3 of full fine-tuning leaves the weights with the rank that writes
     * them only, and LoRA's adapter whole on every rank; a failed (cancelled)
     * run at stage 3 leaves neither on any */
    bool holds = n_tensors > 0 && tensors[0].value != NULL;
    bool writer_only = shape.finetuning == FT_FINETUNE_FULL && shape.zero_stage == 3 && comm;
    bool others_hold = !writer_only && (out.status == 0 || !(shape.zero_stage == 3 && comm));
    for (size_t i = 0, at = 0; holds && i < n_tensors; at += tensors[i].count, i++)
        memcpy(out.values + at, tensors[i].value, tensors[i].count * sizeof(float));
    /* LoRA at stage 3: the adapter stays in its ranks' parts; every rank gathers it to compare */
    ft_adapter_shards *adapter = model && out.status == 0 ? ft_model_adapter_shards(model) : NULL;
    if (adapter)
        holds = ft_adapter_shards_gather_to_host(adapter, out.values) == 0;
    if (rank == 0 && out.status == 0)
        CHECK(holds);
    ft_model_free(model);
    ft_token_shards_close(shards);
    if (comm) {
        float *rank0 = ft_xmalloc((out.count ? out.count : 1) * sizeof(float));
        memcpy(rank0, out.values, out.count * sizeof(float));
        int shared = comm->broadcast(comm, rank0, out.count * sizeof(float), 0);
        ft_comm_destroy(comm);
        if (rank != 0)
            _exit(check_case_failed || shared != 0 || holds != others_hold || again != 0 - train_again ||
                  (rank0_checkpoint_fails_after && (out.status == 0 || !strstr(out.error, "1 other rank(s) failed"))) ||
                  (holds && memcmp(rank0, out.values, out.count * sizeof(float)) != 0));
        free(rank0);
        for (int k = 1; k < shape.ranks; k++) {
            int wait_status = 0;
            waitpid(children[k], &wait_status, 0);
            CHECK(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0);
        }
    }
    return out;
}

static double max_difference(const float *a, const float *b, size_t n)
{
    double most = 0.0;
    for (size_t i = 0; i < n; i++)
        most = fmax(most, fabs((double)a[i] - b[i]));
    return most;
}

static void same_losses(const run_result *a, const run_result *b, double tolerance, const char *what)
{
    CHECK_INT(a->steps.n, b->steps.n);
    for (int i = 0; i < a->steps.n && i < b->steps.n; i++)
        if (!(fabs(a->steps.losses[i] - b->steps.losses[i]) <= tolerance * fabs(b->steps.losses[i]))) {
            fprintf(stderr, "  %s: step %d's loss %.9g, stage 0's %.9g\n", what, i + 1, a->steps.losses[i],
                    b->steps.losses[i]);
            check_case_failed = 1;
        }
}

/* A sharded run against stage 0's: the losses within `tolerance` relative
 * and the trained tensors within `tolerance` of them, or within `reordering`
 * when that is larger. */
static void matches_stage_zero(const run_result *sharded, const run_result *reference, double tolerance,
                               double reordering, const char *what)
{
    same_losses(sharded, reference, tolerance, what);
    CHECK_INT(sharded->count, reference->count);
    double difference = max_difference(sharded->values, reference->values, reference->count);
    if (!(difference <= fmax(tolerance, reordering))) {
        fprintf(stderr, "  %s: the trained tensors differ from stage 0's by %g (reordering the sums: %g)\n", what,
                difference, reordering);
        check_case_failed = 1;
    }
}

/* How far stage 0's trained tensors move when only the order of the same sums
 * changes: on one rank accumulating every rank's micro-batches, and on the
 * same ranks with micro-batches of half the rows. Full fine-tuning's sharded
 * gradients (grad_shards.h) add each micro-batch over the ranks into the sums
 * of those before it, an order of their own, and must stay within the larger. */
static double reordering_difference(const char *data, const run_result *reference, run_shape shape)
{
    run_shape one = shape, halves = shape;
    one.ranks = 1;
    one.accumulation = shape.accumulation * shape.ranks;
    halves.batch_size = shape.batch_size / 2;
    halves.accumulation = shape.accumulation * 2;
    run_result a = run(data, one), b = run(data, halves);
    CHECK(a.status == 0 && b.status == 0);
    double difference = fmax(max_difference(a.values, reference->values, reference->count),
                             max_difference(b.values, reference->values, reference->count));
    free(a.values);
    free(b.values);
    return difference;
}

/* Full fine-tuning's gradients at ZeRO-2 and 3 over `ranks`, in f32: every
 * unit's owned and shared part (the embeddings, each layer, the final norm
 * with an untied head), the shard; *windows_bytes: the windows a pass writes
 * into, one of the largest unit and, over ranks or with the shard in host
 * memory (offload), one of a layer beside it, so that a unit's reduce runs
 * beside the next one's backward; *staging_bytes: the largest unit's part (offload_optimizer's staging
 * buffer). */
static size_t sharded_gradient_bytes(int ranks, bool offload, size_t *windows_bytes, size_t *staging_bytes)
{
    ft_model_config config;
    CHECK_INT(ft_model_config_load(model_dir, &config), 0);
    size_t count = 0, layer = 0, final = 0, r = (size_t)ranks;
    ft_param_tensor *weights = ft_model_weight_list(&config, &count);
    for (size_t i = 1; i < count; i++) /* weights[0]: the embeddings */
        if (strncmp(weights[i].name, "model.layers.0.", 15) == 0)
            layer += weights[i].count;
        else if (strncmp(weights[i].name, "model.layers.", 13) != 0)
            final += weights[i].count;
    size_t embeddings = weights[0].count, units[3] = {embeddings, layer, final}, shard = 0, staging = 0;
    ft_model_weight_list_free(weights, count);
    for (int u = 0; u < 3; u++) {
        size_t part = units[u] / r + units[u] % r;
        shard += part * (u == 1 ? (size_t)config.num_hidden_layers : 1);
        staging = part > staging ? part : staging;
    }
    size_t window = embeddings > layer ? embeddings : layer;
    window = window > final ? window : final;
    *windows_bytes = (window + (ranks > 1 || offload ? layer : 0)) * sizeof(float);
    *staging_bytes = staging * sizeof(float);
    return shard * sizeof(float);
}

/* Rank 0's float gradients: whole, or full fine-tuning's shard and windows at
 * stages 2 and 3; with offload_optimizer that shard in host memory, the
 * windows and a staging buffer in the backend's. */
static void check_gradient_bytes(const run_result *sharded, const run_result *reference, ft_finetuning finetuning,
                                 int ranks, int stage, bool offload, const char *what)
{
    size_t windows = 0, staging = 0, expected = reference->count * sizeof(float), host = 0;
    if (finetuning == FT_FINETUNE_FULL && stage >= 2) {
        size_t shard = sharded_gradient_bytes(ranks, offload, &windows, &staging);
        expected = offload ? windows + staging : shard + windows;
        host = offload ? shard : 0;
    }
    if (sharded->gradient_bytes != expected || sharded->gradient_host_bytes != host ||
        reference->gradient_bytes != reference->count * sizeof(float)) {
        fprintf(stderr, "  %s: %zu bytes of gradients (%zu in host memory), expected %zu (%zu; whole: %zu)\n", what,
                sharded->gradient_bytes, sharded->gradient_host_bytes, expected, host,
                reference->count * sizeof(float));
        check_case_failed = 1;
    }
}

static void stages_match_stage_zero(ft_finetuning finetuning)
{
    char *data = write_data(finetuning == FT_FINETUNE_LORA ? "stages_lora" : "stages_full", 26);
    for (int ranks = 2; ranks <= 4; ranks++) {
        run_shape shape = {ranks, 0, 2, 2, finetuning, NULL, 0, false, false};
        run_result reference = run(data, shape);
        CHECK_INT(reference.status, 0);
        CHECK(reference.steps.n >= 4);
        double reordering = finetuning == FT_FINETUNE_FULL ? reordering_difference(data, &reference, shape) : 0.0;
        float *stage_values[2] = {NULL, NULL}; /* ZeRO-1's and 2's without the offload */
        for (int variant = 0; variant < 4; variant++) {
            int stage = variant % 2 + 1;
            shape.zero_stage = stage;
            shape.offload = variant >= 2;
            ft_update_gate_test_delay(shape.offload ? 2000 : 0); /* the update beside the next pass, slowed */
            run_result sharded = run(data, shape);
            ft_update_gate_test_delay(0);
            CHECK_INT(sharded.status, 0);
            char what[64];
            snprintf(what, sizeof what, "%d ranks, ZeRO-%d%s", ranks, stage, shape.offload ? " + offload" : "");
            matches_stage_zero(&sharded, &reference, stage == 1 ? 0.0 : 1e-6, stage == 1 ? 0.0 : reordering, what);
            check_gradient_bytes(&sharded, &reference, finetuning, ranks, stage, shape.offload, what);
            /* offload_optimizer updates on the host what the stage updates in place: the same bits (at
             * stage 2 of full fine-tuning from the gradients' shard in host memory) */
            if (variant < 2)
                stage_values[variant] = sharded.values;
            else if (memcmp(sharded.values, stage_values[variant - 2], reference.count * sizeof(float)) != 0) {
                fprintf(stderr, "  %s: not the bytes of ZeRO-%d without the offload\n", what, stage);
                check_case_failed = 1;
            }
            /* the shard: 1 / ranks of the moments, plus fewer than `ranks` shared elements per span */
            size_t whole = reference.optimizer_state_bytes, share = sharded.optimizer_state_bytes;
            CHECK(whole == 2 * sizeof(float) * reference.count);
            if (!(share >= whole / (size_t)ranks && share < whole / (size_t)ranks + 2 * sizeof(float) * 64 * ranks)) {
                fprintf(stderr, "  %s: optimizer state %zu bytes a rank, of %zu\n", what, share, whole);
                check_case_failed = 1;
            }
            if (variant >= 2)
                free(sharded.values);
        }
        free(stage_values[0]);
        free(stage_values[1]);
        free(reference.values);
    }
    free(data);
}

/* One rank with offload_optimizer updates on the host beside the next pass
 * (update_gate.h): the same bytes and losses as updating in place, for LoRA,
 * full fine-tuning, and full fine-tuning with a float master copy (the cast
 * after each position's update). */
TEST(one_rank_offloaded_update_beside_the_next_pass_matches_in_place)
{
    char *data = write_data("one_rank_offload", 26);
    ft_update_gate_test_delay(2000); /* a pass that did not wait would read values before their update */
    for (int variant = 0; variant < 3; variant++) {
        ft_finetuning finetuning = variant == 0 ? FT_FINETUNE_LORA : FT_FINETUNE_FULL;
        ft_model_test_master_copy(variant == 2);
        run_shape shape = {1, 0, 2, 2, finetuning, NULL, 0, false, false};
        run_result in_place = run(data, shape);
        shape.offload = true;
        run_result offloaded = run(data, shape);
        ft_model_test_master_copy(false);
        CHECK_INT(in_place.status, 0);
        CHECK_INT(offloaded.status, 0);
        CHECK(in_place.steps.n >= 4 && in_place.steps.n == offloaded.steps.n);
        CHECK(memcmp(in_place.steps.losses, offloaded.steps.losses, (size_t)in_place.steps.n * sizeof(double)) == 0);
        CHECK(in_place.count == offloaded.count &&
              memcmp(in_place.values, offloaded.values, in_place.count * sizeof(float)) == 0);
        free(in_place.values);
        free(offloaded.values);
    }
    ft_update_gate_test_delay(0);
    free(data);
}

TEST(lora_stages_1_and_2_match_stage_0) { stages_match_stage_zero(FT_FINETUNE_LORA); }

TEST(full_fine_tuning_stages_1_and_2_match_stage_0) { stages_match_stage_zero(FT_FINETUNE_FULL); }

/* Interrupted `first` at step 3 (checkpoint-3), resumed as `resumed`. */
static run_result interrupted_then(const char *data, const char *name, run_shape first, run_shape resumed)
{
    char *dir = ft_path_join(root, name);
    first.checkpoint_dir = dir;
    first.cancel_after = 3;
    run_result stopped = run(data, first);
    CHECK_INT(stopped.status, -1);
    CHECK_INT(stopped.steps.n, 3);
    free(stopped.values);
    resumed.checkpoint_dir = dir;
    run_result out = run(data, resumed);
    CHECK_INT(out.status, 0);
    free(dir);
    return out;
}

TEST(a_zero_2_checkpoint_resumes_with_other_ranks_and_stages)
{
    char *data = write_data("resume", 40); /* a global batch of 12: 4 steps an epoch, 8 in all */
    run_shape straight = {2, 2, 3, 2, FT_FINETUNE_LORA, NULL, 0, false, false};
    run_result reference = run(data, straight);
    CHECK_INT(reference.status, 0);
    CHECK_INT(reference.steps.n, 8);
    run_shape others[] = {{2, 1, 3, 2, FT_FINETUNE_LORA, NULL, 0, false, false},
                          {2, 2, 3, 2, FT_FINETUNE_LORA, NULL, 0, true, false},
                          {1, 0, 3, 4, FT_FINETUNE_LORA, NULL, 0, false, false},
                          {3, 1, 2, 2, FT_FINETUNE_LORA, NULL, 0, false, false}};
    const char *names[] = {"resumed_2_ranks_zero_1", "resumed_2_ranks_zero_2_offload", "resumed_1_rank_zero_0",
                           "resumed_3_ranks_zero_1"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        run_result throughout = run(data, others[i]); /* those ranks from the start: the reordering's distance */
        CHECK_INT(throughout.status, 0);
        double reordering = max_difference(throughout.values, reference.values, reference.count);
        run_result resumed = interrupted_then(data, names[i], straight, others[i]);
        CHECK_INT(resumed.steps.n, 5);
        double difference = max_difference(resumed.values, reference.values, reference.count);
        bool same_ranks = others[i].ranks == 2;
        if (same_ranks ? difference != 0.0 : !(difference <= reordering)) {
            fprintf(stderr, "  %s: %g from the uninterrupted run; %d ranks throughout: %g\n", names[i], difference,
                    others[i].ranks, reordering);
            check_case_failed = 1;
        }
        for (int s = 0; s < resumed.steps.n; s++)
            if (!(fabs(resumed.steps.losses[s] - reference.steps.losses[s + 3]) <=
                  1e-5 * fabs(reference.steps.losses[s + 3]))) {
                fprintf(stderr, "  %s: step %d's loss %.9g, uninterrupted %.9g\n", names[i], s + 4,
                        resumed.steps.losses[s], reference.steps.losses[s + 3]);
                check_case_failed = 1;
            }
        free(throughout.values);
        free(resumed.values);
    }
    free(reference.values);
    free(data);
}

/* The largest unit param_shards gathers, in f32: the embeddings or a layer. */
static size_t largest_unit_bytes(void)
{
    ft_model_config config;
    CHECK_INT(ft_model_config_load(model_dir, &config), 0);
    size_t count = 0, layer = 0, largest;
    ft_param_tensor *weights = ft_model_weight_list(&config, &count);
    for (size_t i = 0; i < count; i++)
        if (strncmp(weights[i].name, "model.layers.0.", 15) == 0)
            layer += weights[i].count;
    largest = weights[0].count > layer ? weights[0].count : layer; /* weights[0]: the embeddings */
    ft_model_weight_list_free(weights, count);
    return largest * sizeof(float);
}

/* LoRA at stage 3: rank 0 holds its part of each of the 2 layers' adapter
 * values (n / ranks, and the n % ranks every rank keeps) and the two layers
 * the passes gather, where stage 0 holds the whole adapter. */
static void check_adapter_parts(const run_result *sharded, const run_result *reference, int ranks, const char *what)
{
    size_t layers = 2, n = reference->count / layers, r = (size_t)ranks;
    size_t expected = (layers * (n / r + n % r) + 2 * n) * sizeof(float);
    if (reference->adapter_bytes != reference->count * sizeof(float) || sharded->adapter_bytes != expected) {
        fprintf(stderr, "  %s: %zu bytes of adapter values on rank 0, expected %zu (stage 0: %zu of %zu)\n", what,
                sharded->adapter_bytes, expected, reference->adapter_bytes, reference->count * sizeof(float));
        check_case_failed = 1;
    }
}

static void stage_3_matches_stage_0(ft_finetuning finetuning)
{
    char *data = write_data(finetuning == FT_FINETUNE_LORA ? "stage3_lora" : "stage3_full", 26);
    size_t window = 2 * largest_unit_bytes();
    for (int ranks = 2; ranks <= 4; ranks += 2) {
        run_shape shape = {ranks, 0, 2, 2, finetuning, NULL, 0, false, false};
        run_result reference = run(data, shape);
        CHECK_INT(reference.status, 0);
        CHECK(reference.steps.n >= 4);
        size_t whole = reference.parameter_bytes;
        CHECK(whole > 0 && reference.parameter_host_bytes == 0);
        double reordering = finetuning == FT_FINETUNE_FULL ? reordering_difference(data, &reference, shape) : 0.0;
        run_result sharded_in_place = {0};
        for (int variant = 0; variant < 3; variant++) {
            shape.zero_stage = 3;
            shape.offload_param = variant >= 1;
            shape.offload = variant == 2;
            run_result sharded = run(data, shape);
            CHECK_INT(sharded.status, 0);
            char what[80];
            snprintf(what, sizeof what, "%d ranks, ZeRO-3%s%s", ranks, shape.offload_param ? " + offload_param" : "",
                     shape.offload ? " + offload_optimizer" : "");
            matches_stage_zero(&sharded, &reference, 1e-6, reordering, what);
            check_gradient_bytes(&sharded, &reference, finetuning, ranks, 3, shape.offload, what);
            if (variant >= 1 && memcmp(sharded.values, sharded_in_place.values, reference.count * sizeof(float))) {
                fprintf(stderr, "  %s: not stage 3's bytes\n", what);
                check_case_failed = 1;
            }
            /* the shard: 1 / ranks of the weights, plus fewer than `ranks` shared elements per unit (4 units) */
            size_t shard = shape.offload_param ? sharded.parameter_host_bytes : sharded.parameter_bytes - window;
            size_t device = sharded.parameter_bytes - (shape.offload_param ? 0 : shard);
            if (!(shard >= whole / (size_t)ranks && shard < whole / (size_t)ranks + sizeof(float) * 4 * ranks) ||
                device < window || device > window + largest_unit_bytes() / (size_t)ranks) {
                fprintf(stderr, "  %s: a shard of %zu bytes and %zu gathered, of %zu weights\n", what, shard, device,
                        whole);
                check_case_failed = 1;
            } else {
                printf("  %s: rank 0 keeps %zu of the %zu bytes of weights (1/%.2f), and gathers %zu\n", what,
                       shard, whole, (double)whole / (double)shard, device);
            }
            if (finetuning == FT_FINETUNE_LORA)
                check_adapter_parts(&sharded, &reference, ranks, what);
            if (variant == 0)
                sharded_in_place = sharded;
            else
                free(sharded.values);
        }
        free(sharded_in_place.values);
        free(reference.values);
    }
    free(data);
}

/* How far stage 0 on one rank moves when its micro-batches are halved, or
 * doubled (fewer accumulated): sums in another order, as one rank streaming
 * its weights adds each micro-batch into its gradients' shard. */
static double one_rank_reordering(const char *data, const run_result *reference, run_shape shape)
{
    run_shape doubles = shape;
    doubles.batch_size = shape.batch_size * 2;
    doubles.accumulation = shape.accumulation / 2;
    run_result a = run(data, doubles);
    CHECK_INT(a.status, 0);
    double difference = fmax(reordering_difference(data, reference, shape),
                             max_difference(a.values, reference->values, reference->count));
    free(a.values);
    return difference;
}

/* One rank that streams its weights from host memory (ZeRO-3 with
 * offload_param, over a communicator of one): LoRA gives stage 0's bytes; full
 * fine-tuning, whose micro-batches add up in one gradients' shard, stays
 * within what reordering stage 0's sums moves it (one_rank_reordering). Every weight stays in host
 * memory beside a window of two units; the gradients are whole and a window. */
TEST(one_rank_streaming_its_weights_matches_stage_0)
{
    char *data = write_data("stream", 26);
    size_t window = 2 * largest_unit_bytes();
    for (int f = 0; f < 2; f++) {
        ft_finetuning finetuning = f ? FT_FINETUNE_FULL : FT_FINETUNE_LORA;
        run_shape shape = {1, 0, 2, 2, finetuning, NULL, 0, false, false};
        run_result reference = run(data, shape);
        CHECK_INT(reference.status, 0);
        CHECK(reference.steps.n >= 4);
        double reordering = f ? one_rank_reordering(data, &reference, shape) : 0.0;
        for (int offload = 0; offload < 2; offload++) {
            run_shape streamed = shape;
            streamed.zero_stage = 3;
            streamed.offload_param = true;
            streamed.offload = offload;
            run_result s = run(data, streamed);
            CHECK_INT(s.status, 0);
            char what[80];
            snprintf(what, sizeof what, "one rank, %s, ZeRO-3 + offload_param%s", f ? "full" : "LoRA",
                     offload ? " + offload_optimizer" : "");
            matches_stage_zero(&s, &reference, f ? 1e-5 : 0.0, reordering, what); /* the losses: within 1e-5 relative */
            check_gradient_bytes(&s, &reference, finetuning, 1, f ? 3 : 0, offload, what);
            if (s.parameter_host_bytes != reference.parameter_bytes || s.parameter_bytes != window) {
                fprintf(stderr, "  %s: %zu bytes of weights in host memory and %zu gathered, of %zu\n", what,
                        s.parameter_host_bytes, s.parameter_bytes, reference.parameter_bytes);
                check_case_failed = 1;
            }
            free(s.values);
        }
        free(reference.values);
    }
    free(data);
}

/* The largest difference between the tensors of two safetensors files, which
 * must hold the same names and shapes. */
static double file_difference(const char *a_path, const char *b_path)
{
    ft_safetensors *a = NULL, *b = NULL;
    CHECK_INT(ft_safetensors_open(a_path, &a), 0);
    CHECK_INT(ft_safetensors_open(b_path, &b), 0);
    double most = a && b && ft_safetensors_count(a) == ft_safetensors_count(b) ? 0.0 : INFINITY;
    for (size_t i = 0; a && b && i < ft_safetensors_count(a); i++) {
        const ft_tensor_view *x = ft_safetensors_at(a, i), *y = ft_safetensors_find(b, x->name);
        if (!y || y->size_bytes != x->size_bytes || y->dtype != FT_DTYPE_F32 || x->dtype != FT_DTYPE_F32) {
            most = INFINITY;
            continue;
        }
        most = fmax(most, max_difference(x->data, y->data, x->size_bytes / sizeof(float)));
    }
    ft_safetensors_close(a);
    ft_safetensors_close(b);
    return most;
}

/* One rank streaming its weights against stage 0 over a checkpoint: the
 * checkpoints of the same step hold the same tensors (values and moments)
 * within what halving stage 0's micro-batches moves them; a streaming run resumed streaming ends with the uninterrupted one's
 * bytes; each shape resumes the other's checkpoint with the uninterrupted
 * stage-0 run's later losses, to 1e-5 relative. */
TEST(a_streaming_checkpoint_and_a_stage_0_one_resume_as_each_other)
{
    char *data = write_data("stream_resume", 40);
    run_shape plain = {1, 0, 2, 2, FT_FINETUNE_FULL, NULL, 0, false, false};
    run_shape streamed = {1, 3, 2, 2, FT_FINETUNE_FULL, NULL, 0, true, true};
    run_result reference = run(data, plain), streamed_throughout = run(data, streamed);
    CHECK_INT(reference.status, 0);
    CHECK_INT(streamed_throughout.status, 0);
    run_result again = interrupted_then(data, "stream_again", streamed, streamed);
    if (memcmp(again.values, streamed_throughout.values, reference.count * sizeof(float)) != 0) {
        fprintf(stderr, "  resumed streaming: not the uninterrupted run's bytes (%g from them)\n",
                max_difference(again.values, streamed_throughout.values, reference.count));
        check_case_failed = 1;
    }
    const char *files[] = {"model.safetensors", "optimizer.safetensors"};
    for (int into_streaming = 0; into_streaming < 2; into_streaming++) {
        const char *name = into_streaming ? "into_stream" : "from_stream";
        run_result resumed = interrupted_then(data, name, into_streaming ? plain : streamed,
                                              into_streaming ? streamed : plain);
        CHECK_INT(resumed.steps.n, reference.steps.n - 3);
        for (int i = 0; i < resumed.steps.n; i++)
            if (!(fabs(resumed.steps.losses[i] - reference.steps.losses[i + 3]) <=
                  1e-5 * fabs(reference.steps.losses[i + 3]))) {
                fprintf(stderr, "  %s: step %d's loss %.9g, uninterrupted %.9g\n", name, i + 4,
                        resumed.steps.losses[i], reference.steps.losses[i + 3]);
                check_case_failed = 1;
            }
        free(resumed.values);
    }
    run_shape halves = plain;
    halves.batch_size = 1;
    halves.accumulation = 4;
    free(interrupted_then(data, "halves_stream", halves, halves).values);
    for (int f = 0; f < 2; f++) { /* checkpoint-2 of each shape, written before either resumed */
        char *a = ft_xasprintf("%s/from_stream/checkpoint-2/%s", root, files[f]);
        char *b = ft_xasprintf("%s/into_stream/checkpoint-2/%s", root, files[f]);
        char *c = ft_xasprintf("%s/halves_stream/checkpoint-2/%s", root, files[f]);
        double difference = file_difference(a, b), reordering = file_difference(c, b);
        if (!(difference <= fmax(1e-7, reordering))) {
            fprintf(stderr, "  checkpoint-2's %s: streaming's and stage 0's differ by %g (halves: %g)\n", files[f],
                    difference, reordering);
            check_case_failed = 1;
        }
        free(a);
        free(b);
        free(c);
    }
    free(again.values);
    free(reference.values);
    free(streamed_throughout.values);
    free(data);
}

/* Full fine-tuning on 4 ranks at ZeRO-3 (its checkpoint gathers the sharded
 * weights, or their master copy, into host memory) and on 2 ranks at ZeRO-1:
 * a run of one shape cancelled after checkpoint-3, resumed with the other
 * (at stage 3, each rank takes its shard of the loaded values). */
static void zero_3_of_4_ranks_and_zero_1_of_2_resume_as_each_other(const char *name, ft_finetuning finetuning,
                                                                   bool offload, bool into_stage_3)
{
    char *data = write_data(name, 40); /* a global batch of 8: 5 steps an epoch, 10 in all */
    run_shape four = {4, 3, 1, 2, finetuning, NULL, 0, offload, true};
    run_shape two = {2, 1, 2, 2, finetuning, NULL, 0, false, false};
    run_shape straight = into_stage_3 ? two : four, other = into_stage_3 ? four : two;
    run_result reference = run(data, straight);
    CHECK_INT(reference.status, 0);
    CHECK_INT(reference.steps.n, 10);
    run_result throughout = run(data, other);
    CHECK_INT(throughout.status, 0);
    double reordering = max_difference(throughout.values, reference.values, reference.count);
    char *resumed_name = ft_xasprintf("%s_resumed", name);
    run_result resumed = interrupted_then(data, resumed_name, straight, other);
    free(resumed_name);
    CHECK_INT(resumed.steps.n, 7);
    double difference = max_difference(resumed.values, reference.values, reference.count);
    if (!(difference <= reordering)) {
        fprintf(stderr, "  %g from the uninterrupted run; 2 ranks throughout: %g\n", difference, reordering);
        check_case_failed = 1;
    }
    for (int s = 0; s < resumed.steps.n; s++)
        if (!(fabs(resumed.steps.losses[s] - reference.steps.losses[s + 3]) <= 1e-5 * fabs(reference.steps.losses[s + 3]))) {
            fprintf(stderr, "  step %d's loss %.9g, uninterrupted %.9g\n", s + 4, resumed.steps.losses[s],
                    reference.steps.losses[s + 3]);
            check_case_failed = 1;
        }
    free(reference.values);
    free(throughout.values);
    free(resumed.values);
    free(data);
}

TEST(a_zero_3_checkpoint_of_4_ranks_resumes_with_zero_1_on_2)
{
    zero_3_of_4_ranks_and_zero_1_of_2_resume_as_each_other("resume3", FT_FINETUNE_FULL, false, false);
}

TEST(a_zero_3_checkpoint_of_the_master_copy_resumes_with_zero_1_on_2)
{
    ft_model_test_master_copy(true);
    zero_3_of_4_ranks_and_zero_1_of_2_resume_as_each_other("resume3_master", FT_FINETUNE_FULL, true, false);
    ft_model_test_master_copy(false);
}

TEST(a_zero_1_checkpoint_of_2_ranks_resumes_with_zero_3_on_4)
{
    zero_3_of_4_ranks_and_zero_1_of_2_resume_as_each_other("into3", FT_FINETUNE_FULL, false, true);
    ft_model_test_master_copy(true);
    zero_3_of_4_ranks_and_zero_1_of_2_resume_as_each_other("into3_master", FT_FINETUNE_FULL, true, true);
    ft_model_test_master_copy(false);
}

/* LoRA's adapter at stage 3 (each rank its part of every layer's values): a
 * checkpoint of it resumes at ZeRO-1 on 2 ranks, and one of those resumes into
 * it, each rank taking its parts from the whole values the file holds. */
TEST(a_lora_checkpoint_resumes_into_and_out_of_zero_3)
{
    zero_3_of_4_ranks_and_zero_1_of_2_resume_as_each_other("lora_resume3", FT_FINETUNE_LORA, false, false);
    zero_3_of_4_ranks_and_zero_1_of_2_resume_as_each_other("lora_into3", FT_FINETUNE_LORA, true, true);
}

/* With a float master copy: ZeRO-3 against stage 0, both with the master copy. */
TEST(full_fine_tuning_with_a_master_copy_stage_3_matches_stage_0)
{
    char *data = write_data("stage3_master", 26);
    run_shape shape = {2, 0, 2, 2, FT_FINETUNE_FULL, NULL, 0, false, false};
    run_result without = run(data, shape);
    CHECK_INT(without.status, 0);
    CHECK_INT(without.master_bytes, 0);
    ft_model_test_master_copy(true);
    for (int ranks = 2; ranks <= 4; ranks += 2) {
        shape = (run_shape){ranks, 0, 2, 2, FT_FINETUNE_FULL, NULL, 0, false, false};
        run_result reference = run(data, shape);
        CHECK_INT(reference.status, 0);
        CHECK(reference.steps.n >= 4);
        size_t whole = reference.master_bytes;
        CHECK_INT(whole, reference.count * sizeof(float));
        double reordering = reordering_difference(data, &reference, shape);
        if (ranks == 2) { /* the master copy of float weights changes no bit */
            same_losses(&reference, &without, 0.0, "stage 0 with the master copy");
            CHECK(memcmp(reference.values, without.values, reference.count * sizeof(float)) == 0);
        }
        float *in_place = NULL; /* stage 3's values without an offload */
        for (int variant = 0; variant < 4; variant++) {
            shape.zero_stage = 3;
            shape.offload = variant % 2 == 1;
            shape.offload_param = variant >= 2;
            run_result sharded = run(data, shape);
            CHECK_INT(sharded.status, 0);
            char what[96];
            snprintf(what, sizeof what, "%d ranks, ZeRO-3 with the master copy%s%s", ranks,
                     shape.offload ? " + offload_optimizer" : "", shape.offload_param ? " + offload_param" : "");
            matches_stage_zero(&sharded, &reference, 1e-6, reordering, what);
            /* the offloads move the state, not the arithmetic: with offload_optimizer AdamW updates the
             * master shard unit by unit on the zero's thread as the next pass gathers (zero.h) */
            if (variant > 0 && memcmp(sharded.values, in_place, reference.count * sizeof(float)) != 0) {
                fprintf(stderr, "  %s: not the bytes of stage 3 without the offloads\n", what);
                check_case_failed = 1;
            }
            /* 1 / ranks of the master copy, plus fewer than `ranks` shared elements per unit (4 units) */
            size_t share = shape.offload ? sharded.master_host_bytes : sharded.master_bytes;
            size_t elsewhere = shape.offload ? sharded.master_bytes : sharded.master_host_bytes;
            if (!(share >= whole / (size_t)ranks && share < whole / (size_t)ranks + sizeof(float) * 4 * ranks) ||
                elsewhere != 0) {
                fprintf(stderr, "  %s: a master shard of %zu bytes (%zu on the other side), of %zu\n", what, share,
                        elsewhere, whole);
                check_case_failed = 1;
            } else {
                printf("  %s: rank 0 keeps %zu of the %zu bytes of the master copy (1/%.2f) in %s memory\n", what,
                       share, whole, (double)whole / (double)share, shape.offload ? "host" : "backend");
            }
            if (variant == 0)
                in_place = sharded.values;
            else
                free(sharded.values);
        }
        free(in_place);
        free(reference.values);
    }
    ft_model_test_master_copy(false);
    free(without.values);
    free(data);
}

TEST(lora_stage_3_matches_stage_0) { stage_3_matches_stage_0(FT_FINETUNE_LORA); }

/* On 3 ranks a layer's adapter values do not split evenly: every rank keeps
 * the last few whole (the shared part), gathered, updated and taken from a
 * checkpoint as the owned ones are. */
TEST(lora_stage_3_on_3_ranks_matches_stage_0_with_a_shared_part)
{
    char *data = write_data("stage3_lora_3", 26);
    run_shape shape = {3, 0, 2, 2, FT_FINETUNE_LORA, NULL, 0, false, false};
    run_result reference = run(data, shape);
    CHECK_INT(reference.status, 0);
    CHECK(reference.count / 2 % 3 != 0); /* a layer's values, not a multiple of 3 */
    shape.zero_stage = 3;
    run_result sharded = run(data, shape);
    CHECK_INT(sharded.status, 0);
    matches_stage_zero(&sharded, &reference, 1e-6, 0.0, "3 ranks, ZeRO-3");
    check_adapter_parts(&sharded, &reference, 3, "3 ranks, ZeRO-3");
    free(sharded.values);
    free(reference.values);
    free(data);
}

TEST(full_fine_tuning_stage_3_matches_stage_0) { stage_3_matches_stage_0(FT_FINETUNE_FULL); }

/* The entries of a folder ("." and ".." aside); -1 when it cannot be read. */
static int entries_in(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* Rank 0's checkpoint failing mid-file (in the values, then in the moments)
 * at ZeRO-3 of full fine-tuning stops every rank with no checkpoint left: the
 * other ranks joined the gathers in the file's order to its end (the writer
 * went on keeping nothing), then learn of the failure; none hangs. */
TEST(a_checkpoint_failing_mid_file_stops_every_rank)
{
    char *data = write_data("failing", 26);
    ft_model_config config;
    CHECK_INT(ft_model_config_load(model_dir, &config), 0);
    size_t n_weights = 0;
    ft_param_tensor *weights = ft_model_weight_list(&config, &n_weights);
    ft_model_weight_list_free(weights, n_weights);
    for (int in_moments = 0; in_moments <= 1; in_moments++) {
        char *dir = ft_path_join(root, in_moments ? "failing_moments" : "failing_values");
        run_shape shape = {2, 3, 2, 2, FT_FINETUNE_FULL, dir, 0, false, false};
        rank0_checkpoint_fails_after = in_moments ? n_weights + 3 : 3;
        run_result r = run(data, shape);
        rank0_checkpoint_fails_after = 0;
        CHECK_INT(r.status, -1);
        CHECK(strstr(r.error, "a checkpoint failing on purpose after") != NULL);
        CHECK_INT(entries_in(dir), 0); /* neither checkpoint-2 nor its folder aside */
        free(r.values);
        free(dir);
    }
    free(data);
}

/* After a ZeRO-3 run of full fine-tuning without on_result, the weights are
 * whole in rank 0's host memory (to be saved) and nowhere else: another run
 * on the model is refused on every rank, before any collective, not run on
 * weights that are not there. */
TEST(a_model_unsharded_after_zero_3_refuses_another_run)
{
    char *data = write_data("again", 8);
    run_shape shape = {2, 3, 2, 1, FT_FINETUNE_FULL, NULL, 0, false, false};
    train_again = true;
    run_result r = run(data, shape);
    train_again = false;
    CHECK_INT(r.status, 0);
    CHECK(strstr(r.again_error, "gathered whole into the writing rank's host memory by a ZeRO-3 run") != NULL);
    free(r.values);
    free(data);
}

/* A model loaded for sharded gradients allocated none: a run that would not
 * shard them (here one rank) is refused, saying how to load it instead. */
TEST(a_model_loaded_for_sharded_gradients_refuses_whole_ones)
{
    char *data = write_data("refused", 8);
    ft_model_options model_options = {2, ROW_LENGTH, FT_FINETUNE_FULL, false, {0}, false, false, false, 2, 0, false};
    ft_model *model = NULL;
    CHECK_INT(ft_model_load(model_dir, cpu, &model_options, &model), 0);
    CHECK_INT(ft_model_gradient_shards(model), 2);
    size_t n = 0;
    const ft_param_tensor *tensors = ft_model_trainable(model, &n);
    CHECK(n > 0 && tensors[0].grad == NULL); /* none allocated */
    ft_token_shards *shards = NULL;
    CHECK_INT(ft_token_shards_open(data, "train", &shards), 0);
    ft_train_options options = {.batch_size = 2, .gradient_accumulation_steps = 1, .max_steps = 1,
                                .lr_scheduler_type = FT_LR_LINEAR, .learning_rate = 1e-2,
                                .adamw = {0.9, 0.999, 1e-8, 0.0}, .ranks = 1};
    ft_train_result result;
    CHECK_INT(ft_train(model, shards, &options, &result), -1);
    CHECK_STR(ft_error_message(), "the model was loaded with gradient_shards = 2, for ZeRO-2 or 3 over that many "
                                  "ranks, but trains with zero_stage = 0 over 1 rank: load it with gradient_shards = 0");
    ft_token_shards_close(shards);
    ft_model_free(model);
    free(data);
}

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    cpu = ft_backend_cpu_create(1);
    write_model();
    RUN(one_rank_offloaded_update_beside_the_next_pass_matches_in_place);
    RUN(lora_stages_1_and_2_match_stage_0);
    RUN(full_fine_tuning_stages_1_and_2_match_stage_0);
    RUN(a_zero_2_checkpoint_resumes_with_other_ranks_and_stages);
    RUN(lora_stage_3_matches_stage_0);
    RUN(lora_stage_3_on_3_ranks_matches_stage_0_with_a_shared_part);
    RUN(a_zero_3_checkpoint_of_4_ranks_resumes_with_zero_1_on_2);
    RUN(full_fine_tuning_stage_3_matches_stage_0);
    RUN(full_fine_tuning_with_a_master_copy_stage_3_matches_stage_0);
    RUN(a_zero_3_checkpoint_of_the_master_copy_resumes_with_zero_1_on_2);
    RUN(a_zero_1_checkpoint_of_2_ranks_resumes_with_zero_3_on_4);
    RUN(a_lora_checkpoint_resumes_into_and_out_of_zero_3);
    RUN(one_rank_streaming_its_weights_matches_stage_0);
    RUN(a_streaming_checkpoint_and_a_stage_0_one_resume_as_each_other);
    RUN(a_checkpoint_failing_mid_file_stops_every_rank);
    RUN(a_model_loaded_for_sharded_gradients_refuses_whole_ones);
    RUN(a_model_unsharded_after_zero_3_refuses_another_run);
    ft_backend_destroy(cpu);
    free(model_dir);
    ft_remove_tree(root);
    return check_done();
}
