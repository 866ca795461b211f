/* fetch_http: libcurl settings, retry policy and failure messages shared by every download. */
#include "ftpipe/transfer/fetch_http.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

#define MAX_RETRY_DELAY_MS 30000
#define MAX_TEXT_BYTES ((size_t)64 << 20)

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void init_curl(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static const char *status_text(long status)
{
    switch (status) {
    case 400: return "400 Bad Request";
    case 401: return "401 Unauthorized";
    case 403: return "403 Forbidden";
    case 404: return "404 Not Found";
    case 408: return "408 Request Timeout";
    case 410: return "410 Gone";
    case 416: return "416 Range Not Satisfiable";
    case 429: return "429 Too Many Requests";
    case 500: return "500 Internal Server Error";
    case 502: return "502 Bad Gateway";
    case 503: return "503 Service Unavailable";
    case 504: return "504 Gateway Timeout";
    default: return NULL;
    }
}

static void append_status(ft_strbuf *out, long status)
{
    const char *text = status_text(status);
    if (text)
        ft_strbuf_puts(out, text);
    else
        ft_strbuf_printf(out, "HTTP status %ld", status);
}

static bool code_is_transient(CURLcode code)
{
    switch (code) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_QUIC_CONNECT_ERROR:
        return true;
    default:
        return false;
    }
}

bool ft_http_is_transient(long status, CURLcode code)
{
    if (code != CURLE_OK)
        return code_is_transient(code);
    return status == 408 || status == 429 || status >= 500;
}

void ft_http_describe_failure(ft_strbuf *out, const ft_fetch_options *options, const char *name,
                                   const char *url, long status, CURLcode code, const char *curl_error)
{
    if (code == CURLE_FILE_COULDNT_READ_FILE) {
        ft_strbuf_printf(out, "cannot download %s: %s does not exist or cannot be read; %s", name, url,
                         options->not_found_hint ? options->not_found_hint : "check the URL");
        return;
    }
    if (code != CURLE_OK) {
        ft_strbuf_printf(out, "cannot download %s from %s: %s", name, url,
                         curl_error[0] ? curl_error : curl_easy_strerror(code));
        return;
    }
    ft_strbuf_printf(out, "cannot download %s: %s answered ", name, url);
    append_status(out, status);
    if (status == 401 || status == 403)
        ft_strbuf_printf(out, "; %s",
                         options->auth_hint ? options->auth_hint : "the server wants credentials this download lacks");
    else if (status == 404 || status == 410)
        ft_strbuf_printf(out, "; %s", options->not_found_hint ? options->not_found_hint : "check the URL");
    else if (status >= 300 && status < 400)
        ft_strbuf_puts(out, " without a usable Location to follow");
}

void ft_http_describe_transient(ft_strbuf *out, long status, CURLcode code, const char *curl_error)
{
    if (code != CURLE_OK)
        ft_strbuf_puts(out, curl_error[0] ? curl_error : curl_easy_strerror(code));
    else
        append_status(out, status);
}

int64_t ft_http_retry_delay_ms(const ft_fetch_options *options, int attempt)
{
    int64_t delay = options->retry_delay_ms > 0 ? options->retry_delay_ms : 1000;
    for (int i = 1; i < attempt && delay < MAX_RETRY_DELAY_MS; i++)
        delay *= 2;
    return delay < MAX_RETRY_DELAY_MS ? delay : MAX_RETRY_DELAY_MS;
}

void ft_http_log(const ft_fetch_options *options, const char *fmt, ...)
{
    if (!options->on_log)
        return;
    ft_strbuf line;
    ft_strbuf_init(&line);
    va_list args;
    va_start(args, fmt);
    ft_strbuf_vprintf(&line, fmt, args);
    va_end(args);
    options->on_log(options->context, line.data);
    ft_strbuf_free(&line);
}

CURL *ft_http_new_handle(const ft_fetch_options *options, const char *url, char *curl_error)
{
    pthread_once(&curl_once, init_curl);
    CURL *easy = curl_easy_init();
    if (!easy)
        return NULL;
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_FILETIME, 1L); /* file://'s validator (ft_http_read_headers) */
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https,file");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "ftpipe");
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, curl_error);
    long stall_s = (long)((options->stall_timeout_ms + 999) / 1000);
    if (stall_s > 0) {
        curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, stall_s);
    }
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, stall_s > 0 && stall_s < 30 ? stall_s : 30L);
    if (options->bearer_token && options->bearer_token[0]) {
        /* libcurl's own authentication is never resent to another host on a redirect. */
        curl_easy_setopt(easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        curl_easy_setopt(easy, CURLOPT_XOAUTH2_BEARER, options->bearer_token);
    }
    curl_error[0] = '\0';
    return easy;
}

/* The value of the last response's header `name`, or NULL. */
static const char *header(CURL *easy, const char *name)
{
    struct curl_header *found = NULL;
    if (curl_easy_header(easy, name, 0, CURLH_HEADER, -1, &found) != CURLHE_OK || !found)
        return NULL;
    return found->value;
}

void ft_http_parse_content_range(const char *value, ft_http_headers *out)
{
    uint64_t start = 0, end = 0, total = 0;
    int fields = sscanf(value, "bytes %" SCNu64 "-%" SCNu64 "/%" SCNu64, &start, &end, &total);
    /* a range that contradicts itself (start past end, end past the total) counts as absent */
    bool consistent = fields >= 2 && start <= end && (fields < 3 || (end < total && total <= INT64_MAX));
    out->has_content_range = consistent;
    out->content_range_start = consistent ? start : 0;
    out->content_range_total = consistent && fields == 3 ? (int64_t)total : -1;
}

void ft_http_read_headers(CURL *easy, ft_http_headers *out)
{
    ft_http_headers_free(out);
    const char *etag = header(easy, "ETag");
    const char *last_modified = header(easy, "Last-Modified");
    const char *accept_ranges = header(easy, "Accept-Ranges");
    const char *content_range = header(easy, "Content-Range");
    out->etag = etag ? ft_xstrdup(etag) : NULL;
    out->last_modified = last_modified ? ft_xstrdup(last_modified) : NULL;
    out->accept_ranges = accept_ranges && strncasecmp(accept_ranges, "bytes", 5) == 0;
    char *scheme = NULL;
    curl_easy_getinfo(easy, CURLINFO_SCHEME, &scheme);
    if (scheme && strcasecmp(scheme, "file") == 0) {
        /* file:// answers without headers: a local file takes ranges, and its mtime is the validator */
        curl_off_t mtime = -1;
        curl_easy_getinfo(easy, CURLINFO_FILETIME_T, &mtime);
        out->accept_ranges = true;
        if (mtime >= 0)
            out->last_modified = ft_xasprintf("mtime %lld", (long long)mtime);
    }
    if (content_range)
        ft_http_parse_content_range(content_range, out);
}

void ft_http_headers_free(ft_http_headers *headers)
{
    free(headers->etag);
    free(headers->last_modified);
    *headers = (ft_http_headers){.content_range_total = -1};
}

long ft_http_status(CURL *easy)
{
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

typedef struct {
    ft_strbuf body;
    CURL *easy;
    bool too_large;
} text_download;

static size_t on_text(char *data, size_t size, size_t count, void *pointer)
{
    text_download *download = pointer;
    size_t length = size * count;
    if (ft_http_status(download->easy) >= 300)
        return length;
    if (download->body.length + length > MAX_TEXT_BYTES) {
        download->too_large = true;
        return 0;
    }
    ft_strbuf_add(&download->body, data, length);
    return length;
}

static void sleep_ms(int64_t ms)
{
    struct timespec delay = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&delay, &delay) != 0 && errno == EINTR) {
    }
}

int ft_fetch_text(const char *url, const char *name, const ft_fetch_options *options, char **text,
                  size_t *length)
{
    char curl_error[CURL_ERROR_SIZE];
    for (int attempt = 0;; attempt++) {
        if (options->is_cancelled && options->is_cancelled(options->context))
            return ft_error("the download was interrupted; run again to resume it");
        text_download download = {.easy = ft_http_new_handle(options, url, curl_error)};
        if (!download.easy)
            return ft_error("cannot download %s: libcurl could not create a handle", name);
        ft_strbuf_init(&download.body);
        curl_easy_setopt(download.easy, CURLOPT_WRITEFUNCTION, on_text);
        curl_easy_setopt(download.easy, CURLOPT_WRITEDATA, &download);
        CURLcode code = curl_easy_perform(download.easy);
        long status = ft_http_status(download.easy);
        curl_easy_cleanup(download.easy);
        if (code == CURLE_OK && (status == 0 || (status >= 200 && status < 300))) {
            if (length)
                *length = download.body.length;
            *text = ft_strbuf_take(&download.body);
            ft_strbuf_free(&download.body);
            return 0;
        }
        ft_strbuf message;
        ft_strbuf_init(&message);
        bool transient = ft_http_is_transient(status, code);
        if (download.too_large)
            ft_strbuf_printf(&message, "cannot download %s from %s: it is larger than %zu bytes", name, url,
                             MAX_TEXT_BYTES);
        else if (!transient)
            ft_http_describe_failure(&message, options, name, url, status, code, curl_error);
        else if (attempt >= options->retries) {
            ft_strbuf_printf(&message, "cannot download %s from %s after %d attempts: ", name, url, attempt + 1);
            ft_http_describe_transient(&message, status, code, curl_error);
        }
        ft_strbuf_free(&download.body);
        if (message.length > 0) {
            ft_error("%s", message.data);
            ft_strbuf_free(&message);
            return -1;
        }
        ft_http_describe_transient(&message, status, code, curl_error);
        int64_t delay_ms = ft_http_retry_delay_ms(options, attempt + 1);
        ft_http_log(options, "%s: %s; retrying in %.1f s (attempt %d of %d)", name, message.data,
                 (double)delay_ms / 1000.0, attempt + 2, options->retries + 1);
        ft_strbuf_free(&message);
        sleep_ms(delay_ms);
    }
}
