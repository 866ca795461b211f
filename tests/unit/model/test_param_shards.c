/* param_shards: ZeRO-3's weights over 2 and 3 forked ranks (host collectives),
 * on a tiny random Llama (untied head: three kinds of unit):
 *   - the units are the embeddings, each layer, the final norm with lm_head;
 *   - every weight read through the shards during a pass is the whole model's,
 *     bit for bit, whichever way the shards were made (loaded from the files,
 *     or cut from a model loaded whole, which gives the same shard), with and
 *     without offload_param;
 *   - a rank's shard is 1 / ranks of the weights (plus fewer than `ranks`
 *     elements a unit), and the model's memory plan counts the shard (unless
 *     offloaded) and the gather buffers;
 *   - gathering the whole weights into host memory gives the loaded weights,
 *     also in pieces smaller than a unit's part (a rank not keeping them
 *     joins and holds none), releasing them keeps
 *     the shard, and a checkpoint's values (one piece per weight) taken into
 *     the shard give exactly this rank's part of them; unsharding leaves the
 *     loaded weights in host memory on the ranks that keep them;
 *   - full fine-tuning with a float master copy (ft_model_test_master_copy: the
 *     cpu backend takes the path of bf16 weights) shards the master copy as the
 *     weights, loaded or cut alike, in the backend's memory (counted in the
 *     plan) or in host memory with offload_optimizer (not counted), the shard
 *     cast from it, and gathering it whole into host memory, releasing,
 *     taking a checkpoint's values and unsharding behave as above;
 *   - a training pass (full fine-tuning, recomputation on) over the shards
 *     issues each unit's gather before the previous unit computes (gathered
 *     ahead), but for the embeddings that start it and a tied head's embeddings,
 *     and gives the loss of the whole model bit for bit;
 *   - the model folder written through the shards a unit at a time (the
 *     result's way, with and without offload and the master copy) holds the
 *     whole model's bytes, and a write failing midway on the writing rank
 *     leaves no file and the ranks in step for the next. */
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "tiny_models.h"
#include "ftpipe/backend/comm_host.h"
#include "ftpipe/backend/comm_solo.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/model/model_save.h"
#include "ftpipe/model/param_shards.h"

static ft_backend *cpu;
static char root[] = "/tmp/ftpipe-param-shards.XXXXXX";
static char *model_dir, *tied_model_dir;

static const ft_model_options options = {1, 8, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};

/* Every weight of the whole model, back to back in HF order. */
static float *whole_weights(const ft_model *model, size_t *count)
{
    size_t n;
    const ft_param_tensor *weights = ft_model_weights(model, &n);
    *count = 0;
    for (size_t i = 0; i < n; i++)
        *count += weights[i].count;
    float *out = ft_xmalloc(*count * sizeof(float));
    for (size_t i = 0, at = 0; i < n; at += weights[i].count, i++)
        memcpy(out + at, weights[i].value, weights[i].count * sizeof(float));
    return out;
}

/* Gathering the whole trained values into host memory: every rank gets the
 * whole model's, also in pieces smaller than a unit's part (or, not keeping
 * them, none, after joining the gathers); released, the shard (`shard`, its
 * first `bytes`: as cut) stays; a checkpoint's values taken (every one
 * doubled), this rank's shard holds its part of them, and taking the original
 * values restores it. */
static void check_gathered_whole(ft_model *loaded, ft_param_shards *shards, const float *whole, size_t whole_count,
                                 const void *shard, size_t bytes)
{
    size_t n_weights;
    const ft_param_tensor *weights = ft_model_weights(loaded, &n_weights);
    float *values = ft_param_shards_master(shards) ? ft_param_shards_master(shards) : ft_param_shards_values(shards);
    CHECK_INT(ft_param_shards_gather_whole(shards, false), 0);
    CHECK(weights[0].value == NULL && !ft_model_weights_on_host(loaded));
    ft_param_shards_release_whole(shards);
    CHECK_INT(ft_param_shards_gather_whole(shards, true), 0);
    CHECK(ft_model_weights_on_host(loaded));
    size_t gathered_count;
    float *gathered = whole_weights(loaded, &gathered_count);
    CHECK(gathered_count == whole_count && memcmp(gathered, whole, whole_count * sizeof(float)) == 0);
    free(gathered);
    ft_param_shards_release_whole(shards);
    ft_param_shards_test_pieces(7); /* each part in pieces of 7 elements and a rest, as on a GPU */
    CHECK_INT(ft_param_shards_gather_whole(shards, true), 0);
    ft_param_shards_test_pieces(0);
    gathered = whole_weights(loaded, &gathered_count);
    CHECK(memcmp(gathered, whole, whole_count * sizeof(float)) == 0);
    free(gathered);
    ft_param_shards_release_whole(shards);
    CHECK(weights[0].value == NULL && !ft_model_weights_on_host(loaded));
    CHECK(memcmp(values, shard, bytes) == 0);
    /* a checkpoint's values, every one doubled: the shard takes its own part of them */
    float *doubled = ft_xmalloc(whole_count * sizeof(float));
    const float **pieces = ft_xcalloc(n_weights, sizeof *pieces), **halves = ft_xcalloc(n_weights, sizeof *halves);
    for (size_t i = 0, at = 0; i < n_weights; at += weights[i].count, i++) {
        for (size_t k = 0; k < weights[i].count; k++)
            doubled[at + k] = 2.0f * whole[at + k];
        pieces[i] = doubled + at;
        halves[i] = whole + at;
    }
    CHECK_INT(ft_param_shards_take_values(shards, pieces), 0);
    for (size_t k = 0; k < bytes / sizeof(float); k++)
        if (values[k] != 2.0f * ((const float *)shard)[k]) {
            fprintf(stderr, "  element %zu of the shard is not its part of the values taken\n", k);
            check_case_failed = 1;
            break;
        }
    CHECK_INT(ft_param_shards_take_values(shards, halves), 0);
    CHECK(memcmp(values, shard, bytes) == 0);
    free(pieces);
    free(halves);
    free(doubled);
}

/* The failures of one rank's checks (0: none). */
static int check_rank(ft_comm *comm, bool offload, const float *whole, size_t whole_count)
{
    int ranks = comm->size;
    ft_model *loaded = NULL, *cut = NULL;
    CHECK_INT(ft_model_load_sharded(model_dir, cpu, &options, comm, offload, false, &loaded), 0);
    CHECK_INT(ft_model_load(model_dir, cpu, &options, &cut), 0);
    ft_param_shards *shards = ft_model_param_shards(loaded), *cut_shards = NULL;
    CHECK(shards != NULL);
    CHECK_INT(ft_param_shards_create(cut, comm, offload, false, &cut_shards), 0);
    if (!shards || !cut_shards)
        return 1;
    size_t n_units;
    const ft_param_unit *units = ft_param_shards_units(shards, &n_units);
    CHECK_INT(n_units, ft_model_get_config(loaded)->num_hidden_layers + 2);
    size_t n_weights;
    const ft_param_tensor *weights = ft_model_weights(loaded, &n_weights);
    CHECK_INT(units[0].n_weights, 1); /* the embeddings */
    CHECK_INT(units[n_units - 1].first_weight + units[n_units - 1].n_weights, n_weights);
    size_t shard_elements = 0;
    for (size_t u = 0; u < n_units; u++) {
        CHECK(units[u].shared < (size_t)ranks && units[u].count == units[u].per_rank * ranks + units[u].shared);
        shard_elements += units[u].per_rank + units[u].shared;
    }
    size_t shard_bytes = ft_param_shards_shard_bytes(shards);
    CHECK_INT(shard_bytes, shard_elements * sizeof(float));
    CHECK(shard_bytes >= whole_count * sizeof(float) / ranks &&
          shard_bytes < (whole_count / ranks + n_units * ranks) * sizeof(float));
    CHECK_INT(ft_param_shards_offloaded(shards), offload);
    CHECK(memcmp(ft_param_shards_values(shards), ft_param_shards_values(cut_shards), shard_bytes) == 0);
    ft_memory_plan plan = ft_model_memory(loaded);
    CHECK_INT(plan.parameter_bytes, ft_param_shards_gathered_bytes(shards) + (offload ? 0 : shard_bytes));
    /* a pass's reads, in the order forward makes them, and backwards */
    for (int direction = 0; direction < 2; direction++) {
        for (size_t k = 0; k < n_weights; k++) {
            size_t i = direction == 0 ? k : n_weights - 1 - k;
            size_t offset = 0;
            for (size_t j = 0; j < i; j++)
                offset += weights[j].count;
            const float *read = ft_param_shards_weight(shards, offset);
            if (memcmp(read, whole + offset, weights[i].count * sizeof(float)) != 0) {
                fprintf(stderr, "  rank %d: %s read through the shards differs\n", comm->rank, weights[i].name);
                check_case_failed = 1;
            }
        }
        CHECK_INT(ft_param_shards_end_pass(shards), 0);
    }
    CHECK(weights[0].value == NULL);
    check_gathered_whole(loaded, shards, whole, whole_count, ft_param_shards_values(cut_shards), shard_bytes);
    CHECK_INT(ft_param_shards_unshard(shards, comm->rank == 0), 0);
    CHECK(ft_model_param_shards(loaded) == NULL);
    CHECK_INT(ft_model_weights_on_host(loaded), comm->rank == 0);
    if (comm->rank == 0) {
        float *gathered = whole_weights(loaded, &n_weights);
        CHECK(memcmp(gathered, whole, whole_count * sizeof(float)) == 0);
        free(gathered);
    } else {
        CHECK(weights[0].value == NULL);
    }
    ft_model_free(loaded);
    ft_model_free(cut); /* frees its shards */
    return check_case_failed;
}

/* The failures of one rank's checks of the master copy's shard (0: none). */
static int check_master_rank(ft_comm *comm, bool on_host, const float *whole, size_t whole_count)
{
    ft_model_options full = options;
    full.finetuning = FT_FINETUNE_FULL;
    ft_model *loaded = NULL, *cut = NULL;
    CHECK_INT(ft_model_load_sharded(model_dir, cpu, &full, comm, false, on_host, &loaded), 0);
    CHECK_INT(ft_model_load(model_dir, cpu, &full, &cut), 0);
    ft_param_shards *shards = loaded ? ft_model_param_shards(loaded) : NULL, *cut_shards = NULL;
    CHECK_INT(cut ? ft_param_shards_create(cut, comm, false, on_host, &cut_shards) : -1, 0);
    if (!shards || !cut_shards)
        return 1;
    size_t bytes = ft_param_shards_master_bytes(shards);
    CHECK_INT(bytes, ft_param_shards_shard_bytes(shards)); /* float weights: the same elements, the same size */
    CHECK_INT(ft_param_shards_master_on_host(shards), on_host);
    CHECK(memcmp(ft_param_shards_master(shards), ft_param_shards_master(cut_shards), bytes) == 0);
    CHECK(memcmp(ft_param_shards_master(shards), ft_param_shards_values(shards), bytes) == 0); /* cast: a copy */
    CHECK_INT(ft_model_memory(loaded).master_bytes, on_host ? 0 : bytes);
    size_t n_weights;
    const ft_param_tensor *weights = ft_model_weights(loaded, &n_weights);
    CHECK(weights[0].value == NULL);
    check_gathered_whole(loaded, shards, whole, whole_count, ft_param_shards_master(cut_shards), bytes);
    CHECK(memcmp(ft_param_shards_values(shards), ft_param_shards_master(cut_shards), bytes) == 0); /* cast again */
    CHECK_INT(ft_param_shards_unshard(shards, true), 0);
    CHECK(ft_model_weights_on_host(loaded));
    float *gathered = whole_weights(loaded, &n_weights);
    CHECK(memcmp(gathered, whole, whole_count * sizeof(float)) == 0);
    free(gathered);
    ft_model_free(loaded);
    ft_model_free(cut);
    return check_case_failed;
}

/* check(comm, flag, whole, count) on each of `ranks` forked ranks. */
static void over_ranks(int ranks, bool flag, int (*check)(ft_comm *, bool, const float *, size_t))
{
    ft_model *model = NULL;
    CHECK_INT(ft_model_load(model_dir, cpu, &options, &model), 0);
    size_t count = 0;
    float *whole = whole_weights(model, &count);
    ft_model_free(model);
    pid_t children[4];
    ft_comm *comm = NULL;
    int rank = ft_comm_host_fork(ranks, &comm, children);
    CHECK(rank >= 0);
    if (rank != 0)
        check_case_failed = 0;
    int failed = rank >= 0 ? check(comm, flag, whole, count) : 1;
    ft_comm_destroy(comm);
    free(whole);
    if (rank > 0)
        _exit(failed);
    for (int k = 1; k < ranks; k++) {
        int status = 0;
        waitpid(children[k], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
}

/* Rank 0 writes the sharded model's folder into `dir` as the result is
 * written (model_save.h), reading its weights through the shards a unit at a
 * time; every rank then joins the units left. file_limit > 0: rank 0's files
 * may grow to that many bytes only, so its write fails midway. */
static int save_through_units(ft_model *model, ft_comm *comm, const char *dir, rlim_t file_limit)
{
    ft_param_shards *shards = ft_model_param_shards(model);
    ft_param_values *values = NULL;
    CHECK_INT(ft_param_values_open(shards, comm->rank == 0, &values), 0);
    int written = 0;
    ft_param_shards_save_through(shards, values);
    if (comm->rank == 0) {
        struct rlimit saved;
        getrlimit(RLIMIT_FSIZE, &saved);
        struct rlimit limited = {file_limit, saved.rlim_max};
        void (*previous)(int) = signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG */
        if (file_limit > 0)
            setrlimit(RLIMIT_FSIZE, &limited);
        written = ft_model_save(model, model_dir, dir);
        setrlimit(RLIMIT_FSIZE, &saved);
        signal(SIGXFSZ, previous);
    }
    ft_param_shards_save_through(shards, NULL);
    CHECK_INT(ft_param_values_finish(values), 0);
    ft_param_values_close(values);
    return written;
}

/* The failures of one rank's checks (0: none): the folder written through the
 * shards (offloaded or not) holds the bytes of the model loaded whole, saved; a write failing
 * midway (rank 0's files limited) fails on rank 0 alone, leaves no file, and
 * every rank goes on in step: the next write through the same shards is whole. */
static int check_saved_rank(ft_comm *comm, bool offload, const float *whole, size_t whole_count)
{
    ft_model_options full = options;
    full.finetuning = FT_FINETUNE_FULL;
    ft_model *loaded = NULL, *reference = NULL;
    CHECK_INT(ft_model_load_sharded(model_dir, cpu, &full, comm, offload, offload, &loaded), 0);
    CHECK_INT(ft_model_load(model_dir, cpu, &full, &reference), 0);
    if (!loaded || !reference)
        return 1;
    char *expected = ft_path_join(root, "saved_whole"), *failed = ft_path_join(root, "saved_failing"),
         *through = ft_path_join(root, "saved_through");
    if (comm->rank == 0)
        CHECK_INT(ft_model_save(reference, model_dir, expected), 0);
    CHECK_INT(save_through_units(loaded, comm, failed, 4096), comm->rank == 0 ? -1 : 0);
    char *failed_file = ft_path_join(failed, "model.safetensors");
    CHECK(!ft_path_exists(failed_file));
    CHECK_INT(save_through_units(loaded, comm, through, 0), 0);
    if (comm->rank == 0) {
        char *a = ft_path_join(expected, "model.safetensors"), *b = ft_path_join(through, "model.safetensors");
        char *left = NULL, *right = NULL;
        size_t left_bytes = 0, right_bytes = 0;
        CHECK_INT(ft_read_file(a, &left, &left_bytes), 0);
        CHECK_INT(ft_read_file(b, &right, &right_bytes), 0);
        CHECK(left && right && left_bytes == right_bytes && left_bytes > 4096 &&
              memcmp(left, right, left_bytes) == 0);
        free(left);
        free(right);
        free(a);
        free(b);
    }
    free(failed_file);
    free(expected);
    free(failed);
    free(through);
    ft_model_free(loaded);
    ft_model_free(reference);
    (void)whole;
    (void)whole_count;
    return check_case_failed;
}

/* The gathers of one forward and backward pass with L layers: forward gathers
 * the embeddings (at once), every layer and the final unit (each ahead);
 * backward finds the final unit and the last layer held and gathers the other
 * layers ahead. A tied head reads the embeddings again after the final norm,
 * at once, and backward then gathers the last layer too (ahead). */
static int check_prefetch_rank(ft_comm *comm, const char *dir, bool tied)
{
    static const ft_model_options training = {1, 8, FT_FINETUNE_FULL, false, {0}, true, false, false, 0, 0, false};
    ft_model *whole = NULL, *sharded = NULL;
    CHECK_INT(ft_model_load(dir, cpu, &training, &whole), 0);
    CHECK_INT(ft_model_load_sharded(dir, cpu, &training, comm, false, false, &sharded), 0);
    if (!whole || !sharded)
        return 1;
    CHECK_INT(ft_model_get_config(sharded)->tie_word_embeddings, tied);
    double whole_loss = 0.0, sharded_loss = 0.0;
    CHECK_INT(tiny_train_pass(whole, 5, &whole_loss), 0);
    CHECK_INT(tiny_train_pass(sharded, 5, &sharded_loss), 0);
    CHECK(whole_loss == sharded_loss && whole_loss > 0.0);
    unsigned long layers = (unsigned long)ft_model_get_config(sharded)->num_hidden_layers;
    ft_param_shards_stats stats = ft_param_shards_get_stats(ft_model_param_shards(sharded));
    CHECK_INT(stats.gathers, tied ? 2 * layers + 3 : 2 * layers + 1);
    CHECK_INT(stats.gathered_ahead, tied ? 2 * layers + 1 : 2 * layers);
    ft_model_free(whole);
    ft_model_free(sharded);
    return check_case_failed;
}

static void prefetch_over(const char *dir, bool tied)
{
    pid_t children[2];
    ft_comm *comm = NULL;
    int rank = ft_comm_host_fork(2, &comm, children);
    CHECK(rank >= 0);
    if (rank != 0)
        check_case_failed = 0;
    int failed = rank >= 0 ? check_prefetch_rank(comm, dir, tied) : 1;
    ft_comm_destroy(comm);
    if (rank > 0)
        _exit(failed);
    int status = 0;
    waitpid(children[1], &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(a_pass_gathers_each_next_unit_before_the_current_one_computes) { prefetch_over(model_dir, false); }

TEST(a_tied_head_gathers_its_embeddings_at_once_and_the_rest_ahead) { prefetch_over(tied_model_dir, true); }

TEST(two_ranks_read_the_whole_weights_through_their_shards) { over_ranks(2, false, check_rank); }

TEST(three_ranks_with_offload_param_read_the_whole_weights) { over_ranks(3, true, check_rank); }

TEST(a_float_master_copy_is_sharded_as_the_weights)
{
    ft_model_test_master_copy(true);
    over_ranks(2, false, check_master_rank);
    over_ranks(3, true, check_master_rank);
    ft_model_test_master_copy(false);
}

/* A step's update of one rank's streamed weights (a communicator of one,
 * offload_param) running on another thread: a pass gathers each unit only
 * once the update has reached it, so it computes with every unit's new values
 * (here halved) whatever the thread's pace, as a pass over weights halved
 * beforehand does. */
typedef struct {
    ft_param_shards *shards;
} updater;

static void halve_unit(ft_param_shards *shards, size_t u)
{
    size_t n_units;
    const ft_param_unit *unit = &ft_param_shards_units(shards, &n_units)[u];
    float *values = (float *)ft_param_shards_values(shards) + unit->shard_offset;
    for (size_t i = 0; i < unit->per_rank + unit->shared; i++)
        values[i] *= 0.5f;
}

static void *update_slowly(void *argument)
{
    updater *u = argument;
    size_t n_units;
    ft_param_shards_units(u->shards, &n_units);
    for (size_t unit = 0; unit < n_units; unit++) {
        usleep(20000); /* the pass is waiting by now, or soon */
        halve_unit(u->shards, unit);
        ft_param_shards_unit_updated(u->shards, unit);
    }
    return NULL;
}

TEST(the_result_is_written_through_the_shards_a_unit_at_a_time)
{
    over_ranks(2, false, check_saved_rank);
    ft_model_test_master_copy(true); /* the master copy's floats are what is written, from host memory */
    over_ranks(3, true, check_saved_rank);
    ft_model_test_master_copy(false);
}

TEST(a_pass_gathers_a_unit_only_once_the_steps_update_reached_it)
{
    static const ft_model_options training = {1, 8, FT_FINETUNE_FULL, false, {0}, true, false, false, 0, 0, false};
    ft_comm *solo = ft_comm_solo_create(cpu);
    ft_model *before = NULL, *during = NULL;
    CHECK_INT(ft_model_load_sharded(model_dir, cpu, &training, solo, true, false, &before), 0);
    CHECK_INT(ft_model_load_sharded(model_dir, cpu, &training, solo, true, false, &during), 0);
    if (!before || !during)
        return;
    ft_param_shards *first = ft_model_param_shards(before), *second = ft_model_param_shards(during);
    size_t n_units;
    ft_param_shards_units(first, &n_units);
    for (size_t u = 0; u < n_units; u++)
        halve_unit(first, u);
    double expected = 0.0, loss = 0.0;
    CHECK_INT(tiny_train_pass(before, 5, &expected), 0);
    ft_param_shards_begin_updates(second);
    updater u = {second};
    pthread_t thread;
    CHECK_INT(pthread_create(&thread, NULL, update_slowly, &u), 0);
    CHECK_INT(tiny_train_pass(during, 5, &loss), 0);
    pthread_join(thread, NULL);
    CHECK(loss == expected && loss > 0.0);
    ft_model_free(before);
    ft_model_free(during);
    ft_comm_destroy(solo);
}

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    cpu = ft_backend_cpu_create(1);
    model_dir = tiny_model_write(root, "model", FT_ARCH_LLAMA, 3, 7);
    RUN(two_ranks_read_the_whole_weights_through_their_shards);
    RUN(three_ranks_with_offload_param_read_the_whole_weights);
    RUN(a_float_master_copy_is_sharded_as_the_weights);
    tied_model_dir = tiny_model_write(root, "tied", FT_ARCH_QWEN2, 3, 8);
    RUN(a_pass_gathers_each_next_unit_before_the_current_one_computes);
    RUN(a_tied_head_gathers_its_embeddings_at_once_and_the_rest_ahead);
    RUN(a_pass_gathers_a_unit_only_once_the_steps_update_reached_it);
    RUN(the_result_is_written_through_the_shards_a_unit_at_a_time);
    ft_backend_destroy(cpu);
    free(tied_model_dir);
    free(model_dir);
    ft_remove_tree(root);
    return check_done();
}
