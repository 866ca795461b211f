/* pipeline_internal: what the files of the pipeline parser share (pipeline.c,
 * pipeline_lexer.c, variables.c). Other modules include ftpipe/pipeline.h only. */
#ifndef FTPIPE_PIPELINE_INTERNAL_H
#define FTPIPE_PIPELINE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/engine/pipeline.h"

/* Text that remembers where each byte came from, so that an error found after
 * continuation lines are joined, comments dropped and variables expanded still
 * points at the right line and column. chars is NUL-terminated; where[length] is
 * the position just past the last byte. */
typedef struct {
    char *chars;
    ft_location *where;
    size_t length;
    size_t capacity;
} ft_located_text;

void ft_located_init(ft_located_text *text);
void ft_located_free(ft_located_text *text);
/* Empties text; where[0] becomes `start`. */
void ft_located_reset(ft_located_text *text, ft_location start);
void ft_located_push(ft_located_text *text, char c, ft_location where);
/* Appends chars[0, n), every byte at `where`. */
void ft_located_fill(ft_located_text *text, const char *chars, size_t n, ft_location where);
/* Keeps the first `length` bytes. */
void ft_located_truncate(ft_located_text *text, size_t length);
/* Appends source->chars[from, to) with their positions. */
void ft_located_append(ft_located_text *text, const ft_located_text *source, size_t from, size_t to);

/* Reads a file's text one logical line at a time. */
typedef struct {
    const char *file; /* for locations */
    const char *text;
    size_t offset;
    int line;
    ft_located_text raw; /* the physical lines of the current logical line */
} ft_lexer;

void ft_lexer_init(ft_lexer *lexer, const char *file, const char *text);
void ft_lexer_free(ft_lexer *lexer);
/* The next logical line: continuations joined, the comment dropped, `\#` made `#`,
 * trailing blanks removed. *indented: whether its first byte is a blank.
 * Returns false at the end of the text. */
bool ft_lexer_next(ft_lexer *lexer, ft_located_text *line, bool *indented);

/* The variables of one pipeline: the file's, the command line's, the environment's. */
typedef struct ft_variables ft_variables;

ft_variables *ft_variables_new(const ft_pipeline_options *options);
void ft_variables_free(ft_variables *variables);
/* Given on the command line: the file's assignments to it are ignored. */
bool ft_variables_is_overridden(const ft_variables *variables, const char *name);
/* Assigned by the file (or bound). */
bool ft_variables_is_assigned(const ft_variables *variables, const char *name);
/* Set by the file, the command line or the environment (what `?=` asks). */
bool ft_variables_is_set(const ft_variables *variables, const char *name);
/* Assigns source[from, to): `recursive` values are expanded at each use, others are final. */
void ft_variables_assign(ft_variables *variables, const char *name, const ft_located_text *source, size_t from,
                         size_t to, bool recursive);
/* Appends the expansion of source[from, to) to out; a byte that came from a
 * variable carries the position of its `$`. Returns -1 with a located ft_error. */
int ft_variables_expand(ft_variables *variables, const ft_located_text *source, size_t from, size_t to,
                        ft_located_text *out);
/* The same for the variables defined now: references to variables not yet
 * defined stay as written and `$$` stays `$$`, so that the result can be
 * expanded again once the whole file is read. */
int ft_variables_expand_known(ft_variables *variables, const ft_located_text *source, size_t from, size_t to,
                              ft_located_text *out);

/* The value of a variable the file or the command line sets, expanded now, in
 * *value (NULL when neither sets it; caller frees). -1 on an expansion error,
 * located at where. */
int ft_variables_value(ft_variables *variables, const char *name, const ft_location *where, char **value);
/* Binds name to a literal value (a matrix's value while its stage is read). */
void ft_variables_bind(ft_variables *variables, const char *name, const char *value, ft_location where);
/* Forgets a variable the file set. */
void ft_variables_unbind(ft_variables *variables, const char *name);

/* `matrix NAME = values...`: a stage whose target names $(NAME) is made once per
 * value (per combination, for several), with NAME bound to it in its inputs and
 * parameters; an input of a stage whose target does not name it stands for
 * every value. */
typedef struct {
    char *name;
    char **values;
    size_t n_values;
    ft_location where; /* of the declaration */
} ft_matrix_axis;

typedef struct {
    ft_matrix_axis *axes;
    size_t n_axes;
    size_t capacity;
} ft_matrix;

void ft_matrix_init(ft_matrix *matrix);
void ft_matrix_free(ft_matrix *matrix);
const ft_matrix_axis *ft_matrix_find(const ft_matrix *matrix, const char *name);
/* Declares (or redeclares) an axis; refuses an empty or repeated value list. */
int ft_matrix_declare(ft_matrix *matrix, const char *name, char *const *values, const ft_location *value_where,
                      size_t n_values, const ft_location *where);
/* The axes that text[from, to) names directly as $(NAME) or ${NAME}, except those
 * in skip, as indices in declaration order into axes; returns their number. */
size_t ft_matrix_mentioned(const ft_matrix *matrix, const ft_located_text *text, size_t from, size_t to,
                           const size_t *skip, size_t n_skip, size_t *axes);
/* Steps counters (one per axis in axes, all 0 at first) to the next combination;
 * false after the last. */
bool ft_matrix_next(const ft_matrix *matrix, const size_t *axes, size_t n_axes, size_t *counters);

/* Whether an input word has a wildcard (`*`, `?`, `[`). */
bool ft_has_wildcard(const char *word);
/* The paths, relative to dir, that match pattern (relative to dir), sorted;
 * none is no error. */
int ft_glob_relative(const char *dir, const char *pattern, char ***paths, size_t *n_paths);

#endif
