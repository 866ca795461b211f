/* url: curl_url parses and rebuilds; only the file's own segments are encoded
 * here, since base's path is already in URL form. */
#include "ftpipe/transfer/url.h"

#include <curl/curl.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

static CURLU *parse(const char *url)
{
    CURLU *handle = curl_url();
    if (!handle)
        return NULL;
    /* file:// and plain http(s):// as given; no guessing of a scheme */
    if (curl_url_set(handle, CURLUPART_URL, url, 0) != CURLUE_OK) {
        curl_url_cleanup(handle);
        return NULL;
    }
    return handle;
}

/* Appends file's segments to path, each percent-encoded (all but unreserved bytes). */
static void append_encoded(ft_strbuf *path, const char *file)
{
    for (const char *segment = file; *segment;) {
        size_t length = strcspn(segment, "/");
        if (length > 0) {
            char *encoded = curl_easy_escape(NULL, segment, (int)length);
            if (!encoded)
                ft_strbuf_puts(path, "/"); /* out of memory in libcurl: leave the segment out */
            else
                ft_strbuf_printf(path, "/%s", encoded);
            curl_free(encoded);
        }
        segment += length;
        while (*segment == '/')
            segment++;
    }
}

int ft_url_join_file(const char *base, const char *file, char **out)
{
    CURLU *handle = parse(base);
    if (!handle)
        return ft_error("%s is not a URL", base);
    char *base_path = NULL;
    curl_url_get(handle, CURLUPART_PATH, &base_path, 0);
    ft_strbuf path;
    ft_strbuf_init(&path);
    ft_strbuf_puts(&path, base_path ? base_path : "");
    curl_free(base_path);
    while (path.length > 0 && path.data[path.length - 1] == '/')
        path.data[--path.length] = '\0';
    append_encoded(&path, file);
    char *joined = NULL;
    int result = 0;
    if (curl_url_set(handle, CURLUPART_PATH, path.data, 0) != CURLUE_OK ||
        curl_url_set(handle, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK ||
        curl_url_get(handle, CURLUPART_URL, &joined, 0) != CURLUE_OK)
        result = ft_error("cannot join %s and %s into a URL", base, file);
    else
        *out = ft_xstrdup(joined);
    curl_free(joined);
    ft_strbuf_free(&path);
    curl_url_cleanup(handle);
    return result;
}

char *ft_url_file_name(const char *url)
{
    CURLU *handle = parse(url);
    if (!handle)
        return NULL;
    char *path = NULL;
    char *name = NULL;
    if (curl_url_get(handle, CURLUPART_PATH, &path, CURLU_URLDECODE) == CURLUE_OK && path) {
        const char *slash = strrchr(path, '/');
        const char *last = slash ? slash + 1 : path;
        if (*last)
            name = ft_xstrdup(last);
    }
    curl_free(path);
    curl_url_cleanup(handle);
    return name;
}
