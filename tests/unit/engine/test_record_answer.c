/* Tests of record_answer: after a complete build, a run asking the same question
 * is answered "nothing to do" and `status` prints every stage up to date with its
 * last run, both from the record alone; an edited input, status's arguments, a
 * target named `status` or a selection of targets are not answered. The stage kind
 * is this test's own `shell`, which copies its first input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "copying_shell.h"
#include "fixtures.h"
#include "ftpipe/base/hash.h"
#include "ftpipe/engine/record_answer.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/engine/up_to_date.h"

const char *const ft_builtin_rule_files[][2] = {FIXTURE_COMMON_AND_SHELL_RULES, {NULL, NULL}};

static char *temporary_dir;

/* A workspace NAME with in.txt and two stages, built once. */
static char *built_workspace(const char *name, const char *second_target)
{
    char *dir = ft_path_join(temporary_dir, name);
    fixture_write_file(dir, "in.txt", "one\n", 0);
    char *pipeline = ft_xasprintf("mid.txt: shell in.txt\n\trun = cp $< $@\n%s: shell mid.txt\n\trun = cp $< $@\n",
                                  second_target);
    fixture_write_file(dir, "Ftpipe", pipeline, 0);
    free(pipeline);
    ft_invocation invocation = {.kinds = kinds, .pipeline_path = ft_path_join(dir, "Ftpipe"), .jobs = 1};
    fflush(stdout);
    CHECK_INT(ft_run_pipeline(&invocation), 0);
    free(invocation.pipeline_path);
    return dir;
}

/* Captures what answer() prints; returns whether it answered. */
typedef struct {
    ft_invocation invocation;
    bool status;
    char printed[8192];
} asking;

static bool ask(asking *a)
{
    fflush(stdout);
    int saved_stdout = dup(1);
    FILE *captured = tmpfile();
    dup2(fileno(captured), 1);
    bool answered;
    if (a->status) {
        answered = ft_record_answer_status(&a->invocation);
    } else {
        char question[FT_HASH_HEX_LENGTH + 1];
        ft_up_to_date_question(&a->invocation, question);
        answered = ft_record_answer_run(&a->invocation, question);
    }
    fflush(stdout);
    dup2(saved_stdout, 1);
    close(saved_stdout);
    rewind(captured);
    size_t n = fread(a->printed, 1, sizeof a->printed - 1, captured);
    a->printed[n] = '\0';
    fclose(captured);
    return answered;
}

TEST(the_no_op_and_status_are_answered_from_the_record)
{
    char *dir = built_workspace("answered", "out.txt");
    asking a = {.invocation = {.kinds = kinds, .pipeline_path = ft_path_join(dir, "Ftpipe")}};
    CHECK(ask(&a));
    CHECK_STR(a.printed, "ftpipe: nothing to do (2 up to date)\n");
    a.status = true;
    CHECK(ask(&a));
    CHECK(strncmp(a.printed, "mid.txt                          shell    up to date \n    last run ", 67) == 0);
    CHECK(strstr(a.printed, ": done in ") != NULL);
    CHECK(strstr(a.printed, "\nout.txt                          shell    up to date \n    last run ") != NULL);
    free(a.invocation.pipeline_path);
    free(dir);
}

TEST(what_the_record_cannot_answer_is_not_answered)
{
    char *dir = built_workspace("unanswered", "out.txt");
    asking a = {.invocation = {.kinds = kinds, .pipeline_path = ft_path_join(dir, "Ftpipe")}, .status = true};
    const char *one = "out.txt";
    a.invocation.arguments = &one; /* status with arguments */
    a.invocation.n_arguments = 1;
    CHECK(!ask(&a));
    a.status = false; /* a run of another selection: another question */
    CHECK(!ask(&a));
    a.invocation.n_arguments = 0;
    CHECK(ask(&a));
    fixture_write_file(dir, "in.txt", "two, longer\n", 0);
    CHECK(!ask(&a));
    a.status = true;
    CHECK(!ask(&a));
    CHECK_STR(a.printed, "");
    free(a.invocation.pipeline_path);
    free(dir);
}

TEST(a_target_named_status_is_built_not_answered)
{
    char *dir = built_workspace("named-status", "status");
    asking a = {.invocation = {.kinds = kinds, .pipeline_path = ft_path_join(dir, "Ftpipe")}, .status = true};
    CHECK(!ask(&a));
    a.status = false;
    CHECK(ask(&a));
    free(a.invocation.pipeline_path);
    free(dir);
}

int main(void)
{
    unsetenv("FTPIPE_RULES");
    temporary_dir = fixture_temporary_dir("record-answer");
    RUN(the_no_op_and_status_are_answered_from_the_record);
    RUN(what_the_record_cannot_answer_is_not_answered);
    RUN(a_target_named_status_is_built_not_answered);
    ft_remove_tree(temporary_dir);
    free(temporary_dir);
    return check_done();
}
