/* pipeline_glob: input words with wildcards and pattern rules, matched against
 * the files that exist in the pipeline's folder when it is read. */
#include <glob.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "pipeline_internal.h"
#include "pipeline_parser.h"

bool ft_has_wildcard(const char *word) { return strpbrk(word, "*?[") != NULL; }

int ft_glob_relative(const char *dir, const char *pattern, char ***paths, size_t *n_paths)
{
    ft_strbuf absolute;
    ft_strbuf_init(&absolute);
    for (const char *c = dir; *c; c++) {
        if (strchr("*?[\\", *c))
            ft_strbuf_putc(&absolute, '\\'); /* the folder's own name is no pattern */
        ft_strbuf_putc(&absolute, *c);
    }
    ft_strbuf_printf(&absolute, "/%s", pattern);
    glob_t found;
    int status = glob(absolute.data, 0, NULL, &found);
    ft_strbuf_free(&absolute);
    *paths = NULL;
    *n_paths = 0;
    if (status == GLOB_NOMATCH)
        return 0;
    if (status != 0)
        return ft_error("cannot list the files matching '%s' in %s", pattern, dir);
    size_t prefix = strlen(dir) + 1;
    *paths = ft_xcalloc(found.gl_pathc + 1, sizeof **paths);
    for (size_t i = 0; i < found.gl_pathc; i++)
        (*paths)[i] = ft_xstrdup(found.gl_pathv[i] + prefix);
    *n_paths = found.gl_pathc;
    globfree(&found);
    return 0;
}

/* Prefixes the current message with where. */
static int located_error(const ft_location *where)
{
    char *message = ft_xstrdup(ft_error_message());
    ft_error_at(where, "%s", message);
    free(message);
    return -1;
}

int ft_parser_expand_wildcards(parser *p, word_list *words)
{
    for (size_t i = 1; i < words->n_words; i++) {
        if (!ft_has_wildcard(words->words[i]))
            continue;
        char **paths;
        size_t n_paths;
        p->pipeline->lists_folders = true;
        if (ft_glob_relative(p->pipeline->dir, words->words[i], &paths, &n_paths) != 0)
            return located_error(&words->where[i]);
        if (n_paths == 0)
            return ft_error_at(&words->where[i],
                               "'%s' matches no file in %s: a wildcard input names files that exist when the "
                               "pipeline is read",
                               words->words[i], p->pipeline->dir);
        size_t n_words = words->n_words - 1 + n_paths;
        words->words = ft_xrealloc(words->words, n_words * sizeof *words->words);
        words->where = ft_xrealloc(words->where, n_words * sizeof *words->where);
        ft_location where = words->where[i];
        free(words->words[i]);
        memmove(words->words + i + n_paths, words->words + i + 1, (words->n_words - i - 1) * sizeof *words->words);
        memmove(words->where + i + n_paths, words->where + i + 1, (words->n_words - i - 1) * sizeof *words->where);
        for (size_t k = 0; k < n_paths; k++) {
            words->words[i + k] = paths[k];
            words->where[i + k] = where;
        }
        free(paths);
        words->n_words = n_words;
        i += n_paths - 1;
    }
    return 0;
}

/* word with its first `%` replaced by stem. */
static char *with_stem(const char *word, const char *stem)
{
    const char *percent = strchr(word, '%');
    if (!percent)
        return ft_xstrdup(word);
    return ft_xasprintf("%.*s%s%s", (int)(percent - word), word, stem, percent + 1);
}

int ft_parser_add_pattern_stages(parser *p, const char *target, const ft_location *target_where,
                              const ft_location *colon, const word_list *words)
{
    if (strchr(strchr(target, '%') + 1, '%'))
        return ft_error_at(target_where, "pattern target '%s' has more than one '%%': write one", target);
    size_t source = 1;
    while (source < words->n_words && !strchr(words->words[source], '%'))
        source++;
    if (source >= words->n_words)
        return ft_error_at(target_where,
                           "pattern target '%s' needs an input with '%%' to match files against: write "
                           "`%s: KIND in/%%.ext`",
                           target, target);
    const char *pattern = words->words[source];
    const char *percent = strchr(pattern, '%');
    size_t prefix = (size_t)(percent - pattern), suffix = strlen(percent + 1);
    char *wildcard = with_stem(pattern, "*");
    char **paths;
    size_t n_paths;
    p->pipeline->lists_folders = true;
    int result = ft_glob_relative(p->pipeline->dir, wildcard, &paths, &n_paths);
    if (result != 0)
        result = located_error(&words->where[source]);
    for (size_t i = 0; i < n_paths; i++) {
        size_t length = strlen(paths[i]);
        if (result == 0 && length >= prefix + suffix) {
            char *stem = ft_xstrndup(paths[i] + prefix, length - prefix - suffix);
            word_list stage_words = {.words = ft_xcalloc(words->n_words, sizeof(char *)),
                                     .where = ft_xcalloc(words->n_words, sizeof(ft_location)),
                                     .n_words = words->n_words};
            for (size_t k = 0; k < words->n_words; k++) {
                stage_words.words[k] = k == 0 ? ft_xstrdup(words->words[0]) : with_stem(words->words[k], stem);
                stage_words.where[k] = words->where[k];
            }
            char *stage_target = with_stem(target, stem);
            result = ft_parser_add_stage(p, stage_target, target_where, colon, &stage_words);
            free(stage_target);
            ft_parser_free_words(&stage_words);
            free(stem);
        }
        free(paths[i]);
    }
    free(paths);
    free(wildcard);
    return result;
}
