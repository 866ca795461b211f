/* train_kept: listing, pruning and linking the kept checkpoint-N folders. */
#include "ftpipe/stages/train_kept.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

/* "checkpoint-N" -> N; -1 for other names. */
static int64_t kept_step(const char *name)
{
    const char *digits = strncmp(name, "checkpoint-", 11) == 0 ? name + 11 : "";
    if (!*digits || strspn(digits, "0123456789") != strlen(digits) || strlen(digits) > 18)
        return -1;
    return strtoll(digits, NULL, 10);
}

static int compare_steps(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The steps of the checkpoint-N folders in dir, ascending. */
static int list_kept(const char *dir, int64_t **steps, size_t *count)
{
    *steps = NULL;
    *count = 0;
    DIR *folder = opendir(dir);
    if (!folder)
        return errno == ENOENT ? 0 : ft_error_errno("cannot read %s", dir);
    size_t capacity = 0;
    for (struct dirent *entry; (entry = readdir(folder));) {
        int64_t step = kept_step(entry->d_name);
        if (step < 0)
            continue;
        ft_grow((void **)steps, &capacity, *count + 1, sizeof **steps);
        (*steps)[(*count)++] = step;
    }
    closedir(folder);
    if (*count > 1)
        qsort(*steps, *count, sizeof **steps, compare_steps);
    return 0;
}

int ft_train_kept_link(const char *dir, const char *out_dir)
{
    int64_t *steps = NULL;
    size_t count = 0;
    int status = list_kept(dir, &steps, &count);
    for (size_t i = 0; status == 0 && i < count; i++) {
        char *name = ft_xasprintf("checkpoint-%lld", (long long)steps[i]);
        char *from_dir = ft_path_join(dir, name), *to_dir = ft_path_join(out_dir, name);
        DIR *folder = opendir(from_dir);
        status = folder ? ft_mkdir_p(to_dir) : ft_error_errno("cannot read %s", from_dir);
        for (struct dirent *entry; status == 0 && (entry = readdir(folder));) {
            if (entry->d_name[0] == '.')
                continue;
            char *from = ft_path_join(from_dir, entry->d_name), *to = ft_path_join(to_dir, entry->d_name);
            if (link(from, to) != 0)
                status = ft_error_errno("cannot link %s to %s", from, to);
            free(from);
            free(to);
        }
        if (folder)
            closedir(folder);
        free(name);
        free(from_dir);
        free(to_dir);
    }
    free(steps);
    return status;
}

int ft_train_kept_prune(const char *dir, int keep_newest)
{
    if (keep_newest <= 0)
        return 0;
    int64_t *steps = NULL;
    size_t count = 0;
    int status = list_kept(dir, &steps, &count);
    for (size_t i = 0; status == 0 && i + (size_t)keep_newest < count; i++) {
        char *name = ft_xasprintf("checkpoint-%lld", (long long)steps[i]);
        char *path = ft_path_join(dir, name);
        status = ft_remove_tree(path);
        free(path);
        free(name);
    }
    free(steps);
    return status;
}
