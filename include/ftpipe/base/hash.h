/* hash: XXH3-128 content hashes of bytes and files.
 *
 * A file's hash is XXH3-128 of its bytes when it is at most FT_HASH_CHUNK_BYTES,
 * so it equals what `xxh128sum` prints. A larger file is cut into chunks of that
 * size, each hashed on its own (so several threads can share one file), and the
 * file's hash is XXH3-128 of the chunk hashes (16 bytes each, high half first,
 * big-endian, as their hex reads) followed by the file size (8 bytes,
 * little-endian). The result never depends on the thread count.
 *
 * Hex: the high 64 bits then the low 64 bits, 32 lowercase digits, as
 * `xxh128sum` prints them. */
#ifndef FTPIPE_HASH_H
#define FTPIPE_HASH_H

#include <stddef.h>
#include <stdint.h>

#define FT_HASH_CHUNK_BYTES ((uint64_t)64 << 20)
#define FT_HASH_HEX_LENGTH 32

typedef struct {
    uint64_t high;
    uint64_t low;
} ft_hash;

ft_hash ft_hash_bytes(const void *bytes, size_t length);
/* 32 lowercase hex digits and a NUL into out. */
void ft_hash_to_hex(ft_hash hash, char out[FT_HASH_HEX_LENGTH + 1]);
/* Parses exactly 32 hex digits (either case); -1 with ft_error otherwise. */
int ft_hash_from_hex(const char *hex, ft_hash *out);
/* 1 when equal, 0 otherwise. */
int ft_hash_equal(ft_hash a, ft_hash b);

/* Streaming hash of a sequence of byte strings (for keys). */
typedef struct ft_hasher ft_hasher;
ft_hasher *ft_hasher_new(void);
void ft_hasher_update(ft_hasher *hasher, const void *bytes, size_t length);
ft_hash ft_hasher_digest(const ft_hasher *hasher);
void ft_hasher_free(ft_hasher *hasher);

/* A file's hash (as ft_hash_file gives it) from its bytes fed in order, for
 * bytes that arrive in pieces, as a download's do. Digest once. */
typedef struct ft_file_hasher ft_file_hasher;
ft_file_hasher *ft_file_hasher_new(void);
void ft_file_hasher_update(ft_file_hasher *hasher, const void *bytes, size_t length);
/* Forgets what was fed (a download that starts over). */
void ft_file_hasher_reset(ft_file_hasher *hasher);
uint64_t ft_file_hasher_bytes(const ft_file_hasher *hasher);
ft_hash ft_file_hasher_digest(ft_file_hasher *hasher);
void ft_file_hasher_free(ft_file_hasher *hasher);

/* Hashes one regular file with up to `threads` threads (0: one per core).
 * A file that changes size while it is read is an error. Large files are
 * mapped; the first such read installs a process-wide SIGBUS handler (which
 * hands signals it does not expect to the previous one), so a file truncated
 * under the mapping fails cleanly instead of killing the process. */
int ft_hash_file(const char *path, int threads, ft_hash *out);

/* Hashes many files at once with up to `threads` threads (0: one per core);
 * large files are split into chunks across threads. out[i] is paths[i]'s hash. */
int ft_hash_files(const char *const *paths, size_t count, int threads, ft_hash *out);
/* The bytes of every file this process hashed so far. */
uint64_t ft_hash_file_bytes_total(void);

#endif
