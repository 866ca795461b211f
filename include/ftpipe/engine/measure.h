/* measure: `ftpipe estimate --measure` for one stage — its kind's measure hook
 * run in a child process inside a scratch work folder (removed afterwards), with
 * the stage's built inputs, its parameters (backend, threads, ranks) and the
 * GPUs it reserves (gpus, as the scheduler hands them out). Only the rates the
 * hook reports are kept, in state.db's measured rates; nothing is published and
 * no run is recorded. */
#ifndef FTPIPE_MEASURE_H
#define FTPIPE_MEASURE_H

#include <stddef.h>

#include "ftpipe/engine/graph.h"
#include "ftpipe/engine/workspace.h"

/* 0 measured; 1 not measured, with the reason in why (the kind cannot, the run
 * failed: its message); -1 with ft_error when state.db cannot be written. */
int ft_measure_stage(ft_workspace *workspace, const ft_graph *graph, size_t index, const char *key, char *why,
                     size_t why_size);

#endif
