/* archive_extract: safe unpacking of tar and zip archives with libarchive. */
#include "ftpipe/transfer/archive_extract.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

/* Link chains longer than this are refused as loops (Linux gives up at 40). */
#define MAX_LINK_EXPANSIONS 40

typedef struct {
    char *path;   /* normalized, relative to the destination */
    char *target; /* as written in the archive */
    char *entry;  /* the entry's name in the archive, for messages */
} pending_link;

typedef struct {
    const char *archive_path;
    const char *destination;
    const ft_extract_options *options;
    ft_extract_summary *summary;
    uint64_t archive_bytes;
    uint64_t declared_bytes;
    uint64_t written_bytes;
    pending_link *links;
    size_t n_links, links_capacity;
} extraction;

static int refuse(const extraction *ex, const char *entry, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(const extraction *ex, const char *entry, const char *fmt, ...)
{
    ft_strbuf reason;
    ft_strbuf_init(&reason);
    va_list args;
    va_start(args, fmt);
    ft_strbuf_vprintf(&reason, fmt, args);
    va_end(args);
    ft_error("cannot extract %s: entry \"%s\" %s", ex->archive_path, entry, reason.data);
    ft_strbuf_free(&reason);
    return -1;
}

/* The entry's path without "." parts, repeated slashes and the first
 * strip_components parts. 0 with *out (NULL when nothing is left), or -1
 * (refused) for an absolute path or a ".." part. */
static int normalize_path(const extraction *ex, const char *raw, const char *entry, char **out)
{
    *out = NULL;
    if (raw[0] == '/')
        return refuse(ex, entry, "has an absolute path");
    ft_strbuf path;
    ft_strbuf_init(&path);
    int to_strip = ex->options->strip_components;
    const char *p = raw;
    while (*p) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            ft_strbuf_free(&path);
            return refuse(ex, entry, "has a \"..\" component, which would reach outside the destination");
        }
        bool skip = n == 0 || (n == 1 && p[0] == '.');
        if (!skip && to_strip > 0) {
            to_strip--;
        } else if (!skip) {
            if (path.length)
                ft_strbuf_putc(&path, '/');
            ft_strbuf_add(&path, p, n);
        }
        p += n + (p[n] == '/');
    }
    if (path.length)
        *out = ft_strbuf_take(&path);
    else
        ft_strbuf_free(&path);
    return 0;
}

/* -1 with the error set when the caller's progress callback asks to stop. */
static int report_progress(const extraction *ex, struct archive *archive)
{
    if (!ex->options->progress)
        return 0;
    uint64_t read_bytes = (uint64_t)archive_filter_bytes(archive, -1);
    if (ex->options->progress(ex->options->progress_context, read_bytes, ex->archive_bytes))
        return ft_error("the extraction of %s was stopped", ex->archive_path);
    return 0;
}

static void forget_link(extraction *ex, const char *path)
{
    for (size_t i = 0; i < ex->n_links; i++) {
        if (strcmp(ex->links[i].path, path) != 0)
            continue;
        free(ex->links[i].path);
        free(ex->links[i].target);
        free(ex->links[i].entry);
        ex->links[i] = ex->links[--ex->n_links];
        return;
    }
}

static const pending_link *find_link(const extraction *ex, const char *path)
{
    for (size_t i = 0; i < ex->n_links; i++)
        if (strcmp(ex->links[i].path, path) == 0)
            return &ex->links[i];
    return NULL;
}

/* --- where a symbolic link leads, through the archive's other links --- */

typedef struct {
    char **parts;
    size_t n_parts, capacity;
} path_stack;

static char *stack_path(const path_stack *stack)
{
    ft_strbuf path;
    ft_strbuf_init(&path);
    for (size_t i = 0; i < stack->n_parts; i++) {
        if (i)
            ft_strbuf_putc(&path, '/');
        ft_strbuf_puts(&path, stack->parts[i]);
    }
    return ft_strbuf_take(&path);
}

typedef enum { LEADS_INSIDE, LEADS_OUTSIDE, LEADS_IN_A_LOOP } link_verdict;

/* Walks target from the folder in stack (the parts below the destination), as
 * the kernel would once every link exists: a part naming another link of the
 * archive continues from that link's target. Folders and files on disk hold no
 * links yet, so only the archive's links can redirect the walk. */
static link_verdict walk_target(const extraction *ex, path_stack *stack, const char *target, int *expansions)
{
    if (target[0] == '/')
        return LEADS_OUTSIDE;
    link_verdict verdict = LEADS_INSIDE;
    const char *p = target;
    while (*p && verdict == LEADS_INSIDE) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (stack->n_parts == 0)
                return LEADS_OUTSIDE;
            free(stack->parts[--stack->n_parts]);
        } else if (n > 0 && !(n == 1 && p[0] == '.')) {
            ft_grow((void **)&stack->parts, &stack->capacity, stack->n_parts + 1, sizeof *stack->parts);
            stack->parts[stack->n_parts++] = ft_xstrndup(p, n);
            char *here = stack_path(stack);
            const pending_link *link = find_link(ex, here);
            free(here);
            if (link) {
                if (++*expansions > MAX_LINK_EXPANSIONS)
                    return LEADS_IN_A_LOOP;
                free(stack->parts[--stack->n_parts]);
                verdict = walk_target(ex, stack, link->target, expansions);
            }
        }
        p += n + (p[n] == '/');
    }
    return verdict;
}

/* The link itself may sit below another link of the archive ("d" -> "sub",
 * then "d/x"): its folder is walked the same way before its target. */
static link_verdict link_verdict_of(const extraction *ex, const pending_link *link)
{
    path_stack stack = {0};
    int expansions = 0;
    char *folder = ft_xstrdup(link->path);
    char *slash = strrchr(folder, '/');
    link_verdict verdict = LEADS_INSIDE;
    if (slash) {
        *slash = '\0';
        verdict = walk_target(ex, &stack, folder, &expansions);
    }
    if (verdict == LEADS_INSIDE)
        verdict = walk_target(ex, &stack, link->target, &expansions);
    for (size_t i = 0; i < stack.n_parts; i++)
        free(stack.parts[i]);
    free(stack.parts);
    free(folder);
    return verdict;
}

static int create_links(extraction *ex)
{
    for (size_t i = 0; i < ex->n_links; i++) {
        const pending_link *link = &ex->links[i];
        link_verdict verdict = link_verdict_of(ex, link);
        if (verdict == LEADS_OUTSIDE)
            return refuse(ex, link->entry, "is a symbolic link to \"%s\", which points outside the destination",
                          link->target);
        if (verdict == LEADS_IN_A_LOOP)
            return refuse(ex, link->entry, "is a symbolic link to \"%s\", part of a loop of links", link->target);
    }
    for (size_t i = 0; i < ex->n_links; i++) {
        const pending_link *link = &ex->links[i];
        char *path = ft_path_join(ex->destination, link->path);
        char *parent = ft_path_dirname(path);
        int result = ft_mkdir_p(parent);
        if (result == 0 && symlink(link->target, path) != 0)
            result = errno == EEXIST ? refuse(ex, link->entry, "is a symbolic link where the archive also has a "
                                                               "file or folder of that name")
                                     : ft_error_errno("cannot create the symbolic link %s", path);
        free(parent);
        free(path);
        if (result != 0)
            return -1;
        ex->summary->n_links++;
    }
    return 0;
}

/* --- files, folders and hard links --- */

static int prepare_parent(const char *path)
{
    char *parent = ft_path_dirname(path);
    int result = ft_mkdir_p(parent);
    free(parent);
    return result;
}

static int write_file(extraction *ex, struct archive *archive, struct archive_entry *entry, const char *name,
                      const char *path)
{
    if (archive_entry_size_is_set(entry)) {
        uint64_t declared = (uint64_t)archive_entry_size(entry);
        ex->declared_bytes += declared;
        if (ex->declared_bytes > ex->options->max_total_bytes) {
            char size[32], limit[32];
            ft_format_bytes(declared, size, sizeof size);
            ft_format_bytes(ex->options->max_total_bytes, limit, sizeof limit);
            return refuse(ex, name, "declares %s, which takes the archive past the size limit of %s", size, limit);
        }
    }
    if (prepare_parent(path) != 0)
        return -1;
    if (unlink(path) != 0 && errno != ENOENT)
        return ft_error_errno("cannot replace %s", path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return ft_error_errno("cannot create %s", path);
    int result = 0;
    const void *block;
    size_t length;
    la_int64_t offset;
    uint64_t end = 0;
    for (;;) {
        int status = archive_read_data_block(archive, &block, &length, &offset);
        if (status == ARCHIVE_EOF)
            break;
        if (status < ARCHIVE_WARN) {
            result = ft_error("cannot extract %s: entry \"%s\": %s", ex->archive_path, name,
                              archive_error_string(archive));
            break;
        }
        ex->written_bytes += length;
        if (ex->written_bytes > ex->options->max_total_bytes) {
            char limit[32];
            ft_format_bytes(ex->options->max_total_bytes, limit, sizeof limit);
            result = refuse(ex, name, "unpacks past the size limit of %s", limit);
            break;
        }
        for (size_t done = 0; done < length;) {
            ssize_t n = pwrite(fd, (const char *)block + done, length - done, (off_t)((uint64_t)offset + done));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                result = ft_error_errno("cannot write %s", path);
                break;
            }
            done += (size_t)n;
        }
        if (result != 0)
            break;
        if ((uint64_t)offset + length > end)
            end = (uint64_t)offset + length;
        result = report_progress(ex, archive);
        if (result != 0)
            break;
    }
    /* A sparse file may end in a hole that no data block reaches. */
    if (result == 0 && archive_entry_size_is_set(entry) && (uint64_t)archive_entry_size(entry) > end &&
        ftruncate(fd, (off_t)archive_entry_size(entry)) != 0)
        result = ft_error_errno("cannot size %s", path);
    if (result == 0 && fchmod(fd, (archive_entry_perm(entry) & 0777) | 0600) != 0)
        result = ft_error_errno("cannot set the mode of %s", path);
    if (close(fd) != 0 && result == 0)
        result = ft_error_errno("cannot write %s", path);
    if (result == 0) {
        uint64_t declared = (uint64_t)archive_entry_size(entry);
        ex->summary->n_files++;
        ex->summary->total_bytes += end > declared ? end : declared;
    }
    return result;
}

static int write_hard_link(extraction *ex, const char *raw_target, const char *name, const char *path)
{
    char *target = NULL;
    if (raw_target[0] == '/')
        return refuse(ex, name, "is a hard link to \"%s\", an absolute path outside the destination", raw_target);
    if (normalize_path(ex, raw_target, name, &target) != 0) {
        ft_error_clear();
        return refuse(ex, name, "is a hard link to \"%s\", which is outside the destination", raw_target);
    }
    char *target_path = target ? ft_path_join(ex->destination, target) : NULL;
    struct stat st;
    int result = 0;
    if (!target || find_link(ex, target) || lstat(target_path, &st) != 0 || !S_ISREG(st.st_mode))
        result = refuse(ex, name, "is a hard link to \"%s\", which is not a file extracted before it", raw_target);
    if (result == 0)
        result = prepare_parent(path);
    if (result == 0 && unlink(path) != 0 && errno != ENOENT)
        result = ft_error_errno("cannot replace %s", path);
    if (result == 0 && link(target_path, path) != 0)
        result = ft_error_errno("cannot create the hard link %s", path);
    if (result == 0)
        ex->summary->n_links++;
    free(target);
    free(target_path);
    return result;
}

static int add_pending_link(extraction *ex, const char *relative, const char *target, const char *name)
{
    forget_link(ex, relative);
    ft_grow((void **)&ex->links, &ex->links_capacity, ex->n_links + 1, sizeof *ex->links);
    ex->links[ex->n_links++] = (pending_link){ft_xstrdup(relative), ft_xstrdup(target), ft_xstrdup(name)};
    return 0;
}

static const char *special_type_name(mode_t type)
{
    switch (type) {
    case AE_IFCHR: return "a character device";
    case AE_IFBLK: return "a block device";
    case AE_IFIFO: return "a fifo";
    case AE_IFSOCK: return "a socket";
    default: return "of an unknown type";
    }
}

static int extract_entry(extraction *ex, struct archive *archive, struct archive_entry *entry)
{
    const char *name = archive_entry_pathname(entry);
    if (!name)
        return ft_error("cannot extract %s: an entry has no readable name", ex->archive_path);
    char *relative = NULL;
    if (normalize_path(ex, name, name, &relative) != 0)
        return -1;
    if (!relative)
        return 0; /* the root itself, or wholly stripped */
    char *path = ft_path_join(ex->destination, relative);
    const char *hard_target = archive_entry_hardlink(entry);
    mode_t type = archive_entry_filetype(entry);
    int result;
    if (hard_target) {
        forget_link(ex, relative);
        result = write_hard_link(ex, hard_target, name, path);
    } else if (type == AE_IFLNK) {
        const char *target = archive_entry_symlink(entry);
        result = target ? add_pending_link(ex, relative, target, name)
                        : refuse(ex, name, "is a symbolic link with no readable target");
    } else if (type == AE_IFDIR) {
        forget_link(ex, relative);
        result = ft_mkdir_p(path);
        if (result == 0)
            ex->summary->n_dirs++;
    } else if (type == AE_IFREG) {
        forget_link(ex, relative);
        result = write_file(ex, archive, entry, name, path);
    } else {
        result = refuse(ex, name, "is %s; only files, folders and links are extracted", special_type_name(type));
    }
    free(relative);
    free(path);
    return result;
}

static int check_destination(const char *destination)
{
    if (ft_mkdir_p(destination) != 0)
        return -1;
    DIR *dir = opendir(destination);
    if (!dir)
        return ft_error_errno("cannot open %s", destination);
    struct dirent *item;
    int result = 0;
    while ((item = readdir(dir)) && result == 0)
        if (strcmp(item->d_name, ".") != 0 && strcmp(item->d_name, "..") != 0)
            result = ft_error("cannot extract into %s: the folder is not empty", destination);
    closedir(dir);
    return result;
}

int ft_archive_extract(const char *archive_path, const char *destination, const ft_extract_options *options,
                       ft_extract_summary *out)
{
    memset(out, 0, sizeof *out);
    if (check_destination(destination) != 0)
        return -1;
    struct archive *archive = archive_read_new();
    archive_read_support_filter_gzip(archive);
    archive_read_support_filter_bzip2(archive);
    archive_read_support_filter_xz(archive);
    archive_read_support_filter_lzma(archive);
    archive_read_support_filter_zstd(archive);
    archive_read_support_format_tar(archive);
    archive_read_support_format_zip(archive);
    extraction ex = {.archive_path = archive_path, .destination = destination, .options = options, .summary = out};
    struct stat st;
    if (stat(archive_path, &st) == 0)
        ex.archive_bytes = (uint64_t)st.st_size;
    int result = 0;
    if (archive_read_open_filename(archive, archive_path, 1 << 20) != ARCHIVE_OK)
        result = ft_error("cannot read %s: %s", archive_path, archive_error_string(archive));
    while (result == 0) {
        struct archive_entry *entry;
        int status = archive_read_next_header(archive, &entry);
        if (status == ARCHIVE_EOF)
            break;
        if (status < ARCHIVE_WARN)
            result = ft_error("cannot read %s: %s", archive_path, archive_error_string(archive));
        else
            result = extract_entry(&ex, archive, entry);
        if (result == 0)
            result = report_progress(&ex, archive);
    }
    if (result == 0)
        result = create_links(&ex);
    for (size_t i = 0; i < ex.n_links; i++) {
        free(ex.links[i].path);
        free(ex.links[i].target);
        free(ex.links[i].entry);
    }
    free(ex.links);
    archive_read_free(archive);
    return result;
}
