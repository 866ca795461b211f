/* command_remote: `ftpipe push`, `ftpipe pull` and `ftpipe remote status` — the
 * remote cache by hand, strict: any failure is an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/clock.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/cli/commands.h"
#include "ftpipe/engine/plan.h"
#include "ftpipe/engine/publish.h"

typedef enum { REMOTE_PUSH, REMOTE_PULL, REMOTE_STATUS } remote_command;

/* A selected stage's result in this workspace's cache, or NULL. */
static ft_manifest *local_result(ft_session *session, const ft_plan *plan)
{
    if (plan->action != FT_PLAN_UP_TO_DATE && plan->action != FT_PLAN_RESTORE)
        return NULL;
    ft_manifest *manifest = NULL;
    return ft_cache_lookup(session->workspace->cache, plan->key.key, &manifest) == 1 ? manifest : NULL;
}

static int push_one(ft_session *session, ft_remote_sync *remote, const ft_node *node, const ft_plan *plan,
                    size_t *missing)
{
    ft_manifest *manifest = local_result(session, plan);
    if (!manifest) {
        printf("not built  %s (run ftpipe first)\n", node->target);
        (*missing)++;
        return 0;
    }
    uint64_t sent_bytes = 0;
    uint64_t start_ns = ft_now_ns();
    int result = ft_remote_sync_push(remote, session->workspace->cache, plan->key.key, node->target, manifest,
                                     &sent_bytes);
    ft_manifest_free(manifest);
    if (result != 0)
        return ft_error_context("cannot push %s", node->target);
    char sent[32];
    ft_format_bytes(sent_bytes, sent, sizeof sent);
    printf("pushed     %s (%s sent in %.1f s)\n", node->target, sent, (double)(ft_now_ns() - start_ns) / 1e9);
    return 0;
}

static int pull_one(ft_session *session, ft_remote_sync *remote, const ft_node *node, ft_plan *plan,
                    size_t *missing)
{
    if (plan->action == FT_PLAN_UP_TO_DATE)
        return 0;
    if (plan->action == FT_PLAN_WAITS || !plan->has_key) {
        printf("not pulled %s: an input is not here\n", node->target);
        (*missing)++;
        return 0;
    }
    if (plan->action == FT_PLAN_RUN) {
        ft_manifest *manifest = NULL;
        int found = ft_remote_sync_restore(remote, session->workspace->cache, plan->key.key, node->target, &manifest);
        if (found < 0)
            return ft_error_context("cannot pull %s", node->target);
        if (found == 0) {
            printf("not pulled %s: not on the remote\n", node->target);
            (*missing)++;
            return 0;
        }
        plan->manifest = manifest;
        ft_hash_to_hex(manifest->hash, plan->output_hash);
        plan->action = FT_PLAN_RESTORE;
    }
    if (ft_publish_restore(session->workspace, node, plan) != 0)
        return -1;
    printf("pulled     %s\n", node->target);
    return 0;
}

static int status_one(ft_session *session, ft_remote_sync *remote, const ft_node *node, const ft_plan *plan)
{
    if (!plan->has_key) {
        printf("unknown    %s (an input is not built yet, so its key is not known)\n", node->target);
        return 0;
    }
    ft_manifest *manifest = local_result(session, plan);
    bool local = manifest != NULL;
    ft_manifest_free(manifest);
    int on_remote = ft_remote_sync_has(remote, plan->key.key);
    if (on_remote < 0)
        return -1;
    printf("%-10s %s\n", local && on_remote ? "both" : local ? "local" : on_remote ? "remote" : "neither",
           node->target);
    return 0;
}

int ft_command_remote(const ft_invocation *invocation)
{
    remote_command command = strcmp(invocation->command, "push") == 0   ? REMOTE_PUSH
                             : strcmp(invocation->command, "pull") == 0 ? REMOTE_PULL
                                                                        : REMOTE_STATUS;
    const char *const *targets = invocation->arguments;
    size_t n_targets = invocation->n_arguments;
    if (command == REMOTE_STATUS) {
        if (n_targets == 0 || strcmp(targets[0], "status") != 0) {
            fprintf(stderr, "ftpipe: usage: ftpipe remote status [TARGET...]\n");
            return 2;
        }
        targets++;
        n_targets--;
    }
    ft_session session;
    if (ft_session_open(invocation, command == REMOTE_PULL, &session) != 0)
        return 1;
    ft_remote_sync *remote = NULL;
    int result = ft_session_open_remote(invocation, &session, true, NULL, &remote);
    if (result == 0 && !remote)
        result = ft_error("no remote cache named: set FTPIPE_REMOTE=URL, give --remote URL, or write "
                          "`.REMOTE: URL` in the pipeline");
    if (result == 0 && command == REMOTE_PUSH && !ft_remote_sync_writable(remote))
        result = ft_error("FTPIPE_REMOTE_MODE=read: this workspace may not push to %s", ft_remote_sync_url(remote));
    if (result == 0)
        result = ft_graph_select(session.graph, targets, n_targets);
    ft_graph *graph = session.graph;
    ft_plan *plans = result == 0 ? ft_xcalloc(graph->n_nodes + 1, sizeof *plans) : NULL;
    size_t missing = 0;
    for (size_t o = 0; result == 0 && o < graph->n_nodes; o++) {
        size_t index = graph->order[o];
        const ft_node *node = &graph->nodes[index];
        if (!node->selected)
            continue;
        result = ft_plan_node(session.workspace, graph, index, plans);
        if (result != 0)
            break;
        if (command == REMOTE_PUSH)
            result = push_one(&session, remote, node, &plans[index], &missing);
        else if (command == REMOTE_PULL)
            result = pull_one(&session, remote, node, &plans[index], &missing);
        else
            result = status_one(&session, remote, node, &plans[index]);
    }
    if (plans)
        for (size_t i = 0; i < graph->n_nodes; i++)
            ft_plan_free(&plans[i]);
    free(plans);
    if (result == 0 && missing > 0)
        result = ft_error("%zu stage%s not %s (see above)", missing, missing == 1 ? "" : "s",
                          command == REMOTE_PUSH ? "pushed: build them first" : "pulled: the remote lacks them");
    ft_remote_sync_close(remote);
    ft_session_close(&session);
    return result == 0 ? 0 : 1;
}
