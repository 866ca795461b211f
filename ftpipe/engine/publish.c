/* publish: outputs into the cache and the workspace. */
#include "ftpipe/engine/publish.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/stage_runtime.h"

/* Whether path was placed by ftpipe, from a run killed before its record was
 * committed: it holds exactly this output, or every file in it is a hard link of
 * a cache object (a stage whose output differs from run to run, such as one with
 * timings, placed an earlier one). Replacing it then loses nothing. */
static bool placed_by_ftpipe(ft_cache *cache, const char *path, const ft_manifest *manifest)
{
    ft_manifest *present = NULL;
    if (ft_manifest_build(NULL, path, 0, &present) != 0) {
        ft_error_clear();
        return false;
    }
    bool placed = ft_hash_equal(present->hash, manifest->hash);
    size_t n_files = 0;
    bool all_linked = true;
    for (size_t i = 0; i < present->n_entries && !placed && all_linked; i++) {
        const ft_manifest_entry *entry = &present->entries[i];
        if (entry->type != FT_ENTRY_FILE)
            continue;
        n_files++;
        char *file = entry->path[0] ? ft_path_join(path, entry->path) : ft_xstrdup(path);
        char *object = ft_cache_object_path(cache, entry->hash);
        struct stat in_place, stored;
        all_linked = lstat(file, &in_place) == 0 && lstat(object, &stored) == 0 &&
                     in_place.st_dev == stored.st_dev && in_place.st_ino == stored.st_ino;
        free(file);
        free(object);
    }
    ft_manifest_free(present);
    return placed || (n_files > 0 && all_linked);
}

static int materialize(ft_workspace *workspace, const ft_node *node, const ft_manifest *manifest, const char *key,
                       const char *output_hash)
{
    ft_target_record previous;
    int known = ft_state_target_get(workspace->state, node->target, &previous);
    if (known < 0)
        return -1;
    if (!known && ft_path_exists(node->target_path) &&
        !placed_by_ftpipe(workspace->cache, node->target_path, manifest))
        return ft_error("%s already exists and was not made by ftpipe; move it away (or delete it) and run again "
                        "(the stage's result is kept in the cache, nothing reruns)",
                        node->target_path);
    char *parent = ft_path_dirname(node->target_path);
    int result = ft_mkdir_p(parent);
    free(parent);
    if (result == 0)
        result = ft_cache_materialize(workspace->cache, manifest, node->target_path);
    if (result != 0)
        return ft_error_context("cannot place %s in the workspace", node->target);
    ft_target_record record;
    memset(&record, 0, sizeof record);
    snprintf(record.key, sizeof record.key, "%s", key);
    snprintf(record.output_hash, sizeof record.output_hash, "%s", output_hash);
    result = ft_file_stat_read(node->target_path, &record.stat);
    if (result == 0)
        result = ft_state_target_set(workspace->state, node->target, &record);
    if (result != 0) {
        /* Unrecorded, the target would pass for someone else's on the next run: take it back. */
        char *reason = ft_xstrdup(ft_error_message());
        ft_remove_tree(node->target_path);
        ft_error("%s", reason);
        free(reason);
    }
    return result;
}

int ft_publish_output(ft_workspace *workspace, const ft_node *node, ft_plan *plan, const char *work_dir,
                      char **kept_log)
{
    *kept_log = NULL;
    char *out_dir = ft_path_join(work_dir, "out");
    char *output = ft_path_join(out_dir, ft_path_basename(node->target));
    free(out_dir);
    ft_manifest *manifest = NULL;
    int result = ft_manifest_build(NULL, output, 0, &manifest);
    if (result == 0)
        result = ft_cache_store_deferred(workspace->cache, plan->key.key, output, manifest);
    free(output);
    if (result != 0) {
        ft_manifest_free(manifest);
        return ft_error_context("cannot store the output of %s", node->target);
    }
    ft_hash_to_hex(manifest->hash, plan->output_hash);
    result = materialize(workspace, node, manifest, plan->key.key, plan->output_hash);
    ft_manifest_free(manifest);
    if (result != 0)
        return -1;

    /* The log outlives the work folder: `ftpipe log` shows it later. */
    char *logs_dir = ft_path_join(workspace->state_dir, "logs");
    char *log = ft_stage_log_path(work_dir);
    *kept_log = ft_workspace_log_path(workspace, plan->key.key);
    result = ft_mkdir_p(logs_dir);
    if (result == 0 && rename(log, *kept_log) != 0 && errno != ENOENT)
        result = ft_error_errno("cannot keep the log of %s at %s (it stays in %s)", node->target, *kept_log, log);
    if (result != 0 || !ft_path_exists(*kept_log)) {
        free(*kept_log);
        *kept_log = NULL;
    }
    free(log);
    free(logs_dir);
    return result == 0 ? 0 : -1; /* the work folder goes once its batch is committed (build.c) */
}

int ft_publish_restore(ft_workspace *workspace, const ft_node *node, ft_plan *plan)
{
    if (materialize(workspace, node, plan->manifest, plan->key.key, plan->output_hash) != 0)
        return -1;
    char *log = ft_workspace_log_path(workspace, plan->key.key);
    ft_run_record record = ft_plan_run_record(node, plan, FT_RUN_CACHED, log);
    int64_t id = 0;
    int result = ft_state_run_start(workspace->state, &record, &id);
    if (result == 0)
        result = ft_state_run_finish(workspace->state, id, FT_RUN_CACHED, 0, plan->output_hash, log);
    free(log);
    return result;
}
