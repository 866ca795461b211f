/* cache: content-addressed objects, manifests by stage key, and their way into
 * the workspace. */
#include "ftpipe/engine/cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

/* A manifest written by ft_cache_store_deferred, under a temporary name until
 * ft_cache_sync makes it durable. */
typedef struct {
    char key[FT_HASH_HEX_LENGTH + 1];
    char *temporary;
} pending_manifest;

struct ft_cache {
    char *dir;
    char *objects_dir;
    char *manifests_dir;
    pending_manifest *pending;
    size_t n_pending;
};

int ft_cache_open(const char *state_dir, ft_cache **out)
{
    ft_cache *cache = ft_xcalloc(1, sizeof *cache);
    cache->dir = ft_path_join(state_dir, "cache");
    cache->objects_dir = ft_path_join(cache->dir, "objects");
    cache->manifests_dir = ft_path_join(cache->dir, "manifests");
    if (ft_mkdir_p(cache->objects_dir) != 0 || ft_mkdir_p(cache->manifests_dir) != 0) {
        ft_cache_close(cache);
        return -1;
    }
    *out = cache;
    return 0;
}

void ft_cache_close(ft_cache *cache)
{
    if (!cache)
        return;
    /* Unsynced manifests stay temporaries: no promise is made that was not kept (gc removes them). */
    for (size_t i = 0; i < cache->n_pending; i++)
        free(cache->pending[i].temporary);
    free(cache->pending);
    free(cache->dir);
    free(cache->objects_dir);
    free(cache->manifests_dir);
    free(cache);
}

const char *ft_cache_dir(const ft_cache *cache) { return cache->dir; }

char *ft_cache_object_path(const ft_cache *cache, ft_hash hash)
{
    char hex[FT_HASH_HEX_LENGTH + 1];
    ft_hash_to_hex(hash, hex);
    return ft_xasprintf("%s/%.2s/%s", cache->objects_dir, hex, hex + 2);
}

/* Keys and object names are file names, so only lowercase hex digits are let in. */
static bool is_hex(const char *text, size_t length)
{
    size_t n = 0;
    for (; text[n]; n++)
        if (!((text[n] >= '0' && text[n] <= '9') || (text[n] >= 'a' && text[n] <= 'f')))
            return false;
    return n == length;
}

static bool is_key(const char *key) { return is_hex(key, FT_HASH_HEX_LENGTH); }

static int check_key(const char *key)
{
    return is_key(key) ? 0 : ft_error("\"%s\" is not a cache key: expected 32 lowercase hex digits", key);
}

static mode_t object_mode(bool executable) { return executable ? 0555 : 0444; }

static int sync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ft_error_errno("cannot open %s", path);
    int result = fsync(fd) == 0 ? 0 : ft_error_errno("cannot sync %s", path);
    close(fd);
    return result;
}

/* --- store --- */

static int write_new_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return ft_error_errno("cannot create %s", path);
    size_t length = strlen(text);
    ssize_t written = write(fd, text, length);
    int result = written == (ssize_t)length ? 0 : ft_error_errno("cannot write %s", path);
    if (close(fd) != 0 && result == 0)
        result = ft_error_errno("cannot write %s", path);
    return result;
}

/* Moves source to object (or copies it across file systems), read-only. A
 * source whose object already exists is simply dropped. */
static int store_file(const char *source, const char *object, const ft_manifest_entry *entry)
{
    struct stat st;
    if (lstat(source, &st) != 0)
        return ft_error_errno("cannot store %s in the cache", source);
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != entry->size_bytes)
        return ft_error("cannot store %s in the cache: it changed after it was hashed", source);
    if (ft_path_exists(object))
        return unlink(source) == 0 ? 0 : ft_error_errno("cannot remove %s", source);
    if (chmod(source, object_mode(entry->executable)) != 0)
        return ft_error_errno("cannot make %s read-only", source);
    if (rename(source, object) == 0)
        return 0; /* made durable by ft_cache_sync, before the manifest that names it */
    if (errno != EXDEV)
        return ft_error_errno("cannot move %s into the cache as %s", source, object);
    /* Another file system: copy under a temporary name, so the object appears whole or not at all. */
    char *dir = ft_path_dirname(object);
    char *temporary = ft_xasprintf("%s/.%s.ftpipe-new.%ld", dir, ft_path_basename(object), (long)getpid());
    int result = ft_copy_file(source, temporary);
    if (result == 0)
        result = sync_path(temporary);
    if (result == 0 && rename(temporary, object) != 0)
        result = ft_error_errno("cannot rename %s to %s", temporary, object);
    if (result != 0)
        unlink(temporary);
    else if (unlink(source) != 0)
        result = ft_error_errno("cannot remove %s", source);
    free(dir);
    free(temporary);
    return result;
}

int ft_cache_store_deferred(ft_cache *cache, const char *key, const char *path, const ft_manifest *manifest)
{
    if (check_key(key) != 0)
        return -1;
    int result = 0;
    for (size_t i = 0; i < manifest->n_entries && result == 0; i++) {
        const ft_manifest_entry *entry = &manifest->entries[i];
        if (entry->type != FT_ENTRY_FILE)
            continue;
        char *source = entry->path[0] ? ft_path_join(path, entry->path) : ft_xstrdup(path);
        char *object = ft_cache_object_path(cache, entry->hash);
        char *object_dir = ft_path_dirname(object);
        if (mkdir(object_dir, 0755) != 0 && errno != EEXIST)
            result = ft_error_errno("cannot create the cache folder %s", object_dir);
        if (result == 0)
            result = store_file(source, object, entry);
        free(source);
        free(object);
        free(object_dir);
    }
    if (result == 0) {
        char *text = ft_manifest_serialize(manifest);
        char *temporary = ft_xasprintf("%s/%s.tmp.%ld", cache->manifests_dir, key, (long)getpid());
        result = write_new_file(temporary, text);
        free(text);
        if (result == 0) {
            cache->pending = ft_xrealloc(cache->pending, (cache->n_pending + 1) * sizeof *cache->pending);
            pending_manifest *entry = &cache->pending[cache->n_pending++];
            memcpy(entry->key, key, sizeof entry->key);
            entry->temporary = temporary;
        } else {
            unlink(temporary);
            free(temporary);
        }
    }
    return result == 0 ? 0 : ft_error_context("while storing the output %s under the key %s", path, key);
}

int ft_cache_sync(ft_cache *cache)
{
    if (cache->n_pending == 0)
        return 0;
    /* One flush of the file system holding the cache makes every object, its folder
     * entry and every temporary manifest durable at once; a manifest then takes its
     * name, so a manifest on disk names only durable objects. */
    int fd = open(cache->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return ft_error_errno("cannot open the cache folder %s", cache->dir);
    int result = syncfs(fd) == 0 ? 0 : ft_error_errno("cannot sync the file system of %s", cache->dir);
    close(fd);
    size_t done = 0;
    while (done < cache->n_pending && result == 0) {
        char *manifest_path = ft_path_join(cache->manifests_dir, cache->pending[done].key);
        if (rename(cache->pending[done].temporary, manifest_path) == 0)
            free(cache->pending[done++].temporary);
        else
            result = ft_error_errno("cannot rename %s to %s", cache->pending[done].temporary, manifest_path);
        free(manifest_path);
    }
    if (result == 0)
        result = ft_fsync_dir(cache->manifests_dir);
    /* What failed stays pending (a later sync tries again), in order. */
    memmove(cache->pending, cache->pending + done, (cache->n_pending - done) * sizeof *cache->pending);
    cache->n_pending -= done;
    return result;
}

int ft_cache_store(ft_cache *cache, const char *key, const char *path, const ft_manifest *manifest)
{
    if (ft_cache_store_deferred(cache, key, path, manifest) != 0)
        return -1;
    return ft_cache_sync(cache);
}

/* --- lookup --- */

static bool object_present(const ft_cache *cache, const ft_manifest_entry *entry)
{
    char *object = ft_cache_object_path(cache, entry->hash);
    struct stat st;
    bool present = lstat(object, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == entry->size_bytes;
    free(object);
    return present;
}

int ft_cache_store_object(ft_cache *cache, const char *source, const ft_manifest_entry *entry)
{
    char *object = ft_cache_object_path(cache, entry->hash);
    char *object_dir = ft_path_dirname(object);
    int result = 0;
    if (mkdir(object_dir, 0755) != 0 && errno != EEXIST)
        result = ft_error_errno("cannot create the cache folder %s", object_dir);
    if (result == 0)
        result = store_file(source, object, entry);
    if (result == 0)
        result = sync_path(object);
    if (result == 0)
        result = ft_fsync_dir(object_dir);
    free(object);
    free(object_dir);
    return result;
}

int ft_cache_store_manifest(ft_cache *cache, const char *key, const ft_manifest *manifest)
{
    if (check_key(key) != 0)
        return -1;
    char *text = ft_manifest_serialize(manifest);
    char *manifest_path = ft_path_join(cache->manifests_dir, key);
    int result = ft_write_file_atomic(manifest_path, text, strlen(text));
    free(manifest_path);
    free(text);
    return result;
}

bool ft_cache_has_object(const ft_cache *cache, const ft_manifest_entry *entry)
{
    return object_present(cache, entry);
}

int ft_cache_lookup(ft_cache *cache, const char *key, ft_manifest **out)
{
    if (check_key(key) != 0)
        return -1;
    /* This process's own pending manifests count: a stage that waited for another
     * with the same key finds its result before the next sync. */
    char *path = NULL;
    for (size_t i = cache->n_pending; i-- > 0 && !path;)
        if (strcmp(cache->pending[i].key, key) == 0)
            path = ft_xstrdup(cache->pending[i].temporary);
    if (!path)
        path = ft_path_join(cache->manifests_dir, key);
    if (!ft_path_exists(path)) {
        free(path);
        return 0;
    }
    char *text;
    int result = ft_read_file(path, &text, NULL);
    ft_manifest *manifest = NULL;
    /* A damaged manifest or a missing object is a miss: the stage runs again and
     * its store writes a whole one. */
    if (result == 0 && ft_manifest_parse(text, path, &manifest) == 0) {
        for (size_t i = 0; i < manifest->n_entries; i++) {
            if (manifest->entries[i].type == FT_ENTRY_FILE && !object_present(cache, &manifest->entries[i])) {
                ft_manifest_free(manifest);
                manifest = NULL;
                break;
            }
        }
    }
    if (result == 0)
        free(text);
    free(path);
    if (result != 0)
        return -1;
    if (!manifest)
        return 0;
    *out = manifest;
    return 1;
}

/* --- materialize --- */

static int clone_or_copy(const char *object, const char *destination)
{
    int in = open(object, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return ft_error_errno("cannot open %s", object);
    int out = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
        int result = ft_error_errno("cannot create %s", destination);
        close(in);
        return result;
    }
    bool cloned = ioctl(out, FICLONE, in) == 0;
    close(out);
    close(in);
    return cloned ? 0 : ft_copy_file(object, destination);
}

/* A hard link shares the object's inode; where links cannot be made (another
 * file system, too many links) or the mode differs, a reflink or a copy. */
static int place_file(const ft_cache *cache, const ft_manifest_entry *entry, const char *destination)
{
    char *object = ft_cache_object_path(cache, entry->hash);
    struct stat st;
    int result = 0;
    if (lstat(object, &st) != 0) {
        result = ft_error_errno("cannot use the cached object %s", object);
        free(object);
        return result;
    }
    bool same_mode = ((st.st_mode & S_IXUSR) != 0) == entry->executable;
    if (same_mode && link(object, destination) == 0) {
        free(object);
        return 0;
    }
    if (same_mode && errno != EXDEV && errno != EMLINK && errno != EPERM) {
        result = ft_error_errno("cannot link %s to %s", object, destination);
    } else {
        result = clone_or_copy(object, destination);
        if (result == 0 && chmod(destination, object_mode(entry->executable)) != 0)
            result = ft_error_errno("cannot make %s read-only", destination);
    }
    free(object);
    return result;
}

static int place_entry(const ft_cache *cache, const ft_manifest_entry *entry, const char *destination)
{
    switch (entry->type) {
    case FT_ENTRY_DIR:
        return mkdir(destination, 0755) == 0 ? 0 : ft_error_errno("cannot create the folder %s", destination);
    case FT_ENTRY_SYMLINK:
        return symlink(entry->link_target, destination) == 0
                   ? 0
                   : ft_error_errno("cannot create the link %s", destination);
    case FT_ENTRY_FILE:
        return place_file(cache, entry, destination);
    }
    return ft_error("unknown entry type for %s", destination);
}

static int build_at(const ft_cache *cache, const ft_manifest *manifest, const char *temporary)
{
    if (manifest->n_entries == 1 && manifest->entries[0].path[0] == '\0')
        return place_entry(cache, &manifest->entries[0], temporary);
    if (mkdir(temporary, 0755) != 0)
        return ft_error_errno("cannot create the folder %s", temporary);
    int result = 0;
    /* Sorted paths put every folder before what it holds. */
    for (size_t i = 0; i < manifest->n_entries && result == 0; i++) {
        char *destination = ft_path_join(temporary, manifest->entries[i].path);
        result = place_entry(cache, &manifest->entries[i], destination);
        free(destination);
    }
    return result;
}

/* Puts the finished temporary at destination. Swapping them keeps destination
 * whole at every instant; where the file system cannot swap, a folder in the
 * way is moved aside first. */
static int move_into_place(const char *temporary, const char *destination, const char *aside)
{
    if (!ft_path_exists(destination) || renameat2(AT_FDCWD, temporary, AT_FDCWD, destination, RENAME_EXCHANGE) != 0) {
        struct stat st;
        bool folder_in_way = lstat(destination, &st) == 0 && (S_ISDIR(st.st_mode) || ft_path_is_dir(temporary));
        if (folder_in_way && rename(destination, aside) != 0)
            return ft_error_errno("cannot move %s aside to replace it", destination);
        if (rename(temporary, destination) != 0) {
            int result = ft_error_errno("cannot rename %s to %s", temporary, destination);
            if (folder_in_way)
                rename(aside, destination);
            return result;
        }
        return folder_in_way ? ft_remove_tree(aside) : 0;
    }
    return ft_remove_tree(temporary); /* now holding what destination held */
}

int ft_cache_materialize(ft_cache *cache, const ft_manifest *manifest, const char *destination)
{
    char *parent = ft_path_dirname(destination);
    const char *name = ft_path_basename(destination);
    char *temporary = ft_xasprintf("%s/.%s.ftpipe-new.%ld", parent, name, (long)getpid());
    char *aside = ft_xasprintf("%s/.%s.ftpipe-old.%ld", parent, name, (long)getpid());
    int result = ft_mkdir_p(parent);
    if (result == 0)
        result = ft_remove_tree(temporary); /* left by an interrupted run with our pid */
    if (result == 0)
        result = ft_remove_tree(aside);
    if (result == 0)
        result = build_at(cache, manifest, temporary);
    if (result == 0)
        result = move_into_place(temporary, destination, aside);
    if (result != 0)
        ft_remove_tree(temporary);
    free(parent);
    free(temporary);
    free(aside);
    return result == 0 ? 0 : ft_error_context("while putting the cached output at %s", destination);
}

/* --- garbage collection --- */

typedef struct {
    uint64_t freed_bytes;
    uint64_t removed_objects;
} gc_tally;

static int compare_hashes(const void *a, const void *b)
{
    const ft_hash *x = a, *y = b;
    if (x->high != y->high)
        return x->high < y->high ? -1 : 1;
    return x->low < y->low ? -1 : x->low > y->low;
}

static int compare_strings(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Removes a file, counting its bytes when this was its last link (a file still
 * linked into a workspace frees nothing). */
static int remove_counted(const char *path, gc_tally *tally)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : ft_error_errno("cannot stat %s", path);
    if (S_ISDIR(st.st_mode)) {
        if (ft_remove_tree(path) != 0)
            return -1;
    } else if (unlink(path) != 0) {
        return ft_error_errno("cannot remove %s", path);
    }
    if (!S_ISDIR(st.st_mode) && st.st_nlink == 1)
        tally->freed_bytes += (uint64_t)st.st_size;
    return 0;
}

typedef struct {
    ft_hash *hashes;
    size_t count;
    size_t capacity;
} hash_list;

/* Drops manifests whose key is not kept (and damaged or temporary files); lists
 * the objects the kept ones name. */
static int sweep_manifests(ft_cache *cache, const char *const *keep_keys, size_t n_keep, hash_list *referenced,
                           gc_tally *tally)
{
    const char **keep = ft_xcalloc(n_keep + 1, sizeof *keep);
    for (size_t i = 0; i < n_keep; i++)
        keep[i] = keep_keys[i];
    qsort(keep, n_keep, sizeof *keep, compare_strings);
    DIR *dir = opendir(cache->manifests_dir);
    if (!dir) {
        free(keep);
        return ft_error_errno("cannot read the folder %s", cache->manifests_dir);
    }
    int result = 0;
    struct dirent *item;
    while (result == 0 && (item = readdir(dir))) {
        const char *name = item->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        char *path = ft_path_join(cache->manifests_dir, name);
        bool kept = is_key(name) && bsearch(&name, keep, n_keep, sizeof *keep, compare_strings);
        char *text = NULL;
        ft_manifest *manifest = NULL;
        if (kept && ft_read_file(path, &text, NULL) == 0 && ft_manifest_parse(text, path, &manifest) == 0) {
            for (size_t i = 0; i < manifest->n_entries; i++) {
                if (manifest->entries[i].type != FT_ENTRY_FILE)
                    continue;
                ft_grow((void **)&referenced->hashes, &referenced->capacity, referenced->count + 1,
                        sizeof *referenced->hashes);
                referenced->hashes[referenced->count++] = manifest->entries[i].hash;
            }
        } else {
            result = remove_counted(path, tally);
        }
        ft_manifest_free(manifest);
        free(text);
        free(path);
    }
    closedir(dir);
    free(keep);
    return result;
}

/* In objects/ab/, the name is the rest of the hash; anything else there (a
 * temporary left by an interrupted copy) goes too. */
static int sweep_object_dir(const char *dir_path, const char *prefix, const hash_list *referenced,
                            gc_tally *tally)
{
    DIR *dir = opendir(dir_path);
    if (!dir)
        return ft_error_errno("cannot read the folder %s", dir_path);
    int result = 0;
    struct dirent *item;
    while (result == 0 && (item = readdir(dir))) {
        if (strcmp(item->d_name, ".") == 0 || strcmp(item->d_name, "..") == 0)
            continue;
        bool object = is_hex(item->d_name, FT_HASH_HEX_LENGTH - 2);
        if (object) {
            char hex[FT_HASH_HEX_LENGTH + 1];
            memcpy(hex, prefix, 2);
            memcpy(hex + 2, item->d_name, FT_HASH_HEX_LENGTH - 1); /* with its NUL */
            ft_hash hash;
            if (ft_hash_from_hex(hex, &hash) == 0 && referenced->count > 0 &&
                bsearch(&hash, referenced->hashes, referenced->count, sizeof hash, compare_hashes))
                continue;
        }
        char *path = ft_path_join(dir_path, item->d_name);
        result = remove_counted(path, tally);
        if (result == 0 && object)
            tally->removed_objects++;
        free(path);
    }
    closedir(dir);
    rmdir(dir_path); /* only succeeds once empty */
    return result;
}

int ft_cache_gc(ft_cache *cache, const char *const *keep_keys, size_t n_keep, uint64_t *freed_bytes,
                uint64_t *removed_objects)
{
    gc_tally tally = {0, 0};
    hash_list referenced = {NULL, 0, 0};
    int result = sweep_manifests(cache, keep_keys, n_keep, &referenced, &tally);
    if (result == 0 && referenced.count > 1)
        qsort(referenced.hashes, referenced.count, sizeof *referenced.hashes, compare_hashes);
    DIR *objects = result == 0 ? opendir(cache->objects_dir) : NULL;
    if (result == 0 && !objects)
        result = ft_error_errno("cannot read the folder %s", cache->objects_dir);
    struct dirent *item;
    while (result == 0 && (item = readdir(objects))) {
        const char *name = item->d_name;
        if (!is_hex(name, 2))
            continue;
        char *path = ft_path_join(cache->objects_dir, name);
        result = sweep_object_dir(path, name, &referenced, &tally);
        free(path);
    }
    if (objects)
        closedir(objects);
    free(referenced.hashes);
    /* Partial downloads from a remote cache, kept only to resume them. */
    char *incoming = ft_path_join(cache->dir, "incoming");
    if (result == 0)
        result = ft_remove_tree(incoming);
    free(incoming);
    if (result != 0)
        return ft_error_context("while collecting garbage in %s", cache->dir);
    *freed_bytes = tally.freed_bytes;
    *removed_objects = tally.removed_objects;
    return 0;
}
