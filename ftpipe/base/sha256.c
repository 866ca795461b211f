/* sha256: libcrypto's digest, a file read in 1 MiB blocks, many files over the pool. */
#include "ftpipe/base/sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/thread_pool.h"

/* libcrypto fails these only when it cannot allocate, which ftpipe treats as
 * fatal for bookkeeping everywhere (mem.h). */
static void check_evp(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "ftpipe: libcrypto could not %s a SHA-256 digest (out of memory?)\n", what);
        abort();
    }
}

void ft_sha256_init(ft_sha256 *context)
{
    EVP_MD_CTX *evp = EVP_MD_CTX_new();
    check_evp(evp != NULL, "start");
    check_evp(EVP_DigestInit_ex(evp, EVP_sha256(), NULL), "start");
    context->evp = evp;
}

void ft_sha256_update(ft_sha256 *context, const void *bytes, size_t length)
{
    check_evp(EVP_DigestUpdate(context->evp, bytes, length), "update");
}

void ft_sha256_discard(ft_sha256 *context)
{
    EVP_MD_CTX_free(context->evp);
    context->evp = NULL;
}

void ft_sha256_finish_hex(ft_sha256 *context, char out[FT_SHA256_HEX_LENGTH + 1])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    check_evp(EVP_DigestFinal_ex(context->evp, digest, &length), "finish");
    EVP_MD_CTX_free(context->evp);
    context->evp = NULL;
    static const char digits[] = "0123456789abcdef";
    for (unsigned int i = 0; i < length && i < FT_SHA256_HEX_LENGTH / 2; i++) {
        out[2 * i] = digits[digest[i] >> 4];
        out[2 * i + 1] = digits[digest[i] & 15];
    }
    out[FT_SHA256_HEX_LENGTH] = '\0';
}

int ft_sha256_file_hex(const char *path, char out[FT_SHA256_HEX_LENGTH + 1])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ft_error_errno("cannot open %s", path);
    enum { BLOCK_BYTES = 1 << 20 };
    char *block = ft_xmalloc(BLOCK_BYTES);
    ft_sha256 context;
    ft_sha256_init(&context);
    int result = 0;
    for (;;) {
        ssize_t n = read(fd, block, BLOCK_BYTES);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            result = ft_error_errno("cannot read %s", path);
            break;
        }
        if (n == 0)
            break;
        ft_sha256_update(&context, block, (size_t)n);
    }
    free(block);
    close(fd);
    char hex[FT_SHA256_HEX_LENGTH + 1];
    ft_sha256_finish_hex(&context, hex);
    if (result == 0)
        memcpy(out, hex, sizeof hex);
    return result;
}

typedef struct {
    const char *const *paths;
    char (*out)[FT_SHA256_HEX_LENGTH + 1];
    char **errors; /* per file, since ft_error's message belongs to one thread */
} file_batch;

static void hash_one_file(void *context, size_t i, size_t worker)
{
    file_batch *batch = context;
    if (ft_sha256_file_hex(batch->paths[i], batch->out[i]) != 0)
        batch->errors[i] = ft_xstrdup(ft_error_message());
}

int ft_sha256_files_hex(const char *const *paths, size_t count, char (*out)[FT_SHA256_HEX_LENGTH + 1])
{
    file_batch batch = {.paths = paths, .out = out, .errors = ft_xcalloc(count ? count : 1, sizeof(char *))};
    ft_parallel_for(0, count, hash_one_file, &batch, NULL);
    int result = 0;
    for (size_t i = 0; i < count; i++) {
        if (batch.errors[i] && result == 0)
            result = ft_error("%s", batch.errors[i]);
        free(batch.errors[i]);
    }
    free(batch.errors);
    return result;
}
