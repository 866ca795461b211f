/* remote: the URL forms and the calls every transport answers. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "remote_internal.h"

#define MAX_TEXT_BYTES ((size_t)64 << 20)

static char *trim_trailing_slashes(char *text)
{
    size_t n = strlen(text);
    while (n > 1 && text[n - 1] == '/')
        text[--n] = '\0';
    return text;
}

static int open_file(ft_remote *remote, const char *url)
{
    const char *path = url + strlen("file://");
    if (path[0] != '/')
        return ft_error("remote %s: a file remote needs an absolute path, as file:///srv/ftpipe-cache", url);
    remote->kind = REMOTE_FILE;
    remote->base = trim_trailing_slashes(ft_xstrdup(path));
    remote->display_url = ft_xasprintf("file://%s", remote->base);
    return 0;
}

/* Takes user:password out of the URL, so that it is never shown, and the token from the environment. */
static int open_http(ft_remote *remote, const char *url)
{
    CURLU *parsed = curl_url();
    if (!parsed || curl_url_set(parsed, CURLUPART_URL, url, 0) != CURLUE_OK) {
        curl_url_cleanup(parsed);
        return ft_error("remote: cannot read the URL given as the remote; write it as https://HOST/PREFIX");
    }
    char *user = NULL, *password = NULL;
    curl_url_get(parsed, CURLUPART_USER, &user, CURLU_URLDECODE);
    curl_url_get(parsed, CURLUPART_PASSWORD, &password, CURLU_URLDECODE);
    if (user)
        remote->user_password = ft_xasprintf("%s:%s", user, password ? password : "");
    curl_free(user);
    curl_free(password);
    curl_url_set(parsed, CURLUPART_USER, NULL, 0);
    curl_url_set(parsed, CURLUPART_PASSWORD, NULL, 0);
    curl_url_set(parsed, CURLUPART_QUERY, NULL, 0);
    curl_url_set(parsed, CURLUPART_FRAGMENT, NULL, 0);
    char *clean = NULL;
    curl_url_get(parsed, CURLUPART_URL, &clean, 0);
    curl_url_cleanup(parsed);
    if (!clean)
        return ft_error("remote: cannot read the URL given as the remote; write it as https://HOST/PREFIX");
    remote->kind = REMOTE_HTTP;
    remote->base = trim_trailing_slashes(ft_xstrdup(clean));
    remote->display_url = ft_xstrdup(remote->base);
    curl_free(clean);

    const char *token = getenv("FTPIPE_REMOTE_TOKEN");
    if (token && *token) {
        free(remote->user_password);
        remote->user_password = NULL;
        if (strchr(token, ':'))
            remote->user_password = ft_xstrdup(token);
        else
            remote->bearer_token = ft_xstrdup(token);
    }
    return 0;
}

static const char *environment(const char *name, const char *fallback)
{
    const char *value = getenv(name);
    return value && *value ? value : fallback;
}

static int open_s3(ft_remote *remote, const char *url)
{
    const char *rest = url + strlen("s3://");
    const char *slash = strchr(rest, '/');
    size_t bucket_length = slash ? (size_t)(slash - rest) : strlen(rest);
    if (bucket_length == 0)
        return ft_error("remote %s: name the bucket, as s3://BUCKET/PREFIX", url);
    char *bucket = ft_xstrndup(rest, bucket_length);
    char *prefix = trim_trailing_slashes(ft_xstrdup(slash ? slash : ""));
    const char *key_id = environment("AWS_ACCESS_KEY_ID", NULL);
    const char *secret = environment("AWS_SECRET_ACCESS_KEY", NULL);
    const char *region = environment("AWS_REGION", environment("AWS_DEFAULT_REGION", "us-east-1"));
    const char *endpoint = environment("FTPIPE_S3_ENDPOINT", NULL);
    int result = 0;
    if (!key_id || !secret) {
        result = ft_error("remote %s: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_REGION) for S3", url);
    } else {
        remote->kind = REMOTE_S3;
        /* An explicit endpoint (MinIO and the like) takes the bucket in the path. */
        if (endpoint)
            remote->base = ft_xasprintf("%s/%s%s", endpoint, bucket, strcmp(prefix, "/") == 0 ? "" : prefix);
        else
            remote->base = ft_xasprintf("https://%s.s3.%s.amazonaws.com%s", bucket, region,
                                        strcmp(prefix, "/") == 0 ? "" : prefix);
        trim_trailing_slashes(remote->base);
        remote->display_url = ft_xstrdup(url);
        trim_trailing_slashes(remote->display_url);
        remote->user_password = ft_xasprintf("%s:%s", key_id, secret);
        remote->aws_sigv4 = ft_xasprintf("aws:amz:%s:s3", region);
        const char *session = environment("AWS_SESSION_TOKEN", NULL);
        if (session)
            remote->session_token_header = ft_xasprintf("x-amz-security-token: %s", session);
    }
    free(bucket);
    free(prefix);
    return result;
}

int ft_remote_open(const char *url, ft_remote **out)
{
    ft_remote *remote = ft_xcalloc(1, sizeof *remote);
    int result;
    if (strncmp(url, "file://", 7) == 0)
        result = open_file(remote, url);
    else if (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0)
        result = open_http(remote, url);
    else if (strncmp(url, "s3://", 5) == 0)
        result = open_s3(remote, url);
    else
        result = ft_error("remote: unknown kind of URL; use http(s)://HOST/PREFIX, file:///PATH or "
                          "s3://BUCKET/PREFIX");
    if (result != 0) {
        ft_remote_close(remote);
        return -1;
    }
    *out = remote;
    return 0;
}

void ft_remote_close(ft_remote *remote)
{
    if (!remote)
        return;
    free(remote->display_url);
    free(remote->base);
    if (remote->user_password)
        memset(remote->user_password, 0, strlen(remote->user_password));
    free(remote->user_password);
    if (remote->bearer_token)
        memset(remote->bearer_token, 0, strlen(remote->bearer_token));
    free(remote->bearer_token);
    free(remote->aws_sigv4);
    free(remote->session_token_header);
    free(remote);
}

const char *ft_remote_url(const ft_remote *remote) { return remote->display_url; }

int ft_remote_has(ft_remote *remote, const char *name)
{
    return remote->kind == REMOTE_FILE ? ft_remote_file_has(remote, name) : ft_remote_http_has(remote, name);
}

/* A copied blob is shown to the observer from the copy, read once. */
static int show_file(const char *path, const ft_remote_observer *observer)
{
    FILE *file = fopen(path, "rb");
    if (!file)
        return ft_error_errno("cannot read %s", path);
    observer->restart(observer->context);
    char *buffer = ft_xmalloc(1 << 20);
    size_t n;
    while ((n = fread(buffer, 1, 1 << 20, file)) > 0)
        observer->bytes(observer->context, buffer, n);
    int result = ferror(file) ? ft_error("cannot read %s", path) : 0;
    free(buffer);
    fclose(file);
    return result;
}

int ft_remote_get_file(ft_remote *remote, const char *name, const char *destination,
                       const ft_remote_observer *observer)
{
    if (remote->kind != REMOTE_FILE)
        return ft_remote_http_get(remote, name, destination, observer);
    int result = ft_remote_file_get(remote, name, destination);
    if (result == 1 && observer && show_file(destination, observer) != 0)
        result = FT_REMOTE_UNAVAILABLE;
    return result;
}

int ft_remote_get_text(ft_remote *remote, const char *name, char **text, size_t *length)
{
    const char *tmp = environment("TMPDIR", "/tmp");
    char *path = ft_xasprintf("%s/ftpipe-remote-XXXXXX", tmp);
    int fd = mkstemp(path);
    if (fd < 0) {
        int result = ft_error_errno("cannot create a temporary file in %s", tmp);
        free(path);
        return result;
    }
    close(fd);
    int result = ft_remote_get_file(remote, name, path, NULL);
    if (result == 1) {
        size_t n = 0;
        if (ft_read_file(path, text, &n) != 0)
            result = -1;
        else if (n > MAX_TEXT_BYTES) {
            free(*text);
            result = ft_error("remote %s: %s is larger than 64 MiB; it is not one of ftpipe's entries",
                              remote->display_url, name);
        } else if (length) {
            *length = n;
        }
    }
    unlink(path);
    free(path);
    return result;
}

int ft_remote_put_file(ft_remote *remote, const char *name, const char *source)
{
    return remote->kind == REMOTE_FILE ? ft_remote_file_put(remote, name, source, NULL, 0)
                                       : ft_remote_http_put(remote, name, source, NULL, 0);
}

int ft_remote_put_text(ft_remote *remote, const char *name, const char *text, size_t length)
{
    return remote->kind == REMOTE_FILE ? ft_remote_file_put(remote, name, NULL, text, length)
                                       : ft_remote_http_put(remote, name, NULL, text, length);
}
