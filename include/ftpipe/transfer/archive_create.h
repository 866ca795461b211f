/* archive_create: a folder's files packed into one tar archive with libarchive,
 * compressed with zstd or gzip. The entries are TOP/ and then TOP/NAME for each
 * file, in name order, so that unpacking makes one folder and spills nothing;
 * mode 0644 (0755 for TOP), owner 0 and time 0, so the same files always make
 * the same bytes. */
#ifndef FTPIPE_ARCHIVE_CREATE_H
#define FTPIPE_ARCHIVE_CREATE_H

typedef enum {
    FT_ARCHIVE_TAR_ZSTD,
    FT_ARCHIVE_TAR_GZIP,
} ft_archive_format;

/* Packs the regular files directly in dir (subfolders are an error) into
 * archive_path under the folder top, written as archive_path.tmp.PID and renamed. */
int ft_archive_create(const char *dir, const char *top, const char *archive_path, ft_archive_format format);

#endif
