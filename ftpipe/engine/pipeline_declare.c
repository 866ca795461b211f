/* pipeline_declare: the parser's building blocks: words of a line, stage
 * declarations and their parameters (with the values in force where they are
 * written). Below the statements (pipeline.c) and the matrix, pattern and
 * parameter-set files, which all use it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strmap.h"
#include "pipeline_internal.h"
#include "pipeline_parser.h"

bool ft_parser_is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Letters, digits and '_': a parameter name. */
bool ft_parser_is_word(const char *text)
{
    if (!text[0])
        return false;
    for (const char *p = text; *p; p++)
        if (!(*p == '_' || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
            return false;
    return true;
}

/* A word not starting with a digit, as the environment's names are. */
bool ft_parser_is_variable_name(const char *text)
{
    return ft_parser_is_word(text) && !(text[0] >= '0' && text[0] <= '9');
}

size_t ft_parser_skip_blanks(const ft_located_text *line, size_t i)
{
    while (i < line->length && ft_parser_is_blank(line->chars[i]))
        i++;
    return i;
}

/* line[from, to) without blanks at either end, as a fresh string. */
char *ft_parser_trimmed_copy(const ft_located_text *line, size_t from, size_t to)
{
    from = ft_parser_skip_blanks(line, from);
    while (to > from && ft_parser_is_blank(line->chars[to - 1]))
        to--;
    return ft_xstrndup(line->chars + from, to - from);
}

void ft_parser_format_location(char *out, size_t size, const ft_location *where)
{
    snprintf(out, size, "%s:%d:%d", where->file, where->line, where->column);
}

void ft_parser_split_words(const ft_located_text *text, word_list *out)
{
    out->words = ft_xcalloc(text->length / 2 + 1, sizeof *out->words);
    out->where = ft_xcalloc(text->length / 2 + 1, sizeof *out->where);
    out->n_words = 0;
    size_t i = ft_parser_skip_blanks(text, 0);
    while (i < text->length) {
        size_t end = i;
        while (end < text->length && !ft_parser_is_blank(text->chars[end]))
            end++;
        out->where[out->n_words] = text->where[i];
        out->words[out->n_words++] = ft_xstrndup(text->chars + i, end - i);
        i = ft_parser_skip_blanks(text, end);
    }
}

void ft_parser_free_words(word_list *list)
{
    for (size_t i = 0; i < list->n_words; i++)
        free(list->words[i]);
    free(list->words);
    free(list->where);
}

/* Expands line[from, to) and splits it into words. */
int ft_parser_expand_words(parser *p, const ft_located_text *line, size_t from, size_t to, word_list *out)
{
    ft_located_reset(&p->expanded, line->where[from]);
    int result = ft_variables_expand(p->variables, line, from, to, &p->expanded);
    if (result == 0)
        ft_parser_split_words(&p->expanded, out);
    return result;
}

int ft_parser_add_stage(parser *p, const char *target, const ft_location *target_where, const ft_location *colon,
                     const word_list *words)
{
    ft_pipeline *pipeline = p->pipeline;
    if (words->n_words == 0)
        return ft_error_at(colon,
                           "missing stage kind after '%s:': write `%s: KIND inputs...` (`ftpipe help` "
                           "lists the kinds)",
                           target, target);
    const char *kind = words->words[0];
    if (kind[strspn(kind, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")] != '\0')
        return ft_error_at(&words->where[0], "'%s' is not a stage kind's name (letters, digits, _ and -): "
                           "write `%s: KIND inputs...` (`ftpipe help` lists the kinds)", kind, target);
    size_t *first_stage = ft_strmap_get(&p->targets, target);
    if (first_stage) {
        char first[512];
        ft_parser_format_location(first, sizeof first, &pipeline->stages[*first_stage].where);
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
    pipeline->n_stages++;
    return 0;
}

int ft_parser_split_parameter(const ft_located_text *line, size_t start, const char *owner_kind,
                              const char *owner_name, char **key, size_t *value_start)
{
    const char *equals = strchr(line->chars + start, '=');
    if (!equals)
        return ft_error_at(&line->where[start], "expected `key = value` in %s '%s': '%s' has no '='", owner_kind,
                           owner_name, line->chars + start);
    size_t eq = (size_t)(equals - line->chars);
    *key = ft_parser_trimmed_copy(line, start, eq);
    int result = 0;
    if (!(*key)[0])
        result = ft_error_at(&line->where[eq], "missing parameter name before '='");
    else if (!ft_parser_is_word(*key))
        result = ft_error_at(&line->where[start], "'%s' is not a parameter name: use letters, digits and '_'", *key);
    if (result != 0) {
        free(*key);
        *key = NULL;
        return result;
    }
    *value_start = ft_parser_skip_blanks(line, eq + 1);
    return 0;
}

/* The pipeline variables a stage's `env` names, with their values here (the
 * process environment fills in the others when the stage runs). */
static int keep_declared_variables(parser *p, ft_stage_decl *stage, const ft_located_text *names)
{
    for (size_t i = 0; i < stage->n_variables; i++) {
        free(stage->variables[i].name);
        free(stage->variables[i].value);
    }
    stage->n_variables = 0;
    word_list words;
    ft_parser_split_words(names, &words);
    int result = 0;
    for (size_t i = 0; i < words.n_words && result == 0; i++) {
        char *value;
        result = ft_variables_value(p->variables, words.words[i], &words.where[i], &value);
        if (!value)
            continue;
        stage->variables = ft_xrealloc(stage->variables, (stage->n_variables + 1) * sizeof *stage->variables);
        stage->variables[stage->n_variables++] = (ft_variable){ft_xstrdup(words.words[i]), value};
    }
    ft_parser_free_words(&words);
    return result;
}

/* The pending value of a stage's parameter: among the newest, as the stage's
 * parameters are being read. */
static pending_value *pending_of(parser *p, size_t stage_index, size_t param_index)
{
    for (size_t i = p->n_pending; i-- > 0;)
        if (p->pending[i].stage == stage_index && p->pending[i].param == param_index)
            return &p->pending[i];
    return NULL;
}

int ft_parser_set_parameter(parser *p, size_t stage_index, char *key, const ft_location *key_where,
                            const ft_located_text *text, size_t from, size_t to, const char *from_set)
{
    ft_stage_decl *stage = &p->pipeline->stages[stage_index];
    ft_param *param = NULL;
    for (size_t i = 0; i < stage->n_params && !param; i++)
        if (strcmp(stage->params[i].name, key) == 0)
            param = &stage->params[i];
    if (param && (from_set || !param->from_set)) {
        char first[512];
        ft_parser_format_location(first, sizeof first, &param->where);
        int result = 0;
        if (!from_set)
            result = ft_error_at(key_where, "parameter '%s' is set twice in stage '%s' (first at %s)", key,
                                 stage->target, first);
        else if (param->from_set)
            result = ft_error_at(key_where,
                                 "parameter '%s' of stage '%s' is in both parameter sets '%s' (at %s) and '%s': "
                                 "set it in the stage to choose",
                                 key, stage->target, param->from_set, first, from_set);
        free(key); /* else the stage's own value stays: it wins over a set's */
        return result;
    }
    pending_value *pending;
    if (param) {
        /* The stage's own value replaces the one a set gave. */
        free(key);
        free(param->from_set);
        param->from_set = NULL;
        pending = pending_of(p, stage_index, (size_t)(param - stage->params));
    } else {
        stage->params = ft_xrealloc(stage->params, (stage->n_params + 1) * sizeof *stage->params);
        param = &stage->params[stage->n_params];
        param->name = key;
        param->value = NULL;
        param->from_set = from_set ? ft_xstrdup(from_set) : NULL;
        ft_grow((void **)&p->pending, &p->pending_capacity, p->n_pending + 1, sizeof *p->pending);
        pending = &p->pending[p->n_pending++];
        pending->stage = stage_index;
        pending->param = stage->n_params++;
        ft_located_init(&pending->raw);
    }
    param->where = *key_where;
    param->value_where = text->where[from];
    ft_located_reset(&pending->raw, text->where[from]);
    /* The values in force here, as the target's: a template included several
     * times with its variables reassigned in between makes stages whose
     * parameters agree with their names. Variables set only further down are
     * read once the whole file is. */
    int result = ft_variables_expand_known(p->variables, text, from, to, &pending->raw);
    if (result == 0 && strcmp(param->name, "env") == 0)
        result = keep_declared_variables(p, stage, &pending->raw);
    return result;
}

/* The first `=` or `:` outside `$(...)`, or line->length. */
size_t ft_parser_find_operator(const ft_located_text *line, size_t from)
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
