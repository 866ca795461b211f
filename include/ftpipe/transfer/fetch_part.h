/* fetch_part: one download in progress on disk, kept so that an interruption
 * costs only the bytes not yet written.
 *
 * DEST.part holds the file's bytes at their final offsets (preallocated when the
 * size is known); DEST.part.progress records which byte ranges of it are written
 * and synced, together with what they belong to (URL, size, validator: the
 * server's ETag or Last-Modified). Reopening with the same identity keeps those
 * ranges; anything else found there is discarded. The progress file is written
 * only after the data it describes is synced, so after a crash it may lag the
 * data but never runs ahead of it. */
#ifndef FTPIPE_FETCH_PART_H
#define FTPIPE_FETCH_PART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A set of half-open byte ranges [start, end), sorted, disjoint and merged. */
typedef struct {
    uint64_t start;
    uint64_t end;
} ft_byte_range;

typedef struct {
    ft_byte_range *items;
    size_t count;
    size_t capacity;
} ft_range_set;

void ft_range_set_add(ft_range_set *set, uint64_t start, uint64_t end);
uint64_t ft_range_set_bytes(const ft_range_set *set);
/* The parts of [0, size) that set lacks, appended to missing. */
void ft_range_set_missing(const ft_range_set *set, uint64_t size, ft_range_set *missing);
void ft_range_set_free(ft_range_set *set);

typedef struct {
    char *part_path;     /* DEST.part */
    char *progress_path; /* DEST.part.progress */
    char *url;
    int64_t size_bytes;  /* -1: unknown */
    char *validator;     /* NULL: none */
    bool resumable;      /* the server serves byte ranges: progress is recorded */
    int fd;              /* -1 when closed */
    ft_range_set done;   /* written and recorded */
} ft_part_file;

/* Allocated bytes of DEST.part left by an earlier run (0 when none), so that a
 * free-space check counts only what resuming still has to allocate. */
uint64_t ft_part_allocated_bytes(const char *destination);

/* Opens DEST.part for url, keeping an earlier run's ranges when its identity
 * matches and the server is resumable; preallocates size_bytes (when >= 0). */
int ft_part_open(ft_part_file *part, const char *destination, const char *url, int64_t size_bytes,
                 const char *validator, bool resumable);
/* Writes length bytes at offset (all of them, or an error). */
int ft_part_write(ft_part_file *part, const void *bytes, size_t length, uint64_t offset);
/* Syncs the data, then records done plus in_flight (prefixes written by
 * transfers still running; may be NULL) in the progress file. */
int ft_part_save(ft_part_file *part, const ft_range_set *in_flight);
/* Forgets the written bytes (a transfer that cannot resume starts again). */
int ft_part_restart(ft_part_file *part);
/* Syncs and closes DEST.part; the files stay until publish or discard. */
int ft_part_finish(ft_part_file *part);
/* Renames DEST.part to DEST and removes the progress file. */
int ft_part_publish(ft_part_file *part, const char *destination);
/* Removes DEST.part and its progress file (bad checksum, changed source). */
void ft_part_discard(ft_part_file *part);
/* Closes and frees, leaving the files for a later resume. */
void ft_part_close(ft_part_file *part);

#endif
