/* session: loading a pipeline into a graph and a workspace, and running it. */
#include "ftpipe/engine/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/hash.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/build.h"
#include "ftpipe/engine/estimate.h"
#include "ftpipe/engine/record_answer.h"
#include "ftpipe/engine/run_stats.h"
#include "ftpipe/engine/up_to_date.h"

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

static int apply_lock(const ft_invocation *invocation, ft_pipeline *pipeline)
{
    if (invocation->lock)
        return ft_lock_apply(invocation->lock, pipeline, invocation->unlocked, invocation->n_unlocked,
                             invocation->unlock_all);
    char *path = ft_lock_path(invocation->pipeline_path);
    ft_lock *lock = NULL;
    int result = ft_lock_read(path, &lock);
    if (result == 0)
        result = ft_lock_apply(lock, pipeline, invocation->unlocked, invocation->n_unlocked, invocation->unlock_all);
    ft_lock_free(lock);
    free(path);
    return result;
}

int ft_session_open(const ft_invocation *invocation, bool lock, ft_session *out)
{
    memset(out, 0, sizeof *out);
    uint64_t start_ns = ft_now_ns();
    size_t n_dirs = 0;
    char **dirs = rule_dirs(&n_dirs);
    int result = ft_rulebook_load((const char *const *)dirs, n_dirs, &out->rules);
    uint64_t rules_ns = ft_now_ns();
    out->phase_ns[FT_PHASE_RULES] = rules_ns - start_ns;
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
    uint64_t parsed_ns = ft_now_ns();
    out->phase_ns[FT_PHASE_PARSE] = parsed_ns - rules_ns;
    if (result == 0)
        result = apply_lock(invocation, out->pipeline);
    if (result == 0)
        result = ft_graph_build(out->pipeline, out->rules, invocation->kinds, &out->graph);
    uint64_t graph_ns = ft_now_ns();
    out->phase_ns[FT_PHASE_GRAPH] = graph_ns - parsed_ns;
    if (result == 0)
        result = ft_workspace_open(out->pipeline->dir, lock, &out->workspace);
    out->phase_ns[FT_PHASE_WORKSPACE] = ft_now_ns() - graph_ns;
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

int ft_session_open_remote(const ft_invocation *invocation, const ft_session *session, bool strict,
                           ft_progress *progress, ft_remote_sync **out)
{
    *out = NULL;
    const char *url = invocation->remote_url;
    if (!url || !*url)
        url = getenv("FTPIPE_REMOTE");
    if (!url || !*url)
        url = session->pipeline->remote_url;
    if (!url || !*url)
        return 0;
    ft_remote_sync_options options = {
        .url = url,
        .strict = strict,
        .progress = progress,
        .signing_key_path = getenv("FTPIPE_REMOTE_KEY"),
        .public_key_path = getenv("FTPIPE_REMOTE_PUBLIC_KEY"),
    };
    if (ft_remote_sync_mode_writable(&options.writable) != 0)
        return -1;
    return ft_remote_sync_open(&options, out);
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
    printf("ftpipe: %zu run, %zu restored", summary->run, summary->restored);
    if (summary->restored_from_remote)
        printf(" (%zu restored from remote)", summary->restored_from_remote);
    printf(", %zu up to date", summary->up_to_date);
    if (summary->failed)
        printf(", %zu failed", summary->failed);
    if (summary->skipped)
        printf(", %zu not run because an input failed", summary->skipped);
    printf("\n");
}

/* FTPIPE_STATS=1: each phase's time and what the process read, on stderr. */
static void print_stats(const ft_session *session)
{
    static const char *const names[FT_PHASE_COUNT] = {"rules", "parse", "graph", "workspace", "plan and build"};
    fprintf(stderr, "ftpipe stats:");
    for (int i = 0; i < FT_PHASE_COUNT; i++)
        fprintf(stderr, " %s %.1f ms%s", names[i], (double)session->phase_ns[i] / 1e6,
                i + 1 < FT_PHASE_COUNT ? "," : ";");
    ft_run_stats_print_reads();
}

int ft_run_pipeline(const ft_invocation *invocation)
{
    /* `ftpipe lock` applies pins of its own: it always plans. */
    bool recordable = !invocation->lock && invocation->n_unlocked == 0 && !invocation->unlock_all;
    char question[FT_HASH_HEX_LENGTH + 1] = "";
    if (recordable) {
        ft_up_to_date_question(invocation, question);
        if (!invocation->record_checked && ft_record_answer_run(invocation, question))
            return 0;
    }
    ft_session session;
    if (ft_session_open(invocation, !invocation->dry_run, &session) != 0)
        return 1;
    int status = 0;
    ft_plan *plans = ft_xcalloc(session.graph->n_nodes + 1, sizeof *plans);
    uint64_t plan_start_ns = ft_now_ns(); /* the estimate check plans what the build then runs */
    if (ft_graph_select(session.graph, invocation->arguments, invocation->n_arguments) != 0) {
        status = 1;
    } else if (!invocation->dry_run && ft_estimate_check_fits(session.workspace, session.graph, plans) != 0) {
        status = 1; /* refused before any stage starts */
    } else {
        ft_build_options options = {
            .jobs = invocation->jobs,
            .keep_going = invocation->keep_going,
            .dry_run = invocation->dry_run,
            .progress = ft_progress_new(stdout),
            .plans = plans,
        };
        ft_build_detect_resources(&options.gpus_total, &options.memory_total_bytes);
        ft_build_summary summary;
        memset(&summary, 0, sizeof summary);
        int result = ft_session_open_remote(invocation, &session, false, options.progress, &options.remote);
        if (result == 0) {
            result = ft_build(session.workspace, session.graph, &options, &summary);
            session.phase_ns[FT_PHASE_BUILD] = ft_now_ns() - plan_start_ns;
            if (ft_run_stats_wanted())
                print_stats(&session);
            print_summary(&summary, invocation->dry_run);
            if (result == 0 && recordable && !invocation->dry_run)
                ft_up_to_date_write(session.workspace, session.graph, question);
        }
        ft_remote_sync_close(options.remote);
        ft_progress_free(options.progress);
        if (summary.interrupted)
            status = 130;
        else if (result != 0)
            status = 1;
    }
    for (size_t i = 0; i < session.graph->n_nodes; i++)
        ft_plan_free(&plans[i]);
    free(plans);
    ft_session_close(&session);
    return status;
}
