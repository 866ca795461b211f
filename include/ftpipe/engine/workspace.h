/* workspace: the .ftpipe folder beside a pipeline file — its state database, its
 * cache, its work folders and the lock that keeps two runs from colliding. */
#ifndef FTPIPE_WORKSPACE_H
#define FTPIPE_WORKSPACE_H

#include <stdbool.h>

#include "ftpipe/engine/cache.h"
#include "ftpipe/engine/state.h"

typedef struct {
    char *dir;          /* the pipeline's folder, absolute */
    char *state_dir;    /* <dir>/.ftpipe */
    ft_state *state;
    ft_cache *cache;
    int lock_fd;        /* -1 when not locked */
} ft_workspace;

/* Opens (creating) <dir>/.ftpipe. With lock, takes the workspace lock or fails
 * naming the process that holds it. */
int ft_workspace_open(const char *dir, bool lock, ft_workspace **out);
void ft_workspace_close(ft_workspace *workspace);

/* <state_dir>/work/<key>. Caller frees. */
char *ft_workspace_work_dir(const ft_workspace *workspace, const char *key);
/* <state_dir>/logs/<key>.log: where a finished stage's log is kept. Caller frees. */
char *ft_workspace_log_path(const ft_workspace *workspace, const char *key);

#endif
