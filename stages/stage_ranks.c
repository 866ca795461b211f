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
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

/* How long rank 0 lets the others notice a failure before it kills them. */
enum { STOP_GRACE_MS = 3000, LOG_TAIL_LINES = 5 };

bool ft_stage_wants_cuda(ft_stage *stage)
{
    const char *backend = ft_stage_param_string(stage, "backend");
    return strcmp(backend, "cuda") == 0 || (strcmp(backend, "auto") == 0 && ft_stage_param_int(stage, "gpus") > 0);
}

int ft_stage_rank_count(ft_stage *stage)
{
    int64_t nproc = ft_stage_param_int(stage, "nproc_per_node");
    if (nproc > 0)
        return (int)(nproc < 4096 ? nproc : 4096);
    int64_t gpus = ft_stage_param_int(stage, "gpus");
    return ft_stage_wants_cuda(stage) && gpus > 1 ? (int)gpus : 1;
}

static void free_ranks(ft_stage_ranks *ranks)
{
    for (int k = 0; ranks->log_paths && k < ranks->size; k++)
        free(ranks->log_paths[k]);
    free(ranks->log_paths);
    free(ranks->children);
    ft_comm_destroy(ranks->comm);
    memset(ranks, 0, sizeof *ranks);
}

int ft_stage_ranks_start(ft_stage *stage, int size, ft_stage_ranks *out)
{
    memset(out, 0, sizeof *out);
    out->size = size;
    if (size <= 1)
        return 0;
    out->children = ft_xcalloc((size_t)size, sizeof *out->children);
    out->log_paths = ft_xcalloc((size_t)size, sizeof *out->log_paths);
    for (int k = 1; k < size; k++) {
        char name[32];
        snprintf(name, sizeof name, "rank-%d.log", k);
        out->log_paths[k] = ft_path_join(ft_stage_work_dir(stage), name);
    }
    int rank = ft_comm_host_fork(size, &out->comm, out->children);
    if (rank < 0) {
        free_ranks(out);
        return -1;
    }
    out->rank = rank;
    if (rank == 0) {
        for (int k = 1; k < size; k++)
            ft_stage_log(stage, "rank %d of %d: pid %d, log %s", k, size, (int)out->children[k], out->log_paths[k]);
        return 0;
    }
    /* A rank's output goes to its own log; the engine hears only rank 0. */
    int fd = open(out->log_paths[rank], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    char host[256] = "?";
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    fprintf(stderr, "rank %d of %d: pid %d on %s\n", rank, size, (int)getpid(), host);
    return rank;
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
    int left = ranks->size - 1;
    bool killed = false;
    while (left > 0) {
        for (int k = 1; k < ranks->size; k++) {
            if (ranks->children[k] <= 0)
                continue;
            pid_t pid = waitpid(ranks->children[k], &statuses[k], WNOHANG);
            if (pid == ranks->children[k] || (pid < 0 && errno == ECHILD)) {
                ranks->children[k] = -ranks->children[k];
                left--;
            }
        }
        if (left > 0 && !killed && now_ms() > deadline) {
            for (int k = 1; k < ranks->size; k++)
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
    if (ranks->rank != 0) {
        if (status < 0)
            fprintf(stderr, "rank %d failed: %s\n", ranks->rank, ft_error_message());
        fflush(NULL);
        if (status < 0)
            ranks->comm->abort(ranks->comm);
        _exit(status < 0 ? 1 : 0);
    }
    if (status < 0)
        ranks->comm->abort(ranks->comm);
    int *statuses = ft_xcalloc((size_t)ranks->size, sizeof *statuses);
    reap(ranks, statuses, status < 0 ? STOP_GRACE_MS : 600000);
    /* The rank to blame: the one the communicator lost; after a success, any
     * that failed. (When rank 0 itself failed, the others stopped because it did.) */
    int lost = ranks->comm->lost_rank;
    for (int k = 1; k < ranks->size && lost < 1 && status == 0; k++)
        if (!WIFEXITED(statuses[k]) || WEXITSTATUS(statuses[k]) != 0)
            lost = k;
    if (lost >= 1) {
        ft_strbuf text;
        ft_strbuf_init(&text);
        if (status < 0)
            ft_strbuf_printf(&text, "%s; ", ft_error_message());
        char host[256] = "?";
        gethostname(host, sizeof host);
        host[sizeof host - 1] = '\0';
        ft_strbuf_printf(&text, "rank %d (pid %d on %s) ", lost, (int)-ranks->children[lost], host);
        describe_exit(&text, statuses[lost]);
        append_tail(&text, ranks->log_paths[lost]);
        ft_strbuf_printf(&text, "\nevery rank was stopped; run again to resume from the last checkpoint");
        status = ft_stage_fail(stage, "%s", text.data);
        ft_strbuf_free(&text);
    }
    free(statuses);
    free_ranks(ranks);
    return status;
}
