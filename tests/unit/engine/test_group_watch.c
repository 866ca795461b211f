/* Tests of group_watch: a listed process group gets SIGTERM when the engine dies
 * (here a forked stand-in, killed with SIGKILL); one removed from the list does not.
 * This process is a child subreaper, so the orphans come back to it to be reaped. */
#include <signal.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/engine/group_watch.h"

const char *const ft_builtin_rule_files[][2] = {{NULL, NULL}};

/* A stage program: leads its own group and sleeps until a signal ends it. It
 * execs, as a spawned stage does, so it keeps no copy of the engine's socket. */
static pid_t start_group(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        execlp("sleep", "sleep", "1000", (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    return pid;
}

/* Forks an engine that starts a watcher, lists a group (and unlists it when
 * `removed`), then dies by SIGKILL. Returns the group's process. */
static pid_t engine_killed_with_group(bool removed, pid_t *engine)
{
    int report[2];
    CHECK_INT(pipe(report), 0);
    *engine = fork();
    if (*engine == 0) {
        ft_group_watch *watch = NULL;
        if (ft_group_watch_start(&watch) != 0)
            _exit(1);
        pid_t group = start_group();
        ft_group_watch_add(watch, group);
        if (removed)
            ft_group_watch_remove(watch, group);
        ssize_t ignored = write(report[1], &group, sizeof group);
        (void)ignored;
        raise(SIGKILL);
    }
    close(report[1]);
    pid_t group = -1;
    CHECK_INT(read(report[0], &group, sizeof group), sizeof group);
    close(report[0]);
    return group;
}

TEST(a_listed_group_is_stopped_when_the_engine_is_killed)
{
    pid_t engine = 0;
    pid_t group = engine_killed_with_group(false, &engine);
    int status = 0;
    CHECK_INT(waitpid(engine, &status, 0), engine);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CHECK_INT(waitpid(group, &status, 0), group); /* blocks until the watcher's SIGTERM ends it */
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
    while (waitpid(-1, NULL, 0) > 0) { /* the watcher */
    }
}

TEST(a_removed_group_is_left_alone)
{
    pid_t engine = 0;
    pid_t group = engine_killed_with_group(true, &engine);
    CHECK_INT(waitpid(engine, NULL, 0), engine);
    /* The orphans are the watcher and the group; only the watcher ends by itself. */
    pid_t done = waitpid(-1, NULL, 0);
    CHECK(done > 0 && done != group);
    CHECK_INT(kill(group, 0), 0);
    kill(group, SIGKILL);
    waitpid(group, NULL, 0);
}

TEST(stopping_without_a_watch_is_harmless) { ft_group_watch_stop(NULL); }

int main(void)
{
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    RUN(a_listed_group_is_stopped_when_the_engine_is_killed);
    RUN(a_removed_group_is_left_alone);
    RUN(stopping_without_a_watch_is_harmless);
    return check_done();
}
