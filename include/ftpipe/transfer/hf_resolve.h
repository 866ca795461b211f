/* hf_resolve: a hub repository read through its file URLs alone
 * (ENDPOINT/ORG/NAME/resolve/REVISION/FILE), for mirrors that serve files but
 * not the /api/ file list, as huggingface_hub's single-file download reads them.
 *
 * One HEAD per file (redirects not followed, so the hub's own headers are read)
 * gives the commit the revision points at (X-Repo-Commit), the size
 * (X-Linked-Size, else Content-Length) and, for large files, the SHA-256
 * (X-Linked-Etag, else ETag, when it is 64 hex digits). After the first file
 * the revision is that commit, so every file comes from one commit. Only exact
 * names can be read so; patterns need the file list. */
#ifndef FTPIPE_HF_RESOLVE_H
#define FTPIPE_HF_RESOLVE_H

#include <stddef.h>

#include "ftpipe/transfer/fetch.h"
#include "ftpipe/transfer/hf_hub.h"

/* Fills listing (commit and files) with the named files, each NAME or, when
 * the repository lacks NAME, NAME.index.json. */
int ft_hf_resolve_listing(const ft_hf_repo *repo, const char *const *names, size_t n_names,
                          const ft_fetch_options *options, ft_hf_plan *listing);

/* Adds one file (a shard an index names) to a listing made above, at its commit:
 * 1 added, 0 when the repository lacks it, -1 on failure. */
int ft_hf_resolve_add(const ft_hf_repo *repo, const char *path, const ft_fetch_options *options,
                      ft_hf_plan *listing);

#endif
