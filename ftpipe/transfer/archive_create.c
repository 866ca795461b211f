/* archive_create: tar archives of a flat folder, under one top folder, with libarchive. */
#include "ftpipe/transfer/archive_create.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The folder's entry names, sorted. */
static int list_files(const char *dir, char ***names, size_t *count)
{
    DIR *d = opendir(dir);
    if (!d)
        return ft_error_errno("cannot read folder %s", dir);
    size_t n = 0, capacity = 8;
    char **list = ft_xmalloc(capacity * sizeof *list);
    struct dirent *entry;
    while ((entry = readdir(d))) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        if (n == capacity)
            list = ft_xrealloc(list, (capacity *= 2) * sizeof *list);
        list[n++] = ft_xstrdup(entry->d_name);
    }
    closedir(d);
    qsort(list, n, sizeof *list, compare_names);
    *names = list;
    *count = n;
    return 0;
}

/* The top folder's own entry, so that tar and libarchive give it a plain mode. */
static int add_top(struct archive *archive, const char *top, const char *archive_path)
{
    struct archive_entry *entry = archive_entry_new();
    char *name = ft_xasprintf("%s/", top);
    archive_entry_set_pathname(entry, name);
    archive_entry_set_filetype(entry, AE_IFDIR);
    archive_entry_set_perm(entry, 0755);
    archive_entry_set_mtime(entry, 0, 0);
    int status = archive_write_header(archive, entry) == ARCHIVE_OK
                     ? 0
                     : ft_error("cannot write archive %s: %s", archive_path, archive_error_string(archive));
    free(name);
    archive_entry_free(entry);
    return status;
}

static int add_file(struct archive *archive, const char *dir, const char *top, const char *name)
{
    char *path = ft_path_join(dir, name);
    struct stat st;
    int status = 0, fd = -1;
    if (stat(path, &st) < 0)
        status = ft_error_errno("cannot read %s", path);
    else if (!S_ISREG(st.st_mode))
        status = ft_error("%s is not a regular file; only a folder of files is archived", path);
    else if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        status = ft_error_errno("cannot open %s", path);
    struct archive_entry *entry = archive_entry_new();
    if (status == 0) {
        char *entry_name = ft_xasprintf("%s/%s", top, name);
        archive_entry_set_pathname(entry, entry_name);
        free(entry_name);
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_perm(entry, 0644);
        archive_entry_set_size(entry, st.st_size);
        archive_entry_set_mtime(entry, 0, 0);
        if (archive_write_header(archive, entry) != ARCHIVE_OK)
            status = ft_error("archiving %s: %s", path, archive_error_string(archive));
    }
    char *buffer = ft_xmalloc(1 << 16);
    ssize_t got;
    while (status == 0 && (got = read(fd, buffer, 1 << 16)) != 0) {
        if (got < 0)
            status = ft_error_errno("cannot read %s", path);
        else if (archive_write_data(archive, buffer, (size_t)got) != got)
            status = ft_error("archiving %s: %s", path, archive_error_string(archive));
    }
    free(buffer);
    archive_entry_free(entry);
    if (fd >= 0)
        close(fd);
    free(path);
    return status;
}

int ft_archive_create(const char *dir, const char *top, const char *archive_path, ft_archive_format format)
{
    char **names = NULL;
    size_t count = 0;
    if (list_files(dir, &names, &count) < 0)
        return -1;
    char temporary[4096];
    snprintf(temporary, sizeof temporary, "%s.tmp.%d", archive_path, (int)getpid());
    struct archive *archive = archive_write_new();
    int status = 0;
    if (archive_write_set_format_pax_restricted(archive) != ARCHIVE_OK ||
        (format == FT_ARCHIVE_TAR_ZSTD ? archive_write_add_filter_zstd(archive)
                                       : archive_write_add_filter_gzip(archive)) != ARCHIVE_OK ||
        (format == FT_ARCHIVE_TAR_GZIP && archive_write_set_filter_option(archive, "gzip", "timestamp", NULL) != ARCHIVE_OK) ||
        archive_write_open_filename(archive, temporary) != ARCHIVE_OK)
        status = ft_error("cannot write archive %s: %s", archive_path, archive_error_string(archive));
    if (status == 0)
        status = add_top(archive, top, archive_path);
    for (size_t i = 0; i < count && status == 0; i++)
        status = add_file(archive, dir, top, names[i]);
    if (archive_write_close(archive) != ARCHIVE_OK && status == 0)
        status = ft_error("cannot write archive %s: %s", archive_path, archive_error_string(archive));
    archive_write_free(archive);
    if (status == 0 && rename(temporary, archive_path) < 0)
        status = ft_error_errno("cannot rename %s to %s", temporary, archive_path);
    if (status < 0)
        unlink(temporary);
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
    return status;
}
