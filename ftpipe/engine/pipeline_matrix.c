/* pipeline_matrix: `matrix NAME = values...` lists, which variables of a stage
 * line name directly, the walk over their combinations, and the parser's
 * statements that use them. */
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/mem.h"
#include "pipeline_internal.h"
#include "pipeline_parser.h"

void ft_matrix_init(ft_matrix *matrix) { memset(matrix, 0, sizeof *matrix); }

static void free_axis(ft_matrix_axis *axis)
{
    free(axis->name);
    for (size_t i = 0; i < axis->n_values; i++)
        free(axis->values[i]);
    free(axis->values);
}

void ft_matrix_free(ft_matrix *matrix)
{
    for (size_t i = 0; i < matrix->n_axes; i++)
        free_axis(&matrix->axes[i]);
    free(matrix->axes);
    ft_matrix_init(matrix);
}

const ft_matrix_axis *ft_matrix_find(const ft_matrix *matrix, const char *name)
{
    for (size_t i = 0; i < matrix->n_axes; i++)
        if (strcmp(matrix->axes[i].name, name) == 0)
            return &matrix->axes[i];
    return NULL;
}

int ft_matrix_declare(ft_matrix *matrix, const char *name, char *const *values, const ft_location *value_where,
                      size_t n_values, const ft_location *where)
{
    if (n_values == 0)
        return ft_error_at(where, "matrix '%s' has no values: write `matrix %s = VALUE...`", name, name);
    for (size_t i = 0; i < n_values; i++)
        for (size_t k = 0; k < i; k++)
            if (strcmp(values[i], values[k]) == 0)
                return ft_error_at(&value_where[i], "matrix '%s' lists '%s' twice: each value makes its own stages",
                                   name, values[i]);
    ft_matrix_axis *axis = (ft_matrix_axis *)ft_matrix_find(matrix, name);
    if (axis) {
        free_axis(axis);
    } else {
        ft_grow((void **)&matrix->axes, &matrix->capacity, matrix->n_axes + 1, sizeof *matrix->axes);
        axis = &matrix->axes[matrix->n_axes++];
    }
    axis->name = ft_xstrdup(name);
    axis->values = ft_xcalloc(n_values, sizeof *axis->values);
    for (size_t i = 0; i < n_values; i++)
        axis->values[i] = ft_xstrdup(values[i]);
    axis->n_values = n_values;
    axis->where = *where;
    return 0;
}

/* Whether text[i...] is `$(name)` or `${name}`. */
static bool is_reference_to(const ft_located_text *text, size_t i, size_t to, const char *name)
{
    size_t n = strlen(name);
    if (text->chars[i] != '$' || i + n + 3 > to)
        return false;
    char open = text->chars[i + 1];
    char close = open == '(' ? ')' : open == '{' ? '}' : '\0';
    return close && strncmp(text->chars + i + 2, name, n) == 0 && text->chars[i + 2 + n] == close;
}

size_t ft_matrix_mentioned(const ft_matrix *matrix, const ft_located_text *text, size_t from, size_t to,
                           const size_t *skip, size_t n_skip, size_t *axes)
{
    size_t n = 0;
    for (size_t a = 0; a < matrix->n_axes; a++) {
        bool skipped = false;
        for (size_t s = 0; s < n_skip; s++)
            skipped = skipped || skip[s] == a;
        bool named = false;
        for (size_t i = from; i < to && !skipped && !named; i++) {
            if (text->chars[i] == '$' && i + 1 < to && text->chars[i + 1] == '$')
                i++; /* a literal `$` */
            else
                named = is_reference_to(text, i, to, matrix->axes[a].name);
        }
        if (named)
            axes[n++] = a;
    }
    return n;
}

bool ft_matrix_next(const ft_matrix *matrix, const size_t *axes, size_t n_axes, size_t *counters)
{
    /* The last axis turns fastest, as nested loops written in order would. */
    for (size_t i = n_axes; i-- > 0;) {
        if (++counters[i] < matrix->axes[axes[i]].n_values)
            return true;
        counters[i] = 0;
    }
    return false;
}

int ft_parser_parse_matrix(parser *p, const ft_located_text *line, size_t start)
{
    size_t keyword_end = start + strlen("matrix");
    size_t op = ft_parser_find_operator(line, keyword_end);
    if (op == line->length || line->chars[op] != '=' || line->chars[op - 1] == '?' || line->chars[op - 1] == '+')
        return ft_error_at(&line->where[start], "expected `matrix NAME = VALUE...`");
    char *name = ft_parser_trimmed_copy(line, keyword_end, op);
    int result = 0;
    if (!ft_parser_is_variable_name(name))
        result = ft_error_at(&line->where[keyword_end],
                             "'%s' is not a matrix name: use letters, digits and '_', not starting with a digit", name);
    else if (ft_variables_is_assigned(p->variables, name))
        result = ft_error_at(&line->where[keyword_end],
                             "'%s' is already a variable: give the matrix another name", name);
    word_list values;
    if (result == 0)
        result = ft_parser_expand_words(p, line, op + 1, line->length, &values);
    if (result == 0) {
        result = ft_matrix_declare(&p->matrix, name, values.words, values.where, values.n_words, &line->where[start]);
        ft_parser_free_words(&values);
    }
    free(name);
    return result;
}

void ft_parser_bind_values(parser *p, const size_t *axes, size_t n_axes, const size_t *counters)
{
    for (size_t i = 0; i < n_axes; i++) {
        const ft_matrix_axis *axis = &p->matrix.axes[axes[i]];
        ft_variables_bind(p->variables, axis->name, axis->values[counters[i]], axis->where);
    }
}

void ft_parser_unbind_values(parser *p, const size_t *axes, size_t n_axes)
{
    for (size_t i = 0; i < n_axes; i++)
        ft_variables_unbind(p->variables, p->matrix.axes[axes[i]].name);
}

int ft_parser_expand_words_over_matrix(parser *p, const ft_located_text *line, size_t from, size_t to,
                                    const size_t *bound, size_t n_bound, word_list *out)
{
    size_t *axes = ft_xcalloc(p->matrix.n_axes + 1, sizeof *axes);
    size_t n_axes = ft_matrix_mentioned(&p->matrix, line, from, to, bound, n_bound, axes);
    if (n_axes == 0) {
        free(axes);
        return ft_parser_expand_words(p, line, from, to, out);
    }
    size_t *counters = ft_xcalloc(n_axes, sizeof *counters);
    *out = (word_list){0};
    ft_strmap seen;
    ft_strmap_init(&seen);
    int result = 0;
    do {
        word_list some;
        ft_parser_bind_values(p, axes, n_axes, counters);
        result = ft_parser_expand_words(p, line, from, to, &some);
        ft_parser_unbind_values(p, axes, n_axes);
        for (size_t i = 0; result == 0 && i < some.n_words; i++) {
            if (ft_strmap_get(&seen, some.words[i]))
                continue;
            out->words = ft_xrealloc(out->words, (out->n_words + 1) * sizeof *out->words);
            out->where = ft_xrealloc(out->where, (out->n_words + 1) * sizeof *out->where);
            out->words[out->n_words] = ft_xstrdup(some.words[i]);
            out->where[out->n_words] = some.where[i];
            ft_strmap_put(&seen, out->words[out->n_words], out->n_words);
            out->n_words++;
        }
        if (result == 0)
            ft_parser_free_words(&some);
    } while (result == 0 && ft_matrix_next(&p->matrix, axes, n_axes, counters));
    ft_strmap_free(&seen);
    free(counters);
    free(axes);
    if (result != 0)
        ft_parser_free_words(out);
    return result;
}
