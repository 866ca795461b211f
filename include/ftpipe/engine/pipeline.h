/* pipeline: reads an Ftpipe file into stage declarations.
 *
 * The language is make's: `target: kind inputs...`, indented `key = value`
 * parameter lines, variables (`=` recursive, `:=` immediate, `?=` unless set by
 * the command line or the environment), `$(VAR)`/`${VAR}`, `$$` for a literal `$`,
 * `include NAME` (NAME or NAME.ft in the including file's folder, then the rule
 * folders, then the built-in fragments), `#` comments (`\#` is a literal `#`),
 * `\` continuation, `.DEFAULT: targets...` and `.REMOTE: URL` (the remote cache).
 * `$<`, `$^` and `$@` are left in values untouched: they are bound when a stage runs.
 * Targets, inputs and include names are expanded when their line is read;
 * parameter values once the whole file is read (as make does with recipes), so
 * they see every assignment. Command-line and environment values are taken
 * literally (a `$` in them is not expanded).
 *
 * Every error names file:line:column and says what was expected. */
#ifndef FTPIPE_PIPELINE_H
#define FTPIPE_PIPELINE_H

#include <stddef.h>

#include "ftpipe/base/error.h"

typedef struct {
    char *name;
    char *value;      /* variables expanded, surrounding blanks trimmed */
    ft_location where;       /* of the key */
    ft_location value_where; /* of the value (just past the `=` when it is empty) */
} ft_param;

typedef struct {
    char *target;         /* as written: a path relative to the pipeline's folder */
    char *kind;
    char **inputs;        /* as written, variables expanded */
    ft_location *input_where;
    size_t n_inputs;
    ft_param *params;     /* in file order; a repeated key is an error */
    size_t n_params;
    ft_location where;    /* of the target */
    ft_location kind_where;
} ft_stage_decl;

typedef struct {
    char *name;
    char *value;
} ft_variable;

typedef struct {
    char *path;              /* the pipeline file, as given */
    char *dir;               /* its folder, absolute: targets are relative to it */
    ft_stage_decl *stages;
    size_t n_stages;
    char **defaults;         /* from `.DEFAULT:`; empty when absent */
    ft_location *default_where;
    size_t n_defaults;
    char *remote_url;        /* from `.REMOTE:`; NULL when absent */
    char **files;            /* every file read (the pipeline, then includes), owned */
    size_t n_files;
} ft_pipeline;

typedef struct {
    /* VAR=value pairs from the command line: they override every assignment. */
    const ft_variable *overrides;
    size_t n_overrides;
    /* Folders searched for `include` after the including file's own folder. */
    const char *const *rule_dirs;
    size_t n_rule_dirs;
} ft_pipeline_options;

/* Parses path. On error returns -1 with "file:line:col: message" in ft_error. */
int ft_pipeline_load(const char *path, const ft_pipeline_options *options, ft_pipeline **out);
/* The same, from a string (for tests); `name` is used in locations. */
int ft_pipeline_parse_string(const char *name, const char *text, const ft_pipeline_options *options,
                             ft_pipeline **out);
void ft_pipeline_free(ft_pipeline *pipeline);

#endif
