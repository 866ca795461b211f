/* inspect: status, why, log, gc, clean, estimate, report and help. */
#include "ftpipe/engine/inspect.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/estimate.h"
#include "ftpipe/engine/plan.h"
#include "ftpipe/engine/report.h"

/* Plans every selected stage in order, as -n would, without running anything. */
static int plan_all(ft_session *session, ft_plan *plans)
{
    ft_graph *graph = session->graph;
    for (size_t o = 0; o < graph->n_nodes; o++) {
        size_t index = graph->order[o];
        if (graph->nodes[index].selected && ft_plan_node(session->workspace, graph, index, plans) != 0)
            return -1;
    }
    return 0;
}

static const char *action_word(ft_plan_action action)
{
    switch (action) {
    case FT_PLAN_UP_TO_DATE:
        return "up to date";
    case FT_PLAN_RESTORE:
        return "restore";
    case FT_PLAN_RUN:
        return "run";
    case FT_PLAN_WAITS:
        return "run";
    case FT_PLAN_UNKNOWN:
        break;
    }
    return "?";
}

static const char *run_status_word(ft_run_status status)
{
    static const char *const words[] = {"running (or killed)", "done", "failed", "stopped", "restored"};
    return words[status];
}

static void format_time(int64_t ms, char *out, size_t size)
{
    time_t seconds = (time_t)(ms / 1000);
    struct tm local;
    localtime_r(&seconds, &local);
    strftime(out, size, "%Y-%m-%d %H:%M:%S", &local);
}

static int command_status(ft_session *session)
{
    ft_graph *graph = session->graph;
    for (size_t i = 0; i < graph->n_nodes; i++)
        graph->nodes[i].selected = true;
    ft_plan *plans = ft_xcalloc(graph->n_nodes + 1, sizeof *plans);
    int result = plan_all(session, plans);
    for (size_t o = 0; o < graph->n_nodes && result == 0; o++) {
        size_t index = graph->order[o];
        const ft_node *node = &graph->nodes[index];
        char *reason = ft_plan_reason_line(&plans[index]);
        printf("%-32s %-8s %-10s %s\n", node->target, node->kind->name, action_word(plans[index].action), reason);
        free(reason);
        ft_run_record last;
        int found = ft_state_last_run(session->workspace->state, node->target, -1, &last);
        if (found > 0) {
            char when[64];
            format_time(last.start_ms, when, sizeof when);
            if (last.end_ms > 0)
                printf("    last run %s: %s in %.1f s\n", when, run_status_word(last.status),
                       (double)(last.end_ms - last.start_ms) / 1000.0);
            else
                printf("    last run %s: %s\n", when, run_status_word(last.status));
            ft_run_record_free(&last);
        }
    }
    for (size_t i = 0; i < graph->n_nodes; i++)
        ft_plan_free(&plans[i]);
    free(plans);
    return result == 0 ? 0 : 1;
}

static size_t find_target(ft_session *session, const char *name)
{
    size_t index = ft_graph_find(session->graph, name);
    if (index == FT_NO_NODE)
        ft_graph_select(session->graph, &name, 1); /* sets the message, with a suggestion */
    return index;
}

static int command_why(ft_session *session, const ft_invocation *invocation)
{
    if (invocation->n_arguments != 1)
        return ft_error("why needs one target: ftpipe why TARGET"), 1;
    size_t index = find_target(session, invocation->arguments[0]);
    if (index == FT_NO_NODE || ft_graph_select(session->graph, invocation->arguments, 1) != 0)
        return 1;
    ft_graph *graph = session->graph;
    ft_plan *plans = ft_xcalloc(graph->n_nodes + 1, sizeof *plans);
    int result = plan_all(session, plans);
    if (result == 0) {
        const ft_plan *plan = &plans[index];
        const char *target = graph->nodes[index].target;
        if (plan->action == FT_PLAN_UP_TO_DATE)
            printf("%s is up to date (key %s)\n", target, plan->key.key);
        else if (plan->action == FT_PLAN_RESTORE)
            printf("%s would be restored from the cache (key %s):\n%s", target, plan->key.key, plan->reason.data);
        else
            printf("%s would run:\n%s", target, plan->reason.data);
    }
    for (size_t i = 0; i < graph->n_nodes; i++)
        ft_plan_free(&plans[i]);
    free(plans);
    return result == 0 ? 0 : 1;
}

static int command_log(ft_session *session, const ft_invocation *invocation)
{
    if (invocation->n_arguments != 1)
        return ft_error("log needs one target: ftpipe log TARGET"), 1;
    size_t index = find_target(session, invocation->arguments[0]);
    if (index == FT_NO_NODE)
        return 1;
    const char *target = session->graph->nodes[index].target;
    ft_run_record last;
    int found = ft_state_last_run(session->workspace->state, target, -1, &last);
    if (found <= 0)
        return found < 0 ? 1 : (ft_error("%s has never run in this workspace", target), 1);
    char *text = NULL;
    size_t length = 0;
    int result = 0;
    if (!last.log_path || ft_read_file(last.log_path, &text, &length) != 0)
        result = ft_error("the log of %s's last run (%s) is gone", target, last.log_path ? last.log_path : "none");
    else
        fwrite(text, 1, length, stdout);
    free(text);
    ft_run_record_free(&last);
    return result == 0 ? 0 : 1;
}

static int command_gc(ft_session *session, const ft_invocation *invocation)
{
    ft_graph *graph = session->graph;
    for (size_t i = 0; i < graph->n_nodes; i++)
        graph->nodes[i].selected = true;
    ft_plan *plans = ft_xcalloc(graph->n_nodes + 1, sizeof *plans);
    int result = plan_all(session, plans);
    const char **keep = ft_xcalloc(2 * graph->n_nodes + 1, sizeof *keep);
    ft_target_record *records = ft_xcalloc(graph->n_nodes + 1, sizeof *records);
    size_t n_keep = 0;
    for (size_t i = 0; i < graph->n_nodes && result == 0; i++) {
        if (plans[i].has_key)
            keep[n_keep++] = plans[i].key.key;
        if (ft_state_target_get(session->workspace->state, graph->nodes[i].target, &records[i]) > 0)
            keep[n_keep++] = records[i].key;
    }
    uint64_t freed = 0, objects = 0;
    if (result == 0)
        result = ft_cache_gc(session->workspace->cache, keep, n_keep, &freed, &objects);
    /* What kinds keep outside the cache (the shm kind's tmpfs copies) under keys no target has now. */
    uint64_t staged_freed = 0;
    size_t staged_removed = 0;
    for (size_t k = 0; result == 0 && invocation->kinds[k]; k++)
        if (invocation->kinds[k]->gc)
            result = invocation->kinds[k]->gc(session->workspace->state_dir, keep, n_keep, &staged_freed,
                                              &staged_removed);
    /* Work folders of keys no stage has now would never be resumed. */
    size_t work_removed = 0;
    char *work_root = ft_path_join(session->workspace->state_dir, "work");
    DIR *dir = result == 0 ? opendir(work_root) : NULL;
    struct dirent *entry;
    while (dir && (entry = readdir(dir))) {
        if (entry->d_name[0] == '.')
            continue;
        bool wanted = false;
        for (size_t k = 0; k < n_keep && !wanted; k++)
            wanted = strcmp(keep[k], entry->d_name) == 0;
        if (wanted)
            continue;
        char *path = ft_path_join(work_root, entry->d_name);
        if (ft_remove_tree(path) == 0)
            work_removed++;
        free(path);
    }
    if (dir)
        closedir(dir);
    free(work_root);
    if (result == 0) {
        char text[32];
        ft_format_bytes(freed + staged_freed, text, sizeof text);
        printf("ftpipe gc: removed %llu cached files, %zu staged copies and %zu stale work folders, freed %s\n",
               (unsigned long long)objects, staged_removed, work_removed, text);
    }
    for (size_t i = 0; i < graph->n_nodes; i++)
        ft_plan_free(&plans[i]);
    free(plans);
    free(keep);
    free(records);
    return result == 0 ? 0 : 1;
}

static int command_clean(ft_session *session)
{
    ft_graph *graph = session->graph;
    size_t removed = 0;
    for (size_t i = 0; i < graph->n_nodes; i++) {
        ft_target_record record;
        int known = ft_state_target_get(session->workspace->state, graph->nodes[i].target, &record);
        if (known < 0)
            return 1;
        if (!known)
            continue;
        if (ft_remove_tree(graph->nodes[i].target_path) != 0 ||
            ft_state_target_delete(session->workspace->state, graph->nodes[i].target) != 0)
            return 1;
        removed++;
    }
    printf("ftpipe clean: removed %zu targets from the workspace (the cache keeps them: the next run restores "
           "them; `ftpipe gc` frees the space)\n",
           removed);
    return 0;
}

int ft_inspect_command(const ft_invocation *invocation)
{
    const char *command = invocation->command;
    if (strcmp(command, "help") == 0) {
        ft_rulebook *rules = NULL;
        if (ft_rulebook_load(NULL, 0, &rules) != 0)
            return 1;
        const char *kind = invocation->n_arguments > 0 ? invocation->arguments[0] : NULL;
        int result = ft_rules_print_help(rules, kind, stdout);
        ft_rulebook_free(rules);
        return result == 0 ? 0 : 1;
    }
    bool writes = strcmp(command, "gc") == 0 || strcmp(command, "clean") == 0;
    ft_session session;
    if (ft_session_open(invocation, writes, &session) != 0)
        return 1;
    int status = 1;
    if (strcmp(command, "status") == 0)
        status = command_status(&session);
    else if (strcmp(command, "why") == 0)
        status = command_why(&session, invocation);
    else if (strcmp(command, "log") == 0)
        status = command_log(&session, invocation);
    else if (strcmp(command, "gc") == 0)
        status = command_gc(&session, invocation);
    else if (strcmp(command, "clean") == 0)
        status = command_clean(&session);
    else if (strcmp(command, "estimate") == 0)
        status = ft_estimate_command(&session, invocation);
    else if (strcmp(command, "report") == 0)
        status = ft_report_command(&session, invocation);
    ft_session_close(&session);
    return status;
}
