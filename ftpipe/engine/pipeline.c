/* pipeline: the Ftpipe parser's statements (assignments, stages, parameters,
 * include, .DEFAULT) and the pipeline's lifetime. */
#include "ftpipe/engine/pipeline.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/base/strmap.h"
#include "ftpipe/engine/rules.h"
#include "pipeline_internal.h"
#include "pipeline_parser.h"

#define BUILTIN_PREFIX "<built-in>/"

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
    char *name = ft_parser_trimmed_copy(line, start, name_end);
    int result = 0;
    if (!name[0])
        result = ft_error_at(&line->where[name_end], "missing variable name before '%s'", op);
    else if (!ft_parser_is_variable_name(name))
        result =
            ft_error_at(&line->where[start],
                        "'%s' is not a variable name: use letters, digits and '_', not starting with a digit", name);
    const ft_matrix_axis *axis = result == 0 ? ft_matrix_find(&p->matrix, name) : NULL;
    if (axis) {
        char declared[512];
        ft_parser_format_location(declared, sizeof declared, &axis->where);
        result = ft_error_at(&line->where[start],
                             "'%s' is a matrix variable (declared at %s): give this one another name",
                             name, declared);
    }
    size_t value_start = ft_parser_skip_blanks(line, name_end + strlen(op));
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
        ft_parser_format_location(first, sizeof first, &p->defaults_where);
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

static void end_group(parser *p)
{
    free(p->group.axes);
    free(p->group.counters);
    free(p->group.target);
    p->group = (stage_group){.first = NO_STAGE};
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

/* One stage (or the defaults) from a rule line, with `bound` matrix axes bound. */
static int parse_rule_once(parser *p, const ft_located_text *line, size_t start, size_t colon, const size_t *bound,
                           size_t n_bound, bool *is_stage)
{
    word_list targets, rest;
    if (ft_parser_expand_words(p, line, start, colon, &targets) != 0)
        return -1;
    int result = 0;
    if (targets.n_words == 0) {
        result =
            ft_error_at(&line->where[colon], "missing target before ':': a stage line is `TARGET: KIND inputs...`");
    } else if (targets.n_words > 1) {
        char *written = ft_parser_trimmed_copy(line, start, colon);
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
        result = ft_parser_expand_words_over_matrix(p, line, colon + 1, line->length, bound, n_bound, &rest);
    if (result == 0) {
        if (strcmp(targets.words[0], ".DEFAULT") == 0) {
            result = parse_defaults(p, &targets.where[0], &line->where[colon], &rest);
        } else if (strcmp(targets.words[0], ".REMOTE") == 0) {
            result = parse_remote(p, &line->where[colon], &rest);
        } else {
            *is_stage = true;
            result = ft_parser_expand_wildcards(p, &rest);
            if (result == 0 && strchr(targets.words[0], '%') && rest.n_words > 0)
                result = ft_parser_add_pattern_stages(p, targets.words[0], &targets.where[0], &line->where[colon],
                                                      &rest);
            else if (result == 0)
                result = ft_parser_add_stage(p, targets.words[0], &targets.where[0], &line->where[colon], &rest);
        }
        ft_parser_free_words(&rest);
    }
    ft_parser_free_words(&targets);
    return result;
}

/* `target: kind inputs...` or `.DEFAULT: targets...`: one stage, or one for each
 * combination of the matrix axes the target names. */
static int parse_rule(parser *p, const ft_located_text *line, size_t start, size_t colon)
{
    size_t first = p->pipeline->n_stages;
    size_t *axes = ft_xcalloc(p->matrix.n_axes + 1, sizeof *axes);
    size_t n_axes = ft_matrix_mentioned(&p->matrix, line, start, colon, NULL, 0, axes);
    size_t *counters = ft_xcalloc(n_axes + 1, sizeof *counters);
    size_t *made_with = NULL; /* each stage's matrix values */
    size_t count = 0;
    bool is_stage = false;
    int result = 0;
    do {
        ft_parser_bind_values(p, axes, n_axes, counters);
        result = parse_rule_once(p, line, start, colon, axes, n_axes, &is_stage);
        ft_parser_unbind_values(p, axes, n_axes);
        for (; count < p->pipeline->n_stages - first; count++) {
            made_with = ft_xrealloc(made_with, (count + 1) * (n_axes + 1) * sizeof *made_with);
            memcpy(made_with + count * n_axes, counters, n_axes * sizeof *counters);
        }
    } while (result == 0 && n_axes > 0 && ft_matrix_next(&p->matrix, axes, n_axes, counters));
    free(counters);
    if (result == 0 && is_stage) {
        /* A pattern that matches no file makes no stage; its parameter lines are read for none. */
        p->group = (stage_group){.first = first,
                                 .count = count,
                                 .axes = axes,
                                 .n_axes = n_axes,
                                 .counters = made_with,
                                 .target = ft_parser_trimmed_copy(line, start, colon)};
        return 0;
    }
    free(axes);
    free(made_with);
    return result;
}

static bool starts_with_word(const ft_located_text *line, size_t start, const char *word);

/* An indented `key = value` line, for each stage of the current group. */
static int add_parameter(parser *p, size_t stage_index, const ft_located_text *line, size_t start);

static int parse_parameter(parser *p, const ft_located_text *line, size_t start)
{
    if (p->current_set != NO_SET)
        return ft_parser_add_set_entry(p, line, start);
    if (p->group.first != NO_STAGE && starts_with_word(line, start, "use") && !strchr(line->chars + start, '='))
        return ft_parser_use_sets(p, line, start);
    if (p->group.first == NO_STAGE)
        return ft_error_at(&line->where[start], "indented line outside a stage: parameter lines go under a "
                                                "`target: kind inputs...` line (unindent it to set a variable)");
    size_t *unbound = ft_xcalloc(p->matrix.n_axes + 1, sizeof *unbound);
    size_t n_unbound =
        ft_matrix_mentioned(&p->matrix, line, start, line->length, p->group.axes, p->group.n_axes, unbound);
    int result = 0;
    if (n_unbound > 0)
        result = ft_error_at(&line->where[start],
                             "the parameter uses matrix variable '%s', which the target '%s' does not name: put "
                             "$(%s) in the target, so that each value makes its own stage",
                             p->matrix.axes[unbound[0]].name, p->group.target,
                             p->matrix.axes[unbound[0]].name);
    free(unbound);
    for (size_t k = 0; k < p->group.count && result == 0; k++) {
        const size_t *values = p->group.counters + k * p->group.n_axes;
        ft_parser_bind_values(p, p->group.axes, p->group.n_axes, values);
        result = add_parameter(p, p->group.first + k, line, start);
        ft_parser_unbind_values(p, p->group.axes, p->group.n_axes);
    }
    return result;
}

static int add_parameter(parser *p, size_t stage_index, const ft_located_text *line, size_t start)
{
    ft_stage_decl *stage = &p->pipeline->stages[stage_index];
    char *key;
    size_t value_start;
    int result = ft_parser_split_parameter(line, start, "stage", stage->target, &key, &value_start);
    if (result != 0)
        return result;
    return ft_parser_set_parameter(p, stage_index, key, &line->where[start], line, value_start, line->length, NULL);
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

/* An included file larger than this is no pipeline or rules file. */
#define MAX_INCLUDE_BYTES (4 << 20)

/* Reads an included file: only a regular text file of pipeline size, so that
 * `include /dev/zero` cannot grow without bound. */
static int read_include(const char *path, const ft_location *where, char **text)
{
    struct stat info;
    if (stat(path, &info) != 0)
        return ft_error_at(where, "cannot include %s: %s", path, strerror(errno));
    if (!S_ISREG(info.st_mode))
        return ft_error_at(where, "cannot include %s: it is not a regular file; include pipeline and rule files only",
                           path);
    if (info.st_size > MAX_INCLUDE_BYTES)
        return ft_error_at(where, "cannot include %s: it is %lld bytes, more than a pipeline file's limit of %d",
                           path, (long long)info.st_size, MAX_INCLUDE_BYTES);
    size_t length = 0;
    if (ft_read_file(path, text, &length) != 0)
        return -1;
    if (length > MAX_INCLUDE_BYTES || memchr(*text, '\0', length)) {
        free(*text);
        return ft_error_at(where, "cannot include %s: it is not a text file of at most %d bytes", path,
                           MAX_INCLUDE_BYTES);
    }
    return 0;
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
                result = read_include(path, where, &text);
                if (result == 0) {
                    char *identity = ft_path_absolute(path);
                    if (ft_parser_is_params_file(name))
                        result = ft_parser_include_params_file(p, where, keep_file_name(p, path), text);
                    else
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
    if (ft_parser_expand_words(p, line, keyword_end, line->length, &names) != 0)
        return -1;
    int result = 0;
    if (names.n_words == 0)
        result = ft_error_at(&line->where[start], "include needs a file name: write `include NAME`");
    for (size_t i = 0; i < names.n_words && result == 0; i++)
        result = include_file(p, names.words[i], &names.where[i], including_dir);
    ft_parser_free_words(&names);
    return result;
}

static bool starts_with_word(const ft_located_text *line, size_t start, const char *word)
{
    size_t n = strlen(word);
    return strncmp(line->chars + start, word, n) == 0 &&
           (start + n == line->length || ft_parser_is_blank(line->chars[start + n]));
}

/* Whether an assignment operator follows line[i...]: `include = x` sets a
 * variable named include, as in make. */
static bool assigns_after(const ft_located_text *line, size_t i)
{
    i = ft_parser_skip_blanks(line, i);
    char c = line->chars[i];
    return c == '=' || ((c == ':' || c == '?') && line->chars[i + 1] == '=');
}

static int parse_line(parser *p, const ft_located_text *line, bool indented, const char *dir)
{
    size_t start = ft_parser_skip_blanks(line, 0);
    if (start == line->length)
        return 0;
    if (indented)
        return parse_parameter(p, line, start);
    end_group(p);
    p->current_set = NO_SET;
    if (starts_with_word(line, start, "params") && !assigns_after(line, start + strlen("params")))
        return ft_parser_parse_param_set(p, line, start);
    if (starts_with_word(line, start, "include") && !assigns_after(line, start + strlen("include")))
        return parse_include(p, line, start, dir);
    if (starts_with_word(line, start, "matrix") && !assigns_after(line, start + strlen("matrix")))
        return ft_parser_parse_matrix(p, line, start);
    static const char *const rules_directives[] = {".kind", ".common", ".doc"};
    for (size_t i = 0; i < 3; i++)
        if (starts_with_word(line, start, rules_directives[i]))
            return ft_error_at(&line->where[start],
                               "'%s' belongs in a rules file (rules/KIND.ft), which a pipeline "
                               "does not include",
                               rules_directives[i]);
    size_t op = ft_parser_find_operator(line, start);
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
    end_group(p);
    ft_lexer lexer;
    ft_lexer_init(&lexer, name, text);
    ft_located_text line;
    ft_located_init(&line);
    bool indented;
    int result = 0;
    bool any_line_parsed = false;
    while (result == 0 && ft_lexer_next(&lexer, &line, &indented)) {
        result = parse_line(p, &line, indented, dir);
        if (result != 0 && !any_line_parsed && p->n_open_files > 1 && line.chars[0] != '.' &&
            strncmp(line.chars, "include", 7) != 0)
            /* Not a pipeline at all (include /etc/shadow): say so, and quote none of it. */
            result = ft_error("%s:%d: this file does not read as a pipeline or rules file: its first line is no "
                              "variable, include or stage (nothing of it is shown); check the include", name,
                              line.where[0].line);
        any_line_parsed = true;
    }
    ft_located_free(&line);
    ft_lexer_free(&lexer);
    free(dir);
    end_group(p);
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
    parser p = {.pipeline = pipeline, .options = options, .group = {.first = NO_STAGE}, .current_set = NO_SET};
    p.variables = ft_variables_new(options);
    ft_matrix_init(&p.matrix);
    ft_located_init(&p.expanded);
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
    end_group(&p);
    ft_parser_free_param_sets(&p);
    ft_matrix_free(&p.matrix);
    ft_located_free(&p.expanded);
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
    size_t length = 0;
    if (ft_read_file(path, &text, &length) != 0)
        return -1;
    const char *nul = memchr(text, '\0', length);
    if (nul) {
        int line = 1;
        for (const char *c = text; c < nul; c++)
            line += *c == '\n';
        free(text);
        /* A NUL would silently end the text here (and a `run =` line with it). */
        return ft_error("%s:%d: a NUL byte: a pipeline file is text; remove it", path, line);
    }
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
            free(stage->params[k].from_set);
        }
        free(stage->params);
        for (size_t k = 0; k < stage->n_variables; k++) {
            free(stage->variables[k].name);
            free(stage->variables[k].value);
        }
        free(stage->variables);
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
