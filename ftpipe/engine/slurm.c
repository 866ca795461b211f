/* slurm: a stage submitted through srun, and its run on the cluster's nodes. */
#include "ftpipe/engine/slurm.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/engine/rules.h"
#include "ftpipe/engine/stage_runtime.h"

/* Set in the job's environment: the process is the step, not the submitter. */
#define STEP_VARIABLE "FTPIPE_SLURM_STEP"
enum { TAIL_LINES = 6 };

bool ft_slurm_submits(ft_stage *stage)
{
    const ft_param_set *params = ft_stage_params(stage);
    const ft_param_value *executor = params ? ft_params_get(params, "executor") : NULL;
    return executor && strcmp(executor->canonical, "slurm") == 0 && !getenv(STEP_VARIABLE);
}

bool ft_slurm_step_writes_output(void)
{
    const char *task = getenv("SLURM_PROCID");
    return !getenv(STEP_VARIABLE) || !task || strcmp(task, "0") == 0;
}

/* --- the description: one "FIELD VALUE" a line; values hold no newline --- */

static int write_description(ft_stage *stage, const char *path)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    const ft_param_set *params = ft_stage_params(stage);
    ft_strbuf_printf(&text, "kind %s\ntarget %s\nkey %s\npipeline_dir %s\nwork_dir %s\nstate_dir %s\n",
                     params->kind->kind, ft_stage_target(stage), ft_stage_key(stage), ft_stage_pipeline_dir(stage),
                     ft_stage_work_dir(stage), ft_stage_state_dir(stage));
    for (size_t i = 0; i < ft_stage_input_count(stage); i++)
        ft_strbuf_printf(&text, "input %s\n", ft_stage_input_path(stage, i));
    for (size_t i = 0; i < params->n_values; i++)
        if (params->values[i].is_set)
            ft_strbuf_printf(&text, "param %s %s\n", params->values[i].rule->name, params->values[i].text);
    for (size_t i = 0; i < text.length; i++)
        if (text.data[i] == '\r')
            text.data[i] = ' ';
    int status = ft_write_file_atomic(path, text.data, text.length);
    ft_strbuf_free(&text);
    return status;
}

/* --- the login node's side --- */

static void add_argument(char ***argv, size_t *count, size_t *capacity, char *argument)
{
    ft_grow((void **)argv, capacity, *count + 2, sizeof **argv);
    (*argv)[(*count)++] = argument;
    (*argv)[*count] = NULL;
}

/* srun's words for this stage's resources. */
static char **srun_command(ft_stage *stage, const char *description)
{
    const ft_param_set *params = ft_stage_params(stage);
    char **argv = NULL;
    size_t n = 0, capacity = 0;
    char self[4096];
    ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
    self[length > 0 ? length : 0] = '\0';
    add_argument(&argv, &n, &capacity, ft_xstrdup(getenv("FTPIPE_SRUN") ? getenv("FTPIPE_SRUN") : "srun"));
    add_argument(&argv, &n, &capacity, ft_xstrdup("--verbose"));
    add_argument(&argv, &n, &capacity, ft_xasprintf("--job-name=ftpipe:%s", ft_stage_target(stage)));
    int64_t nodes = ft_params_get(params, "nodes")->integer;
    add_argument(&argv, &n, &capacity, ft_xasprintf("--nodes=%lld", (long long)(nodes > 0 ? nodes : 1)));
    add_argument(&argv, &n, &capacity, ft_xstrdup("--ntasks-per-node=1"));
    int64_t gpus = ft_params_get(params, "gpus")->integer;
    if (gpus > 0)
        add_argument(&argv, &n, &capacity, ft_xasprintf("--gpus-per-node=%lld", (long long)gpus));
    int64_t time_ms = ft_params_get(params, "time")->integer;
    if (time_ms > 0) /* srun's minutes, rounded up */
        add_argument(&argv, &n, &capacity, ft_xasprintf("--time=%lld", (long long)((time_ms + 59999) / 60000)));
    const char *partition = ft_params_get(params, "partition")->text;
    if (partition && *partition)
        add_argument(&argv, &n, &capacity, ft_xasprintf("--partition=%s", partition));
    add_argument(&argv, &n, &capacity, ft_xasprintf("--chdir=%s", ft_stage_pipeline_dir(stage)));
    add_argument(&argv, &n, &capacity, ft_xasprintf("--export=ALL,%s=1", STEP_VARIABLE));
    add_argument(&argv, &n, &capacity, ft_xstrdup("--"));
    add_argument(&argv, &n, &capacity, ft_xstrdup(self));
    add_argument(&argv, &n, &capacity, ft_xstrdup("stage-exec"));
    add_argument(&argv, &n, &capacity, ft_xstrdup(description));
    return argv;
}

/* srun's job id in one of its verbose lines ("srun: jobid 42: nodes(1)..."), or 0. */
static long job_id_in(const char *line)
{
    const char *patterns[] = {"jobid ", "job ", "JobId="};
    for (size_t i = 0; i < sizeof patterns / sizeof *patterns; i++) {
        const char *at = strstr(line, patterns[i]);
        if (at) {
            long id = strtol(at + strlen(patterns[i]), NULL, 10);
            if (id > 0)
                return id;
        }
    }
    return 0;
}

int ft_slurm_submit(ft_stage *stage)
{
    char *description = ft_path_join(ft_stage_work_dir(stage), "slurm-stage");
    if (write_description(stage, description) < 0) {
        free(description);
        return -1;
    }
    char **argv = srun_command(stage, description);
    ft_strbuf command;
    ft_strbuf_init(&command);
    for (char **a = argv; *a; a++)
        ft_strbuf_printf(&command, "%s%s", a == argv ? "" : " ", *a);
    ft_stage_log(stage, "submitting through Slurm: %s", command.data);
    int errors[2];
    int status = pipe(errors) == 0 ? 0 : ft_error_errno("cannot make a pipe for srun");
    pid_t pid = status == 0 ? fork() : -1;
    if (status == 0 && pid < 0)
        status = ft_error_errno("cannot start srun");
    if (pid == 0) {
        /* The report lines of the stage's run on the node reach the engine through srun. */
        dup2(ft_stage_report_fd(stage), STDOUT_FILENO);
        dup2(errors[1], STDERR_FILENO);
        close(errors[0]);
        close(errors[1]);
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    long job = 0;
    ft_strbuf tail;
    ft_strbuf_init(&tail);
    if (status == 0) {
        close(errors[1]);
        FILE *lines = fdopen(errors[0], "r");
        char line[2048];
        while (lines && fgets(line, sizeof line, lines)) {
            line[strcspn(line, "\n")] = '\0';
            if (!job && (job = job_id_in(line)) > 0)
                ft_stage_log(stage, "slurm job %ld", job);
            if (strstr(line, "srun: debug") || strstr(line, "srun: defined options") || strncmp(line, "srun: ---", 9) == 0)
                continue; /* srun --verbose's settings dump */
            ft_stage_log(stage, "%s", line);
            ft_strbuf_printf(&tail, "\n    %s", line);
            /* keep the last lines only */
            size_t newlines = 0;
            for (size_t i = tail.length; i > 0; i--)
                if (tail.data[i - 1] == '\n' && ++newlines > TAIL_LINES) {
                    memmove(tail.data, tail.data + i - 1, tail.length - (i - 1) + 1);
                    tail.length -= i - 1;
                    break;
                }
        }
        if (lines)
            fclose(lines);
        int wait_status = 0;
        while (waitpid(pid, &wait_status, 0) < 0 && errno == EINTR)
            if (ft_stage_cancelled(stage))
                kill(pid, SIGINT); /* srun cancels the job's step on SIGINT */
        if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0) {
            char job_text[48] = "its job";
            if (job)
                snprintf(job_text, sizeof job_text, "slurm job %ld", job);
            if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 127)
                status = ft_error("cannot run %s: install Slurm's client (srun) on this machine, or set FTPIPE_SRUN",
                                  argv[0]);
            else
                status = ft_error("%s of stage %s failed (srun exited with %s %d); srun's last lines:%s", job_text,
                                  ft_stage_target(stage), WIFEXITED(wait_status) ? "status" : "signal",
                                  WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : WTERMSIG(wait_status),
                                  tail.length ? tail.data : " (none)");
        }
    }
    ft_strbuf_free(&tail);
    ft_strbuf_free(&command);
    for (char **a = argv; *a; a++)
        free(*a);
    free(argv);
    free(description);
    return status;
}

/* --- the node's side --- */

typedef struct {
    char *fields[6]; /* kind, target, key, pipeline_dir, work_dir, state_dir */
    char **inputs;
    size_t n_inputs, inputs_capacity;
    ft_param *params;
    size_t n_params, params_capacity;
} description;

static int read_description(const char *path, description *out)
{
    static const char *const names[] = {"kind", "target", "key", "pipeline_dir", "work_dir", "state_dir"};
    char *text = NULL;
    size_t length = 0;
    if (ft_read_file(path, &text, &length) < 0)
        return ft_error_context("reading the stage a Slurm job runs");
    int status = 0;
    for (char *line = text; line && *line && status == 0;) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        char *space = strchr(line, ' ');
        if (space) {
            *space = '\0';
            const char *value = space + 1;
            bool known = false;
            for (size_t i = 0; i < 6; i++)
                if (strcmp(line, names[i]) == 0) {
                    free(out->fields[i]);
                    out->fields[i] = ft_xstrdup(value);
                    known = true;
                }
            if (strcmp(line, "input") == 0) {
                ft_grow((void **)&out->inputs, &out->inputs_capacity, out->n_inputs + 1, sizeof *out->inputs);
                out->inputs[out->n_inputs++] = ft_xstrdup(value);
            } else if (strcmp(line, "param") == 0) {
                const char *name_end = strchr(value, ' ');
                ft_grow((void **)&out->params, &out->params_capacity, out->n_params + 1, sizeof *out->params);
                ft_param *param = &out->params[out->n_params++];
                memset(param, 0, sizeof *param);
                param->name = name_end ? ft_xstrndup(value, (size_t)(name_end - value)) : ft_xstrdup(value);
                param->value = ft_xstrdup(name_end ? name_end + 1 : "");
            } else if (!known) {
                status = ft_error("%s: unknown field %s", path, line);
            }
        }
        line = end ? end + 1 : NULL;
    }
    free(text);
    for (size_t i = 0; i < 6 && status == 0; i++)
        if (!out->fields[i])
            status = ft_error("%s lacks its %s line", path, names[i]);
    return status;
}

static void free_description(description *d)
{
    for (size_t i = 0; i < 6; i++)
        free(d->fields[i]);
    for (size_t i = 0; i < d->n_inputs; i++)
        free(d->inputs[i]);
    free(d->inputs);
    for (size_t i = 0; i < d->n_params; i++) {
        free(d->params[i].name);
        free(d->params[i].value);
    }
    free(d->params);
}

int ft_slurm_stage_exec(const char *path, const ft_stage_kind *const *kinds)
{
    description d;
    memset(&d, 0, sizeof d);
    ft_rulebook *book = NULL;
    ft_param_set params;
    memset(&params, 0, sizeof params);
    int status = read_description(path, &d);
    if (status == 0)
        status = ft_rulebook_load(NULL, 0, &book);
    const ft_stage_kind *kind = status == 0 ? ft_stage_kind_lookup(kinds, d.fields[0]) : NULL;
    if (status == 0 && !kind)
        status = ft_error("%s: this ftpipe has no stage kind %s (is it the same version as the login node's?)", path,
                          d.fields[0]);
    if (status == 0) {
        ft_stage_decl decl = {.target = d.fields[1], .kind = d.fields[0], .params = d.params, .n_params = d.n_params};
        status = ft_params_check(book, &decl, &params);
    }
    if (status != 0) {
        fprintf(stderr, "ftpipe stage-exec: %s\n", ft_error_message());
        free_description(&d);
        ft_rulebook_free(book);
        return 1;
    }
    /* the pipeline's variables stay behind: a shell stage's `env` is not sent to the node yet */
    ft_stage_setup setup = {.kind = kind,
                            .params = &params,
                            .target = d.fields[1],
                            .key = d.fields[2],
                            .pipeline_dir = d.fields[3],
                            .inputs = (const char *const *)d.inputs,
                            .n_inputs = d.n_inputs,
                            .work_dir = d.fields[4],
                            .state_dir = d.fields[5],
                            .output_elsewhere = !ft_slurm_step_writes_output(),
                            .job_step = true};
    ft_stage *stage = ft_stage_create(&setup);
    fflush(NULL);
    int exit_status = ft_stage_child_main(stage, STDOUT_FILENO, NULL);
    ft_stage_destroy(stage);
    ft_params_free(&params);
    ft_rulebook_free(book);
    free_description(&d);
    return exit_status;
}
