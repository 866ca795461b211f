/* Tests of build: how a stage's end is judged. Kinds made for the purpose are
 * handed to the engine in their own table, as main hands it the built-in ones:
 * a kind that exits 2 for its own reasons fails (only a stage that says it was
 * cancelled is resumable), a cancelled stage says so, a state write that fails
 * (a full disk) fails the build instead of losing a record silently (and a target
 * left unrecorded is taken back), and a stage whose report to the engine is lost
 * fails. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/session.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/engine/stage_runtime.h"
#include "ftpipe/engine/state.h"

static char *temporary_dir;

static int write_output(ft_stage *stage)
{
    return ft_write_file_atomic(ft_stage_output_path(stage), "done\n", 5);
}

/* Like a library that calls exit(2) on an error of its own. */
static int run_exits_2(ft_stage *stage)
{
    (void)stage;
    exit(2);
}

static int run_cancelled(ft_stage *stage)
{
    raise(SIGTERM); /* as `kill` would stop the stage's process */
    return ft_stage_cancelled(stage) ? ft_stage_fail(stage, "stopped at step 3") : write_output(stage);
}

static int run_with_metric(ft_stage *stage)
{
    ft_stage_metric(stage, 1, "loss", 2.5);
    return write_output(stage);
}

/* Its line to the engine cannot be written, as on a broken pipe. */
static int run_unheard(ft_stage *stage)
{
    close(ft_stage_report_fd(stage));
    ft_stage_metric(stage, 1, "loss", 2.5);
    return write_output(stage);
}

static const ft_stage_kind exits_2 = {.name = "exits2", .version = 1, .run = run_exits_2};
static const ft_stage_kind cancelled = {.name = "cancelled", .version = 1, .run = run_cancelled};
static const ft_stage_kind with_metric = {.name = "metric", .version = 1, .run = run_with_metric};
static const ft_stage_kind unheard = {.name = "unheard", .version = 1, .run = run_unheard};
static const ft_stage_kind *const kinds[] = {&exits_2, &cancelled, &with_metric, &unheard, NULL};

/* A workspace with rules for the three kinds and a one-stage pipeline of `kind`;
 * runs it and returns ftpipe's exit status. */
static int run_one_stage(const char *name, const char *kind, char **workspace)
{
    *workspace = ft_path_join(temporary_dir, name);
    CHECK_INT(ft_mkdir_p(*workspace), 0);
    char *rules = ft_path_join(temporary_dir, "rules");
    CHECK_INT(ft_mkdir_p(rules), 0);
    const char *names[] = {"exits2", "cancelled", "metric", "unheard"};
    for (size_t i = 0; i < 4; i++) {
        char *path = ft_xasprintf("%s/%s.ft", rules, names[i]);
        char *text = ft_xasprintf(".kind %s\n.doc A kind for tests.\nnote string \"\" key A note.\n", names[i]);
        CHECK_INT(ft_write_file_atomic(path, text, strlen(text)), 0);
        free(text);
        free(path);
    }
    setenv("FTPIPE_RULES", rules, 1);
    char *pipeline = ft_xasprintf("out.txt: %s\n", kind);
    char *pipeline_path = ft_path_join(*workspace, "Ftpipe");
    CHECK_INT(ft_write_file_atomic(pipeline_path, pipeline, strlen(pipeline)), 0);
    ft_invocation invocation = {.kinds = kinds, .pipeline_path = pipeline_path, .jobs = 1};
    fflush(stdout);
    int status = ft_run_pipeline(&invocation);
    free(pipeline);
    free(pipeline_path);
    free(rules);
    return status;
}

static ft_run_status last_run_status(const char *workspace)
{
    char *state_dir = ft_path_join(workspace, ".ftpipe");
    ft_state *state = NULL;
    ft_run_record run = {0};
    ft_run_status status = FT_RUN_RUNNING;
    CHECK_INT(ft_state_open(state_dir, &state), 0);
    if (state && ft_state_last_run(state, "out.txt", -1, &run) == 1) {
        status = run.status;
        ft_run_record_free(&run);
    }
    ft_state_close(state);
    free(state_dir);
    return status;
}

TEST(a_stage_that_exits_2_failed_and_was_not_cancelled)
{
    char *workspace;
    CHECK_INT(run_one_stage("exits2", "exits2", &workspace), 1);
    CHECK_STR(ft_error_message(), "stage out.txt failed (the FAILED line above says why)");
    CHECK_INT(last_run_status(workspace), FT_RUN_FAILED);
    free(workspace);
}

TEST(a_cancelled_stage_says_so_and_resumes)
{
    char *workspace;
    fflush(stdout);
    int saved_stdout = dup(1);
    FILE *captured = tmpfile();
    dup2(fileno(captured), 1);
    int status = run_one_stage("cancelled", "cancelled", &workspace);
    fflush(stdout);
    dup2(saved_stdout, 1);
    close(saved_stdout);
    char printed[4096] = {0};
    rewind(captured);
    size_t n = fread(printed, 1, sizeof printed - 1, captured);
    printed[n] = '\0';
    fclose(captured);
    CHECK_INT(status, 1);
    CHECK(strstr(printed, "stopped  out.txt after ") != NULL);
    CHECK(strstr(printed, "ftpipe: 0 run, 0 restored, 0 up to date, 1 failed") != NULL); /* not "nothing to do" */
    CHECK_STR(ft_error_message(), "stage out.txt was stopped before it finished; run again to resume it");
    CHECK_INT(last_run_status(workspace), FT_RUN_CANCELLED);
    free(workspace);
}

TEST(a_state_write_that_fails_fails_the_build)
{
    char *workspace;
    ft_state_fail_one_write_after(1); /* the run's start is recorded; its metric is not */
    CHECK_INT(run_one_stage("full-disk", "metric", &workspace), 1);
    ft_state_fail_one_write_after((size_t)-1);
    CHECK(strstr(ft_error_message(), "cannot record a metric in the state database") != NULL);
    CHECK(strstr(ft_error_message(), "the run history and metrics of this build may be incomplete") != NULL);
    CHECK_INT(last_run_status(workspace), FT_RUN_DONE); /* the output itself is fine */
    free(workspace);
}

/* Placed but not recorded, the target would pass for someone else's on the next run. */
TEST(a_target_whose_record_fails_is_taken_back)
{
    char *workspace;
    ft_state_fail_one_write_after(2); /* the run's start and its metric are recorded; the target is not */
    CHECK_INT(run_one_stage("unrecorded", "metric", &workspace), 1);
    ft_state_fail_one_write_after((size_t)-1);
    char *target = ft_path_join(workspace, "out.txt");
    CHECK(!ft_path_exists(target));
    free(workspace);
    CHECK_INT(run_one_stage("unrecorded", "metric", &workspace), 0);
    CHECK(ft_path_exists(target));
    free(target);
    free(workspace);
}

TEST(a_stage_whose_report_is_lost_fails)
{
    char *workspace;
    CHECK_INT(run_one_stage("unheard", "unheard", &workspace), 1);
    CHECK_INT(last_run_status(workspace), FT_RUN_FAILED);
    /* The engine heard nothing; the stage's log keeps the reason. */
    char *command = ft_xasprintf("cat %s/.ftpipe/work/*/log", workspace);
    FILE *out = popen(command, "r");
    char text[4096] = "";
    size_t n = out ? fread(text, 1, sizeof text - 1, out) : 0;
    text[n] = '\0';
    if (out)
        pclose(out);
    CHECK(strstr(text, "ftpipe: stage out.txt could not report to ftpipe (Bad file descriptor): its metrics or "
                       "summary did not all arrive; run again") != NULL);
    free(command);
    free(workspace);
}

int main(void)
{
    temporary_dir = fixture_temporary_dir("build");
    if (!temporary_dir)
        return 1;
    RUN(a_stage_that_exits_2_failed_and_was_not_cancelled);
    RUN(a_cancelled_stage_says_so_and_resumes);
    RUN(a_state_write_that_fails_fails_the_build);
    RUN(a_target_whose_record_fails_is_taken_back);
    RUN(a_stage_whose_report_is_lost_fails);
    ft_remove_tree(temporary_dir);
    return check_done();
}
