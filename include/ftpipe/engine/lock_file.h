/* lock_file: Ftpipe.lock, beside the pipeline — what each download resolved to,
 * so that the pipeline fetches the same bytes on any machine, at any time.
 *
 *   # Ftpipe.lock: written by `ftpipe lock` ...
 *   models/base:
 *   	url = hf://ORG/NAME
 *   	revision = main
 *   	commit = 0123...                     (hf:// only: the commit `revision` resolved to)
 *   	file = config.json 1234 <sha256>     (one per file: path, size in bytes, SHA-256)
 *
 * `url` and `revision` are the stage's as written when it was locked (revision
 * empty when not written). Applied to a pipeline, an entry pins its stage: an
 * hf:// revision becomes the commit (so the commit, not the moving branch,
 * enters the key), and the parameter `locked` lists every file's size and
 * SHA-256, which the download checks (it is no key parameter: the commit already
 * names the bytes; plain URLs keep their key and are checked the same way). An
 * entry whose url or revision the pipeline no longer says is an error that tells
 * how to refresh it. */
#ifndef FTPIPE_LOCK_FILE_H
#define FTPIPE_LOCK_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/base/sha256.h"
#include "ftpipe/engine/pipeline.h"

typedef struct {
    char *path;
    uint64_t size_bytes;
    char sha256[FT_SHA256_HEX_LENGTH + 1];
} ft_lock_file_entry;

typedef struct {
    char *target;
    char *url;
    char *revision;     /* "" when the pipeline does not write one */
    char *commit;       /* "" for plain URLs */
    ft_lock_file_entry *files;
    size_t n_files;
    int line;           /* of the target line, for messages; 0 when not read from a file */
} ft_lock_entry;

typedef struct {
    char *path;
    ft_lock_entry *entries;
    size_t n_entries;
} ft_lock;

/* PIPELINE.lock ("Ftpipe" -> "Ftpipe.lock"). Caller frees. */
char *ft_lock_path(const char *pipeline_path);

/* Reads path; a missing file is an empty lock. Errors name path:line. */
int ft_lock_read(const char *path, ft_lock **out);
/* Writes the lock atomically, entries in their order. */
int ft_lock_write(const ft_lock *lock);
void ft_lock_free(ft_lock *lock);

ft_lock_entry *ft_lock_find(ft_lock *lock, const char *target);
/* Adds an entry for target, or empties the one there; returns it. */
ft_lock_entry *ft_lock_put(ft_lock *lock, const char *target, const char *url, const char *revision,
                           const char *commit);
void ft_lock_entry_add_file(ft_lock_entry *entry, const char *path, uint64_t size_bytes, const char *sha256);

/* Pins the pipeline's stages that have entries, except the targets in skip
 * (all of them when skip_all). -1 naming the entry when one is stale. */
int ft_lock_apply(const ft_lock *lock, ft_pipeline *pipeline, const char *const *skip, size_t n_skip, bool skip_all);

#endif
