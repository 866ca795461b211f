/* lock_file: reading, writing and applying Ftpipe.lock. */
#include "ftpipe/engine/lock_file.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

#define HEADER                                                                                          \
    "# Ftpipe.lock: what each download resolved to, written by `ftpipe lock`. A run fetches exactly\n"   \
    "# these bytes or fails naming the file; `ftpipe lock --update [TARGET]` moves an entry on.\n"

char *ft_lock_path(const char *pipeline_path) { return ft_xasprintf("%s.lock", pipeline_path); }

static void free_entry(ft_lock_entry *entry)
{
    free(entry->target);
    free(entry->url);
    free(entry->revision);
    free(entry->commit);
    for (size_t i = 0; i < entry->n_files; i++)
        free(entry->files[i].path);
    free(entry->files);
    memset(entry, 0, sizeof *entry);
}

void ft_lock_free(ft_lock *lock)
{
    if (!lock)
        return;
    for (size_t i = 0; i < lock->n_entries; i++)
        free_entry(&lock->entries[i]);
    free(lock->entries);
    free(lock->path);
    free(lock);
}

static char *normalised(const char *target)
{
    size_t n = strlen(target);
    while (n > 1 && target[n - 1] == '/')
        n--;
    const char *start = target;
    while (strncmp(start, "./", 2) == 0)
        start += 2;
    return ft_xstrndup(start, n - (size_t)(start - target));
}

ft_lock_entry *ft_lock_find(ft_lock *lock, const char *target)
{
    char *name = normalised(target);
    ft_lock_entry *found = NULL;
    for (size_t i = 0; i < lock->n_entries && !found; i++)
        if (strcmp(lock->entries[i].target, name) == 0)
            found = &lock->entries[i];
    free(name);
    return found;
}

ft_lock_entry *ft_lock_put(ft_lock *lock, const char *target, const char *url, const char *revision,
                           const char *commit)
{
    ft_lock_entry *entry = ft_lock_find(lock, target);
    if (entry) {
        free_entry(entry);
    } else {
        lock->entries = ft_xrealloc(lock->entries, (lock->n_entries + 1) * sizeof *lock->entries);
        entry = &lock->entries[lock->n_entries++];
        memset(entry, 0, sizeof *entry);
    }
    entry->target = normalised(target);
    entry->url = ft_xstrdup(url);
    entry->revision = ft_xstrdup(revision ? revision : "");
    entry->commit = ft_xstrdup(commit ? commit : "");
    return entry;
}

void ft_lock_entry_add_file(ft_lock_entry *entry, const char *path, uint64_t size_bytes, const char *sha256)
{
    entry->files = ft_xrealloc(entry->files, (entry->n_files + 1) * sizeof *entry->files);
    ft_lock_file_entry *file = &entry->files[entry->n_files++];
    file->path = ft_xstrdup(path);
    file->size_bytes = size_bytes;
    snprintf(file->sha256, sizeof file->sha256, "%s", sha256);
}

/* --- reading --- */

static bool is_lower_hex(const char *text, size_t length)
{
    return strlen(text) == length && strspn(text, "0123456789abcdef") == length;
}

static int parse_line(ft_lock *lock, ft_lock_entry **current, char *line, int number)
{
    if (line[0] == '#' || line[strspn(line, " \t")] == '\0')
        return 0;
    if (line[0] != '\t') {
        size_t n = strlen(line);
        if (n < 2 || line[n - 1] != ':')
            return ft_error("%s:%d: expected `TARGET:` or a tab-indented `key = value` line", lock->path, number);
        line[n - 1] = '\0';
        if (ft_lock_find(lock, line))
            return ft_error("%s:%d: %s is locked twice", lock->path, number, line);
        *current = ft_lock_put(lock, line, "", "", "");
        (*current)->line = number;
        return 0;
    }
    if (!*current)
        return ft_error("%s:%d: a `key = value` line before any `TARGET:` line", lock->path, number);
    char *key = line + 1;
    char *equals = strstr(key, " = ");
    if (!equals)
        return ft_error("%s:%d: expected `key = value`", lock->path, number);
    *equals = '\0';
    const char *value = equals + 3;
    ft_lock_entry *entry = *current;
    if (strcmp(key, "url") == 0) {
        free(entry->url);
        entry->url = ft_xstrdup(value);
    } else if (strcmp(key, "revision") == 0) {
        free(entry->revision);
        entry->revision = ft_xstrdup(value);
    } else if (strcmp(key, "commit") == 0) {
        free(entry->commit);
        entry->commit = ft_xstrdup(value);
    } else if (strcmp(key, "file") == 0) {
        /* The path may hold blanks: the size and the checksum are the last two words. */
        const char *sha = strrchr(value, ' ');
        const char *size_start = sha ? sha : value;
        while (size_start > value && size_start[-1] != ' ')
            size_start--;
        char *end = NULL;
        uint64_t size = sha && size_start > value ? strtoull(size_start, &end, 10) : 0;
        if (!sha || size_start <= value + 1 || end != sha || !is_lower_hex(sha + 1, FT_SHA256_HEX_LENGTH))
            return ft_error("%s:%d: expected `file = PATH SIZE SHA256`", lock->path, number);
        char *path = ft_xstrndup(value, (size_t)(size_start - 1 - value));
        ft_lock_entry_add_file(entry, path, size, sha + 1);
        free(path);
    } else {
        return ft_error("%s:%d: unknown key %s (expected url, revision, commit or file)", lock->path, number, key);
    }
    return 0;
}

int ft_lock_read(const char *path, ft_lock **out)
{
    ft_lock *lock = ft_xcalloc(1, sizeof *lock);
    lock->path = ft_xstrdup(path);
    if (!ft_path_exists(path)) {
        *out = lock;
        return 0;
    }
    char *text = NULL;
    if (ft_read_file(path, &text, NULL) != 0) {
        ft_lock_free(lock);
        return -1;
    }
    ft_lock_entry *current = NULL;
    int result = 0, number = 0;
    for (char *line = text, *next; line && result == 0; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        result = parse_line(lock, &current, line, ++number);
        if (!next)
            break;
    }
    free(text);
    if (result != 0) {
        ft_lock_free(lock);
        return ft_error_context("fix or delete the lock file (then `ftpipe lock` writes it again)");
    }
    *out = lock;
    return 0;
}

int ft_lock_write(const ft_lock *lock)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    ft_strbuf_puts(&text, HEADER);
    for (size_t i = 0; i < lock->n_entries; i++) {
        const ft_lock_entry *entry = &lock->entries[i];
        ft_strbuf_printf(&text, "\n%s:\n\turl = %s\n", entry->target, entry->url);
        if (entry->revision[0])
            ft_strbuf_printf(&text, "\trevision = %s\n", entry->revision);
        if (entry->commit[0])
            ft_strbuf_printf(&text, "\tcommit = %s\n", entry->commit);
        for (size_t f = 0; f < entry->n_files; f++)
            ft_strbuf_printf(&text, "\tfile = %s %" PRIu64 " %s\n", entry->files[f].path, entry->files[f].size_bytes,
                             entry->files[f].sha256);
    }
    int result = ft_write_file_atomic(lock->path, text.data, text.length);
    ft_strbuf_free(&text);
    return result;
}

/* --- applying --- */

static const char *param_value(const ft_stage_decl *decl, const char *name)
{
    for (size_t i = 0; i < decl->n_params; i++)
        if (strcmp(decl->params[i].name, name) == 0)
            return decl->params[i].value;
    return NULL;
}

/* Sets (or replaces) a parameter, located at the lock's entry. */
static void set_param(ft_stage_decl *decl, const char *name, char *value, const ft_location *where)
{
    for (size_t i = 0; i < decl->n_params; i++) {
        if (strcmp(decl->params[i].name, name) == 0) {
            free(decl->params[i].value);
            decl->params[i].value = value;
            decl->params[i].where = *where;
            decl->params[i].value_where = *where;
            return;
        }
    }
    decl->params = ft_xrealloc(decl->params, (decl->n_params + 1) * sizeof *decl->params);
    decl->params[decl->n_params++] =
        (ft_param){.name = ft_xstrdup(name), .value = value, .where = *where, .value_where = *where};
}

static bool skipped(const char *target, const char *const *skip, size_t n_skip)
{
    char *name = normalised(target);
    bool found = false;
    for (size_t i = 0; i < n_skip && !found; i++) {
        char *other = normalised(skip[i]);
        found = strcmp(other, name) == 0;
        free(other);
    }
    free(name);
    return found;
}

static int pin(const ft_lock_entry *entry, ft_stage_decl *decl, const ft_location *where)
{
    const char *url = param_value(decl, "url");
    const char *revision = param_value(decl, "revision");
    if (!url || strcmp(url, entry->url) != 0 || strcmp(revision ? revision : "", entry->revision) != 0)
        return ft_error_at(where, "%s was locked for url = %s%s%s, but the pipeline now says url = %s%s%s: run "
                           "`ftpipe lock --update %s` to lock what it says now",
                           entry->target, entry->url, entry->revision[0] ? ", revision = " : "", entry->revision,
                           url ? url : "(none)", revision ? ", revision = " : "", revision ? revision : "",
                           entry->target);
    if (entry->commit[0]) {
        /* The URL's own @REVISION would contradict the pinned one: the commit replaces both. */
        const char *at = strncmp(url, "hf://", 5) == 0 ? strchr(url, '@') : NULL;
        if (at)
            set_param(decl, "url", ft_xstrndup(url, (size_t)(at - url)), where);
        set_param(decl, "revision", ft_xstrdup(entry->commit), where);
    }
    if (entry->n_files > 0) {
        ft_strbuf locked;
        ft_strbuf_init(&locked);
        for (size_t i = 0; i < entry->n_files; i++)
            ft_strbuf_printf(&locked, "%s%s=%" PRIu64 ":%s", i ? " " : "", entry->files[i].path,
                             entry->files[i].size_bytes, entry->files[i].sha256);
        set_param(decl, "locked", ft_strbuf_take(&locked), where);
        ft_strbuf_free(&locked);
    }
    return 0;
}

int ft_lock_apply(const ft_lock *lock, ft_pipeline *pipeline, const char *const *skip, size_t n_skip, bool skip_all)
{
    if (skip_all || lock->n_entries == 0)
        return 0;
    /* Locations point into the pipeline's list of files read, which lives as long as it. */
    pipeline->files = ft_xrealloc(pipeline->files, (pipeline->n_files + 1) * sizeof *pipeline->files);
    const char *file = pipeline->files[pipeline->n_files++] = ft_xstrdup(lock->path);
    for (size_t i = 0; i < pipeline->n_stages; i++) {
        ft_stage_decl *decl = &pipeline->stages[i];
        const ft_lock_entry *entry = ft_lock_find((ft_lock *)lock, decl->target);
        if (!entry || skipped(decl->target, skip, n_skip))
            continue;
        ft_location where = {file, entry->line, 1};
        if (pin(entry, decl, &where) != 0)
            return -1;
    }
    return 0;
}
