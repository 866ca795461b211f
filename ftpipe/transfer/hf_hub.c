/* hf_hub: the hub's file list, name selection, and index following. */
#include "ftpipe/transfer/hf_hub.h"

#include <fnmatch.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/transfer/fetch_http.h"
#include "ftpipe/transfer/hf_resolve.h"

enum { MAX_NAMES_IN_MESSAGES = 12 };

/* How messages name the repository: "ORG/NAME" or "datasets/ORG/NAME". */
static const char *repo_type_prefix(const ft_hf_repo *repo) { return repo->is_dataset ? "datasets/" : ""; }

static bool repo_name_is_valid(const char *name)
{
    int components = 1;
    const char *component = name;
    for (const char *p = name;; p++) {
        if (*p == '/' || *p == '\0') {
            size_t length = (size_t)(p - component);
            if (length == 0 || (length <= 2 && strncmp(component, "..", length) == 0))
                return false;
            if (*p == '\0')
                break;
            components++;
            component = p + 1;
        } else if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') && !(*p >= '0' && *p <= '9') &&
                   !strchr("-_.", *p)) {
            return false;
        }
    }
    return components <= 2;
}

int ft_hf_parse_url(const char *url, const char *revision, const char *endpoint, ft_hf_repo *out)
{
    *out = (ft_hf_repo){0};
    const char *rest = url + 5;
    if (strncmp(url, "hf://", 5) != 0)
        return ft_error("%s is not an hf:// URL", url);
    if (strncmp(rest, "datasets/", 9) == 0) {
        out->is_dataset = true;
        rest += 9;
    } else if (strncmp(rest, "models/", 7) == 0) {
        rest += 7;
    }
    const char *at = strchr(rest, '@');
    char *name = at ? ft_xstrndup(rest, (size_t)(at - rest)) : ft_xstrdup(rest);
    if (!repo_name_is_valid(name) || (at && at[1] == '\0')) {
        free(name);
        return ft_error("%s is not a repository URL: expected hf://ORG/NAME[@REVISION] or "
                        "hf://datasets/ORG/NAME[@REVISION]", url);
    }
    if (at && revision && strcmp(at + 1, revision) != 0) {
        free(name);
        return ft_error("%s asks for revision %s but the stage says revision = %s: keep one of them", url, at + 1,
                        revision);
    }
    out->repo = name;
    out->revision = ft_xstrdup(at ? at + 1 : revision ? revision : "main");
    const char *base = endpoint && endpoint[0] ? endpoint : FT_HF_DEFAULT_ENDPOINT;
    size_t length = strlen(base);
    while (length > 0 && base[length - 1] == '/')
        length--;
    out->endpoint = ft_xstrndup(base, length);
    return 0;
}

void ft_hf_repo_free(ft_hf_repo *repo)
{
    free(repo->endpoint);
    free(repo->repo);
    free(repo->revision);
    *repo = (ft_hf_repo){0};
}

bool ft_hf_path_is_safe(const char *path)
{
    if (path[0] == '\0' || path[0] == '/')
        return false;
    const char *component = path;
    for (const char *p = path;; p++) {
        if (*p == '/' || *p == '\0') {
            size_t length = (size_t)(p - component);
            if (length == 0 || (length == 1 && component[0] == '.') || (length == 2 && !strncmp(component, "..", 2)))
                return false;
            if (*p == '\0')
                return true;
            component = p + 1;
        }
    }
}

/* Percent-encodes text for a URL path; '/' stays when keep_slash. */
static void put_escaped(ft_strbuf *out, const char *text, bool keep_slash)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p) || (keep_slash && *p == '/'))
            ft_strbuf_putc(out, (char)*p);
        else
            ft_strbuf_printf(out, "%%%02X", *p);
    }
}

static char *file_url(const ft_hf_repo *repo, const char *commit, const char *path)
{
    ft_strbuf url;
    ft_strbuf_init(&url);
    ft_strbuf_printf(&url, "%s/%s%s/resolve/", repo->endpoint, repo_type_prefix(repo), repo->repo);
    put_escaped(&url, commit, false);
    ft_strbuf_putc(&url, '/');
    put_escaped(&url, path, true);
    char *text = ft_strbuf_take(&url);
    ft_strbuf_free(&url);
    return text;
}

char *ft_hf_auth_hint(const ft_hf_repo *repo, bool token_set)
{
    if (token_set)
        return ft_xasprintf("HF_TOKEN was refused for %s%s: check that the token is valid and can read it "
                            "(a gated model also needs its terms accepted on its page)",
                            repo_type_prefix(repo), repo->repo);
    return ft_xasprintf("%s%s may be private or gated, or may not exist: set HF_TOKEN to a token that can read it",
                        repo_type_prefix(repo), repo->repo);
}

char *ft_hf_not_found_hint(const ft_hf_repo *repo)
{
    return ft_xasprintf("check the file name and that revision %s of %s%s has it", repo->revision,
                        repo_type_prefix(repo), repo->repo);
}

/* --- the file list --- */

static void free_file(ft_hf_file *file)
{
    free(file->path);
    free(file->url);
    free(file->sha256);
}

void ft_hf_plan_free(ft_hf_plan *plan)
{
    for (size_t i = 0; i < plan->n_files; i++)
        free_file(&plan->files[i]);
    free(plan->files);
    free(plan->commit);
    *plan = (ft_hf_plan){0};
}

/* Reads {"sha": COMMIT, "siblings": [{"rfilename", "size", "lfs": {"sha256"}}]} into listing. */
static int parse_listing(const char *json, const char *what, ft_hf_plan *listing)
{
    json_error_t error;
    json_t *root = json_loads(json, 0, &error);
    if (!root)
        return ft_error("the file list of %s is not JSON (line %d: %s)", what, error.line, error.text);
    json_t *siblings = json_object_get(root, "siblings");
    int result = 0;
    if (!json_is_array(siblings))
        result = ft_error("the file list of %s has no \"siblings\" list", what);
    const char *commit = json_string_value(json_object_get(root, "sha"));
    listing->commit = commit ? ft_xstrdup(commit) : NULL;
    size_t capacity = 0;
    for (size_t i = 0; result == 0 && i < json_array_size(siblings); i++) {
        json_t *sibling = json_array_get(siblings, i);
        const char *path = json_string_value(json_object_get(sibling, "rfilename"));
        if (!path || !ft_hf_path_is_safe(path)) {
            result = ft_error("the file list of %s names a file \"%s\" that cannot be saved safely", what,
                              path ? path : "(none)");
            break;
        }
        json_t *size = json_object_get(sibling, "size");
        const char *sha256 = json_string_value(json_object_get(json_object_get(sibling, "lfs"), "sha256"));
        ft_grow((void **)&listing->files, &capacity, listing->n_files + 1, sizeof *listing->files);
        listing->files[listing->n_files++] = (ft_hf_file){
            .path = ft_xstrdup(path),
            .size_bytes = json_is_integer(size) ? (int64_t)json_integer_value(size) : -1,
            .sha256 = sha256 ? ft_xstrdup(sha256) : NULL,
        };
    }
    json_decref(root);
    return result;
}

static int list_repo(const ft_hf_repo *repo, const ft_fetch_options *options, ft_hf_plan *listing)
{
    ft_strbuf url;
    ft_strbuf_init(&url);
    ft_strbuf_printf(&url, "%s/api/%s/%s/revision/", repo->endpoint, repo->is_dataset ? "datasets" : "models",
                     repo->repo);
    put_escaped(&url, repo->revision, false);
    ft_strbuf_puts(&url, "?blobs=true");
    ft_fetch_options list_options = *options;
    char *not_found = ft_xasprintf("check the repository name (%s%s) and the revision (%s)",
                                   repo_type_prefix(repo), repo->repo, repo->revision);
    list_options.not_found_hint = not_found;
    char *what = ft_xasprintf("%s%s at revision %s", repo_type_prefix(repo), repo->repo, repo->revision);
    char *name = ft_xasprintf("the file list of %s%s", repo_type_prefix(repo), repo->repo);
    char *json = NULL;
    int result = ft_fetch_text(url.data, name, &list_options, &json, NULL);
    if (result == 0)
        result = parse_listing(json, what, listing);
    free(json);
    free(name);
    free(what);
    free(not_found);
    ft_strbuf_free(&url);
    return result;
}

/* --- selection --- */

static const ft_hf_file *find_file(const ft_hf_plan *plan, const char *path)
{
    for (size_t i = 0; i < plan->n_files; i++)
        if (strcmp(plan->files[i].path, path) == 0)
            return &plan->files[i];
    return NULL;
}

static void select_file(ft_hf_plan *plan, size_t *capacity, const ft_hf_file *file)
{
    if (find_file(plan, file->path))
        return;
    ft_grow((void **)&plan->files, capacity, plan->n_files + 1, sizeof *plan->files);
    plan->files[plan->n_files++] = (ft_hf_file){
        .path = ft_xstrdup(file->path),
        .size_bytes = file->size_bytes,
        .sha256 = file->sha256 ? ft_xstrdup(file->sha256) : NULL,
    };
}

/* "NAME is not in ORG/NAME at revision main; its files: a, b, c" */
static int missing_error(const ft_hf_repo *repo, const ft_hf_plan *listing, const char *what)
{
    ft_strbuf names;
    ft_strbuf_init(&names);
    for (size_t i = 0; i < listing->n_files && i < MAX_NAMES_IN_MESSAGES; i++)
        ft_strbuf_printf(&names, "%s%s", i ? ", " : "", listing->files[i].path);
    if (listing->n_files > MAX_NAMES_IN_MESSAGES)
        ft_strbuf_printf(&names, " and %zu more", listing->n_files - MAX_NAMES_IN_MESSAGES);
    if (listing->n_files == 0)
        ft_strbuf_puts(&names, "none");
    ft_error("%s %s%s at revision %s; its files: %s", what, repo_type_prefix(repo), repo->repo, repo->revision,
             names.data);
    ft_strbuf_free(&names);
    return -1;
}

static int select_requested(const ft_hf_repo *repo, const ft_hf_plan *listing, const char *const *requests,
                            size_t n_requests, const ft_fetch_options *options, ft_hf_plan *plan,
                            size_t *capacity)
{
    if (n_requests == 0)
        for (size_t i = 0; i < listing->n_files; i++)
            select_file(plan, capacity, &listing->files[i]);
    for (size_t r = 0; r < n_requests; r++) {
        const char *request = requests[r];
        if (strpbrk(request, "*?[")) {
            size_t matched = 0;
            for (size_t i = 0; i < listing->n_files; i++) {
                if (fnmatch(request, listing->files[i].path, 0) == 0) {
                    select_file(plan, capacity, &listing->files[i]);
                    matched++;
                }
            }
            if (matched == 0) {
                char *what = ft_xasprintf("no file matches %s in", request);
                missing_error(repo, listing, what);
                free(what);
                return -1;
            }
            continue;
        }
        const ft_hf_file *file = find_file(listing, request);
        char *index_path = ft_xasprintf("%s.index.json", request);
        const ft_hf_file *index = file ? NULL : find_file(listing, index_path);
        free(index_path);
        if (index)
            ft_http_log(options, "%s is sharded: following %s", request, index->path);
        if (!file && !index) {
            char *what = ft_xasprintf("%s is not in", request);
            missing_error(repo, listing, what);
            free(what);
            return -1;
        }
        select_file(plan, capacity, file ? file : index);
    }
    return 0;
}

/* --- without the file list: one HEAD per named file (hf_resolve) --- */

/* Adds path, at the listing's commit once known: 1 added, 0 absent, -1 failure. */
static int resolve_add(const ft_hf_repo *repo, const char *path, const ft_fetch_options *options,
                       ft_hf_plan *listing)
{
    char *url = file_url(repo, listing->commit ? listing->commit : repo->revision, path);
    ft_hf_head head;
    int found = ft_hf_head_file(url, path, options, &head);
    free(url);
    if (found != 1)
        return found;
    if (!listing->commit && head.commit)
        listing->commit = ft_xstrdup(head.commit);
    listing->files = ft_xrealloc(listing->files, (listing->n_files + 1) * sizeof *listing->files);
    listing->files[listing->n_files++] = (ft_hf_file){
        .path = ft_xstrdup(path),
        .size_bytes = head.size_bytes,
        .sha256 = head.sha256 ? ft_xstrdup(head.sha256) : NULL,
    };
    ft_hf_head_free(&head);
    return 1;
}

/* A listing of the named files, each NAME or, when absent, NAME.index.json. */
static int resolve_listing(const ft_hf_repo *repo, const char *const *names, size_t n_names,
                           const ft_fetch_options *options, ft_hf_plan *listing)
{
    *listing = (ft_hf_plan){0};
    for (size_t i = 0; i < n_names; i++) {
        int found = resolve_add(repo, names[i], options, listing);
        if (found == 0) {
            char *index = ft_xasprintf("%s.index.json", names[i]);
            found = resolve_add(repo, index, options, listing);
            free(index);
            if (found == 0)
                ft_error("%s is not in %s%s at revision %s (asked at %s, which lists no files, so no names can "
                         "be suggested)",
                         names[i], repo_type_prefix(repo), repo->repo, repo->revision, repo->endpoint);
        }
        if (found != 1) {
            ft_hf_plan_free(listing);
            return -1;
        }
    }
    return 0;
}

/* --- index following --- */

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int ft_hf_index_shards(const char *index_path, char ***shards, size_t *count)
{
    *shards = NULL;
    *count = 0;
    json_error_t error;
    json_t *root = json_load_file(index_path, 0, &error);
    if (!root)
        return ft_error("%s is not a JSON checkpoint index (line %d: %s)", index_path, error.line, error.text);
    json_t *weight_map = json_object_get(root, "weight_map");
    if (!json_is_object(weight_map)) {
        json_decref(root);
        return ft_error("%s has no \"weight_map\" object: it is not a checkpoint index", index_path);
    }
    size_t capacity = 0;
    const char *tensor;
    json_t *value;
    int result = 0;
    json_object_foreach(weight_map, tensor, value) {
        const char *shard = json_string_value(value);
        if (!shard || !ft_hf_path_is_safe(shard)) {
            result = ft_error("%s maps tensor %s to \"%s\", which is not a file name that can be saved safely",
                              index_path, tensor, shard ? shard : "(not a string)");
            break;
        }
        ft_grow((void **)shards, &capacity, *count + 1, sizeof **shards);
        (*shards)[(*count)++] = ft_xstrdup(shard);
    }
    json_decref(root);
    if (result != 0) {
        for (size_t i = 0; i < *count; i++)
            free((*shards)[i]);
        free(*shards);
        *shards = NULL;
        *count = 0;
        return result;
    }
    if (*count > 1)
        qsort(*shards, *count, sizeof **shards, compare_names);
    size_t unique = 0;
    for (size_t i = 0; i < *count; i++) {
        if (unique > 0 && strcmp((*shards)[unique - 1], (*shards)[i]) == 0)
            free((*shards)[i]);
        else
            (*shards)[unique++] = (*shards)[i];
    }
    *count = unique;
    return result;
}

/* Fetches an index and selects the shards it names (a listing made by
 * hf_resolve learns of each shard here). */
static int follow_index(const ft_hf_repo *repo, ft_hf_plan *listing, bool resolved_one_by_one,
                        const ft_hf_file *index, const char *download_dir, const ft_fetch_options *options,
                        ft_hf_plan *plan, size_t *capacity)
{
    char *dest = ft_path_join(download_dir, index->path);
    ft_fetch_file file = {index->url, dest, index->path, index->size_bytes, index->sha256};
    char **shards = NULL;
    size_t n_shards = 0;
    ft_fetch_stats stats;
    int result = ft_fetch_files(&file, 1, options, &stats);
    plan->bytes_received += stats.bytes_received;
    if (result == 0)
        result = ft_hf_index_shards(dest, &shards, &n_shards);
    char *folder = ft_path_dirname(index->path);
    for (size_t i = 0; i < n_shards; i++) {
        char *path = strcmp(folder, ".") == 0 ? ft_xstrdup(shards[i]) : ft_path_join(folder, shards[i]);
        if (result == 0 && resolved_one_by_one && !find_file(listing, path) &&
            resolve_add(repo, path, options, listing) < 0)
            result = -1;
        const ft_hf_file *shard = find_file(listing, path);
        if (result == 0 && !shard)
            result = ft_error("%s names the shard %s, which %s%s at revision %s does not have", index->path, path,
                              repo_type_prefix(repo), repo->repo, repo->revision);
        if (result == 0)
            select_file(plan, capacity, shard);
        free(path);
        free(shards[i]);
    }
    free(shards);
    free(folder);
    free(dest);
    return result;
}

/* The download folder holds the files of one commit: what an interrupted run
 * left there for another commit (the revision moved since) is removed first. */
static int claim_download_dir(const char *download_dir, const char *commit)
{
    char *marker = ft_path_join(download_dir, ".ftpipe-commit");
    char *previous = NULL;
    if (ft_read_file(marker, &previous, NULL) != 0)
        ft_error_clear();
    int result = 0;
    if (!previous || strcmp(previous, commit) != 0) {
        result = ft_remove_tree(download_dir);
        if (result == 0)
            result = ft_mkdir_p(download_dir);
        if (result == 0)
            result = ft_write_file_atomic(marker, commit, strlen(commit));
    }
    free(previous);
    free(marker);
    return result;
}

static bool names_are_exact(const char *const *requests, size_t n_requests)
{
    for (size_t i = 0; i < n_requests; i++)
        if (strpbrk(requests[i], "*?["))
            return false;
    return true;
}

static bool is_index(const char *path)
{
    size_t length = strlen(path);
    return length > 11 && strcmp(path + length - 11, ".index.json") == 0;
}

int ft_hf_plan_files(const ft_hf_repo *repo, const char *const *requests, size_t n_requests,
                     const char *download_dir, const ft_fetch_options *options, ft_hf_plan *plan)
{
    *plan = (ft_hf_plan){0};
    ft_hf_plan listing = {0};
    size_t capacity = 0;
    int result = list_repo(repo, options, &listing);
    bool resolved_one_by_one = false;
    if (result != 0 && n_requests > 0 && names_are_exact(requests, n_requests)) {
        char *listing_error = ft_xstrdup(ft_error_message());
        if (resolve_listing(repo, requests, n_requests, options, &listing) == 0) {
            ft_http_log(options, "no file list (%s): the %zu named files were found one by one", listing_error,
                        n_requests);
            resolved_one_by_one = true;
            result = 0;
        } else {
            ft_error("%s", listing_error);
        }
        free(listing_error);
    }
    if (result == 0)
        result = select_requested(repo, &listing, requests, n_requests, options, plan, &capacity);
    const char *commit = listing.commit ? listing.commit : repo->revision;
    if (result == 0)
        result = claim_download_dir(download_dir, commit);
    /* Shards join the end of the list, so this loop reaches them too (they are no indexes). */
    for (size_t i = 0; result == 0 && i < plan->n_files; i++) {
        plan->files[i].url = file_url(repo, commit, plan->files[i].path);
        if (is_index(plan->files[i].path)) {
            ft_hf_file index = plan->files[i];
            result = follow_index(repo, &listing, resolved_one_by_one, &index, download_dir, options, plan,
                                  &capacity);
        }
    }
    plan->commit = listing.commit;
    listing.commit = NULL;
    ft_hf_plan_free(&listing);
    if (result != 0)
        ft_hf_plan_free(plan);
    return result;
}
