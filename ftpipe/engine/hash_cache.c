/* hash_cache: the stat that keys it. */
#include "ftpipe/engine/hash_cache.h"

#include <sys/stat.h>

#include "ftpipe/base/error.h"

int ft_file_stat_read(const char *path, ft_file_stat *stat)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return ft_error_errno("cannot stat %s", path);
    stat->device = (uint64_t)st.st_dev;
    stat->inode = (uint64_t)st.st_ino;
    stat->size_bytes = (uint64_t)st.st_size;
    stat->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    return 0;
}
