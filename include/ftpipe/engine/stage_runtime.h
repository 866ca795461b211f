/* stage_runtime: the engine's side of include/ftpipe/engine/stage.h — making a stage
 * context and running a kind in a child process that reports back through a pipe.
 *
 * The report protocol is one line per message on report_fd:
 *   P <fraction> <text>      progress
 *   M <step> <value> <name>  metric
 *   S <text>                 summary
 *   E <text>                 the error message of a failed run
 *   C cancelled              the run stopped on SIGINT/SIGTERM (the work folder resumes)
 * Text has newlines replaced by spaces. */
#ifndef FTPIPE_STAGE_RUNTIME_H
#define FTPIPE_STAGE_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/engine/pipeline.h"
#include "ftpipe/engine/rules.h"
#include "ftpipe/engine/stage.h"

typedef struct {
    const ft_stage_kind *kind;
    const ft_param_set *params;
    const char *target;
    const char *key;
    const char *pipeline_dir;
    const char *const *inputs;   /* absolute */
    size_t n_inputs;
    const char *work_dir;        /* absolute; holds out/ and log */
    const char *state_dir;       /* absolute .ftpipe folder */
    bool output_elsewhere;       /* another process writes the output (a Slurm job's other nodes) */
    bool job_step;               /* runs as a Slurm job's step: a signal there is the job's end (a
                                    failure the submitting side names), not the user stopping it */
    const ft_variable *variables; /* pipeline variables its `env` declares */
    size_t n_variables;
} ft_stage_setup;

/* A context for the engine process (extra_key, cached_output_usable). */
ft_stage *ft_stage_create(const ft_stage_setup *setup);
void ft_stage_destroy(ft_stage *stage);

/* In a freshly forked child: opens the log, installs the cancellation handlers,
 * runs the kind (or `run` instead, when not NULL: the Slurm executor's
 * submission) and returns the exit status for _exit (0 success, 1 failure; a
 * cancelled run also says C, since no exit status can mean only that).
 * report_fd receives the protocol above. */
int ft_stage_child_main(ft_stage *stage, int report_fd, int (*run)(ft_stage *stage));

/* Opens the stage log (append) for ft_stage_log and ft_stage_log_fd, as the child
 * does before running a kind; the engine does it before a kind's spawn. */
void ft_stage_open_log(ft_stage *stage);

/* What the slurm executor hands to the node that runs the stage. */
const ft_param_set *ft_stage_params(const ft_stage *stage);
int ft_stage_report_fd(const ft_stage *stage);

/* The log file's path inside a work folder. Caller frees. */
char *ft_stage_log_path(const char *work_dir);

#endif
