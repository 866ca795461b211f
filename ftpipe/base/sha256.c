/* sha256: SHA-256 as FIPS 180-4 section 6.2 describes it, with the x86 SHA
 * instructions where the CPU has them (about ten times faster: checking a
 * 15 GB model should not take minutes). */
#include "ftpipe/base/sha256.h"

#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <immintrin.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"

static const uint32_t round_constants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotate_right(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void compress_portable(uint32_t state[8], const uint8_t block[64])
{
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)block[4 * t] << 24 | (uint32_t)block[4 * t + 1] << 16 |
               (uint32_t)block[4 * t + 2] << 8 | (uint32_t)block[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotate_right(w[t - 15], 7) ^ rotate_right(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotate_right(w[t - 2], 17) ^ rotate_right(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int t = 0; t < 64; t++) {
        uint32_t sum1 = rotate_right(e, 6) ^ rotate_right(e, 11) ^ rotate_right(e, 25);
        uint32_t choose = (e & f) ^ (~e & g);
        uint32_t t1 = h + sum1 + choose + round_constants[t] + w[t];
        uint32_t sum0 = rotate_right(a, 2) ^ rotate_right(a, 13) ^ rotate_right(a, 22);
        uint32_t majority = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = sum0 + majority;
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

/* The same rounds with SHA-NI: state is kept as the (ABEF, CDGH) halves the
 * instructions work on; each 128-bit word holds four message words. */
__attribute__((target("sha,sse4.1"))) static void compress_blocks_sha_ni(uint32_t state[8], const uint8_t *data,
                                                                         size_t n_blocks)
{
    const __m128i big_endian = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i dcba = _mm_loadu_si128((const __m128i *)&state[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)&state[4]);
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
    for (; n_blocks > 0; n_blocks--, data += 64) {
        __m128i abef_before = abef, cdgh_before = cdgh;
        __m128i w[4]; /* the last four message vectors, w[i % 4] */
        for (int i = 0; i < 16; i++) {
            __m128i words;
            if (i < 4) {
                words = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16 * i)), big_endian);
            } else {
                __m128i sum = _mm_sha256msg1_epu32(w[i % 4], w[(i - 3) % 4]);
                sum = _mm_add_epi32(sum, _mm_alignr_epi8(w[(i - 1) % 4], w[(i - 2) % 4], 4));
                words = _mm_sha256msg2_epu32(sum, w[(i - 1) % 4]);
            }
            w[i % 4] = words;
            __m128i message = _mm_add_epi32(words, _mm_loadu_si128((const __m128i *)&round_constants[4 * i]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, message);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(message, 0x0E));
        }
        abef = _mm_add_epi32(abef, abef_before);
        cdgh = _mm_add_epi32(cdgh, cdgh_before);
    }
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&state[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&state[4], _mm_alignr_epi8(dchg, feba, 8));
}

static bool portable_forced;

void ft_sha256_force_portable(bool on) { portable_forced = on; }

static bool has_sha_ni;
static pthread_once_t cpu_checked = PTHREAD_ONCE_INIT;

static void check_cpu(void)
{
    /* cpuid rather than __builtin_cpu_supports("sha"), which clang 14 (make fuzz) lacks:
     * leaf 7 EBX bit 29 is SHA, leaf 1 ECX bit 19 is SSE4.1. */
    unsigned int eax, ebx, ecx, edx;
    bool sha = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (ebx & (1u << 29));
    bool sse41 = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 19));
    has_sha_ni = sha && sse41;
}

static void compress_blocks(uint32_t state[8], const uint8_t *data, size_t n_blocks)
{
    pthread_once(&cpu_checked, check_cpu);
    if (has_sha_ni && !portable_forced) {
        compress_blocks_sha_ni(state, data, n_blocks);
        return;
    }
    for (; n_blocks > 0; n_blocks--, data += 64)
        compress_portable(state, data);
}

void ft_sha256_init(ft_sha256 *context)
{
    static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(context->state, initial, sizeof initial);
    context->total_bytes = 0;
    context->block_used = 0;
}

void ft_sha256_update(ft_sha256 *context, const void *bytes, size_t length)
{
    const uint8_t *p = bytes;
    context->total_bytes += length;
    if (context->block_used > 0) {
        size_t take = 64 - context->block_used;
        if (take > length)
            take = length;
        memcpy(context->block + context->block_used, p, take);
        context->block_used += take;
        p += take;
        length -= take;
        if (context->block_used < 64)
            return;
        compress_blocks(context->state, context->block, 1);
        context->block_used = 0;
    }
    compress_blocks(context->state, p, length / 64);
    p += length / 64 * 64;
    length %= 64;
    memcpy(context->block, p, length);
    context->block_used = length;
}

void ft_sha256_finish_hex(ft_sha256 *context, char out[FT_SHA256_HEX_LENGTH + 1])
{
    uint64_t bit_length = context->total_bytes * 8;
    uint8_t padding[72] = {0x80};
    size_t pad = (context->block_used < 56 ? 56 : 120) - context->block_used;
    for (int i = 0; i < 8; i++)
        padding[pad + (size_t)i] = (uint8_t)(bit_length >> (56 - 8 * i));
    ft_sha256_update(context, padding, pad + 8);
    for (int i = 0; i < 8; i++)
        snprintf(out + 8 * i, 9, "%08x", context->state[i]);
}

int ft_sha256_file_hex(const char *path, char out[FT_SHA256_HEX_LENGTH + 1])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ft_error_errno("cannot open %s", path);
    enum { BLOCK_BYTES = 1 << 20 };
    uint8_t *block = ft_xmalloc(BLOCK_BYTES);
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
    if (result == 0)
        ft_sha256_finish_hex(&context, out);
    return result;
}

typedef struct {
    const char *const *paths;
    size_t count;
    char (*out)[FT_SHA256_HEX_LENGTH + 1];
    char **errors; /* per file, since ft_error's message belongs to one thread */
    size_t next;
    pthread_mutex_t lock;
} file_queue;

static void *hash_worker(void *pointer)
{
    file_queue *queue = pointer;
    for (;;) {
        pthread_mutex_lock(&queue->lock);
        size_t i = queue->next++;
        pthread_mutex_unlock(&queue->lock);
        if (i >= queue->count)
            return NULL;
        if (ft_sha256_file_hex(queue->paths[i], queue->out[i]) != 0)
            queue->errors[i] = ft_xstrdup(ft_error_message());
    }
}

int ft_sha256_files_hex(const char *const *paths, size_t count, char (*out)[FT_SHA256_HEX_LENGTH + 1])
{
    file_queue queue = {.paths = paths, .count = count, .out = out};
    queue.errors = ft_xcalloc(count ? count : 1, sizeof *queue.errors);
    pthread_mutex_init(&queue.lock, NULL);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    size_t n_threads = cores > 1 ? (size_t)cores : 1;
    if (n_threads > count)
        n_threads = count;
    pthread_t *threads = ft_xcalloc(n_threads ? n_threads : 1, sizeof *threads);
    size_t started = 0;
    while (started < n_threads && pthread_create(&threads[started], NULL, hash_worker, &queue) == 0)
        started++;
    hash_worker(&queue); /* the calling thread helps, and finishes alone if no thread started */
    for (size_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    int result = 0;
    for (size_t i = 0; i < count; i++) {
        if (queue.errors[i] && result == 0)
            result = ft_error("%s", queue.errors[i]);
        free(queue.errors[i]);
    }
    free(queue.errors);
    free(threads);
    pthread_mutex_destroy(&queue.lock);
    return result;
}
