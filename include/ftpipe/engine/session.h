/* session: one invocation of ftpipe on a pipeline — the file read, its rules,
 * its graph and its workspace — and running it. */
#ifndef FTPIPE_SESSION_H
#define FTPIPE_SESSION_H

#include <stdbool.h>
#include <stddef.h>

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
    bool json;                      /* --json: commands print JSON (estimate) */
    const char *output_path;        /* -o FILE: where report writes (NULL: .ftpipe/report.html) */
    bool open_report;               /* --open: report prints only the file's path */
} ft_invocation;

typedef struct {
    ft_rulebook *rules;
    ft_pipeline *pipeline;
    ft_graph *graph;
    ft_workspace *workspace;
} ft_session;

/* Reads the pipeline and its rules, builds the graph, opens the workspace (taking
 * its lock when `lock`). */
int ft_session_open(const ft_invocation *invocation, bool lock, ft_session *out);
void ft_session_close(ft_session *session);

/* Runs (or with dry_run, explains) the selected targets. Returns the exit status:
 * 0 done, 1 failed (message in ft_error), 130 interrupted. */
int ft_run_pipeline(const ft_invocation *invocation);

#endif
