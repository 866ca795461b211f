/* rules: reads rules files (built in, and *.ft in rule folders) into the
 * rulebook of stage kinds and their parameters. */
#include "ftpipe/engine/rules.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

typedef enum { ROLE_FRAGMENT, ROLE_KIND, ROLE_COMMON } file_role;

typedef struct {
    char *name; /* the file's name: a folder's file replaces the built-in of the same name */
    char *path; /* as shown in messages */
    char *text;
} rules_source;

typedef struct {
    const char *path;
    int number;
    const char *text;
    size_t length;
} rules_line;

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

/* Letters, digits, '_' and, where `dash` allows, '-'. */
/* Letters, digits, '_' and the characters in also. */
static bool is_word(const char *text, size_t length, const char *also)
{
    if (length == 0)
        return false;
    for (size_t i = 0; i < length; i++) {
        char c = text[i];
        if (!(c == '_' || (c && strchr(also, c)) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

static int line_error(const rules_line *line, size_t offset, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int line_error(const rules_line *line, size_t offset, const char *fmt, ...)
{
    char message[2048];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    ft_location where = {line->path, line->number, (int)offset + 1};
    return ft_error_at(&where, "%s", message);
}

static size_t skip_blanks(const rules_line *line, size_t i)
{
    while (i < line->length && is_blank(line->text[i]))
        i++;
    return i;
}

static size_t word_end(const rules_line *line, size_t i)
{
    while (i < line->length && !is_blank(line->text[i]))
        i++;
    return i;
}

static bool word_is(const rules_line *line, size_t i, const char *word)
{
    size_t end = word_end(line, i);
    return end - i == strlen(word) && strncmp(line->text + i, word, end - i) == 0;
}

static void free_rule(ft_param_rule *rule)
{
    free(rule->name);
    for (size_t i = 0; i < rule->n_choices; i++)
        free(rule->choices[i]);
    free(rule->choices);
    free(rule->default_text);
    free(rule->doc);
}

static void free_kind(ft_kind_rules *kind)
{
    free(kind->kind);
    free(kind->doc);
    free(kind->file);
    for (size_t i = 0; i < kind->n_params; i++)
        free_rule(&kind->params[i]);
    free(kind->params);
    for (size_t i = 0; i < kind->n_lacks; i++) {
        free(kind->lacks_names[i]);
        free(kind->lacks_texts[i]);
    }
    free(kind->lacks_names);
    free(kind->lacks_texts);
}

/* `choice(a,b,...)` at line[i]; *end receives the index past its `)`. */
static int parse_choices(const rules_line *line, size_t i, ft_param_rule *rule, size_t *end)
{
    const char *close = memchr(line->text + i, ')', line->length - i);
    if (!close)
        return line_error(line, i, "unterminated 'choice(': close the list with ')'");
    *end = (size_t)(close - line->text) + 1;
    size_t at = i + strlen("choice(");
    rule->choices = ft_xcalloc(*end - at + 1, sizeof *rule->choices);
    while (at < *end) {
        size_t stop = at;
        while (line->text[stop] != ',' && line->text[stop] != ')')
            stop++;
        size_t from = at, to = stop;
        while (from < to && is_blank(line->text[from]))
            from++;
        while (to > from && is_blank(line->text[to - 1]))
            to--;
        if (!is_word(line->text + from, to - from, "-."))
            return line_error(line, from, "a choice must be a word of letters, digits, '_', '-' or '.'");
        char *choice = ft_xstrndup(line->text + from, to - from);
        for (size_t k = 0; k < rule->n_choices; k++) {
            if (strcmp(rule->choices[k], choice) == 0) {
                free(choice);
                return line_error(line, from, "choice '%.*s' is listed twice", (int)(to - from), line->text + from);
            }
        }
        rule->choices[rule->n_choices++] = choice;
        at = stop + 1;
    }
    return 0;
}

static int parse_type(const rules_line *line, size_t i, ft_param_rule *rule, size_t *end)
{
    static const char *const names[] = {
        [FT_TYPE_STRING] = "string",     [FT_TYPE_INT] = "int",   [FT_TYPE_FLOAT] = "float", [FT_TYPE_SIZE] = "size",
        [FT_TYPE_DURATION] = "duration", [FT_TYPE_BOOL] = "bool", [FT_TYPE_LIST] = "list",   [FT_TYPE_PATH] = "path",
    };
    if (i == line->length)
        return line_error(line, i, "missing type after the parameter name");
    if (strncmp(line->text + i, "choice(", strlen("choice(")) == 0) {
        rule->type = FT_TYPE_CHOICE;
        return parse_choices(line, i, rule, end);
    }
    *end = word_end(line, i);
    for (size_t t = 0; t < sizeof names / sizeof names[0]; t++) {
        if (word_is(line, i, names[t])) {
            rule->type = (ft_param_type)t;
            return 0;
        }
    }
    return line_error(line, i,
                      "unknown type '%.*s': expected string, int, float, size, duration, bool, list, path "
                      "or choice(a,b,...)",
                      (int)(*end - i), line->text + i);
}

/* A word, a "quoted string" (\" and \\ escaped) or `required`. */
static int parse_default(const rules_line *line, size_t i, ft_param_rule *rule, size_t *end)
{
    if (i == line->length)
        return line_error(line, i, "missing default after the type: write a value, \"\" or required");
    if (line->text[i] != '"') {
        *end = word_end(line, i);
        if (word_is(line, i, "required"))
            rule->required = true;
        else
            rule->default_text = ft_xstrndup(line->text + i, *end - i);
        return 0;
    }
    char *text = ft_xcalloc(line->length - i + 1, 1);
    size_t n = 0;
    size_t at = i + 1;
    while (at < line->length && line->text[at] != '"') {
        if (line->text[at] == '\\' && at + 1 < line->length &&
            (line->text[at + 1] == '"' || line->text[at + 1] == '\\'))
            at++;
        text[n++] = line->text[at++];
    }
    if (at == line->length) {
        free(text);
        return line_error(line, i, "unterminated quoted default: end it with '\"'");
    }
    rule->default_text = text;
    *end = at + 1;
    return 0;
}

/* `name type default key|nokey doc...` */
static int parse_param_line(const rules_line *line, size_t i, ft_kind_rules *kind, size_t *capacity)
{
    ft_param_rule rule = {0};
    size_t end = word_end(line, i);
    int result = 0;
    if (!is_word(line->text + i, end - i, ""))
        return line_error(line, i, "'%.*s' is not a parameter name: use letters, digits and '_'", (int)(end - i),
                          line->text + i);
    rule.name = ft_xstrndup(line->text + i, end - i);
    for (size_t k = 0; k < kind->n_params; k++)
        if (strcmp(kind->params[k].name, rule.name) == 0)
            result = line_error(line, i, "parameter '%s' is declared twice", rule.name);
    size_t type_at = skip_blanks(line, end);
    if (result == 0)
        result = parse_type(line, type_at, &rule, &end);
    size_t default_at = skip_blanks(line, end);
    if (result == 0)
        result = parse_default(line, default_at, &rule, &end);
    size_t key_at = skip_blanks(line, end);
    if (result == 0) {
        end = word_end(line, key_at);
        if (word_is(line, key_at, "key") || word_is(line, key_at, "nokey"))
            rule.in_key = word_is(line, key_at, "key");
        else
            result = line_error(line, key_at,
                                "expected key or nokey (whether the value enters the stage's key), got "
                                "'%.*s'",
                                (int)(end - key_at), line->text + key_at);
    }
    size_t doc_at = skip_blanks(line, end);
    if (result == 0 && doc_at == line->length)
        result = line_error(line, doc_at,
                            "parameter '%s' has no doc: end the line with a sentence saying what it "
                            "does",
                            rule.name);
    if (result == 0 && rule.default_text) {
        ft_param_value value;
        if (ft_value_parse(&rule, rule.default_text, &value) != 0) {
            char *message = ft_xstrdup(ft_error_message());
            result = line_error(line, default_at, "default of '%s': %s", rule.name, message);
            free(message);
        } else {
            ft_value_free(&value);
        }
    }
    if (result != 0) {
        free_rule(&rule);
        return result;
    }
    rule.doc = ft_xstrndup(line->text + doc_at, line->length - doc_at);
    ft_grow((void **)&kind->params, capacity, kind->n_params + 1, sizeof *kind->params);
    kind->params[kind->n_params++] = rule;
    return 0;
}

/* The first directive says what a file is: `.kind NAME`, `.common`, or neither
 * (a fragment for `include`, in the pipeline language). */
static int parse_directive(const rules_line *line, size_t i, file_role *role, ft_kind_rules *kind)
{
    size_t end = word_end(line, i);
    size_t argument = skip_blanks(line, end);
    if (word_is(line, i, ".kind") || word_is(line, i, ".common")) {
        if (*role != ROLE_FRAGMENT)
            return line_error(line, i, "'%.*s' after the file's first directive: one rules file declares one kind",
                              (int)(end - i), line->text + i);
        if (word_is(line, i, ".common")) {
            *role = ROLE_COMMON;
            return argument == line->length ? 0 : line_error(line, argument, "'.common' takes nothing after it");
        }
        size_t name_end = word_end(line, argument);
        if (!is_word(line->text + argument, name_end - argument, "-") || skip_blanks(line, name_end) != line->length)
            return line_error(line, argument, "expected one kind name after '.kind', like `.kind train`");
        *role = ROLE_KIND;
        kind->kind = ft_xstrndup(line->text + argument, name_end - argument);
        return 0;
    }
    if (word_is(line, i, ".doc") && *role == ROLE_KIND) {
        if (kind->doc)
            return line_error(line, i, "a second '.doc' line: the kind's doc is one line");
        if (argument == line->length)
            return line_error(line, argument, "'.doc' needs a sentence saying what the kind does");
        kind->doc = ft_xstrndup(line->text + argument, line->length - argument);
        return 0;
    }
    if (word_is(line, i, ".lacks") && *role == ROLE_KIND) {
        size_t name_end = word_end(line, argument);
        size_t text_at = skip_blanks(line, name_end);
        if (!is_word(line->text + argument, name_end - argument, "-") || text_at == line->length)
            return line_error(line, argument, "expected a parameter name and what to do instead after '.lacks'");
        kind->lacks_names = ft_xrealloc(kind->lacks_names, (kind->n_lacks + 1) * sizeof(char *));
        kind->lacks_texts = ft_xrealloc(kind->lacks_texts, (kind->n_lacks + 1) * sizeof(char *));
        kind->lacks_names[kind->n_lacks] = ft_xstrndup(line->text + argument, name_end - argument);
        kind->lacks_texts[kind->n_lacks++] = ft_xstrndup(line->text + text_at, line->length - text_at);
        return 0;
    }
    return line_error(line, i, "unexpected '%.*s': rules files know .kind NAME, .doc TEXT, .lacks NAME TEXT and .common",
                      (int)(end - i), line->text + i);
}

static int read_rules_file(const char *path, const char *text, file_role *role, ft_kind_rules *out)
{
    memset(out, 0, sizeof *out);
    *role = ROLE_FRAGMENT;
    size_t capacity = 0;
    rules_line line = {path, 0, text, 0};
    int result = 0;
    for (const char *p = text; *p && result == 0;) {
        const char *newline = strchr(p, '\n');
        size_t length = newline ? (size_t)(newline - p) : strlen(p);
        line.number++;
        line.text = p;
        p += length + (newline != NULL);
        while (length > 0 && (is_blank(line.text[length - 1]) || line.text[length - 1] == '\r'))
            length--;
        line.length = length;
        size_t i = skip_blanks(&line, 0);
        if (i == length || line.text[i] == '#')
            continue;
        if (*role == ROLE_FRAGMENT && !word_is(&line, i, ".kind") && !word_is(&line, i, ".common"))
            break;
        if (line.text[i] == '.')
            result = parse_directive(&line, i, role, out);
        else
            result = parse_param_line(&line, i, out, &capacity);
    }
    if (result == 0 && *role == ROLE_FRAGMENT)
        return 0;
    if (result == 0 && *role == ROLE_KIND && !out->doc)
        result =
            ft_error("%s: kind %s has no '.doc' line: add `.doc` and a sentence saying what it does", path, out->kind);
    if (result == 0)
        out->file = ft_xstrdup(path);
    else
        free_kind(out);
    return result;
}

static int compare_strings(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static bool has_source(const rules_source *sources, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(sources[i].name, name) == 0)
            return true;
    return false;
}

/* Every rules file: each folder's *.ft (the first folder holding a name wins),
 * then the built-ins whose names no folder took. */
static int collect_sources(const char *const *dirs, size_t n_dirs, rules_source **out, size_t *n_out)
{
    rules_source *sources = NULL;
    size_t n = 0, capacity = 0;
    int result = 0;
    for (size_t d = 0; d < n_dirs && result == 0; d++) {
        DIR *dir = opendir(dirs[d]);
        if (!dir) {
            result = ft_error_errno("cannot read rules folder %s", dirs[d]);
            break;
        }
        char **names = NULL;
        size_t n_names = 0, names_capacity = 0;
        for (struct dirent *entry; (entry = readdir(dir));) {
            size_t length = strlen(entry->d_name);
            if (length > 3 && strcmp(entry->d_name + length - 3, ".ft") == 0) {
                ft_grow((void **)&names, &names_capacity, n_names + 1, sizeof *names);
                names[n_names++] = ft_xstrdup(entry->d_name);
            }
        }
        closedir(dir);
        qsort(names, n_names, sizeof *names, compare_strings);
        for (size_t i = 0; i < n_names; i++) {
            char *path = ft_path_join(dirs[d], names[i]);
            char *text = NULL;
            if (result == 0 && !has_source(sources, n, names[i]) && !ft_path_is_dir(path))
                result = ft_read_file(path, &text, NULL);
            if (text) {
                ft_grow((void **)&sources, &capacity, n + 1, sizeof *sources);
                sources[n++] = (rules_source){ft_xstrdup(names[i]), path, text};
            } else {
                free(path);
            }
            free(names[i]);
        }
        free(names);
    }
    for (size_t i = 0; ft_builtin_rule_files[i][0] && result == 0; i++) {
        const char *name = ft_builtin_rule_files[i][0];
        if (has_source(sources, n, name))
            continue;
        ft_grow((void **)&sources, &capacity, n + 1, sizeof *sources);
        sources[n++] = (rules_source){ft_xstrdup(name), ft_xasprintf("<built-in>/%s", name),
                                      ft_xstrdup(ft_builtin_rule_files[i][1])};
    }
    *out = sources;
    *n_out = n;
    return result;
}

static void copy_rule(ft_param_rule *to, const ft_param_rule *from)
{
    *to = *from;
    to->name = ft_xstrdup(from->name);
    to->choices = ft_xcalloc(from->n_choices + 1, sizeof *to->choices);
    for (size_t i = 0; i < from->n_choices; i++)
        to->choices[i] = ft_xstrdup(from->choices[i]);
    to->default_text = from->default_text ? ft_xstrdup(from->default_text) : NULL;
    to->doc = ft_xstrdup(from->doc);
}

/* Gathers the parameters of every `.common` file into one list, then appends it
 * to every kind, refusing a name declared twice. */
static int add_common(ft_rulebook *book, const ft_kind_rules *common, size_t n_common)
{
    ft_kind_rules merged = {0};
    const char **origin = NULL; /* the file each merged parameter came from */
    int result = 0;
    for (size_t c = 0; c < n_common && result == 0; c++) {
        for (size_t i = 0; i < common[c].n_params && result == 0; i++) {
            const ft_param_rule *rule = &common[c].params[i];
            for (size_t j = 0; j < merged.n_params && result == 0; j++)
                if (strcmp(merged.params[j].name, rule->name) == 0)
                    result = ft_error("common parameter '%s' is declared in both %s and %s: remove one", rule->name,
                                      origin[j], common[c].file);
            merged.params = ft_xrealloc(merged.params, (merged.n_params + 1) * sizeof *merged.params);
            origin = ft_xrealloc(origin, (merged.n_params + 1) * sizeof *origin);
            origin[merged.n_params] = common[c].file;
            copy_rule(&merged.params[merged.n_params++], rule);
        }
    }
    for (size_t k = 0; k < book->n_kinds && result == 0; k++) {
        ft_kind_rules *kind = &book->kinds[k];
        kind->n_own_params = kind->n_params;
        for (size_t i = 0; i < merged.n_params && result == 0; i++) {
            for (size_t j = 0; j < kind->n_own_params && result == 0; j++)
                if (strcmp(kind->params[j].name, merged.params[i].name) == 0)
                    result = ft_error("%s: parameter '%s' is also a common parameter (declared in %s): rename or "
                                      "remove it",
                                      kind->file, merged.params[i].name, origin[i]);
            kind->params = ft_xrealloc(kind->params, (kind->n_params + 1) * sizeof *kind->params);
            copy_rule(&kind->params[kind->n_params++], &merged.params[i]);
        }
    }
    for (size_t i = 0; i < merged.n_params; i++)
        free_rule(&merged.params[i]);
    free(merged.params);
    free(origin);
    return result;
}

static int compare_kinds(const void *a, const void *b)
{
    return strcmp(((const ft_kind_rules *)a)->kind, ((const ft_kind_rules *)b)->kind);
}

int ft_rulebook_load(const char *const *dirs, size_t n_dirs, ft_rulebook **out)
{
    *out = NULL;
    rules_source *sources;
    size_t n_sources;
    int result = collect_sources(dirs, n_dirs, &sources, &n_sources);
    ft_rulebook *book = ft_xcalloc(1, sizeof *book);
    ft_kind_rules *common = NULL;
    size_t n_common = 0, kinds_capacity = 0, common_capacity = 0;
    for (size_t i = 0; i < n_sources && result == 0; i++) {
        file_role role;
        ft_kind_rules declared;
        result = read_rules_file(sources[i].path, sources[i].text, &role, &declared);
        if (result != 0 || role == ROLE_FRAGMENT)
            continue;
        if (role == ROLE_COMMON) {
            ft_grow((void **)&common, &common_capacity, n_common + 1, sizeof *common);
            common[n_common++] = declared;
            continue;
        }
        const ft_kind_rules *same = ft_rulebook_find(book, declared.kind);
        if (same) {
            result = ft_error("kind '%s' is declared twice, in %s and in %s: keep one", declared.kind, same->file,
                              declared.file);
            free_kind(&declared);
            continue;
        }
        ft_grow((void **)&book->kinds, &kinds_capacity, book->n_kinds + 1, sizeof *book->kinds);
        book->kinds[book->n_kinds++] = declared;
    }
    if (result == 0)
        result = add_common(book, common, n_common);
    if (book->n_kinds > 0)
        qsort(book->kinds, book->n_kinds, sizeof *book->kinds, compare_kinds);
    for (size_t i = 0; i < n_common; i++)
        free_kind(&common[i]);
    free(common);
    for (size_t i = 0; i < n_sources; i++) {
        free(sources[i].name);
        free(sources[i].path);
        free(sources[i].text);
    }
    free(sources);
    if (result != 0) {
        ft_rulebook_free(book);
        return -1;
    }
    *out = book;
    return 0;
}

void ft_rulebook_free(ft_rulebook *book)
{
    if (!book)
        return;
    for (size_t i = 0; i < book->n_kinds; i++)
        free_kind(&book->kinds[i]);
    free(book->kinds);
    free(book);
}

const ft_kind_rules *ft_rulebook_find(const ft_rulebook *book, const char *kind)
{
    for (size_t i = 0; i < book->n_kinds; i++)
        if (strcmp(book->kinds[i].kind, kind) == 0)
            return &book->kinds[i];
    return NULL;
}

int ft_rulebook_unknown_kind(const ft_rulebook *book, const char *kind, const ft_location *where)
{
    const char **names = ft_xcalloc(book->n_kinds + 1, sizeof *names);
    ft_strbuf list;
    ft_strbuf_init(&list);
    for (size_t i = 0; i < book->n_kinds; i++) {
        names[i] = book->kinds[i].kind;
        ft_strbuf_printf(&list, "%s%s", i ? ", " : "", names[i]);
    }
    const char *nearest = ft_closest_name(kind, names, book->n_kinds);
    char *suggestion = nearest ? ft_xasprintf(" (did you mean '%s'?)", nearest) : ft_xstrdup("");
    int result = ft_error_at(where, "unknown stage kind '%s'%s; kinds: %s", kind, suggestion, list.data);
    free(suggestion);
    ft_strbuf_free(&list);
    free(names);
    return result;
}
