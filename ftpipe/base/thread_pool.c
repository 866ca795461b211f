/* thread_pool: workers that sleep between jobs and claim a job's items through
 * one atomic counter, so a slow item never holds back the others. */
#include "ftpipe/base/thread_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/mem.h"

typedef struct {
    ft_thread_pool *pool;
    size_t worker;
} thread_start;

struct ft_thread_pool {
    pthread_t *threads;
    thread_start *starts;
    size_t n_threads;
    pthread_mutex_t lock;
    pthread_cond_t work_ready, job_done;
    unsigned long generation; /* bumped for each job; a thread runs each generation once */
    bool quit;
    size_t n_busy;            /* threads still on the current job */
    /* the current job */
    ft_pool_item_fn *item;
    void *context;
    size_t n_items;
    atomic_size_t next, n_ran;
    atomic_bool stopped;
};

static atomic_size_t starts_left = SIZE_MAX;

void ft_thread_pool_fail_starts_after(size_t n_starts) { atomic_store(&starts_left, n_starts); }

static bool may_start_thread(void)
{
    size_t left = atomic_load(&starts_left);
    while (left != SIZE_MAX) {
        if (left == 0)
            return false;
        if (atomic_compare_exchange_weak(&starts_left, &left, left - 1))
            return true;
    }
    return true;
}

static void work_on_job(ft_thread_pool *pool, size_t worker)
{
    while (!atomic_load(&pool->stopped)) {
        size_t i = atomic_fetch_add(&pool->next, 1);
        if (i >= pool->n_items)
            break;
        pool->item(pool->context, i, worker);
        atomic_fetch_add(&pool->n_ran, 1);
    }
}

static void *thread_main(void *argument)
{
    thread_start *start = argument;
    ft_thread_pool *pool = start->pool;
    unsigned long seen = 0; /* no job can have begun before every thread was created */
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->quit && pool->generation == seen)
            pthread_cond_wait(&pool->work_ready, &pool->lock);
        if (pool->quit)
            break;
        seen = pool->generation;
        pthread_mutex_unlock(&pool->lock);
        work_on_job(pool, start->worker);
        pthread_mutex_lock(&pool->lock);
        if (--pool->n_busy == 0)
            pthread_cond_signal(&pool->job_done);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

ft_thread_pool *ft_thread_pool_new(size_t n_workers)
{
    if (n_workers == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n_workers = cores > 0 ? (size_t)cores : 1;
    }
    ft_thread_pool *pool = ft_xcalloc(1, sizeof *pool);
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->work_ready, NULL);
    pthread_cond_init(&pool->job_done, NULL);
    pool->threads = ft_xcalloc(n_workers, sizeof *pool->threads);
    pool->starts = ft_xcalloc(n_workers, sizeof *pool->starts);
    for (size_t i = 0; i + 1 < n_workers; i++) {
        thread_start *start = &pool->starts[pool->n_threads];
        *start = (thread_start){pool, pool->n_threads + 1};
        if (!may_start_thread() || pthread_create(&pool->threads[pool->n_threads], NULL, thread_main, start) != 0)
            break; /* the rule: go on with the threads we have */
        pool->n_threads++;
    }
    return pool;
}

void ft_thread_pool_free(ft_thread_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->quit = true;
    pthread_cond_broadcast(&pool->work_ready);
    pthread_mutex_unlock(&pool->lock);
    for (size_t i = 0; i < pool->n_threads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->job_done);
    pthread_cond_destroy(&pool->work_ready);
    pthread_mutex_destroy(&pool->lock);
    free(pool->threads);
    free(pool->starts);
    free(pool);
}

size_t ft_thread_pool_workers(const ft_thread_pool *pool) { return pool->n_threads + 1; }

static void watch_once(ft_thread_pool *pool, const ft_pool_watch *watch)
{
    if (watch->watch(watch->context) != 0)
        atomic_store(&pool->stopped, true);
}

static struct timespec after_ms(unsigned interval_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += interval_ms / 1000;
    until.tv_nsec += (long)(interval_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    return until;
}

/* With no thread to watch over, the calling thread works and watches between items. */
static void work_and_watch(ft_thread_pool *pool, const ft_pool_watch *watch)
{
    uint64_t last_ns = ft_now_ns();
    while (!atomic_load(&pool->stopped)) {
        size_t i = atomic_fetch_add(&pool->next, 1);
        if (i >= pool->n_items)
            break;
        pool->item(pool->context, i, 0);
        atomic_fetch_add(&pool->n_ran, 1);
        if (ft_elapsed_ms(last_ns) >= watch->interval_ms) {
            watch_once(pool, watch);
            last_ns = ft_now_ns();
        }
    }
}

size_t ft_thread_pool_run(ft_thread_pool *pool, size_t n_items, ft_pool_item_fn *item, void *context,
                          const ft_pool_watch *watch)
{
    pthread_mutex_lock(&pool->lock);
    pool->item = item;
    pool->context = context;
    pool->n_items = n_items;
    atomic_store(&pool->next, 0);
    atomic_store(&pool->n_ran, 0);
    atomic_store(&pool->stopped, false);
    pool->n_busy = pool->n_threads;
    pool->generation++;
    pthread_cond_broadcast(&pool->work_ready);
    pthread_mutex_unlock(&pool->lock);

    if (!watch)
        work_on_job(pool, 0);
    else if (pool->n_threads == 0)
        work_and_watch(pool, watch);

    pthread_mutex_lock(&pool->lock);
    while (pool->n_busy > 0) {
        if (!watch) {
            pthread_cond_wait(&pool->job_done, &pool->lock);
            continue;
        }
        struct timespec until = after_ms(watch->interval_ms);
        if (pthread_cond_timedwait(&pool->job_done, &pool->lock, &until) == 0 || pool->n_busy == 0)
            continue;
        pthread_mutex_unlock(&pool->lock);
        watch_once(pool, watch);
        pthread_mutex_lock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    return atomic_load(&pool->n_ran);
}

size_t ft_parallel_for(size_t n_workers, size_t n_items, ft_pool_item_fn *item, void *context,
                       const ft_pool_watch *watch)
{
    if (n_workers == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n_workers = cores > 0 ? (size_t)cores : 1;
    }
    if (n_workers > n_items)
        n_workers = n_items ? n_items : 1;
    ft_thread_pool *pool = ft_thread_pool_new(n_workers);
    size_t n_ran = ft_thread_pool_run(pool, n_items, item, context, watch);
    ft_thread_pool_free(pool);
    return n_ran;
}
