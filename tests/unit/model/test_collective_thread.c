/* collective_thread: a started thread runs its body, which returns when stop
 * sets `stopping`; stop aborts the collectives only when the caller says one
 * is blocked, and that abort frees a thread blocked in one (here a read from a
 * pipe that abort closes, as the host collectives close their sockets); stop
 * without a start does nothing. */
#include <unistd.h>

#include "check.h"
#include "ftpipe/model/collective_thread.h"

typedef struct {
    ft_collective_thread worker;
    int pipe[2];          /* the "collective" reads pipe[0]; abort closes pipe[1] */
    bool in_collective;   /* the body waits in a read instead of on `changed` */
    int aborts;
    bool returned;
} fixture;

static void *body(void *argument)
{
    fixture *f = argument;
    char byte;
    if (f->in_collective) {
        ssize_t got = read(f->pipe[0], &byte, 1); /* returns once abort closes the other end */
        (void)got;
    } else {
        pthread_mutex_lock(&f->worker.lock);
        while (!f->worker.stopping)
            pthread_cond_wait(&f->worker.changed, &f->worker.lock);
        pthread_mutex_unlock(&f->worker.lock);
    }
    f->returned = true;
    return NULL;
}

static void abort_collectives(ft_comm *comm)
{
    fixture *f = comm->context;
    f->aborts++;
    close(f->pipe[1]);
    f->pipe[1] = -1;
}

static bool blocked(void *context) { return ((fixture *)context)->in_collective; }

static void start_then_stop(bool in_collective)
{
    fixture f = {.in_collective = in_collective};
    CHECK_INT(pipe(f.pipe), 0);
    ft_comm comm = {.name = "fake", .size = 2, .context = &f, .abort = abort_collectives};
    CHECK_INT(ft_collective_thread_start(&f.worker, body, &f, "a test thread"), 0);
    CHECK(f.worker.started);
    ft_collective_thread_stop(&f.worker, &comm, blocked, &f);
    CHECK(f.returned);
    CHECK(!f.worker.started);
    CHECK_INT(f.aborts, in_collective ? 1 : 0);
    close(f.pipe[0]);
    if (f.pipe[1] >= 0)
        close(f.pipe[1]);
}

TEST(a_waiting_thread_stops_without_an_abort) { start_then_stop(false); }

TEST(a_thread_blocked_in_a_collective_is_freed_by_the_abort) { start_then_stop(true); }

TEST(stopping_a_thread_never_started_does_nothing)
{
    fixture f = {.in_collective = true};
    ft_comm comm = {.name = "fake", .size = 2, .context = &f, .abort = abort_collectives};
    ft_collective_thread_stop(&f.worker, &comm, blocked, &f);
    CHECK_INT(f.aborts, 0);
}

int main(void)
{
    RUN(a_waiting_thread_stops_without_an_abort);
    RUN(a_thread_blocked_in_a_collective_is_freed_by_the_abort);
    RUN(stopping_a_thread_never_started_does_nothing);
    return check_done();
}
