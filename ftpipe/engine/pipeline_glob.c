/* pipeline_glob: input words with wildcards, matched against the files that
 * exist in the pipeline's folder when it is read. */
#include <glob.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "pipeline_internal.h"

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
