/* variables: the pipeline's variable table and `$(NAME)` expansion, make's way. */
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/engine/rules.h"
#include "pipeline_internal.h"

/* Deeper nesting than this is surely a mistake, and deeper recursion could
 * exhaust the stack. */
#define MAX_EXPANSION_DEPTH 100

typedef struct {
    char *name;
    ft_located_text value;
    bool recursive;
} variable;

struct ft_variables {
    const ft_pipeline_options *options;
    variable *items;
    size_t n_items;
    size_t capacity;
    const char *expanding[MAX_EXPANSION_DEPTH]; /* recursive variables being expanded, outermost first */
    size_t n_expanding;
    size_t depth;
    bool keep_unknown; /* leave references to undefined variables, and `$$`, for a later expansion */
};

ft_variables *ft_variables_new(const ft_pipeline_options *options)
{
    ft_variables *variables = ft_xcalloc(1, sizeof *variables);
    variables->options = options;
    return variables;
}

void ft_variables_free(ft_variables *variables)
{
    if (!variables)
        return;
    for (size_t i = 0; i < variables->n_items; i++) {
        free(variables->items[i].name);
        ft_located_free(&variables->items[i].value);
    }
    free(variables->items);
    free(variables);
}

static variable *find_in_file(const ft_variables *variables, const char *name)
{
    for (size_t i = 0; i < variables->n_items; i++)
        if (strcmp(variables->items[i].name, name) == 0)
            return &variables->items[i];
    return NULL;
}

static const char *find_override(const ft_variables *variables, const char *name)
{
    const ft_pipeline_options *options = variables->options;
    for (size_t i = 0; options && i < options->n_overrides; i++)
        if (strcmp(options->overrides[i].name, name) == 0)
            return options->overrides[i].value;
    return NULL;
}

bool ft_variables_is_overridden(const ft_variables *variables, const char *name)
{
    return find_override(variables, name) != NULL;
}

bool ft_variables_is_assigned(const ft_variables *variables, const char *name)
{
    return find_in_file(variables, name) != NULL;
}

bool ft_variables_is_set(const ft_variables *variables, const char *name)
{
    return find_in_file(variables, name) || find_override(variables, name) || getenv(name);
}

void ft_variables_assign(ft_variables *variables, const char *name, const ft_located_text *source, size_t from,
                         size_t to, bool recursive)
{
    variable *item = find_in_file(variables, name);
    if (!item) {
        ft_grow((void **)&variables->items, &variables->capacity, variables->n_items + 1, sizeof *variables->items);
        item = &variables->items[variables->n_items++];
        item->name = ft_xstrdup(name);
        ft_located_init(&item->value);
    }
    ft_located_reset(&item->value, source->where[from]);
    ft_located_append(&item->value, source, from, to);
    item->recursive = recursive;
}

/* A literal `$` stays `$$` in text that is expanded again later. */
static void push_literal(ft_variables *variables, ft_located_text *out, char c, ft_location where)
{
    if (c == '$' && variables->keep_unknown)
        ft_located_push(out, '$', where);
    ft_located_push(out, c, where);
}

void ft_variables_bind(ft_variables *variables, const char *name, const char *value, ft_location where)
{
    ft_located_text text;
    ft_located_init(&text);
    ft_located_reset(&text, where);
    for (const char *c = value; *c; c++)
        ft_located_push(&text, *c, where);
    ft_variables_assign(variables, name, &text, 0, text.length, false);
    ft_located_free(&text);
}

void ft_variables_unbind(ft_variables *variables, const char *name)
{
    variable *item = find_in_file(variables, name);
    if (!item)
        return;
    free(item->name);
    ft_located_free(&item->value);
    size_t index = (size_t)(item - variables->items);
    memmove(item, item + 1, (variables->n_items - index - 1) * sizeof *item);
    variables->n_items--;
}

static void push_text(ft_variables *variables, ft_located_text *out, const char *text, ft_location where)
{
    for (const char *p = text; *p; p++)
        push_literal(variables, out, *p, where);
}

/* The index of the `close` that matches an opening just before `from`, or `to`. */
static size_t find_close(const ft_located_text *source, size_t from, size_t to, char open, char close)
{
    int depth = 1;
    for (size_t i = from; i < to; i++) {
        if (source->chars[i] == open)
            depth++;
        else if (source->chars[i] == close && --depth == 0)
            return i;
    }
    return to;
}

static int undefined_error(const ft_variables *variables, const char *name, const ft_location *where)
{
    size_t n_names = variables->n_items + (variables->options ? variables->options->n_overrides : 0);
    const char **names = ft_xcalloc(n_names + 1, sizeof *names);
    size_t n = 0;
    for (size_t i = 0; i < variables->n_items; i++)
        names[n++] = variables->items[i].name;
    for (size_t i = 0; variables->options && i < variables->options->n_overrides; i++)
        names[n++] = variables->options->overrides[i].name;
    const char *nearest = ft_closest_name(name, names, n);
    char *suggestion = nearest ? ft_xasprintf(" (did you mean '%s'?)", nearest) : ft_xstrdup("");
    int result = ft_error_at(where,
                             "undefined variable '%s'%s: set it in the file (%s = ...), on the command line "
                             "(ftpipe %s=...) or in the environment",
                             name, suggestion, name, name);
    free(suggestion);
    free(names);
    return result;
}

static int loop_error(const ft_variables *variables, const char *name, const ft_location *where)
{
    ft_strbuf chain;
    ft_strbuf_init(&chain);
    size_t first = 0;
    while (strcmp(variables->expanding[first], name) != 0)
        first++;
    for (size_t i = first; i < variables->n_expanding; i++)
        ft_strbuf_printf(&chain, "%s -> ", variables->expanding[i]);
    ft_strbuf_puts(&chain, name);
    int result = ft_error_at(where, "variable '%s' refers to itself: %s", name, chain.data);
    ft_strbuf_free(&chain);
    return result;
}

static int expand(ft_variables *variables, const ft_located_text *source, size_t from, size_t to, ft_located_text *out,
                  const ft_location *anchor);

/* Appends the value of variable `name`, referenced at `where`. */
static int expand_reference(ft_variables *variables, const char *name, const ft_location *where, ft_located_text *out,
                            const ft_location *anchor)
{
    variable *item = find_in_file(variables, name);
    if (item && item->recursive) {
        for (size_t i = 0; i < variables->n_expanding; i++)
            if (strcmp(variables->expanding[i], name) == 0)
                return loop_error(variables, name, where);
        variables->expanding[variables->n_expanding++] = item->name;
        int result = expand(variables, &item->value, 0, item->value.length, out, anchor);
        variables->n_expanding--;
        return result;
    }
    if (item) {
        for (size_t i = 0; i < item->value.length; i++)
            push_literal(variables, out, item->value.chars[i], *anchor);
        return 0;
    }
    const char *literal = find_override(variables, name);
    if (!literal)
        literal = getenv(name);
    if (!literal)
        return undefined_error(variables, name, where);
    push_text(variables, out, literal, *anchor);
    return 0;
}

/* Expands source[from, to) onto out. Bytes read from variables carry `anchor`
 * (the `$` in the outermost text) or, when anchor is NULL, their own position. */
static int expand(ft_variables *variables, const ft_located_text *source, size_t from, size_t to, ft_located_text *out,
                  const ft_location *anchor)
{
    if (variables->depth >= MAX_EXPANSION_DEPTH)
        return ft_error_at(&source->where[from], "variable references nest deeper than %d levels", MAX_EXPANSION_DEPTH);
    variables->depth++;
    int result = 0;
    size_t i = from;
    while (i < to && result == 0) {
        const ft_location *where = &source->where[i];
        char c = source->chars[i];
        char next = i + 1 < to ? source->chars[i + 1] : '\0';
        if (c != '$') {
            /* A run of plain text is copied whole. */
            const char *dollar = memchr(source->chars + i, '$', to - i);
            size_t end = dollar ? (size_t)(dollar - source->chars) : to;
            if (anchor)
                ft_located_fill(out, source->chars + i, end - i, *anchor);
            else
                ft_located_append(out, source, i, end);
            i = end;
        } else if (next == '$') {
            push_literal(variables, out, '$', anchor ? *anchor : *where);
            i += 2;
        } else if (next == '<' || next == '^' || next == '@') {
            /* Automatic variables: bound when the stage runs. */
            ft_located_push(out, '$', anchor ? *anchor : *where);
            ft_located_push(out, next, anchor ? *anchor : *where);
            i += 2;
        } else if (next == '(' || next == '{') {
            char close = next == '(' ? ')' : '}';
            size_t end = find_close(source, i + 2, to, next, close);
            if (end == to) {
                result = ft_error_at(where, "unterminated '$%c': add '%c' after the variable name", next, close);
                break;
            }
            ft_located_text name;
            ft_located_init(&name);
            result = expand(variables, source, i + 2, end, &name, NULL);
            if (result == 0 && name.length == 0)
                result = ft_error_at(where, "'$%c%c' names no variable: write $(NAME)", next, close);
            else if (result == 0 && strpbrk(name.chars, " \t"))
                result = ft_error_at(where,
                                     "'$%c%s%c' is not a variable reference: ftpipe has no make functions; "
                                     "write $(NAME)",
                                     next, name.chars, close);
            bool unknown = result == 0 && variables->keep_unknown &&
                           (strchr(name.chars, '$') || !ft_variables_is_set(variables, name.chars));
            if (unknown) {
                for (size_t k = i; k <= end; k++)
                    ft_located_push(out, source->chars[k], anchor ? *anchor : source->where[k]);
            } else if (result == 0) {
                result = expand_reference(variables, name.chars, where, out, anchor ? anchor : where);
            }
            ft_located_free(&name);
            i = end + 1;
        } else if (next == '_' || (next >= 'A' && next <= 'Z') || (next >= 'a' && next <= 'z') ||
                   (next >= '0' && next <= '9')) {
            result =
                ft_error_at(where, "unexpected '$%c': write $(%c) for a variable or $$ for a literal $", next, next);
        } else {
            result = ft_error_at(where, "a lone '$': write $$ for a literal $, or $(NAME) for a variable");
        }
    }
    variables->depth--;
    return result;
}

int ft_variables_expand(ft_variables *variables, const ft_located_text *source, size_t from, size_t to,
                        ft_located_text *out)
{
    return expand(variables, source, from, to, out, NULL);
}

int ft_variables_value(ft_variables *variables, const char *name, const ft_location *where, char **value)
{
    *value = NULL;
    if (!find_in_file(variables, name) && !find_override(variables, name))
        return 0;
    ft_located_text text;
    ft_located_init(&text);
    int result = expand_reference(variables, name, where, &text, where);
    if (result == 0)
        *value = ft_xstrdup(text.chars);
    ft_located_free(&text);
    return result;
}

int ft_variables_expand_known(ft_variables *variables, const ft_located_text *source, size_t from, size_t to,
                              ft_located_text *out)
{
    variables->keep_unknown = true;
    int result = expand(variables, source, from, to, out, NULL);
    variables->keep_unknown = false;
    return result;
}
