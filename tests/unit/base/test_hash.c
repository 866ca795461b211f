/* Tests of hash: exact XXH3-128 values, agreement with xxh128sum, chunked files. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/hash.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/thread_pool.h"
#include "ftpipe/cli/commands.h"
#include "ftpipe/engine/manifest.h"

static char *temporary_dir;

static char *hex_of(ft_hash hash)
{
    static char hex[FT_HASH_HEX_LENGTH + 1];
    ft_hash_to_hex(hash, hex);
    return hex;
}

/* A file of `length` bytes of a repeating, position-dependent pattern. */
static char *make_file(const char *name, size_t length)
{
    char *path = ft_path_join(temporary_dir, name);
    unsigned char *bytes = ft_xmalloc(length + 1);
    for (size_t i = 0; i < length; i++)
        bytes[i] = (unsigned char)(i * 131 + (i >> 12));
    CHECK_INT(ft_write_file_atomic(path, bytes, length), 0);
    free(bytes);
    return path;
}

/* What `xxh128sum PATH` prints: the whole output, or only the hash. */
static char *xxh128sum_output(const char *path)
{
    char *command = ft_xasprintf("xxh128sum '%s' 2>/dev/null", path);
    FILE *pipe = popen(command, "r");
    free(command);
    static char line[4096];
    line[0] = '\0';
    if (!pipe || !fgets(line, sizeof line, pipe))
        strcpy(line, "(xxh128sum failed)");
    if (pipe)
        pclose(pipe);
    return line;
}

static char *xxh128sum_of(const char *path)
{
    char *line = xxh128sum_output(path);
    line[strcspn(line, " ")] = '\0';
    return line;
}

/* Runs `ftpipe hash ARGS` with its standard output captured into *output. */
static int run_hash_command(int argc, char **argv, char **output)
{
    char *capture = ft_path_join(temporary_dir, "stdout");
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    int fd = open(capture, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, STDOUT_FILENO);
    close(fd);
    int status = ft_command_hash(argc, argv);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    CHECK_INT(ft_read_file(capture, output, NULL), 0);
    free(capture);
    return status;
}

TEST(hashes_known_bytes)
{
    CHECK_STR(hex_of(ft_hash_bytes("", 0)), "99aa06d3014798d86001c324468d497f");
    CHECK_STR(hex_of(ft_hash_bytes("abc", 3)), "06b05ab6733a618578af5f94892f3950");
    CHECK_STR(hex_of(ft_hash_bytes("ftpipe", 6)), "90c3b98b48a5ed122728cda71d65faac");
}

TEST(streams_like_one_shot)
{
    ft_hasher *hasher = ft_hasher_new();
    ft_hasher_update(hasher, "ft", 2);
    ft_hasher_update(hasher, "", 0);
    ft_hasher_update(hasher, "pipe", 4);
    CHECK_STR(hex_of(ft_hasher_digest(hasher)), "90c3b98b48a5ed122728cda71d65faac");
    ft_hasher_free(hasher);
}

TEST(parses_hex)
{
    ft_hash hash;
    CHECK_INT(ft_hash_from_hex("06B05AB6733A618578af5f94892f3950", &hash), 0);
    CHECK(ft_hash_equal(hash, ft_hash_bytes("abc", 3)));
    CHECK_INT(hash.high, 0x06b05ab6733a6185ULL);
    CHECK_INT(hash.low, 0x78af5f94892f3950ULL);
    CHECK_INT(ft_hash_from_hex("06b05ab6733a618578af5f94892f395", &hash), -1);
    CHECK_STR(ft_error_message(), "\"06b05ab6733a618578af5f94892f395\" is not a hash: expected 32 hex digits");
    CHECK_INT(ft_hash_from_hex("06b05ab6733a618578af5f94892f39500", &hash), -1);
    CHECK_INT(ft_hash_from_hex("g6b05ab6733a618578af5f94892f3950", &hash), -1);
    CHECK(!ft_hash_equal(ft_hash_bytes("a", 1), ft_hash_bytes("b", 1)));
}

/* Sizes around the buffered/mapped boundary (256 KiB) and the 8 MiB map window. */
TEST(small_files_match_xxh128sum)
{
    const size_t sizes[] = {0, 1, 4096, 262144, 262145, 20u << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "file-%zu", sizes[i]);
        char *path = make_file(name, sizes[i]);
        ft_hash hash;
        CHECK_INT(ft_hash_file(path, 1, &hash), 0);
        char ours[FT_HASH_HEX_LENGTH + 1];
        ft_hash_to_hex(hash, ours);
        CHECK_STR(ours, xxh128sum_of(path));
        free(path);
    }
}

/* 70 MiB: two chunks, 64 MiB and 6 MiB, mostly holes with marks in both. */
static char *make_two_chunk_file(void)
{
    char *path = ft_path_join(temporary_dir, "big");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK_INT(ftruncate(fd, 70 << 20), 0);
    CHECK_INT(pwrite(fd, "start", 5, 0), 5);
    CHECK_INT(pwrite(fd, "second chunk", 12, 64 << 20), 12);
    CHECK_INT(pwrite(fd, "end", 3, (70 << 20) - 3), 3);
    close(fd);
    return path;
}

TEST(large_file_hash_is_the_chunk_rule_for_any_thread_count)
{
    char *path = make_two_chunk_file();
    char *bytes;
    size_t length;
    CHECK_INT(ft_read_file(path, &bytes, &length), 0);
    CHECK_INT(length, 70 << 20);
    ft_hash chunks[2] = {ft_hash_bytes(bytes, 64 << 20), ft_hash_bytes(bytes + (64 << 20), 6 << 20)};
    ft_hash whole = ft_hash_bytes(bytes, length);
    free(bytes);
    /* The header's rule: chunk hashes big-endian, high half first, then the size little-endian. */
    unsigned char rule[40];
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 8; i++) {
            rule[16 * c + i] = (unsigned char)(chunks[c].high >> (56 - 8 * i));
            rule[16 * c + 8 + i] = (unsigned char)(chunks[c].low >> (56 - 8 * i));
        }
    for (int i = 0; i < 8; i++)
        rule[32 + i] = (unsigned char)((uint64_t)(70 << 20) >> (8 * i));
    ft_hash expected = ft_hash_bytes(rule, sizeof rule);

    ft_hash one_thread, four_threads;
    CHECK_INT(ft_hash_file(path, 1, &one_thread), 0);
    CHECK_INT(ft_hash_file(path, 4, &four_threads), 0);
    CHECK(ft_hash_equal(one_thread, expected));
    CHECK(ft_hash_equal(four_threads, expected));
    ft_thread_pool_fail_starts_after(1); /* threads that cannot start change nothing */
    ft_hash two_of_four_threads;
    CHECK_INT(ft_hash_file(path, 4, &two_of_four_threads), 0);
    ft_thread_pool_fail_starts_after((size_t)-1);
    CHECK(ft_hash_equal(two_of_four_threads, expected));
    CHECK(!ft_hash_equal(one_thread, whole));
    free(path);
}

/* Bytes fed in uneven pieces give ft_hash_file's hash, across the chunk boundary
 * too; an empty file and a small one agree with the one-shot hash; a reset forgets. */
TEST(a_file_hasher_fed_in_pieces_agrees_with_hash_file)
{
    char *path = make_two_chunk_file();
    char *bytes;
    size_t length;
    CHECK_INT(ft_read_file(path, &bytes, &length), 0);
    ft_hash expected;
    CHECK_INT(ft_hash_file(path, 1, &expected), 0);
    ft_file_hasher *hasher = ft_file_hasher_new();
    ft_file_hasher_update(hasher, "stale", 5);
    ft_file_hasher_reset(hasher);
    size_t piece = 1000003;
    for (size_t offset = 0; offset < length; offset += piece)
        ft_file_hasher_update(hasher, bytes + offset, length - offset < piece ? length - offset : piece);
    CHECK_INT(ft_file_hasher_bytes(hasher), length);
    CHECK(ft_hash_equal(ft_file_hasher_digest(hasher), expected));
    ft_file_hasher_free(hasher);

    hasher = ft_file_hasher_new();
    CHECK(ft_hash_equal(ft_file_hasher_digest(hasher), ft_hash_bytes("", 0)));
    ft_file_hasher_free(hasher);
    hasher = ft_file_hasher_new();
    ft_file_hasher_update(hasher, bytes, 12345);
    CHECK(ft_hash_equal(ft_file_hasher_digest(hasher), ft_hash_bytes(bytes, 12345)));
    ft_file_hasher_free(hasher);
    /* Exactly one chunk: no combining. */
    hasher = ft_file_hasher_new();
    ft_file_hasher_update(hasher, bytes, (size_t)64 << 20);
    CHECK(ft_hash_equal(ft_file_hasher_digest(hasher), ft_hash_bytes(bytes, (size_t)64 << 20)));
    ft_file_hasher_free(hasher);
    free(bytes);
    free(path);
}

TEST(hashes_many_files_in_order)
{
    char *big = make_two_chunk_file();
    char *small = make_file("small", 1000);
    char *medium = make_file("medium", 1 << 20);
    const char *paths[] = {small, big, medium, small};
    ft_hash together[4], alone[4];
    CHECK_INT(ft_hash_files(paths, 4, 3, together), 0);
    for (int i = 0; i < 4; i++) {
        CHECK_INT(ft_hash_file(paths[i], 1, &alone[i]), 0);
        CHECK(ft_hash_equal(together[i], alone[i]));
    }
    CHECK(!ft_hash_equal(together[0], together[2]));
    CHECK_INT(ft_hash_files(paths, 0, 0, together), 0);
    free(big);
    free(small);
    free(medium);
}

TEST(reports_unreadable_paths)
{
    ft_hash hash;
    char *missing = ft_path_join(temporary_dir, "missing");
    CHECK_INT(ft_hash_file(missing, 1, &hash), -1);
    char *expected = ft_xasprintf("cannot hash %s: No such file or directory", missing);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    CHECK_INT(ft_hash_file(temporary_dir, 0, &hash), -1);
    expected = ft_xasprintf("cannot hash %s: not a regular file", temporary_dir);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(missing);
}

TEST(command_prints_like_xxh128sum)
{
    char *file = make_file("command-file", 5000);
    char *folder = ft_path_join(temporary_dir, "command-folder");
    CHECK_INT(ft_mkdir_p(folder), 0);
    char *inner = ft_path_join(folder, "inner");
    CHECK_INT(ft_write_file_atomic(inner, "x", 1), 0);
    ft_manifest *manifest;
    CHECK_INT(ft_manifest_build(NULL, folder, 1, &manifest), 0);
    char folder_hex[FT_HASH_HEX_LENGTH + 1];
    ft_hash_to_hex(manifest->hash, folder_hex);
    ft_manifest_free(manifest);

    char *argv[] = {"--threads", "2", file, folder, file};
    char *output;
    CHECK_INT(run_hash_command(5, argv, &output), 0);
    char *file_line = ft_xstrdup(xxh128sum_output(file));
    char *expected = ft_xasprintf("%s%s  %s\n%s", file_line, folder_hex, folder, file_line);
    CHECK_STR(output, expected);
    free(expected);
    free(file_line);
    free(output);

    char *no_paths[] = {"--threads=1"};
    CHECK_INT(run_hash_command(1, no_paths, &output), 2);
    CHECK_STR(ft_error_message(), "no path to hash; usage: ftpipe hash [--threads N] PATH...");
    free(output);
    char *bad_threads[] = {"--threads", "many", file};
    CHECK_INT(run_hash_command(3, bad_threads, &output), 2);
    CHECK_STR(ft_error_message(), "--threads takes a number from 0 (one per core) to 1024, not \"many\"; usage: "
                                  "ftpipe hash [--threads N] PATH...");
    free(output);
    char *unknown[] = {"-x", file};
    CHECK_INT(run_hash_command(2, unknown, &output), 2);
    CHECK_STR(ft_error_message(), "unknown option -x; usage: ftpipe hash [--threads N] PATH...");
    free(output);
    char *missing_path = ft_path_join(temporary_dir, "nowhere");
    char *missing[] = {file, missing_path};
    CHECK_INT(run_hash_command(2, missing, &output), 1);
    CHECK_STR(output, "");
    expected = ft_xasprintf("cannot stat %s: No such file or directory", missing_path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(output);
    free(missing_path);
    free(inner);
    free(folder);
    free(file);
}

int main(void)
{
    temporary_dir = fixture_temporary_dir("hash");
    if (!temporary_dir)
        return 1;
    RUN(hashes_known_bytes);
    RUN(streams_like_one_shot);
    RUN(parses_hex);
    RUN(small_files_match_xxh128sum);
    RUN(large_file_hash_is_the_chunk_rule_for_any_thread_count);
    RUN(a_file_hasher_fed_in_pieces_agrees_with_hash_file);
    RUN(hashes_many_files_in_order);
    RUN(reports_unreadable_paths);
    RUN(command_prints_like_xxh128sum);
    ft_remove_tree(temporary_dir);
    return check_done();
}
