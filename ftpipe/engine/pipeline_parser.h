/* pipeline_parser: the parser's state and the helpers its files share:
 * pipeline.c reads statements; pipeline_matrix.c, pipeline_glob.c,
 * pipeline_param_sets.c and pipeline_params_file.c handle matrix lists, pattern
 * rules, parameter sets and parameters files; pipeline_declare.c, below them
 * all, declares stages and parameters. */
#ifndef FTPIPE_PIPELINE_PARSER_H
#define FTPIPE_PIPELINE_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/base/strmap.h"
#include "pipeline_internal.h"

#define NO_STAGE SIZE_MAX

/* A parameter value as its line left it: expanded again at the end, for the
 * variables that were not yet defined there. */
typedef struct {
    size_t stage;
    size_t param;
    ft_located_text raw;
} pending_value;

/* The stages one stage line made (one per combination for a matrix stage), which
 * its parameter lines go to, and the matrix values each was made with. */
typedef struct {
    size_t first; /* NO_STAGE outside a stage */
    size_t count;
    size_t *axes; /* the matrix axes its target names */
    size_t n_axes;
    size_t *counters; /* count x n_axes: each stage's value of each axis */
    char *target;     /* as written, for messages */
} stage_group;

typedef struct {
    const char *identity; /* absolute path, or the built-in's name: for cycles */
    const char *name;     /* as shown in locations */
} open_file;

/* `params NAME` and its indented lines: parameters stages take with `use NAME`. */
typedef struct {
    char *key;
    ft_location key_where;
    ft_located_text value; /* expanded as far as the variables defined there allow */
} set_entry;

typedef struct {
    char *name;
    ft_location where;
    set_entry *entries;
    size_t n_entries;
} param_set;

#define NO_SET SIZE_MAX

typedef struct {
    ft_pipeline *pipeline;
    const ft_pipeline_options *options;
    ft_variables *variables;
    size_t stage_capacity;
    ft_strmap targets;    /* target -> stage index, for duplicates */
    size_t file_capacity;
    pending_value *pending;
    size_t n_pending;
    size_t pending_capacity;
    stage_group group; /* the stages parameter lines belong to */
    ft_matrix matrix;
    param_set *sets;
    size_t n_sets;
    size_t sets_capacity;
    size_t current_set; /* the set indented lines go to, or NO_SET */
    ft_located_text expanded; /* ft_parser_expand_words' buffer, kept from line to line */
    bool has_defaults;
    ft_location defaults_where;
    open_file *open_files; /* the include chain, outermost first */
    size_t n_open_files;
    size_t open_capacity;
} parser;

/* The blank-separated words of text, each with the position of its first byte. */
typedef struct {
    char **words;
    ft_location *where;
    size_t n_words;
} word_list;

/* pipeline_declare.c */
bool ft_parser_is_blank(char c);
/* Letters, digits and '_': a parameter name. */
bool ft_parser_is_word(const char *text);
/* Letters, digits and '_', not starting with a digit. */
bool ft_parser_is_variable_name(const char *text);
/* The first byte at or after i that is not blank. */
size_t ft_parser_skip_blanks(const ft_located_text *line, size_t i);
/* "file:line:column". */
void ft_parser_format_location(char *out, size_t size, const ft_location *where);
/* The blank-separated words of text, each with the position of its first byte. */
void ft_parser_split_words(const ft_located_text *text, word_list *out);
/* line[from, to) without blanks at either end, as a fresh string. */
char *ft_parser_trimmed_copy(const ft_located_text *line, size_t from, size_t to);
/* The first `=` or `:` outside `$(...)`, or line->length. */
size_t ft_parser_find_operator(const ft_located_text *line, size_t from);
/* Expands line[from, to) and splits it into words. */
int ft_parser_expand_words(parser *p, const ft_located_text *line, size_t from, size_t to, word_list *out);
void ft_parser_free_words(word_list *list);
/* Declares a stage: words are the kind, then the inputs. */
int ft_parser_add_stage(parser *p, const char *target, const ft_location *target_where, const ft_location *colon,
                        const word_list *words);

/* A `key = value` line's key (checked) and where its value starts; the owner
 * ("stage", "out.txt") is for the message. */
int ft_parser_split_parameter(const ft_located_text *line, size_t start, const char *owner_kind,
                              const char *owner_name, char **key, size_t *value_start);
/* Gives a stage parameter key (taken) the value text[from, to), expanded as far
 * as the variables defined now allow. A stage's own value wins over a set's
 * (from_set: the set's name, else NULL); twice in the stage, or in two sets, is
 * an error. */
int ft_parser_set_parameter(parser *p, size_t stage_index, char *key, const ft_location *key_where,
                            const ft_located_text *text, size_t from, size_t to, const char *from_set);

/* pipeline_param_sets.c */
/* `params NAME`: the indented lines that follow are the set's. */
int ft_parser_parse_param_set(parser *p, const ft_located_text *line, size_t start);
int ft_parser_add_set_entry(parser *p, const ft_located_text *line, size_t start);
/* `use NAME...` in a stage: the sets' parameters, for each stage of the group. */
int ft_parser_use_sets(parser *p, const ft_located_text *line, size_t start);
void ft_parser_free_param_sets(parser *p);

/* pipeline_params_file.c */
/* Whether an include name is a parameters file (.yaml, .yml, .json). */
bool ft_parser_is_params_file(const char *name);
/* Sets a variable for each value of a parameters file's text; shown names it. */
int ft_parser_include_params_file(parser *p, const ft_location *where, const char *shown, const char *text);

/* pipeline_matrix.c */
/* `matrix NAME = VALUE...`. */
int ft_parser_parse_matrix(parser *p, const ft_located_text *line, size_t start);
/* Binds (unbinds) the axes' values counters[i] as variables. */
void ft_parser_bind_values(parser *p, const size_t *axes, size_t n_axes, const size_t *counters);
void ft_parser_unbind_values(parser *p, const size_t *axes, size_t n_axes);
/* Expands line[from, to) into words once for each combination of the matrix
 * axes it names that are not in `bound`, keeping each word once, in order. */
int ft_parser_expand_words_over_matrix(parser *p, const ft_located_text *line, size_t from, size_t to,
                                       const size_t *bound, size_t n_bound, word_list *out);

/* pipeline_glob.c */
/* Replaces each input word (words[1...]) with wildcards by the paths that match it. */
int ft_parser_expand_wildcards(parser *p, word_list *words);
/* `out/%.txt: KIND in/%.txt ...`: one stage for each file that matches the first
 * input with a `%`, the `%` of the target and of every input taking its stem. */
int ft_parser_add_pattern_stages(parser *p, const char *target, const ft_location *target_where,
                                 const ft_location *colon, const word_list *words);

#endif
