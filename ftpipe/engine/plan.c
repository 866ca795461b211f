/* plan: up to date, restore, or run — and why. */
#include "ftpipe/engine/plan.h"

#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/stage_runtime.h"

ft_stage_setup ft_plan_stage_setup(const ft_workspace *workspace, const ft_graph *graph, size_t index,
                                   const char *key, const char *work_dir)
{
    const ft_node *node = &graph->nodes[index];
    return (ft_stage_setup){
        .kind = node->kind,
        .params = &node->params,
        .target = node->target,
        .key = key,
        .pipeline_dir = graph->pipeline->dir,
        .inputs = (const char *const *)node->input_paths,
        .n_inputs = node->n_inputs,
        .work_dir = work_dir,
        .state_dir = workspace->state_dir,
        .variables = node->decl->variables,
        .n_variables = node->decl->n_variables,
    };
}

ft_stage *ft_plan_stage_context(const ft_workspace *workspace, const ft_graph *graph, size_t index,
                                const char *key)
{
    char *work_dir = ft_workspace_work_dir(workspace, key);
    ft_stage_setup setup = ft_plan_stage_setup(workspace, graph, index, key, work_dir);
    ft_stage *stage = ft_stage_create(&setup);
    free(work_dir);
    return stage;
}

static bool same_stat(const ft_file_stat *a, const ft_file_stat *b)
{
    return a->device == b->device && a->inode == b->inode && a->size_bytes == b->size_bytes &&
           a->mtime_ns == b->mtime_ns;
}

/* The kind may veto a cached output (the shm kind when its tmpfs copy is gone). */
static int usable(ft_workspace *workspace, const ft_graph *graph, size_t index, const char *key,
                  const ft_manifest *manifest)
{
    const ft_node *node = &graph->nodes[index];
    if (!node->kind->cached_output_usable)
        return 1;
    ft_manifest *looked_up = NULL;
    if (!manifest) {
        int found = ft_cache_lookup(workspace->cache, key, &looked_up);
        if (found <= 0)
            return found;
        manifest = looked_up;
    }
    ft_stage *stage = ft_plan_stage_context(workspace, graph, index, key);
    int answer = node->kind->cached_output_usable(stage, manifest);
    ft_stage_destroy(stage);
    ft_manifest_free(looked_up);
    return answer;
}

static int input_hashes(ft_workspace *workspace, const ft_node *node, ft_plan *plans, char **hashes, ft_plan *out)
{
    for (size_t k = 0; k < node->n_inputs; k++) {
        size_t maker = node->input_nodes[k];
        if (maker != FT_NO_NODE) {
            if (!plans[maker].output_hash[0]) {
                out->action = FT_PLAN_WAITS;
                ft_strbuf_printf(&out->reason, "input %s will be rebuilt first\n", node->input_names[k]);
                return 1;
            }
            hashes[k] = ft_xstrdup(plans[maker].output_hash);
            continue;
        }
        ft_manifest *manifest = NULL;
        ft_hash_cache cache = ft_state_hash_cache(workspace->state);
        if (ft_manifest_build(&cache, node->input_paths[k], 0, &manifest) != 0) {
            const ft_location *where = &node->decl->input_where[k];
            return ft_error_context("%s:%d:%d: stage %s: input %s", where->file, where->line, where->column,
                                    node->target, node->input_names[k]);
        }
        hashes[k] = ft_xcalloc(FT_HASH_HEX_LENGTH + 1, 1);
        ft_hash_to_hex(manifest->hash, hashes[k]);
        ft_manifest_free(manifest);
    }
    return 0;
}

int ft_plan_node(ft_workspace *workspace, const ft_graph *graph, size_t index, ft_plan *plans)
{
    const ft_node *node = &graph->nodes[index];
    ft_plan *plan = &plans[index];
    ft_plan_free(plan);
    ft_strbuf_init(&plan->reason);

    char **hashes = ft_xcalloc(node->n_inputs + 1, sizeof *hashes);
    int result = input_hashes(workspace, node, plans, hashes, plan);
    if (result == 0) {
        ft_stage *context = node->kind->extra_key ? ft_plan_stage_context(workspace, graph, index, "") : NULL;
        result = ft_stage_key_compute(node, hashes, context, &plan->key);
        ft_stage_destroy(context);
        plan->has_key = true;
    } else {
        for (size_t k = 0; k < node->n_inputs; k++)
            free(hashes[k]);
        free(hashes);
    }
    if (result != 0)
        return result < 0 ? -1 : 0;

    const char *key = plan->key.key;
    ft_target_record record;
    int known = ft_state_target_get(workspace->state, node->target, &record);
    if (known < 0)
        return -1;
    bool in_place = false;
    if (known && strcmp(record.key, key) == 0) {
        ft_file_stat now;
        in_place = ft_file_stat_read(node->target_path, &now) == 0 && same_stat(&now, &record.stat);
    }
    if (in_place) {
        int ok = usable(workspace, graph, index, key, NULL);
        if (ok < 0)
            return -1;
        if (ok) {
            plan->action = FT_PLAN_UP_TO_DATE;
            memcpy(plan->output_hash, record.output_hash, sizeof plan->output_hash);
            return 0;
        }
        ft_strbuf_puts(&plan->reason, "its cached output is no longer usable\n");
        plan->action = FT_PLAN_RUN;
        return 0;
    }

    int cached = ft_cache_lookup(workspace->cache, key, &plan->manifest);
    if (cached < 0)
        return -1;
    if (cached) {
        int ok = usable(workspace, graph, index, key, plan->manifest);
        if (ok < 0)
            return -1;
        if (ok) {
            plan->action = FT_PLAN_RESTORE;
            ft_hash_to_hex(plan->manifest->hash, plan->output_hash);
            if (known && strcmp(record.key, key) == 0)
                ft_strbuf_puts(&plan->reason, "output missing or changed in the workspace\n");
            else
                ft_strbuf_puts(&plan->reason, "a cached result matches\n");
            return 0;
        }
        ft_manifest_free(plan->manifest);
        plan->manifest = NULL;
    }
    plan->action = FT_PLAN_RUN;
    ft_run_record previous;
    int found = ft_state_last_run(workspace->state, node->target, -1, &previous);
    if (found < 0)
        return -1;
    ft_stage_key_explain(found ? &previous : NULL, node, &plan->key, &plan->reason);
    if (found)
        ft_run_record_free(&previous);
    return 0;
}

void ft_plan_free(ft_plan *plan)
{
    if (plan->has_key)
        ft_stage_key_free(&plan->key);
    if (plan->manifest)
        ft_manifest_free(plan->manifest);
    if (plan->reason.data)
        ft_strbuf_free(&plan->reason);
    memset(plan, 0, sizeof *plan);
}

char *ft_plan_reason_line(const ft_plan *plan)
{
    ft_strbuf line;
    ft_strbuf_init(&line);
    const char *p = plan->reason.data ? plan->reason.data : "";
    while (*p) {
        const char *end = strchr(p, '\n');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n) {
            if (line.length)
                ft_strbuf_puts(&line, "; ");
            ft_strbuf_add(&line, p, n);
        }
        p += n + (end ? 1 : 0);
    }
    return ft_strbuf_take(&line);
}

ft_run_record ft_plan_run_record(const ft_node *node, ft_plan *plan, ft_run_status status, char *log_path)
{
    ft_stage_key_describe(node, &plan->key);
    ft_run_record record = {0};
    memcpy(record.key, plan->key.key, sizeof record.key);
    record.target = node->target;
    record.kind = (char *)node->kind->name;
    record.kind_version = node->kind->version;
    record.params_json = plan->key.params_json;
    record.inputs_json = plan->key.inputs_json;
    record.start_ms = ft_wall_ms();
    record.status = status;
    record.log_path = log_path;
    return record;
}
