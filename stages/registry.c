/* registry: the built-in stage kinds, one file each in stages/. */
#include "ftpipe/stages/registry.h"

extern const ft_stage_kind ft_kind_shell;
extern const ft_stage_kind ft_kind_download;
extern const ft_stage_kind ft_kind_init;
extern const ft_stage_kind ft_kind_tokenize;
extern const ft_stage_kind ft_kind_extract;
extern const ft_stage_kind ft_kind_shm;
extern const ft_stage_kind ft_kind_train;
extern const ft_stage_kind ft_kind_evaluate;
extern const ft_stage_kind ft_kind_export;

const ft_stage_kind *const ft_builtin_kinds[] = {
    &ft_kind_shell,
    &ft_kind_download,
    &ft_kind_init,
    &ft_kind_tokenize,
    &ft_kind_extract,
    &ft_kind_shm,
    &ft_kind_train,
    &ft_kind_evaluate,
    &ft_kind_export,
    NULL,
};
