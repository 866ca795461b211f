/* remote_file: a remote that is a folder, perhaps on NFS shared by many machines.
 * Every blob is written under a temporary name unique to this writer, synced, and
 * renamed into place, so a reader finds a whole blob or none, whoever writes. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/clock.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "remote_internal.h"

static int failure_of(int error_number)
{
    return error_number == EACCES || error_number == EPERM || error_number == EROFS ? FT_REMOTE_DENIED
                                                                                    : FT_REMOTE_UNAVAILABLE;
}

/* A missing remote folder is a remote that is not there (unmounted), not an empty one. */
static int check_root(const ft_remote *remote)
{
    struct stat st;
    if (stat(remote->base, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    ft_error("remote %s: the folder does not exist (not mounted?); create it or fix FTPIPE_REMOTE",
             remote->display_url);
    return FT_REMOTE_UNAVAILABLE;
}

int ft_remote_file_has(ft_remote *remote, const char *name)
{
    int root = check_root(remote);
    if (root != 0)
        return root;
    char *path = ft_path_join(remote->base, name);
    struct stat st;
    int result = 1;
    if (stat(path, &st) != 0) {
        int error_number = errno;
        if (error_number == ENOENT)
            result = 0;
        else {
            errno = error_number;
            ft_error_errno("remote %s: cannot look at %s", remote->display_url, name);
            result = failure_of(error_number);
        }
    } else if (!S_ISREG(st.st_mode)) {
        result = 0;
    }
    free(path);
    return result;
}

int ft_remote_file_get(ft_remote *remote, const char *name, const char *destination)
{
    int found = ft_remote_file_has(remote, name);
    if (found != 1)
        return found;
    char *path = ft_path_join(remote->base, name);
    int result = 1;
    unlink(destination);
    if (ft_copy_file(path, destination) != 0) {
        int error_number = errno;
        ft_error_context("remote %s", remote->display_url);
        result = error_number == ENOENT ? 0 : failure_of(error_number);
    } else {
        chmod(destination, 0644);
    }
    free(path);
    return result;
}

static int write_all(int fd, const char *bytes, size_t length)
{
    while (length > 0) {
        ssize_t n = write(fd, bytes, length);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        bytes += n;
        length -= (size_t)n;
    }
    return 0;
}

int ft_remote_file_put(ft_remote *remote, const char *name, const char *source, const char *text, size_t length)
{
    int root = check_root(remote);
    if (root != 0)
        return root;
    char *path = ft_path_join(remote->base, name);
    char *dir = ft_path_dirname(path);
    uint64_t nonce = 0;
    if (getrandom(&nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce)
        nonce = (uint64_t)ft_now_ns() ^ (uint64_t)getpid();
    /* Unique across machines sharing the folder, so two writers never share a temporary. */
    char *temporary = ft_xasprintf("%s/.%s.ftpipe-new.%016llx", dir, ft_path_basename(path),
                                   (unsigned long long)nonce);
    int result = 0;
    if (ft_mkdir_p(dir) != 0) {
        result = failure_of(errno);
    } else if (source) {
        if (ft_copy_file(source, temporary) != 0)
            result = failure_of(errno);
    } else {
        int fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || write_all(fd, text, length) != 0) {
            int error_number = errno;
            ft_error_errno("cannot write %s", temporary);
            result = failure_of(error_number);
        }
        if (fd >= 0)
            close(fd);
    }
    if (result == 0) {
        chmod(temporary, 0644);
        int fd = open(temporary, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) != 0) {
            ft_error_errno("cannot sync %s", temporary);
            result = FT_REMOTE_UNAVAILABLE;
        }
        if (fd >= 0)
            close(fd);
    }
    if (result == 0 && rename(temporary, path) != 0) {
        int error_number = errno;
        ft_error_errno("cannot rename %s to %s", temporary, path);
        result = failure_of(error_number);
    }
    if (result == 0 && ft_fsync_dir(dir) != 0)
        result = FT_REMOTE_UNAVAILABLE;
    if (result != 0) {
        unlink(temporary);
        ft_error_context("remote %s: cannot store %s", remote->display_url, name);
    }
    free(path);
    free(dir);
    free(temporary);
    return result;
}
