/* fsutil: careful file-system operations shared by every module. */
#include "ftpipe/base/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

char *ft_path_join(const char *a, const char *b)
{
    if (b[0] == '/' || a[0] == '\0')
        return ft_xstrdup(b);
    size_t la = strlen(a), lb = strlen(b);
    while (la > 1 && a[la - 1] == '/')
        la--;
    bool slash = !(la == 1 && a[0] == '/');
    char *joined = ft_xmalloc(la + slash + lb + 1);
    memcpy(joined, a, la);
    if (slash)
        joined[la] = '/';
    memcpy(joined + la + slash, b, lb + 1);
    return joined;
}

char *ft_path_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return ft_xstrdup(".");
    if (slash == path)
        return ft_xstrdup("/");
    return ft_xstrndup(path, (size_t)(slash - path));
}

const char *ft_path_basename(const char *path)
{
    size_t length = strlen(path);
    while (length > 1 && path[length - 1] == '/')
        length--;
    const char *end = path + length;
    const char *start = end;
    while (start > path && start[-1] != '/')
        start--;
    return start;
}

char *ft_path_absolute(const char *path)
{
    ft_strbuf joined;
    ft_strbuf_init(&joined);
    if (path[0] != '/') {
        char cwd[4096];
        if (!getcwd(cwd, sizeof cwd))
            strcpy(cwd, "/");
        ft_strbuf_puts(&joined, cwd);
        ft_strbuf_putc(&joined, '/');
    }
    ft_strbuf_puts(&joined, path);

    /* Normalise component by component: drop "." and empty, pop on "..". */
    ft_strbuf out;
    ft_strbuf_init(&out);
    const char *p = joined.data;
    while (*p) {
        while (*p == '/')
            p++;
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.')) {
        } else if (n == 2 && p[0] == '.' && p[1] == '.') {
            char *last = strrchr(out.data, '/');
            out.length = last ? (size_t)(last - out.data) : 0;
            out.data[out.length] = '\0';
        } else {
            ft_strbuf_putc(&out, '/');
            ft_strbuf_add(&out, p, n);
        }
        p += n;
    }
    if (out.length == 0)
        ft_strbuf_putc(&out, '/');
    ft_strbuf_free(&joined);
    return ft_strbuf_take(&out);
}

bool ft_path_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

bool ft_path_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int ft_mkdir_p(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0; /* the usual case, in one call rather than one a component */
    char *copy = ft_xstrdup(path);
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
            int result = ft_error_errno("cannot create folder %s", copy);
            free(copy);
            return result;
        }
        *p = '/';
    }
    int result = 0;
    if (mkdir(copy, 0755) != 0 && errno != EEXIST)
        result = ft_error_errno("cannot create folder %s", copy);
    else if (!ft_path_is_dir(copy))
        result = ft_error("cannot create folder %s: a file of that name is in the way", copy);
    free(copy);
    return result;
}

int ft_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : ft_error_errno("cannot remove %s", path);
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) != 0 && errno != ENOENT)
            return ft_error_errno("cannot remove %s", path);
        return 0;
    }
    /* A read-only folder would refuse to give up its entries. */
    if ((st.st_mode & 0700) != 0700)
        chmod(path, st.st_mode | 0700);
    DIR *dir = opendir(path);
    if (!dir)
        return ft_error_errno("cannot open folder %s", path);
    int result = 0;
    struct dirent *entry;
    while (result == 0 && (entry = readdir(dir))) {
        if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, ".."))
            continue;
        char *child = ft_path_join(path, entry->d_name);
        result = ft_remove_tree(child);
        free(child);
    }
    closedir(dir);
    if (result == 0 && rmdir(path) != 0 && errno != ENOENT)
        result = ft_error_errno("cannot remove folder %s", path);
    return result;
}

/* Read straight into one buffer of the file's size (a record of 10,000 stages
 * is 1.5 MB, read on every no-op), grown only if the file grows meanwhile. */
int ft_read_file(const char *path, char **data, size_t *length)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ft_error_errno("cannot open %s", path);
    struct stat st;
    size_t capacity = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536;
    char *buffer = ft_xmalloc(capacity);
    size_t used = 0;
    for (;;) {
        if (used + 1 == capacity) {
            capacity *= 2;
            buffer = ft_xrealloc(buffer, capacity);
        }
        ssize_t n = read(fd, buffer + used, capacity - 1 - used);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int result = ft_error_errno("cannot read %s", path);
            close(fd);
            free(buffer);
            return result;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    close(fd);
    buffer[used] = '\0';
    if (length)
        *length = used;
    *data = buffer;
    return 0;
}

static int write_all(int fd, const void *data, size_t length)
{
    const char *p = data;
    while (length > 0) {
        ssize_t n = write(fd, p, length);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        length -= (size_t)n;
    }
    return 0;
}

int ft_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return ft_error_errno("cannot open folder %s", path);
    /* Some file systems (tmpfs) refuse fsync on folders; the rename is still atomic. */
    if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
        int result = ft_error_errno("cannot sync folder %s", path);
        close(fd);
        return result;
    }
    close(fd);
    return 0;
}

int ft_write_file_atomic(const char *path, const void *data, size_t length)
{
    char *temporary = ft_xasprintf("%s.tmp.%ld", path, (long)getpid());
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int result = ft_error_errno("cannot create %s", temporary);
        free(temporary);
        return result;
    }
    int result = 0;
    if (write_all(fd, data, length) != 0)
        result = ft_error_errno("cannot write %s", temporary);
    else if (fsync(fd) != 0)
        result = ft_error_errno("cannot sync %s", temporary);
    close(fd);
    if (result == 0 && rename(temporary, path) != 0)
        result = ft_error_errno("cannot rename %s to %s", temporary, path);
    if (result != 0) {
        unlink(temporary);
    } else {
        char *dir = ft_path_dirname(path);
        result = ft_fsync_dir(dir);
        free(dir);
    }
    free(temporary);
    return result;
}

int ft_copy_file(const char *source, const char *destination)
{
    int in = open(source, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return ft_error_errno("cannot open %s", source);
    struct stat st;
    if (fstat(in, &st) != 0) {
        int result = ft_error_errno("cannot stat %s", source);
        close(in);
        return result;
    }
    int out = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (st.st_mode & 0777) | 0200);
    if (out < 0) {
        int result = ft_error_errno("cannot create %s", destination);
        close(in);
        return result;
    }
    int result = 0;
    off_t left = st.st_size;
    bool fallback = false;
    while (left > 0 && !fallback) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL) {
                fallback = true;
                break;
            }
            result = ft_error_errno("cannot copy %s to %s", source, destination);
            break;
        }
        if (n == 0)
            break;
        left -= n;
    }
    if (fallback) {
        char *block = ft_xmalloc(1 << 20);
        off_t offset = st.st_size - left;
        for (;;) {
            ssize_t n = pread(in, block, 1 << 20, offset);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                result = ft_error_errno("cannot read %s", source);
                break;
            }
            if (n == 0)
                break;
            if (write_all(out, block, (size_t)n) != 0) {
                result = ft_error_errno("cannot write %s", destination);
                break;
            }
            offset += n;
        }
        free(block);
    }
    if (close(out) != 0 && result == 0)
        result = ft_error_errno("cannot write %s", destination);
    close(in);
    if (result == 0 && fchmodat(AT_FDCWD, destination, st.st_mode & 07777, 0) != 0)
        result = ft_error_errno("cannot set the mode of %s", destination);
    return result;
}

int ft_free_space_bytes(const char *path, uint64_t *bytes)
{
    struct statvfs vfs;
    if (statvfs(path, &vfs) != 0)
        return ft_error_errno("cannot read the free space of %s", path);
    *bytes = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    return 0;
}

char *ft_mount_point(const char *path)
{
    char *current = ft_path_absolute(path);
    struct stat here;
    if (stat(current, &here) != 0)
        return current;
    while (strcmp(current, "/") != 0) {
        char *parent = ft_path_dirname(current);
        struct stat above;
        if (stat(parent, &above) != 0 || above.st_dev != here.st_dev) {
            free(parent);
            break;
        }
        free(current);
        current = parent;
    }
    return current;
}

void ft_format_bytes(uint64_t bytes, char *out, size_t out_size)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double value = (double)bytes;
    size_t unit = 0;
    while (value >= 1024.0 && unit + 1 < sizeof units / sizeof units[0]) {
        value /= 1024.0;
        unit++;
    }
    if (unit == 0)
        snprintf(out, out_size, "%llu B", (unsigned long long)bytes);
    else
        snprintf(out, out_size, "%.1f %s", value, units[unit]);
}
