/* fetch: downloads a list of files over http(s):// or file:// with libcurl,
 * quickly and resumably.
 *
 * Several files download at once, and a large file in parallel byte ranges
 * written straight to their offsets in DEST.part (see fetch_part.h), so an
 * interrupted download resumes by asking only for the ranges still missing.
 * A body is cut off at the file's declared size (expected_size_bytes, else
 * max_file_bytes): a server that never stops sending cannot fill the disk.
 * First every file is probed (HEAD) for its size, so that wrong sizes, missing
 * files, refused credentials and a lack of disk space stop the download before a
 * byte of it is fetched. Connection errors, stalls, 408, 429 and 5xx answers are
 * retried with exponential backoff; redirects are followed. A file appears at its
 * destination only when complete and, where a sha256 is expected, verified; a
 * destination that already exists counts as done.
 *
 * The bearer token goes to the URL's own host only (never across a redirect to
 * another host) and never into messages. */
#ifndef FTPIPE_FETCH_H
#define FTPIPE_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *url;
    const char *destination;     /* the finished file; its folder is created */
    const char *name;            /* what messages call it ("config.json") */
    int64_t expected_size_bytes; /* -1: any */
    const char *expected_sha256; /* 64 hex digits, or NULL */
} ft_fetch_file;

typedef struct {
    uint64_t done_bytes;     /* on disk, including bytes resumed from an earlier run */
    uint64_t total_bytes;    /* of the files whose size is known */
    double bytes_per_second; /* recent transfer rate */
    bool verifying;          /* transfers are over; checksums are being computed */
} ft_fetch_progress;

typedef struct {
    int transfers;            /* files at once */
    int connections_per_file; /* byte ranges of one large file at once */
    int retries;              /* further attempts of a request after a transient failure */
    int64_t stall_timeout_ms; /* a connection that receives nothing this long is retried (0: never) */
    int64_t retry_delay_ms;   /* the first backoff delay; it doubles each attempt, up to 30 s */
    uint64_t piece_bytes;     /* the byte ranges a large file is cut into (0: chosen by size) */
    uint64_t max_file_bytes;  /* a file without a declared size may grow to this (0: no bound) */
    int64_t save_interval_ms; /* how often the progress of each file is recorded */
    const char *bearer_token; /* NULL: none */
    const char *auth_hint;    /* ends 401/403 messages: what the user can do */
    const char *not_found_hint; /* ends 404 messages */
    void (*on_progress)(void *context, const ft_fetch_progress *progress);
    void (*on_log)(void *context, const char *line);
    bool (*is_cancelled)(void *context);
    void *context;
} ft_fetch_options;

typedef struct {
    size_t n_files_fetched;   /* completed by this call */
    size_t n_files_present;   /* already at their destination */
    uint64_t bytes_received;  /* over the network by this call */
    uint64_t bytes_resumed;   /* kept from an earlier, interrupted call */
    uint64_t total_bytes;     /* of all files */
} ft_fetch_stats;

/* Sensible defaults: 8 transfers, 4 connections per file, 5 retries, 60 s stall
 * timeout, 1 s first retry delay, progress saved every second. */
void ft_fetch_options_default(ft_fetch_options *options);

/* Downloads every file; on failure ft_error says which file, from where, what
 * went wrong and what to do, and the partial files stay for a resume.
 * stats may be NULL. */
int ft_fetch_files(const ft_fetch_file *files, size_t count, const ft_fetch_options *options,
                   ft_fetch_stats *stats);

/* GETs a small document (a JSON file list) into memory, NUL-terminated, with
 * the same retries, token and messages. `name` is what messages call it. */
int ft_fetch_text(const char *url, const char *name, const ft_fetch_options *options, char **text,
                  size_t *length);

#endif
