/* grad_shards: the reduce-scatters beside backward. The cpu backend has no
 * side queue, so these tests wrap it in one whose side queue holds back the
 * copies it is given (copy_queued, the way a unit's new sums go down to a
 * shard in host memory, and the shared part's into the shard) until an event
 * recorded after them is waited for, synced or the backend checked: as cuda's
 * second stream may run them late. A pass that wrote into a window, or read
 * the shard, before the reduce of that window was done would then read or
 * lose those copies' bytes. On a tiny random Qwen2 (tied head: the
 * embeddings' gradients come at both ends of backward) over one rank (the
 * shard in host memory, one GPU's case), 2 forked ranks (the shard in host
 * memory) and 3 (in the backend's), two micro-batches leave the shard with the
 * bytes the plain cpu backend gives, and some of the copies ran only once the
 * pass came back to their window. */
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "tiny_models.h"
#include "ftpipe/backend/comm_host.h"
#include "ftpipe/backend/comm_solo.h"
#include "ftpipe/model/grad_shards.h"

static ft_backend *cpu;
static char root[] = "/tmp/ftpipe-grad-shards.XXXXXX";
static char *model_dir;

/* --- the cpu backend with a side queue that runs copies late --- */

enum { MOST_HELD = 4096 };
typedef struct {
    void *to;
    const void *from;
    size_t bytes;
} held_copy;

struct ft_backend_event {
    unsigned long through; /* the held copies before it (recorded on the side queue; 0 on the other) */
};

static ft_backend late;
static __thread bool on_side;
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static held_copy held[MOST_HELD];
static unsigned long n_held, n_run;
static unsigned long run_before_check; /* copies run because the pass waited for their event */

static void run_held(unsigned long through, bool by_wait)
{
    pthread_mutex_lock(&held_lock);
    for (; n_run < through; n_run++) {
        held_copy *c = &held[n_run % MOST_HELD];
        memmove(c->to, c->from, c->bytes);
        run_before_check += by_wait;
    }
    pthread_mutex_unlock(&held_lock);
}

static void late_copy_queued(ft_backend *self, void *to, const void *from, size_t bytes)
{
    if (!on_side) {
        cpu->copy_queued(cpu, to, from, bytes);
        return;
    }
    pthread_mutex_lock(&held_lock);
    CHECK(n_held - n_run < MOST_HELD);
    held[n_held++ % MOST_HELD] = (held_copy){to, from, bytes};
    pthread_mutex_unlock(&held_lock);
}

static void late_use_side_queue(ft_backend *self, bool side) { on_side = side; }

static ft_backend_event *late_event_new(ft_backend *self) { return ft_xcalloc(1, sizeof(ft_backend_event)); }

static void late_event_free(ft_backend *self, ft_backend_event *event) { free(event); }

static void late_event_record(ft_backend *self, ft_backend_event *event)
{
    pthread_mutex_lock(&held_lock);
    event->through = on_side ? n_held : 0;
    pthread_mutex_unlock(&held_lock);
}

static void late_event_wait(ft_backend *self, ft_backend_event *event)
{
    if (!on_side) /* the side queue waits for nothing: the other one's ops are done on return */
        run_held(event->through, true);
}

static void late_event_sync(ft_backend *self, ft_backend_event *event) { run_held(event->through, true); }

static int late_check(ft_backend *self)
{
    run_held(n_held, false);
    return cpu->check(cpu);
}

/* The cpu backend's calls (they read only its context) with the side queue's. */
static ft_backend *late_backend(void)
{
    late = *cpu;
    late.copy_queued = late_copy_queued;
    late.use_side_queue = late_use_side_queue;
    late.event_new = late_event_new;
    late.event_free = late_event_free;
    late.event_record = late_event_record;
    late.event_wait = late_event_wait;
    late.event_sync = late_event_sync;
    late.check = late_check;
    return &late;
}

/* --- two micro-batches into the shards --- */

/* This rank's shard after two micro-batches on `backend` (ft_xmalloc'd, *bytes its size). */
static float *shard_after_two(ft_backend *backend, ft_comm *comm, bool on_host, size_t *bytes)
{
    ft_model_options options = {1, 8, FT_FINETUNE_FULL, false, {0}, true, false, false, comm->size, 0, false};
    ft_model *model = NULL;
    ft_grad_shards *grads = NULL;
    CHECK_INT(ft_model_load(model_dir, backend, &options, &model), 0);
    CHECK_INT(ft_grad_shards_create(model, comm, NULL, on_host, &grads), 0);
    if (!grads) {
        ft_model_free(model);
        return NULL;
    }
    double loss = 0.0;
    CHECK_INT(tiny_train_pass(model, 3, &loss), 0);
    CHECK_INT(tiny_train_pass(model, 4, &loss), 0);
    CHECK_INT(backend->check(backend), 0);
    size_t n_units;
    const ft_param_unit *units = ft_grad_shards_units(grads, &n_units);
    const ft_param_unit *last = &units[n_units - 1];
    *bytes = (last->shard_offset + last->per_rank + last->shared) * sizeof(float);
    float *shard = ft_xmalloc(*bytes);
    memcpy(shard, ft_grad_shards_shard(grads), *bytes);
    ft_grad_shards_free(grads);
    ft_model_free(model);
    return shard;
}

static int check_rank(ft_comm *comm, bool on_host)
{
    size_t plain_bytes = 0, late_bytes = 0;
    float *plain = shard_after_two(cpu, comm, on_host, &plain_bytes);
    unsigned long held_before = n_held, waited_before = run_before_check;
    float *held_back = shard_after_two(late_backend(), comm, on_host, &late_bytes);
    if (plain && held_back) {
        CHECK_INT(late_bytes, plain_bytes);
        CHECK(memcmp(plain, held_back, plain_bytes) == 0);
    }
    CHECK(n_held > held_before && n_run == n_held);
    CHECK(run_before_check > waited_before); /* the pass went on beside copies still held */
    printf("  rank %d of %d, shard in %s memory: %lu copies held back, %lu run when the pass waited for them\n",
           comm->rank, comm->size, on_host ? "host" : "backend", n_held - held_before,
           run_before_check - waited_before);
    free(plain);
    free(held_back);
    return check_case_failed;
}

TEST(one_rank_with_the_shard_in_host_memory_matches_the_plain_backend)
{
    ft_comm *solo = ft_comm_solo_create(cpu);
    check_rank(solo, true);
    ft_comm_destroy(solo);
}

static void over_ranks(int ranks, bool on_host)
{
    pid_t children[3];
    ft_comm *comm = NULL;
    int rank = ft_comm_host_fork(ranks, &comm, children);
    CHECK(rank >= 0);
    if (rank != 0)
        check_case_failed = 0;
    int failed = rank >= 0 ? check_rank(comm, on_host) : 1;
    ft_comm_destroy(comm);
    if (rank > 0)
        _exit(failed);
    for (int r = 1; r < ranks; r++) {
        int status = 0;
        waitpid(children[r], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
}

TEST(two_ranks_with_the_shard_in_host_memory_match_the_plain_backend) { over_ranks(2, true); }

/* the shared parts (fewer than 3 elements a unit) go into the shard by copies */
TEST(three_ranks_with_the_shard_in_the_backend_match_the_plain_backend) { over_ranks(3, false); }

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    cpu = ft_backend_cpu_create(1);
    model_dir = tiny_model_write(root, "tied", FT_ARCH_QWEN2, 3, 8);
    RUN(one_rank_with_the_shard_in_host_memory_matches_the_plain_backend);
    RUN(two_ranks_with_the_shard_in_host_memory_match_the_plain_backend);
    RUN(three_ranks_with_the_shard_in_the_backend_match_the_plain_backend);
    ft_backend_destroy(cpu);
    free(model_dir);
    ft_remove_tree(root);
    return check_done();
}
