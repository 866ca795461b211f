/* cache: the content-addressed store in .ftpipe/cache/.
 *
 *   objects/ab/cdef...   each file once, under its content hash, read-only
 *   manifests/KEY        a finished stage's output manifest, under the stage key
 *
 * Files enter the store by rename (from a stage's work folder) or link, and
 * leave it into the workspace by hard link, reflink, or copy as a fallback,
 * always read-only. A manifest is written last, atomically: a key whose manifest
 * exists has every object it names. */
#ifndef FTPIPE_CACHE_H
#define FTPIPE_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "ftpipe/manifest.h"

typedef struct ft_cache ft_cache;

/* Opens (creating) <state_dir>/cache. */
int ft_cache_open(const char *state_dir, ft_cache **out);
void ft_cache_close(ft_cache *cache);
const char *ft_cache_dir(const ft_cache *cache);

/* Moves every file of the output at `path` (described by manifest) into the
 * objects store (rename when on the same file system, else copy), then writes
 * the manifest under key. After this, `path` may be removed. */
int ft_cache_store(ft_cache *cache, const char *key, const char *path, const ft_manifest *manifest);

/* 1 and the manifest when key is stored (and all its objects exist), 0 when not. */
int ft_cache_lookup(ft_cache *cache, const char *key, ft_manifest **out);

/* Builds the output described by manifest at destination: files by hard link
 * (or reflink, or copy), read-only; folders created; links recreated. Builds
 * beside destination and renames into place, so destination is never half made;
 * a previous destination is replaced. */
int ft_cache_materialize(ft_cache *cache, const ft_manifest *manifest, const char *destination);

/* The path of the object holding hash. Caller frees. */
char *ft_cache_object_path(const ft_cache *cache, ft_hash hash);

/* Removes manifests whose key is not in keep, then objects no remaining manifest
 * names; reports what it freed. */
int ft_cache_gc(ft_cache *cache, const char *const *keep_keys, size_t n_keep, uint64_t *freed_bytes,
                uint64_t *removed_objects);

#endif
