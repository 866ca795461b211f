/* cache: the content-addressed store in .ftpipe/cache/.
 *
 *   objects/ab/cdef...   each file once, under its content hash, read-only
 *   manifests/KEY        a finished stage's output manifest, under the stage key
 *   incoming/SHA256      downloads from a remote cache under way (remote_sync.h)
 *
 * Files enter the store by rename (from a stage's work folder) or copy, and
 * leave it into the workspace by hard link, reflink, or copy as a fallback,
 * always read-only. A manifest is written last, atomically: a key whose manifest
 * exists has every object it names. */
#ifndef FTPIPE_CACHE_H
#define FTPIPE_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "ftpipe/engine/manifest.h"

typedef struct ft_cache ft_cache;

/* Opens (creating) <state_dir>/cache. */
int ft_cache_open(const char *state_dir, ft_cache **out);
void ft_cache_close(ft_cache *cache);
const char *ft_cache_dir(const ft_cache *cache);

/* Moves every file of the output at `path` (described by manifest) into the
 * objects store, read-only (0444, 0555 when executable): by rename on the same
 * file system, else by copy; a file whose object is already stored is deleted.
 * Then makes the objects durable and writes the manifest under key, last and
 * atomically. After this, `path` holds no files and may be removed. A file
 * whose size no longer matches the manifest is an error. */
int ft_cache_store(ft_cache *cache, const char *key, const char *path, const ft_manifest *manifest);

/* As ft_cache_store, but durable only at the next ft_cache_sync: until then the
 * manifest waits under a temporary name that this process's lookups see and no
 * other process trusts. A build stores each finished stage so and syncs once for
 * a batch of them: one flush of the file system instead of four a stage. */
int ft_cache_store_deferred(ft_cache *cache, const char *key, const char *path, const ft_manifest *manifest);

/* Makes every deferred store durable: flushes the cache's file system once, then
 * gives each manifest its name (objects before the manifests that name them). */
int ft_cache_sync(ft_cache *cache);

/* One file into the objects store as entry's object (as ft_cache_store moves
 * each), durably; a file whose object is already stored is deleted. For results
 * that arrive one object at a time (the remote cache); the manifest follows
 * with ft_cache_store_manifest once every object is in. */
int ft_cache_store_object(ft_cache *cache, const char *source, const ft_manifest_entry *entry);
int ft_cache_store_manifest(ft_cache *cache, const char *key, const ft_manifest *manifest);
/* Whether entry's object is stored (with entry's size). */
bool ft_cache_has_object(const ft_cache *cache, const ft_manifest_entry *entry);

/* 1 and the manifest when key is stored and all its objects exist; 0 when not,
 * also when the manifest is damaged (the stage runs again and stores a whole
 * one); -1 when key is not 32 lowercase hex digits or reading fails. */
int ft_cache_lookup(ft_cache *cache, const char *key, ft_manifest **out);

/* Builds the output described by manifest at destination: files by hard link
 * (or reflink, or copy), read-only; folders created (0755); links recreated.
 * Builds beside destination (".NAME.ftpipe-new.PID") and renames into place
 * (swapping with a previous destination where the file system can, else moving
 * a folder in the way aside first), so destination is never half made; a
 * previous destination is replaced. The parent folder is created if missing. */
int ft_cache_materialize(ft_cache *cache, const ft_manifest *manifest, const char *destination);

/* The path of the object holding hash. Caller frees. */
char *ft_cache_object_path(const ft_cache *cache, ft_hash hash);

/* Removes manifests whose key is not in keep (and damaged ones), then objects no
 * remaining manifest names, temporaries left by interrupted writes, and
 * incoming/.
 * freed_bytes counts the files whose last link went (an object still linked into
 * a workspace frees no space); removed_objects counts objects. Must not run
 * while another process stores into the same cache (the workspace lock). */
int ft_cache_gc(ft_cache *cache, const char *const *keep_keys, size_t n_keep, uint64_t *freed_bytes,
                uint64_t *removed_objects);

#endif
