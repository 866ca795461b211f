/* Tests for sha256: the FIPS 180-4 example messages, block-boundary cases, files. */
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/sha256.h"
#include "ftpipe/base/thread_pool.h"

static void hex_of(const char *text, size_t length, char out[FT_SHA256_HEX_LENGTH + 1])
{
    ft_sha256 context;
    ft_sha256_init(&context);
    ft_sha256_update(&context, text, length);
    ft_sha256_finish_hex(&context, out);
}

TEST(fips_examples)
{
    char hex[FT_SHA256_HEX_LENGTH + 1];
    hex_of("abc", 3, hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(two_blocks, strlen(two_blocks), hex);
    CHECK_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    hex_of("", 0, hex);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/* One million 'a', fed in pieces that straddle block boundaries. */
TEST(million_a_in_uneven_pieces)
{
    static char a_block[1000];
    memset(a_block, 'a', sizeof a_block);
    ft_sha256 context;
    ft_sha256_init(&context);
    size_t left = 1000000, piece = 1;
    while (left > 0) {
        size_t n = piece < left ? piece : left;
        ft_sha256_update(&context, a_block, n);
        left -= n;
        piece = piece % 977 + 13; /* 13..989 bytes */
    }
    char hex[FT_SHA256_HEX_LENGTH + 1];
    ft_sha256_finish_hex(&context, hex);
    CHECK_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Lengths around the padding boundary (55, 56, 63, 64 bytes), checked against sha256sum. */
TEST(padding_boundaries)
{
    static const struct { size_t length; const char *hex; } cases[] = {
        {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
    };
    char text[64];
    memset(text, 'a', sizeof text);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char hex[FT_SHA256_HEX_LENGTH + 1];
        hex_of(text, cases[i].length, hex);
        CHECK_STR(hex, cases[i].hex);
    }
}

TEST(hashes_a_file)
{
    char path[] = "/tmp/ftpipe-sha256-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK_INT(ft_write_file_atomic(path, "abc", 3), 0);
    char hex[FT_SHA256_HEX_LENGTH + 1];
    CHECK_INT(ft_sha256_file_hex(path, hex), 0);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    unlink(path);
    CHECK_INT(ft_sha256_file_hex(path, hex), -1);
    CHECK(strstr(ft_error_message(), "cannot open /tmp/ftpipe-sha256-") != NULL);
}

/* Many files over the pool, in order, also when no thread can start. */
TEST(hashes_many_files_even_without_threads)
{
    char folder[] = "/tmp/ftpipe-sha256-many-XXXXXX";
    CHECK(mkdtemp(folder) != NULL);
    enum { N_FILES = 9 };
    char *paths[N_FILES];
    char expected[N_FILES][FT_SHA256_HEX_LENGTH + 1];
    for (int i = 0; i < N_FILES; i++) {
        paths[i] = ft_xasprintf("%s/%d", folder, i);
        char text[16];
        int length = snprintf(text, sizeof text, "file %d", i);
        CHECK_INT(ft_write_file_atomic(paths[i], text, (size_t)length), 0);
        hex_of(text, (size_t)length, expected[i]);
    }
    for (int failing = 0; failing < 2; failing++) {
        if (failing)
            ft_thread_pool_fail_starts_after(0);
        char out[N_FILES][FT_SHA256_HEX_LENGTH + 1];
        CHECK_INT(ft_sha256_files_hex((const char *const *)paths, N_FILES, out), 0);
        for (int i = 0; i < N_FILES; i++)
            CHECK_STR(out[i], expected[i]);
        ft_thread_pool_fail_starts_after((size_t)-1);
    }
    for (int i = 0; i < N_FILES; i++) {
        unlink(paths[i]);
        free(paths[i]);
    }
    rmdir(folder);
}

/* The first file that cannot be read is the one named, whatever thread met it. */
TEST(names_the_first_unreadable_file_among_many)
{
    const char *paths[] = {"/nonexistent/ftpipe-a", "/nonexistent/ftpipe-b"};
    char out[2][FT_SHA256_HEX_LENGTH + 1];
    CHECK_INT(ft_sha256_files_hex(paths, 2, out), -1);
    CHECK(strstr(ft_error_message(), "cannot open /nonexistent/ftpipe-a") != NULL);
}

int main(void)
{
    RUN(fips_examples);
    RUN(million_a_in_uneven_pieces);
    RUN(padding_boundaries);
    RUN(hashes_a_file);
    RUN(hashes_many_files_even_without_threads);
    RUN(names_the_first_unreadable_file_among_many);
    return check_done();
}
