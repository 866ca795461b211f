/* archive_create: a folder's files packed into one tar archive with libarchive,
 * compressed with zstd or gzip. The entries are the files' names (no leading
 * folder), in name order, with mode 0644, owner 0 and time 0, so the same files
 * always make the same bytes. */
#ifndef FTPIPE_ARCHIVE_CREATE_H
#define FTPIPE_ARCHIVE_CREATE_H

typedef enum {
    FT_ARCHIVE_TAR_ZSTD,
    FT_ARCHIVE_TAR_GZIP,
} ft_archive_format;

/* Packs the regular files directly in dir (subfolders are an error) into
 * archive_path, written as archive_path.tmp.PID and renamed. */
int ft_archive_create(const char *dir, const char *archive_path, ft_archive_format format);

#endif
