/* archive_extract: unpacks an archive (tar, tar.gz, tar.bz2, tar.xz, tar.zst, zip)
 * into a folder, refusing anything that would write outside it or fill the disk.
 *
 * Refused, with the entry and the archive named: absolute paths, ".." components,
 * symbolic links that resolve outside the folder (through other links of the
 * archive too), hard links to paths not extracted before them, devices, fifos and
 * sockets, and archives whose entries (by declared or by actual size) add up to
 * more than the size limit. Symbolic links are created last, after every file, so
 * no write can pass through one. Files keep their permission bits, less setuid,
 * setgid and sticky and plus the owner's read and write; folders are 0755. */
#ifndef FTPIPE_ARCHIVE_EXTRACT_H
#define FTPIPE_ARCHIVE_EXTRACT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t max_total_bytes; /* the entries' sizes may add up to this much at most */
    int strip_components;     /* leading path parts dropped, as tar --strip-components */
    /* Called often (may be NULL) with the archive's bytes read so far and its
     * size; returning true stops the extraction, which then fails. */
    bool (*progress)(void *context, uint64_t read_bytes, uint64_t archive_bytes);
    void *progress_context;
} ft_extract_options;

typedef struct {
    size_t n_files;
    size_t n_dirs;
    size_t n_links; /* symbolic and hard */
    uint64_t total_bytes;
} ft_extract_summary;

/* Unpacks archive_path into destination, a folder that must be absent or empty
 * (created if absent). On failure destination may hold part of the archive: the
 * caller removes it. */
int ft_archive_extract(const char *archive_path, const char *destination, const ft_extract_options *options,
                       ft_extract_summary *out);

#endif
