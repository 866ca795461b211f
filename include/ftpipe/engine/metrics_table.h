/* metrics_table: `ftpipe metrics`, the experiments of a workspace side by side.
 *
 * A row is a stage's current result: the metrics of the run that made it and of
 * the runs upstream of it (an evaluate row carries its train input's loss), with
 * the key parameters of all of them, the nearest stage's value winning. Without
 * targets the rows are the stages with metrics that no other such stage uses
 * (every evaluate of a sweep, or every train when nothing evaluates them), and
 * the columns are the parameters whose values differ between the rows, as
 * `dvc exp show` shows them. Reads .ftpipe/state.db only.
 *
 *   ftpipe metrics [--all] [--json | --csv] [TARGET...]
 *   ftpipe metrics --diff A B     each parameter and metric of A and B that differ */
#ifndef FTPIPE_METRICS_TABLE_H
#define FTPIPE_METRICS_TABLE_H

#include <stddef.h>

#include "ftpipe/engine/session.h"

/* Returns the exit status: 0, 1 (message in ft_error) or 2 (a usage error, printed). */
int ft_metrics_command(ft_session *session, const char *const *arguments, size_t n_arguments);

#endif
