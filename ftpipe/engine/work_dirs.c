/* work_dirs: work folders given, reused and removed. */
#include "ftpipe/engine/work_dirs.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

struct ft_work_dirs {
    char *state_dir;
    char **spares;
    size_t n_spares, max_spares;
    size_t serial;
    char **finished; /* folders with more than out/, removed at the next commit */
    size_t n_finished;
};

ft_work_dirs *ft_work_dirs_new(const char *state_dir, size_t max_spares)
{
    ft_work_dirs *dirs = ft_xcalloc(1, sizeof *dirs);
    dirs->state_dir = ft_xstrdup(state_dir);
    dirs->max_spares = max_spares;
    dirs->spares = ft_xcalloc(max_spares + 1, sizeof *dirs->spares);
    return dirs;
}

static bool holds_only_empty_out(const char *work_dir)
{
    char *out_dir = ft_path_join(work_dir, "out");
    const char *folders[] = {work_dir, out_dir};
    bool only = true;
    for (int d = 0; d < 2 && only; d++) {
        DIR *dir = opendir(folders[d]);
        if (!dir) {
            only = false;
            break;
        }
        struct dirent *entry;
        while (only && (entry = readdir(dir)))
            if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0)
                only = d == 0 && strcmp(entry->d_name, "out") == 0;
        closedir(dir);
    }
    free(out_dir);
    return only;
}

int ft_work_dirs_prepare(ft_work_dirs *dirs, const char *work_dir)
{
    if (dirs->n_spares > 0 && rename(dirs->spares[dirs->n_spares - 1], work_dir) == 0) {
        free(dirs->spares[--dirs->n_spares]);
        return 0;
    }
    char *out_dir = ft_path_join(work_dir, "out");
    /* The work folder is kept for resuming; out/ only ever holds a complete result. */
    int result = ft_remove_tree(out_dir);
    if (result == 0)
        result = ft_mkdir_p(out_dir);
    free(out_dir);
    return result;
}

void ft_work_dirs_retire(ft_work_dirs *dirs, char *work_dir)
{
    if (!holds_only_empty_out(work_dir)) {
        dirs->finished = ft_xrealloc(dirs->finished, (dirs->n_finished + 1) * sizeof *dirs->finished);
        dirs->finished[dirs->n_finished++] = work_dir;
        return;
    }
    if (dirs->n_spares < dirs->max_spares) {
        char *spare = ft_xasprintf("%s/work/spare-%ld-%zu", dirs->state_dir, (long)getpid(), dirs->serial++);
        if (rename(work_dir, spare) == 0) {
            dirs->spares[dirs->n_spares++] = spare;
            free(work_dir);
            return;
        }
        free(spare);
    }
    ft_remove_tree(work_dir);
    free(work_dir);
}

void ft_work_dirs_committed(ft_work_dirs *dirs, bool committed)
{
    for (size_t i = 0; i < dirs->n_finished; i++) {
        if (committed)
            ft_remove_tree(dirs->finished[i]);
        free(dirs->finished[i]);
    }
    dirs->n_finished = 0;
}

void ft_work_dirs_free(ft_work_dirs *dirs)
{
    if (!dirs)
        return;
    for (size_t i = 0; i < dirs->n_spares; i++) {
        ft_remove_tree(dirs->spares[i]);
        free(dirs->spares[i]);
    }
    for (size_t i = 0; i < dirs->n_finished; i++)
        free(dirs->finished[i]);
    free(dirs->spares);
    free(dirs->finished);
    free(dirs->state_dir);
    free(dirs);
}
