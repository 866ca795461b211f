/* estimate: what the stages that would run need — peak device and host memory,
 * tmpfs, disk and time — each from its kind's estimate hook, time from the rates
 * past runs on the same device left in state.db or, with --measure, from a few
 * real steps timed now (measure.h); and the check that refuses a run whose whole
 * plan does not fit before any stage starts. */
#ifndef FTPIPE_ESTIMATE_H
#define FTPIPE_ESTIMATE_H

#include <stdbool.h>
#include <stdio.h>

#include "ftpipe/engine/graph.h"
#include "ftpipe/engine/plan.h"
#include "ftpipe/engine/session.h"
#include "ftpipe/engine/workspace.h"

typedef struct {
    size_t node;
    ft_plan_action action;
    ft_stage_estimate figures;
} ft_node_estimate;

/* Plans the selected stages into plans (n_nodes long, zeroed; the caller frees each
 * with ft_plan_free) and estimates each that would run, in build order; with
 * measure, first times the stages whose kinds can be measured and whose inputs
 * are built. Free *out with free(). */
int ft_estimate_selected(ft_workspace *workspace, const ft_graph *graph, bool measure, ft_plan *plans,
                         ft_node_estimate **out, size_t *count);

/* `ftpipe estimate [--json] [--measure] [TARGET...]`: prints the estimates and the pipeline's totals. */
int ft_estimate_command(ft_session *session, const ft_invocation *invocation);

/* Before a run: -1 with a message naming the file system and the shortfall when the
 * disk or tmpfs the selected stages would write does not fit, or naming the stage
 * when its host memory does not. Leaves the plans it made in plans (as
 * ft_estimate_selected), so the build does not make them again. */
int ft_estimate_check_fits(ft_workspace *workspace, const ft_graph *graph, ft_plan *plans);

#endif
