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

/* HEAD of one file at revision: 1 and the file (and the commit, when said), 0 on 404, -1 otherwise. */
static int head_file(const ft_hf_repo *repo, const char *revision, const char *path, const ft_fetch_options *options,
                     ft_hf_file *file, char **commit)
{
    char *url = ft_hf_file_url(repo, revision, path);
    char curl_error[CURL_ERROR_SIZE];
    resolve_headers headers = {.linked_size = -1, .content_length = -1};
    CURLcode code = CURLE_OK;
    long status = 0;
    for (int attempt = 0; attempt <= options->retries; attempt++) {
        CURL *easy = ft_http_new_handle(options, url, curl_error);
        if (!easy) {
            free(url);
            return ft_error("cannot ask for %s: libcurl could not create a handle", path);
        }
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
        *file = (ft_hf_file){
            .path = ft_xstrdup(path),
            .size_bytes = headers.linked_size >= 0 ? headers.linked_size
                          : status < 300          ? headers.content_length
                                                  : -1,
            .sha256 = sha256 ? ft_xstrdup(sha256) : NULL,
        };
        if (commit && headers.commit && !*commit)
            *commit = ft_xstrdup(headers.commit);
        result = 1;
    } else {
        ft_strbuf message;
        ft_strbuf_init(&message);
        ft_http_describe_failure(&message, options, path, url, status, code, curl_error);
        ft_error("%s", message.data);
        ft_strbuf_free(&message);
        result = -1;
    }
    free(headers.commit);
    free(headers.linked_etag);
    free(headers.etag);
    free(url);
    return result;
}

static void add(ft_hf_plan *listing, const ft_hf_file *file)
{
    listing->files = ft_xrealloc(listing->files, (listing->n_files + 1) * sizeof *listing->files);
    listing->files[listing->n_files++] = *file;
}

int ft_hf_resolve_add(const ft_hf_repo *repo, const char *path, const ft_fetch_options *options,
                      ft_hf_plan *listing)
{
    ft_hf_file file;
    const char *revision = listing->commit ? listing->commit : repo->revision;
    int found = head_file(repo, revision, path, options, &file, &listing->commit);
    if (found == 1)
        add(listing, &file);
    return found;
}

int ft_hf_resolve_listing(const ft_hf_repo *repo, const char *const *names, size_t n_names,
                          const ft_fetch_options *options, ft_hf_plan *listing)
{
    *listing = (ft_hf_plan){0};
    for (size_t i = 0; i < n_names; i++) {
        int found = ft_hf_resolve_add(repo, names[i], options, listing);
        if (found == 0) {
            char *index = ft_xasprintf("%s.index.json", names[i]);
            found = ft_hf_resolve_add(repo, index, options, listing);
            free(index);
            if (found == 0)
                ft_error("%s is not in %s%s at revision %s (asked at %s; this server lists no files, so names "
                         "cannot be suggested)",
                         names[i], repo->is_dataset ? "datasets/" : "", repo->repo, repo->revision, repo->endpoint);
        }
        if (found != 1) {
            ft_hf_plan_free(listing);
            return -1;
        }
    }
    return 0;
}
