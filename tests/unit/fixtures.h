/* fixtures: what many unit tests set up the same way, in one place: a file with
 * given text and mode (its folders made), a small tree of files, an empty folder and
 * a link, a test's own temporary folder, and the
 * nginx test server (tests/e2e/nginx.sh, serving DIR/www and the hub imitation). */
#ifndef FTPIPE_TESTS_FIXTURES_H
#define FTPIPE_TESTS_FIXTURES_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

/* Built-in rules for the engine's tests, fixed so that the kinds listed in
 * messages do not change as rules/ grows. A test that wants them defines the
 * table the program would otherwise get from rules/ (build/gen/builtin_rules.c):
 *     const char *const ft_builtin_rule_files[][2] = {FIXTURE_COMMON_AND_SHELL_RULES, {NULL, NULL}}; */
#define FIXTURE_COMMON_AND_SHELL_RULES                                                      \
    {"common.ft", ".common\n"                                                              \
                  "gpus    int   0  nokey  GPUs the stage holds while it runs.\n"          \
                  "memory  size  0  nokey  Host memory the stage needs.\n"},               \
    {                                                                                      \
        "shell.ft", ".kind shell\n"                                                        \
                    ".doc  Runs a command, make-style.\n"                                  \
                    "run  string  required  key  The command.\n"                           \
                    "env  list    \"\"        key  Variables whose values enter the key.\n" \
    }

/* Writes DIR/NAME (NAME may hold folders, made as needed) with text; a mode
 * other than 0 is then set with chmod. */
static inline void fixture_write_file(const char *dir, const char *name, const char *text, mode_t mode)
{
    char *path = ft_path_join(dir, name);
    char *parent = ft_path_dirname(path);
    CHECK_INT(ft_mkdir_p(parent), 0);
    if (ft_write_file_atomic(path, text, strlen(text)) != 0) {
        fprintf(stderr, "  cannot write %s: %s\n", path, ft_error_message());
        check_case_failed = 1;
    }
    if (mode)
        CHECK_INT(chmod(path, mode), 0);
    free(parent);
    free(path);
}

typedef struct {
    const char *path; /* below the tree's root; its folders are made */
    const char *text;
    mode_t mode;
} fixture_file;

/* Makes DIR/NAME holding `files`, an empty folder empty/ and a symbolic link
 * link -> link_target; returns its path (caller frees). */
static inline char *fixture_make_tree(const char *dir, const char *name, const fixture_file *files, size_t n_files,
                                      const char *link_target)
{
    char *root = ft_path_join(dir, name);
    char *empty = ft_path_join(root, "empty");
    char *link = ft_path_join(root, "link");
    CHECK_INT(ft_mkdir_p(empty), 0);
    for (size_t i = 0; i < n_files; i++)
        fixture_write_file(root, files[i].path, files[i].text, files[i].mode);
    CHECK_INT(symlink(link_target, link), 0);
    free(empty);
    free(link);
    return root;
}

/* A fresh folder /tmp/ftpipe-test-NAME.XXXXXX (caller frees), or NULL. */
static inline char *fixture_temporary_dir(const char *name)
{
    char *template = ft_xasprintf("/tmp/ftpipe-test-%s.XXXXXX", name);
    if (!mkdtemp(template)) {
        free(template);
        return NULL;
    }
    return template;
}

/* Starts nginx on a free port serving server_dir/www; returns the port, 0 when
 * it did not start. */
static inline int fixture_nginx_start(const char *server_dir)
{
    char *command = ft_xasprintf("sh tests/e2e/nginx.sh start %s", server_dir);
    FILE *out = popen(command, "r");
    free(command);
    int port = 0;
    if (!out || fscanf(out, "%d", &port) != 1)
        port = 0;
    if (out)
        pclose(out);
    return port;
}

/* Stops it and removes server_dir. */
static inline void fixture_nginx_stop(const char *server_dir)
{
    char *command = ft_xasprintf("sh tests/e2e/nginx.sh stop %s", server_dir);
    CHECK_INT(system(command), 0);
    free(command);
    ft_remove_tree(server_dir);
}

#endif
