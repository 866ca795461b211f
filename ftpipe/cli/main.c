/* main: ftpipe-full, the whole program: every command, with make's habits. `ftpipe`
 * (front_main.c) answers what the last complete build's record answers and hands
 * the rest to this program, with the same words:
 *
 *   ftpipe [-f FILE] [-C DIR] [-j N] [-k] [-n] [--remote URL] [TARGET...] [VAR=value...]
 *   ftpipe push|pull [TARGET...] | remote status [TARGET...] | lock [--update] [TARGET...]
 *   ftpipe status | why TARGET | log TARGET | gc | clean | dag | metrics | help [KIND]
 *   ftpipe estimate [--json] [--measure] [TARGET...] | report [-o FILE] [--open]
 *   ftpipe hash PATH... | encode --tokenizer PATH | decode --tokenizer PATH
 *   ftpipe render --tokenizer PATH --template NAME
 *   ftpipe import CONFIG.yaml [-o FILE]
 *
 * Options are read with getopt_long, anywhere among the words, as make reads them. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/terminal_text.h"
#include "ftpipe/cli/command_line.h"
#include "ftpipe/cli/commands.h"
#include "ftpipe/engine/build.h"
#include "ftpipe/engine/inspect.h"
#include "ftpipe/engine/record_answer.h"
#include "ftpipe/engine/session.h"
#include "ftpipe/engine/slurm.h"
#include "ftpipe/stages/registry.h"

#define FTPIPE_VERSION "0.1.0"

static int fail(void)
{
    char *shown = ft_terminal_text(ft_error_message());
    fprintf(stderr, "ftpipe: %s\n", shown);
    free(shown);
    return 1;
}

/* Runs the pipeline, or an inspection command, as the command line asks. */
static int run(ft_command_line *line)
{
    ft_invocation *invocation = &line->invocation;
    int status;
    if (line->show_version) {
        printf("ftpipe %s\n", FTPIPE_VERSION);
        status = 0;
    } else if (invocation->command) {
        const char *command = invocation->command;
        if (strcmp(command, "help") == 0 && invocation->n_arguments == 0) { /* the commands, then the kinds */
            fputs(ft_usage_text, stdout);
            putchar('\n');
        }
        if (strcmp(command, "push") == 0 || strcmp(command, "pull") == 0 || strcmp(command, "remote") == 0)
            status = ft_command_remote(invocation);
        else if (strcmp(command, "lock") == 0)
            status = ft_command_lock(invocation);
        else
            status = ft_inspect_command(invocation);
    } else {
        status = ft_run_pipeline(invocation);
    }
    if (status == 1)
        fail();
    return status;
}

int main(int argc, char **argv)
{
    /* jansson's builders ignore a failed insertion, so an allocation failure would drop a
     * key silently and a stage would publish an incomplete file (fault injection found a
     * tokenizer.json missing entries): out of memory stops the process, as ft_xmalloc does. */
    json_set_alloc_funcs(ft_xmalloc, free);
    /* ftpipe (cli/front_main.c) looked in the record already and found no answer */
    bool record_checked = getenv(FT_RECORD_CHECKED_VARIABLE) != NULL;
    unsetenv(FT_RECORD_CHECKED_VARIABLE);
    if (argc > 1 && strcmp(argv[1], "hash") == 0)
        return ft_command_hash(argc - 2, argv + 2) == 0 ? 0 : fail();
    if (argc > 1 && strcmp(argv[1], "encode") == 0)
        return ft_command_encode(argc - 2, argv + 2) == 0 ? 0 : fail();
    if (argc > 1 && strcmp(argv[1], "decode") == 0)
        return ft_command_decode(argc - 2, argv + 2) == 0 ? 0 : fail();
    if (argc > 1 && strcmp(argv[1], "render") == 0)
        return ft_command_render(argc - 2, argv + 2) == 0 ? 0 : fail();
    if (argc > 1 && strcmp(argv[1], "import") == 0)
        return ft_command_import(argc - 2, argv + 2) == 0 ? 0 : fail();
    if (argc == 3 && strcmp(argv[1], "stage-exec") == 0) /* a Slurm job's step: see engine/slurm.h */
        return ft_slurm_stage_exec(argv[2], ft_builtin_kinds);

    ft_command_line line;
    int status = ft_command_line_parse(argc, argv, &line);
    if (status == 0)
        fputs(ft_usage_text, stdout);
    else if (status > 0)
        fprintf(stderr, "ftpipe: %s\n%s", line.usage_error, ft_usage_text);
    else {
        line.invocation.kinds = ft_builtin_kinds;
        line.invocation.record_checked = record_checked;
        status = run(&line);
    }
    ft_command_line_free(&line);
    return status;
}
