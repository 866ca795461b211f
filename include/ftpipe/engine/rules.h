/* rules: each stage kind's parameters, read from its declarative rules file, and
 * the checking of a stage's parameter lines against them.
 *
 * A rules file (rules/KIND.ft) looks like:
 *
 *     .kind shell
 *     .doc  Runs a command, make-style.
 *     # name     type                 default     key    doc
 *     run        string               required    key    The command; $< $^ $@ as in make.
 *     env        list                 ""          key    Variables whose values enter the key.
 *     timeout    duration             0           nokey  Stop the command after this long (0: never).
 *     format     choice(peft, merged) peft        key    What to write.
 *
 * Types: string, int, float, size (2G, 512M, 1.5G, 4096: bytes, powers of 1024;
 * 2GB and 2GiB mean 2G), duration (30m, 1h30m, 10s, 250ms, 2d; a bare 0),
 * bool (true/false, yes/no, on/off, 1/0), list (blank-separated words), path,
 * choice(a,b,...). The default is a word, a "quoted string" (\" and \\ escaped),
 * or `required`; it is checked against the type when the file is read. Every
 * parameter line ends with a doc, and a kind needs its `.doc` line: `ftpipe help`
 * prints them. An empty value is accepted only by string and list parameters.
 * The first directive of a file says what it is: `.kind NAME`, or `.common` for
 * parameters every kind accepts (rules/common.ft: resources such as gpus and
 * memory); a file with neither is a fragment for `include`. Lines starting with
 * `#` are comments. Errors name file:line:column. */
#ifndef FTPIPE_RULES_H
#define FTPIPE_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/engine/pipeline.h"

typedef enum {
    FT_TYPE_STRING,
    FT_TYPE_INT,
    FT_TYPE_FLOAT,
    FT_TYPE_SIZE,
    FT_TYPE_DURATION,
    FT_TYPE_BOOL,
    FT_TYPE_LIST,
    FT_TYPE_PATH,
    FT_TYPE_CHOICE,
} ft_param_type;

typedef struct {
    char *name;
    ft_param_type type;
    char **choices;        /* FT_TYPE_CHOICE only */
    size_t n_choices;
    char *default_text;    /* NULL when required */
    bool required;
    bool in_key;           /* whether a change of value changes the stage's key */
    char *doc;
} ft_param_rule;

typedef struct {
    char *kind;
    char *doc;
    char *file;            /* where it was read from, for messages */
    ft_param_rule *params; /* the kind's own, then rules/common.ft's */
    size_t n_params;
    size_t n_own_params;   /* params[n_own_params..] are the common ones */
    /* `.lacks NAME TEXT`: names users bring from LLaMA-Factory or the HF Trainer
     * that the kind does not have, and what to do instead */
    char **lacks_names;
    char **lacks_texts;
    size_t n_lacks;
} ft_kind_rules;

typedef struct {
    ft_kind_rules *kinds;
    size_t n_kinds;
} ft_rulebook;

/* A checked value. `canonical` is the text that enters keys: sizes in bytes,
 * durations in milliseconds, bools as true/false, lists one blank between items,
 * floats in shortest round-trip form ("1e-4" and "0.0001" agree). */
typedef struct {
    const ft_param_rule *rule;
    bool is_set;           /* written in the pipeline (false: the default) */
    char *text;            /* as written, or the default's text */
    char *canonical;
    int64_t integer;       /* INT, SIZE (bytes), DURATION (ms), BOOL (0/1) */
    double real;           /* FLOAT */
    char **items;          /* LIST: the words */
    size_t n_items;
    ft_location where;     /* of the line that set it; file NULL for defaults */
} ft_param_value;

typedef struct {
    const ft_kind_rules *kind;
    ft_param_value *values; /* one per kind->params, same order */
    size_t n_values;
} ft_param_set;

/* The rules files compiled into the program, {file name, text} pairs ending with
 * {NULL, NULL}; the Makefile generates them from the rules folder. */
extern const char *const ft_builtin_rule_files[][2];

/* Loads every *.ft under each folder and the built-in rules compiled into the
 * program (a folder's file replaces a built-in of the same name; among folders,
 * the first holding a name wins). Files without `.kind` or `.common` are
 * fragments for `include` and are skipped. */
int ft_rulebook_load(const char *const *dirs, size_t n_dirs, ft_rulebook **out);
void ft_rulebook_free(ft_rulebook *book);
const ft_kind_rules *ft_rulebook_find(const ft_rulebook *book, const char *kind);
/* Sets ft_error for a kind the book lacks ("unknown stage kind 'shel' (did you mean
 * 'shell'?); kinds: ..."), at `where` when not NULL; returns -1. */
int ft_rulebook_unknown_kind(const ft_rulebook *book, const char *kind, const ft_location *where);

/* Checks a stage's parameters: unknown keys (naming the nearest valid one),
 * missing required ones, values of the wrong type. Fills in defaults. On error
 * *out holds nothing (ft_params_free on it is harmless). */
int ft_params_check(const ft_rulebook *book, const ft_stage_decl *stage, ft_param_set *out);
void ft_params_free(ft_param_set *set);
const ft_param_value *ft_params_get(const ft_param_set *set, const char *name);

/* Parses a value of the given type (used for defaults, checks and the command line).
 * On error, ft_error says what was expected (without a location). */
int ft_value_parse(const ft_param_rule *rule, const char *text, ft_param_value *out);
void ft_value_free(ft_param_value *value);

/* Levenshtein distance, for "did you mean" suggestions. */
size_t ft_edit_distance(const char *a, const char *b);
/* The name nearest to `wanted` when it is near enough to be a likely typo; else NULL. */
const char *ft_closest_name(const char *wanted, const char *const *names, size_t n_names);

/* `ftpipe help` (kinds and their docs) and `ftpipe help KIND` (its parameters). */
int ft_rules_print_help(const ft_rulebook *book, const char *kind, void *file /* FILE* */);

#endif
