/* Checkpoints: a round trip of tensors, moments and counters; the same files
 * written in steps (ZeRO's writer) and read in place (mapped); interrupted
 * writes ignored and deleted; save_total_limit; checkpoints of another run or
 * shape refused; and the space check refusing before anything is written, under
 * a real RLIMIT_FSIZE in a child process and against the real free space. */
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/model/checkpoint.h"

static ft_backend *cpu;
static char root[] = "/tmp/ftpipe-checkpoint.XXXXXX";

#define N_A 4096
#define N_B 6

typedef struct {
    float a[N_A], grad_a[N_A], b[N_B], grad_b[N_B];
    ft_param_tensor tensors[2];
    ft_adamw *optimizer;
} run;

static void run_init(run *r, float start)
{
    memset(r, 0, sizeof *r);
    for (int i = 0; i < N_A; i++)
        r->a[i] = start + 0.001f * (float)i;
    for (int i = 0; i < N_B; i++)
        r->b[i] = -start * (float)i;
    r->tensors[0] = (ft_param_tensor){"layer.a", r->a, r->grad_a, N_A, true, 2, {64, 64}};
    r->tensors[1] = (ft_param_tensor){"layer.b", r->b, r->grad_b, N_B, false, 1, {N_B, 0}};
    ft_adamw_config config = {0.9, 0.999, 1e-8, 0.01};
    CHECK_INT(ft_adamw_create(cpu, r->tensors, 2, &config, &r->optimizer), 0);
}

/* One AdamW step with made-up gradients, so the moments are not zero. */
static void take_step(run *r, int step)
{
    for (int i = 0; i < N_A; i++)
        r->grad_a[i] = (float)((i * 7 + step) % 13) - 6.0f;
    for (int i = 0; i < N_B; i++)
        r->grad_b[i] = 0.5f * (float)(i + step);
    ft_adamw_step(r->optimizer, 1e-3);
}

static ft_checkpoint_state state_at(int64_t step)
{
    ft_checkpoint_state state = {step, 1, 24, 3.25 * (double)step, 0.125, 2, "0123456789abcdef0123456789abcdef"};
    return state;
}

static char *folder(const char *name)
{
    char *path = ft_path_join(root, name);
    ft_remove_tree(path);
    return path;
}

static bool exists_in(const char *dir, const char *name)
{
    char *path = ft_path_join(dir, name);
    bool found = ft_path_exists(path);
    free(path);
    return found;
}

TEST(round_trip_restores_tensors_moments_and_counters)
{
    char *dir = folder("round");
    run saved, loaded;
    run_init(&saved, 1.0f);
    take_step(&saved, 1);
    take_step(&saved, 2);
    ft_checkpoint_state state = state_at(2);
    state.loss_sum = 0.1 + 0.2; /* needs all 17 digits to come back equal */
    CHECK_INT(ft_checkpoint_save(dir, cpu, saved.tensors, 2, saved.optimizer, &state, 0), 0);
    CHECK(exists_in(dir, "checkpoint-2/model.safetensors") && exists_in(dir, "checkpoint-2/optimizer.safetensors"));
    CHECK(!exists_in(dir, "checkpoint-2.tmp"));

    run_init(&loaded, 5.0f);
    ft_checkpoint_state back;
    CHECK_INT(ft_checkpoint_load_latest(dir, cpu, loaded.tensors, 2, loaded.optimizer, state.run_id, &back), 1);
    CHECK(memcmp(saved.a, loaded.a, sizeof saved.a) == 0 && memcmp(saved.b, loaded.b, sizeof saved.b) == 0);
    for (size_t i = 0; i < 2; i++) {
        float *m1, *v1, *m2, *v2;
        ft_adamw_moments(saved.optimizer, i, &m1, &v1);
        ft_adamw_moments(loaded.optimizer, i, &m2, &v2);
        CHECK(memcmp(m1, m2, saved.tensors[i].count * sizeof(float)) == 0);
        CHECK(memcmp(v1, v2, saved.tensors[i].count * sizeof(float)) == 0);
    }
    CHECK_INT(ft_adamw_step_count(loaded.optimizer), 2);
    CHECK(back.global_step == 2 && back.epoch == 1 && back.epoch_row == 24 && back.log_steps == 2);
    CHECK(back.loss_sum == 0.1 + 0.2 && back.log_loss_sum == 0.125);
    /* the next step from either gives the same bytes */
    take_step(&saved, 3);
    take_step(&loaded, 3);
    CHECK(memcmp(saved.a, loaded.a, sizeof saved.a) == 0);
    ft_adamw_free(saved.optimizer);
    ft_adamw_free(loaded.optimizer);
    free(dir);
}

/* A source of host arrays (ZeRO's readers stand in for it), asked in the file's order. */
typedef struct {
    const float *values[2], *moments; /* moments: every exp_avg, then every exp_avg_sq */
    size_t counts[2];
    size_t order[4], n, asked;
    bool out_of_order;
} host_source;

static int from_host(void *context, size_t tensor, int part, float *to, bool moments)
{
    host_source *h = context;
    size_t parts = moments ? 2 : 1;
    if (h->asked >= h->n || h->order[h->asked] != tensor * parts + (size_t)part)
        h->out_of_order = true;
    h->asked++;
    const float *from = h->values[tensor];
    if (moments)
        from = h->moments + (size_t)part * (h->counts[0] + h->counts[1]) + (tensor ? h->counts[0] : 0);
    memcpy(to, from, h->counts[tensor] * sizeof(float));
    return 0;
}

static int values_from_host(void *context, size_t tensor, int part, float *to)
{
    return from_host(context, tensor, part, to, false);
}

static int moments_from_host(void *context, size_t tensor, int part, float *to)
{
    return from_host(context, tensor, part, to, true);
}

/* Written in steps (ZeRO's writer): the values and then the moments made by a
 * source tensor by tensor, asked in ft_checkpoint_order's order, give the same
 * files as one rank's save, and the mapped checkpoint points at them in
 * place; a writer abandoned after the values leaves nothing behind. */
TEST(steps_write_the_same_checkpoint_and_it_maps_in_place)
{
    char *dir = folder("steps"), *whole = folder("steps_whole");
    run r;
    run_init(&r, 2.0f);
    take_step(&r, 1);
    ft_checkpoint_state state = state_at(1);
    CHECK_INT(ft_checkpoint_save(whole, cpu, r.tensors, 2, r.optimizer, &state, 0), 0);
    float *moments = ft_xmalloc(2 * (N_A + N_B) * sizeof(float)); /* every exp_avg, then every exp_avg_sq */
    for (size_t i = 0, at = 0; i < 2; at += r.tensors[i].count, i++) {
        float *m, *v;
        ft_adamw_moments(r.optimizer, i, &m, &v);
        memcpy(moments + at, m, r.tensors[i].count * sizeof(float));
        memcpy(moments + N_A + N_B + at, v, r.tensors[i].count * sizeof(float));
    }
    host_source values = {{r.a, r.b}, NULL, {N_A, N_B}, {0}, 0, 0, false}, both = values;
    both.moments = moments;
    values.n = ft_checkpoint_order(r.tensors, 2, false, values.order);
    both.n = ft_checkpoint_order(r.tensors, 2, true, both.order);
    CHECK_INT(values.n, 2);
    CHECK_INT(both.n, 4);
    ft_checkpoint_writer *writer = NULL;
    CHECK_INT(ft_checkpoint_begin(dir, r.tensors, 2, &state, &writer), 0);
    CHECK_INT(ft_checkpoint_write_values_from(writer, values_from_host, &values), 0);
    CHECK_INT(ft_checkpoint_write_moments_from(writer, moments_from_host, &both), 0);
    CHECK_INT(ft_checkpoint_finish(writer, 0), 0);
    CHECK(values.asked == 2 && both.asked == 4 && !values.out_of_order && !both.out_of_order);
    const char *files[] = {"checkpoint-1/model.safetensors", "checkpoint-1/optimizer.safetensors"};
    for (int f = 0; f < 2; f++) {
        char *a = ft_path_join(dir, files[f]), *b = ft_path_join(whole, files[f]), *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        CHECK(ft_read_file(a, &x, &nx) == 0 && ft_read_file(b, &y, &ny) == 0 && nx == ny && memcmp(x, y, nx) == 0);
        free(a);
        free(b);
        free(x);
        free(y);
    }
    ft_checkpoint_mapped mapped;
    ft_checkpoint_state back;
    CHECK_INT(ft_checkpoint_map_latest(dir, r.tensors, 2, state.run_id, &back, &mapped), 1);
    CHECK(memcmp(mapped.values[0], r.a, sizeof r.a) == 0 && memcmp(mapped.values[1], r.b, sizeof r.b) == 0);
    CHECK(memcmp(mapped.exp_avg[1], moments + N_A, N_B * sizeof(float)) == 0);
    CHECK(memcmp(mapped.exp_avg_sq[0], moments + N_A + N_B, N_A * sizeof(float)) == 0);
    ft_checkpoint_unmap(&mapped);
    /* abandoned after the values: no checkpoint, no folder aside */
    state = state_at(2);
    CHECK_INT(ft_checkpoint_begin(dir, r.tensors, 2, &state, &writer), 0);
    CHECK_INT(ft_checkpoint_write_values(writer, cpu), 0);
    ft_checkpoint_abandon(writer);
    CHECK(!exists_in(dir, "checkpoint-2") && !exists_in(dir, "checkpoint-2.tmp"));
    CHECK_INT(ft_checkpoint_map_latest(dir, r.tensors, 2, state.run_id, &back, &mapped), 1);
    CHECK_INT(back.global_step, 1);
    ft_checkpoint_unmap(&mapped);
    free(moments);
    ft_adamw_free(r.optimizer);
    free(dir);
    free(whole);
}

TEST(an_empty_folder_has_no_checkpoint)
{
    char *dir = folder("empty");
    run r;
    run_init(&r, 1.0f);
    ft_checkpoint_state back;
    CHECK_INT(ft_checkpoint_load_latest(dir, cpu, r.tensors, 2, r.optimizer, "x", &back), 0);
    ft_adamw_free(r.optimizer);
    free(dir);
}

TEST(interrupted_writes_are_ignored_and_deleted)
{
    char *dir = folder("leftover");
    run r;
    run_init(&r, 1.0f);
    ft_checkpoint_state state = state_at(3);
    CHECK_INT(ft_checkpoint_save(dir, cpu, r.tensors, 2, r.optimizer, &state, 0), 0);
    char *leftover = ft_path_join(dir, "checkpoint-9.tmp");
    CHECK_INT(ft_mkdir_p(leftover), 0);
    char *junk = ft_path_join(leftover, "model.safetensors");
    CHECK_INT(ft_write_file_atomic(junk, "half", 4), 0);
    ft_checkpoint_state back;
    CHECK_INT(ft_checkpoint_load_latest(dir, cpu, r.tensors, 2, r.optimizer, state.run_id, &back), 1);
    CHECK_INT(back.global_step, 3);
    CHECK(!ft_path_exists(leftover));
    ft_adamw_free(r.optimizer);
    free(junk);
    free(leftover);
    free(dir);
}

TEST(save_total_limit_keeps_the_newest)
{
    char *dir = folder("limit");
    run r;
    run_init(&r, 1.0f);
    for (int64_t step = 5; step <= 20; step += 5) {
        ft_checkpoint_state state = state_at(step);
        CHECK_INT(ft_checkpoint_save(dir, cpu, r.tensors, 2, r.optimizer, &state, 2), 0);
    }
    CHECK(!exists_in(dir, "checkpoint-5") && !exists_in(dir, "checkpoint-10"));
    CHECK(exists_in(dir, "checkpoint-15") && exists_in(dir, "checkpoint-20"));
    ft_checkpoint_state back;
    CHECK_INT(ft_checkpoint_load_latest(dir, cpu, r.tensors, 2, r.optimizer, "0123456789abcdef0123456789abcdef",
                                        &back),
              1);
    CHECK_INT(back.global_step, 20); /* numerically newest, not by name order (5 < 10 < 15 < 20) */
    ft_adamw_free(r.optimizer);
    free(dir);
}

TEST(refuses_a_checkpoint_of_another_run_or_shape)
{
    char *dir = folder("other");
    run r;
    run_init(&r, 1.0f);
    ft_checkpoint_state state = state_at(4);
    CHECK_INT(ft_checkpoint_save(dir, cpu, r.tensors, 2, r.optimizer, &state, 0), 0);
    ft_checkpoint_state back;
    CHECK_INT(ft_checkpoint_load_latest(dir, cpu, r.tensors, 2, r.optimizer, "ffffffffffffffffffffffffffffffff", &back),
              -1);
    CHECK(strstr(ft_error_message(), "belongs to another run") != NULL);
    r.tensors[0].shape[0] = 32;
    r.tensors[0].shape[1] = 128;
    CHECK_INT(ft_checkpoint_load_latest(dir, cpu, r.tensors, 2, r.optimizer, state.run_id, &back), -1);
    CHECK(strstr(ft_error_message(), "tensor layer.a is not F32 of the trained shape") != NULL);
    r.tensors[0].name = "layer.c";
    CHECK_INT(ft_checkpoint_load_latest(dir, cpu, r.tensors, 2, r.optimizer, state.run_id, &back), -1);
    CHECK(strstr(ft_error_message(), "layer.c") != NULL);
    ft_adamw_free(r.optimizer);
    free(dir);
}

/* In a child under RLIMIT_FSIZE of 8 KiB: the 32 KiB optimizer file would raise
 * SIGXFSZ and kill it; the check must refuse first and write nothing. */
TEST(refuses_a_file_larger_than_rlimit_fsize)
{
    char *dir = folder("fsize");
    CHECK_INT(ft_mkdir_p(dir), 0);
    fflush(NULL);
    pid_t child = fork();
    if (child == 0) {
        struct rlimit limit = {8192, 8192};
        setrlimit(RLIMIT_FSIZE, &limit);
        run r;
        run_init(&r, 1.0f);
        ft_checkpoint_state state = state_at(7);
        int status = ft_checkpoint_save(dir, cpu, r.tensors, 2, r.optimizer, &state, 0);
        bool message = strstr(ft_error_message(), "checkpoint at step 7 writes a file of 32.7 KiB, but this process "
                                                  "may write files of at most 8.0 KiB (RLIMIT_FSIZE") != NULL;
        bool nothing = !exists_in(dir, "checkpoint-7") && !exists_in(dir, "checkpoint-7.tmp");
        if (!message)
            fprintf(stderr, "  child: %s\n", ft_error_message());
        ft_adamw_free(r.optimizer);
        _exit(status == -1 && message && nothing ? 0 : 1);
    }
    int status = 0;
    CHECK_INT(waitpid(child, &status, 0), child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    free(dir);
}

TEST(refuses_more_than_the_free_space)
{
    char *dir = folder("space");
    CHECK_INT(ft_mkdir_p(dir), 0);
    uint64_t free_bytes = 0;
    CHECK_INT(ft_free_space_bytes(dir, &free_bytes), 0);
    CHECK_INT(ft_checkpoint_check_space(dir, 12, free_bytes / 2, 1), 0);
    uint64_t needed = free_bytes + ((uint64_t)3 << 30);
    CHECK_INT(ft_checkpoint_check_space(dir, 12, needed, 1), -1);
    char needed_text[32];
    ft_format_bytes(needed, needed_text, sizeof needed_text);
    char *expected = ft_xasprintf("checkpoint at step 12 needs %s, %s has ", needed_text, dir);
    CHECK(strncmp(ft_error_message(), expected, strlen(expected)) == 0);
    CHECK(strstr(ft_error_message(), " free: free space, or raise save_steps") != NULL);
    free(expected);
    free(dir);
}

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    cpu = ft_backend_cpu_create(1);
    RUN(round_trip_restores_tensors_moments_and_counters);
    RUN(steps_write_the_same_checkpoint_and_it_maps_in_place);
    RUN(an_empty_folder_has_no_checkpoint);
    RUN(interrupted_writes_are_ignored_and_deleted);
    RUN(save_total_limit_keeps_the_newest);
    RUN(refuses_a_checkpoint_of_another_run_or_shape);
    RUN(refuses_a_file_larger_than_rlimit_fsize);
    RUN(refuses_more_than_the_free_space);
    ft_backend_destroy(cpu);
    ft_remove_tree(root);
    return check_done();
}
