/* measure: the child, its reports and the scratch folder. */
#include "ftpipe/engine/measure.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/engine/build.h"
#include "ftpipe/engine/plan.h"
#include "ftpipe/engine/stage_runtime.h"

typedef struct {
    char **names;
    double *values;
    size_t count;
    char error[400];
} reports;

/* The child's protocol (stage_runtime.h): metrics are the rates; E is why it failed. */
static void take_line(reports *r, char *line)
{
    if (line[0] == 'M' && line[1] == ' ') {
        char *end = NULL;
        strtoll(line + 2, &end, 10);
        double value = strtod(end, &end);
        while (*end == ' ')
            end++;
        r->names = ft_xrealloc(r->names, (r->count + 1) * sizeof *r->names);
        r->values = ft_xrealloc(r->values, (r->count + 1) * sizeof *r->values);
        r->names[r->count] = ft_xstrdup(end);
        r->values[r->count++] = value;
    } else if (line[0] == 'E' && line[1] == ' ') {
        snprintf(r->error, sizeof r->error, "%s", line + 2);
    }
}

static void read_reports(int fd, reports *r)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    char block[4096];
    for (;;) {
        ssize_t n = read(fd, block, sizeof block);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        ft_strbuf_add(&text, block, (size_t)n);
    }
    for (char *line = text.data; line && *line;) {
        char *newline = strchr(line, '\n');
        if (newline)
            *newline = '\0';
        take_line(r, line);
        line = newline ? newline + 1 : line + strlen(line);
    }
    ft_strbuf_free(&text);
}

/* Runs the hook in a child; its exit status, or -1 when it could not start. */
static int run_child(ft_stage *stage, const ft_node *node, reports *r)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return ft_error_errno("cannot create a pipe to measure %s", node->target);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return ft_error_errno("cannot start a process to measure %s", node->target);
    }
    if (pid == 0) {
        close(fds[0]);
        int64_t gpus = ft_params_get(&node->params, "gpus")->integer;
        if (gpus > 0) { /* the first `gpus` devices, as the scheduler gives an idle machine's */
            char *devices = ft_build_visible_devices(getenv("CUDA_VISIBLE_DEVICES"),
                                                     gpus >= 64 ? UINT64_MAX : (1ull << gpus) - 1);
            setenv("CUDA_VISIBLE_DEVICES", devices, 1);
            free(devices);
        }
        _exit(ft_stage_child_main(stage, fds[1], node->kind->measure));
    }
    close(fds[1]);
    read_reports(fds[0], r);
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return ft_error_errno("cannot wait for the measurement of %s", node->target);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int ft_measure_stage(ft_workspace *workspace, const ft_graph *graph, size_t index, const char *key, char *why,
                     size_t why_size)
{
    const ft_node *node = &graph->nodes[index];
    if (!node->kind->measure) {
        snprintf(why, why_size, "the %s kind cannot be measured", node->kind->name);
        return 1;
    }
    char *scratch = ft_path_join(workspace->state_dir, "measure-XXXXXX");
    if (!mkdtemp(scratch)) {
        int result = ft_error_errno("cannot create a scratch folder %s to measure %s", scratch, node->target);
        free(scratch);
        return result;
    }
    char *out_dir = ft_path_join(scratch, "out");
    int made = ft_mkdir_p(out_dir);
    free(out_dir);
    if (made != 0) {
        ft_remove_tree(scratch);
        free(scratch);
        return ft_error_context("measuring %s", node->target);
    }
    ft_stage_setup setup = ft_plan_stage_setup(workspace, graph, index, key, scratch);
    setup.output_elsewhere = true; /* it makes none */
    ft_stage *stage = ft_stage_create(&setup);
    reports r = {0};
    fprintf(stderr, "ftpipe: measuring %s (%s): a few real steps, timed and thrown away\n", node->target,
            node->kind->name);
    int exit_status = run_child(stage, node, &r);
    ft_stage_destroy(stage);
    int result = 0;
    if (exit_status < 0) {
        result = -1;
    } else if (exit_status != 0 || r.count == 0) {
        snprintf(why, why_size, "%s", r.error[0] ? r.error : "the measurement reported no rate");
        result = 1;
    }
    for (size_t i = 0; i < r.count && result == 0; i++)
        result = ft_state_measured_add(workspace->state, node->target, node->kind->name, r.names[i], r.values[i]);
    for (size_t i = 0; i < r.count; i++)
        free(r.names[i]);
    free(r.names);
    free(r.values);
    ft_remove_tree(scratch);
    free(scratch);
    return result;
}
