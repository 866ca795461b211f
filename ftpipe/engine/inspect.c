/* inspect: status, why, log, gc, clean, dag, metrics, estimate, report and help. */
#include "ftpipe/engine/inspect.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strmap.h"
#include "ftpipe/base/units.h"
#include "ftpipe/engine/estimate.h"
#include "ftpipe/engine/metrics_table.h"
#include "ftpipe/engine/plan.h"
#include "ftpipe/engine/report.h"
#include "ftpipe/engine/record_answer.h"
#include "ftpipe/engine/status_lines.h"

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

static int command_status(ft_session *session)
{
    ft_graph *graph = session->graph;
    for (size_t i = 0; i < graph->n_nodes; i++)
        graph->nodes[i].selected = true;
    ft_plan *plans = ft_xcalloc(graph->n_nodes + 1, sizeof *plans);
    ft_last_runs runs;
    int result = ft_last_runs_load(session->workspace->state, &runs);
    if (result == 0)
        result = plan_all(session, plans);
    for (size_t o = 0; o < graph->n_nodes && result == 0; o++) {
        size_t index = graph->order[o];
        const ft_node *node = &graph->nodes[index];
        char *reason = ft_plan_reason_line(&plans[index]);
        ft_status_print_line(node->target, node->kind->name, action_word(plans[index].action), reason,
                     ft_last_run_of(&runs, node->target));
        free(reason);
    }
    ft_last_runs_free(&runs);
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

/* What gc keeps besides what the pipeline names now: earlier experiments' results. */
typedef struct {
    bool all_unreferenced; /* keep nothing else (the old behaviour) */
    long keep_runs;        /* per target, the results of its newest N runs; < 0: no limit */
    int64_t max_age_ms;    /* results made within this long; < 0: no limit */
} gc_retention;

#define DEFAULT_RETENTION_MS ((int64_t)30 * 24 * 3600 * 1000)

static int parse_gc_options(const ft_invocation *invocation, gc_retention *retention)
{
    *retention = (gc_retention){.keep_runs = -1, .max_age_ms = -1};
    bool age_given = false;
    for (size_t i = 0; i < invocation->n_arguments; i++) {
        const char *arg = invocation->arguments[i];
        const char *value = i + 1 < invocation->n_arguments ? invocation->arguments[i + 1] : NULL;
        if (strcmp(arg, "--all-unreferenced") == 0) {
            retention->all_unreferenced = true;
        } else if (strcmp(arg, "--keep-runs") == 0) {
            char *end = NULL;
            retention->keep_runs = value ? strtol(value, &end, 10) : -1;
            if (!value || *end || retention->keep_runs < 0)
                return ft_error("gc --keep-runs needs a count: --keep-runs 3 keeps each target's 3 newest results");
            i++;
        } else if (strcmp(arg, "--older-than") == 0) {
            if (!value || ft_parse_duration_ms(value, &retention->max_age_ms) != 0 || retention->max_age_ms <= 0)
                return ft_error("gc --older-than needs a duration such as 30d, 12h or 90m (results older than it "
                                "are removed)");
            age_given = true;
            i++;
        } else {
            return ft_error("gc takes --keep-runs N, --older-than DURATION or --all-unreferenced, not '%s'", arg);
        }
    }
    if (retention->keep_runs < 0 && !age_given)
        retention->max_age_ms = DEFAULT_RETENTION_MS;
    return 0;
}

typedef struct {
    const gc_retention *retention;
    int64_t now_ms;
    const char **keep;
    size_t n_keep;
    size_t capacity;
    char **owned;    /* keys copied from run records */
    ft_strmap counts; /* target -> results kept for it so far */
    char **targets;   /* the map's keys */
    size_t n_targets;
} earlier_results;

/* Runs come newest first: a target's first N distinct finished results are its newest. */
static int keep_earlier_result(const ft_run_record *run, void *context)
{
    earlier_results *earlier = context;
    if ((run->status != FT_RUN_DONE && run->status != FT_RUN_CACHED) || !run->output_hash[0])
        return 0;
    const gc_retention *retention = earlier->retention;
    if (retention->max_age_ms >= 0 && earlier->now_ms - run->end_ms > retention->max_age_ms)
        return 0;
    for (size_t k = 0; k < earlier->n_keep; k++)
        if (strcmp(earlier->keep[k], run->key) == 0)
            return 0;
    size_t *kept = ft_strmap_get(&earlier->counts, run->target);
    if (!kept) {
        earlier->targets = ft_xrealloc(earlier->targets, (earlier->n_targets + 1) * sizeof *earlier->targets);
        earlier->targets[earlier->n_targets] = ft_xstrdup(run->target);
        kept = ft_strmap_put(&earlier->counts, earlier->targets[earlier->n_targets++], 0);
    }
    if (retention->keep_runs >= 0 && *kept >= (size_t)retention->keep_runs)
        return 0;
    (*kept)++;
    ft_grow((void **)&earlier->keep, &earlier->capacity, earlier->n_keep + 1, sizeof *earlier->keep);
    earlier->owned = ft_xrealloc(earlier->owned, (earlier->n_keep + 1) * sizeof *earlier->owned);
    earlier->owned[earlier->n_keep] = ft_xstrdup(run->key);
    earlier->keep[earlier->n_keep] = earlier->owned[earlier->n_keep];
    earlier->n_keep++;
    return 0;
}

static int command_gc(ft_session *session, const ft_invocation *invocation)
{
    ft_graph *graph = session->graph;
    gc_retention retention;
    if (parse_gc_options(invocation, &retention) != 0)
        return 1;
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
    size_t n_current = n_keep;
    earlier_results earlier = {.retention = &retention, .now_ms = ft_wall_ms()};
    ft_strmap_init(&earlier.counts);
    if (result == 0 && !retention.all_unreferenced) {
        earlier.keep = keep;
        earlier.n_keep = n_keep;
        earlier.capacity = 2 * graph->n_nodes + 1;
        earlier.owned = ft_xcalloc(n_keep + 1, sizeof *earlier.owned);
        result = ft_state_each_run(session->workspace->state, keep_earlier_result, &earlier);
        keep = earlier.keep;
        n_keep = earlier.n_keep;
    }
    uint64_t freed = 0, objects = 0;
    if (result == 0)
        result = ft_cache_gc(session->workspace->cache, keep, n_keep, &freed, &objects);
    /* What kinds keep outside the cache (the shm kind's tmpfs copies, which hold
     * memory and are made again from the cache) under keys no target has now. */
    uint64_t staged_freed = 0;
    size_t staged_removed = 0;
    for (size_t k = 0; result == 0 && invocation->kinds[k]; k++)
        if (invocation->kinds[k]->gc)
            result = invocation->kinds[k]->gc(session->workspace->state_dir, keep, n_current, &staged_freed,
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
        for (size_t k = 0; k < n_current && !wanted; k++)
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
        if (n_keep > n_current)
            printf("ftpipe gc: kept %zu earlier results (--keep-runs N, --older-than DURATION or "
                   "--all-unreferenced remove more)\n",
                   n_keep - n_current);
    }
    for (size_t k = n_current; k < n_keep; k++)
        free(earlier.owned[k]);
    free(earlier.owned);
    for (size_t t = 0; t < earlier.n_targets; t++)
        free(earlier.targets[t]);
    free(earlier.targets);
    ft_strmap_free(&earlier.counts);
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

static int command_dag(ft_session *session, const ft_invocation *invocation)
{
    bool dot = false;
    for (size_t i = 0; i < invocation->n_arguments; i++) {
        if (strcmp(invocation->arguments[i], "--dot") != 0)
            return ft_error("dag takes --dot (a Graphviz graph: ftpipe dag --dot | dot -Tsvg > dag.svg), not '%s'",
                            invocation->arguments[i]) == 0 ? 0 : 1;
        dot = true;
    }
    ft_graph_print(session->graph, dot, stdout);
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
    bool command_options = invocation->json || invocation->open_report || invocation->output_path;
    if (strcmp(command, "status") == 0 && !command_options) {
        if (!invocation->record_checked && ft_record_answer_status(invocation))
            return 0;
    }
    bool writes = strcmp(command, "gc") == 0 || strcmp(command, "clean") == 0;
    ft_session session;
    if (ft_session_open(invocation, writes, &session) != 0)
        return 1;
    if (!command_options && ft_graph_find(session.graph, command) != FT_NO_NODE) {
        /* A stage's target wins over the command of its name (make's habit: `make clean`),
         * unless the command's own options say which is meant (`ftpipe report --open`). */
        ft_session_close(&session);
        const char **targets = ft_xcalloc(invocation->n_arguments + 2, sizeof *targets);
        targets[0] = command;
        for (size_t i = 0; i < invocation->n_arguments; i++)
            targets[i + 1] = invocation->arguments[i];
        ft_invocation build = *invocation;
        build.command = NULL;
        build.arguments = targets;
        build.n_arguments = invocation->n_arguments + 1;
        int status = ft_run_pipeline(&build);
        free(targets);
        return status;
    }
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
    else if (strcmp(command, "dag") == 0)
        status = command_dag(&session, invocation);
    else if (strcmp(command, "metrics") == 0)
        status = ft_metrics_command(&session, invocation->arguments, invocation->n_arguments);
    else if (strcmp(command, "estimate") == 0)
        status = ft_estimate_command(&session, invocation);
    else if (strcmp(command, "report") == 0)
        status = ft_report_command(&session, invocation);
    ft_session_close(&session);
    return status;
}
