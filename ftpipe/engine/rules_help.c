/* rules_help: `ftpipe help` (the kinds) and `ftpipe help KIND` (its parameters). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/engine/rules.h"

static char *type_text(const ft_param_rule *rule)
{
    static const char *const names[] = {
        [FT_TYPE_STRING] = "string",     [FT_TYPE_INT] = "int",   [FT_TYPE_FLOAT] = "float", [FT_TYPE_SIZE] = "size",
        [FT_TYPE_DURATION] = "duration", [FT_TYPE_BOOL] = "bool", [FT_TYPE_LIST] = "list",   [FT_TYPE_PATH] = "path",
    };
    if (rule->type != FT_TYPE_CHOICE)
        return ft_xstrdup(names[rule->type]);
    ft_strbuf text;
    ft_strbuf_init(&text);
    ft_strbuf_puts(&text, "choice(");
    for (size_t i = 0; i < rule->n_choices; i++)
        ft_strbuf_printf(&text, "%s%s", i ? "," : "", rule->choices[i]);
    ft_strbuf_putc(&text, ')');
    return ft_strbuf_take(&text);
}

/* As a rules file writes it: a word, "quoted" when empty or with blanks, or required. */
static char *default_text(const ft_param_rule *rule)
{
    if (rule->required)
        return ft_xstrdup("required");
    if (rule->default_text[0] && !strpbrk(rule->default_text, " \t\""))
        return ft_xstrdup(rule->default_text);
    ft_strbuf text;
    ft_strbuf_init(&text);
    ft_strbuf_putc(&text, '"');
    for (const char *p = rule->default_text; *p; p++) {
        if (*p == '"' || *p == '\\')
            ft_strbuf_putc(&text, '\\');
        ft_strbuf_putc(&text, *p);
    }
    ft_strbuf_putc(&text, '"');
    return ft_strbuf_take(&text);
}

typedef struct {
    int name, type, fallback;
} column_widths;

static void widen(int *width, const char *text)
{
    int length = (int)strlen(text);
    if (length > *width)
        *width = length;
}

static void print_row(FILE *file, const column_widths *widths, const char *name, const char *type, const char *fallback,
                      const char *in_key, const char *doc)
{
    fprintf(file, "  %-*s  %-*s  %-*s  %-6s  %s\n", widths->name, name, widths->type, type, widths->fallback, fallback,
            in_key, doc);
}

static void print_kind(const ft_kind_rules *kind, FILE *file)
{
    column_widths widths = {(int)strlen("parameter"), (int)strlen("type"), (int)strlen("default")};
    for (size_t i = 0; i < kind->n_params; i++) {
        char *type = type_text(&kind->params[i]);
        char *fallback = default_text(&kind->params[i]);
        widen(&widths.name, kind->params[i].name);
        widen(&widths.type, type);
        widen(&widths.fallback, fallback);
        free(type);
        free(fallback);
    }
    fprintf(file, "%s: %s\n(declared in %s)\n\n", kind->kind, kind->doc, kind->file);
    print_row(file, &widths, "parameter", "type", "default", "in key", "doc");
    for (size_t i = 0; i < kind->n_params; i++) {
        const ft_param_rule *rule = &kind->params[i];
        if (i == kind->n_own_params)
            fprintf(file, "\nCommon parameters, accepted by every kind:\n");
        char *type = type_text(rule);
        char *fallback = default_text(rule);
        print_row(file, &widths, rule->name, type, fallback, rule->in_key ? "yes" : "no", rule->doc);
        free(type);
        free(fallback);
    }
}

int ft_rules_print_help(const ft_rulebook *book, const char *kind, void *file)
{
    FILE *out = file;
    if (kind) {
        const ft_kind_rules *rules = ft_rulebook_find(book, kind);
        if (!rules)
            return ft_rulebook_unknown_kind(book, kind, NULL);
        print_kind(rules, out);
        return 0;
    }
    int width = 0;
    for (size_t i = 0; i < book->n_kinds; i++)
        widen(&width, book->kinds[i].kind);
    fprintf(out, "Stage kinds (`ftpipe help KIND` lists a kind's parameters):\n");
    for (size_t i = 0; i < book->n_kinds; i++)
        fprintf(out, "  %-*s  %s\n", width, book->kinds[i].kind, book->kinds[i].doc);
    return 0;
}
