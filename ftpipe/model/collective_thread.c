/* collective_thread: one thread's start and stop, and the abort that frees a blocked one. */
#include "ftpipe/model/collective_thread.h"

#include "ftpipe/base/error.h"

int ft_collective_thread_start(ft_collective_thread *t, void *(*body)(void *), void *argument, const char *what)
{
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->changed, NULL);
    t->stopping = false;
    if (pthread_create(&t->thread, NULL, body, argument) != 0) {
        pthread_mutex_destroy(&t->lock);
        pthread_cond_destroy(&t->changed);
        t->started = false;
        return ft_error("cannot start %s (out of threads or memory)", what);
    }
    t->started = true;
    return 0;
}

void ft_collective_thread_stop(ft_collective_thread *t, ft_comm *comm, bool (*blocked)(void *context), void *context)
{
    if (!t->started)
        return;
    pthread_mutex_lock(&t->lock);
    t->stopping = true;
    if (blocked(context))
        comm->abort(comm);
    pthread_cond_broadcast(&t->changed);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->changed);
    t->started = false;
}

bool ft_collective_thread_never_blocked(void *context)
{
    (void)context;
    return false;
}
