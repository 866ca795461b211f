/* report: `ftpipe report [-o FILE] [--open]` — one self-contained HTML file
 * (inline SVG and CSS, nothing fetched) drawn from state.db: the pipeline graph
 * with each stage's state and last run, training curves of every run of each
 * target overlaid (the parameters that differ name the runs), and evaluation
 * tables with example answers. */
#ifndef FTPIPE_REPORT_H
#define FTPIPE_REPORT_H

#include "ftpipe/engine/session.h"

/* Writes invocation->output_path (default .ftpipe/report.html) and prints its path.
 * Returns the exit status (1: message in ft_error). */
int ft_report_command(ft_session *session, const ft_invocation *invocation);

#endif
