/* error: one message per thread, set once at the point of failure, printed by main.
 *
 * Library code never prints and never exits: it sets the message (what failed,
 * where, what to do) and returns -1 up the stack. */
#ifndef FTPIPE_ERROR_H
#define FTPIPE_ERROR_H

/* Sets this thread's message; returns -1 so callers can write `return ft_error(...)`. */
int ft_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Like ft_error, with ": <strerror(errno)>" appended (errno read on entry). */
int ft_error_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prepends context ("while X: ") to the current message; returns -1. */
int ft_error_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The current message ("" when none). */
const char *ft_error_message(void);

void ft_error_clear(void);

#endif
