/* Tests of up_to_date: a complete build leaves a record that answers the next run
 * with the same question while nothing it names changed; an edited input or
 * pipeline, another environment, a cut record or a locked run end that, and a
 * pipeline with a wildcard gets no record. The stage kind is this test's own
 * `shell`, which copies its first input, under the fixture's shell rules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/base/hash.h"
#include "ftpipe/engine/session.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/engine/up_to_date.h"
#include "ftpipe/engine/workspace.h"

const char *const ft_builtin_rule_files[][2] = {FIXTURE_COMMON_AND_SHELL_RULES, {NULL, NULL}};

static int copy_first_input(ft_stage *stage)
{
    return ft_copy_file(ft_stage_input_path(stage, 0), ft_stage_output_path(stage));
}

static const ft_stage_kind copying_shell = {.name = "shell", .version = 1, .run = copy_first_input};
static const ft_stage_kind *const kinds[] = {&copying_shell, NULL};

static char *temporary_dir;

/* A workspace NAME with in.txt and a one-stage pipeline (`pipeline` when not NULL). */
static char *workspace(const char *name, const char *pipeline)
{
    char *dir = ft_path_join(temporary_dir, name);
    fixture_write_file(dir, "in.txt", "one\n", 0);
    fixture_write_file(dir, "Ftpipe", pipeline ? pipeline : "out.txt: shell in.txt\n\trun = cp $< $@\n", 0);
    return dir;
}

static ft_invocation invocation_in(const char *dir)
{
    ft_invocation invocation = {.kinds = kinds, .pipeline_path = ft_path_join(dir, "Ftpipe"), .jobs = 1};
    return invocation;
}

/* Whether dir's record answers the plain run's question now. */
static bool answered(const char *dir, size_t *n_stages)
{
    ft_invocation invocation = invocation_in(dir);
    char question[FT_HASH_HEX_LENGTH + 1];
    ft_up_to_date_question(&invocation, question);
    free(invocation.pipeline_path);
    ft_up_to_date_answer answer;
    if (ft_up_to_date_check(dir, question, true, &answer) != 1)
        return false;
    *n_stages = answer.n_stages;
    bool whole = answer.all_stages && answer.n_stages == 1 && strcmp(answer.targets[0], "out.txt") == 0 &&
                 strcmp(answer.kinds[0], "shell") == 0;
    ft_up_to_date_answer_free(&answer);
    return whole;
}

static int build(const char *dir)
{
    ft_invocation invocation = invocation_in(dir);
    fflush(stdout);
    int status = ft_run_pipeline(&invocation);
    free(invocation.pipeline_path);
    return status;
}

TEST(a_complete_build_answers_the_next_run)
{
    char *dir = workspace("answers", NULL);
    size_t n = 0;
    CHECK(!answered(dir, &n));
    CHECK_INT(build(dir), 0);
    CHECK(answered(dir, &n));
    CHECK_INT(n, 1);
    CHECK_INT(build(dir), 0); /* answered: still there, still answering */
    CHECK(answered(dir, &n));
    free(dir);
}

TEST(an_edited_input_or_pipeline_is_not_answered)
{
    char *dir = workspace("edits", NULL);
    size_t n = 0;
    CHECK_INT(build(dir), 0);
    fixture_write_file(dir, "in.txt", "two, longer\n", 0);
    CHECK(!answered(dir, &n));
    CHECK_INT(build(dir), 0); /* plans, reruns, records again */
    CHECK(answered(dir, &n));
    fixture_write_file(dir, "Ftpipe", "out.txt: shell in.txt\n\trun = cp $< $@\n# edited\n", 0);
    CHECK(!answered(dir, &n));
    free(dir);
}

TEST(another_environment_is_another_question)
{
    char *dir = workspace("environment", NULL);
    size_t n = 0;
    CHECK_INT(build(dir), 0);
    setenv("FTPIPE_TEST_VARIABLE", "1", 1);
    CHECK(!answered(dir, &n));
    unsetenv("FTPIPE_TEST_VARIABLE");
    CHECK(answered(dir, &n));
    setenv("FTPIPE_STATS", "1", 1); /* it only reports */
    CHECK(answered(dir, &n));
    unsetenv("FTPIPE_STATS");
    free(dir);
}

TEST(a_removed_target_or_a_cut_record_answers_nothing)
{
    char *dir = workspace("removed", NULL);
    size_t n = 0;
    CHECK_INT(build(dir), 0);
    char *target = ft_path_join(dir, "out.txt");
    CHECK_INT(unlink(target), 0);
    CHECK(!answered(dir, &n));
    CHECK_INT(build(dir), 0); /* restores it from the cache */
    CHECK(answered(dir, &n));
    char *record = ft_path_join(dir, ".ftpipe/up-to-date");
    CHECK_INT(truncate(record, 60), 0);
    CHECK(!answered(dir, &n));
    free(record);
    free(target);
    free(dir);
}

TEST(a_locked_run_removes_the_record)
{
    char *dir = workspace("locked", NULL);
    size_t n = 0;
    CHECK_INT(build(dir), 0);
    CHECK(answered(dir, &n));
    ft_workspace *opened = NULL;
    CHECK_INT(ft_workspace_open(dir, true, &opened), 0);
    CHECK(!answered(dir, &n));
    ft_workspace_close(opened);
    free(dir);
}

TEST(a_pipeline_with_a_wildcard_gets_no_record)
{
    char *dir = workspace("wildcard", "out.txt: shell in*.txt\n\trun = cp $< $@\n");
    CHECK_INT(build(dir), 0);
    char *record = ft_path_join(dir, ".ftpipe/up-to-date");
    CHECK(!ft_path_exists(record));
    free(record);
    free(dir);
}

int main(void)
{
    unsetenv("FTPIPE_RULES");
    temporary_dir = fixture_temporary_dir("up-to-date");
    RUN(a_complete_build_answers_the_next_run);
    RUN(an_edited_input_or_pipeline_is_not_answered);
    RUN(another_environment_is_another_question);
    RUN(a_removed_target_or_a_cut_record_answers_nothing);
    RUN(a_locked_run_removes_the_record);
    RUN(a_pipeline_with_a_wildcard_gets_no_record);
    ft_remove_tree(temporary_dir);
    free(temporary_dir);
    return check_done();
}
