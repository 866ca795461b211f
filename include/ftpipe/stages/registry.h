/* registry: the built-in stage kinds (one file each in stages/), NULL-terminated.
 * main hands the table to the engine, which links no kind itself. */
#ifndef FTPIPE_REGISTRY_H
#define FTPIPE_REGISTRY_H

#include "ftpipe/engine/stage.h"

extern const ft_stage_kind *const ft_builtin_kinds[];

#endif
