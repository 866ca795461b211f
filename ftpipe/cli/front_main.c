/* front_main: the program `ftpipe`. It answers a run with nothing to do (and -n)
 * and `ftpipe status` from the last complete build's record (engine/record_answer.h)
 * and hands every other command, with the same words, to ftpipe-full (cli/main.c),
 * the whole program, which lies beside it. It links only that answer's modules:
 * ftpipe-full's start (55 shared libraries to load and relocate: curl, libarchive,
 * OpenBLAS and theirs, and OpenBLAS's threads) was a third of a no-op's time. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/hash.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/cli/command_line.h"
#include "ftpipe/engine/record_answer.h"
#include "ftpipe/engine/up_to_date.h"

#define FULL_PROGRAM_NAME "ftpipe-full"

/* ftpipe-full beside this program (make install puts them side by side), or NULL
 * when this program's own path cannot be read. */
static char *full_program_path(void)
{
    char self[PATH_MAX];
    ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
    if (length <= 0)
        return NULL;
    self[length] = '\0';
    char *dir = ft_path_dirname(self);
    char *full = ft_path_join(dir, FULL_PROGRAM_NAME);
    free(dir);
    return full;
}

/* Whether the record answered (and the answer is printed). Only a plain run
 * (targets, options, VAR=value) and a bare `status` can be; --help, --version
 * and usage errors go to ftpipe-full too, which prints them. */
static bool answer(int argc, char **argv, const char *full)
{
    static const char *const own_words[] = {"hash", "encode", "decode", "render", "import", "stage-exec", NULL};
    for (size_t i = 0; argc > 1 && own_words[i]; i++)
        if (strcmp(argv[1], own_words[i]) == 0)
            return false;
    ft_command_line line;
    bool answered = false;
    if (ft_command_line_parse(argc, argv, &line) < 0 && !line.show_version) {
        ft_invocation *invocation = &line.invocation;
        invocation->program_path = full;
        if (!invocation->command) {
            char question[FT_HASH_HEX_LENGTH + 1];
            ft_up_to_date_question(invocation, question);
            answered = ft_record_answer_run(invocation, question);
        } else if (strcmp(invocation->command, "status") == 0 && !invocation->json && !invocation->open_report &&
                   !invocation->output_path) {
            answered = ft_record_answer_status(invocation);
        }
    }
    ft_command_line_free(&line);
    return answered;
}

int main(int argc, char **argv)
{
    char *full = full_program_path();
    if (full && answer(argc, argv, full)) {
        free(full);
        return 0;
    }
    fflush(NULL);
    setenv(FT_RECORD_CHECKED_VARIABLE, "1", 1);
    if (full)
        execv(full, argv);
    fprintf(stderr, "ftpipe: cannot run %s (%s): it belongs beside ftpipe (make builds both into build/, "
            "make install into PREFIX/bin); build or install ftpipe again\n",
            full ? full : FULL_PROGRAM_NAME, full ? strerror(errno) : "cannot read /proc/self/exe");
    free(full);
    return 127;
}
