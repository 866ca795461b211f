/* params: checks a stage's parameter lines against its kind's rules, giving
 * each parameter a typed value (written or default). */
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/rules.h"

/* A name the kind declares it lacks (`.lacks`), or one of another kind's
 * parameters: said so, rather than a near name that means something else
 * (eval_steps is not max_steps). */
static int misplaced_parameter(const ft_rulebook *book, const ft_kind_rules *kind, const ft_param *param)
{
    for (size_t i = 0; i < kind->n_lacks; i++)
        if (strcmp(kind->lacks_names[i], param->name) == 0)
            return ft_error_at(&param->where, "kind %s has no parameter '%s': %s", kind->kind, param->name,
                               kind->lacks_texts[i]);
    for (size_t k = 0; k < book->n_kinds; k++) {
        const ft_kind_rules *other = &book->kinds[k];
        for (size_t i = 0; other != kind && i < other->n_own_params; i++)
            if (strcmp(other->params[i].name, param->name) == 0)
                return ft_error_at(&param->where,
                                   "unknown parameter '%s' for kind %s: it is a parameter of kind %s "
                                   "(`ftpipe help %s`)",
                                   param->name, kind->kind, other->kind, other->kind);
    }
    return 0;
}

static int unknown_parameter(const ft_rulebook *book, const ft_kind_rules *kind, const ft_param *param)
{
    if (misplaced_parameter(book, kind, param) != 0)
        return -1;
    const char **names = ft_xcalloc(kind->n_params + 1, sizeof *names);
    for (size_t i = 0; i < kind->n_params; i++)
        names[i] = kind->params[i].name;
    const char *nearest = ft_closest_name(param->name, names, kind->n_params);
    int result = nearest ? ft_error_at(&param->where, "unknown parameter '%s' for kind %s (did you mean '%s'?)",
                                       param->name, kind->kind, nearest)
                         : ft_error_at(&param->where,
                                       "unknown parameter '%s' for kind %s: `ftpipe help %s` lists "
                                       "its parameters",
                                       param->name, kind->kind, kind->kind);
    free(names);
    return result;
}

static size_t find_rule(const ft_kind_rules *kind, const char *name)
{
    for (size_t i = 0; i < kind->n_params; i++)
        if (strcmp(kind->params[i].name, name) == 0)
            return i;
    return kind->n_params;
}

static int check_written(const ft_rulebook *book, const ft_kind_rules *kind, const ft_stage_decl *stage,
                         ft_param_value *values)
{
    for (size_t i = 0; i < stage->n_params; i++) {
        const ft_param *param = &stage->params[i];
        size_t index = find_rule(kind, param->name);
        if (index == kind->n_params)
            return unknown_parameter(book, kind, param);
        if (ft_value_parse(&kind->params[index], param->value, &values[index]) != 0) {
            char *message = ft_xstrdup(ft_error_message());
            int result = ft_error_at(&param->value_where, "%s: %s", param->name, message);
            free(message);
            return result;
        }
        values[index].is_set = true;
        values[index].where = param->value_where;
    }
    return 0;
}

static int fill_defaults(const ft_kind_rules *kind, const ft_stage_decl *stage, ft_param_value *values)
{
    for (size_t i = 0; i < kind->n_params; i++) {
        const ft_param_rule *rule = &kind->params[i];
        if (values[i].is_set)
            continue;
        if (rule->required)
            return ft_error_at(&stage->where,
                               "stage '%s' (%s) needs parameter '%s': add an indented line "
                               "`%s = ...` under it",
                               stage->target, kind->kind, rule->name, rule->name);
        /* Defaults were checked when the rules were read. */
        if (ft_value_parse(rule, rule->default_text, &values[i]) != 0)
            return ft_error_context("%s: default of '%s'", kind->file, rule->name);
    }
    return 0;
}

int ft_params_check(const ft_rulebook *book, const ft_stage_decl *stage, ft_param_set *out)
{
    memset(out, 0, sizeof *out);
    const ft_kind_rules *kind = ft_rulebook_find(book, stage->kind);
    if (!kind)
        return ft_rulebook_unknown_kind(book, stage->kind, &stage->kind_where);
    ft_param_set set = {kind, ft_xcalloc(kind->n_params + 1, sizeof *set.values), kind->n_params};
    if (check_written(book, kind, stage, set.values) != 0 || fill_defaults(kind, stage, set.values) != 0) {
        ft_params_free(&set);
        return -1;
    }
    *out = set;
    return 0;
}

void ft_params_free(ft_param_set *set)
{
    for (size_t i = 0; set->values && i < set->n_values; i++)
        ft_value_free(&set->values[i]);
    free(set->values);
    set->values = NULL;
    set->n_values = 0;
}

const ft_param_value *ft_params_get(const ft_param_set *set, const char *name)
{
    for (size_t i = 0; i < set->n_values; i++)
        if (strcmp(set->values[i].rule->name, name) == 0)
            return &set->values[i];
    return NULL;
}
