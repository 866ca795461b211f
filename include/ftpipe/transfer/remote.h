/* remote: a shared store of named blobs that several workspaces read and write —
 * the transport under the remote cache.
 *
 * Names are "cas/<sha256>" (content) and "ac/<sha256>" (a stage's entry), the
 * layout of bazel-remote's HTTP cache. URLs:
 *   http(s)://HOST/PREFIX   GET, HEAD and PUT of PREFIX/NAME (bazel-remote, nginx
 *                           with WebDAV PUT, any server that stores PUTs);
 *                           credentials from FTPIPE_REMOTE_TOKEN ("user:password"
 *                           is HTTP basic, anything else a bearer token), the URL's
 *                           user:password, or ~/.netrc
 *   file:///PATH            a folder, also on a shared file system: a blob is
 *                           written under a temporary name and renamed, so it is
 *                           whole or absent even with several writers at once
 *   s3://BUCKET/PREFIX      S3 or S3-compatible (FTPIPE_S3_ENDPOINT), requests
 *                           signed with AWS SigV4 from AWS_ACCESS_KEY_ID,
 *                           AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and
 *                           AWS_REGION / AWS_DEFAULT_REGION (default us-east-1)
 * Credentials are never logged, stored or shown in messages (ft_remote_url
 * leaves them out), and a redirect to another host does not carry them.
 *
 * One ft_remote may be used from several threads at once. */
#ifndef FTPIPE_REMOTE_H
#define FTPIPE_REMOTE_H

#include <stddef.h>

/* Failures, as negative results, with ft_error set: */
#define FT_REMOTE_UNAVAILABLE (-1) /* unreachable, failing, or answering nonsense: go on without it */
#define FT_REMOTE_DENIED (-2)      /* credentials missing or refused: the user must act */

typedef struct ft_remote ft_remote;

/* Checks the URL's form (nothing is contacted). -1 with a message naming it. */
int ft_remote_open(const char *url, ft_remote **out);
void ft_remote_close(ft_remote *remote);

/* The URL without credentials, for messages. */
const char *ft_remote_url(const ft_remote *remote);

/* 1 when the blob exists, 0 when not, or a failure. */
int ft_remote_has(ft_remote *remote, const char *name);

/* Writes the blob into destination (the caller verifies and renames it). Over
 * http(s) and S3, bytes already in destination (an interrupted earlier get of
 * the same blob) are kept and only the rest is asked for, by byte range; a file
 * remote copies the whole blob. 1 done, 0 no such blob, or a failure. */
typedef struct {
    void (*restart)(void *context);                                 /* what was seen is void: starting over */
    void (*bytes)(void *context, const void *data, size_t length);  /* the next received bytes, in order */
    void *context;
} ft_remote_observer;
/* observer (may be NULL) sees the blob's bytes as they arrive (a file remote's
 * from the copy), so a caller can check them without reading the file again. */
int ft_remote_get_file(ft_remote *remote, const char *name, const char *destination,
                       const ft_remote_observer *observer);
/* The blob in memory, NUL-terminated (at most 64 MiB). 1, 0 or a failure. */
int ft_remote_get_text(ft_remote *remote, const char *name, char **text, size_t *length);

/* Stores the file as the blob, so that readers see the whole of it or nothing. 0 or a failure. */
int ft_remote_put_file(ft_remote *remote, const char *name, const char *source);
int ft_remote_put_text(ft_remote *remote, const char *name, const char *text, size_t length);

#endif
