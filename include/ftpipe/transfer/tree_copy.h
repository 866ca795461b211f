/* tree_copy: copies a folder (or one file) fast, for staging models and data
 * into a tmpfs.
 *
 * A pool of threads takes files from a queue, largest first; a file larger than
 * FT_TREE_COPY_RANGE_BYTES is cut into ranges of that size, copied by several
 * threads at once. Files and folders keep their permission bits; symbolic links
 * are recreated as they are (not followed). With verify, each range is hashed as
 * it is read from the source and again as read back from the copy, and the two
 * must agree. */
#ifndef FTPIPE_TREE_COPY_H
#define FTPIPE_TREE_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FT_TREE_COPY_RANGE_BYTES ((uint64_t)32 << 20)

typedef struct {
    size_t n_files;
    size_t n_dirs;   /* below the root */
    size_t n_links;
    uint64_t total_bytes; /* of the files */
} ft_tree_summary;

typedef struct {
    int threads; /* 0: one per core */
    bool verify;
    /* Called from the calling thread about ten times a second (may be NULL);
     * returning true stops the copy, which then fails. */
    bool (*progress)(void *context, uint64_t copied_bytes, uint64_t total_bytes);
    void *progress_context;
} ft_tree_copy_options;

/* Counts what a copy of source would hold, without reading any file. Sockets,
 * fifos and devices are errors. */
int ft_tree_measure(const char *source, ft_tree_summary *out);

/* Copies source (a folder, a file or a symbolic link) to destination, which must
 * not exist; its parent must. On failure destination may hold part of the
 * copy: the caller removes it. out (may be NULL) receives what was copied. */
int ft_tree_copy(const char *source, const char *destination, const ft_tree_copy_options *options,
                 ft_tree_summary *out);

#endif
