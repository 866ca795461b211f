/* thread_pool: the one way ftpipe runs a loop on several threads.
 *
 * A pool's threads wait for work; ft_thread_pool_run hands them a job of
 * n_items items, claimed one at a time, and returns once every item has run.
 * The calling thread works on the job too (or, when the job is watched and a
 * thread started, watches it), so a job always finishes.
 *
 * The rule for a failed pthread_create, everywhere: the pool keeps the threads
 * it got and the work goes on, slower; with no thread at all the calling thread
 * runs every item. ft_thread_pool_fail_starts_after injects the failure. */
#ifndef FTPIPE_THREAD_POOL_H
#define FTPIPE_THREAD_POOL_H

#include <stddef.h>

typedef struct ft_thread_pool ft_thread_pool;

/* Up to n_workers items run at once, the calling thread counted (0: one per
 * core). Never NULL. */
ft_thread_pool *ft_thread_pool_new(size_t n_workers);
void ft_thread_pool_free(ft_thread_pool *pool);
/* The threads that started, plus the calling thread. */
size_t ft_thread_pool_workers(const ft_thread_pool *pool);

/* Runs item `item` of a job; `worker` is below ft_thread_pool_workers and is
 * the same for every item one thread runs, so it can index per-thread buffers. */
typedef void ft_pool_item_fn(void *context, size_t item, size_t worker);

/* While a watched job runs, the calling thread calls watch about every
 * interval_ms; a non-zero return stops the job (items not yet begun are skipped). */
typedef struct {
    int (*watch)(void *context);
    void *context;
    unsigned interval_ms;
} ft_pool_watch;

/* Runs every item of [0, n_items) (watch may be NULL); returns how many ran:
 * n_items unless watch stopped the job. */
size_t ft_thread_pool_run(ft_thread_pool *pool, size_t n_items, ft_pool_item_fn *item, void *context,
                          const ft_pool_watch *watch);

/* One job on a pool of its own. */
size_t ft_parallel_for(size_t n_workers, size_t n_items, ft_pool_item_fn *item, void *context,
                       const ft_pool_watch *watch);

/* For tests: pthread_create succeeds n_starts more times, then fails until this
 * is called again ((size_t)-1: never fails). */
void ft_thread_pool_fail_starts_after(size_t n_starts);

#endif
