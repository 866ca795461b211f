/* remote_internal: what remote.c shares with its transports (remote_file.c,
 * remote_http.c). Nothing outside transfer/ includes it. */
#ifndef FTPIPE_REMOTE_INTERNAL_H
#define FTPIPE_REMOTE_INTERNAL_H

#include <stddef.h>

#include "ftpipe/transfer/remote.h"

typedef enum { REMOTE_FILE, REMOTE_HTTP, REMOTE_S3 } remote_kind;

struct ft_remote {
    remote_kind kind;
    char *display_url; /* without credentials */
    char *base;        /* FILE: the folder; HTTP and S3: the URL that names are appended to (no credentials) */
    char *user_password; /* "user:password" for basic auth or S3's key pair; NULL: none */
    char *bearer_token;  /* NULL: none */
    char *aws_sigv4;     /* S3: "aws:amz:REGION:s3" */
    char *session_token_header; /* S3: "x-amz-security-token: ..." or NULL */
};

int ft_remote_file_has(ft_remote *remote, const char *name);
int ft_remote_file_get(ft_remote *remote, const char *name, const char *destination);
int ft_remote_file_put(ft_remote *remote, const char *name, const char *source, const char *text, size_t length);

int ft_remote_http_has(ft_remote *remote, const char *name);
int ft_remote_http_get(ft_remote *remote, const char *name, const char *destination,
                       const ft_remote_observer *observer);
int ft_remote_http_put(ft_remote *remote, const char *name, const char *source, const char *text, size_t length);

#endif
