/* command_line: the words of ftpipe's command line. */
#include "ftpipe/cli/command_line.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

const char ft_usage_text[] =
    "usage: ftpipe [options] [TARGET...] [VAR=value...]\n"
    "       ftpipe status | why TARGET | log TARGET | gc | clean | dag | metrics | help [KIND]\n"
    "       ftpipe push [TARGET...] | pull [TARGET...] | remote status [TARGET...] | lock [--update] [TARGET...]\n"
    "       ftpipe estimate [--json] [--measure] [TARGET...] | report [-o FILE] [--open]\n"
    "       ftpipe hash [--threads N] PATH... | encode --tokenizer PATH [--jsonl] | decode --tokenizer PATH\n"
    "       ftpipe render --tokenizer PATH --template NAME [--cutoff-len N] [--mask-history]\n"
    "                     [--train-on-prompt] [--no-thinking] < messages.json\n"
    "       ftpipe import CONFIG.yaml [-o FILE] | import --keys   (a LLaMA-Factory config -> a pipeline)\n"
    "\n"
    "Runs the stages of a pipeline file (Ftpipe) that are out of date, as make does.\n"
    "  -f FILE   the pipeline file (default: Ftpipe in the folder given by -C, or here)\n"
    "  -C DIR    work in DIR\n"
    "  -j N      run up to N independent stages at once (default 1)\n"
    "  -k        keep going after a failure with what does not depend on it\n"
    "  -n        say what would run and why; run nothing\n"
    "  --version print the version\n"
    "  --remote URL  the remote cache (default: $FTPIPE_REMOTE, else the pipeline's .REMOTE)\n"
    "  VAR=value override a variable of the pipeline\n"
    "  --        what follows is targets, even a word that names a command\n"
    "\n"
    "  status          every stage: up to date, or what would run and why; last runs\n"
    "  why TARGET      what changed since TARGET was last built\n"
    "  log TARGET      the log of TARGET's last run\n"
    "  gc [--keep-runs N] [--older-than 30d] [--all-unreferenced]\n"
    "                  remove cached results no current target needs and no recent run made\n"
    "  clean           remove the targets ftpipe made from the workspace (the cache keeps them)\n"
    "  metrics [--all] [--json|--csv] [TARGET...]\n"
    "                  the results' metrics beside the parameters that differ between them\n"
    "  metrics --diff A B   the parameters and metrics that differ between two results\n"
    "  dag [--dot]     the stages and their inputs, as text or as a Graphviz graph\n"
    "  help [KIND]     these commands and the stage kinds, or one kind's parameters\n"
    "  push [TARGET...]    send built results to the remote cache\n"
    "  pull [TARGET...]    restore results from the remote cache into the workspace\n"
    "  remote status       each stage: built here, on the remote, both, or neither\n"
    "  lock [--update [TARGET...]]  pin each download (commit, sizes, SHA-256) in Ftpipe.lock\n"
    "  estimate [TARGET...]  what the stages that would run need: peak memory per GPU and\n"
    "                  on the host, shm, disk and time, each with its source (--json: as JSON;\n"
    "                  --measure: time from a few real steps run now and thrown away)\n"
    "  report          one self-contained HTML file of the pipeline, its runs, training curves and\n"
    "                  evaluations (-o FILE, default .ftpipe/report.html; --open: print only its path)\n"
    "\n"
    "  hash [--threads N] PATH...\n"
    "                  content hashes of files (xxh128sum's up to 64 MiB) and folders\n"
    "  encode --tokenizer PATH [--jsonl] [--threads N]\n"
    "                  standard input's text to token ids (--jsonl: a JSON string per line)\n"
    "  decode --tokenizer PATH [--jsonl]\n"
    "                  standard input's token ids to text (--jsonl: a JSON list per line)\n"
    "A target named like a command is built, not the command; so is any word after --.\n";

static int usage_error(ft_command_line *line, const char *message)
{
    snprintf(line->usage_error, sizeof line->usage_error, "%s", message);
    return 2;
}

bool ft_command_line_is_command(const char *word)
{
    static const char *const commands[] = {"status", "why",  "log",  "gc",     "clean", "dag",
                                                 "metrics", "help", "push", "pull", "remote", "lock", "estimate", "report", NULL};
    for (size_t i = 0; commands[i]; i++)
        if (strcmp(word, commands[i]) == 0)
            return true;
    return false;
}

/* A word that is not an option: VAR=value overrides a variable; any other is a
 * target or a command. */
static void add_word(ft_command_line *line, const char *word)
{
    const char *equals = strchr(word, '=');
    if (equals && equals != word) {
        line->overrides[line->n_overrides].name = ft_xstrndup(word, (size_t)(equals - word));
        line->overrides[line->n_overrides].value = ft_xstrdup(equals + 1);
        line->n_overrides++;
    } else {
        line->words[line->n_words++] = word;
    }
}

/* Options anywhere among the words, as make takes them (getopt_long permutes).
 * -1 to go on; otherwise the exit status (--help, a usage error). */
static int read_words(int argc, char **argv, ft_command_line *line)
{
    static const struct option long_options[] = {{"help", no_argument, NULL, 'h'},
                                                 {"dry-run", no_argument, NULL, 'n'},
                                                 {"keep-going", no_argument, NULL, 'k'},
                                                 {"version", no_argument, NULL, 'V'},
                                                 {"remote", required_argument, NULL, 'R'},
                                                 {NULL, 0, NULL, 0}};
    opterr = 0; /* the messages below say more than getopt's */
    /* '-' first: words (targets, commands, VAR=value) come back in order as option 1. */
    for (int option; (option = getopt_long(argc, argv, "-:hnkj:C:f:o:", long_options, NULL)) != -1;) {
        switch (option) {
        case 'h':
            return 0;
        case 'n':
            line->invocation.dry_run = true;
            break;
        case 'V':
            line->show_version = true;
            break;
        case 'R':
            if (!*optarg)
                return usage_error(line, "--remote needs a URL (http(s)://, file:// or s3://)");
            line->invocation.remote_url = optarg;
            break;
        case 'k':
            line->invocation.keep_going = true;
            break;
        case 'j': {
            char *end = NULL;
            long jobs = strtol(optarg, &end, 10);
            if (!*optarg || *end || jobs < 1 || jobs > 1024)
                return usage_error(line, "-j needs a number of jobs between 1 and 1024");
            line->invocation.jobs = (int)jobs;
            break;
        }
        case 'C':
            line->directory = optarg;
            break;
        case 'f':
            line->file = optarg;
            break;
        case 'o': /* ftpipe report -o FILE */
            line->invocation.output_path = optarg;
            break;
        case ':':
            return usage_error(line, optopt == 'j'   ? "-j needs a number of jobs between 1 and 1024"
                               : optopt == 'C' ? "-C needs a folder"
                               : optopt == 'R' ? "--remote needs a URL (http(s)://, file:// or s3://)"
                               : optopt == 'o' ? "-o needs a file"
                                               : "-f needs a file");
        case '?': {
            const char *word = argv[optind - 1];
            /* a long option after a command word is the command's (ftpipe metrics --json) */
            if (line->n_words > 0 && ft_command_line_is_command(line->words[0]) && strncmp(word, "--", 2) == 0) {
                add_word(line, word);
                break;
            }
            char message[256];
            if (optopt && strncmp(word, "--", 2) != 0)
                snprintf(message, sizeof message, "unknown option -%c", optopt);
            else
                snprintf(message, sizeof message, "unknown option %s", word);
            return usage_error(line, message);
        }
        default: /* 1: a word */
            add_word(line, optarg);
        }
    }
    /* after "--" getopt stops: the rest are words as they stand */
    if (optind < argc && line->n_words == 0)
        line->words_are_targets = true;
    for (int i = optind; i < argc; i++)
        add_word(line, argv[i]);
    return -1;
}

/* The flags of estimate (--json, --measure) and report (--open), which came as its words. */
static void take_command_flags(ft_command_line *line)
{
    size_t kept = 1;
    for (size_t i = 1; i < line->n_words; i++) {
        if (strcmp(line->words[i], "--json") == 0 && strcmp(line->words[0], "estimate") == 0)
            line->invocation.json = true;
        else if (strcmp(line->words[i], "--measure") == 0 && strcmp(line->words[0], "estimate") == 0)
            line->invocation.measure = true;
        else if (strcmp(line->words[i], "--open") == 0 && strcmp(line->words[0], "report") == 0)
            line->invocation.open_report = true;
        else
            line->words[kept++] = line->words[i];
    }
    line->n_words = kept;
}

int ft_command_line_parse(int argc, char **argv, ft_command_line *line)
{
    memset(line, 0, sizeof *line);
    line->directory = ".";
    line->invocation.jobs = 1;
    line->words = ft_xcalloc((size_t)argc + 1, sizeof *line->words);
    line->overrides = ft_xcalloc((size_t)argc + 1, sizeof *line->overrides);
    int status = read_words(argc, argv, line);
    if (status >= 0)
        return status;
    ft_invocation *invocation = &line->invocation;
    invocation->pipeline_path = ft_path_join(line->directory, line->file ? line->file : "Ftpipe");
    invocation->overrides = line->overrides;
    invocation->n_overrides = line->n_overrides;
    if (line->n_words > 0 && ft_command_line_is_command(line->words[0]) && !line->words_are_targets) {
        take_command_flags(line);
        invocation->command = line->words[0];
        invocation->arguments = line->words + 1;
        invocation->n_arguments = line->n_words - 1;
    } else {
        invocation->arguments = line->words;
        invocation->n_arguments = line->n_words;
    }
    return -1;
}

void ft_command_line_free(ft_command_line *line)
{
    for (size_t i = 0; i < line->n_overrides; i++) {
        free(line->overrides[i].name);
        free(line->overrides[i].value);
    }
    free(line->overrides);
    free(line->words);
    free(line->invocation.pipeline_path);
    memset(line, 0, sizeof *line);
}
