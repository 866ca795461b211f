/* staging: content-addressed copies in a tmpfs, their markers, registry and gc. */
#include "ftpipe/transfer/staging.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

#define MARKER_HEADER "ftpipe staged copy 1\n"

static char *marker_text(const ft_tree_summary *summary)
{
    return ft_xasprintf(MARKER_HEADER "files %zu\nfolders %zu\nlinks %zu\nbytes %" PRIu64 "\n", summary->n_files,
                        summary->n_dirs, summary->n_links, summary->total_bytes);
}

int ft_staging_copy_is_complete(const char *copy_path)
{
    char *holder = ft_path_dirname(copy_path);
    char *marker = ft_path_join(holder, FT_STAGING_MARKER_NAME);
    char *recorded = NULL;
    size_t length = 0;
    int complete = 0;
    ft_tree_summary now;
    if (ft_read_file(marker, &recorded, &length) == 0 && ft_tree_measure(copy_path, &now) == 0) {
        char *expected = marker_text(&now);
        complete = strcmp(recorded, expected) == 0;
        free(expected);
    }
    ft_error_clear(); /* a copy that is gone is an answer, not an error */
    free(recorded);
    free(marker);
    free(holder);
    return complete;
}

/* DIR/ftpipe-<uid>, created private; an existing one must be this user's own folder. */
static char *user_folder(const char *tmpfs_dir)
{
    if (!ft_path_is_dir(tmpfs_dir)) {
        ft_error("the staging folder %s does not exist: mount a tmpfs there, or choose another with dir = "
                 "(/dev/shm is one on most Linux systems)",
                 tmpfs_dir);
        return NULL;
    }
    char name[32];
    snprintf(name, sizeof name, "ftpipe-%lu", (unsigned long)geteuid());
    char *folder = ft_path_join(tmpfs_dir, name);
    struct stat st;
    if (mkdir(folder, 0700) != 0 && errno != EEXIST) {
        ft_error_errno("cannot create folder %s", folder);
    } else if (lstat(folder, &st) != 0) {
        ft_error_errno("cannot read %s", folder);
    } else if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        ft_error("%s is not a folder of this user's: remove it, or choose another staging folder with dir =", folder);
    } else {
        return folder;
    }
    free(folder);
    return NULL;
}

/* Partial copies of key whose process is gone: a copy interrupted by a kill. */
static void remove_dead_partials(const char *user_dir, const char *key, uint64_t *freed_bytes)
{
    DIR *dir = opendir(user_dir);
    if (!dir)
        return;
    char *prefix = ft_xasprintf(".%s.partial-", key);
    size_t prefix_length = strlen(prefix);
    struct dirent *item;
    while ((item = readdir(dir))) {
        if (strncmp(item->d_name, prefix, prefix_length) != 0)
            continue;
        long pid = strtol(item->d_name + prefix_length, NULL, 10);
        if (pid > 0 && pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
            continue;
        char *path = ft_path_join(user_dir, item->d_name);
        ft_tree_summary summary;
        if (freed_bytes && ft_tree_measure(path, &summary) == 0)
            *freed_bytes += summary.total_bytes;
        ft_remove_tree(path);
        free(path);
    }
    free(prefix);
    closedir(dir);
    ft_error_clear();
}

static int record_in_registry(const char *state_dir, const char *key, const char *holder)
{
    char *registry = ft_path_join(state_dir, "shm");
    char *entry = ft_path_join(registry, key);
    char *text = ft_xasprintf("%s\n", holder);
    int result = ft_mkdir_p(registry);
    if (result == 0)
        result = ft_write_file_atomic(entry, text, strlen(text));
    free(text);
    free(entry);
    free(registry);
    return result;
}

static bool is_tmpfs(const char *path)
{
    struct statfs fs;
    return statfs(path, &fs) == 0 && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
}

/* Copies into a private partial folder, marks it complete and renames it into
 * place; 1 when another process put a complete copy there first. */
static int copy_into_place(const ft_staging_request *request, const char *user_dir, const char *holder,
                           const char *name, ft_tree_summary *copied)
{
    char partial_name[64];
    snprintf(partial_name, sizeof partial_name, ".%s.partial-%ld", request->key, (long)getpid());
    char *partial = ft_path_join(user_dir, partial_name);
    char *partial_copy = ft_path_join(partial, name);
    char *marker = ft_path_join(partial, FT_STAGING_MARKER_NAME);
    ft_tree_copy_options options = {.threads = request->transfers, .verify = request->verify,
                                    .progress = request->progress, .progress_context = request->progress_context};
    int result = ft_remove_tree(partial);
    if (result == 0 && mkdir(partial, 0700) != 0)
        result = ft_error_errno("cannot create folder %s", partial);
    if (result == 0)
        result = ft_tree_copy(request->source, partial_copy, &options, copied);
    if (result == 0) {
        char *text = marker_text(copied);
        result = ft_write_file_atomic(marker, text, strlen(text));
        free(text);
    }
    if (result == 0 && rename(partial, holder) != 0) {
        if (errno == EEXIST || errno == ENOTEMPTY)
            result = 1;
        else
            result = ft_error_errno("cannot rename %s to %s", partial, holder);
    }
    if (result != 0) {
        char *message = ft_xstrdup(ft_error_message());
        ft_remove_tree(partial);
        if (result < 0)
            ft_error("%s", message);
        free(message);
    }
    free(marker);
    free(partial_copy);
    free(partial);
    return result;
}

int ft_staging_stage(const ft_staging_request *request, ft_staging_result *out)
{
    memset(out, 0, sizeof *out);
    const char *name = ft_path_basename(request->source);
    if (strcmp(name, FT_STAGING_MARKER_NAME) == 0)
        return ft_error("cannot stage %s: its name is the one staged copies keep their marker under", request->source);
    if (ft_tree_measure(request->source, &out->source) != 0)
        return -1;
    char *user_dir = user_folder(request->tmpfs_dir);
    if (!user_dir)
        return -1;
    out->on_tmpfs = is_tmpfs(user_dir);
    char *holder = ft_path_join(user_dir, request->key);
    char *copy_path = ft_path_join(holder, name);
    int result = record_in_registry(request->state_dir, request->key, holder);
    if (result == 0 && ft_staging_copy_is_complete(copy_path)) {
        out->outcome = FT_STAGING_REUSED;
        out->copy_path = copy_path;
        copy_path = NULL;
    } else if (result == 0) {
        /* Whatever is there is incomplete: an emptied or half-removed copy. */
        result = ft_remove_tree(holder);
        remove_dead_partials(user_dir, request->key, NULL);
        if (result == 0)
            result = ft_free_space_bytes(user_dir, &out->free_bytes);
        if (result == 0 && out->source.total_bytes + request->min_free_bytes > out->free_bytes) {
            out->outcome = FT_STAGING_DOES_NOT_FIT;
        } else if (result == 0) {
            ft_tree_summary copied;
            result = copy_into_place(request, user_dir, holder, name, &copied);
            out->outcome = result == 1 ? FT_STAGING_REUSED : FT_STAGING_COPIED;
            if (result == 1)
                result = ft_staging_copy_is_complete(copy_path)
                             ? 0
                             : ft_error("%s was made by another process, but is incomplete: run again", holder);
            out->copy_path = copy_path;
            copy_path = NULL;
        }
    }
    free(copy_path);
    free(holder);
    free(user_dir);
    if (result != 0)
        ft_staging_result_free(out);
    return result == 0 ? 0 : -1;
}

void ft_staging_result_free(ft_staging_result *result)
{
    free(result->copy_path);
    result->copy_path = NULL;
}

/* A registry entry names DIR/ftpipe-<uid>/<key> for its own key; anything else
 * (a damaged entry) is only forgotten, never followed to a removal. */
static bool plausible_holder(const char *holder, const char *key)
{
    if (holder[0] != '/' || strcmp(ft_path_basename(holder), key) != 0)
        return false;
    char *user_dir = ft_path_dirname(holder);
    bool plausible = strncmp(ft_path_basename(user_dir), "ftpipe-", 7) == 0;
    free(user_dir);
    return plausible;
}

static void remove_recorded_copy(const char *holder, const char *key, uint64_t *freed_bytes, size_t *removed_copies)
{
    if (!plausible_holder(holder, key))
        return;
    struct stat st;
    if (lstat(holder, &st) == 0 && S_ISDIR(st.st_mode)) {
        ft_tree_summary summary;
        if (ft_tree_measure(holder, &summary) == 0)
            *freed_bytes += summary.total_bytes;
        if (ft_remove_tree(holder) == 0)
            (*removed_copies)++;
    }
    char *user_dir = ft_path_dirname(holder);
    remove_dead_partials(user_dir, key, freed_bytes);
    free(user_dir);
}

int ft_staging_gc(const char *state_dir, const char *const *keep_keys, size_t n_keep, uint64_t *freed_bytes,
                  size_t *removed_copies)
{
    uint64_t freed = 0;
    size_t removed = 0;
    char *registry = ft_path_join(state_dir, "shm");
    DIR *dir = opendir(registry);
    int result = 0;
    if (!dir && errno != ENOENT)
        result = ft_error_errno("cannot read %s", registry);
    struct dirent *item;
    while (dir && result == 0 && (item = readdir(dir))) {
        if (item->d_name[0] == '.')
            continue;
        bool kept = false;
        for (size_t k = 0; k < n_keep && !kept; k++)
            kept = strcmp(keep_keys[k], item->d_name) == 0;
        if (kept)
            continue;
        char *entry = ft_path_join(registry, item->d_name);
        char *holder = NULL;
        size_t length = 0;
        if (ft_read_file(entry, &holder, &length) == 0) {
            holder[strcspn(holder, "\n")] = '\0';
            remove_recorded_copy(holder, item->d_name, &freed, &removed);
        }
        if (unlink(entry) != 0 && errno != ENOENT)
            result = ft_error_errno("cannot remove %s", entry);
        free(holder);
        free(entry);
    }
    if (dir)
        closedir(dir);
    free(registry);
    if (freed_bytes)
        *freed_bytes = freed;
    if (removed_copies)
        *removed_copies = removed;
    return result;
}
