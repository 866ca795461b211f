/* session: loading a pipeline into a graph and a workspace, and running it. */
#include "ftpipe/engine/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/build.h"
#include "ftpipe/engine/estimate.h"

/* FTPIPE_RULES: extra rule folders (colon-separated), searched before the built-in rules. */
static char **rule_dirs(size_t *count)
{
    *count = 0;
    const char *value = getenv("FTPIPE_RULES");
    if (!value || !*value)
        return NULL;
    char **dirs = ft_xcalloc(strlen(value) + 2, sizeof *dirs);
    const char *p = value;
    while (*p) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n)
            dirs[(*count)++] = ft_xstrndup(p, n);
        p += n + (end ? 1 : 0);
    }
    return dirs;
}

int ft_session_open(const ft_invocation *invocation, bool lock, ft_session *out)
{
    memset(out, 0, sizeof *out);
    size_t n_dirs = 0;
    char **dirs = rule_dirs(&n_dirs);
    int result = ft_rulebook_load((const char *const *)dirs, n_dirs, &out->rules);
    if (result == 0) {
        if (!ft_path_exists(invocation->pipeline_path)) {
            result = ft_error("no pipeline file %s; write one (see README.md) or give -f FILE / -C DIR",
                              invocation->pipeline_path);
        } else {
            ft_pipeline_options options = {
                .overrides = invocation->overrides,
                .n_overrides = invocation->n_overrides,
                .rule_dirs = (const char *const *)dirs,
                .n_rule_dirs = n_dirs,
            };
            result = ft_pipeline_load(invocation->pipeline_path, &options, &out->pipeline);
        }
    }
    for (size_t i = 0; i < n_dirs; i++)
        free(dirs[i]);
    free(dirs);
    if (result == 0)
        result = ft_graph_build(out->pipeline, out->rules, invocation->kinds, &out->graph);
    if (result == 0)
        result = ft_workspace_open(out->pipeline->dir, lock, &out->workspace);
    if (result != 0) {
        ft_session_close(out);
        return -1;
    }
    return 0;
}

void ft_session_close(ft_session *session)
{
    ft_workspace_close(session->workspace);
    ft_graph_free(session->graph);
    ft_pipeline_free(session->pipeline);
    ft_rulebook_free(session->rules);
    memset(session, 0, sizeof *session);
}

static void print_summary(const ft_build_summary *summary, bool dry_run)
{
    if (dry_run) {
        if (summary->run + summary->restored == 0)
            printf("ftpipe: nothing to do (%zu up to date)\n", summary->up_to_date);
        else
            printf("ftpipe: would run %zu, restore %zu; %zu up to date\n", summary->run, summary->restored,
                   summary->up_to_date);
        return;
    }
    if (summary->run + summary->restored + summary->failed + summary->skipped == 0 && !summary->interrupted) {
        printf("ftpipe: nothing to do (%zu up to date)\n", summary->up_to_date);
        return;
    }
    printf("ftpipe: %zu run, %zu restored, %zu up to date", summary->run, summary->restored, summary->up_to_date);
    if (summary->failed)
        printf(", %zu failed", summary->failed);
    if (summary->skipped)
        printf(", %zu not run because an input failed", summary->skipped);
    printf("\n");
}

int ft_run_pipeline(const ft_invocation *invocation)
{
    ft_session session;
    if (ft_session_open(invocation, !invocation->dry_run, &session) != 0)
        return 1;
    int status = 0;
    if (ft_graph_select(session.graph, invocation->arguments, invocation->n_arguments) != 0) {
        status = 1;
    } else if (!invocation->dry_run && ft_estimate_check_fits(session.workspace, session.graph) != 0) {
        status = 1; /* refused before any stage starts */
    } else {
        ft_build_options options = {
            .jobs = invocation->jobs,
            .keep_going = invocation->keep_going,
            .dry_run = invocation->dry_run,
            .progress = ft_progress_new(stdout),
        };
        ft_build_detect_resources(&options.gpus_total, &options.memory_total_bytes);
        ft_build_summary summary;
        int result = ft_build(session.workspace, session.graph, &options, &summary);
        print_summary(&summary, invocation->dry_run);
        ft_progress_free(options.progress);
        if (summary.interrupted)
            status = 130;
        else if (result != 0)
            status = 1;
    }
    ft_session_close(&session);
    return status;
}
