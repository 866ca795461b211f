/* checker: judges a generated answer for the evaluate stage.
 *
 *   exact        the answer, trimmed, equals the expected text, trimmed
 *   contains     the answer contains the expected text
 *   regex        the answer matches a PCRE2 pattern (the expected text when no pattern is given)
 *   sum-equals   for prompts "N=" whose answer ends "a + b": correct when a + b = N
 *   shell        a command judges: prompt, answer and expected in FTPIPE_PROMPT,
 *                FTPIPE_ANSWER, FTPIPE_EXPECTED; exit status 0 means correct */
#ifndef FTPIPE_CHECKER_H
#define FTPIPE_CHECKER_H

#include <stdbool.h>

typedef struct ft_checker ft_checker;

/* name: one of the above; argument: the regex pattern or the shell command (may be NULL otherwise). */
int ft_checker_create(const char *name, const char *argument, ft_checker **out);
void ft_checker_free(ft_checker *checker);

/* Sets *correct. Returns -1 only when judging itself failed (a shell command that could not start). */
int ft_checker_judge(const ft_checker *checker, const char *prompt, const char *answer, const char *expected,
                     bool *correct);

#endif
