/* Tests of status_lines: a stage's status line (target, kind and action in
 * columns, then the reason), its last run under it (local start time, how it
 * ended, how long it took), names with control bytes escaped, and each target's
 * newest run read from the state database. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/engine/status_lines.h"

/* What ft_status_print_line prints for these, in UTC. */
static char *printed(const char *target, const char *action, const char *reason, const ft_run_record *last)
{
    fflush(stdout);
    int saved_stdout = dup(1);
    FILE *captured = tmpfile();
    dup2(fileno(captured), 1);
    ft_status_print_line(target, "shell", action, reason, last);
    fflush(stdout);
    dup2(saved_stdout, 1);
    close(saved_stdout);
    char text[4096] = {0};
    rewind(captured);
    size_t n = fread(text, 1, sizeof text - 1, captured);
    fclose(captured);
    return strndup(text, n);
}

/* 2023-11-14 22:13:20 UTC */
#define START_MS 1700000000000LL

TEST(a_stage_line_in_columns_then_its_last_run)
{
    ft_run_record last = {.id = 1, .start_ms = START_MS, .end_ms = START_MS + 1500, .status = FT_RUN_DONE};
    char *text = printed("out.txt", "up to date", "", &last);
    CHECK_STR(text, "out.txt                          shell    up to date \n"
                    "    last run 2023-11-14 22:13:20: done in 1.5 s\n");
    free(text);
    /* another duration and start second: nothing formatted before is reused */
    last.start_ms = START_MS + 61000;
    last.end_ms = last.start_ms + 2600;
    last.status = FT_RUN_FAILED;
    text = printed("out.txt", "run", "input in.txt changed", &last);
    CHECK_STR(text, "out.txt                          shell    run        input in.txt changed\n"
                    "    last run 2023-11-14 22:14:21: failed in 2.6 s\n");
    free(text);
}

TEST(a_running_run_has_no_duration_and_a_never_run_stage_no_second_line)
{
    ft_run_record last = {.id = 1, .start_ms = START_MS, .end_ms = 0, .status = FT_RUN_RUNNING};
    char *text = printed("a", "run", "new: never built", &last);
    CHECK_STR(text, "a                                shell    run        new: never built\n"
                    "    last run 2023-11-14 22:13:20: running (or killed)\n");
    free(text);
    text = printed("a", "run", "new: never built", NULL);
    CHECK_STR(text, "a                                shell    run        new: never built\n");
    free(text);
}

TEST(a_long_or_hostile_name_is_printed_whole_and_escaped)
{
    char *text = printed("models/a_name_longer_than_the_column_is_wide", "up to date", "", NULL);
    CHECK_STR(text, "models/a_name_longer_than_the_column_is_wide shell    up to date \n");
    free(text);
    text = printed("bad\x1b[2Jname", "up to date", "", NULL);
    CHECK_STR(text, "bad\\x1b[2Jname                   shell    up to date \n");
    free(text);
}

TEST(the_newest_run_of_each_target)
{
    char *root = fixture_temporary_dir("status-lines");
    ft_state *state;
    CHECK_INT(ft_state_open(root, &state), 0);
    const char *targets[] = {"a", "b", "a"};
    for (int i = 0; i < 3; i++) {
        ft_run_record run = {.target = (char *)targets[i], .kind = "shell", .kind_version = 1,
                             .start_ms = START_MS + i * 1000};
        snprintf(run.key, sizeof run.key, "%032d", i);
        int64_t id;
        CHECK_INT(ft_state_run_start(state, &run, &id), 0);
        CHECK_INT(ft_state_run_finish(state, id, FT_RUN_DONE, 0, "", NULL), 0);
    }
    ft_last_runs runs;
    CHECK_INT(ft_last_runs_load(state, &runs), 0);
    CHECK_INT(runs.n_runs, 2);
    const ft_run_record *a = ft_last_run_of(&runs, "a"), *b = ft_last_run_of(&runs, "b");
    CHECK(a && a->id == 3 && a->start_ms == START_MS + 2000 && a->status == FT_RUN_DONE);
    CHECK(b && b->id == 2);
    CHECK(ft_last_run_of(&runs, "c") == NULL);
    ft_last_runs_free(&runs);
    ft_state_close(state);
    ft_remove_tree(root);
    free(root);
}

int main(void)
{
    setenv("TZ", "UTC", 1);
    tzset();
    RUN(a_stage_line_in_columns_then_its_last_run);
    RUN(a_running_run_has_no_duration_and_a_never_run_stage_no_second_line);
    RUN(a_long_or_hostile_name_is_printed_whole_and_escaped);
    RUN(the_newest_run_of_each_target);
    return check_done();
}
