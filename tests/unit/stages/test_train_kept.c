/* train_kept: save_total_limit keeps the newest checkpoint-N folders by step
 * (checkpoint-10 after checkpoint-9), leaving other names alone; linking makes
 * the output's folders of hard links and leaves the kept ones whole. */
#include <sys/stat.h>

#include "check.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/stages/train_kept.h"

static char root[] = "/tmp/ftpipe-train-kept.XXXXXX";

static void make_checkpoint(const char *dir, const char *name)
{
    char *folder = ft_path_join(dir, name), *file = ft_path_join(folder, "trainer_state.json");
    CHECK_INT(ft_mkdir_p(folder), 0);
    CHECK_INT(ft_write_file_atomic(file, name, strlen(name)), 0);
    free(file);
    free(folder);
}

static bool exists(const char *dir, const char *name)
{
    char *path = ft_path_join(dir, name);
    bool found = ft_path_exists(path);
    free(path);
    return found;
}

TEST(prunes_all_but_the_newest_by_step)
{
    char *dir = ft_path_join(root, "prune");
    const char *names[] = {"checkpoint-9", "checkpoint-10", "checkpoint-2", "checkpoint-x", "checkpoint-4.tmp"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        make_checkpoint(dir, names[i]);
    CHECK_INT(ft_train_kept_prune(dir, 0), 0); /* 0: keep all */
    CHECK(exists(dir, "checkpoint-2"));
    CHECK_INT(ft_train_kept_prune(dir, 2), 0);
    CHECK(!exists(dir, "checkpoint-2") && exists(dir, "checkpoint-9") && exists(dir, "checkpoint-10"));
    CHECK(exists(dir, "checkpoint-x") && exists(dir, "checkpoint-4.tmp"));
    char *missing = ft_path_join(root, "none");
    CHECK_INT(ft_train_kept_prune(missing, 1), 0);
    free(missing);
    free(dir);
}

TEST(links_the_kept_folders_into_the_output)
{
    char *dir = ft_path_join(root, "kept"), *out = ft_path_join(root, "out");
    make_checkpoint(dir, "checkpoint-3");
    make_checkpoint(dir, "checkpoint-6");
    CHECK_INT(ft_mkdir_p(out), 0);
    CHECK_INT(ft_train_kept_link(dir, out), 0);
    char *from = ft_path_join(dir, "checkpoint-6/trainer_state.json");
    char *to = ft_path_join(out, "checkpoint-6/trainer_state.json");
    struct stat a, b;
    CHECK(stat(from, &a) == 0 && stat(to, &b) == 0 && a.st_ino == b.st_ino && a.st_nlink == 2);
    CHECK(exists(out, "checkpoint-3/trainer_state.json") && exists(dir, "checkpoint-3/trainer_state.json"));
    char *empty = ft_path_join(root, "none");
    CHECK_INT(ft_train_kept_link(empty, out), 0); /* nothing kept: nothing to link */
    free(empty);
    free(from);
    free(to);
    free(dir);
    free(out);
}

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    RUN(prunes_all_but_the_newest_by_step);
    RUN(links_the_kept_folders_into_the_output);
    ft_remove_tree(root);
    return check_done();
}
