/* main: the ftpipe command line, with make's habits.
 *
 *   ftpipe [-f FILE] [-C DIR] [-j N] [-k] [-n] [TARGET...] [VAR=value...]
 *   ftpipe status | why TARGET | log TARGET | gc | clean | help [KIND]
 *   ftpipe estimate [--json] [TARGET...] | report [-o FILE] [--open]
 *   ftpipe hash PATH... | encode --tokenizer PATH | decode --tokenizer PATH */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/cli/commands.h"
#include "ftpipe/engine/build.h"
#include "ftpipe/engine/inspect.h"
#include "ftpipe/engine/session.h"
#include "ftpipe/stages/registry.h"

static const char usage_text[] =
    "usage: ftpipe [options] [TARGET...] [VAR=value...]\n"
    "       ftpipe status | why TARGET | log TARGET | gc | clean | help [KIND]\n"
    "       ftpipe estimate [--json] [TARGET...] | report [-o FILE] [--open]\n"
    "       ftpipe hash [--threads N] PATH... | encode --tokenizer PATH [--jsonl] | decode --tokenizer PATH\n"
    "\n"
    "Runs the stages of a pipeline file (Ftpipe) that are out of date, as make does.\n"
    "  -f FILE   the pipeline file (default: Ftpipe in the folder given by -C, or here)\n"
    "  -C DIR    work in DIR\n"
    "  -j N      run up to N independent stages at once (default 1)\n"
    "  -k        keep going after a failure with what does not depend on it\n"
    "  -n        say what would run and why; run nothing\n"
    "  VAR=value override a variable of the pipeline\n"
    "\n"
    "  status          every stage: up to date, or what would run and why; last runs\n"
    "  why TARGET      what changed since TARGET was last built\n"
    "  log TARGET      the log of TARGET's last run\n"
    "  gc              remove cached results and work folders no current target needs\n"
    "  clean           remove the targets ftpipe made from the workspace (the cache keeps them)\n"
    "  help [KIND]     the stage kinds, or one kind's parameters\n"
    "  estimate [TARGET...]  what the stages that would run need: peak memory per GPU and\n"
    "                  on the host, shm, disk and time, each with its source (--json: as JSON)\n"
    "  report          one self-contained HTML file of the pipeline, its runs, training curves and\n"
    "                  evaluations (-o FILE, default .ftpipe/report.html; --open: print only its path)\n";

static int fail(void)
{
    fprintf(stderr, "ftpipe: %s\n", ft_error_message());
    return 1;
}

static int usage_error(const char *message)
{
    fprintf(stderr, "ftpipe: %s\n%s", message, usage_text);
    return 2;
}

static bool is_command(const char *word)
{
    static const char *const commands[] = {"status", "why", "log", "gc", "clean", "help", "estimate", "report", NULL};
    for (size_t i = 0; commands[i]; i++)
        if (strcmp(word, commands[i]) == 0)
            return true;
    return false;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "hash") == 0)
        return ft_command_hash(argc - 2, argv + 2) == 0 ? 0 : fail();
    if (argc > 1 && strcmp(argv[1], "encode") == 0)
        return ft_command_encode(argc - 2, argv + 2) == 0 ? 0 : fail();
    if (argc > 1 && strcmp(argv[1], "decode") == 0)
        return ft_command_decode(argc - 2, argv + 2) == 0 ? 0 : fail();

    ft_invocation invocation;
    memset(&invocation, 0, sizeof invocation);
    invocation.jobs = 1;
    invocation.kinds = ft_builtin_kinds;
    const char *directory = ".";
    const char *file = NULL;
    const char **words = ft_xcalloc((size_t)argc + 1, sizeof *words);
    size_t n_words = 0;
    ft_variable *overrides = ft_xcalloc((size_t)argc + 1, sizeof *overrides);
    size_t n_overrides = 0;
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!options_done && arg[0] == '-' && arg[1]) {
            if (strcmp(arg, "--") == 0) {
                options_done = true;
            } else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
                fputs(usage_text, stdout);
                return 0;
            } else if (strcmp(arg, "-n") == 0 || strcmp(arg, "--dry-run") == 0) {
                invocation.dry_run = true;
            } else if (strcmp(arg, "--json") == 0) {
                invocation.json = true;
            } else if (strcmp(arg, "--open") == 0) {
                invocation.open_report = true;
            } else if (strcmp(arg, "-o") == 0) {
                if (i + 1 >= argc)
                    return usage_error("-o needs a file");
                invocation.output_path = argv[++i];
            } else if (strcmp(arg, "-k") == 0 || strcmp(arg, "--keep-going") == 0) {
                invocation.keep_going = true;
            } else if (strncmp(arg, "-j", 2) == 0) {
                const char *value = arg[2] ? arg + 2 : (i + 1 < argc ? argv[++i] : NULL);
                char *end = NULL;
                long jobs = value ? strtol(value, &end, 10) : 0;
                if (!value || *end || jobs < 1 || jobs > 1024)
                    return usage_error("-j needs a number of jobs between 1 and 1024");
                invocation.jobs = (int)jobs;
            } else if (strcmp(arg, "-C") == 0 || strcmp(arg, "-f") == 0) {
                if (i + 1 >= argc)
                    return usage_error(arg[1] == 'C' ? "-C needs a folder" : "-f needs a file");
                if (arg[1] == 'C')
                    directory = argv[++i];
                else
                    file = argv[++i];
            } else {
                char message[256];
                snprintf(message, sizeof message, "unknown option %s", arg);
                return usage_error(message);
            }
        } else if (strchr(arg, '=') && arg[0] != '=') {
            const char *equals = strchr(arg, '=');
            overrides[n_overrides].name = ft_xstrndup(arg, (size_t)(equals - arg));
            overrides[n_overrides].value = ft_xstrdup(equals + 1);
            n_overrides++;
        } else {
            words[n_words++] = arg;
        }
    }
    if (file)
        invocation.pipeline_path = ft_path_join(directory, file);
    else
        invocation.pipeline_path = ft_path_join(directory, "Ftpipe");
    invocation.overrides = overrides;
    invocation.n_overrides = n_overrides;

    int status;
    if (n_words > 0 && is_command(words[0])) {
        invocation.command = words[0];
        invocation.arguments = words + 1;
        invocation.n_arguments = n_words - 1;
        status = ft_inspect_command(&invocation);
    } else {
        invocation.arguments = words;
        invocation.n_arguments = n_words;
        status = ft_run_pipeline(&invocation);
    }
    if (status == 1)
        fail();
    for (size_t i = 0; i < n_overrides; i++) {
        free(overrides[i].name);
        free(overrides[i].value);
    }
    free(overrides);
    free(words);
    free(invocation.pipeline_path);
    return status;
}
