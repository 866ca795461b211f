/* disk_space: recognises failures caused by a full disk or an exhausted quota. */
#include "ftpipe/engine/disk_space.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

/* Below this a file system counts as full: no stage can do useful work in it. */
#define FULL_BELOW_BYTES (1u << 20)
/* How much of a log's end is searched for the system's own words. */
#define LOG_TAIL_BYTES 16384

static bool says(const char *text, int error)
{
    return text && strstr(text, strerror(error));
}

static bool log_says(const char *log_path, int error)
{
    char *text = NULL;
    size_t length = 0;
    if (!log_path || ft_read_file(log_path, &text, &length) != 0)
        return false;
    bool found = says(length > LOG_TAIL_BYTES ? text + length - LOG_TAIL_BYTES : text, error);
    free(text);
    return found;
}

char *ft_disk_space_failure(const char *work_dir, const char *log_path, const char *error_text)
{
    uint64_t free_bytes = UINT64_MAX;
    const char *what = NULL;
    /* Full now, or full a moment ago (another failed stage's output has been freed since). */
    if ((ft_free_space_bytes(work_dir, &free_bytes) == 0 && free_bytes < FULL_BELOW_BYTES) ||
        says(error_text, ENOSPC) || log_says(log_path, ENOSPC))
        what = "no space left on";
    else if (says(error_text, EDQUOT) || log_says(log_path, EDQUOT))
        what = "disk quota exceeded on";
    if (!what)
        return NULL;
    char *mount = ft_mount_point(work_dir);
    char *reason = ft_xasprintf("%s %s", what, mount);
    free(mount);
    return reason;
}
