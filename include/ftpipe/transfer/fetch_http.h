/* fetch_http: one request done the way every ftpipe download does it.
 *
 * The libcurl settings (protocols, redirects, stall timeout, bearer token), which
 * failures deserve a retry, the messages a user sees for the others, and the GET
 * of a small document (a file list) into memory. fetch.c builds its parallel
 * transfers on the same pieces. */
#ifndef FTPIPE_FETCH_HTTP_H
#define FTPIPE_FETCH_HTTP_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>

#include "ftpipe/base/strbuf.h"
#include "ftpipe/transfer/fetch.h"

/* A handle for url with ftpipe's settings; curl_error (CURL_ERROR_SIZE bytes)
 * receives libcurl's explanation of a failure. NULL when libcurl cannot make one. */
CURL *ft_http_new_handle(const ft_fetch_options *options, const char *url, char *curl_error);

/* The final HTTP status of a handle (0 for file://). */
long ft_http_status(CURL *easy);

/* What the headers of the last response said (a redirect's are forgotten). */
typedef struct {
    char *etag;          /* NULL: none */
    char *last_modified; /* NULL: none */
    bool accept_ranges;  /* Accept-Ranges: bytes */
    bool has_content_range;
    uint64_t content_range_start;
    int64_t content_range_total; /* -1: not said; set it so before the first response */
} ft_http_headers;

/* Reads the headers of the handle's last response (curl_easy_header), during
 * the transfer (from a callback) or after it. */
void ft_http_read_headers(CURL *easy, ft_http_headers *out);
/* A Content-Range value ("bytes START-END/TOTAL") into out's range fields. */
void ft_http_parse_content_range(const char *value, ft_http_headers *out);
void ft_http_headers_free(ft_http_headers *headers);

/* Whether trying again may succeed: connection errors, stalls, 408, 429, 5xx. */
bool ft_http_is_transient(long status, CURLcode code);

/* Appends why a request failed for good: "cannot download NAME: URL answered
 * 404 Not Found; HINT", with the options' hints for 401/403 and 404. */
void ft_http_describe_failure(ft_strbuf *out, const ft_fetch_options *options, const char *name,
                              const char *url, long status, CURLcode code, const char *curl_error);
/* Appends the reason of a transient failure ("503 Service Unavailable"). */
void ft_http_describe_transient(ft_strbuf *out, long status, CURLcode code, const char *curl_error);

/* The wait before attempt number `attempt` (1, 2, ...): doubling, at most 30 s. */
int64_t ft_http_retry_delay_ms(const ft_fetch_options *options, int attempt);

/* A line to the options' log callback, if any. */
void ft_http_log(const ft_fetch_options *options, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* GETs a small document (at most 64 MiB) into memory, NUL-terminated, retrying
 * transient failures. `name` is what messages call it. */
int ft_fetch_text(const char *url, const char *name, const ft_fetch_options *options, char **text,
                  size_t *length);

#endif
