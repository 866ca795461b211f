/* sha256: SHA-256 through OpenSSL's libcrypto (EVP), for checking downloads
 * against published checksums and for what crosses to a remote cache. OpenSSL
 * picks the CPU's SHA or vector instructions itself. Content addressing inside
 * ftpipe uses XXH3 (hash.h) instead. */
#ifndef FTPIPE_SHA256_H
#define FTPIPE_SHA256_H

#include <stddef.h>

#define FT_SHA256_HEX_LENGTH 64

/* One digest in progress: init, update any number of times, then finish (which
 * frees what init took; a context is not used after it). */
typedef struct {
    void *evp; /* EVP_MD_CTX */
} ft_sha256;

void ft_sha256_init(ft_sha256 *context);
void ft_sha256_update(ft_sha256 *context, const void *bytes, size_t length);
/* Ends a digest whose result is not wanted (a download started over); a context
 * never started or already finished is left alone. */
void ft_sha256_discard(ft_sha256 *context);
/* 64 lowercase hex digits and a NUL into out. */
void ft_sha256_finish_hex(ft_sha256 *context, char out[FT_SHA256_HEX_LENGTH + 1]);

/* SHA-256 of a whole file, as hex. */
int ft_sha256_file_hex(const char *path, char out[FT_SHA256_HEX_LENGTH + 1]);

/* SHA-256 of many files at once, one thread per core: out[i] is paths[i]'s.
 * On failure ft_error names the first file that could not be read. */
int ft_sha256_files_hex(const char *const *paths, size_t count, char (*out)[FT_SHA256_HEX_LENGTH + 1]);

#endif
