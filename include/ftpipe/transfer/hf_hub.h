/* hf_hub: hf:// URLs resolved to the Hugging Face hub's layout.
 *
 *   hf://ORG/NAME[@REVISION]           a model
 *   hf://datasets/ORG/NAME[@REVISION]  a dataset
 *
 * The hub's file list (GET <endpoint>/api/models/ORG/NAME/revision/REVISION?blobs=true)
 * names the commit the revision points at and every file with its size (and, for
 * large files, its sha256); files are then fetched from
 * <endpoint>/ORG/NAME/resolve/COMMIT/FILE, so a revision that moves during the
 * download cannot mix two versions. The endpoint is https://huggingface.co or
 * $HF_ENDPOINT (a mirror). Requested names may be glob patterns ("*.safetensors",
 * matched as fnmatch does without FNM_PATHNAME, as huggingface_hub does), and a
 * sharded checkpoint's index (*.index.json) is followed to its shards. A server
 * without the /api/ list (a static mirror) still serves exact names: they are
 * then found one by one on their resolve URLs (hf_resolve.h). */
#ifndef FTPIPE_HF_HUB_H
#define FTPIPE_HF_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/transfer/fetch.h"

#define FT_HF_DEFAULT_ENDPOINT "https://huggingface.co"

typedef struct {
    char *endpoint;  /* without a trailing slash */
    bool is_dataset;
    char *repo;      /* ORG/NAME (or NAME) */
    char *revision;  /* a branch, tag or commit */
} ft_hf_repo;

/* Parses an hf:// URL. `revision` (may be NULL) is the revision asked for
 * outside the URL; a URL's own @REVISION must not contradict it. */
int ft_hf_parse_url(const char *url, const char *revision, const char *endpoint, ft_hf_repo *out);
void ft_hf_repo_free(ft_hf_repo *repo);

/* Whether a file name from a user or a server is safe to create below a folder:
 * relative, no empty, "." or ".." component. */
bool ft_hf_path_is_safe(const char *path);

typedef struct {
    char *path;         /* in the repository, '/'-separated */
    char *url;          /* where it is fetched from */
    int64_t size_bytes; /* -1: unknown */
    char *sha256;       /* the hub's checksum of a large (LFS) file, else NULL */
} ft_hf_file;

typedef struct {
    char *commit;       /* the commit the revision pointed at; NULL when the hub did not say */
    ft_hf_file *files;
    size_t n_files;
    uint64_t bytes_received; /* fetched while planning: the indexes */
} ft_hf_plan;

/* Lists the repository, selects the requested names and patterns (none: every
 * file), follows each selected *.index.json to its shards (fetching the index
 * into download_dir/PATH with `options`), and returns what to fetch. An exact
 * name that is missing while NAME.index.json exists selects that index.
 * download_dir keeps one commit's files (it records which in .ftpipe-commit):
 * files left there for another commit are removed. */
int ft_hf_plan_files(const ft_hf_repo *repo, const char *const *requests, size_t n_requests,
                     const char *download_dir, const ft_fetch_options *options, ft_hf_plan *plan);
void ft_hf_plan_free(ft_hf_plan *plan);

/* The file names a checkpoint index's "weight_map" names, relative to the
 * index's folder, each once, in order of first appearance. */
int ft_hf_index_shards(const char *index_path, char ***shards, size_t *count);

/* The hints fetch puts at the end of 401/403 and 404 messages for this repository
 * (token_set: whether HF_TOKEN was given). Caller frees. */
char *ft_hf_auth_hint(const ft_hf_repo *repo, bool token_set);
char *ft_hf_not_found_hint(const ft_hf_repo *repo);

#endif
