/* Tests of staging: a copy made once and found again, made again when emptied
 * or damaged, refused when it does not fit, and removed by gc. The staging
 * folder is a plain folder here (the checks do not depend on the file system)
 * except in the case that checks tmpfs detection under /dev/shm. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/transfer/staging.h"

#define KEY_ONE "11111111111111111111111111111111"
#define KEY_TWO "22222222222222222222222222222222"

static char *temporary_dir;
static char *source_dir; /* <tmp>/models/base: config.json (13 bytes), weights.bin (1000 bytes), tok/vocab.txt (4) */
static char *staging_dir;
static char *state_dir;
static char *user_dir;   /* <staging_dir>/ftpipe-<uid> */
static const char expected_marker[] = "ftpipe staged copy 1\nfiles 3\nfolders 1\nlinks 0\nbytes 1017\n";

static void make_fixture(void)
{
    source_dir = ft_path_join(temporary_dir, "models/base");
    staging_dir = ft_path_join(temporary_dir, "shm");
    state_dir = ft_path_join(temporary_dir, "ws/.ftpipe");
    char name[32];
    snprintf(name, sizeof name, "ftpipe-%lu", (unsigned long)geteuid());
    user_dir = ft_path_join(staging_dir, name);
    fixture_write_file(source_dir, "config.json", "{\"layers\":2}\n", 0);
    char weights[1001];
    memset(weights, 'w', 1000);
    weights[1000] = '\0';
    fixture_write_file(source_dir, "weights.bin", weights, 0);
    fixture_write_file(source_dir, "tok/vocab.txt", "a b\n", 0);
    CHECK_INT(ft_mkdir_p(staging_dir), 0);
    CHECK_INT(ft_mkdir_p(state_dir), 0);
}

static int progress_calls;
static bool count_progress(void *context, uint64_t copied_bytes, uint64_t total_bytes)
{
    progress_calls++;
    return false;
}

static ft_staging_request request_for(const char *key)
{
    return (ft_staging_request){.source = source_dir, .tmpfs_dir = staging_dir, .key = key, .state_dir = state_dir,
                                .min_free_bytes = 0, .transfers = 2, .verify = true, .progress = count_progress};
}

static char *expected_copy_path(const char *key)
{
    return ft_xasprintf("%s/%s/base", user_dir, key);
}

static char *read_text(const char *path)
{
    char *text = NULL;
    size_t length = 0;
    if (ft_read_file(path, &text, &length) != 0)
        return ft_xstrdup("(unreadable)");
    return text;
}

TEST(stages_a_folder)
{
    ft_staging_request request = request_for(KEY_ONE);
    ft_staging_result result;
    progress_calls = 0;
    CHECK_INT(ft_staging_stage(&request, &result), 0);
    CHECK_INT(result.outcome, FT_STAGING_COPIED);
    char *copy = expected_copy_path(KEY_ONE);
    CHECK_STR(result.copy_path, copy);
    CHECK_INT(result.source.n_files, 3);
    CHECK_INT(result.source.total_bytes, 13 + 1000 + 4);
    CHECK(result.free_bytes > 0);
    CHECK(progress_calls >= 2);
    char *vocab = ft_path_join(copy, "tok/vocab.txt");
    char *text = read_text(vocab);
    CHECK_STR(text, "a b\n");
    free(text);
    char *marker = ft_xasprintf("%s/%s/" FT_STAGING_MARKER_NAME, user_dir, KEY_ONE);
    text = read_text(marker);
    CHECK_STR(text, expected_marker);
    free(text);
    char *registry = ft_path_join(state_dir, "shm/" KEY_ONE);
    text = read_text(registry);
    char *expected = ft_xasprintf("%s/%s\n", user_dir, KEY_ONE);
    CHECK_STR(text, expected);
    CHECK_INT(ft_staging_copy_is_complete(copy), 1);
    struct stat st;
    CHECK_INT(stat(user_dir, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0700);
    free(expected);
    free(text);
    free(registry);
    free(marker);
    free(vocab);
    free(copy);
    ft_staging_result_free(&result);
}

TEST(a_second_run_copies_nothing)
{
    char *copy = expected_copy_path(KEY_ONE);
    char *config = ft_path_join(copy, "config.json");
    struct stat before, after;
    CHECK_INT(stat(config, &before), 0);
    ft_staging_request request = request_for(KEY_ONE);
    ft_staging_result result;
    progress_calls = 0;
    CHECK_INT(ft_staging_stage(&request, &result), 0);
    CHECK_INT(result.outcome, FT_STAGING_REUSED);
    CHECK_STR(result.copy_path, copy);
    CHECK_INT(progress_calls, 0);
    CHECK_INT(stat(config, &after), 0);
    CHECK_INT(after.st_ino, before.st_ino);
    ft_staging_result_free(&result);
    free(config);
    free(copy);
}

TEST(an_emptied_tmpfs_is_staged_again)
{
    CHECK_INT(ft_remove_tree(user_dir), 0); /* what a reboot does */
    char *copy = expected_copy_path(KEY_ONE);
    CHECK_INT(ft_staging_copy_is_complete(copy), 0);
    CHECK_STR(ft_error_message(), "");
    ft_staging_request request = request_for(KEY_ONE);
    ft_staging_result result;
    CHECK_INT(ft_staging_stage(&request, &result), 0);
    CHECK_INT(result.outcome, FT_STAGING_COPIED);
    CHECK_INT(ft_staging_copy_is_complete(copy), 1);
    ft_staging_result_free(&result);
    free(copy);
}

TEST(a_copy_that_lost_or_shrank_a_file_is_incomplete)
{
    char *copy = expected_copy_path(KEY_ONE);
    char *weights = ft_path_join(copy, "weights.bin");
    CHECK_INT(truncate(weights, 10), 0);
    CHECK_INT(ft_staging_copy_is_complete(copy), 0);
    ft_staging_request request = request_for(KEY_ONE);
    ft_staging_result result;
    CHECK_INT(ft_staging_stage(&request, &result), 0);
    CHECK_INT(result.outcome, FT_STAGING_COPIED);
    CHECK_INT(ft_staging_copy_is_complete(copy), 1);
    ft_staging_result_free(&result);
    CHECK_INT(unlink(weights), 0);
    CHECK_INT(ft_staging_copy_is_complete(copy), 0);
    CHECK_INT(ft_staging_stage(&request, &result), 0);
    CHECK_INT(result.outcome, FT_STAGING_COPIED);
    CHECK_INT(ft_staging_copy_is_complete(copy), 1);
    ft_staging_result_free(&result);
    free(weights);
    free(copy);
}

TEST(a_folder_that_is_no_staged_copy_is_not_complete)
{
    CHECK_INT(ft_staging_copy_is_complete(source_dir), 0);
    CHECK_INT(ft_staging_copy_is_complete("/nonexistent/ftpipe-0/abc/base"), 0);
    CHECK_STR(ft_error_message(), "");
}

TEST(does_not_fit_copies_nothing)
{
    ft_staging_request request = request_for(KEY_TWO);
    request.min_free_bytes = (uint64_t)1 << 60;
    ft_staging_result result;
    CHECK_INT(ft_staging_stage(&request, &result), 0);
    CHECK_INT(result.outcome, FT_STAGING_DOES_NOT_FIT);
    CHECK(result.copy_path == NULL);
    CHECK(result.free_bytes > 0);
    CHECK_INT(result.source.total_bytes, 1017);
    char *holder = ft_path_join(user_dir, KEY_TWO);
    CHECK(!ft_path_exists(holder));
    free(holder);
    ft_staging_result_free(&result);
}

TEST(a_missing_staging_folder_is_an_error)
{
    ft_staging_request request = request_for(KEY_TWO);
    request.tmpfs_dir = "/nonexistent/ramdisk";
    ft_staging_result result;
    CHECK_INT(ft_staging_stage(&request, &result), -1);
    CHECK_STR(ft_error_message(), "the staging folder /nonexistent/ramdisk does not exist: mount a tmpfs there, or "
                                  "choose another with dir = (/dev/shm is one on most Linux systems)");
}

TEST(another_users_folder_is_refused)
{
    if (geteuid() != 0) {
        SKIP("needs root to make another user's folder");
    }
    char *other = ft_path_join(temporary_dir, "other-shm");
    char *folder = ft_path_join(other, "ftpipe-0");
    CHECK_INT(ft_mkdir_p(folder), 0);
    CHECK_INT(chown(folder, 12345, 12345), 0);
    ft_staging_request request = request_for(KEY_TWO);
    request.tmpfs_dir = other;
    ft_staging_result result;
    CHECK_INT(ft_staging_stage(&request, &result), -1);
    char *expected = ft_xasprintf("%s is not a folder of this user's: remove it, or choose another staging folder "
                                  "with dir =", folder);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(folder);
    free(other);
}

TEST(partial_copies_of_dead_processes_are_removed)
{
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    CHECK_INT(waitpid(child, NULL, 0), child);
    char *dead = ft_xasprintf("%s/." KEY_ONE ".partial-%ld", user_dir, (long)child);
    char *live = ft_xasprintf("%s/." KEY_ONE ".partial-%ld", user_dir, (long)getppid());
    fixture_write_file(dead, "half.bin", "half", 0);
    fixture_write_file(live, "half.bin", "half", 0);
    char *holder = ft_path_join(user_dir, KEY_ONE);
    CHECK_INT(ft_remove_tree(holder), 0);
    free(holder);
    ft_staging_request request = request_for(KEY_ONE);
    ft_staging_result result;
    CHECK_INT(ft_staging_stage(&request, &result), 0);
    CHECK_INT(result.outcome, FT_STAGING_COPIED);
    CHECK(!ft_path_exists(dead));
    CHECK(ft_path_exists(live));
    CHECK_INT(ft_remove_tree(live), 0);
    ft_staging_result_free(&result);
    free(dead);
    free(live);
}

TEST(gc_removes_copies_no_target_needs)
{
    ft_staging_request request = request_for(KEY_TWO);
    ft_staging_result result;
    CHECK_INT(ft_staging_stage(&request, &result), 0);
    CHECK_INT(result.outcome, FT_STAGING_COPIED);
    ft_staging_result_free(&result);
    /* A damaged registry entry is forgotten, never followed. */
    char *victim = ft_path_join(temporary_dir, "victim");
    fixture_write_file(victim, "keep.txt", "mine", 0);
    char *bogus = ft_path_join(state_dir, "shm/33333333333333333333333333333333");
    char *bogus_text = ft_xasprintf("%s\n", victim);
    CHECK_INT(ft_write_file_atomic(bogus, bogus_text, strlen(bogus_text)), 0);

    const char *keep[] = {KEY_ONE};
    uint64_t freed = 0;
    size_t removed = 0;
    CHECK_INT(ft_staging_gc(state_dir, keep, 1, &freed, &removed), 0);
    CHECK_INT(removed, 1);
    CHECK_INT(freed, 1017 + strlen(expected_marker)); /* the copy and its marker */
    char *two = ft_path_join(user_dir, KEY_TWO);
    CHECK(!ft_path_exists(two));
    char *one = expected_copy_path(KEY_ONE);
    CHECK_INT(ft_staging_copy_is_complete(one), 1);
    char *registry_two = ft_path_join(state_dir, "shm/" KEY_TWO);
    CHECK(!ft_path_exists(registry_two));
    CHECK(!ft_path_exists(bogus));
    char *victim_file = ft_path_join(victim, "keep.txt");
    CHECK(ft_path_exists(victim_file));

    CHECK_INT(ft_staging_gc(state_dir, NULL, 0, &freed, &removed), 0);
    CHECK_INT(removed, 1);
    CHECK(!ft_path_exists(one));
    free(victim_file);
    free(registry_two);
    free(one);
    free(two);
    free(bogus_text);
    free(bogus);
    free(victim);
}

TEST(gc_without_a_registry_is_fine)
{
    char *empty_state = ft_path_join(temporary_dir, "fresh/.ftpipe");
    uint64_t freed = 1;
    size_t removed = 1;
    CHECK_INT(ft_staging_gc(empty_state, NULL, 0, &freed, &removed), 0);
    CHECK_INT(freed, 0);
    CHECK_INT(removed, 0);
    free(empty_state);
}

TEST(detects_a_tmpfs)
{
    char template[] = "/dev/shm/ftpipe-test-staging.XXXXXX";
    char *shm = mkdtemp(template);
    if (!shm) {
        SKIP("no /dev/shm here");
    }
    ft_staging_request request = request_for(KEY_ONE);
    request.tmpfs_dir = shm;
    ft_staging_result result;
    CHECK_INT(ft_staging_stage(&request, &result), 0);
    CHECK(result.on_tmpfs);
    ft_staging_result_free(&result);
    CHECK_INT(ft_remove_tree(shm), 0);
}

int main(void)
{
    temporary_dir = fixture_temporary_dir("staging");
    if (!temporary_dir)
        return 1;
    make_fixture();
    RUN(stages_a_folder);
    RUN(a_second_run_copies_nothing);
    RUN(an_emptied_tmpfs_is_staged_again);
    RUN(a_copy_that_lost_or_shrank_a_file_is_incomplete);
    RUN(a_folder_that_is_no_staged_copy_is_not_complete);
    RUN(does_not_fit_copies_nothing);
    RUN(a_missing_staging_folder_is_an_error);
    RUN(another_users_folder_is_refused);
    RUN(partial_copies_of_dead_processes_are_removed);
    RUN(gc_removes_copies_no_target_needs);
    RUN(gc_without_a_registry_is_fine);
    RUN(detects_a_tmpfs);
    ft_remove_tree(temporary_dir);
    free(source_dir);
    free(staging_dir);
    free(state_dir);
    free(user_dir);
    return check_done();
}
