/* inspect: the commands that look at or tidy a workspace rather than build it:
 * status, why, log, gc, clean, dag, metrics, estimate, report and help. */
#ifndef FTPIPE_INSPECT_H
#define FTPIPE_INSPECT_H

#include "ftpipe/engine/session.h"

/* Runs invocation->command; returns the exit status (1: message in ft_error). */
int ft_inspect_command(const ft_invocation *invocation);

#endif
