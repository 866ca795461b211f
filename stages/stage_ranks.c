/* stage_ranks: data-parallel ranks on this host, started and ended together. */
#include "ftpipe/stages/stage_ranks.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ftpipe/backend/comm_host.h"
#include "ftpipe/backend/rendezvous.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/engine/launch.h"
#include "ftpipe/engine/manifest.h"
#include "ftpipe/engine/slurm.h"

/* How long rank 0 lets the others notice a failure before it kills them. */
enum { STOP_GRACE_MS = 3000, LOG_TAIL_LINES = 5 };

bool ft_stage_wants_cuda(ft_stage *stage)
{
    const char *backend = ft_stage_param_string(stage, "backend");
    return strcmp(backend, "cuda") == 0 || (strcmp(backend, "auto") == 0 && ft_stage_param_int(stage, "gpus") > 0);
}

int ft_stage_ranks_per_node(ft_stage *stage)
{
    int64_t nproc = ft_stage_param_int(stage, "nproc_per_node");
    if (nproc > 0)
        return (int)(nproc < 4096 ? nproc : 4096);
    ft_launch launch;
    if (ft_launch_from_env(&launch) == 0 && launch.nproc_per_node > 0)
        return launch.nproc_per_node;
    ft_error_clear();
    int64_t gpus = ft_stage_param_int(stage, "gpus");
    return ft_stage_wants_cuda(stage) && gpus > 1 ? (int)gpus : 1;
}

int ft_stage_world_size(ft_stage *stage)
{
    ft_launch launch;
    if (ft_launch_from_env(&launch) < 0)
        return -1;
    /* Submitted to Slurm, the job's nodes are the stage's `nodes`, not this login node's variables. */
    int64_t nodes = ft_slurm_submits(stage) ? ft_stage_param_int(stage, "nodes") : launch.nnodes;
    int64_t world = (int64_t)ft_stage_ranks_per_node(stage) * (nodes > 0 ? nodes : 1);
    if (world > 65536)
        return ft_error("%lld nodes of %d ranks: more than 65536 ranks", (long long)nodes, ft_stage_ranks_per_node(stage));
    return (int)world;
}

static void free_ranks(ft_stage_ranks *ranks)
{
    for (int k = 0; ranks->log_paths && k < ranks->local_size; k++)
        free(ranks->log_paths[k]);
    free(ranks->log_paths);
    free(ranks->children);
    ft_comm_destroy(ranks->comm);
    memset(ranks, 0, sizeof *ranks);
}

/* What every node must have computed alike: the stage key and each input's
 * content hash, one "NAME VALUE" line each. */
static int agreement_text(ft_stage *stage, ft_strbuf *out)
{
    ft_strbuf_printf(out, "stage key %s\n", ft_stage_key(stage));
    const char *dir = ft_stage_pipeline_dir(stage);
    size_t dir_length = strlen(dir);
    for (size_t i = 0; i < ft_stage_input_count(stage); i++) {
        const char *path = ft_stage_input_path(stage, i);
        ft_manifest *manifest = NULL;
        if (ft_manifest_build(NULL, path, 0, &manifest) < 0)
            return ft_error_context("hashing input %s for the other nodes", path);
        ft_manifest_finish(manifest);
        char hex[FT_HASH_HEX_LENGTH + 1];
        ft_hash_to_hex(manifest->hash, hex);
        bool inside = strncmp(path, dir, dir_length) == 0 && path[dir_length] == '/';
        ft_strbuf_printf(out, "input %s %s\n", inside ? path + dir_length + 1 : path, hex);
        ft_manifest_free(manifest);
    }
    return 0;
}

/* Forks local ranks 1..local_size-1 (plain processes: they join over TCP). */
static int fork_local(ft_stage_ranks *out)
{
    fflush(NULL);
    for (int k = 1; k < out->local_size; k++) {
        pid_t pid = fork();
        if (pid < 0) {
            int status = ft_error_errno("cannot start local rank %d", k);
            for (int j = 1; j < k; j++)
                kill(out->children[j], SIGKILL);
            return status;
        }
        if (pid == 0)
            return k;
        out->children[k] = pid;
    }
    return 0;
}

/* A rank other than the node's first: its output goes to its own log. */
static void become_rank(ft_stage_ranks *out)
{
    out->writes_output = false;
    int fd = open(out->log_paths[out->local_rank], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    char host[256] = "?";
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    fprintf(stderr, "rank %d of %d: pid %d on %s\n", out->rank, out->size, (int)getpid(), host);
}

/* Which interface leads to node 0, and whether NCCL will be told so. */
static void log_route(ft_stage *stage, const char *master_addr)
{
    char name[64], address[128];
    if (ft_route_interface(master_addr, name, sizeof name, address, sizeof address) < 0) {
        ft_stage_log(stage, "network: %s", ft_error_message());
        ft_error_clear();
        return;
    }
    const char *chosen = getenv("NCCL_SOCKET_IFNAME");
    if (!chosen)
        ft_stage_log(stage, "network: %s is reached through %s (%s); NCCL_SOCKET_IFNAME is unset, so NCCL picks an "
                            "interface itself: set NCCL_SOCKET_IFNAME=%s if it picks another",
                     master_addr, name, address, name);
    else if (strcmp(chosen, name) != 0)
        ft_stage_log(stage, "network: NCCL_SOCKET_IFNAME=%s, but %s is reached through %s (%s): set "
                            "NCCL_SOCKET_IFNAME=%s unless %s also leads there",
                     chosen, master_addr, name, address, name, chosen);
    else
        ft_stage_log(stage, "network: %s is reached through %s (%s), as NCCL_SOCKET_IFNAME says", master_addr, name,
                     address);
}

/* This process becomes local rank `local` (0: it stays the stage's). */
static void take_rank(ft_stage *stage, ft_stage_ranks *out, int local)
{
    out->local_rank = local;
    out->rank += local;
    if (local > 0) {
        become_rank(out);
        return;
    }
    for (int k = 1; k < out->local_size; k++)
        ft_stage_log(stage, "rank %d of %d: pid %d, log %s", out->rank + k, out->size, (int)out->children[k],
                     out->log_paths[k]);
}

/* Several nodes: this node's ranks are forked, then every rank joins the job
 * at MASTER_ADDR:MASTER_PORT. Returns the local rank, or -1 in the node's
 * first rank (the others end in ft_stage_ranks_finish). */
static int start_on_nodes(ft_stage *stage, const ft_launch *launch, ft_stage_ranks *out)
{
    ft_strbuf agreement;
    ft_strbuf_init(&agreement);
    int local = agreement_text(stage, &agreement);
    if (local == 0)
        local = fork_local(out);
    if (local >= 0) {
        ft_rendezvous_options o = {launch->master_addr, launch->master_port, out->rank + local, out->size,
                                   launch->node_rank, (int)ft_stage_param_duration_ms(stage, "rendezvous_timeout"),
                                   agreement.data};
        if (local == 0) {
            ft_stage_log(stage, "node %d of %d (%s variables): joining ranks %d-%d of %d at %s:%d", launch->node_rank,
                         launch->nnodes, launch->source, out->rank, out->rank + out->local_size - 1, out->size,
                         launch->master_addr, launch->master_port);
            log_route(stage, launch->master_addr);
        }
        take_rank(stage, out, local);
        if (ft_rendezvous_tcp(&o, &out->comm) < 0)
            local = local > 0 ? ft_stage_ranks_finish(stage, out, -1) : -1;
    }
    ft_strbuf_free(&agreement);
    if (local < 0) /* the job cannot start, so neither can this node's ranks */
        for (int k = 1; k < out->local_size; k++)
            if (out->children[k] > 0) {
                kill(out->children[k], SIGKILL);
                waitpid(out->children[k], NULL, 0);
            }
    return local;
}

int ft_stage_ranks_start(ft_stage *stage, ft_stage_ranks *out)
{
    memset(out, 0, sizeof *out);
    ft_launch launch;
    if (ft_launch_from_env(&launch) < 0)
        return -1;
    out->local_size = ft_stage_ranks_per_node(stage);
    out->size = out->local_size * launch.nnodes;
    out->node_rank = launch.node_rank;
    out->rank = launch.node_rank * out->local_size;
    out->writes_output = ft_slurm_step_writes_output();
    if (out->size <= 1)
        return 0;
    out->children = ft_xcalloc((size_t)out->local_size, sizeof *out->children);
    out->log_paths = ft_xcalloc((size_t)out->local_size, sizeof *out->log_paths);
    for (int k = 1; k < out->local_size; k++) {
        char name[32];
        snprintf(name, sizeof name, "rank-%d.log", out->rank + k);
        out->log_paths[k] = ft_path_join(ft_stage_work_dir(stage), name);
    }
    if (launch.nnodes > 1) {
        if (start_on_nodes(stage, &launch, out) < 0) {
            free_ranks(out);
            return -1;
        }
        return 0;
    }
    int local = ft_comm_host_fork(out->local_size, &out->comm, out->children); /* one host: socket pairs */
    if (local < 0) {
        free_ranks(out);
        return -1;
    }
    take_rank(stage, out, local);
    return 0;
}

/* The last lines of a file, indented, or "" when it cannot be read. */
static void append_tail(ft_strbuf *text, const char *path)
{
    char *data = NULL;
    size_t length = 0;
    if (ft_read_file(path, &data, &length) < 0) {
        ft_error_clear();
        return;
    }
    while (length > 0 && data[length - 1] == '\n')
        data[--length] = '\0';
    size_t start = length;
    for (int lines = 0; start > 0; start--)
        if (data[start - 1] == '\n' && ++lines == LOG_TAIL_LINES)
            break;
    ft_strbuf_printf(text, "; the last lines of its log (%s):", path);
    for (char *line = data + start; line && *line;) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        ft_strbuf_printf(text, "\n    %s", line);
        line = end ? end + 1 : NULL;
    }
    free(data);
}

static void describe_exit(ft_strbuf *text, int wait_status)
{
    if (WIFSIGNALED(wait_status))
        ft_strbuf_printf(text, "was killed by signal %d (%s)", WTERMSIG(wait_status), strsignal(WTERMSIG(wait_status)));
    else if (WIFEXITED(wait_status))
        ft_strbuf_printf(text, "exited with status %d", WEXITSTATUS(wait_status));
    else
        ft_strbuf_printf(text, "ended");
}

static uint64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

/* Reaps ranks 1..size-1 into statuses; after grace_ms, kills those left. */
static void reap(ft_stage_ranks *ranks, int *statuses, uint64_t grace_ms)
{
    uint64_t deadline = now_ms() + grace_ms;
    int left = ranks->local_size - 1;
    bool killed = false;
    while (left > 0) {
        for (int k = 1; k < ranks->local_size; k++) {
            if (ranks->children[k] <= 0)
                continue;
            pid_t pid = waitpid(ranks->children[k], &statuses[k], WNOHANG);
            if (pid == ranks->children[k] || (pid < 0 && errno == ECHILD)) {
                ranks->children[k] = -ranks->children[k];
                left--;
            }
        }
        if (left > 0 && !killed && now_ms() > deadline) {
            for (int k = 1; k < ranks->local_size; k++)
                if (ranks->children[k] > 0)
                    kill(ranks->children[k], SIGKILL);
            killed = true;
        }
        if (left > 0)
            usleep(10000);
    }
}

int ft_stage_ranks_finish(ft_stage *stage, ft_stage_ranks *ranks, int status)
{
    if (ranks->size <= 1)
        return status;
    if (ranks->local_rank != 0) {
        if (status < 0)
            fprintf(stderr, "rank %d failed: %s\n", ranks->rank, ft_error_message());
        fflush(NULL);
        if (status < 0 && ranks->comm)
            ranks->comm->abort(ranks->comm);
        _exit(status < 0 ? 1 : 0);
    }
    if (status < 0)
        ranks->comm->abort(ranks->comm);
    int *statuses = ft_xcalloc((size_t)ranks->local_size, sizeof *statuses);
    reap(ranks, statuses, status < 0 ? STOP_GRACE_MS : 600000);
    /* The rank to blame: the one the communicator lost; after a success, any of
     * this node's that failed. (When this rank failed, the others stopped
     * because it did.) A rank of this node gets its exit and log; another
     * node's is named by the communicator's message. */
    int first = ranks->rank, lost = ranks->comm->lost_rank;
    int local = lost > first && lost < first + ranks->local_size ? lost - first : -1;
    for (int k = 1; k < ranks->local_size && lost < 0 && status == 0; k++)
        if (!WIFEXITED(statuses[k]) || WEXITSTATUS(statuses[k]) != 0)
            local = k;
    if (local >= 1 || (lost >= 0 && status < 0)) {
        ft_strbuf text;
        ft_strbuf_init(&text);
        if (status < 0)
            ft_strbuf_printf(&text, "%s", ft_error_message());
        if (local >= 1) {
            char host[256] = "?";
            gethostname(host, sizeof host);
            host[sizeof host - 1] = '\0';
            ft_strbuf_printf(&text, "%srank %d (pid %d on %s) ", status < 0 ? "; " : "", first + local,
                             (int)-ranks->children[local], host);
            describe_exit(&text, statuses[local]);
            append_tail(&text, ranks->log_paths[local]);
        }
        ft_strbuf_printf(&text, "\nevery rank was stopped; run again to resume from the last checkpoint");
        status = ft_stage_fail(stage, "%s", text.data);
        ft_strbuf_free(&text);
    }
    free(statuses);
    free_ranks(ranks);
    return status;
}
