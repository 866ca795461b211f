/* progress: what a run shows while it works. On a terminal, one live line per
 * running stage below the permanent messages; elsewhere, permanent lines, with a
 * running stage's status as a plain line every FTPIPE_PROGRESS_INTERVAL seconds
 * (default 30; 0: every update). */
#ifndef FTPIPE_PROGRESS_H
#define FTPIPE_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct ft_progress ft_progress;

ft_progress *ft_progress_new(FILE *out);
void ft_progress_free(ft_progress *progress);
bool ft_progress_is_live(const ft_progress *progress);

/* A permanent line ("done   adapter in 3.2 s"). */
void ft_progress_message(ft_progress *progress, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The run as a whole: `settled` of `total` stages done, up to date or failed;
 * shown with the elapsed time above the running stages' lines. */
void ft_progress_overall(ft_progress *progress, size_t settled, size_t total);
/* Sets the live line of a running stage (slot: any stable id); NULL text removes it. */
void ft_progress_status(ft_progress *progress, size_t slot, const char *text);

#endif
