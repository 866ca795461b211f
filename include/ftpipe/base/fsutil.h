/* fsutil: the file-system operations every module needs, done one careful way.
 *
 * Durable writes go to a temporary name, are fsynced, then renamed over the
 * target, so a reader sees the old file or the new one, never half of either.
 * All functions return 0 on success, -1 with ft_error set otherwise. */
#ifndef FTPIPE_FSUTIL_H
#define FTPIPE_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "a" + "/" + "b", without doubling slashes; b absolute -> b. Caller frees. */
char *ft_path_join(const char *a, const char *b);
/* The folder part of a path ("." when none). Caller frees. */
char *ft_path_dirname(const char *path);
/* The last component of a path. Points into `path`. */
const char *ft_path_basename(const char *path);
/* An absolute, `.`/`..`-free version of path (the file need not exist). Caller frees. */
char *ft_path_absolute(const char *path);

bool ft_path_exists(const char *path);    /* lstat succeeds */
bool ft_path_is_dir(const char *path);    /* stat: a folder (links followed) */

int ft_mkdir_p(const char *path);
/* rm -rf, also through read-only files and folders; a missing path is fine. */
int ft_remove_tree(const char *path);

int ft_read_file(const char *path, char **data, size_t *length); /* adds a NUL */
/* Writes data to path atomically (temp + fsync + rename + fsync folder). */
int ft_write_file_atomic(const char *path, const void *data, size_t length);
/* fsync of a folder, so that a rename inside it is durable. */
int ft_fsync_dir(const char *path);

/* Copies a regular file's bytes and mode (copy_file_range, falling back to read/write). */
int ft_copy_file(const char *source, const char *destination);

/* Bytes available to an unprivileged writer on the file system holding path. */
int ft_free_space_bytes(const char *path, uint64_t *bytes);
/* The mount point of the file system holding path (an existing path), for messages
 * such as "no space left on /data". Caller frees. */
char *ft_mount_point(const char *path);

/* Human form of a byte count: "1.5 GiB". Writes into out (>= 16 bytes). */
void ft_format_bytes(uint64_t bytes, char *out, size_t out_size);

#endif
