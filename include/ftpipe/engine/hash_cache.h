/* hash_cache: file hashes remembered by stat, so that an unchanged file is never
 * read twice. ft_manifest_build asks one before reading a file and tells it what
 * it read; the workspace state implements it (ft_state_hash_cache), and the
 * manifest knows only this interface. */
#ifndef FTPIPE_HASH_CACHE_H
#define FTPIPE_HASH_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "ftpipe/base/hash.h"

typedef struct {
    uint64_t device;
    uint64_t inode;
    uint64_t size_bytes;
    int64_t mtime_ns;
} ft_file_stat;

/* Fills stat from lstat(path) (mtime in ns). */
int ft_file_stat_read(const char *path, ft_file_stat *stat);

typedef struct {
    const char *path;
    ft_file_stat stat;
    ft_hash hash;
} ft_hashed_file;

typedef struct {
    /* 1 and *hash when path's recorded stat equals `stat`; 0 when unknown or
     * changed; -1 with ft_error when the cache cannot be read. */
    int (*lookup)(void *context, const char *path, const ft_file_stat *stat, ft_hash *hash);
    /* Remembers files just hashed, all at once (one transaction where the cache
     * has them); -1 with ft_error when they cannot be kept. */
    int (*store)(void *context, const ft_hashed_file *files, size_t n_files);
    void *context;
} ft_hash_cache;

#endif
