/* fetch_part: a partial download and its record of written byte ranges. */
#include "ftpipe/transfer/fetch_part.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

#define PROGRESS_MAGIC "ftpipe-fetch-progress 1"

void ft_range_set_add(ft_range_set *set, uint64_t start, uint64_t end)
{
    if (start >= end)
        return;
    /* Find the first range that ends at or after start; merge every range that touches. */
    size_t first = 0;
    while (first < set->count && set->items[first].end < start)
        first++;
    size_t last = first;
    while (last < set->count && set->items[last].start <= end) {
        if (set->items[last].start < start)
            start = set->items[last].start;
        if (set->items[last].end > end)
            end = set->items[last].end;
        last++;
    }
    if (last == first) {
        ft_grow((void **)&set->items, &set->capacity, set->count + 1, sizeof *set->items);
        memmove(set->items + first + 1, set->items + first, (set->count - first) * sizeof *set->items);
        set->count++;
    } else if (last > first + 1) {
        memmove(set->items + first + 1, set->items + last, (set->count - last) * sizeof *set->items);
        set->count -= last - first - 1;
    }
    set->items[first] = (ft_byte_range){start, end};
}

uint64_t ft_range_set_bytes(const ft_range_set *set)
{
    uint64_t bytes = 0;
    for (size_t i = 0; i < set->count; i++)
        bytes += set->items[i].end - set->items[i].start;
    return bytes;
}

void ft_range_set_missing(const ft_range_set *set, uint64_t size, ft_range_set *missing)
{
    uint64_t cursor = 0;
    for (size_t i = 0; i < set->count && cursor < size; i++) {
        if (set->items[i].start > cursor)
            ft_range_set_add(missing, cursor, set->items[i].start < size ? set->items[i].start : size);
        cursor = set->items[i].end;
    }
    if (cursor < size)
        ft_range_set_add(missing, cursor, size);
}

void ft_range_set_free(ft_range_set *set)
{
    free(set->items);
    *set = (ft_range_set){0};
}

uint64_t ft_part_allocated_bytes(const char *destination)
{
    char *part_path = ft_xasprintf("%s.part", destination);
    struct stat st;
    uint64_t bytes = stat(part_path, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
    free(part_path);
    return bytes;
}

static bool same_text(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* Reads the ranges an earlier run recorded, if they belong to the same download. */
static void load_progress(ft_part_file *part)
{
    char *text = NULL;
    if (ft_read_file(part->progress_path, &text, NULL) != 0) {
        ft_error_clear();
        return;
    }
    bool same = false, header = false;
    ft_range_set done = {0};
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        uint64_t start, end;
        if (strcmp(line, PROGRESS_MAGIC) == 0)
            header = true;
        else if (strncmp(line, "url ", 4) == 0)
            same = header && strcmp(line + 4, part->url) == 0;
        else if (strncmp(line, "size ", 5) == 0)
            same = same && strtoll(line + 5, NULL, 10) == part->size_bytes;
        else if (strncmp(line, "validator ", 10) == 0)
            same = same && same_text(line + 10, part->validator);
        else if (sscanf(line, "done %" SCNu64 " %" SCNu64, &start, &end) == 2 && end <= (uint64_t)part->size_bytes)
            ft_range_set_add(&done, start, end);
        else
            same = false;
    }
    free(text);
    if (same) {
        ft_range_set_free(&part->done);
        part->done = done;
    } else {
        ft_range_set_free(&done);
    }
}

int ft_part_open(ft_part_file *part, const char *destination, const char *url, int64_t size_bytes,
                 const char *validator, bool resumable)
{
    *part = (ft_part_file){
        .part_path = ft_xasprintf("%s.part", destination),
        .progress_path = ft_xasprintf("%s.part.progress", destination),
        .url = ft_xstrdup(url),
        .size_bytes = size_bytes,
        .validator = validator ? ft_xstrdup(validator) : NULL,
        .resumable = resumable && size_bytes >= 0,
        .fd = -1,
    };
    if (part->resumable)
        load_progress(part);
    if (part->done.count == 0)
        unlink(part->progress_path);
    int flags = O_RDWR | O_CREAT | O_CLOEXEC | (part->done.count == 0 ? O_TRUNC : 0);
    part->fd = open(part->part_path, flags, 0644);
    if (part->fd < 0)
        return ft_error_errno("cannot create %s", part->part_path);
    if (size_bytes > 0 && fallocate(part->fd, 0, 0, size_bytes) != 0) {
        if (errno == ENOSPC) {
            char size_text[16];
            ft_format_bytes((uint64_t)size_bytes, size_text, sizeof size_text);
            return ft_error("no space left for %s (%s): free some space and run again", part->part_path,
                            size_text);
        }
        /* File systems without fallocate still take a plain size. */
        if (ftruncate(part->fd, size_bytes) != 0)
            return ft_error_errno("cannot size %s", part->part_path);
    }
    return 0;
}

int ft_part_write(ft_part_file *part, const void *bytes, size_t length, uint64_t offset)
{
    const char *p = bytes;
    while (length > 0) {
        ssize_t n = pwrite(part->fd, p, length, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ft_error_errno("cannot write %s", part->part_path);
        p += n;
        offset += (uint64_t)n;
        length -= (size_t)n;
    }
    return 0;
}

int ft_part_save(ft_part_file *part, const ft_range_set *in_flight)
{
    if (!part->resumable)
        return 0;
    if (fdatasync(part->fd) != 0)
        return ft_error_errno("cannot sync %s", part->part_path);
    for (size_t i = 0; in_flight && i < in_flight->count; i++)
        ft_range_set_add(&part->done, in_flight->items[i].start, in_flight->items[i].end);
    ft_strbuf text;
    ft_strbuf_init(&text);
    ft_strbuf_printf(&text, PROGRESS_MAGIC "\nurl %s\nsize %" PRId64 "\nvalidator %s\n", part->url,
                     part->size_bytes, part->validator ? part->validator : "");
    for (size_t i = 0; i < part->done.count; i++)
        ft_strbuf_printf(&text, "done %" PRIu64 " %" PRIu64 "\n", part->done.items[i].start,
                         part->done.items[i].end);
    int result = ft_write_file_atomic(part->progress_path, text.data, text.length);
    ft_strbuf_free(&text);
    return result;
}

int ft_part_restart(ft_part_file *part)
{
    ft_range_set_free(&part->done);
    unlink(part->progress_path);
    if (ftruncate(part->fd, 0) != 0 ||
        (part->size_bytes > 0 && ftruncate(part->fd, part->size_bytes) != 0))
        return ft_error_errno("cannot truncate %s", part->part_path);
    return 0;
}

int ft_part_finish(ft_part_file *part)
{
    if (part->fd < 0)
        return 0;
    int result = 0;
    if (fsync(part->fd) != 0)
        result = ft_error_errno("cannot sync %s", part->part_path);
    if (close(part->fd) != 0 && result == 0)
        result = ft_error_errno("cannot write %s", part->part_path);
    part->fd = -1;
    return result;
}

int ft_part_publish(ft_part_file *part, const char *destination)
{
    if (ft_part_finish(part) != 0)
        return -1;
    if (rename(part->part_path, destination) != 0)
        return ft_error_errno("cannot rename %s to %s", part->part_path, destination);
    unlink(part->progress_path);
    return 0;
}

void ft_part_discard(ft_part_file *part)
{
    if (part->fd >= 0)
        close(part->fd);
    part->fd = -1;
    unlink(part->part_path);
    unlink(part->progress_path);
}

void ft_part_close(ft_part_file *part)
{
    if (part->fd >= 0)
        close(part->fd);
    free(part->part_path);
    free(part->progress_path);
    free(part->url);
    free(part->validator);
    ft_range_set_free(&part->done);
    *part = (ft_part_file){.fd = -1};
}
