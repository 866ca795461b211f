/* manifest: the content of a stage output or an input path, as a sorted list of
 * entries, and the hash that names it.
 *
 * A file (or link) output has one entry with the empty path; a folder has one
 * entry per file, folder and symbolic link below it, but none for itself (paths
 * relative, '/'-separated, sorted bytewise). The manifest's hash is XXH3-128 of
 * its canonical text, so a folder's hash changes exactly when a name, a type,
 * an executable bit, a link target or a file's content changes. */
#ifndef FTPIPE_MANIFEST_H
#define FTPIPE_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/base/hash.h"
#include "ftpipe/engine/hash_cache.h"

typedef enum { FT_ENTRY_FILE, FT_ENTRY_DIR, FT_ENTRY_SYMLINK } ft_entry_type;

typedef struct {
    char *path;          /* relative; "" for the root itself */
    ft_entry_type type;
    bool executable;     /* files only */
    uint64_t size_bytes; /* files only */
    ft_hash hash;        /* files: content hash; symlinks: hash of the link text */
    char *link_target;   /* symlinks only */
} ft_manifest_entry;

typedef struct ft_manifest {
    ft_manifest_entry *entries;
    size_t n_entries;
    ft_hash hash;        /* of the canonical text; set by ft_manifest_finish */
    uint64_t total_bytes;
} ft_manifest;

/* Walks path (a file, a folder, or a symbolic link kept as a link) without
 * following links, hashing files with `threads` threads; file hashes come from
 * the cache where a file's (device, inode, size, mtime_ns) is unchanged, and new
 * ones are stored there (all at once, from the calling thread), except for files
 * changed within the last second, whose mtime could still hide a change. cache
 * may be NULL. Sockets, pipes and devices are errors. */
int ft_manifest_build(const ft_hash_cache *cache, const char *path, int threads, ft_manifest **out);

/* Sorts entries and computes hash and total_bytes. */
void ft_manifest_finish(ft_manifest *manifest);

/* Canonical text: the line "ftpipe manifest 1", then one line per entry:
 * "<type> <mode> <size> <hash> <path>[ -> <link>]", type file, dir or link;
 * mode 644 or 755 (files), 755 (folders), 777 (links); a folder's size is 0 and
 * its hash 32 zeros; a link's size and hash are those of its target text. The
 * root entry's path is written ".". In paths and link targets, spaces, control
 * bytes, DEL and backslashes are written \xHH, so any name round-trips. */
char *ft_manifest_serialize(const ft_manifest *manifest);
/* Accepts canonical text only (so a parsed manifest's hash is its text's hash)
 * whose paths are relative without "." or ".." parts and whose folders are all
 * listed. origin names the text in error messages ("<origin>:<line>: ..."). */
int ft_manifest_parse(const char *text, const char *origin, ft_manifest **out);
void ft_manifest_free(ft_manifest *manifest);

#endif
