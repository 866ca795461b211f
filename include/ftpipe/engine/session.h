/* session: one invocation of ftpipe on a pipeline — the file read, its rules,
 * its graph and its workspace — and running it. */
#ifndef FTPIPE_SESSION_H
#define FTPIPE_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/engine/graph.h"
#include "ftpipe/engine/pipeline.h"
#include "ftpipe/engine/rules.h"
#include "ftpipe/engine/workspace.h"

typedef struct {
    const ft_stage_kind *const *kinds; /* what stages can be: the engine links no kind itself */
    char *pipeline_path;
    const ft_variable *overrides;   /* VAR=value from the command line */
    size_t n_overrides;
    const char *command;            /* status, why, ...; NULL to run the pipeline */
    const char *const *arguments;   /* targets, or the command's arguments */
    size_t n_arguments;
    int jobs;
    bool keep_going;
    bool dry_run;
} ft_invocation;

/* Where a run's time goes, for FTPIPE_STATS=1 (the no-op is measured by phase). */
typedef enum {
    FT_PHASE_RULES,
    FT_PHASE_PARSE,
    FT_PHASE_GRAPH,
    FT_PHASE_WORKSPACE,
    FT_PHASE_BUILD,
    FT_PHASE_COUNT
} ft_phase;

typedef struct {
    ft_rulebook *rules;
    ft_pipeline *pipeline;
    ft_graph *graph;
    ft_workspace *workspace;
    uint64_t phase_ns[FT_PHASE_COUNT];
} ft_session;

/* Reads the pipeline and its rules, builds the graph, opens the workspace (taking
 * its lock when `lock`). */
int ft_session_open(const ft_invocation *invocation, bool lock, ft_session *out);
void ft_session_close(ft_session *session);

/* Runs (or with dry_run, explains) the selected targets. Returns the exit status:
 * 0 done, 1 failed (message in ft_error), 130 interrupted. */
int ft_run_pipeline(const ft_invocation *invocation);

#endif
