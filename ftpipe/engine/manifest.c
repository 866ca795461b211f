/* manifest: a path walked into a sorted list of entries, and its canonical text. */
#include "ftpipe/engine/manifest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

#define MANIFEST_HEADER "ftpipe manifest 1\n"

/* A file changed within one tick of the file system's clock before we hash it
 * could change again without its mtime moving, so its hash is used but not
 * remembered until a later walk finds it older. Linux stamps files from a clock
 * that ticks every few milliseconds; a file system that keeps whole seconds (or
 * FAT's two) shows it in mtimes without nanoseconds. A short window matters: a
 * large model hashed right after it was written is remembered on that run. */
static int64_t recent_change_ns(int64_t mtime_ns)
{
    return mtime_ns % 1000000000 == 0 ? (int64_t)2000000000 : (int64_t)50000000;
}

static const char *const type_words[] = {[FT_ENTRY_FILE] = "file", [FT_ENTRY_DIR] = "dir",
                                         [FT_ENTRY_SYMLINK] = "link"};

/* --- walking --- */

typedef struct {
    size_t entry;   /* index into the manifest's entries */
    char *path;     /* absolute */
    ft_file_stat stat;
} pending_file;

typedef struct {
    ft_manifest *manifest;
    size_t capacity;
    pending_file *files;
    size_t n_files;
    size_t files_capacity;
} walk;

static ft_manifest_entry *add_entry(walk *w, const char *relative, ft_entry_type type)
{
    ft_manifest *m = w->manifest;
    ft_grow((void **)&m->entries, &w->capacity, m->n_entries + 1, sizeof *m->entries);
    ft_manifest_entry *entry = &m->entries[m->n_entries++];
    memset(entry, 0, sizeof *entry);
    entry->path = ft_xstrdup(relative);
    entry->type = type;
    return entry;
}

static int read_link(int dir_fd, const char *name, const char *shown_path, size_t size_hint, char **out)
{
    size_t capacity = size_hint + 1 > 64 ? size_hint + 1 : 64;
    for (;;) {
        char *text = ft_xmalloc(capacity);
        ssize_t n = readlinkat(dir_fd, name, text, capacity);
        if (n < 0) {
            free(text);
            return ft_error_errno("cannot read the link %s", shown_path);
        }
        if ((size_t)n < capacity) {
            text[n] = '\0';
            *out = text;
            return 0;
        }
        free(text);
        capacity *= 2;
    }
}

static int walk_dir(walk *w, int dir_fd, const char *absolute, const char *relative);

/* Adds the entry for `name` inside dir_fd (or the root itself when relative is ""). */
static int add_path(walk *w, int dir_fd, const char *name, const char *absolute, const char *relative)
{
    struct stat st;
    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return ft_error_errno("cannot stat %s", absolute);
    if (S_ISREG(st.st_mode)) {
        ft_manifest_entry *entry = add_entry(w, relative, FT_ENTRY_FILE);
        entry->executable = (st.st_mode & S_IXUSR) != 0;
        entry->size_bytes = (uint64_t)st.st_size;
        ft_grow((void **)&w->files, &w->files_capacity, w->n_files + 1, sizeof *w->files);
        w->files[w->n_files++] = (pending_file){
            .entry = w->manifest->n_entries - 1,
            .path = ft_xstrdup(absolute),
            .stat = {.device = (uint64_t)st.st_dev, .inode = (uint64_t)st.st_ino,
                     .size_bytes = (uint64_t)st.st_size,
                     .mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec},
        };
        return 0;
    }
    if (S_ISLNK(st.st_mode)) {
        char *target = NULL;
        if (read_link(dir_fd, name, absolute, (size_t)st.st_size, &target) != 0)
            return -1;
        ft_manifest_entry *entry = add_entry(w, relative, FT_ENTRY_SYMLINK);
        entry->link_target = target;
        entry->size_bytes = strlen(target);
        entry->hash = ft_hash_bytes(target, entry->size_bytes);
        return 0;
    }
    if (S_ISDIR(st.st_mode)) {
        if (relative[0] != '\0')
            add_entry(w, relative, FT_ENTRY_DIR);
        int child_fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (child_fd < 0)
            return ft_error_errno("cannot open the folder %s", absolute);
        return walk_dir(w, child_fd, absolute, relative);
    }
    return ft_error("cannot take %s into a manifest: it is not a file, a folder or a symbolic link", absolute);
}

/* Walks the folder open on dir_fd (and closes it). */
static int walk_dir(walk *w, int dir_fd, const char *absolute, const char *relative)
{
    DIR *dir = fdopendir(dir_fd);
    if (!dir) {
        int result = ft_error_errno("cannot read the folder %s", absolute);
        close(dir_fd);
        return result;
    }
    int result = 0;
    struct dirent *item;
    errno = 0;
    while (result == 0 && (item = readdir(dir))) {
        if (strcmp(item->d_name, ".") == 0 || strcmp(item->d_name, "..") == 0)
            continue;
        char *child_absolute = ft_path_join(absolute, item->d_name);
        char *child_relative = relative[0] ? ft_xasprintf("%s/%s", relative, item->d_name)
                                           : ft_xstrdup(item->d_name);
        result = add_path(w, dirfd(dir), item->d_name, child_absolute, child_relative);
        free(child_absolute);
        free(child_relative);
        errno = 0;
    }
    if (result == 0 && errno != 0)
        result = ft_error_errno("cannot read the folder %s", absolute);
    closedir(dir);
    return result;
}

/* Tells the cache what was read, but not files changed within the last second,
 * whose mtime could still hide a change. */
static int remember_hashes(const ft_hash_cache *cache, const walk *w, const size_t *miss_files,
                           const ft_hash *hashes, size_t n_misses, int64_t started_ns)
{
    ft_hashed_file *files = ft_xcalloc(n_misses, sizeof *files);
    size_t n_files = 0;
    for (size_t k = 0; k < n_misses; k++) {
        const pending_file *file = &w->files[miss_files[k]];
        if (file->stat.mtime_ns <= started_ns - recent_change_ns(file->stat.mtime_ns))
            files[n_files++] = (ft_hashed_file){file->path, file->stat, hashes[k]};
    }
    int result = n_files > 0 ? cache->store(cache->context, files, n_files) : 0;
    free(files);
    return result;
}

/* File hashes: from the stat cache where it knows them, the rest read on the pool. */
static int hash_files(const ft_hash_cache *cache, walk *w, int threads)
{
    ft_manifest_entry *entries = w->manifest->entries;
    const char **miss_paths = ft_xcalloc(w->n_files + 1, sizeof *miss_paths);
    size_t *miss_files = ft_xcalloc(w->n_files + 1, sizeof *miss_files);
    size_t n_misses = 0;
    int result = 0;
    for (size_t i = 0; i < w->n_files && result == 0; i++) {
        pending_file *file = &w->files[i];
        int found = cache ? cache->lookup(cache->context, file->path, &file->stat, &entries[file->entry].hash) : 0;
        if (found < 0) {
            result = -1;
        } else if (found == 0) {
            miss_paths[n_misses] = file->path;
            miss_files[n_misses++] = i;
        }
    }
    int64_t started_ns = ft_wall_ms() * 1000000; /* mtimes are wall-clock times */
    ft_hash *hashes = ft_xcalloc(n_misses + 1, sizeof *hashes);
    if (result == 0 && n_misses > 0)
        result = ft_hash_files(miss_paths, n_misses, threads, hashes);
    for (size_t k = 0; k < n_misses && result == 0; k++)
        entries[w->files[miss_files[k]].entry].hash = hashes[k];
    if (result == 0 && cache && n_misses > 0)
        result = remember_hashes(cache, w, miss_files, hashes, n_misses, started_ns);
    free(hashes);
    free(miss_paths);
    free(miss_files);
    return result;
}

int ft_manifest_build(const ft_hash_cache *cache, const char *path, int threads, ft_manifest **out)
{
    walk w = {.manifest = ft_xcalloc(1, sizeof(ft_manifest))};
    char *absolute = ft_path_absolute(path);
    int result = add_path(&w, AT_FDCWD, absolute, absolute, "");
    if (result == 0)
        result = hash_files(cache, &w, threads);
    for (size_t i = 0; i < w.n_files; i++)
        free(w.files[i].path);
    free(w.files);
    free(absolute);
    if (result != 0) {
        ft_manifest_free(w.manifest);
        return -1;
    }
    ft_manifest_finish(w.manifest);
    *out = w.manifest;
    return 0;
}

/* --- canonical text --- */

static int compare_entries(const void *a, const void *b)
{
    return strcmp(((const ft_manifest_entry *)a)->path, ((const ft_manifest_entry *)b)->path);
}

void ft_manifest_finish(ft_manifest *manifest)
{
    if (manifest->n_entries > 1)
        qsort(manifest->entries, manifest->n_entries, sizeof *manifest->entries, compare_entries);
    manifest->total_bytes = 0;
    for (size_t i = 0; i < manifest->n_entries; i++)
        if (manifest->entries[i].type == FT_ENTRY_FILE)
            manifest->total_bytes += manifest->entries[i].size_bytes;
    char *text = ft_manifest_serialize(manifest);
    manifest->hash = ft_hash_bytes(text, strlen(text));
    free(text);
}

/* Spaces, control bytes and backslashes become \xHH, so fields split on spaces
 * and lines on newlines whatever a name holds. */
static void put_escaped(ft_strbuf *out, const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p <= ' ' || *p == 0x7f || *p == '\\')
            ft_strbuf_printf(out, "\\x%02x", *p);
        else
            ft_strbuf_putc(out, (char)*p);
    }
}

char *ft_manifest_serialize(const ft_manifest *manifest)
{
    ft_strbuf out;
    ft_strbuf_init(&out);
    ft_strbuf_puts(&out, MANIFEST_HEADER);
    for (size_t i = 0; i < manifest->n_entries; i++) {
        const ft_manifest_entry *entry = &manifest->entries[i];
        const char *mode = entry->type == FT_ENTRY_SYMLINK ? "777"
                           : entry->type == FT_ENTRY_DIR || entry->executable ? "755" : "644";
        /* A folder has no content of its own; a link's is its target text. */
        const char *link = entry->link_target ? entry->link_target : "";
        uint64_t size = entry->type == FT_ENTRY_FILE ? entry->size_bytes
                        : entry->type == FT_ENTRY_SYMLINK ? strlen(link) : 0;
        ft_hash hash = entry->type == FT_ENTRY_FILE ? entry->hash
                       : entry->type == FT_ENTRY_SYMLINK ? ft_hash_bytes(link, strlen(link)) : (ft_hash){0, 0};
        char hex[FT_HASH_HEX_LENGTH + 1];
        ft_hash_to_hex(hash, hex);
        /* No printf: a no-op serializes a manifest for every source input. */
        char digits[24];
        size_t n_digits = 0;
        do {
            digits[sizeof digits - 1 - n_digits++] = (char)('0' + size % 10);
            size /= 10;
        } while (size);
        ft_strbuf_puts(&out, type_words[entry->type]);
        ft_strbuf_putc(&out, ' ');
        ft_strbuf_puts(&out, mode);
        ft_strbuf_putc(&out, ' ');
        ft_strbuf_add(&out, digits + sizeof digits - n_digits, n_digits);
        ft_strbuf_putc(&out, ' ');
        ft_strbuf_add(&out, hex, FT_HASH_HEX_LENGTH);
        ft_strbuf_putc(&out, ' ');
        if (entry->path[0])
            put_escaped(&out, entry->path);
        else
            ft_strbuf_putc(&out, '.');
        if (entry->type == FT_ENTRY_SYMLINK) {
            ft_strbuf_puts(&out, " -> ");
            put_escaped(&out, link);
        }
        ft_strbuf_putc(&out, '\n');
    }
    return ft_strbuf_take(&out);
}

/* --- parsing --- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

typedef struct {
    const char *origin;
    size_t line;
} parse_place;

static int parse_error(const parse_place *place, const char *what)
{
    return ft_error("%s:%zu: %s", place->origin, place->line, what);
}

static int unescape(const parse_place *place, const char *start, size_t length, char **out)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    for (size_t i = 0; i < length; i++) {
        if (start[i] != '\\') {
            ft_strbuf_putc(&text, start[i]);
            continue;
        }
        int high = i + 3 < length && start[i + 1] == 'x' ? hex_value(start[i + 2]) : -1;
        int low = high >= 0 ? hex_value(start[i + 3]) : -1;
        if (low < 0 || (high == 0 && low == 0)) {
            ft_strbuf_free(&text);
            return parse_error(place, "a backslash in a name must start \\xHH (two hex digits, not 00)");
        }
        ft_strbuf_putc(&text, (char)(high * 16 + low));
        i += 3;
    }
    *out = ft_strbuf_take(&text);
    return 0;
}

static bool parse_size(const char *word, size_t length, uint64_t *out)
{
    if (length == 0 || length > 20 || (word[0] == '0' && length > 1))
        return false;
    uint64_t value = 0;
    for (size_t i = 0; i < length; i++) {
        if (word[i] < '0' || word[i] > '9' || value > (UINT64_MAX - (uint64_t)(word[i] - '0')) / 10)
            return false;
        value = value * 10 + (uint64_t)(word[i] - '0');
    }
    *out = value;
    return true;
}

/* A relative path of real names: no empty, "." or ".." component. */
static bool is_safe_path(const char *path)
{
    const char *p = path;
    for (;;) {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (!end)
            return true;
        p = end + 1;
    }
}

/* Splits a line into at most 8 space-separated words. */
static size_t split_words(const char *line, size_t length, const char **words, size_t *lengths)
{
    size_t n = 0;
    const char *p = line, *end = line + length;
    while (n < 8) {
        const char *space = memchr(p, ' ', (size_t)(end - p));
        words[n] = p;
        lengths[n] = space ? (size_t)(space - p) : (size_t)(end - p);
        n++;
        if (!space)
            break;
        p = space + 1;
    }
    return n;
}

static bool word_is(const char *word, size_t length, const char *expected)
{
    return strlen(expected) == length && memcmp(word, expected, length) == 0;
}

static int parse_entry(const parse_place *place, const char *line, size_t length, ft_manifest_entry *entry)
{
    const char *words[8];
    size_t lengths[8];
    size_t n = split_words(line, length, words, lengths);
    if (n != 5 && n != 7)
        return parse_error(place, "expected \"TYPE MODE SIZE HASH PATH\" or a link's \"... PATH -> TARGET\"");
    if (word_is(words[0], lengths[0], "file"))
        entry->type = FT_ENTRY_FILE;
    else if (word_is(words[0], lengths[0], "dir"))
        entry->type = FT_ENTRY_DIR;
    else if (word_is(words[0], lengths[0], "link"))
        entry->type = FT_ENTRY_SYMLINK;
    else
        return parse_error(place, "the type must be file, dir or link");
    if ((entry->type == FT_ENTRY_SYMLINK) != (n == 7) || (n == 7 && !word_is(words[5], lengths[5], "->")))
        return parse_error(place, "a link, and only a link, ends \"PATH -> TARGET\"");
    entry->executable = entry->type == FT_ENTRY_FILE && word_is(words[1], lengths[1], "755");
    if (!word_is(words[1], lengths[1], "755") && !word_is(words[1], lengths[1], "644") &&
        !word_is(words[1], lengths[1], "777"))
        return parse_error(place, "the mode must be 644 or 755 for a file, 755 for a folder, 777 for a link");
    if (!parse_size(words[2], lengths[2], &entry->size_bytes))
        return parse_error(place, "the size must be a decimal number of bytes");
    char hex[FT_HASH_HEX_LENGTH + 1];
    snprintf(hex, sizeof hex, "%.*s", (int)lengths[3], words[3]);
    if (lengths[3] != FT_HASH_HEX_LENGTH || ft_hash_from_hex(hex, &entry->hash) != 0)
        return parse_error(place, "the hash must be 32 hex digits");
    if (word_is(words[4], lengths[4], "."))
        entry->path = ft_xstrdup("");
    else if (unescape(place, words[4], lengths[4], &entry->path) != 0)
        return -1;
    if (entry->path[0] && (entry->path[0] == '/' || !is_safe_path(entry->path)))
        return parse_error(place, "a path must be relative, without empty, \".\" or \"..\" parts");
    if (n == 7 && unescape(place, words[6], lengths[6], &entry->link_target) != 0)
        return -1;
    return 0;
}

/* Every entry's folder is itself an entry; a root entry stands alone. */
static int check_structure(const ft_manifest *m, const char *origin)
{
    for (size_t i = 0; i < m->n_entries; i++) {
        const ft_manifest_entry *entry = &m->entries[i];
        if (entry->path[0] == '\0' && (m->n_entries != 1 || entry->type == FT_ENTRY_DIR))
            return ft_error("%s: the entry \".\" (a file or link output) must be the only entry", origin);
        if (i > 0 && strcmp(m->entries[i - 1].path, entry->path) == 0)
            return ft_error("%s: the path %s appears twice", origin, entry->path);
        const char *slash = strrchr(entry->path, '/');
        if (!slash)
            continue;
        ft_manifest_entry key = {.path = ft_xstrndup(entry->path, (size_t)(slash - entry->path))};
        const ft_manifest_entry *parent = bsearch(&key, m->entries, m->n_entries, sizeof key, compare_entries);
        free(key.path);
        if (!parent || parent->type != FT_ENTRY_DIR)
            return ft_error("%s: %s is listed but its folder is not", origin, entry->path);
    }
    return 0;
}

int ft_manifest_parse(const char *text, const char *origin, ft_manifest **out)
{
    parse_place place = {.origin = origin, .line = 1};
    size_t header_length = strlen(MANIFEST_HEADER);
    if (strncmp(text, MANIFEST_HEADER, header_length) != 0)
        return parse_error(&place, "not an ftpipe manifest: expected \"ftpipe manifest 1\"");
    ft_manifest *m = ft_xcalloc(1, sizeof *m);
    size_t capacity = 0;
    int result = 0;
    for (const char *p = text + header_length; *p && result == 0;) {
        place.line++;
        const char *newline = strchr(p, '\n');
        if (!newline) {
            result = parse_error(&place, "the last line does not end with a newline");
            break;
        }
        ft_grow((void **)&m->entries, &capacity, m->n_entries + 1, sizeof *m->entries);
        ft_manifest_entry *entry = &m->entries[m->n_entries++];
        memset(entry, 0, sizeof *entry);
        result = parse_entry(&place, p, (size_t)(newline - p), entry);
        p = newline + 1;
    }
    if (result == 0) {
        ft_manifest_finish(m);
        result = check_structure(m, origin);
    }
    if (result == 0) {
        /* Only the canonical spelling is accepted, so a manifest's hash is that of its text. */
        char *canonical = ft_manifest_serialize(m);
        if (strcmp(canonical, text) != 0)
            result = ft_error("%s: not in canonical form (entries out of order, or a field written "
                              "differently than ftpipe writes it)", origin);
        free(canonical);
    }
    if (result != 0) {
        ft_manifest_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

void ft_manifest_free(ft_manifest *manifest)
{
    if (!manifest)
        return;
    for (size_t i = 0; i < manifest->n_entries; i++) {
        free(manifest->entries[i].path);
        free(manifest->entries[i].link_target);
    }
    free(manifest->entries);
    free(manifest);
}
