/* group_watch: the watcher that stops spawned stages' process groups with the engine. */
#include "ftpipe/engine/group_watch.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"

struct ft_group_watch {
    int socket_fd; /* the engine's end */
    pid_t watcher;
};

/* The watcher: a copy of the engine that only reads. Each message is one int32,
 * a group to add (> 0) or to remove (< 0); the end of the socket means the engine
 * is gone. */
static void watch_groups(int socket_fd)
{
    signal(SIGINT, SIG_IGN); /* a terminal's ^C is the engine's to handle; the socket says when it is done */
    signal(SIGTERM, SIG_IGN);
    pid_t *groups = NULL;
    size_t n_groups = 0, capacity = 0;
    for (;;) {
        int32_t message = 0;
        ssize_t n = recv(socket_fd, &message, sizeof message, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof message)
            break;
        if (message > 0) {
            if (n_groups == capacity) {
                capacity = capacity ? 2 * capacity : 16;
                groups = ft_xrealloc(groups, capacity * sizeof *groups);
            }
            groups[n_groups++] = (pid_t)message;
        } else {
            for (size_t i = 0; i < n_groups; i++) {
                if (groups[i] == (pid_t)-message) {
                    groups[i] = groups[--n_groups];
                    break;
                }
            }
        }
    }
    for (size_t i = 0; i < n_groups; i++)
        kill(-groups[i], SIGTERM);
    _exit(0);
}

int ft_group_watch_start(ft_group_watch **out)
{
    *out = NULL;
    int fds[2];
    /* Datagrams keep each message whole; send() with MSG_NOSIGNAL never raises
     * SIGPIPE in the engine should the watcher be gone. */
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0)
        return ft_error_errno("cannot create the socket of the stage watcher");
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return ft_error_errno("cannot start the stage watcher");
    }
    if (pid == 0) {
        close(fds[0]);
        watch_groups(fds[1]);
    }
    close(fds[1]);
    ft_group_watch *watch = ft_xcalloc(1, sizeof *watch);
    watch->socket_fd = fds[0];
    watch->watcher = pid;
    *out = watch;
    return 0;
}

static void tell(ft_group_watch *watch, int32_t message)
{
    if (watch && watch->socket_fd >= 0) {
        ssize_t ignored = send(watch->socket_fd, &message, sizeof message, MSG_NOSIGNAL);
        (void)ignored; /* a watcher gone only weakens the guarantee; the build goes on */
    }
}

void ft_group_watch_add(ft_group_watch *watch, pid_t group) { tell(watch, (int32_t)group); }
void ft_group_watch_remove(ft_group_watch *watch, pid_t group) { tell(watch, -(int32_t)group); }

void ft_group_watch_forget(ft_group_watch *watch)
{
    if (watch && watch->socket_fd >= 0)
        close(watch->socket_fd);
}

void ft_group_watch_stop(ft_group_watch *watch)
{
    if (!watch)
        return;
    close(watch->socket_fd);
    while (waitpid(watch->watcher, NULL, 0) < 0 && errno == EINTR) {
    }
    free(watch);
}
