/* Tests of thread_pool: every item runs once, per-worker indexes stay in range,
 * a watch can stop a job, and a failed pthread_create (injected) never loses work. */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/thread_pool.h"

enum { N_ITEMS = 1000 };

typedef struct {
    atomic_int runs[N_ITEMS];
    size_t n_workers;
    atomic_bool worker_out_of_range;
    atomic_int slow_items;
} counting;

static void count_item(void *context, size_t item, size_t worker)
{
    counting *c = context;
    atomic_fetch_add(&c->runs[item], 1);
    if (worker >= c->n_workers)
        atomic_store(&c->worker_out_of_range, true);
}

static int each_item_ran_once(counting *c)
{
    for (size_t i = 0; i < N_ITEMS; i++)
        if (atomic_load(&c->runs[i]) != 1)
            return 0;
    return 1;
}

TEST(every_item_runs_once)
{
    ft_thread_pool *pool = ft_thread_pool_new(4);
    CHECK_INT(ft_thread_pool_workers(pool), 4);
    for (int job = 0; job < 3; job++) { /* a pool serves job after job */
        counting *c = ft_xcalloc(1, sizeof *c);
        c->n_workers = ft_thread_pool_workers(pool);
        CHECK_INT(ft_thread_pool_run(pool, N_ITEMS, count_item, c, NULL), N_ITEMS);
        CHECK(each_item_ran_once(c));
        CHECK(!atomic_load(&c->worker_out_of_range));
        free(c);
    }
    ft_thread_pool_free(pool);
}

TEST(an_empty_job_returns_at_once)
{
    counting *c = ft_xcalloc(1, sizeof *c);
    CHECK_INT(ft_parallel_for(3, 0, count_item, c, NULL), 0);
    free(c);
}

TEST(failed_thread_starts_lose_no_work)
{
    for (size_t allowed = 0; allowed < 3; allowed++) {
        ft_thread_pool_fail_starts_after(allowed);
        ft_thread_pool *pool = ft_thread_pool_new(8);
        CHECK_INT(ft_thread_pool_workers(pool), allowed + 1);
        counting *c = ft_xcalloc(1, sizeof *c);
        c->n_workers = ft_thread_pool_workers(pool);
        CHECK_INT(ft_thread_pool_run(pool, N_ITEMS, count_item, c, NULL), N_ITEMS);
        CHECK(each_item_ran_once(c));
        CHECK(!atomic_load(&c->worker_out_of_range));
        ft_thread_pool_free(pool);
        free(c);
    }
    ft_thread_pool_fail_starts_after((size_t)-1);
}

static void slow_item(void *context, size_t item, size_t worker)
{
    counting *c = context;
    usleep(2000);
    atomic_fetch_add(&c->runs[item], 1);
}

static int stop_at_once(void *context)
{
    int *n_calls = context;
    (*n_calls)++;
    return 1;
}

static int keep_going(void *context)
{
    int *n_calls = context;
    (*n_calls)++;
    return 0;
}

TEST(a_watch_can_stop_a_job)
{
    /* with threads (the caller watches) and without (the caller works and watches) */
    for (size_t allowed = 0; allowed < 2; allowed++) {
        ft_thread_pool_fail_starts_after(allowed == 0 ? 0 : (size_t)-1);
        counting *c = ft_xcalloc(1, sizeof *c);
        int n_calls = 0;
        ft_pool_watch watch = {stop_at_once, &n_calls, 1};
        size_t n_ran = ft_parallel_for(2, N_ITEMS, slow_item, c, &watch);
        CHECK(n_ran < N_ITEMS);
        CHECK(n_calls >= 1);
        free(c);
    }
    ft_thread_pool_fail_starts_after((size_t)-1);
}

TEST(a_watch_that_goes_on_sees_the_whole_job)
{
    counting *c = ft_xcalloc(1, sizeof *c);
    int n_calls = 0;
    ft_pool_watch watch = {keep_going, &n_calls, 1};
    CHECK_INT(ft_parallel_for(3, 200, slow_item, c, &watch), 200);
    CHECK(n_calls >= 1);
    for (size_t i = 0; i < 200; i++)
        CHECK_INT(atomic_load(&c->runs[i]), 1);
    free(c);
}

int main(void)
{
    RUN(every_item_runs_once);
    RUN(an_empty_job_returns_at_once);
    RUN(failed_thread_starts_lose_no_work);
    RUN(a_watch_can_stop_a_job);
    RUN(a_watch_that_goes_on_sees_the_whole_job);
    return check_done();
}
