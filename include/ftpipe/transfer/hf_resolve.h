/* hf_resolve: what the hub says about one file in the headers of its resolve URL
 * (ENDPOINT/ORG/NAME/resolve/REVISION/FILE), read with a HEAD request as
 * huggingface_hub's single-file download reads them: the commit the revision
 * points at (X-Repo-Commit), the size (X-Linked-Size, else Content-Length) and,
 * for large files, the SHA-256 (X-Linked-Etag, else ETag, when it is 64 hex
 * digits). Redirects are not followed, so the hub's own headers are read. hf_hub
 * uses it for mirrors that serve files but not the /api/ file list. */
#ifndef FTPIPE_HF_RESOLVE_H
#define FTPIPE_HF_RESOLVE_H

#include <stdint.h>

#include "ftpipe/transfer/fetch.h"

typedef struct {
    int64_t size_bytes; /* -1: not said */
    char *sha256;       /* NULL: not said */
    char *commit;       /* NULL: not said */
} ft_hf_head;

/* 1 and what the headers say, 0 when the server has no such file (404), -1 with
 * a message naming `name` and the URL otherwise. Transient failures are retried. */
int ft_hf_head_file(const char *url, const char *name, const ft_fetch_options *options, ft_hf_head *out);
void ft_hf_head_free(ft_hf_head *head);

#endif
