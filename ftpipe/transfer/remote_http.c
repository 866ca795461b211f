/* remote_http: the remote over plain HTTP(S) GET, HEAD and PUT — bazel-remote's
 * layout, nginx's WebDAV, or S3 with each request signed by libcurl (SigV4). */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/sha256.h"
#include "remote_internal.h"

#define ATTEMPTS 3

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void init_curl(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

typedef struct {
    const char *bytes;
    size_t length;
    size_t offset;
} memory_source;

static size_t read_memory(char *buffer, size_t size, size_t count, void *user)
{
    memory_source *source = user;
    size_t n = size * count;
    if (n > source->length - source->offset)
        n = source->length - source->offset;
    memcpy(buffer, source->bytes + source->offset, n);
    source->offset += n;
    return n;
}

/* A GET that continues a partial file: bytes go after what is there when the
 * server answers the range (206), over it when it sends the whole blob (200). */
typedef struct {
    CURL *easy;
    FILE *file;
    long offset;
    bool checked;
    const ft_remote_observer *observer;
} resumed_download;

static size_t write_resumed(char *data, size_t size, size_t count, void *user)
{
    resumed_download *download = user;
    if (!download->checked) {
        download->checked = true;
        long status = 0;
        curl_easy_getinfo(download->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status != 206 && download->offset > 0) {
            if (fflush(download->file) != 0 || ftruncate(fileno(download->file), 0) != 0)
                return 0;
            if (download->observer)
                download->observer->restart(download->observer->context);
        }
    }
    if (fwrite(data, size, count, download->file) != count)
        return 0;
    if (download->observer)
        download->observer->bytes(download->observer->context, data, size * count);
    return size * count;
}

static size_t discard(char *data, size_t size, size_t count, void *user)
{
    (void)data;
    (void)user;
    return size * count;
}

typedef enum { REQUEST_HEAD, REQUEST_GET, REQUEST_PUT } request_method;

typedef struct {
    request_method method;
    const char *name;
    const char *destination; /* GET */
    const char *source;      /* PUT from a file */
    const char *text;        /* PUT from memory */
    size_t length;
    const ft_remote_observer *observer; /* GET */
    char payload_hash_header[96]; /* S3 signs the body's SHA-256 (libcurl does not add it) */
} request;

static CURL *new_handle(const ft_remote *remote, const char *url, char *curl_error, struct curl_slist **headers)
{
    pthread_once(&curl_once, init_curl);
    CURL *easy = curl_easy_init();
    if (!easy)
        return NULL;
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, curl_error);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(easy, CURLOPT_MAXREDIRS, 5L);
    /* Credentials go to the remote's own host only, never along a redirect elsewhere. */
    curl_easy_setopt(easy, CURLOPT_UNRESTRICTED_AUTH, 0L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "ftpipe");
    if (remote->kind == REMOTE_S3) {
        curl_easy_setopt(easy, CURLOPT_USERPWD, remote->user_password);
        curl_easy_setopt(easy, CURLOPT_AWS_SIGV4, remote->aws_sigv4);
        if (remote->session_token_header)
            *headers = curl_slist_append(*headers, remote->session_token_header);
    } else if (remote->bearer_token) {
        curl_easy_setopt(easy, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
        curl_easy_setopt(easy, CURLOPT_XOAUTH2_BEARER, remote->bearer_token);
    } else if (remote->user_password) {
        curl_easy_setopt(easy, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
        curl_easy_setopt(easy, CURLOPT_USERPWD, remote->user_password);
    } else {
        curl_easy_setopt(easy, CURLOPT_NETRC, (long)CURL_NETRC_OPTIONAL);
    }
    return easy;
}

static bool transient(CURLcode code, long status)
{
    if (code != CURLE_OK)
        return code != CURLE_WRITE_ERROR && code != CURLE_READ_ERROR && code != CURLE_URL_MALFORMAT &&
               code != CURLE_UNSUPPORTED_PROTOCOL && code != CURLE_LOGIN_DENIED;
    return status == 408 || status == 429 || status >= 500;
}

static void sleep_ms(long ms)
{
    struct timespec wait = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&wait, &wait) != 0 && errno == EINTR) {
    }
}

static const char *method_word(request_method method)
{
    return method == REQUEST_HEAD ? "HEAD" : method == REQUEST_GET ? "GET" : "PUT";
}

/* One attempt; sets *code and *status. -1 only when a local file fails. */
static int attempt(const ft_remote *remote, const request *req, const char *url, char *curl_error, CURLcode *code,
                   long *status, resumed_download *resumed)
{
    struct curl_slist *headers = NULL;
    CURL *easy = new_handle(remote, url, curl_error, &headers);
    if (!easy)
        return ft_error("cannot start a transfer (libcurl)");
    FILE *file = NULL;
    memory_source memory = {req->text, req->length, 0};
    int result = 0;
    if (req->method == REQUEST_HEAD) {
        curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else if (req->method == REQUEST_GET) {
        file = fopen(req->destination, "ab");
        if (!file) {
            result = ft_error_errno("cannot write %s", req->destination);
        } else {
            resumed->easy = easy;
            resumed->file = file;
            resumed->offset = ftell(file);
            resumed->checked = false;
            resumed->observer = req->observer;
            if (resumed->offset > 0)
                curl_easy_setopt(easy, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)resumed->offset);
            curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_resumed);
            curl_easy_setopt(easy, CURLOPT_WRITEDATA, resumed);
        }
    } else {
        curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
        /* No waiting for "100 Continue": servers that store PUTs answer at the end anyway. */
        headers = curl_slist_append(headers, "Expect:");
        if (req->source) {
            struct stat st;
            file = fopen(req->source, "rb");
            if (!file || fstat(fileno(file), &st) != 0)
                result = ft_error_errno("cannot read %s", req->source);
            else
                curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
            curl_easy_setopt(easy, CURLOPT_READDATA, file);
        } else {
            curl_easy_setopt(easy, CURLOPT_READFUNCTION, read_memory);
            curl_easy_setopt(easy, CURLOPT_READDATA, &memory);
            curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->length);
        }
    }
    if (remote->kind == REMOTE_S3)
        headers = curl_slist_append(headers, req->payload_hash_header);
    if (headers)
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    if (result == 0) {
        curl_error[0] = '\0';
        *code = curl_easy_perform(easy);
        *status = 0;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, status);
    }
    if (file && fclose(file) != 0 && req->method == REQUEST_GET && result == 0)
        result = ft_error_errno("cannot write %s", req->destination);
    curl_slist_free_all(headers);
    curl_easy_cleanup(easy);
    return result;
}

/* S3 wants the body's SHA-256 in a signed header: known for an empty body and a
 * text; a file goes as UNSIGNED-PAYLOAD (the reader checks its SHA-256 anyway). */
static void set_payload_hash(request *req)
{
    char hex[FT_SHA256_HEX_LENGTH + 1] = "UNSIGNED-PAYLOAD";
    if (req->method != REQUEST_PUT || !req->source) {
        ft_sha256 context;
        ft_sha256_init(&context);
        if (req->method == REQUEST_PUT)
            ft_sha256_update(&context, req->text, req->length);
        ft_sha256_finish_hex(&context, hex);
    }
    snprintf(req->payload_hash_header, sizeof req->payload_hash_header, "x-amz-content-sha256: %s", hex);
}

static int perform(ft_remote *remote, request *req)
{
    set_payload_hash(req);
    char *url = ft_xasprintf("%s/%s", remote->base, req->name);
    char curl_error[CURL_ERROR_SIZE];
    CURLcode code = CURLE_OK;
    long status = 0;
    int result = 0;
    for (int n = 1; n <= ATTEMPTS; n++) {
        resumed_download resumed = {0};
        if (attempt(remote, req, url, curl_error, &code, &status, &resumed) != 0) {
            free(url);
            return FT_REMOTE_UNAVAILABLE;
        }
        if (!transient(code, status) || n == ATTEMPTS)
            break;
        sleep_ms(n == 1 ? 200 : 1000);
    }
    bool credentials = remote->user_password || remote->bearer_token;
    if (code != CURLE_OK) {
        ft_error("remote %s: %s %s failed: %s", remote->display_url, method_word(req->method), req->name,
                 curl_error[0] ? curl_error : curl_easy_strerror(code));
        result = FT_REMOTE_UNAVAILABLE;
    } else if (status == 401 || status == 403) {
        if (remote->kind == REMOTE_S3)
            ft_error("remote %s: S3 refused the request (HTTP %ld) for %s: check AWS_ACCESS_KEY_ID, "
                     "AWS_SECRET_ACCESS_KEY, AWS_REGION and the bucket's permissions",
                     remote->display_url, status, req->name);
        else if (credentials)
            ft_error("remote %s: the server refused the credentials (HTTP %ld); check FTPIPE_REMOTE_TOKEN "
                     "(user:password or a token), the URL's user:password or ~/.netrc",
                     remote->display_url, status);
        else
            ft_error("remote %s: the server wants credentials (HTTP %ld); set FTPIPE_REMOTE_TOKEN to "
                     "user:password or a bearer token, or add the host to ~/.netrc",
                     remote->display_url, status);
        result = FT_REMOTE_DENIED;
    } else if (status == 404 && req->method != REQUEST_PUT) {
        result = 0;
    } else if (status == 416 && req->method == REQUEST_GET) {
        result = 1; /* nothing after what an earlier GET left: the caller verifies it */
    } else if (status >= 200 && status < 300) {
        result = req->method == REQUEST_PUT ? 0 : 1;
    } else if (req->method == REQUEST_PUT && (status == 405 || status == 501)) {
        ft_error("remote %s: the server does not store uploads (HTTP %ld for PUT %s); enable PUT (nginx: "
                 "dav_methods PUT) or set FTPIPE_REMOTE_MODE=read",
                 remote->display_url, status, req->name);
        result = FT_REMOTE_UNAVAILABLE;
    } else {
        ft_error("remote %s: %s %s answered HTTP %ld", remote->display_url, method_word(req->method), req->name,
                 status);
        result = FT_REMOTE_UNAVAILABLE;
    }
    free(url);
    return result;
}

int ft_remote_http_has(ft_remote *remote, const char *name)
{
    request req = {.method = REQUEST_HEAD, .name = name};
    return perform(remote, &req);
}

int ft_remote_http_get(ft_remote *remote, const char *name, const char *destination,
                       const ft_remote_observer *observer)
{
    request req = {.method = REQUEST_GET, .name = name, .destination = destination, .observer = observer};
    return perform(remote, &req);
}

int ft_remote_http_put(ft_remote *remote, const char *name, const char *source, const char *text, size_t length)
{
    request req = {.method = REQUEST_PUT, .name = name, .source = source, .text = text, .length = length};
    return perform(remote, &req);
}
