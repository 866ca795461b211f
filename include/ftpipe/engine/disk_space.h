/* disk_space: tells a stage that failed for want of disk space from any other
 * failure, so that the message names the full file system instead of a bare
 * exit status (the stage's own log may be empty: it could not be written). */
#ifndef FTPIPE_DISK_SPACE_H
#define FTPIPE_DISK_SPACE_H

/* "no space left on MOUNT" or "disk quota exceeded on MOUNT" when the file system
 * of work_dir is full now, or the stage's error text or the tail of its log says
 * so (ENOSPC, EDQUOT); NULL otherwise. Caller frees. */
char *ft_disk_space_failure(const char *work_dir, const char *log_path, const char *error_text);

#endif
