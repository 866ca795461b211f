/* shell: runs a command, make-style. $< is the first input, $^ all inputs, $@ the
 * path the command must create (a file or a folder). The command runs with /bin/sh
 * in the pipeline's folder; its output goes to the stage log. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <signal.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/engine/stage.h"

/* Binds $<, $^ and $@ (the parser already turned $$ into $). */
static char *bind_automatic_variables(ft_stage *stage, const char *command)
{
    ft_strbuf out;
    ft_strbuf_init(&out);
    for (const char *p = command; *p; p++) {
        if (p[0] == '$' && p[1] == '<') {
            if (ft_stage_input_count(stage) > 0)
                ft_strbuf_puts(&out, ft_stage_input_path(stage, 0));
            p++;
        } else if (p[0] == '$' && p[1] == '^') {
            for (size_t i = 0; i < ft_stage_input_count(stage); i++) {
                if (i)
                    ft_strbuf_putc(&out, ' ');
                ft_strbuf_puts(&out, ft_stage_input_path(stage, i));
            }
            p++;
        } else if (p[0] == '$' && p[1] == '@') {
            ft_strbuf_puts(&out, ft_stage_output_path(stage));
            p++;
        } else {
            ft_strbuf_putc(&out, *p);
        }
    }
    return ft_strbuf_take(&out);
}

/* The command's environment: ours, with the declared variables the pipeline sets
 * in place of ours. Built as a new array: the engine process may be the caller. */
static char **command_environment(ft_stage *stage)
{
    size_t n_declared = 0, n_ours = 0;
    const char *const *declared = ft_stage_param_list(stage, "env", &n_declared);
    while (environ[n_ours])
        n_ours++;
    char **env = ft_xcalloc(n_ours + n_declared + 1, sizeof *env);
    size_t n = 0;
    for (size_t i = 0; i < n_declared; i++)
        if (ft_stage_variable(stage, declared[i]))
            env[n++] = ft_xasprintf("%s=%s", declared[i], ft_stage_variable(stage, declared[i]));
    size_t n_set = n;
    for (size_t i = 0; i < n_ours; i++) {
        bool replaced = false;
        for (size_t k = 0; k < n_set && !replaced; k++) {
            size_t name_length = (size_t)(strchr(env[k], '=') - env[k]);
            replaced = strncmp(environ[i], env[k], name_length + 1) == 0;
        }
        if (!replaced)
            env[n++] = ft_xstrdup(environ[i]);
    }
    return env;
}

typedef struct {
    const char *dir;
    int log_fd;
    bool own_group; /* started by the engine itself: a group of its own, and death with the engine */
    pid_t parent;
    char **argv;
    char **env;
    sigset_t mask;
} shell_start;

/* The child of vfork: it shares the caller's memory until exec, so it only makes
 * system calls. Signal dispositions are its own: set back to the defaults here. */
static void exec_shell(const shell_start *start)
{
    if (start->own_group) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != start->parent)
            _exit(127); /* the engine died before the line above */
        setpgid(0, 0);
    }
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd < 0 || chdir(start->dir) != 0)
        _exit(127);
    dup2(null_fd, STDIN_FILENO);
    dup2(start->log_fd, STDOUT_FILENO);
    dup2(start->log_fd, STDERR_FILENO);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, &start->mask, NULL);
    execve("/bin/sh", start->argv, start->env);
    _exit(127);
}

/* /bin/sh -c command in the pipeline's folder, its output on the log. vfork, not
 * fork: a fork copies the caller's page tables (the engine's, with its whole
 * graph) only for exec to drop them, once for each of thousands of stages. */
static int start_shell(ft_stage *stage, bool own_group, pid_t *child)
{
    char *command = bind_automatic_variables(stage, ft_stage_param_string(stage, "run"));
    ft_stage_log(stage, "$ %s", command);
    char *argv[] = {"sh", "-c", command, NULL};
    shell_start start = {
        .dir = ft_stage_pipeline_dir(stage),
        .log_fd = ft_stage_log_fd(stage),
        .own_group = own_group,
        .parent = getpid(),
        .argv = argv,
        .env = command_environment(stage),
    };
    /* No handler of ours may run in the child while it shares our memory. */
    sigset_t all, saved;
    sigfillset(&all);
    sigemptyset(&start.mask);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pid_t pid = vfork();
    if (pid == 0)
        exec_shell(&start);
    int error = errno;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    for (size_t i = 0; start.env[i]; i++)
        free(start.env[i]);
    free(start.env);
    free(command);
    if (pid < 0) {
        errno = error;
        return ft_error_errno("cannot start /bin/sh for %s", ft_stage_target(stage));
    }
    *child = pid;
    return 0;
}

static int spawn_shell(ft_stage *stage, pid_t *pid) { return start_shell(stage, true, pid); }

static int run_shell(ft_stage *stage)
{
    pid_t child = 0;
    if (start_shell(stage, false, &child) != 0)
        return -1;
    int status = 0;
    bool forwarded = false;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR)
            return ft_error_errno("cannot wait for the command of %s", ft_stage_target(stage));
        /* The command and everything it started share our process group: stop them
         * all (this covers a signal sent to this process alone, as on the engine's death). */
        if (ft_stage_cancelled(stage) && !forwarded) {
            kill(0, SIGTERM);
            forwarded = true;
        }
    }
    if (ft_stage_cancelled(stage))
        return ft_error("%s: cancelled", ft_stage_target(stage));
    return ft_stage_command_result(ft_stage_target(stage), status);
}

/* The values of the variables named in `env` enter the key: a command that reads
 * $CUDA_HOME reruns when it changes. A pipeline variable of that name gives the
 * value (and the command's environment gets it); else the environment does.
 * An unset variable differs from an empty one. */
static int shell_extra_key(ft_stage *stage, ft_strbuf *key_text)
{
    /* $@ ends in the target's name, so the command may depend on it. */
    ft_strbuf_printf(key_text, "output-name %s\n", ft_path_basename(ft_stage_target(stage)));
    size_t count = 0;
    const char *const *names = ft_stage_param_list(stage, "env", &count);
    for (size_t i = 0; i < count; i++) {
        const char *value = ft_stage_variable(stage, names[i]) ? ft_stage_variable(stage, names[i]) : getenv(names[i]);
        if (value)
            ft_strbuf_printf(key_text, "env %s=%zu:%s\n", names[i], strlen(value), value);
        else
            ft_strbuf_printf(key_text, "env %s unset\n", names[i]);
    }
    return 0;
}

const ft_stage_kind ft_kind_shell = {
    .name = "shell",
    .version = 1,
    .run = run_shell,
    .extra_key = shell_extra_key,
    .spawn = spawn_shell,
};
