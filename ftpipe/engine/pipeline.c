/* pipeline: the Ftpipe parser's statements (assignments, stages, parameters,
 * include, .DEFAULT) and the pipeline's lifetime. */
#include "ftpipe/engine/pipeline.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/base/strmap.h"
#include "ftpipe/engine/rules.h"
#include "pipeline_internal.h"

#define NO_STAGE SIZE_MAX
#define BUILTIN_PREFIX "<built-in>/"

/* A parameter value read before the whole file is: expanded at the end. */
typedef struct {
    size_t stage;
    size_t param;
    ft_located_text raw;
} pending_value;

typedef struct {
    const char *identity; /* absolute path, or the built-in's name: for cycles */
    const char *name;     /* as shown in locations */
} open_file;

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
    size_t current_stage; /* the stage parameter lines belong to, or NO_STAGE */
    bool has_defaults;
    ft_location defaults_where;
    open_file *open_files; /* the include chain, outermost first */
    size_t n_open_files;
    size_t open_capacity;
} parser;

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Letters, digits and '_': a parameter name. */
static bool is_word(const char *text)
{
    if (!text[0])
        return false;
    for (const char *p = text; *p; p++)
        if (!(*p == '_' || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
            return false;
    return true;
}

/* A word not starting with a digit, as the environment's names are. */
static bool is_variable_name(const char *text) { return is_word(text) && !(text[0] >= '0' && text[0] <= '9'); }

static size_t skip_blanks(const ft_located_text *line, size_t i)
{
    while (i < line->length && is_blank(line->chars[i]))
        i++;
    return i;
}

/* line[from, to) without blanks at either end, as a fresh string. */
static char *trimmed_copy(const ft_located_text *line, size_t from, size_t to)
{
    from = skip_blanks(line, from);
    while (to > from && is_blank(line->chars[to - 1]))
        to--;
    return ft_xstrndup(line->chars + from, to - from);
}

static void format_location(char *out, size_t size, const ft_location *where)
{
    snprintf(out, size, "%s:%d:%d", where->file, where->line, where->column);
}

/* The blank-separated words of text, each with the position of its first byte. */
typedef struct {
    char **words;
    ft_location *where;
    size_t n_words;
} word_list;

static void split_words(const ft_located_text *text, word_list *out)
{
    out->words = ft_xcalloc(text->length / 2 + 1, sizeof *out->words);
    out->where = ft_xcalloc(text->length / 2 + 1, sizeof *out->where);
    out->n_words = 0;
    size_t i = skip_blanks(text, 0);
    while (i < text->length) {
        size_t end = i;
        while (end < text->length && !is_blank(text->chars[end]))
            end++;
        out->where[out->n_words] = text->where[i];
        out->words[out->n_words++] = ft_xstrndup(text->chars + i, end - i);
        i = skip_blanks(text, end);
    }
}

static void free_words(word_list *list)
{
    for (size_t i = 0; i < list->n_words; i++)
        free(list->words[i]);
    free(list->words);
    free(list->where);
}

/* Expands line[from, to) and splits it into words. */
static int expand_words(parser *p, const ft_located_text *line, size_t from, size_t to, word_list *out)
{
    ft_located_text expanded;
    ft_located_init(&expanded);
    ft_located_reset(&expanded, line->where[from]);
    int result = ft_variables_expand(p->variables, line, from, to, &expanded);
    if (result == 0)
        split_words(&expanded, out);
    ft_located_free(&expanded);
    return result;
}

/* Keeps a file name for the pipeline's lifetime (locations point at it). */
static const char *keep_file_name(parser *p, const char *name)
{
    ft_pipeline *pipeline = p->pipeline;
    ft_grow((void **)&pipeline->files, &p->file_capacity, pipeline->n_files + 1, sizeof *pipeline->files);
    pipeline->files[pipeline->n_files] = ft_xstrdup(name);
    return pipeline->files[pipeline->n_files++];
}

typedef enum { ASSIGN_RECURSIVE, ASSIGN_IMMEDIATE, ASSIGN_CONDITIONAL } assignment_kind;

static int parse_assignment(parser *p, const ft_located_text *line, size_t start, size_t name_end, const char *op,
                            assignment_kind kind)
{
    char *name = trimmed_copy(line, start, name_end);
    int result = 0;
    if (!name[0])
        result = ft_error_at(&line->where[name_end], "missing variable name before '%s'", op);
    else if (!is_variable_name(name))
        result =
            ft_error_at(&line->where[start],
                        "'%s' is not a variable name: use letters, digits and '_', not starting with a digit", name);
    size_t value_start = skip_blanks(line, name_end + strlen(op));
    if (result == 0 && !ft_variables_is_overridden(p->variables, name)) {
        if (kind == ASSIGN_RECURSIVE) {
            ft_variables_assign(p->variables, name, line, value_start, line->length, true);
        } else if (kind == ASSIGN_CONDITIONAL) {
            if (!ft_variables_is_set(p->variables, name))
                ft_variables_assign(p->variables, name, line, value_start, line->length, true);
        } else {
            ft_located_text value;
            ft_located_init(&value);
            ft_located_reset(&value, line->where[value_start]);
            result = ft_variables_expand(p->variables, line, value_start, line->length, &value);
            if (result == 0)
                ft_variables_assign(p->variables, name, &value, 0, value.length, false);
            ft_located_free(&value);
        }
    }
    free(name);
    return result;
}

static int parse_defaults(parser *p, const ft_location *where, const ft_location *colon, const word_list *words)
{
    ft_pipeline *pipeline = p->pipeline;
    if (p->has_defaults) {
        char first[512];
        format_location(first, sizeof first, &p->defaults_where);
        return ft_error_at(where, "a second .DEFAULT line (the first is at %s): list every default target on one line",
                           first);
    }
    if (words->n_words == 0)
        return ft_error_at(colon, "'.DEFAULT:' names no target: list the targets `ftpipe` builds when given none");
    p->has_defaults = true;
    p->defaults_where = *where;
    pipeline->defaults = ft_xcalloc(words->n_words, sizeof *pipeline->defaults);
    pipeline->default_where = ft_xcalloc(words->n_words, sizeof *pipeline->default_where);
    for (size_t i = 0; i < words->n_words; i++) {
        pipeline->defaults[i] = ft_xstrdup(words->words[i]);
        pipeline->default_where[i] = words->where[i];
    }
    pipeline->n_defaults = words->n_words;
    return 0;
}

/* `.REMOTE: URL`: the remote cache, unless FTPIPE_REMOTE or --remote names another. */
static int parse_remote(parser *p, const ft_location *colon, const word_list *words)
{
    if (words->n_words != 1)
        return ft_error_at(colon, "'.REMOTE:' takes one URL (http(s)://, file:// or s3://)");
    free(p->pipeline->remote_url);
    p->pipeline->remote_url = ft_xstrdup(words->words[0]);
    return 0;
}

static int add_stage(parser *p, const char *target, const ft_location *target_where, const ft_location *colon,
                     const word_list *words)
{
    ft_pipeline *pipeline = p->pipeline;
    if (words->n_words == 0)
        return ft_error_at(colon,
                           "missing stage kind after '%s:': write `%s: KIND inputs...` (`ftpipe help` "
                           "lists the kinds)",
                           target, target);
    size_t *first_stage = ft_strmap_get(&p->targets, target);
    if (first_stage) {
        char first[512];
        format_location(first, sizeof first, &pipeline->stages[*first_stage].where);
        return ft_error_at(target_where, "duplicate target '%s': the stage at %s already makes it", target, first);
    }
    ft_grow((void **)&pipeline->stages, &p->stage_capacity, pipeline->n_stages + 1, sizeof *pipeline->stages);
    ft_stage_decl *stage = &pipeline->stages[pipeline->n_stages];
    memset(stage, 0, sizeof *stage);
    stage->target = ft_xstrdup(target);
    ft_strmap_put(&p->targets, stage->target, pipeline->n_stages);
    stage->where = *target_where;
    stage->kind = ft_xstrdup(words->words[0]);
    stage->kind_where = words->where[0];
    stage->n_inputs = words->n_words - 1;
    stage->inputs = ft_xcalloc(stage->n_inputs + 1, sizeof *stage->inputs);
    stage->input_where = ft_xcalloc(stage->n_inputs + 1, sizeof *stage->input_where);
    for (size_t i = 1; i < words->n_words; i++) {
        stage->inputs[i - 1] = ft_xstrdup(words->words[i]);
        stage->input_where[i - 1] = words->where[i];
    }
    p->current_stage = pipeline->n_stages++;
    return 0;
}

/* `.NAME` in capitals, as make spells its special targets. */
static bool is_special_target(const char *word)
{
    if (word[0] != '.' || !word[1])
        return false;
    for (const char *c = word + 1; *c; c++)
        if (!((*c >= 'A' && *c <= 'Z') || *c == '_'))
            return false;
    return true;
}

/* `target: kind inputs...` or `.DEFAULT: targets...`. */
static int parse_rule(parser *p, const ft_located_text *line, size_t start, size_t colon)
{
    word_list targets, rest;
    if (expand_words(p, line, start, colon, &targets) != 0)
        return -1;
    int result = 0;
    if (targets.n_words == 0) {
        result =
            ft_error_at(&line->where[colon], "missing target before ':': a stage line is `TARGET: KIND inputs...`");
    } else if (targets.n_words > 1) {
        char *written = trimmed_copy(line, start, colon);
        result =
            ft_error_at(&targets.where[1], "'%s' is %zu targets: a stage makes one target; write one stage for each",
                        written, targets.n_words);
        free(written);
    } else if (is_special_target(targets.words[0]) && strcmp(targets.words[0], ".DEFAULT") != 0 &&
               strcmp(targets.words[0], ".REMOTE") != 0) {
        result = ft_error_at(&targets.where[0], "unknown special target '%s': the special targets are .DEFAULT and "
                             ".REMOTE", targets.words[0]);
    }
    if (result == 0)
        result = expand_words(p, line, colon + 1, line->length, &rest);
    if (result == 0) {
        if (strcmp(targets.words[0], ".DEFAULT") == 0)
            result = parse_defaults(p, &targets.where[0], &line->where[colon], &rest);
        else if (strcmp(targets.words[0], ".REMOTE") == 0)
            result = parse_remote(p, &line->where[colon], &rest);
        else
            result = add_stage(p, targets.words[0], &targets.where[0], &line->where[colon], &rest);
        free_words(&rest);
    }
    free_words(&targets);
    return result;
}

/* An indented `key = value` line under the current stage. */
static int parse_parameter(parser *p, const ft_located_text *line, size_t start)
{
    ft_pipeline *pipeline = p->pipeline;
    if (p->current_stage == NO_STAGE)
        return ft_error_at(&line->where[start], "indented line outside a stage: parameter lines go under a "
                                                "`target: kind inputs...` line (unindent it to set a variable)");
    ft_stage_decl *stage = &pipeline->stages[p->current_stage];
    const char *equals = strchr(line->chars + start, '=');
    if (!equals)
        return ft_error_at(&line->where[start], "expected `key = value` in stage '%s': '%s' has no '='", stage->target,
                           line->chars + start);
    size_t eq = (size_t)(equals - line->chars);
    char *key = trimmed_copy(line, start, eq);
    int result = 0;
    if (!key[0])
        result = ft_error_at(&line->where[eq], "missing parameter name before '='");
    else if (!is_word(key))
        result = ft_error_at(&line->where[start], "'%s' is not a parameter name: use letters, digits and '_'", key);
    for (size_t i = 0; result == 0 && i < stage->n_params; i++) {
        if (strcmp(stage->params[i].name, key) == 0) {
            char first[512];
            format_location(first, sizeof first, &stage->params[i].where);
            result = ft_error_at(&line->where[start], "parameter '%s' is set twice in stage '%s' (first at %s)", key,
                                 stage->target, first);
        }
    }
    if (result != 0) {
        free(key);
        return result;
    }
    size_t value_start = skip_blanks(line, eq + 1);
    stage->params = ft_xrealloc(stage->params, (stage->n_params + 1) * sizeof *stage->params);
    ft_param *param = &stage->params[stage->n_params];
    param->name = key;
    param->value = NULL;
    param->where = line->where[start];
    param->value_where = line->where[value_start];

    ft_grow((void **)&p->pending, &p->pending_capacity, p->n_pending + 1, sizeof *p->pending);
    pending_value *pending = &p->pending[p->n_pending++];
    pending->stage = p->current_stage;
    pending->param = stage->n_params++;
    ft_located_init(&pending->raw);
    ft_located_reset(&pending->raw, line->where[value_start]);
    ft_located_append(&pending->raw, line, value_start, line->length);
    return 0;
}

static int parse_text(parser *p, const char *name, const char *identity, const char *text);

/* The shown name of `name` in folder `dir` ("." is left out). */
static char *path_in(const char *dir, const char *name)
{
    return strcmp(dir, ".") == 0 ? ft_xstrdup(name) : ft_path_join(dir, name);
}

static int include_found(parser *p, const ft_location *where, const char *shown, const char *identity, const char *text)
{
    for (size_t i = 0; i < p->n_open_files; i++) {
        if (strcmp(p->open_files[i].identity, identity) != 0)
            continue;
        ft_strbuf chain;
        ft_strbuf_init(&chain);
        for (size_t k = i; k < p->n_open_files; k++)
            ft_strbuf_printf(&chain, "%s -> ", p->open_files[k].name);
        ft_strbuf_puts(&chain, shown);
        int result = ft_error_at(where, "include cycle: %s", chain.data);
        ft_strbuf_free(&chain);
        return result;
    }
    return parse_text(p, keep_file_name(p, shown), identity, text);
}

/* Looks for NAME, then NAME.ft, in the including file's folder, the rule
 * folders, then among the built-in rule files; reads the first found. */
static int include_file(parser *p, const char *name, const ft_location *where, const char *including_dir)
{
    const ft_pipeline_options *options = p->options;
    size_t n_dirs = 1 + (options ? options->n_rule_dirs : 0);
    const char **dirs = ft_xcalloc(n_dirs, sizeof *dirs);
    size_t n = 0;
    if (including_dir)
        dirs[n++] = including_dir;
    for (size_t i = 0; options && i < options->n_rule_dirs; i++)
        dirs[n++] = options->rule_dirs[i];
    char *with_extension = ft_xasprintf("%s.ft", name);
    const char *candidates[2] = {name, with_extension};
    int result = 1; /* until found: then 0, or -1 on error */
    for (size_t d = 0; d < n && result == 1; d++) {
        for (size_t c = 0; c < 2 && result == 1; c++) {
            char *path = path_in(dirs[d], candidates[c]);
            if (ft_path_exists(path) && !ft_path_is_dir(path)) {
                char *text;
                result = ft_read_file(path, &text, NULL);
                if (result == 0) {
                    char *identity = ft_path_absolute(path);
                    result = include_found(p, where, path, identity, text);
                    free(identity);
                    free(text);
                }
            }
            free(path);
        }
    }
    for (size_t i = 0; ft_builtin_rule_files[i][0] && result == 1 && !strchr(name, '/'); i++) {
        const char *file = ft_builtin_rule_files[i][0];
        if (strcmp(file, name) == 0 || strcmp(file, with_extension) == 0) {
            char *shown = ft_xasprintf(BUILTIN_PREFIX "%s", file);
            result = include_found(p, where, shown, shown, ft_builtin_rule_files[i][1]);
            free(shown);
        }
    }
    if (result == 1) {
        ft_strbuf searched;
        ft_strbuf_init(&searched);
        for (size_t d = 0; d < n; d++) {
            char *shown = d == 0 && including_dir ? ft_path_absolute(dirs[d]) : ft_xstrdup(dirs[d]);
            ft_strbuf_printf(&searched, "%s, ", shown);
            free(shown);
        }
        result = ft_error_at(where,
                             "cannot find '%s' to include: looked for %s and %s in %sand among the built-in rule files",
                             name, name, with_extension, searched.data);
        ft_strbuf_free(&searched);
    }
    free(with_extension);
    free(dirs);
    return result;
}

static int parse_include(parser *p, const ft_located_text *line, size_t start, const char *including_dir)
{
    word_list names;
    size_t keyword_end = start + strlen("include");
    if (expand_words(p, line, keyword_end, line->length, &names) != 0)
        return -1;
    int result = 0;
    if (names.n_words == 0)
        result = ft_error_at(&line->where[start], "include needs a file name: write `include NAME`");
    for (size_t i = 0; i < names.n_words && result == 0; i++)
        result = include_file(p, names.words[i], &names.where[i], including_dir);
    free_words(&names);
    return result;
}

static bool starts_with_word(const ft_located_text *line, size_t start, const char *word)
{
    size_t n = strlen(word);
    return strncmp(line->chars + start, word, n) == 0 &&
           (start + n == line->length || is_blank(line->chars[start + n]));
}

/* Whether an assignment operator follows line[i...]: `include = x` sets a
 * variable named include, as in make. */
static bool assigns_after(const ft_located_text *line, size_t i)
{
    i = skip_blanks(line, i);
    char c = line->chars[i];
    return c == '=' || ((c == ':' || c == '?') && line->chars[i + 1] == '=');
}

/* The first `=` or `:` outside `$(...)`, or line->length. */
static size_t find_operator(const ft_located_text *line, size_t from)
{
    int depth = 0;
    for (size_t i = from; i < line->length; i++) {
        char c = line->chars[i];
        char next = line->chars[i + 1];
        if (c == '$' && (next == '(' || next == '{' || next == '$')) {
            depth += next != '$';
            i++;
        } else if (depth > 0 && (c == ')' || c == '}')) {
            depth--;
        } else if (depth == 0 && (c == '=' || c == ':')) {
            return i;
        }
    }
    return line->length;
}

static int parse_line(parser *p, const ft_located_text *line, bool indented, const char *dir)
{
    size_t start = skip_blanks(line, 0);
    if (start == line->length)
        return 0;
    if (indented)
        return parse_parameter(p, line, start);
    p->current_stage = NO_STAGE;
    if (starts_with_word(line, start, "include") && !assigns_after(line, start + strlen("include")))
        return parse_include(p, line, start, dir);
    static const char *const rules_directives[] = {".kind", ".common", ".doc"};
    for (size_t i = 0; i < 3; i++)
        if (starts_with_word(line, start, rules_directives[i]))
            return ft_error_at(&line->where[start],
                               "'%s' belongs in a rules file (rules/KIND.ft), which a pipeline "
                               "does not include",
                               rules_directives[i]);
    size_t op = find_operator(line, start);
    if (op == line->length)
        return ft_error_at(&line->where[start], "expected `NAME = value`, `target: kind inputs...` or `include NAME`");
    if (line->chars[op] == ':' && line->chars[op + 1] == '=')
        return parse_assignment(p, line, start, op, ":=", ASSIGN_IMMEDIATE);
    if (line->chars[op] == ':')
        return parse_rule(p, line, start, op);
    if (op > start && line->chars[op - 1] == '?')
        return parse_assignment(p, line, start, op - 1, "?=", ASSIGN_CONDITIONAL);
    if (op > start && line->chars[op - 1] == '+')
        return ft_error_at(&line->where[op - 1], "'+=' is not supported: write `NAME := $(NAME) more words`");
    return parse_assignment(p, line, start, op, "=", ASSIGN_RECURSIVE);
}

/* Parses one file's text; `name` is kept by the pipeline. */
static int parse_text(parser *p, const char *name, const char *identity, const char *text)
{
    ft_grow((void **)&p->open_files, &p->open_capacity, p->n_open_files + 1, sizeof *p->open_files);
    p->open_files[p->n_open_files++] = (open_file){identity, name};
    char *dir = strncmp(name, BUILTIN_PREFIX, strlen(BUILTIN_PREFIX)) == 0 ? NULL : ft_path_dirname(name);
    p->current_stage = NO_STAGE;
    ft_lexer lexer;
    ft_lexer_init(&lexer, name, text);
    ft_located_text line;
    ft_located_init(&line);
    bool indented;
    int result = 0;
    while (result == 0 && ft_lexer_next(&lexer, &line, &indented))
        result = parse_line(p, &line, indented, dir);
    ft_located_free(&line);
    ft_lexer_free(&lexer);
    free(dir);
    p->current_stage = NO_STAGE;
    p->n_open_files--;
    return result;
}

static int expand_pending_values(parser *p)
{
    for (size_t i = 0; i < p->n_pending; i++) {
        pending_value *pending = &p->pending[i];
        ft_located_text value;
        ft_located_init(&value);
        int result = ft_variables_expand(p->variables, &pending->raw, 0, pending->raw.length, &value);
        if (result == 0)
            p->pipeline->stages[pending->stage].params[pending->param].value = ft_xstrdup(value.chars);
        ft_located_free(&value);
        if (result != 0)
            return result;
    }
    return 0;
}

int ft_pipeline_parse_string(const char *name, const char *text, const ft_pipeline_options *options, ft_pipeline **out)
{
    *out = NULL;
    ft_pipeline *pipeline = ft_xcalloc(1, sizeof *pipeline);
    pipeline->path = ft_xstrdup(name);
    char *dir = ft_path_dirname(name);
    pipeline->dir = ft_path_absolute(dir);
    free(dir);
    parser p = {.pipeline = pipeline, .options = options, .current_stage = NO_STAGE};
    p.variables = ft_variables_new(options);
    char *identity = ft_path_absolute(name);
    int result = parse_text(&p, keep_file_name(&p, name), identity, text);
    if (result == 0)
        result = expand_pending_values(&p);
    free(identity);
    for (size_t i = 0; i < p.n_pending; i++)
        ft_located_free(&p.pending[i].raw);
    free(p.pending);
    free(p.open_files);
    ft_strmap_free(&p.targets);
    ft_variables_free(p.variables);
    if (result != 0) {
        ft_pipeline_free(pipeline);
        return -1;
    }
    *out = pipeline;
    return 0;
}

int ft_pipeline_load(const char *path, const ft_pipeline_options *options, ft_pipeline **out)
{
    *out = NULL;
    char *text;
    if (ft_read_file(path, &text, NULL) != 0)
        return -1;
    int result = ft_pipeline_parse_string(path, text, options, out);
    free(text);
    return result;
}

void ft_pipeline_free(ft_pipeline *pipeline)
{
    if (!pipeline)
        return;
    for (size_t i = 0; i < pipeline->n_stages; i++) {
        ft_stage_decl *stage = &pipeline->stages[i];
        free(stage->target);
        free(stage->kind);
        for (size_t k = 0; k < stage->n_inputs; k++)
            free(stage->inputs[k]);
        free(stage->inputs);
        free(stage->input_where);
        for (size_t k = 0; k < stage->n_params; k++) {
            free(stage->params[k].name);
            free(stage->params[k].value);
        }
        free(stage->params);
    }
    free(pipeline->stages);
    for (size_t i = 0; i < pipeline->n_defaults; i++)
        free(pipeline->defaults[i]);
    free(pipeline->defaults);
    free(pipeline->remote_url);
    free(pipeline->default_where);
    for (size_t i = 0; i < pipeline->n_files; i++)
        free(pipeline->files[i]);
    free(pipeline->files);
    free(pipeline->path);
    free(pipeline->dir);
    free(pipeline);
}
