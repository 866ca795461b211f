/* build: the scheduler — plans each ready stage, restores what the cache holds,
 * runs the rest in child processes within the machine's resources, publishes
 * finished outputs, and stops cleanly on a signal. */
#include "ftpipe/engine/build.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/units.h"
#include "ftpipe/engine/disk_space.h"
#include "ftpipe/engine/group_watch.h"
#include "ftpipe/engine/plan.h"
#include "ftpipe/engine/slurm.h"
#include "ftpipe/engine/publish.h"
#include "ftpipe/engine/stage_runtime.h"
#include "ftpipe/engine/work_dirs.h"

typedef enum { NODE_WAITING, NODE_QUEUED, NODE_RUNNING, NODE_DONE, NODE_FAILED, NODE_SKIPPED } node_state;

typedef struct {
    size_t node;
    pid_t pid;
    int report_fd;
    ft_strbuf partial;
    int64_t run_id;
    char *work_dir;
    uint64_t start_ns;
    uint64_t gpu_mask;
    int64_t memory_bytes;
    char *summary;
    char *error_text;
    bool reports_progress; /* else the live line shows the time spent */
    bool cancelled;        /* the stage said so ('C'); an exit status alone never means it */
    bool spawned;          /* the kind's program, started by the engine: report_fd is its pidfd */
} running_stage;

typedef struct {
    ft_workspace *workspace;
    ft_graph *graph;
    const ft_build_options *options;
    ft_build_summary *summary;
    ft_plan *plans;
    node_state *states;
    size_t *unfinished_inputs;
    bool *remote_asked;
    size_t *queue;
    size_t queue_length;
    running_stage *running;
    size_t n_running;
    uint64_t gpus_free;
    int64_t memory_free;
    bool stop_starting;
    int result;
    char *state_error; /* the first state write that failed */
    ft_group_watch *watch; /* started with the first spawned stage */
    ft_work_dirs *work_dirs;
    bool batch_open; /* a transaction holds records of outputs the cache has not made durable yet */
} builder;

/* A state write that fails (a full disk) loses a run record or a metric: the
 * build goes on, but ends failed, saying so. */
static void check_state_write(builder *b, int result)
{
    if (result != 0 && !b->state_error) {
        b->state_error = ft_xstrdup(ft_error_message());
        b->result = -1;
    }
}

/* Finished stages are made durable in batches (group commit): their cache entries
 * with one flush of the file system, then their records with one commit, at most
 * this often. A crash loses at most the batch under way, never its order: a record
 * is committed only after the outputs it names are durable; a kill -9 leaves
 * outputs whose records were not committed, which the next run stores again
 * (objects already there are kept) and takes over in the workspace. */
enum { COMMIT_INTERVAL_MS = 200 };

/* Outside a batch, records that name no output (runs started, failed, metrics) are
 * written as they come, each its own commit, as a full disk allows (state.h). */
static void open_batch(builder *b)
{
    if (b->batch_open)
        return;
    check_state_write(b, ft_state_begin(b->workspace->state));
    b->batch_open = true;
}

static void commit_batch(builder *b)
{
    if (!b->batch_open)
        return;
    int synced = ft_cache_sync(b->workspace->cache);
    check_state_write(b, synced);
    int committed = ft_state_commit(b->workspace->state);
    check_state_write(b, committed);
    ft_work_dirs_committed(b->work_dirs, synced == 0 && committed == 0);
    b->batch_open = false;
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int signal_number)
{
    (void)signal_number;
    interrupted = 1;
}

void ft_build_detect_resources(int *gpus_total, uint64_t *memory_total_bytes)
{
    const char *gpus = getenv("FTPIPE_GPUS");
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    if (gpus) {
        *gpus_total = atoi(gpus);
    } else if (visible) {
        int count = 0;
        for (const char *p = visible; *p; p++)
            count += (p == visible || p[-1] == ',') && *p != ',' && *p != ' ';
        *gpus_total = count;
    } else {
        int count = 0;
        char path[32];
        for (int i = 0; i < 64; i++) {
            snprintf(path, sizeof path, "/dev/nvidia%d", i);
            if (access(path, F_OK) == 0)
                count++;
        }
        *gpus_total = count;
    }
    if (*gpus_total > 64)
        *gpus_total = 64;
    int64_t memory = 0;
    const char *override = getenv("FTPIPE_MEMORY");
    if (!override || ft_parse_size_bytes(override, &memory) != 0)
        memory = (int64_t)sysconf(_SC_PHYS_PAGES) * (int64_t)sysconf(_SC_PAGESIZE);
    *memory_total_bytes = (uint64_t)memory;
}

static int64_t node_gpus(const ft_node *node) { return ft_params_get(&node->params, "gpus")->integer; }
static int64_t node_memory(const ft_node *node) { return ft_params_get(&node->params, "memory")->integer; }

/* A stage that could never fit stops the build before anything runs. */
static int check_resources(const builder *b)
{
    const ft_graph *graph = b->graph;
    for (size_t i = 0; i < graph->n_nodes; i++) {
        const ft_node *node = &graph->nodes[i];
        if (!node->selected)
            continue;
        const ft_location *where = &node->decl->where;
        if (node_gpus(node) > b->options->gpus_total)
            return ft_error("%s:%d: stage %s needs %lld GPUs but this machine has %d; lower `gpus` or run it on a "
                            "machine with more",
                            where->file, where->line, node->target, (long long)node_gpus(node),
                            b->options->gpus_total);
        if ((uint64_t)node_memory(node) > b->options->memory_total_bytes) {
            char need[32], have[32];
            ft_format_bytes((uint64_t)node_memory(node), need, sizeof need);
            ft_format_bytes(b->options->memory_total_bytes, have, sizeof have);
            return ft_error("%s:%d: stage %s needs %s of host memory but this machine has %s; lower `memory`",
                            where->file, where->line, node->target, need, have);
        }
    }
    return 0;
}

static void mark_done(builder *b, size_t index, node_state state)
{
    b->states[index] = state;
    const ft_node *node = &b->graph->nodes[index];
    for (size_t d = 0; d < node->n_dependents; d++) {
        size_t dependent = node->dependents[d];
        if (!b->graph->nodes[dependent].selected || b->states[dependent] != NODE_WAITING)
            continue;
        if (state != NODE_DONE) {
            mark_done(b, dependent, NODE_SKIPPED);
            b->summary->skipped++;
            continue;
        }
        if (--b->unfinished_inputs[dependent] == 0) {
            b->states[dependent] = NODE_QUEUED;
            b->queue[b->queue_length++] = dependent;
        }
    }
}

/* The message is printed here, once; the error main prints at the end only
 * points back to it. */
static void report_failure(builder *b, size_t index, const char *message)
{
    ft_progress_message(b->options->progress, "FAILED   %s: %s", b->graph->nodes[index].target, message);
    b->summary->failed++;
    if (b->summary->failed == 1)
        ft_error("stage %s failed (the FAILED line above says why)", b->graph->nodes[index].target);
    else
        ft_error("%zu stages failed (the FAILED lines above say why)", b->summary->failed);
    b->result = -1;
    if (!b->options->keep_going)
        b->stop_starting = true;
    mark_done(b, index, NODE_FAILED);
}

/* Prints the last lines of a failed stage's log, where the cause usually is,
 * less the stage's own "ftpipe: MESSAGE" line, which the FAILED line already said. */
static void show_log_tail(builder *b, const char *log_path)
{
    char *text = NULL;
    size_t length = 0;
    if (ft_read_file(log_path, &text, &length) != 0)
        return;
    while (length > 0 && text[length - 1] == '\n')
        length--;
    size_t last_line = length;
    while (last_line > 0 && text[last_line - 1] != '\n')
        last_line--;
    if (strncmp(text + last_line, "ftpipe: ", 8) == 0)
        length = last_line;
    text[length] = '\0';
    if (length == 0) {
        free(text);
        return;
    }
    size_t start = length, lines = 0;
    while (start > 0 && lines < 15) {
        start--;
        if (text[start] == '\n' && start + 1 < length)
            lines++;
    }
    if (start > 0)
        start++;
    ft_progress_message(b->options->progress, "         last lines of %s:\n%s", log_path, text + start);
    free(text);
}

char *ft_build_visible_devices(const char *parent_list, uint64_t gpu_mask)
{
    ft_strbuf devices;
    ft_strbuf_init(&devices);
    for (int g = 0; g < 64; g++) {
        if (!(gpu_mask & (1ull << g)))
            continue;
        const char *entry = parent_list;
        for (int skipped = 0; entry && skipped < g; skipped++) {
            entry = strchr(entry, ',');
            entry = entry ? entry + 1 : NULL;
        }
        if (devices.length)
            ft_strbuf_putc(&devices, ',');
        if (parent_list && entry) {
            while (*entry == ' ')
                entry++;
            size_t length = strcspn(entry, ", ");
            ft_strbuf_printf(&devices, "%.*s", (int)length, entry);
        } else {
            ft_strbuf_printf(&devices, "%d", g);
        }
    }
    return ft_strbuf_take(&devices);
}

static running_stage *add_running(builder *b, size_t index, pid_t pid, int report_fd, int64_t run_id,
                                  char *work_dir)
{
    const ft_node *node = &b->graph->nodes[index];
    running_stage *run = &b->running[b->n_running++];
    memset(run, 0, sizeof *run);
    run->node = index;
    run->pid = pid;
    run->report_fd = report_fd;
    ft_strbuf_init(&run->partial);
    run->run_id = run_id;
    run->work_dir = work_dir;
    run->start_ns = ft_now_ns();
    run->memory_bytes = node_memory(node);
    b->memory_free -= run->memory_bytes;
    b->states[index] = NODE_RUNNING;
    char *reason = ft_plan_reason_line(&b->plans[index]);
    ft_progress_message(b->options->progress, "run      %s (%s): %s", node->target, node->kind->name, reason);
    free(reason);
    ft_progress_status(b->options->progress, index, node->target);
    return run;
}

/* A kind that is one program (shell) is started by the engine itself: no fork of
 * the engine, whose page tables grow with the graph, for each small stage. Its
 * pidfd wakes the wait when it ends. */
static int start_spawned(builder *b, size_t index, ft_stage *stage, char *work_dir, int64_t run_id)
{
    int result = b->watch ? 0 : ft_group_watch_start(&b->watch);
    pid_t pid = 0;
    if (result == 0) {
        ft_stage_open_log(stage);
        result = b->graph->nodes[index].kind->spawn(stage, &pid);
    }
    ft_stage_destroy(stage);
    if (result != 0) {
        free(work_dir);
        return -1;
    }
    ft_group_watch_add(b->watch, pid);
    int pidfd = pidfd_open(pid, 0); /* without one (an old kernel), the wait's timeout notices the end */
    running_stage *run = add_running(b, index, pid, pidfd, run_id, work_dir);
    run->spawned = true;
    return 0;
}

/* Why a spawned program's stage failed (NULL: it did not), also written at the end
 * of its log as a stage run in a child writes it. */
static char *spawned_failure(const running_stage *run, const ft_node *node, int status, const char *log_path)
{
    char *output = ft_xasprintf("%s/out/%s", run->work_dir, ft_path_basename(node->target));
    int result = ft_stage_command_result(node->target, status);
    if (result == 0 && !ft_path_exists(output))
        result = ft_error("stage %s finished without creating its output (expected at %s)", node->target, output);
    free(output);
    if (result == 0)
        return NULL;
    FILE *log = fopen(log_path, "ae");
    if (log) {
        fprintf(log, "ftpipe: %s\n", ft_error_message());
        fclose(log);
    }
    return ft_xstrdup(ft_error_message());
}

static int start_stage(builder *b, size_t index)
{
    const ft_node *node = &b->graph->nodes[index];
    ft_plan *plan = &b->plans[index];
    const char *key = plan->key.key;
    char *work_dir = ft_workspace_work_dir(b->workspace, key);
    int result = ft_work_dirs_prepare(b->work_dirs, work_dir);
    if (result != 0) {
        free(work_dir);
        return -1;
    }
    char *log_path = ft_stage_log_path(work_dir);
    ft_run_record record = ft_plan_run_record(node, plan, FT_RUN_RUNNING, log_path);
    int64_t run_id = 0;
    if (ft_state_run_start(b->workspace->state, &record, &run_id) != 0) {
        free(log_path);
        free(work_dir);
        return -1;
    }
    free(log_path);

    uint64_t gpu_mask = 0;
    int64_t gpus = node_gpus(node);
    for (int g = 0; g < 64 && gpus > 0; g++) {
        if (b->gpus_free & (1ull << g)) {
            gpu_mask |= 1ull << g;
            gpus--;
        }
    }
    ft_stage *stage = ft_plan_stage_context(b->workspace, b->graph, index, key);
    if (node->kind->spawn && gpu_mask == 0 && !ft_slurm_submits(stage))
        return start_spawned(b, index, stage, work_dir, run_id);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        ft_stage_destroy(stage);
        free(work_dir);
        return ft_error_errno("cannot create a pipe for stage %s", node->target);
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        ft_stage_destroy(stage);
        free(work_dir);
        return ft_error_errno("cannot start stage %s", node->target);
    }
    if (pid == 0) {
        close(fds[0]);
        if (b->workspace->lock_fd >= 0)
            close(b->workspace->lock_fd);
        ft_group_watch_forget(b->watch);
        setpgid(0, 0);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        if (gpu_mask) {
            char *devices = ft_build_visible_devices(getenv("CUDA_VISIBLE_DEVICES"), gpu_mask);
            setenv("CUDA_VISIBLE_DEVICES", devices, 1);
            free(devices);
        }
        _exit(ft_stage_child_main(stage, fds[1], ft_slurm_submits(stage) ? ft_slurm_submit : NULL));
    }
    setpgid(pid, pid);
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    ft_stage_destroy(stage);
    running_stage *run = add_running(b, index, pid, fds[0], run_id, work_dir);
    run->gpu_mask = gpu_mask;
    b->gpus_free &= ~gpu_mask;
    return 0;
}

static void handle_report_line(builder *b, running_stage *run, char *line)
{
    const ft_node *node = &b->graph->nodes[run->node];
    char tag = line[0];
    char *rest = line[0] && line[1] ? line + 2 : line + strlen(line);
    if (tag == 'P') {
        run->reports_progress = true;
        char *text = NULL;
        double fraction = strtod(rest, &text);
        while (*text == ' ')
            text++;
        char status[600];
        if (fraction >= 0)
            snprintf(status, sizeof status, "%-24s %3.0f%%  %s", node->target, fraction * 100.0, text);
        else
            snprintf(status, sizeof status, "%-24s  %s", node->target, text);
        ft_progress_status(b->options->progress, run->node, status);
    } else if (tag == 'M') {
        char *end = NULL;
        long long step = strtoll(rest, &end, 10);
        double value = strtod(end, &end);
        while (*end == ' ')
            end++;
        check_state_write(b, ft_state_metric_add(b->workspace->state, run->run_id, step, end, value));
    } else if (tag == 'S') {
        free(run->summary);
        run->summary = ft_xstrdup(rest);
    } else if (tag == 'E') {
        free(run->error_text);
        run->error_text = ft_xstrdup(rest);
    } else if (tag == 'C') {
        run->cancelled = true;
    }
}

/* Reads what a stage reported; returns true at end of file. */
static bool read_reports(builder *b, running_stage *run)
{
    if (run->spawned)
        return true; /* a program reports nothing but its exit status */
    char block[4096];
    for (;;) {
        ssize_t n = read(run->report_fd, block, sizeof block);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n == 0;
        ft_strbuf_add(&run->partial, block, (size_t)n);
        char *start = run->partial.data;
        char *newline;
        while ((newline = memchr(start, '\n', run->partial.length - (size_t)(start - run->partial.data)))) {
            *newline = '\0';
            handle_report_line(b, run, start);
            start = newline + 1;
        }
        size_t left = run->partial.length - (size_t)(start - run->partial.data);
        memmove(run->partial.data, start, left);
        run->partial.length = left;
        run->partial.data[left] = '\0';
    }
}

/* A failed stage's out/ goes at once: a half-made result may be what filled the disk
 * (the next start empties it anyway; what resumes lives beside it). */
static void free_output(const char *work_dir)
{
    char *out_dir = ft_path_join(work_dir, "out");
    ft_remove_tree(out_dir);
    free(out_dir);
}

/* The message for a stage whose result could not be published; frees its out/. */
static char *failure_message(const running_stage *run, const char *log_path, const char *error)
{
    char *space = ft_disk_space_failure(run->work_dir, log_path, error);
    char *message = space ? ft_xasprintf("%s: free some space (ftpipe gc removes what no target needs) and run "
                                         "again; %s", space, error)
                          : ft_xstrdup(error);
    free(space);
    free_output(run->work_dir);
    return message;
}

/* A finished stage goes to the remote cache, when there is one to write. */
static void push_to_remote(builder *b, size_t index)
{
    ft_remote_sync *remote = b->options->remote;
    if (!remote || !ft_remote_sync_writable(remote))
        return;
    const ft_node *node = &b->graph->nodes[index];
    const char *key = b->plans[index].key.key;
    ft_manifest *manifest = NULL;
    if (ft_cache_lookup(b->workspace->cache, key, &manifest) != 1)
        return;
    uint64_t sent_bytes = 0;
    uint64_t start_ns = ft_now_ns();
    if (ft_remote_sync_push(remote, b->workspace->cache, key, node->target, manifest, &sent_bytes) != 0) {
        ft_progress_message(b->options->progress, "warning: %s", ft_error_message());
    } else if (sent_bytes > 0) {
        char sent[32];
        ft_format_bytes(sent_bytes, sent, sizeof sent);
        ft_progress_message(b->options->progress, "pushed   %s to the remote (%s in %.1f s)", node->target, sent,
                            (double)(ft_now_ns() - start_ns) / 1e9);
    }
    ft_manifest_free(manifest);
}

/* Before a stage runs, the remote cache may have its result: 1 restored, 0 not, -1 failed. */
static int restore_from_remote(builder *b, size_t index)
{
    ft_remote_sync *remote = b->options->remote;
    ft_plan *plan = &b->plans[index];
    const ft_node *node = &b->graph->nodes[index];
    if (!remote || !plan->has_key || b->remote_asked[index])
        return 0;
    b->remote_asked[index] = true;
    if (b->options->dry_run) {
        int found = ft_remote_sync_has(remote, plan->key.key);
        if (found == 1)
            ft_progress_message(b->options->progress, "would restore %s from the remote", node->target);
        return found;
    }
    ft_progress_status(b->options->progress, index, node->target);
    ft_manifest *manifest = NULL;
    int found = ft_remote_sync_restore(remote, b->workspace->cache, plan->key.key, node->target, &manifest);
    ft_progress_status(b->options->progress, index, NULL);
    if (found != 1)
        return found;
    if (plan->manifest)
        ft_manifest_free(plan->manifest);
    plan->manifest = manifest;
    plan->action = FT_PLAN_RESTORE;
    ft_hash_to_hex(manifest->hash, plan->output_hash);
    if (ft_publish_restore(b->workspace, node, plan) != 0)
        return -1;
    ft_progress_message(b->options->progress, "restored %s from remote", node->target);
    return 1;
}

static void finish_stage(builder *b, size_t slot, int status)
{
    running_stage *run = &b->running[slot];
    while (!read_reports(b, run)) {
        struct pollfd pfd = {.fd = run->report_fd, .events = POLLIN};
        if (poll(&pfd, 1, 1000) <= 0)
            break;
    }
    if (run->report_fd >= 0)
        close(run->report_fd);
    const ft_node *node = &b->graph->nodes[run->node];
    ft_progress_status(b->options->progress, run->node, NULL);
    b->gpus_free |= run->gpu_mask;
    b->memory_free += run->memory_bytes;
    double seconds = (double)(ft_now_ns() - run->start_ns) / 1e9;
    char *log_path = ft_stage_log_path(run->work_dir);
    int exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (run->spawned) {
        ft_group_watch_remove(b->watch, run->pid);
        /* SIGINT or SIGTERM sent to the program stops it as it stops a stage in a child. */
        run->cancelled = WIFSIGNALED(status) && (WTERMSIG(status) == SIGINT || WTERMSIG(status) == SIGTERM);
        run->error_text = run->cancelled ? NULL : spawned_failure(run, node, status, log_path);
        if (run->error_text && exit_code == 0)
            exit_code = 1;
    }

    if (exit_code == 0) {
        ft_plan *plan = &b->plans[run->node];
        char *kept_log = NULL;
        open_batch(b);
        if (ft_publish_output(b->workspace, node, plan, run->work_dir, &kept_log) == 0) {
            ft_work_dirs_retire(b->work_dirs, run->work_dir);
            run->work_dir = NULL;
            check_state_write(b, ft_state_run_finish(b->workspace->state, run->run_id, FT_RUN_DONE, 0,
                                                     plan->output_hash, kept_log));
            ft_progress_message(b->options->progress, "done     %s in %.1f s%s%s", node->target, seconds,
                                run->summary ? ": " : "", run->summary ? run->summary : "");
            b->summary->run++;
            push_to_remote(b, run->node);
            mark_done(b, run->node, NODE_DONE);
        } else {
            char *message = failure_message(run, log_path, ft_error_message());
            check_state_write(b, ft_state_run_finish(b->workspace->state, run->run_id, FT_RUN_FAILED, 0, "",
                                                     log_path));
            report_failure(b, run->node, message);
            free(message);
        }
        free(kept_log);
    } else {
        bool cancelled = interrupted || run->cancelled;
        char *space = cancelled ? NULL : ft_disk_space_failure(run->work_dir, log_path, run->error_text);
        if (!cancelled)
            free_output(run->work_dir);
        check_state_write(b, ft_state_run_finish(b->workspace->state, run->run_id,
                                                 cancelled ? FT_RUN_CANCELLED : FT_RUN_FAILED, exit_code, "", log_path));
        if (cancelled) {
            ft_progress_message(b->options->progress, "stopped  %s after %.1f s; its work folder is kept, the next "
                                "run resumes it", node->target, seconds);
            b->states[run->node] = NODE_FAILED;
            if (!interrupted) { /* stopped by a signal to the stage alone: the build did not finish */
                b->summary->failed++;
                b->result = ft_error("stage %s was stopped before it finished; run again to resume it", node->target);
                b->stop_starting = !b->options->keep_going;
            }
        } else {
            char message[4200];
            snprintf(message, sizeof message, "%s%s%s (exit status %d; log: %s)", space ? space : "",
                     space ? ": free some space (ftpipe gc removes what no target needs) and run again; " : "",
                     run->error_text ? run->error_text : "the stage failed", exit_code, log_path);
            report_failure(b, run->node, message);
            show_log_tail(b, log_path);
        }
        free(space);
    }
    free(log_path);
    free(run->work_dir);
    free(run->summary);
    free(run->error_text);
    ft_strbuf_free(&run->partial);
    b->running[slot] = b->running[--b->n_running];
}

static void wait_for_children(builder *b, int timeout_ms)
{
    struct pollfd *fds = ft_xcalloc(b->n_running + 1, sizeof *fds);
    for (size_t i = 0; i < b->n_running; i++) {
        fds[i].fd = b->running[i].report_fd;
        fds[i].events = POLLIN;
    }
    int ready = poll(fds, b->n_running, timeout_ms);
    free(fds);
    if (ready < 0 && errno != EINTR)
        return;
    for (size_t i = 0; i < b->n_running;) {
        read_reports(b, &b->running[i]);
        if (!b->running[i].reports_progress && ft_progress_is_live(b->options->progress)) {
            const ft_node *node = &b->graph->nodes[b->running[i].node];
            char status[512];
            snprintf(status, sizeof status, "%-24s %s, %.0f s", node->target, node->kind->name,
                     (double)(ft_now_ns() - b->running[i].start_ns) / 1e9);
            ft_progress_status(b->options->progress, b->running[i].node, status);
        }
        int status = 0;
        pid_t done = waitpid(b->running[i].pid, &status, WNOHANG);
        if (done == b->running[i].pid)
            finish_stage(b, i, status); /* moves the last slot into i */
        else
            i++;
    }
}

static void stop_all(builder *b)
{
    for (size_t i = 0; i < b->n_running; i++)
        kill(-b->running[i].pid, SIGTERM);
    uint64_t deadline = ft_now_ns() + 10ull * 1000000000u;
    while (b->n_running > 0 && ft_now_ns() < deadline)
        wait_for_children(b, 100);
    for (size_t i = 0; i < b->n_running; i++)
        kill(-b->running[i].pid, SIGKILL);
    while (b->n_running > 0)
        wait_for_children(b, 100);
}

/* Two stages with one key would share a work folder: the second waits, then
 * finds the first's result in the cache. */
static bool key_running(const builder *b, const char *key)
{
    for (size_t i = 0; i < b->n_running; i++)
        if (strcmp(b->plans[b->running[i].node].key.key, key) == 0)
            return true;
    return false;
}

static bool fits(const builder *b, size_t index)
{
    const ft_node *node = &b->graph->nodes[index];
    if (b->n_running >= (size_t)b->options->jobs)
        return false;
    if (node_gpus(node) > __builtin_popcountll(b->gpus_free))
        return false;
    return node_memory(node) <= b->memory_free;
}

/* Plans and dispatches queued stages; returns once nothing more can start now. */
static void dispatch(builder *b)
{
    size_t kept = 0;
    for (size_t i = 0; i < b->queue_length; i++) {
        size_t index = b->queue[i];
        if (b->stop_starting || interrupted) {
            b->queue[kept++] = index;
            continue;
        }
        ft_plan *plan = &b->plans[index];
        const ft_node *node = &b->graph->nodes[index];
        if (plan->action == FT_PLAN_UNKNOWN && ft_plan_node(b->workspace, b->graph, index, b->plans) != 0) {
            report_failure(b, index, ft_error_message());
            continue;
        }
        char *reason = NULL;
        switch (plan->action) {
        case FT_PLAN_UP_TO_DATE:
            b->summary->up_to_date++;
            mark_done(b, index, NODE_DONE);
            break;
        case FT_PLAN_RESTORE:
            if (b->options->dry_run) {
                reason = ft_plan_reason_line(plan);
                ft_progress_message(b->options->progress, "would restore %s: %s", node->target, reason);
                b->summary->restored++;
                mark_done(b, index, NODE_DONE);
            } else if (ft_publish_restore(b->workspace, node, plan) != 0) {
                report_failure(b, index, ft_error_message());
            } else {
                ft_progress_message(b->options->progress, "restored %s from the cache", node->target);
                b->summary->restored++;
                mark_done(b, index, NODE_DONE);
            }
            break;
        case FT_PLAN_RUN:
        case FT_PLAN_WAITS: {
            int from_remote = plan->action == FT_PLAN_RUN ? restore_from_remote(b, index) : 0;
            if (from_remote != 0) {
                if (from_remote < 0) {
                    report_failure(b, index, ft_error_message());
                } else {
                    b->summary->restored++;
                    b->summary->restored_from_remote++;
                    mark_done(b, index, NODE_DONE);
                }
            } else if (b->options->dry_run) {
                reason = ft_plan_reason_line(plan);
                ft_progress_message(b->options->progress, "would run %s: %s", node->target, reason);
                b->summary->run++;
                mark_done(b, index, NODE_DONE);
            } else if (plan->has_key && key_running(b, plan->key.key)) {
                ft_plan_free(plan);
                b->queue[kept++] = index;
            } else if (!fits(b, index)) {
                b->queue[kept++] = index;
            } else if (start_stage(b, index) != 0) {
                report_failure(b, index, ft_error_message());
            }
            break;
        }
        case FT_PLAN_UNKNOWN:
            break;
        }
        free(reason);
    }
    b->queue_length = kept;
}

int ft_build(ft_workspace *workspace, ft_graph *graph, const ft_build_options *options, ft_build_summary *summary)
{
    memset(summary, 0, sizeof *summary);
    builder b = {
        .workspace = workspace,
        .graph = graph,
        .options = options,
        .summary = summary,
        .plans = options->plans ? options->plans : ft_xcalloc(graph->n_nodes + 1, sizeof(ft_plan)),
        .states = ft_xcalloc(graph->n_nodes + 1, sizeof(node_state)),
        .unfinished_inputs = ft_xcalloc(graph->n_nodes + 1, sizeof(size_t)),
        .remote_asked = ft_xcalloc(graph->n_nodes + 1, sizeof(bool)),
        .queue = ft_xcalloc(graph->n_nodes + 1, sizeof(size_t)),
        .running = ft_xcalloc((size_t)options->jobs + 1, sizeof(running_stage)),
        .work_dirs = ft_work_dirs_new(workspace->state_dir, (size_t)options->jobs + 1),
        .gpus_free = options->gpus_total >= 64 ? ~0ull : (1ull << options->gpus_total) - 1,
        .memory_free = (int64_t)options->memory_total_bytes,
    };
    if (check_resources(&b) != 0) {
        b.result = -1;
        goto done;
    }
    for (size_t o = 0; o < graph->n_nodes; o++) {
        size_t i = graph->order[o];
        if (!graph->nodes[i].selected)
            continue;
        /* A plan made before the build that waited for an input is made again once the input is built. */
        if (b.plans[i].action == FT_PLAN_WAITS)
            ft_plan_free(&b.plans[i]);
        for (size_t k = 0; k < graph->nodes[i].n_inputs; k++)
            b.unfinished_inputs[i] += graph->nodes[i].input_nodes[k] != FT_NO_NODE;
        if (b.unfinished_inputs[i] == 0) {
            b.states[i] = NODE_QUEUED;
            b.queue[b.queue_length++] = i;
        }
    }

    interrupted = 0;
    struct sigaction action, old_int, old_term;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_interrupt;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int);
    sigaction(SIGTERM, &action, &old_term);

    size_t n_selected = 0;
    for (size_t i = 0; i < graph->n_nodes; i++)
        n_selected += graph->nodes[i].selected;
    uint64_t committed_ns = ft_now_ns();
    for (;;) {
        dispatch(&b);
        ft_progress_overall(options->progress,
                            summary->run + summary->restored + summary->up_to_date + summary->failed + summary->skipped,
                            n_selected);
        if (interrupted) {
            stop_all(&b);
            summary->interrupted = true;
            b.result = ft_error("interrupted; stopped stages keep their work folders and resume on the next run");
            break;
        }
        if (b.n_running == 0)
            break;
        wait_for_children(&b, COMMIT_INTERVAL_MS);
        if (ft_now_ns() - committed_ns >= COMMIT_INTERVAL_MS * 1000000ull) {
            commit_batch(&b);
            committed_ns = ft_now_ns();
        }
    }
    commit_batch(&b);
    if (b.state_error)
        b.result = ft_error("%s; the run history and metrics of this build may be incomplete (is the disk full?)",
                            b.state_error);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);

done:
    for (size_t i = 0; i < graph->n_nodes; i++)
        ft_plan_free(&b.plans[i]);
    if (!options->plans)
        free(b.plans);
    free(b.states);
    free(b.unfinished_inputs);
    free(b.remote_asked);
    free(b.queue);
    free(b.running);
    ft_work_dirs_free(b.work_dirs);
    ft_group_watch_stop(b.watch);
    free(b.state_error);
    return b.result;
}
