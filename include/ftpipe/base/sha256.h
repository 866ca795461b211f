/* sha256: SHA-256 (FIPS 180-4), for checking downloads against published checksums.
 *
 * None of the chosen libraries exports SHA-256, so this is a small one of our own
 * (portable C, and the x86 SHA instructions where present); content addressing
 * inside ftpipe uses XXH3 (hash.h) instead. */
#ifndef FTPIPE_SHA256_H
#define FTPIPE_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FT_SHA256_HEX_LENGTH 64

typedef struct {
    uint32_t state[8];
    uint64_t total_bytes;
    uint8_t block[64];
    size_t block_used;
} ft_sha256;

void ft_sha256_init(ft_sha256 *context);
void ft_sha256_update(ft_sha256 *context, const void *bytes, size_t length);
/* 64 lowercase hex digits and a NUL into out. */
void ft_sha256_finish_hex(ft_sha256 *context, char out[FT_SHA256_HEX_LENGTH + 1]);

/* For tests: the portable code even where the CPU has SHA instructions. */
void ft_sha256_force_portable(bool on);

/* SHA-256 of a whole file, as hex. */
int ft_sha256_file_hex(const char *path, char out[FT_SHA256_HEX_LENGTH + 1]);

/* SHA-256 of many files at once, one thread per core: out[i] is paths[i]'s.
 * On failure ft_error names the first file that could not be read. */
int ft_sha256_files_hex(const char *const *paths, size_t count, char (*out)[FT_SHA256_HEX_LENGTH + 1]);

#endif
