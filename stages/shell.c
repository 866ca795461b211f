/* shell: runs a command, make-style. $< is the first input, $^ all inputs, $@ the
 * path the command must create (a file or a folder). The command runs with /bin/sh
 * in the pipeline's folder; its output goes to the stage log. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
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

/* The command's environment: ours, with the declared variables the pipeline sets.
 * This process runs only this stage, so its own environment may change. */
static void export_declared_variables(ft_stage *stage)
{
    size_t n_declared = 0;
    const char *const *declared = ft_stage_param_list(stage, "env", &n_declared);
    for (size_t i = 0; i < n_declared; i++)
        if (ft_stage_variable(stage, declared[i]))
            setenv(declared[i], ft_stage_variable(stage, declared[i]), 1);
}

/* /bin/sh in the pipeline's folder, output to the log. posix_spawn, not fork: a
 * fork copies this process's page tables (the engine's, with its whole graph)
 * only for exec to drop them, once for each of thousands of stages. */
static int spawn_shell(ft_stage *stage, const char *command, pid_t *child)
{
    int log_fd = ft_stage_log_fd(stage);
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attributes);
    posix_spawn_file_actions_addchdir_np(&actions, ft_stage_pipeline_dir(stage));
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, log_fd, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, log_fd, STDERR_FILENO);
    sigset_t defaults, none;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGPIPE);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attributes, &defaults);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    export_declared_variables(stage);
    char *argv[] = {"sh", "-c", (char *)command, NULL};
    int error = posix_spawn(child, "/bin/sh", &actions, &attributes, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    if (error != 0) {
        errno = error;
        return ft_error_errno("cannot start /bin/sh in %s for %s", ft_stage_pipeline_dir(stage),
                              ft_stage_target(stage));
    }
    return 0;
}

static int run_shell(ft_stage *stage)
{
    char *command = bind_automatic_variables(stage, ft_stage_param_string(stage, "run"));
    ft_stage_log(stage, "$ %s", command);
    pid_t child = 0;
    if (spawn_shell(stage, command, &child) != 0) {
        free(command);
        return -1;
    }
    int status = 0;
    bool forwarded = false;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) {
            free(command);
            return ft_error_errno("cannot wait for the command of %s", ft_stage_target(stage));
        }
        /* The command and everything it started share our process group: stop them
         * all (this covers a signal sent to this process alone, as on the engine's death). */
        if (ft_stage_cancelled(stage) && !forwarded) {
            kill(0, SIGTERM);
            forwarded = true;
        }
    }
    free(command);
    if (ft_stage_cancelled(stage))
        return ft_error("%s: cancelled", ft_stage_target(stage));
    if (WIFSIGNALED(status))
        return ft_error("%s: the command was killed by signal %d (%s)", ft_stage_target(stage), WTERMSIG(status),
                        strsignal(WTERMSIG(status)));
    if (WEXITSTATUS(status) == 127)
        return ft_error("%s: the command exited with status 127 (command not found?)", ft_stage_target(stage));
    if (WEXITSTATUS(status) != 0)
        return ft_error("%s: the command exited with status %d", ft_stage_target(stage), WEXITSTATUS(status));
    return 0;
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
};
