/* stage: the context a kind runs with, its typed parameter accessors, and the
 * child-process side of running it. */
#include "ftpipe/base/clock.h"
#include "ftpipe/engine/stage_runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

struct ft_stage {
    const ft_stage_kind *kind;
    const ft_param_set *params;
    char *target;
    char *key;
    char *pipeline_dir;
    char **inputs;
    size_t n_inputs;
    char *work_dir;
    char *output_path;
    char *state_dir;
    ft_variable *variables;
    size_t n_variables;
    int report_fd;       /* -1 in the engine process */
    int report_errno;    /* why a line to the engine (other than progress) was lost; 0: none was */
    bool output_elsewhere;
    bool job_step;
    FILE *log;
    uint64_t last_progress_ns;
};

static volatile sig_atomic_t cancel_requested;

static void on_cancel_signal(int signal_number)
{
    (void)signal_number;
    cancel_requested = 1;
}

ft_stage *ft_stage_create(const ft_stage_setup *setup)
{
    ft_stage *stage = ft_xcalloc(1, sizeof *stage);
    stage->kind = setup->kind;
    stage->params = setup->params;
    stage->target = ft_xstrdup(setup->target);
    stage->key = ft_xstrdup(setup->key);
    stage->pipeline_dir = ft_xstrdup(setup->pipeline_dir);
    stage->n_inputs = setup->n_inputs;
    stage->inputs = ft_xcalloc(setup->n_inputs + 1, sizeof *stage->inputs);
    for (size_t i = 0; i < setup->n_inputs; i++)
        stage->inputs[i] = ft_xstrdup(setup->inputs[i]);
    stage->work_dir = ft_xstrdup(setup->work_dir);
    char *out_dir = ft_path_join(setup->work_dir, "out");
    stage->output_path = ft_path_join(out_dir, ft_path_basename(setup->target));
    free(out_dir);
    stage->state_dir = ft_xstrdup(setup->state_dir);
    stage->variables = ft_xcalloc(setup->n_variables + 1, sizeof *stage->variables);
    for (size_t i = 0; i < setup->n_variables; i++)
        stage->variables[i] =
            (ft_variable){ft_xstrdup(setup->variables[i].name), ft_xstrdup(setup->variables[i].value)};
    stage->n_variables = setup->n_variables;
    stage->report_fd = -1;
    stage->output_elsewhere = setup->output_elsewhere;
    stage->job_step = setup->job_step;
    return stage;
}

void ft_stage_destroy(ft_stage *stage)
{
    if (!stage)
        return;
    for (size_t i = 0; i < stage->n_variables; i++) {
        free(stage->variables[i].name);
        free(stage->variables[i].value);
    }
    free(stage->variables);
    for (size_t i = 0; i < stage->n_inputs; i++)
        free(stage->inputs[i]);
    free(stage->inputs);
    free(stage->target);
    free(stage->key);
    free(stage->pipeline_dir);
    free(stage->work_dir);
    free(stage->output_path);
    free(stage->state_dir);
    if (stage->log)
        fclose(stage->log);
    free(stage);
}

char *ft_stage_log_path(const char *work_dir) { return ft_path_join(work_dir, "log"); }

/* Writes one protocol line; text's newlines become spaces so a line stays a line. */
static void report(ft_stage *stage, char tag, const char *head, const char *text)
{
    if (stage->report_fd < 0)
        return;
    ft_strbuf line;
    ft_strbuf_init(&line);
    ft_strbuf_putc(&line, tag);
    ft_strbuf_putc(&line, ' ');
    if (head) {
        ft_strbuf_puts(&line, head);
        ft_strbuf_putc(&line, ' ');
    }
    for (const char *p = text; *p; p++)
        ft_strbuf_putc(&line, (*p == '\n' || *p == '\r') ? ' ' : *p);
    ft_strbuf_putc(&line, '\n');
    /* A pipe write of at most PIPE_BUF bytes is atomic; longer lines are cut. */
    size_t length = line.length < 4096 ? line.length : 4096;
    if (length == 4096)
        line.data[4095] = '\n';
    ssize_t written;
    do
        written = write(stage->report_fd, line.data, length);
    while (written < 0 && errno == EINTR);
    if (written != (ssize_t)length && tag != 'P' && !stage->report_errno)
        stage->report_errno = written < 0 ? errno : EIO;
    ft_strbuf_free(&line);
}

void ft_stage_open_log(ft_stage *stage)
{
    if (stage->log)
        return;
    char *log_path = ft_stage_log_path(stage->work_dir);
    stage->log = fopen(log_path, "ae"); /* close-on-exec: only the program it is handed to keeps it */
    free(log_path);
    if (stage->log)
        setvbuf(stage->log, NULL, _IOLBF, 0);
}

int ft_stage_child_main(ft_stage *stage, int report_fd, int (*run)(ft_stage *stage))
{
    stage->report_fd = report_fd;
    /* Die with the engine: a killed ftpipe must not leave stages writing into work folders. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_cancel_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (getppid() == 1)
        return 1; /* the engine is gone: nobody to report to */

    ft_stage_open_log(stage);
    ft_error_clear();
    int result = run ? run(stage) : stage->kind->run(stage);
    if (result == 0 && !stage->output_elsewhere && !ft_path_exists(stage->output_path)) {
        result = ft_error("stage %s finished without creating its output (expected at %s)", stage->target,
                          stage->output_path);
    }
    /* A metric, the summary or the log lost on the way would pass unnoticed: the stage fails instead. */
    if (result == 0 && stage->report_errno)
        result = ft_error("stage %s could not report to ftpipe (%s): its metrics or summary did not all arrive; "
                          "run again", stage->target, strerror(stage->report_errno));
    if (result == 0 && stage->log && (fflush(stage->log) != 0 || ferror(stage->log)))
        result = ft_error("cannot write the log of stage %s in %s (is the disk full?); run again", stage->target,
                          stage->work_dir);
    if (result != 0) {
        const char *message = ft_error_message();
        if (cancel_requested && !message[0])
            message = "cancelled";
        if (stage->log)
            fprintf(stage->log, "ftpipe: %s\n", message);
        report(stage, 'E', NULL, message);
    }
    if (stage->log) {
        if (fclose(stage->log) != 0 && result == 0) {
            result = ft_error_errno("cannot write the log of stage %s in %s", stage->target, stage->work_dir);
            report(stage, 'E', NULL, ft_error_message());
        }
        stage->log = NULL;
    }
    if (result == 0)
        return 0;
    if (cancel_requested && !stage->job_step) /* said, not inferred from the exit status: any kind may exit 2 */
        report(stage, 'C', NULL, "cancelled");
    return 1;
}

int ft_stage_command_result(const char *target, int wait_status)
{
    if (WIFSIGNALED(wait_status))
        return ft_error("%s: the command was killed by signal %d (%s)", target, WTERMSIG(wait_status),
                        strsignal(WTERMSIG(wait_status)));
    if (WEXITSTATUS(wait_status) == 127)
        return ft_error("%s: the command exited with status 127 (command not found?)", target);
    if (WEXITSTATUS(wait_status) != 0)
        return ft_error("%s: the command exited with status %d", target, WEXITSTATUS(wait_status));
    return 0;
}

const char *ft_stage_target(const ft_stage *stage) { return stage->target; }
const ft_param_set *ft_stage_params(const ft_stage *stage) { return stage->params; }
int ft_stage_report_fd(const ft_stage *stage) { return stage->report_fd; }
const char *ft_stage_key(const ft_stage *stage) { return stage->key; }
const char *ft_stage_variable(const ft_stage *stage, const char *name)
{
    for (size_t i = 0; i < stage->n_variables; i++)
        if (strcmp(stage->variables[i].name, name) == 0)
            return stage->variables[i].value;
    return NULL;
}

const char *ft_stage_pipeline_dir(const ft_stage *stage) { return stage->pipeline_dir; }
size_t ft_stage_input_count(const ft_stage *stage) { return stage->n_inputs; }

const char *ft_stage_input_path(const ft_stage *stage, size_t index)
{
    return index < stage->n_inputs ? stage->inputs[index] : NULL;
}

const char *ft_stage_output_path(const ft_stage *stage) { return stage->output_path; }
const char *ft_stage_work_dir(const ft_stage *stage) { return stage->work_dir; }
const char *ft_stage_state_dir(const ft_stage *stage) { return stage->state_dir; }
bool ft_stage_cancelled(const ft_stage *stage)
{
    (void)stage;
    return cancel_requested != 0;
}

static const ft_param_value *param(const ft_stage *stage, const char *name)
{
    const ft_param_value *value = ft_params_get(stage->params, name);
    if (!value) {
        fprintf(stderr, "ftpipe: internal error: kind %s reads parameter '%s', which rules/%s.ft does not declare\n",
                stage->kind->name, name, stage->kind->name);
        abort();
    }
    return value;
}

bool ft_stage_param_is_set(const ft_stage *stage, const char *name) { return param(stage, name)->is_set; }
const char *ft_stage_param_string(const ft_stage *stage, const char *name) { return param(stage, name)->text; }
int64_t ft_stage_param_int(const ft_stage *stage, const char *name) { return param(stage, name)->integer; }
double ft_stage_param_float(const ft_stage *stage, const char *name) { return param(stage, name)->real; }
int64_t ft_stage_param_size_bytes(const ft_stage *stage, const char *name) { return param(stage, name)->integer; }
int64_t ft_stage_param_duration_ms(const ft_stage *stage, const char *name) { return param(stage, name)->integer; }
bool ft_stage_param_bool(const ft_stage *stage, const char *name) { return param(stage, name)->integer != 0; }

const char *const *ft_stage_param_list(const ft_stage *stage, const char *name, size_t *count)
{
    const ft_param_value *value = param(stage, name);
    *count = value->n_items;
    return (const char *const *)value->items;
}

void ft_stage_log(ft_stage *stage, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    FILE *out = stage->log ? stage->log : stderr;
    vfprintf(out, fmt, args);
    fputc('\n', out);
    va_end(args);
}

int ft_stage_log_fd(ft_stage *stage)
{
    if (!stage->log)
        return STDERR_FILENO;
    fflush(stage->log);
    return fileno(stage->log);
}

void ft_stage_progress(ft_stage *stage, double fraction, const char *fmt, ...)
{
    uint64_t now = ft_now_ns();
    /* Ten reports a second are plenty for a terminal and cheap for the engine. */
    if (fraction < 1.0 && now - stage->last_progress_ns < 100000000u)
        return;
    stage->last_progress_ns = now;
    char text[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    char head[32];
    snprintf(head, sizeof head, "%.4f", fraction);
    report(stage, 'P', head, text);
}

void ft_stage_metric(ft_stage *stage, int64_t step, const char *name, double value)
{
    char head[96];
    snprintf(head, sizeof head, "%lld %.17g", (long long)step, value);
    report(stage, 'M', head, name);
}

void ft_stage_summary(ft_stage *stage, const char *fmt, ...)
{
    char text[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    if (stage->log)
        fprintf(stage->log, "%s\n", text);
    report(stage, 'S', NULL, text);
}

int ft_stage_fail(ft_stage *stage, const char *fmt, ...)
{
    (void)stage;
    char text[4096];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    return ft_error("%s", text);
}

const ft_stage_kind *ft_stage_kind_lookup(const ft_stage_kind *const *kinds, const char *name)
{
    for (size_t i = 0; kinds && kinds[i]; i++)
        if (strcmp(kinds[i]->name, name) == 0)
            return kinds[i];
    return NULL;
}

/* --- estimates --- */

void ft_estimate_set(ft_estimate_figure *figure, double value, const char *fmt, ...)
{
    figure->known = true;
    figure->value = value;
    va_list args;
    va_start(args, fmt);
    vsnprintf(figure->source, sizeof figure->source, fmt, args);
    va_end(args);
}

void ft_estimate_unknown(ft_estimate_figure *figure, const char *fmt, ...)
{
    figure->known = false;
    figure->value = 0.0;
    va_list args;
    va_start(args, fmt);
    vsnprintf(figure->source, sizeof figure->source, fmt, args);
    va_end(args);
}
