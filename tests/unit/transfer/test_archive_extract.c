/* Tests of archive_extract: round trips through every supported format, and
 * hostile archives (built here with libarchive's writer), each refused with the
 * entry named. */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/transfer/archive_extract.h"

static char *temporary_dir;

typedef enum { FORMAT_TAR, FORMAT_ZIP } test_format;
typedef enum { NO_FILTER, GZIP, ZSTD, XZ } test_filter;

typedef struct {
    mode_t type;           /* AE_IFREG, AE_IFDIR, AE_IFLNK, AE_IFCHR, AE_IFIFO; 0: hard link */
    const char *name;
    const char *content;   /* files: the bytes; links: the target */
    mode_t permissions;    /* 0: 0644 */
    size_t repeat_bytes;   /* files: instead of content, this many 'x' bytes */
    bool size_unknown;     /* files in zips: write with no size in the header */
} test_entry;

static char *write_archive(const char *name, test_format format, test_filter filter, const test_entry *entries,
                           size_t count)
{
    char *path = ft_path_join(temporary_dir, name);
    struct archive *archive = archive_write_new();
    if (format == FORMAT_ZIP)
        archive_write_set_format_zip(archive);
    else
        archive_write_set_format_pax_restricted(archive);
    if (filter == GZIP)
        archive_write_add_filter_gzip(archive);
    else if (filter == ZSTD)
        archive_write_add_filter_zstd(archive);
    else if (filter == XZ)
        archive_write_add_filter_xz(archive);
    CHECK_INT(archive_write_open_filename(archive, path), ARCHIVE_OK);
    for (size_t i = 0; i < count; i++) {
        const test_entry *e = &entries[i];
        struct archive_entry *entry = archive_entry_new();
        archive_entry_set_pathname(entry, e->name);
        archive_entry_set_perm(entry, e->permissions ? e->permissions : 0644);
        char *data = NULL;
        size_t length = 0;
        if (e->type == 0) {
            archive_entry_set_filetype(entry, AE_IFREG);
            archive_entry_set_hardlink(entry, e->content);
            archive_entry_set_size(entry, 0);
        } else if (e->type == AE_IFLNK) {
            archive_entry_set_filetype(entry, AE_IFLNK);
            archive_entry_set_symlink(entry, e->content);
        } else if (e->type == AE_IFREG) {
            archive_entry_set_filetype(entry, AE_IFREG);
            length = e->repeat_bytes ? e->repeat_bytes : strlen(e->content);
            data = ft_xmalloc(length + 1);
            if (e->repeat_bytes)
                memset(data, 'x', length);
            else
                memcpy(data, e->content, length);
            if (e->size_unknown)
                archive_entry_unset_size(entry);
            else
                archive_entry_set_size(entry, (la_int64_t)length);
        } else {
            archive_entry_set_filetype(entry, e->type);
            if (e->type == AE_IFCHR)
                archive_entry_set_rdev(entry, makedev(1, 3));
        }
        CHECK_INT(archive_write_header(archive, entry), ARCHIVE_OK);
        if (data)
            CHECK_INT(archive_write_data(archive, data, length), (la_ssize_t)length);
        free(data);
        archive_entry_free(entry);
    }
    CHECK_INT(archive_write_close(archive), ARCHIVE_OK);
    archive_write_free(archive);
    return path;
}

static char *fresh_dir(const char *name)
{
    char *path = ft_path_join(temporary_dir, name);
    CHECK_INT(ft_remove_tree(path), 0);
    return path;
}

static char *read_text(const char *dir, const char *name)
{
    char *path = ft_path_join(dir, name);
    char *text = NULL;
    size_t length = 0;
    if (ft_read_file(path, &text, &length) != 0)
        text = ft_xstrdup("(unreadable)");
    free(path);
    return text;
}

static const ft_extract_options default_options = {.max_total_bytes = 1 << 20};

/* Extracts and expects a refusal with exactly `message` (after the archive path). */
static void expect_refused(const char *archive_name, test_format format, const test_entry *entries, size_t count,
                           const char *message)
{
    char *archive = write_archive(archive_name, format, NO_FILTER, entries, count);
    char *destination = fresh_dir("refused");
    ft_extract_summary summary;
    CHECK_INT(ft_archive_extract(archive, destination, &default_options, &summary), -1);
    char *expected = ft_xasprintf("cannot extract %s: %s", archive, message);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(archive);
    free(destination);
}

/* --- round trips --- */

static const test_entry model_entries[] = {
    {AE_IFDIR, "model/", NULL, 0755, 0, false},
    {AE_IFREG, "model/config.json", "{\"layers\": 2}\n", 0644, 0, false},
    {AE_IFREG, "model/tools/run.sh", "#!/bin/sh\necho hi\n", 0755, 0, false},
    {AE_IFLNK, "model/latest", "tools/run.sh", 0777, 0, false},
    {AE_IFREG, "./model/blobs/abc", "weights", 0444, 0, false},
    {AE_IFLNK, "model/snapshots/v1/weights", "../../blobs/abc", 0777, 0, false},
};

static void check_round_trip(const char *name, test_format format, test_filter filter)
{
    char *archive = write_archive(name, format, filter, model_entries, sizeof model_entries / sizeof *model_entries);
    char *destination = fresh_dir("round-trip");
    ft_extract_summary summary;
    CHECK_INT(ft_archive_extract(archive, destination, &default_options, &summary), 0);
    CHECK_STR(ft_error_message(), "");
    CHECK_INT(summary.n_files, 3);
    CHECK_INT(summary.n_links, 2);
    CHECK_INT(summary.total_bytes, 14 + 18 + 7);
    char *text = read_text(destination, "model/config.json");
    CHECK_STR(text, "{\"layers\": 2}\n");
    free(text);
    text = read_text(destination, "model/snapshots/v1/weights");
    CHECK_STR(text, "weights");
    free(text);
    char *script = ft_path_join(destination, "model/tools/run.sh");
    struct stat st;
    CHECK_INT(stat(script, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0755);
    free(script);
    char *blob = ft_path_join(destination, "model/blobs/abc");
    CHECK_INT(stat(blob, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0644); /* the owner may always write: the cache makes outputs read-only */
    free(blob);
    char *latest = ft_path_join(destination, "model/latest");
    char target[64] = {0};
    CHECK_INT(readlink(latest, target, sizeof target - 1), 12);
    CHECK_STR(target, "tools/run.sh");
    free(latest);
    free(archive);
    free(destination);
}

TEST(round_trip_tar) { check_round_trip("good.tar", FORMAT_TAR, NO_FILTER); }
TEST(round_trip_tar_gz) { check_round_trip("good.tar.gz", FORMAT_TAR, GZIP); }
TEST(round_trip_tar_zst) { check_round_trip("good.tar.zst", FORMAT_TAR, ZSTD); }
TEST(round_trip_tar_xz) { check_round_trip("good.tar.xz", FORMAT_TAR, XZ); }
TEST(round_trip_zip) { check_round_trip("good.zip", FORMAT_ZIP, NO_FILTER); }

TEST(hard_link_inside_is_extracted)
{
    const test_entry entries[] = {
        {AE_IFREG, "a.bin", "same bytes", 0644, 0, false},
        {0, "sub/b.bin", "a.bin", 0644, 0, false},
    };
    char *archive = write_archive("hard.tar", FORMAT_TAR, NO_FILTER, entries, 2);
    char *destination = fresh_dir("hard");
    ft_extract_summary summary;
    CHECK_INT(ft_archive_extract(archive, destination, &default_options, &summary), 0);
    char *text = read_text(destination, "sub/b.bin");
    CHECK_STR(text, "same bytes");
    free(text);
    CHECK_INT(summary.n_files, 1);
    CHECK_INT(summary.n_links, 1);
    free(archive);
    free(destination);
}

TEST(strip_components_drops_the_top_folder)
{
    char *archive = write_archive("strip.tar.gz", FORMAT_TAR, GZIP, model_entries, 6);
    char *destination = fresh_dir("strip");
    ft_extract_options options = {.max_total_bytes = 1 << 20, .strip_components = 1};
    ft_extract_summary summary;
    CHECK_INT(ft_archive_extract(archive, destination, &options, &summary), 0);
    char *text = read_text(destination, "config.json");
    CHECK_STR(text, "{\"layers\": 2}\n");
    free(text);
    text = read_text(destination, "snapshots/v1/weights");
    CHECK_STR(text, "weights");
    free(text);
    free(archive);
    free(destination);
}

static bool stop_at_once(void *context, uint64_t read_bytes, uint64_t archive_bytes)
{
    int *calls = context;
    (*calls)++;
    return true;
}

TEST(progress_can_stop_the_extraction)
{
    char *archive = write_archive("stop.tar.zst", FORMAT_TAR, ZSTD, model_entries, 6);
    char *destination = fresh_dir("stopped");
    int calls = 0;
    ft_extract_options options = {.max_total_bytes = 1 << 20, .progress = stop_at_once, .progress_context = &calls};
    ft_extract_summary summary;
    CHECK_INT(ft_archive_extract(archive, destination, &options, &summary), -1);
    char *expected = ft_xasprintf("the extraction of %s was stopped", archive);
    CHECK_STR(ft_error_message(), expected);
    CHECK_INT(calls, 1);
    free(expected);
    free(archive);
    free(destination);
}

/* --- hostile archives --- */

TEST(refuses_path_traversal)
{
    const test_entry entries[] = {
        {AE_IFREG, "fine.txt", "ok", 0644, 0, false},
        {AE_IFREG, "sub/../../escape.txt", "gotcha", 0644, 0, false},
    };
    expect_refused("traversal.tar", FORMAT_TAR, entries, 2,
                   "entry \"sub/../../escape.txt\" has a \"..\" component, which would reach outside the destination");
    char *outside = ft_path_join(temporary_dir, "escape.txt");
    CHECK(!ft_path_exists(outside));
    free(outside);
}

TEST(refuses_path_traversal_in_a_zip)
{
    const test_entry entries[] = {{AE_IFREG, "../escape.txt", "gotcha", 0644, 0, false}};
    expect_refused("traversal.zip", FORMAT_ZIP, entries, 1,
                   "entry \"../escape.txt\" has a \"..\" component, which would reach outside the destination");
}

TEST(refuses_absolute_path)
{
    char *absolute = ft_path_join(temporary_dir, "absolute.txt");
    const test_entry entries[] = {{AE_IFREG, absolute, "gotcha", 0644, 0, false}};
    char *message = ft_xasprintf("entry \"%s\" has an absolute path", absolute);
    expect_refused("absolute.tar", FORMAT_TAR, entries, 1, message);
    CHECK(!ft_path_exists(absolute));
    free(message);
    free(absolute);
}

TEST(refuses_symlink_escape)
{
    const test_entry entries[] = {
        {AE_IFLNK, "models/evil", "../../outside", 0777, 0, false},
        {AE_IFREG, "models/config.json", "{}", 0644, 0, false},
    };
    expect_refused("symlink.tar", FORMAT_TAR, entries, 2,
                   "entry \"models/evil\" is a symbolic link to \"../../outside\", which points outside the "
                   "destination");
    char *evil = ft_path_join(temporary_dir, "refused/models/evil");
    CHECK(!ft_path_exists(evil));
    free(evil);
}

TEST(refuses_absolute_symlink)
{
    const test_entry entries[] = {{AE_IFLNK, "etc", "/etc", 0777, 0, false}};
    expect_refused("absolute-link.tar", FORMAT_TAR, entries, 1,
                   "entry \"etc\" is a symbolic link to \"/etc\", which points outside the destination");
}

/* "here" -> "." is harmless alone, but makes "here/.." the destination's parent. */
TEST(refuses_symlink_escape_through_another_link)
{
    const test_entry entries[] = {
        {AE_IFLNK, "here", ".", 0777, 0, false},
        {AE_IFLNK, "up", "here/..", 0777, 0, false},
    };
    expect_refused("chain.tar", FORMAT_TAR, entries, 2,
                   "entry \"up\" is a symbolic link to \"here/..\", which points outside the destination");
}

/* "d/x" is created through "d" -> ".", so its "../secret" leaves the destination. */
TEST(refuses_symlink_below_another_link)
{
    const test_entry entries[] = {
        {AE_IFLNK, "d", ".", 0777, 0, false},
        {AE_IFLNK, "d/x", "../secret", 0777, 0, false},
    };
    expect_refused("below.tar", FORMAT_TAR, entries, 2,
                   "entry \"d/x\" is a symbolic link to \"../secret\", which points outside the destination");
}

TEST(refuses_symlink_loop)
{
    const test_entry entries[] = {
        {AE_IFLNK, "a", "b/file", 0777, 0, false},
        {AE_IFLNK, "b", "a", 0777, 0, false},
    };
    expect_refused("loop.tar", FORMAT_TAR, entries, 2,
                   "entry \"a\" is a symbolic link to \"b/file\", part of a loop of links");
}

TEST(refuses_file_written_where_a_link_goes)
{
    const test_entry entries[] = {
        {AE_IFLNK, "d", "sub", 0777, 0, false},
        {AE_IFREG, "d/x", "data", 0644, 0, false},
    };
    expect_refused("link-and-folder.tar", FORMAT_TAR, entries, 2,
                   "entry \"d\" is a symbolic link where the archive also has a file or folder of that name");
}

TEST(refuses_hard_link_escape)
{
    const test_entry entries[] = {{0, "h", "../outside.txt", 0644, 0, false}};
    expect_refused("hard-escape.tar", FORMAT_TAR, entries, 1,
                   "entry \"h\" is a hard link to \"../outside.txt\", which is outside the destination");
}

TEST(refuses_hard_link_to_an_absolute_path)
{
    const test_entry entries[] = {{0, "passwd", "/etc/passwd", 0644, 0, false}};
    expect_refused("hard-absolute.tar", FORMAT_TAR, entries, 1,
                   "entry \"passwd\" is a hard link to \"/etc/passwd\", an absolute path outside the destination");
}

TEST(refuses_hard_link_to_a_symlink)
{
    const test_entry entries[] = {
        {AE_IFLNK, "s", "/etc/passwd", 0777, 0, false},
        {0, "h", "s", 0644, 0, false},
    };
    expect_refused("hard-to-link.tar", FORMAT_TAR, entries, 2,
                   "entry \"h\" is a hard link to \"s\", which is not a file extracted before it");
}

TEST(refuses_devices_and_fifos)
{
    const test_entry device[] = {{AE_IFCHR, "dev/null", NULL, 0666, 0, false}};
    expect_refused("device.tar", FORMAT_TAR, device, 1,
                   "entry \"dev/null\" is a character device; only files, folders and links are extracted");
    const test_entry fifo[] = {{AE_IFIFO, "pipe", NULL, 0644, 0, false}};
    expect_refused("fifo.tar", FORMAT_TAR, fifo, 1,
                   "entry \"pipe\" is a fifo; only files, folders and links are extracted");
}

TEST(refuses_an_oversized_entry)
{
    const test_entry entries[] = {
        {AE_IFREG, "small.txt", "ok", 0644, 0, false},
        {AE_IFREG, "weights.bin", NULL, 0644, 2 << 20, false},
    };
    expect_refused("oversized.tar.gz", FORMAT_TAR, entries, 2,
                   "entry \"weights.bin\" declares 2.0 MiB, which takes the archive past the size limit of 1.0 MiB");
}

TEST(refuses_entries_adding_up_past_the_limit)
{
    const test_entry entries[] = {
        {AE_IFREG, "one.bin", NULL, 0644, 600 << 10, false},
        {AE_IFREG, "two.bin", NULL, 0644, 600 << 10, false},
    };
    expect_refused("total.tar", FORMAT_TAR, entries, 2,
                   "entry \"two.bin\" declares 600.0 KiB, which takes the archive past the size limit of 1.0 MiB");
}

/* A zip read as a stream (here through a fifo, as from a pipe) names no size
 * before an entry's data when it was written streamed: the bytes are counted. */
TEST(refuses_an_entry_unpacking_past_the_limit)
{
    const test_entry entries[] = {{AE_IFREG, "bomb.bin", NULL, 0644, 3 << 20, true}};
    char *archive = write_archive("bomb.zip", FORMAT_ZIP, NO_FILTER, entries, 1);
    char *fifo = ft_path_join(temporary_dir, "bomb.fifo");
    CHECK_INT(mkfifo(fifo, 0600), 0);
    pid_t writer = fork();
    if (writer == 0) {
        char *bytes = NULL;
        size_t length = 0;
        int fd = open(fifo, O_WRONLY);
        if (fd < 0 || ft_read_file(archive, &bytes, &length) != 0)
            _exit(1);
        signal(SIGPIPE, SIG_IGN);
        for (size_t done = 0; done < length;) {
            ssize_t n = write(fd, bytes + done, length - done);
            if (n <= 0)
                _exit(0); /* the reader stopped early, as it should */
            done += (size_t)n;
        }
        _exit(0);
    }
    char *destination = fresh_dir("bomb");
    ft_extract_summary summary;
    CHECK_INT(ft_archive_extract(fifo, destination, &default_options, &summary), -1);
    char *expected = ft_xasprintf("cannot extract %s: entry \"bomb.bin\" unpacks past the size limit of 1.0 MiB", fifo);
    CHECK_STR(ft_error_message(), expected);
    int status = 0;
    CHECK_INT(waitpid(writer, &status, 0), writer);
    free(expected);
    free(fifo);
    free(archive);
    free(destination);
}

TEST(refuses_a_file_that_is_no_archive)
{
    char *path = ft_path_join(temporary_dir, "notes.txt");
    CHECK_INT(ft_write_file_atomic(path, "just some text, long enough to be sniffed\n", 42), 0);
    char *destination = fresh_dir("not-archive");
    ft_extract_summary summary;
    CHECK_INT(ft_archive_extract(path, destination, &default_options, &summary), -1);
    char *expected = ft_xasprintf("cannot read %s: Unrecognized archive format", path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(path);
    free(destination);
}

TEST(refuses_a_destination_that_is_not_empty)
{
    char *archive = write_archive("good2.tar", FORMAT_TAR, NO_FILTER, model_entries, 6);
    char *destination = fresh_dir("busy");
    char *file = ft_path_join(destination, "old.txt");
    CHECK_INT(ft_mkdir_p(destination), 0);
    CHECK_INT(ft_write_file_atomic(file, "x", 1), 0);
    ft_extract_summary summary;
    CHECK_INT(ft_archive_extract(archive, destination, &default_options, &summary), -1);
    char *expected = ft_xasprintf("cannot extract into %s: the folder is not empty", destination);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(file);
    free(archive);
    free(destination);
}

int main(void)
{
    temporary_dir = fixture_temporary_dir("archive");
    if (!temporary_dir)
        return 1;
    RUN(round_trip_tar);
    RUN(round_trip_tar_gz);
    RUN(round_trip_tar_zst);
    RUN(round_trip_tar_xz);
    RUN(round_trip_zip);
    RUN(hard_link_inside_is_extracted);
    RUN(strip_components_drops_the_top_folder);
    RUN(progress_can_stop_the_extraction);
    RUN(refuses_path_traversal);
    RUN(refuses_path_traversal_in_a_zip);
    RUN(refuses_absolute_path);
    RUN(refuses_symlink_escape);
    RUN(refuses_absolute_symlink);
    RUN(refuses_symlink_escape_through_another_link);
    RUN(refuses_symlink_below_another_link);
    RUN(refuses_symlink_loop);
    RUN(refuses_file_written_where_a_link_goes);
    RUN(refuses_hard_link_escape);
    RUN(refuses_hard_link_to_an_absolute_path);
    RUN(refuses_hard_link_to_a_symlink);
    RUN(refuses_devices_and_fifos);
    RUN(refuses_an_oversized_entry);
    RUN(refuses_entries_adding_up_past_the_limit);
    RUN(refuses_an_entry_unpacking_past_the_limit);
    RUN(refuses_a_file_that_is_no_archive);
    RUN(refuses_a_destination_that_is_not_empty);
    ft_remove_tree(temporary_dir);
    return check_done();
}
