/* plan: what a stage needs now — nothing (up to date), a restore from the cache,
 * or a run — and why. The build loop, -n, `status`, `why` and `gc` all decide
 * through here, so they always agree. */
#ifndef FTPIPE_PLAN_H
#define FTPIPE_PLAN_H

#include <stdbool.h>

#include "ftpipe/engine/graph.h"
#include "ftpipe/engine/stage_key.h"
#include "ftpipe/engine/stage_runtime.h"
#include "ftpipe/engine/workspace.h"

typedef enum {
    FT_PLAN_UNKNOWN,      /* not evaluated yet */
    FT_PLAN_UP_TO_DATE,   /* the workspace holds this key's output */
    FT_PLAN_RESTORE,      /* the cache holds it: link it into the workspace */
    FT_PLAN_RUN,          /* nobody has it: run the stage */
    FT_PLAN_WAITS,        /* an input will be rebuilt first, so the key is not known yet */
} ft_plan_action;

typedef struct {
    ft_plan_action action;
    bool has_key;
    ft_computed_key key;
    char output_hash[FT_HASH_HEX_LENGTH + 1]; /* known for UP_TO_DATE and RESTORE, and after a run */
    ft_manifest *manifest;                    /* RESTORE: what to materialize */
    ft_strbuf reason;                         /* one reason a line */
} ft_plan;

/* Decides for graph->nodes[index], whose inputs' plans are in plans[] (an input
 * stage must have an output_hash, or this one WAITS). */
int ft_plan_node(ft_workspace *workspace, const ft_graph *graph, size_t index, ft_plan *plans);
void ft_plan_free(ft_plan *plan);

/* The reasons as one line ("a; b"). Caller frees. */
char *ft_plan_reason_line(const ft_plan *plan);

/* The record of a run of the plan's stage starting now, with `status` and
 * log_path (borrowed, as are the plan's texts); fills in the key's description. */
ft_run_record ft_plan_run_record(const ft_node *node, ft_plan *plan, ft_run_status status, char *log_path);

/* What ft_stage_create needs for node `index` working in work_dir (borrowed). */
ft_stage_setup ft_plan_stage_setup(const ft_workspace *workspace, const ft_graph *graph, size_t index,
                                   const char *key, const char *work_dir);
/* A stage context for the engine process (extra_key, cached_output_usable). */
ft_stage *ft_plan_stage_context(const ft_workspace *workspace, const ft_graph *graph, size_t index,
                                const char *key);

#endif
