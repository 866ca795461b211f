/* Tests of tree_copy: a folder of mixed files copied exactly (bytes, modes,
 * links), a file larger than several ranges, measuring, stopping, refusals. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/thread_pool.h"
#include "ftpipe/transfer/tree_copy.h"

static char *temporary_dir;

/* 2.5 ranges, every 4-byte word different, so a range copied to the wrong
 * place shows. */
static const uint64_t large_bytes = FT_TREE_COPY_RANGE_BYTES * 5 / 2 + 3;

static void write_large_file(const char *path)
{
    unsigned char *bytes = ft_xmalloc(large_bytes);
    for (uint64_t i = 0; i < large_bytes; i++)
        bytes[i] = (unsigned char)((i / 4) * 2654435761u >> (8 * (i % 4)));
    CHECK_INT(ft_write_file_atomic(path, bytes, large_bytes), 0);
    free(bytes);
}

/* config.json, bin/run (0755), frozen/weights.txt (0444) in frozen/ (0555),
 * empty.txt, empty/, latest -> bin/run, big/shard.bin (large). */
static char *make_source(void)
{
    char *root = ft_path_join(temporary_dir, "source");
    fixture_write_file(root, "config.json", "{\"hidden_size\": 8}\n", 0644);
    fixture_write_file(root, "bin/run", "#!/bin/sh\necho hi\n", 0755);
    fixture_write_file(root, "frozen/weights.txt", "1 2 3\n", 0444);
    fixture_write_file(root, "empty.txt", "", 0600);
    char *empty = ft_path_join(root, "empty");
    CHECK_INT(ft_mkdir_p(empty), 0);
    char *big = ft_path_join(root, "big/shard.bin");
    char *big_dir = ft_path_join(root, "big");
    CHECK_INT(ft_mkdir_p(big_dir), 0);
    write_large_file(big);
    char *link = ft_path_join(root, "latest");
    CHECK_INT(symlink("bin/run", link), 0);
    char *frozen = ft_path_join(root, "frozen");
    CHECK_INT(chmod(frozen, 0555), 0);
    free(frozen);
    free(link);
    free(big);
    free(big_dir);
    free(empty);
    return root;
}

static bool same_files(const char *a, const char *b)
{
    char *a_bytes = NULL, *b_bytes = NULL;
    size_t a_length = 0, b_length = 0;
    bool same = ft_read_file(a, &a_bytes, &a_length) == 0 && ft_read_file(b, &b_bytes, &b_length) == 0 &&
                a_length == b_length && memcmp(a_bytes, b_bytes, a_length) == 0;
    free(a_bytes);
    free(b_bytes);
    return same;
}

static bool same_bytes(const char *a_root, const char *b_root, const char *name)
{
    char *a = ft_path_join(a_root, name), *b = ft_path_join(b_root, name);
    bool same = same_files(a, b);
    free(a);
    free(b);
    return same;
}

static mode_t mode_of(const char *root, const char *name)
{
    char *path = ft_path_join(root, name);
    struct stat st;
    memset(&st, 0, sizeof st);
    CHECK_INT(lstat(path, &st), 0);
    free(path);
    return st.st_mode & 0777;
}

typedef struct {
    int calls;
    uint64_t last_copied, last_total;
    bool stop;
} progress_record;

static bool record_progress(void *context, uint64_t copied_bytes, uint64_t total_bytes)
{
    progress_record *record = context;
    record->calls++;
    record->last_copied = copied_bytes;
    record->last_total = total_bytes;
    return record->stop;
}

static void check_copy(const char *source, bool verify, int threads, const char *base, const char *name)
{
    char *destination = ft_path_join(base, name);
    progress_record record = {0};
    ft_tree_copy_options options = {.threads = threads, .verify = verify, .progress = record_progress,
                                    .progress_context = &record};
    ft_tree_summary summary;
    CHECK_INT(ft_tree_copy(source, destination, &options, &summary), 0);
    CHECK_INT(summary.n_files, 5);
    CHECK_INT(summary.n_dirs, 4);
    CHECK_INT(summary.n_links, 1);
    uint64_t total = 19 + 18 + 6 + large_bytes;
    CHECK_INT(summary.total_bytes, total);
    CHECK(record.calls >= 2);
    CHECK_INT(record.last_copied, total);
    CHECK_INT(record.last_total, total);
    const char *files[] = {"config.json", "bin/run", "frozen/weights.txt", "empty.txt", "big/shard.bin"};
    for (size_t i = 0; i < 5; i++) {
        CHECK(same_bytes(source, destination, files[i]));
        CHECK_INT(mode_of(destination, files[i]), mode_of(source, files[i]));
    }
    CHECK_INT(mode_of(destination, "frozen"), 0555);
    CHECK_INT(mode_of(destination, "empty"), mode_of(source, "empty"));
    char *link = ft_path_join(destination, "latest");
    char target[32] = {0};
    CHECK_INT(readlink(link, target, sizeof target - 1), 7);
    CHECK_STR(target, "bin/run");
    free(link);
    CHECK_INT(ft_remove_tree(destination), 0);
    free(destination);
}

TEST(copies_a_folder_verified_with_three_threads)
{
    char *source = make_source();
    check_copy(source, true, 3, temporary_dir, "copy-verified");
    free(source);
}

TEST(copies_a_folder_in_the_kernel_with_one_thread)
{
    char *source = ft_path_join(temporary_dir, "source");
    check_copy(source, false, 1, temporary_dir, "copy-kernel");
    free(source);
}

/* No thread can start: the calling thread copies everything itself. */
TEST(copies_a_folder_when_no_thread_starts)
{
    char *source = ft_path_join(temporary_dir, "source");
    ft_thread_pool_fail_starts_after(0);
    check_copy(source, true, 3, temporary_dir, "copy-no-threads");
    ft_thread_pool_fail_starts_after((size_t)-1);
    free(source);
}

/* Where the kernel cannot copy between file systems, the copy goes by hand. */
TEST(copies_into_a_tmpfs_unverified)
{
    char template[] = "/dev/shm/ftpipe-test-tree-copy.XXXXXX";
    char *shm = mkdtemp(template);
    if (!shm) {
        SKIP("no /dev/shm here");
    }
    char *source = ft_path_join(temporary_dir, "source");
    check_copy(source, false, 2, shm, "copy");
    CHECK_INT(ft_remove_tree(shm), 0);
    free(source);
}

TEST(copies_a_single_large_file)
{
    char *source = ft_path_join(temporary_dir, "source/big/shard.bin");
    char *destination = ft_path_join(temporary_dir, "shard-copy.bin");
    ft_tree_copy_options options = {.threads = 4, .verify = true};
    ft_tree_summary summary;
    CHECK_INT(ft_tree_copy(source, destination, &options, &summary), 0);
    CHECK_INT(summary.n_files, 1);
    CHECK_INT(summary.n_dirs, 0);
    CHECK_INT(summary.total_bytes, large_bytes);
    CHECK(same_files(source, destination));
    CHECK_INT(unlink(destination), 0);
    free(source);
    free(destination);
}

TEST(measures_without_copying)
{
    char *source = ft_path_join(temporary_dir, "source");
    ft_tree_summary summary;
    CHECK_INT(ft_tree_measure(source, &summary), 0);
    CHECK_INT(summary.n_files, 5);
    CHECK_INT(summary.n_dirs, 4);
    CHECK_INT(summary.n_links, 1);
    CHECK_INT(summary.total_bytes, 19 + 18 + 6 + large_bytes);
    free(source);
}

TEST(progress_can_stop_the_copy)
{
    char *source = ft_path_join(temporary_dir, "source");
    char *destination = ft_path_join(temporary_dir, "copy-stopped");
    progress_record record = {.stop = true};
    ft_tree_copy_options options = {.threads = 2, .verify = true, .progress = record_progress,
                                    .progress_context = &record};
    CHECK_INT(ft_tree_copy(source, destination, &options, NULL), -1);
    char *expected = ft_xasprintf("the copy of %s to %s was stopped", source, destination);
    CHECK_STR(ft_error_message(), expected);
    CHECK_INT(record.calls, 1);
    CHECK_INT(record.last_copied, 0);
    CHECK_INT(ft_remove_tree(destination), 0);
    free(expected);
    free(source);
    free(destination);
}

TEST(refuses_an_existing_destination)
{
    char *source = ft_path_join(temporary_dir, "source");
    char *destination = ft_path_join(temporary_dir, "taken");
    CHECK_INT(ft_mkdir_p(destination), 0);
    ft_tree_copy_options options = {.threads = 1};
    CHECK_INT(ft_tree_copy(source, destination, &options, NULL), -1);
    char *expected = ft_xasprintf("cannot create folder %s: File exists", destination);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(source);
    free(destination);
}

TEST(refuses_a_fifo)
{
    char *root = ft_path_join(temporary_dir, "with-fifo");
    char *fifo = ft_path_join(root, "pipe");
    CHECK_INT(ft_mkdir_p(root), 0);
    CHECK_INT(mkfifo(fifo, 0600), 0);
    ft_tree_summary summary;
    CHECK_INT(ft_tree_measure(root, &summary), -1);
    char *expected = ft_xasprintf("cannot copy %s: not a file, folder or symbolic link", fifo);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(fifo);
    free(root);
}

int main(void)
{
    temporary_dir = fixture_temporary_dir("tree-copy");
    if (!temporary_dir)
        return 1;
    RUN(copies_a_folder_verified_with_three_threads);
    RUN(copies_a_folder_in_the_kernel_with_one_thread);
    RUN(copies_a_folder_when_no_thread_starts);
    RUN(copies_into_a_tmpfs_unverified);
    RUN(copies_a_single_large_file);
    RUN(measures_without_copying);
    RUN(progress_can_stop_the_copy);
    RUN(refuses_an_existing_destination);
    RUN(refuses_a_fifo);
    ft_remove_tree(temporary_dir);
    return check_done();
}
