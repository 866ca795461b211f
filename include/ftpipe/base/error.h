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

/* A place in a text file: pipelines and rule files name it in every error. */
typedef struct {
    const char *file; /* owned by whoever read the file (lives as long as it) */
    int line;         /* 1-based */
    int column;       /* 1-based */
} ft_location;

/* Like ft_error, prefixed with "FILE:LINE:COLUMN: " (nothing when where or its file is NULL). */
int ft_error_at(const ft_location *where, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The current message ("" when none). */
const char *ft_error_message(void);

void ft_error_clear(void);

#endif
