/* group_watch: stops the programs a build starts itself (kinds with spawn) when
 * the engine dies, as a stage run in a child of the engine stops with it.
 *
 * A watcher process, forked once per build, is told each process group as it
 * starts and ends over a socket. When the engine's end of the socket closes (the
 * engine exited, or was killed, even by SIGKILL), it sends SIGTERM to every group
 * still listed and exits. */
#ifndef FTPIPE_GROUP_WATCH_H
#define FTPIPE_GROUP_WATCH_H

#include <sys/types.h>

typedef struct ft_group_watch ft_group_watch;

/* Forks the watcher; -1 with ft_error when it cannot. */
int ft_group_watch_start(ft_group_watch **out);
/* group leads a process group that must end with the engine / has ended. */
void ft_group_watch_add(ft_group_watch *watch, pid_t group);
void ft_group_watch_remove(ft_group_watch *watch, pid_t group);
/* In a child forked from the engine: closes its copy of the engine's end, so
 * that the engine's death alone closes the socket. */
void ft_group_watch_forget(ft_group_watch *watch);
/* Closes the engine's end and waits for the watcher (which stops what is still
 * listed); NULL is fine. */
void ft_group_watch_stop(ft_group_watch *watch);

#endif
