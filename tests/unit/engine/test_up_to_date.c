/* Tests of up_to_date: a complete build leaves a record that answers the next run
 * with the same question while nothing it names changed; an edited input or
 * pipeline, another environment, a cut record or a locked run end that, and a
 * pipeline with a wildcard gets no record. The record keeps each stage's last run
 * for status, and its many stat lines, checked on several threads, see a change
 * wherever it is. A pipeline file settled before the build is answered by its
 * stat, unread. The stage kind is this test's own
 * `shell`, which copies its first input, under the fixture's shell rules. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "copying_shell.h"
#include "fixtures.h"
#include "ftpipe/base/hash.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/engine/session.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/engine/up_to_date.h"
#include "ftpipe/engine/workspace.h"

const char *const ft_builtin_rule_files[][2] = {FIXTURE_COMMON_AND_SHELL_RULES, {NULL, NULL}};

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

TEST(the_record_keeps_each_stages_last_run)
{
    char *dir = workspace("last-run", NULL);
    CHECK_INT(build(dir), 0);
    ft_invocation invocation = invocation_in(dir);
    char question[FT_HASH_HEX_LENGTH + 1];
    ft_up_to_date_question(&invocation, question);
    free(invocation.pipeline_path);
    ft_up_to_date_answer answer;
    CHECK_INT(ft_up_to_date_check(dir, question, true, &answer), 1);
    CHECK_INT(answer.n_stages, 1);
    CHECK_INT(answer.last_runs[0].id, 1);
    CHECK_INT(answer.last_runs[0].status, FT_RUN_DONE);
    CHECK(answer.last_runs[0].start_ms > 0 && answer.last_runs[0].end_ms >= answer.last_runs[0].start_ms);
    ft_up_to_date_answer_free(&answer);
    free(dir);
}

/* The bytes this process has read with read() so far (/proc/self/io's rchar). */
static unsigned long long bytes_read(void)
{
    FILE *io = fopen("/proc/self/io", "r");
    unsigned long long chars = 0;
    CHECK(io != NULL);
    if (io) {
        CHECK_INT(fscanf(io, "rchar: %llu", &chars), 1);
        fclose(io);
    }
    return chars;
}

static void set_mtime_seconds_ago(const char *dir, const char *name, int seconds)
{
    char *path = ft_path_join(dir, name);
    struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = time(NULL) - seconds}};
    CHECK_INT(utimensat(AT_FDCWD, path, times, 0), 0);
    free(path);
}

/* A pipeline file written more than a second before the build is answered by
 * its stat, unread; touched, it is read and hashed, and its content still
 * answers; one written just before the build is hashed on every check. */
TEST(a_settled_pipeline_file_is_answered_by_its_stat)
{
    ft_strbuf pipeline;
    ft_strbuf_init(&pipeline);
    ft_strbuf_puts(&pipeline, "out.txt: shell in.txt\n\trun = cp $< $@\n");
    while (pipeline.length < 256 * 1024)
        ft_strbuf_puts(&pipeline, "# a long comment, so that reading this file shows in the counter\n");
    char *dir = workspace("settled", pipeline.data);
    set_mtime_seconds_ago(dir, "Ftpipe", 10);
    CHECK_INT(build(dir), 0);
    size_t n = 0;
    unsigned long long before = bytes_read();
    CHECK(answered(dir, &n));
    CHECK(bytes_read() - before < pipeline.length);
    set_mtime_seconds_ago(dir, "Ftpipe", 5); /* touched, not changed */
    before = bytes_read();
    CHECK(answered(dir, &n));
    CHECK(bytes_read() - before >= pipeline.length);
    fixture_write_file(dir, "Ftpipe", pipeline.data, 0); /* written just now */
    CHECK_INT(build(dir), 0);
    before = bytes_read();
    CHECK(answered(dir, &n));
    CHECK(bytes_read() - before >= pipeline.length);
    ft_strbuf_free(&pipeline);
    free(dir);
}

TEST(a_record_of_another_version_answers_nothing)
{
    char *dir = workspace("version", NULL);
    size_t n = 0;
    CHECK_INT(build(dir), 0);
    CHECK(answered(dir, &n));
    char *record = ft_path_join(dir, ".ftpipe/up-to-date");
    char *text = NULL;
    CHECK_INT(ft_read_file(record, &text, NULL), 0);
    char *version = strstr(text, " 4\n");
    CHECK(version != NULL);
    if (version)
        version[1] = '3';
    char *state_dir = ft_path_join(dir, ".ftpipe");
    fixture_write_file(state_dir, "up-to-date", text, 0);
    CHECK(!answered(dir, &n));
    free(state_dir);
    free(text);
    free(record);
    free(dir);
}

/* A record of N_FILES stat lines, written as a build writes them: more lines
 * than one thread checks alone. */
#define N_FILES 3000

static void write_stat_record(const char *dir, const char *question)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    ft_strbuf_printf(&text, "ftpipe up-to-date 4\nquestion %s\n", question);
    for (int i = 0; i < N_FILES; i++) {
        char *path = ft_xasprintf("%s/in/%d.txt", dir, i);
        struct stat st;
        CHECK_INT(lstat(path, &st), 0);
        ft_strbuf_printf(&text, "%016llx %016llx %016llx %016llx in/%d.txt\n", (unsigned long long)st.st_dev,
                         (unsigned long long)st.st_ino, (unsigned long long)st.st_size,
                         (unsigned long long)st.st_mtim.tv_sec * 1000000000ull + (unsigned long long)st.st_mtim.tv_nsec,
                         i);
        free(path);
    }
    ft_strbuf_puts(&text, "end\n");
    char *state_dir = ft_path_join(dir, ".ftpipe");
    fixture_write_file(state_dir, "up-to-date", text.data, 0);
    free(state_dir);
    ft_strbuf_free(&text);
}

TEST(a_change_anywhere_among_many_paths_is_seen)
{
    char *dir = workspace("many", NULL);
    char *in_dir = ft_path_join(dir, "in");
    for (int i = 0; i < N_FILES; i++) {
        char name[32];
        snprintf(name, sizeof name, "%d.txt", i);
        fixture_write_file(in_dir, name, "x\n", 0);
    }
    ft_invocation invocation = invocation_in(dir);
    char question[FT_HASH_HEX_LENGTH + 1];
    ft_up_to_date_question(&invocation, question);
    free(invocation.pipeline_path);
    write_stat_record(dir, question);
    ft_up_to_date_answer answer;
    CHECK_INT(ft_up_to_date_check(dir, question, false, &answer), 1);
    ft_up_to_date_answer_free(&answer);
    const int changed[] = {0, 1234, N_FILES - 1};
    for (size_t c = 0; c < sizeof changed / sizeof *changed; c++) {
        char name[32];
        snprintf(name, sizeof name, "%d.txt", changed[c]);
        char *path = ft_path_join(in_dir, name);
        struct stat before;
        CHECK_INT(lstat(path, &before), 0);
        struct timespec later[2] = {before.st_atim, before.st_mtim};
        later[1].tv_sec += 1; /* same size, another mtime: what an edit in place leaves */
        CHECK_INT(utimensat(AT_FDCWD, path, later, AT_SYMLINK_NOFOLLOW), 0);
        CHECK_INT(ft_up_to_date_check(dir, question, false, &answer), 0);
        struct timespec back[2] = {before.st_atim, before.st_mtim};
        CHECK_INT(utimensat(AT_FDCWD, path, back, AT_SYMLINK_NOFOLLOW), 0);
        CHECK_INT(ft_up_to_date_check(dir, question, false, &answer), 1);
        ft_up_to_date_answer_free(&answer);
        free(path);
    }
    char *removed = ft_path_join(in_dir, "2999.txt");
    CHECK_INT(unlink(removed), 0);
    CHECK_INT(ft_up_to_date_check(dir, question, false, &answer), 0);
    free(removed);
    free(in_dir);
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
    RUN(the_record_keeps_each_stages_last_run);
    RUN(a_change_anywhere_among_many_paths_is_seen);
    RUN(a_pipeline_with_a_wildcard_gets_no_record);
    RUN(a_settled_pipeline_file_is_answered_by_its_stat);
    RUN(a_record_of_another_version_answers_nothing);
    ft_remove_tree(temporary_dir);
    free(temporary_dir);
    return check_done();
}
