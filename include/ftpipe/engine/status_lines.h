/* status_lines: the lines `ftpipe status` prints for a stage — its target, kind,
 * what a run would do and why — and under it the stage's last run, read for every
 * target in one query. The planned status (inspect.c) and the status answered from
 * the record (record_answer.c) print through it, so both read alike. */
#ifndef FTPIPE_STATUS_LINES_H
#define FTPIPE_STATUS_LINES_H

#include <stddef.h>

#include "ftpipe/base/strmap.h"
#include "ftpipe/engine/state.h"

/* The newest run of each target. */
typedef struct {
    ft_run_record *runs;
    size_t n_runs;
    ft_strmap by_target;
} ft_last_runs;

int ft_last_runs_load(ft_state *state, ft_last_runs *out);
/* target's newest run, or NULL when it never ran. */
const ft_run_record *ft_last_run_of(const ft_last_runs *runs, const char *target);
void ft_last_runs_free(ft_last_runs *runs);

/* One stage's lines on standard output; last may be NULL. */
void ft_status_print_line(const char *target, const char *kind, const char *action, const char *reason,
                          const ft_run_record *last);

#endif
