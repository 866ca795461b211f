/* command_line: ftpipe's words read as make reads its own (getopt_long, options
 * anywhere among the words): the pipeline's file and folder, the options, the
 * targets or a command and its arguments, and VAR=value overrides. Both programs
 * read it so: ftpipe (cli/front_main.c) and ftpipe-full (cli/main.c). */
#ifndef FTPIPE_COMMAND_LINE_H
#define FTPIPE_COMMAND_LINE_H

#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/engine/session.h"

extern const char ft_usage_text[];

typedef struct {
    ft_invocation invocation;
    const char *directory, *file;
    const char **words;     /* targets, or a command and its arguments */
    size_t n_words;
    ft_variable *overrides; /* VAR=value words */
    size_t n_overrides;
    bool words_are_targets; /* they came after `--`: none is a command */
    bool show_version;
    char usage_error[256];  /* why the words were refused */
} ft_command_line;

/* Reads argv into *line (freed by ft_command_line_free), printing nothing. -1 to
 * go on; otherwise the exit status: 0 for --help, 2 for words refused (the
 * reason in line->usage_error). On -1 the
 * invocation's pipeline_path, command, arguments and overrides are set, and a
 * command's own flags (estimate --json, report --open) are taken from its words. */
int ft_command_line_parse(int argc, char **argv, ft_command_line *line);
void ft_command_line_free(ft_command_line *line);

/* Whether word names a command (status, why, ...) rather than a target. */
bool ft_command_line_is_command(const char *word);

#endif
