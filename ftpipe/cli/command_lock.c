/* command_lock: `ftpipe lock [--update] [TARGET...]` — resolves each download
 * (an hf:// revision to its commit), builds it at that commit, and records every
 * file's size and SHA-256 in PIPELINE.lock (lock_file.h says how a run uses it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/sha256.h"
#include "ftpipe/cli/commands.h"
#include "ftpipe/engine/manifest.h"
#include "ftpipe/transfer/hf_hub.h"

static bool is_download(const ft_node *node) { return strcmp(node->kind->name, "download") == 0; }

/* The commit an hf:// download's revision points at now. Caller frees. */
static int resolve_commit(const ft_session *session, const ft_node *node, char **commit)
{
    const ft_param_value *url = ft_params_get(&node->params, "url");
    const ft_param_value *revision = ft_params_get(&node->params, "revision");
    const ft_param_value *files = ft_params_get(&node->params, "files");
    ft_hf_repo repo;
    if (ft_hf_parse_url(url->text, revision->is_set ? revision->text : NULL, getenv("HF_ENDPOINT"), &repo) != 0)
        return ft_error_context("%s", node->target);
    ft_fetch_options options;
    ft_fetch_options_default(&options);
    const char *token = getenv("HF_TOKEN");
    options.bearer_token = token && token[0] ? token : NULL;
    char *auth_hint = ft_hf_auth_hint(&repo, options.bearer_token != NULL);
    options.auth_hint = auth_hint;
    /* Planning may fetch a sharded model's index: into a scratch folder, removed after. */
    char *scratch = ft_xasprintf("%s/tmp/lock-%ld", session->workspace->state_dir, (long)getpid());
    ft_hf_plan plan;
    int result = ft_mkdir_p(scratch);
    if (result == 0)
        result = ft_hf_plan_files(&repo, (const char *const *)files->items, files->n_items, scratch, &options, &plan);
    if (result == 0) {
        if (plan.commit)
            *commit = ft_xstrdup(plan.commit);
        else
            result = ft_error("%s: the hub did not say which commit revision %s of %s is; it cannot be locked",
                              node->target, repo.revision, repo.repo);
        ft_hf_plan_free(&plan);
    } else {
        ft_error_context("cannot lock %s", node->target);
    }
    ft_remove_tree(scratch);
    free(scratch);
    free(auth_hint);
    ft_hf_repo_free(&repo);
    return result;
}

/* Which downloads to (re)lock: the named ones or all; without --update only those not locked yet. */
static int choose(const ft_session *session, const ft_invocation *invocation, bool update, ft_lock *lock,
                  size_t *chosen, size_t *n_chosen)
{
    const ft_graph *graph = session->graph;
    *n_chosen = 0;
    for (size_t i = 0; i < invocation->n_arguments; i++) {
        size_t index = ft_graph_find(graph, invocation->arguments[i]);
        if (index == FT_NO_NODE)
            return ft_error("no stage makes %s", invocation->arguments[i]);
        if (!is_download(&graph->nodes[index]))
            return ft_error("%s is a %s stage: only downloads are locked", invocation->arguments[i],
                            graph->nodes[index].kind->name);
    }
    for (size_t o = 0; o < graph->n_nodes; o++) {
        size_t index = graph->order[o];
        const ft_node *node = &graph->nodes[index];
        if (!is_download(node))
            continue;
        bool named = invocation->n_arguments == 0;
        for (size_t i = 0; i < invocation->n_arguments && !named; i++)
            named = ft_graph_find(graph, invocation->arguments[i]) == index;
        const ft_lock_entry *entry = ft_lock_find(lock, node->target);
        if (named && (update || !entry || entry->n_files == 0))
            chosen[(*n_chosen)++] = index;
    }
    return 0;
}

/* Each file of the built output, with its size and SHA-256, into the entry. */
static int record_files(const ft_node *node, ft_lock_entry *entry)
{
    ft_manifest *manifest = NULL;
    if (ft_manifest_build(NULL, node->target_path, 0, &manifest) != 0)
        return -1;
    const char **paths = ft_xcalloc(manifest->n_entries + 1, sizeof *paths);
    size_t n = 0;
    for (size_t i = 0; i < manifest->n_entries; i++)
        if (manifest->entries[i].type == FT_ENTRY_FILE)
            paths[n++] = ft_path_join(node->target_path, manifest->entries[i].path);
    char (*hex)[FT_SHA256_HEX_LENGTH + 1] = ft_xcalloc(n + 1, sizeof *hex);
    int result = ft_sha256_files_hex(paths, n, hex);
    for (size_t i = 0, f = 0; result == 0 && i < manifest->n_entries; i++)
        if (manifest->entries[i].type == FT_ENTRY_FILE) {
            ft_lock_entry_add_file(entry, manifest->entries[i].path, manifest->entries[i].size_bytes, hex[f]);
            f++;
        }
    for (size_t i = 0; i < n; i++)
        free((char *)paths[i]);
    free(paths);
    free(hex);
    ft_manifest_free(manifest);
    return result;
}

int ft_command_lock(const ft_invocation *invocation)
{
    bool update = invocation->n_arguments > 0 && strcmp(invocation->arguments[0], "--update") == 0;
    ft_invocation request = *invocation;
    if (update) {
        request.arguments++;
        request.n_arguments--;
    }
    char *path = ft_lock_path(invocation->pipeline_path);
    ft_lock *lock = NULL;
    if (ft_lock_read(path, &lock) != 0) {
        free(path);
        return 1;
    }
    free(path);

    /* The stages as written, unpinned: what to lock and where it points now. */
    ft_invocation unpinned = request;
    unpinned.unlock_all = true;
    ft_session session;
    if (ft_session_open(&unpinned, false, &session) != 0) {
        ft_lock_free(lock);
        return 1;
    }
    size_t *chosen = ft_xcalloc(session.graph->n_nodes + 1, sizeof *chosen);
    size_t n_chosen = 0;
    const char **targets = ft_xcalloc(session.graph->n_nodes + 1, sizeof *targets);
    int result = choose(&session, &request, update, lock, chosen, &n_chosen);
    for (size_t i = 0; result == 0 && i < n_chosen; i++) {
        const ft_node *node = &session.graph->nodes[chosen[i]];
        const ft_param_value *url = ft_params_get(&node->params, "url");
        const ft_param_value *revision = ft_params_get(&node->params, "revision");
        char *commit = NULL;
        if (strncmp(url->text, "hf://", 5) == 0)
            result = resolve_commit(&session, node, &commit);
        if (result == 0) {
            ft_lock_put(lock, node->decl->target, url->text,
                        revision->is_set ? revision->text : "", commit);
            targets[i] = ft_xstrdup(node->target);
        }
        free(commit);
    }
    ft_session_close(&session);

    /* Built at the resolved commits (or restored, when a cache or the remote has them). */
    int status = result == 0 ? 0 : 1;
    if (status == 0 && n_chosen > 0) {
        ft_invocation build = *invocation;
        build.command = NULL;
        build.arguments = targets;
        build.n_arguments = n_chosen;
        build.lock = lock;
        status = ft_run_pipeline(&build);
    }
    if (status == 0 && n_chosen > 0) {
        ft_invocation pinned = *invocation;
        pinned.lock = lock;
        if (ft_session_open(&pinned, false, &session) != 0) {
            status = 1;
        } else {
            for (size_t i = 0; status == 0 && i < n_chosen; i++) {
                const ft_node *node = &session.graph->nodes[ft_graph_find(session.graph, targets[i])];
                ft_lock_entry *entry = ft_lock_find(lock, node->target);
                if (record_files(node, entry) != 0)
                    status = 1;
                else
                    printf("locked %s: %s%s%s (%zu file%s)\n", node->target, entry->url,
                           entry->commit[0] ? " at commit " : "", entry->commit, entry->n_files,
                           entry->n_files == 1 ? "" : "s");
            }
            ft_session_close(&session);
        }
        if (status == 0 && ft_lock_write(lock) != 0)
            status = 1;
    } else if (status == 0) {
        printf("ftpipe: %s is up to date (%zu download%s locked)\n", lock->path, lock->n_entries,
               lock->n_entries == 1 ? "" : "s");
    }
    for (size_t i = 0; i < n_chosen; i++)
        free((char *)targets[i]);
    free(targets);
    free(chosen);
    ft_lock_free(lock);
    return status;
}
