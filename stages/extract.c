/* extract: unpacks an archive into a folder (rules/extract.ft lists the
 * parameters). The checks that keep a hostile archive inside the folder live in
 * ftpipe/archive_extract.c. */
#include <stdint.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/transfer/archive_extract.h"

static bool on_progress(void *context, uint64_t read_bytes, uint64_t archive_bytes)
{
    ft_stage *stage = context;
    char done[32], total[32];
    ft_format_bytes(read_bytes, done, sizeof done);
    ft_format_bytes(archive_bytes, total, sizeof total);
    ft_stage_progress(stage, archive_bytes ? (double)read_bytes / (double)archive_bytes : -1.0, "%s/%s read", done,
                      total);
    return ft_stage_cancelled(stage);
}

static int run_extract(ft_stage *stage)
{
    const char *target = ft_stage_target(stage);
    if (ft_stage_input_count(stage) != 1)
        return ft_stage_fail(stage, "%s: extract takes one input, the archive (it has %zu)", target,
                             ft_stage_input_count(stage));
    int64_t strip = ft_stage_param_int(stage, "strip_components");
    if (strip < 0 || strip > 1000)
        return ft_stage_fail(stage, "%s: strip_components is %lld; give a count from 0 to 1000", target,
                             (long long)strip);
    const char *output = ft_stage_output_path(stage);
    /* An interrupted attempt may have left part of the archive. */
    if (ft_remove_tree(output) != 0)
        return -1;
    ft_extract_options options = {
        .max_total_bytes = (uint64_t)ft_stage_param_size_bytes(stage, "max_size"),
        .strip_components = (int)strip,
        .progress = on_progress,
        .progress_context = stage,
    };
    ft_extract_summary summary;
    if (ft_archive_extract(ft_stage_input_path(stage, 0), output, &options, &summary) != 0)
        return -1;
    char total[32];
    ft_format_bytes(summary.total_bytes, total, sizeof total);
    ft_stage_summary(stage, "%zu %s, %s (%zu %s, %zu %s)", summary.n_files, summary.n_files == 1 ? "file" : "files",
                     total, summary.n_dirs, summary.n_dirs == 1 ? "folder" : "folders", summary.n_links,
                     summary.n_links == 1 ? "link" : "links");
    return 0;
}

const ft_stage_kind ft_kind_extract = {
    .name = "extract",
    .version = 1,
    .run = run_extract,
};
