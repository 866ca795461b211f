/* hf_resolve: hub files found by HEAD requests on their resolve URLs. */
#include "ftpipe/transfer/hf_resolve.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/transfer/fetch_http.h"

typedef struct {
    char *commit;
    char *linked_etag;
    char *etag;
    int64_t linked_size;
    int64_t content_length;
} resolve_headers;

/* A header's value without quotes and trailing space; NULL when the line is another header. */
static char *header_value(const char *line, size_t length, const char *name)
{
    size_t n = strlen(name);
    if (length <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return NULL;
    const char *start = line + n + 1, *end = line + length;
    while (start < end && (*start == ' ' || *start == '\t' || *start == '"'))
        start++;
    while (end > start && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '"'))
        end--;
    if (end - start > 2 && strncmp(start, "W/", 2) == 0)
        start += 2;
    while (start < end && *start == '"')
        start++;
    return ft_xstrndup(start, (size_t)(end - start));
}

static size_t on_header(char *data, size_t size, size_t count, void *user)
{
    resolve_headers *headers = user;
    size_t length = size * count;
    char *value;
    if ((value = header_value(data, length, "X-Repo-Commit"))) {
        free(headers->commit);
        headers->commit = value;
    } else if ((value = header_value(data, length, "X-Linked-Etag"))) {
        free(headers->linked_etag);
        headers->linked_etag = value;
    } else if ((value = header_value(data, length, "ETag"))) {
        free(headers->etag);
        headers->etag = value;
    } else if ((value = header_value(data, length, "X-Linked-Size"))) {
        headers->linked_size = strtoll(value, NULL, 10);
        free(value);
    } else if ((value = header_value(data, length, "Content-Length"))) {
        headers->content_length = strtoll(value, NULL, 10);
        free(value);
    }
    return length;
}

static bool is_sha256(const char *text)
{
    return text && strlen(text) == 64 && strspn(text, "0123456789abcdef") == 64;
}

int ft_hf_head_file(const char *url, const char *name, const ft_fetch_options *options, ft_hf_head *out)
{
    *out = (ft_hf_head){.size_bytes = -1};
    char curl_error[CURL_ERROR_SIZE];
    resolve_headers headers = {.linked_size = -1, .content_length = -1};
    CURLcode code = CURLE_OK;
    long status = 0;
    for (int attempt = 0; attempt <= options->retries; attempt++) {
        CURL *easy = ft_http_new_handle(options, url, curl_error);
        if (!easy)
            return ft_error("cannot ask for %s: libcurl could not create a handle", name);
        curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(easy, CURLOPT_HEADERDATA, &headers);
        code = curl_easy_perform(easy);
        status = ft_http_status(easy);
        curl_easy_cleanup(easy);
        if (!ft_http_is_transient(status, code) || attempt == options->retries)
            break;
    }
    int result;
    if (code == CURLE_OK && status == 404) {
        result = 0;
    } else if (code == CURLE_OK && status >= 200 && status < 400) {
        const char *sha256 = is_sha256(headers.linked_etag) ? headers.linked_etag
                             : is_sha256(headers.etag)      ? headers.etag
                                                            : NULL;
        out->size_bytes = headers.linked_size >= 0 ? headers.linked_size : status < 300 ? headers.content_length : -1;
        out->sha256 = sha256 ? ft_xstrdup(sha256) : NULL;
        out->commit = headers.commit ? ft_xstrdup(headers.commit) : NULL;
        result = 1;
    } else {
        ft_strbuf message;
        ft_strbuf_init(&message);
        ft_http_describe_failure(&message, options, name, url, status, code, curl_error);
        ft_error("%s", message.data);
        ft_strbuf_free(&message);
        result = -1;
    }
    free(headers.commit);
    free(headers.linked_etag);
    free(headers.etag);
    return result;
}

void ft_hf_head_free(ft_hf_head *head)
{
    free(head->sha256);
    free(head->commit);
    *head = (ft_hf_head){.size_bytes = -1};
}
