/* pipeline_param_sets: `params NAME` blocks of parameters written once, and
 * `use NAME` lines that give them to stages. */
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "pipeline_internal.h"
#include "pipeline_parser.h"

static param_set *find_set(parser *p, const char *name)
{
    for (size_t i = 0; i < p->n_sets; i++)
        if (strcmp(p->sets[i].name, name) == 0)
            return &p->sets[i];
    return NULL;
}

int ft_parser_parse_param_set(parser *p, const ft_located_text *line, size_t start)
{
    word_list names;
    if (ft_parser_expand_words(p, line, start + strlen("params"), line->length, &names) != 0)
        return -1;
    int result = 0;
    if (names.n_words != 1)
        result = ft_error_at(&line->where[start],
                             "expected `params NAME` and the set's `key = value` lines indented below it");
    else if (!ft_parser_is_variable_name(names.words[0]))
        result = ft_error_at(&names.where[0],
                             "'%s' is not a parameter set name: use letters, digits and '_', not starting with a "
                             "digit",
                             names.words[0]);
    else if (find_set(p, names.words[0]))
        result = ft_error_at(&names.where[0], "a second parameter set '%s': give it another name", names.words[0]);
    if (result == 0) {
        ft_grow((void **)&p->sets, &p->sets_capacity, p->n_sets + 1, sizeof *p->sets);
        p->sets[p->n_sets] = (param_set){.name = ft_xstrdup(names.words[0]), .where = names.where[0]};
        p->current_set = p->n_sets++;
    }
    ft_parser_free_words(&names);
    return result;
}

int ft_parser_add_set_entry(parser *p, const ft_located_text *line, size_t start)
{
    param_set *set = &p->sets[p->current_set];
    char *key;
    size_t value_start;
    int result = ft_parser_split_parameter(line, start, "parameter set", set->name, &key, &value_start);
    if (result != 0)
        return result;
    for (size_t i = 0; i < set->n_entries; i++)
        if (strcmp(set->entries[i].key, key) == 0) {
            free(key);
            return ft_error_at(&line->where[start], "parameter '%s' is set twice in parameter set '%s'",
                               set->entries[i].key, set->name);
        }
    set->entries = ft_xrealloc(set->entries, (set->n_entries + 1) * sizeof *set->entries);
    set_entry *entry = &set->entries[set->n_entries++];
    entry->key = key;
    entry->key_where = line->where[start];
    ft_located_init(&entry->value);
    ft_located_reset(&entry->value, line->where[value_start]);
    return ft_variables_expand_known(p->variables, line, value_start, line->length, &entry->value);
}

int ft_parser_use_sets(parser *p, const ft_located_text *line, size_t start)
{
    word_list names;
    if (ft_parser_expand_words(p, line, start + strlen("use"), line->length, &names) != 0)
        return -1;
    int result = 0;
    if (names.n_words == 0)
        result = ft_error_at(&line->where[start], "`use` needs the name of a parameter set: write `use NAME`");
    for (size_t n = 0; n < names.n_words && result == 0; n++) {
        const param_set *set = find_set(p, names.words[n]);
        if (!set) {
            result = ft_error_at(&names.where[n],
                                 "unknown parameter set '%s': declare it above with `params %s` and its lines",
                                 names.words[n], names.words[n]);
            break;
        }
        const stage_group *group = &p->group;
        for (size_t k = 0; k < group->count && result == 0; k++) {
            /* The set's values see this stage's matrix values too. */
            ft_parser_bind_values(p, group->axes, group->n_axes, group->counters + k * group->n_axes);
            for (size_t e = 0; e < set->n_entries && result == 0; e++) {
                const set_entry *entry = &set->entries[e];
                result = ft_parser_set_parameter(p, group->first + k, ft_xstrdup(entry->key), &entry->key_where,
                                                 &entry->value, 0, entry->value.length, set->name);
            }
            ft_parser_unbind_values(p, group->axes, group->n_axes);
        }
    }
    ft_parser_free_words(&names);
    return result;
}

void ft_parser_free_param_sets(parser *p)
{
    for (size_t i = 0; i < p->n_sets; i++) {
        for (size_t e = 0; e < p->sets[i].n_entries; e++) {
            free(p->sets[i].entries[e].key);
            ft_located_free(&p->sets[i].entries[e].value);
        }
        free(p->sets[i].entries);
        free(p->sets[i].name);
    }
    free(p->sets);
}
