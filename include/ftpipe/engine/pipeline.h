/* pipeline: reads an Ftpipe file into stage declarations.
 *
 * The language is make's: `target: kind inputs...`, indented `key = value`
 * parameter lines, variables (`=` recursive, `:=` immediate, `?=` unless set by
 * the command line or the environment), `$(VAR)`/`${VAR}`, `$$` for a literal `$`,
 * `include NAME` (NAME or NAME.ft in the including file's folder, then the rule
 * folders, then the built-in fragments), `#` comments (`\#` is a literal `#`),
 * `\` continuation, `.DEFAULT: targets...`, `.REMOTE: URL` (the remote cache), `matrix NAME = values...` (a
 * stage whose target names $(NAME) is made once per value), pattern rules
 * (`out/%.txt: KIND in/%.txt`, one stage per matching file), wildcard inputs,
 * and parameter sets (`params NAME` + indented lines, given to a stage by its
 * `use NAME` line).
 * `$<`, `$^` and `$@` are left in values untouched: they are bound when a stage runs.
 * Targets, inputs, include names and parameter values are expanded when their
 * line is read, so a stage's parameters always agree with its target; a
 * variable a parameter uses that is not yet defined there is read once the whole
 * file is (as make reads recipes). Command-line and environment values are
 * taken literally (a `$` in them is not expanded).
 *
 * Every error names file:line:column and says what was expected. */
#ifndef FTPIPE_PIPELINE_H
#define FTPIPE_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/base/error.h"

typedef struct {
    char *name;
    char *value;
} ft_variable;

typedef struct {
    char *name;
    char *value;      /* variables expanded, surrounding blanks trimmed */
    ft_location where;       /* of the key */
    ft_location value_where; /* of the value (just past the `=` when it is empty) */
    char *from_set;          /* the parameter set (`params NAME`) it came from, or NULL */
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
    /* The pipeline variables its `env` parameter names, with their values where
     * the stage is written: a shell stage's command sees them in its environment. */
    ft_variable *variables;
    size_t n_variables;
} ft_stage_decl;

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
    bool lists_folders;      /* a wildcard was expanded: what files exist changes its meaning */
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
