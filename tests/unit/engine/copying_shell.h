/* A `shell` stage kind for the engine's tests that copies its first input to its
 * output instead of running the command (the record and answer tests build
 * small pipelines without starting shells). */
#ifndef FTPIPE_TEST_COPYING_SHELL_H
#define FTPIPE_TEST_COPYING_SHELL_H

#include "ftpipe/base/fsutil.h"
#include "ftpipe/engine/stage.h"

static inline int copy_first_input(ft_stage *stage)
{
    return ft_copy_file(ft_stage_input_path(stage, 0), ft_stage_output_path(stage));
}

static const ft_stage_kind copying_shell = {.name = "shell", .version = 1, .run = copy_first_input};
static const ft_stage_kind *const kinds[] = {&copying_shell, NULL};

#endif
