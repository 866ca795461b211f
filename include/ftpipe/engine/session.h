/* session: one invocation of ftpipe on a pipeline — the file read, its rules,
 * its graph and its workspace — and running it. */
#ifndef FTPIPE_SESSION_H
#define FTPIPE_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/engine/graph.h"
#include "ftpipe/engine/lock_file.h"
#include "ftpipe/engine/pipeline.h"
#include "ftpipe/engine/progress.h"
#include "ftpipe/engine/remote_sync.h"
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
    const char *remote_url;         /* --remote URL; NULL: FTPIPE_REMOTE, else the pipeline's .REMOTE */
    const ft_lock *lock;            /* pins applied to the pipeline; NULL: PIPELINE.lock when it exists */
    const char *const *unlocked;    /* targets whose pins are left out (`ftpipe lock --update`) */
    size_t n_unlocked;
    bool unlock_all;
    int jobs;
    bool keep_going;
    bool dry_run;
    bool json;                      /* --json: commands print JSON (estimate) */
    bool measure;                   /* --measure: estimate times a few real steps first */
    const char *output_path;        /* -o FILE: where report writes (NULL: .ftpipe/report.html) */
    bool open_report;               /* --open: report prints only the file's path */
    const char *program_path;       /* the program that plans (its build decides kinds and rules);
                                       NULL: this process's own */
    bool record_checked;            /* the record (up_to_date.h) was asked already, without answer */
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

/* Reads the pipeline and its rules, pins it with its lock file (lock_file.h),
 * builds the graph, opens the workspace (taking its lock when `lock`). */
int ft_session_open(const ft_invocation *invocation, bool lock, ft_session *out);
void ft_session_close(ft_session *session);

/* The remote cache this invocation names (--remote, else FTPIPE_REMOTE, else the
 * pipeline's .REMOTE), in FTPIPE_REMOTE_MODE; *out is NULL when none is named. */
int ft_session_open_remote(const ft_invocation *invocation, const ft_session *session, bool strict,
                           ft_progress *progress, ft_remote_sync **out);

/* Runs (or with dry_run, explains) the selected targets. Returns the exit status:
 * 0 done, 1 failed (message in ft_error), 130 interrupted. */
int ft_run_pipeline(const ft_invocation *invocation);

#endif
