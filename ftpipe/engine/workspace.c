/* workspace: opening .ftpipe and holding its lock. */
#include "ftpipe/engine/workspace.h"
#include "ftpipe/engine/up_to_date.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

/* A POSIX record lock: released by the kernel when the holder dies, so a kill -9
 * never leaves a stale lock, and the kernel keeps the holder's pid with the lock
 * itself, so a refused run can always name it (a pid written into the file after
 * taking the lock could be read before it was written). Stage processes do not
 * inherit it. The pid is also written inside, for people. */
static int take_lock(ft_workspace *workspace)
{
    char *path = ft_path_join(workspace->state_dir, "lock");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int result = ft_error_errno("cannot open the workspace lock %s", path);
        free(path);
        return result;
    }
    for (int attempt = 0;; attempt++) {
        struct flock whole = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        if (fcntl(fd, F_SETLK, &whole) == 0)
            break;
        int error = errno;
        struct flock holder = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        bool held = (error == EACCES || error == EAGAIN) && fcntl(fd, F_GETLK, &holder) == 0 &&
                    holder.l_type != F_UNLCK;
        if (!held && (error == EACCES || error == EAGAIN) && attempt < 100)
            continue; /* released between the two calls: try again */
        close(fd);
        int result = held ? ft_error("another ftpipe run (pid %ld) is using the workspace %s (lock %s); wait for "
                                     "it to finish or stop it, then run again",
                                     (long)holder.l_pid, workspace->dir, path)
                          : ft_error("cannot lock the workspace %s (lock %s): %s", workspace->dir, path,
                                     strerror(error));
        free(path);
        return result;
    }
    free(path);
    char pid[32];
    int length = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)length, 0) != length) {
        close(fd);
        return ft_error_errno("cannot write the workspace lock in %s", workspace->state_dir);
    }
    workspace->lock_fd = fd;
    return 0;
}

int ft_workspace_open(const char *dir, bool lock, ft_workspace **out)
{
    ft_workspace *workspace = ft_xcalloc(1, sizeof *workspace);
    workspace->lock_fd = -1;
    workspace->dir = ft_path_absolute(dir);
    workspace->state_dir = ft_path_join(workspace->dir, ".ftpipe");
    int result = ft_mkdir_p(workspace->state_dir);
    if (result == 0 && lock)
        result = take_lock(workspace);
    if (result == 0 && lock)
        ft_up_to_date_forget(workspace->state_dir); /* this run may change what the record answers */
    if (result == 0)
        result = ft_state_open(workspace->state_dir, &workspace->state);
    if (result == 0)
        result = ft_cache_open(workspace->state_dir, &workspace->cache);
    if (result != 0) {
        ft_workspace_close(workspace);
        return -1;
    }
    *out = workspace;
    return 0;
}

void ft_workspace_close(ft_workspace *workspace)
{
    if (!workspace)
        return;
    if (workspace->cache)
        ft_cache_close(workspace->cache);
    if (workspace->state)
        ft_state_close(workspace->state);
    if (workspace->lock_fd >= 0)
        close(workspace->lock_fd);
    free(workspace->dir);
    free(workspace->state_dir);
    free(workspace);
}

char *ft_workspace_work_dir(const ft_workspace *workspace, const char *key)
{
    /* Called for every stage of a no-op: no printf. */
    size_t dir_length = strlen(workspace->state_dir), key_length = strlen(key);
    char *path = ft_xmalloc(dir_length + sizeof "/work/" + key_length);
    memcpy(path, workspace->state_dir, dir_length);
    memcpy(path + dir_length, "/work/", 6);
    memcpy(path + dir_length + 6, key, key_length + 1);
    return path;
}

char *ft_workspace_log_path(const ft_workspace *workspace, const char *key)
{
    return ft_xasprintf("%s/logs/%s.log", workspace->state_dir, key);
}
