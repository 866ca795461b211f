/* collective_thread: the start and stop of the one thread with which a module
 * runs its collectives in order beside the computation: param_shards.c's
 * gathers of ZeRO-3's weights and data_parallel.c's sums of gradient buckets
 * (and zero.c's and update_gate.c's step updates, which run none:
 * ft_collective_thread_never_blocked says so).
 * The module's own thread body waits on `changed` under `lock` until work
 * comes or `stopping` is set, and returns then; the module keeps its queue
 * under the same lock. */
#ifndef FTPIPE_COLLECTIVE_THREAD_H
#define FTPIPE_COLLECTIVE_THREAD_H

#include <pthread.h>
#include <stdbool.h>

#include "ftpipe/backend/comm.h"

typedef struct {
    pthread_mutex_t lock;    /* guards `stopping` and the module's queue */
    pthread_cond_t changed;  /* broadcast whenever either changes */
    bool stopping;
    bool started;
    pthread_t thread;
} ft_collective_thread;

/* Makes the lock and the condition and starts body(argument); -1 with
 * ft_error naming `what` when no thread starts (nothing is left to stop). */
int ft_collective_thread_start(ft_collective_thread *thread, void *(*body)(void *), void *argument,
                               const char *what);

/* Sets stopping and wakes the thread, joins it and frees the lock and the
 * condition. When blocked(context), asked under the lock, says a collective
 * was issued that may never complete (a pass or step that failed on some
 * rank), comm is aborted first so that the thread returns. Nothing when not
 * started. */
void ft_collective_thread_stop(ft_collective_thread *thread, ft_comm *comm, bool (*blocked)(void *context),
                               void *context);
/* `blocked` for a thread that runs no collective (an update on the host): never. */
bool ft_collective_thread_never_blocked(void *context);

#endif
