/* staging: copies of folders (models, datasets) kept in a tmpfs such as /dev/shm,
 * so that loading them reads memory instead of disk; the shm stage kind's core.
 *
 * In the tmpfs folder DIR:
 *   DIR/ftpipe-<uid>/<key>/<name>          the copy of the folder (or file) <name>
 *   DIR/ftpipe-<uid>/<key>/.ftpipe-staged  what the copy holds (counts and bytes)
 *   DIR/ftpipe-<uid>/.<key>.partial-<pid>  a copy being made, renamed to <key> once
 *                                          complete and verified
 * <key> is the stage key, which hashes the source's content: asking again for the
 * same content (a later run, another workspace) finds the copy and copies nothing;
 * a copy that is gone (a reboot emptied the tmpfs) or lost files is made again.
 * The folder per user keeps one user's copies from being taken for another's.
 *
 * Each workspace records the copies it made in <state_dir>/shm/<key> (the path of
 * DIR/ftpipe-<uid>/<key>), so that `ftpipe gc` can remove those that no current
 * target needs. A copy shared by two workspaces that one of them removes is made
 * again by the other's next run. */
#ifndef FTPIPE_STAGING_H
#define FTPIPE_STAGING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/transfer/tree_copy.h"

#define FT_STAGING_MARKER_NAME ".ftpipe-staged"

typedef struct {
    const char *source;      /* absolute, links resolved */
    const char *tmpfs_dir;   /* DIR; must exist */
    const char *key;         /* 32 hex digits */
    const char *state_dir;   /* the workspace's .ftpipe folder */
    uint64_t min_free_bytes; /* to leave free in DIR after the copy */
    int transfers;           /* threads copying; 0: one per core */
    bool verify;             /* compare hashes of what was read and written */
    bool (*progress)(void *context, uint64_t copied_bytes, uint64_t total_bytes); /* may be NULL */
    void *progress_context;
} ft_staging_request;

typedef enum {
    FT_STAGING_COPIED,      /* copied now */
    FT_STAGING_REUSED,      /* a complete copy was there already */
    FT_STAGING_DOES_NOT_FIT /* source plus min_free exceeds DIR's free space; nothing copied */
} ft_staging_outcome;

typedef struct {
    ft_staging_outcome outcome;
    char *copy_path;        /* DIR/ftpipe-<uid>/<key>/<name>; NULL when it does not fit */
    ft_tree_summary source; /* what the source holds */
    uint64_t free_bytes;    /* DIR's free space before copying (when checked) */
    bool on_tmpfs;          /* DIR is a tmpfs or ramfs (else the copy sits on disk) */
} ft_staging_result;

int ft_staging_stage(const ft_staging_request *request, ft_staging_result *out);
void ft_staging_result_free(ft_staging_result *result);

/* 1 when copy_path is a complete staged copy that still holds every file at its
 * size, 0 when not (gone, emptied, partial, or not a staged copy at all). Reads
 * no file's bytes. */
int ft_staging_copy_is_complete(const char *copy_path);

/* Removes the copies this workspace recorded under keys not in keep_keys, with
 * partial copies of those keys left by processes that died, and forgets them.
 * freed_bytes and removed_copies (may be NULL) count what went. */
int ft_staging_gc(const char *state_dir, const char *const *keep_keys, size_t n_keep, uint64_t *freed_bytes,
                  size_t *removed_copies);

#endif
