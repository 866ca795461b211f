/* shm: stages a folder in a tmpfs (rules/shm.ft lists the parameters). The
 * target is a symbolic link to the copy; the copying, the markers that prove a
 * copy complete and the registry that gc reads live in ftpipe/staging.c.
 *
 * The copy is named by the stage key, which hashes the folder's content: a
 * rerun finds it and copies nothing. When the tmpfs was emptied, the cached
 * link's copy is gone, cached_output_usable says so, and the engine runs the
 * stage again under the same key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/manifest.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/transfer/staging.h"

static bool on_progress(void *context, uint64_t copied_bytes, uint64_t total_bytes)
{
    ft_stage *stage = context;
    char done[32], total[32];
    ft_format_bytes(copied_bytes, done, sizeof done);
    ft_format_bytes(total_bytes, total, sizeof total);
    ft_stage_progress(stage, total_bytes ? (double)copied_bytes / (double)total_bytes : 1.0, "%s/%s", done, total);
    return ft_stage_cancelled(stage);
}

/* The input as the pipeline names it: relative to the pipeline's folder when below it. */
static const char *input_name(ft_stage *stage, const char *path)
{
    const char *dir = ft_stage_pipeline_dir(stage);
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && path[n] == '/' ? path + n + 1 : path;
}

static char *tmpfs_dir(ft_stage *stage)
{
    char *joined = ft_path_join(ft_stage_pipeline_dir(stage), ft_stage_param_string(stage, "dir"));
    char *absolute = ft_path_absolute(joined);
    free(joined);
    return absolute;
}

static int does_not_fit(ft_stage *stage, const ft_staging_result *result, const char *dir, const char *source)
{
    char size[32], min_free[32], free_space[32];
    ft_format_bytes(result->source.total_bytes, size, sizeof size);
    ft_format_bytes((uint64_t)ft_stage_param_size_bytes(stage, "min_free"), min_free, sizeof min_free);
    ft_format_bytes(result->free_bytes, free_space, sizeof free_space);
    if (strcmp(ft_stage_param_string(stage, "fallback"), "disk") != 0)
        return ft_stage_fail(stage,
                             "%s: %s (%s) and min_free (%s) do not fit in %s, which has %s free: free space "
                             "there, give a larger tmpfs with dir =, or set fallback = disk to use the folder "
                             "on disk",
                             ft_stage_target(stage), input_name(stage, source), size, min_free, dir, free_space);
    ft_stage_log(stage, "%s (%s) and min_free (%s) do not fit in %s (%s free): fallback = disk", source, size,
                 min_free, dir, free_space);
    ft_stage_summary(stage, "not staged: %s and min_free %s do not fit in %s (%s free); using the folder on disk, %s",
                     size, min_free, dir, free_space, input_name(stage, source));
    return 0;
}

static void summarize(ft_stage *stage, const ft_staging_result *result, const char *dir, uint64_t elapsed_ns)
{
    char size[32];
    ft_format_bytes(result->source.total_bytes, size, sizeof size);
    const char *files = result->source.n_files == 1 ? "file" : "files";
    if (!result->on_tmpfs)
        ft_stage_log(stage, "note: %s is not a tmpfs, so the copy is on disk", dir);
    if (result->outcome == FT_STAGING_REUSED) {
        ft_stage_summary(stage, "already staged in %s: nothing copied (%zu %s, %s)", dir, result->source.n_files,
                         files, size);
        return;
    }
    double seconds = (double)elapsed_ns / 1e9;
    char rate[32];
    ft_format_bytes(seconds > 0 ? (uint64_t)((double)result->source.total_bytes / seconds) : 0, rate, sizeof rate);
    ft_stage_summary(stage, "staged %zu %s, %s, in %s at %s/s%s", result->source.n_files, files, size, dir, rate,
                     ft_stage_param_bool(stage, "verify") ? ", verified" : "");
}

static int run_shm(ft_stage *stage)
{
    const char *target = ft_stage_target(stage);
    if (ft_stage_input_count(stage) != 1)
        return ft_stage_fail(stage, "%s: shm stages one folder: give exactly one input (it has %zu)", target,
                             ft_stage_input_count(stage));
    int64_t transfers = ft_stage_param_int(stage, "transfers");
    if (transfers < 0 || transfers > 1024)
        return ft_stage_fail(stage, "%s: transfers is %lld; give a count from 1 to 1024, or 0 for one per core",
                             target, (long long)transfers);
    char *source = realpath(ft_stage_input_path(stage, 0), NULL);
    if (!source)
        return ft_error_errno("%s: cannot resolve its input %s", target, ft_stage_input_path(stage, 0));
    char *dir = tmpfs_dir(stage);
    ft_staging_request request = {
        .source = source,
        .tmpfs_dir = dir,
        .key = ft_stage_key(stage),
        .state_dir = ft_stage_state_dir(stage),
        .min_free_bytes = (uint64_t)ft_stage_param_size_bytes(stage, "min_free"),
        .transfers = (int)transfers,
        .verify = ft_stage_param_bool(stage, "verify"),
        .progress = on_progress,
        .progress_context = stage,
    };
    uint64_t start_ns = ft_now_ns();
    ft_staging_result result;
    int status = ft_staging_stage(&request, &result);
    const char *link_target = NULL;
    if (status == 0 && result.outcome == FT_STAGING_DOES_NOT_FIT) {
        status = does_not_fit(stage, &result, dir, source);
        link_target = source;
    } else if (status == 0) {
        summarize(stage, &result, dir, ft_now_ns() - start_ns);
        link_target = result.copy_path;
    }
    const char *output = ft_stage_output_path(stage);
    if (status == 0)
        status = ft_remove_tree(output);
    if (status == 0 && symlink(link_target, output) != 0)
        status = ft_error_errno("%s: cannot create the link %s", target, output);
    if (status == 0)
        ft_stage_log(stage, "%s -> %s", target, link_target);
    ft_staging_result_free(&result);
    free(dir);
    free(source);
    return status;
}

/* A staged copy must still be whole; a fallback link must still reach the input. */
static int shm_output_usable(ft_stage *stage, const ft_manifest *output)
{
    if (output->n_entries != 1 || output->entries[0].type != FT_ENTRY_SYMLINK)
        return 0;
    const char *link_target = output->entries[0].link_target;
    if (ft_staging_copy_is_complete(link_target))
        return 1;
    if (ft_stage_input_count(stage) != 1)
        return 0;
    char *source = realpath(ft_stage_input_path(stage, 0), NULL);
    int usable = source && strcmp(source, link_target) == 0;
    free(source);
    return usable;
}

/* The copy takes the folder's size (and min_free) in the tmpfs; on disk only the link. */
static int estimate_shm(ft_stage *stage, ft_stage_estimate *out)
{
    ft_estimate_set(&out->disk_bytes, 0.0, "a symbolic link to the copy");
    if (ft_stage_input_count(stage) != 1 || !ft_path_exists(ft_stage_input_path(stage, 0))) {
        ft_estimate_unknown(&out->shm_bytes, "needs its input, which is not built yet");
        return 0;
    }
    ft_tree_summary summary;
    if (ft_tree_measure(ft_stage_input_path(stage, 0), &summary) < 0)
        return -1;
    char *dir = tmpfs_dir(stage);
    /* With fallback = disk a copy that does not fit is no failure: nothing to check before the run. */
    if (strcmp(ft_stage_param_string(stage, "fallback"), "disk") != 0)
        snprintf(out->shm_dir, sizeof out->shm_dir, "%s", dir);
    uint64_t min_free = (uint64_t)ft_stage_param_size_bytes(stage, "min_free");
    char size[32], keep[32];
    ft_format_bytes(summary.total_bytes, size, sizeof size);
    ft_format_bytes(min_free, keep, sizeof keep);
    ft_estimate_set(&out->shm_bytes, (double)(summary.total_bytes + min_free), "%zu files, %s, and min_free %s in %s",
                    summary.n_files, size, keep, dir);
    free(dir);
    return 0;
}

const ft_stage_kind ft_kind_shm = {
    .name = "shm",
    .version = 1,
    .run = run_shm,
    .cached_output_usable = shm_output_usable,
    .gc = ft_staging_gc,
    .estimate = estimate_shm,
};
