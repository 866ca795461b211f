/* Tests of work_dirs: a starting stage gets its folder with an empty out/ (what
 * else it holds is kept for resuming); an emptied finished folder is reused by the
 * next stage; one with more in it stays until its batch is committed; spares go
 * at the end. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/engine/work_dirs.h"

const char *const ft_builtin_rule_files[][2] = {{NULL, NULL}};

static char *state_dir;

static char *work(const char *key) { return ft_xasprintf("%s/work/%s", state_dir, key); }

static bool exists(const char *dir, const char *name)
{
    char *path = ft_path_join(dir, name);
    bool found = ft_path_exists(path);
    free(path);
    return found;
}

TEST(a_stage_gets_an_empty_out_and_keeps_what_it_resumes_from)
{
    ft_work_dirs *dirs = ft_work_dirs_new(state_dir, 2);
    char *a = work("a");
    CHECK_INT(ft_work_dirs_prepare(dirs, a), 0);
    CHECK(exists(a, "out"));
    fixture_write_file(a, "out/half.txt", "half", 0);
    fixture_write_file(a, "checkpoints/step-2/state.json", "{}", 0);
    CHECK_INT(ft_work_dirs_prepare(dirs, a), 0); /* the rerun */
    CHECK(exists(a, "out") && !exists(a, "out/half.txt"));
    CHECK(exists(a, "checkpoints/step-2/state.json"));
    ft_work_dirs_free(dirs);
    ft_remove_tree(a);
    free(a);
}

TEST(an_emptied_folder_is_the_next_stage_s)
{
    ft_work_dirs *dirs = ft_work_dirs_new(state_dir, 2);
    char *b = work("b"), *c = work("c");
    CHECK_INT(ft_work_dirs_prepare(dirs, b), 0);
    ft_work_dirs_retire(dirs, ft_xstrdup(b)); /* published: out/ is empty */
    CHECK(!ft_path_exists(b));
    CHECK_INT(ft_work_dirs_prepare(dirs, c), 0);
    CHECK(exists(c, "out"));
    char *work_root = ft_path_join(state_dir, "work");
    CHECK(!exists(work_root, "b"));
    ft_work_dirs_retire(dirs, ft_xstrdup(c));
    ft_work_dirs_free(dirs); /* removes the spare */
    CHECK(!exists(work_root, "c"));
    DIR *left = opendir(work_root);
    size_t n = 0;
    for (struct dirent *entry; left && (entry = readdir(left));)
        n += entry->d_name[0] != '.';
    if (left)
        closedir(left);
    CHECK_INT(n, 0);
    free(work_root);
    free(b);
    free(c);
}

TEST(a_folder_with_more_stays_until_its_batch_is_committed)
{
    ft_work_dirs *dirs = ft_work_dirs_new(state_dir, 2);
    char *d = work("d"), *e = work("e");
    CHECK_INT(ft_work_dirs_prepare(dirs, d), 0);
    fixture_write_file(d, "checkpoints/step-4/state.json", "{}", 0);
    ft_work_dirs_retire(dirs, ft_xstrdup(d));
    CHECK(exists(d, "checkpoints/step-4/state.json")); /* a kill now reruns d from it */
    ft_work_dirs_committed(dirs, true);
    CHECK(!ft_path_exists(d));
    CHECK_INT(ft_work_dirs_prepare(dirs, e), 0);
    fixture_write_file(e, "trainer_log.jsonl", "{}", 0);
    ft_work_dirs_retire(dirs, ft_xstrdup(e));
    ft_work_dirs_committed(dirs, false); /* a failed commit: its stage reruns, from this */
    CHECK(exists(e, "trainer_log.jsonl"));
    ft_work_dirs_free(dirs);
    ft_remove_tree(e);
    free(d);
    free(e);
}

int main(void)
{
    char *dir = fixture_temporary_dir("work-dirs");
    state_dir = ft_path_join(dir, ".ftpipe");
    RUN(a_stage_gets_an_empty_out_and_keeps_what_it_resumes_from);
    RUN(an_emptied_folder_is_the_next_stage_s);
    RUN(a_folder_with_more_stays_until_its_batch_is_committed);
    ft_remove_tree(dir);
    free(state_dir);
    free(dir);
    return check_done();
}
