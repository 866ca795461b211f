/* hash: XXH3-128 of bytes and of files, files read by a pool of threads.
 *
 * Large ranges are mapped rather than read: hashing straight from the page cache
 * skips a copy, up to twice as fast as read() into a buffer when the file is
 * cached (tests/bench/hash.sh). A mapped file that shrinks under us raises
 * SIGBUS; a per-thread guard turns that into an error instead of a crash. */
#include "ftpipe/base/hash.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY /* for sizeof(XXH3_state_t) */
#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xxh_x86dispatch.h> /* the widest vector unit the CPU has, chosen at run time */
#endif

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/thread_pool.h"

/* Up to this size a range is read into a buffer (cheaper than mapping). */
#define SMALL_RANGE_BYTES ((size_t)256 << 10)
#define MAX_THREADS 256

static ft_hash from_xxh(XXH128_hash_t value) { return (ft_hash){.high = value.high64, .low = value.low64}; }

ft_hash ft_hash_bytes(const void *bytes, size_t length)
{
    static const char empty;
    return from_xxh(XXH3_128bits(length ? bytes : &empty, length));
}

void ft_hash_to_hex(ft_hash hash, char out[FT_HASH_HEX_LENGTH + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[i] = digits[(hash.high >> (60 - 4 * i)) & 15];
        out[16 + i] = digits[(hash.low >> (60 - 4 * i)) & 15];
    }
    out[FT_HASH_HEX_LENGTH] = '\0';
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int ft_hash_from_hex(const char *hex, ft_hash *out)
{
    uint64_t halves[2] = {0, 0};
    for (int i = 0; i < FT_HASH_HEX_LENGTH; i++) {
        int digit = hex_digit(hex[i]);
        if (digit < 0)
            return ft_error("\"%.40s\" is not a hash: expected %d hex digits", hex, FT_HASH_HEX_LENGTH);
        halves[i / 16] = halves[i / 16] << 4 | (uint64_t)digit;
    }
    if (hex[FT_HASH_HEX_LENGTH] != '\0')
        return ft_error("\"%.40s\" is not a hash: expected %d hex digits", hex, FT_HASH_HEX_LENGTH);
    out->high = halves[0];
    out->low = halves[1];
    return 0;
}

int ft_hash_equal(ft_hash a, ft_hash b) { return a.high == b.high && a.low == b.low; }

/* XXH3's state wants 64-byte alignment, more than malloc promises. */
struct ft_hasher {
    void *memory;
    XXH3_state_t *state;
};

ft_hasher *ft_hasher_new(void)
{
    ft_hasher *hasher = ft_xmalloc(sizeof *hasher);
    hasher->memory = ft_xmalloc(sizeof(XXH3_state_t) + 64);
    hasher->state = (XXH3_state_t *)(((uintptr_t)hasher->memory + 63) & ~(uintptr_t)63);
    XXH3_128bits_reset(hasher->state);
    return hasher;
}

void ft_hasher_update(ft_hasher *hasher, const void *bytes, size_t length)
{
    if (length)
        XXH3_128bits_update(hasher->state, bytes, length);
}

ft_hash ft_hasher_digest(const ft_hasher *hasher) { return from_xxh(XXH3_128bits_digest(hasher->state)); }

void ft_hasher_free(ft_hasher *hasher)
{
    if (!hasher)
        return;
    free(hasher->memory);
    free(hasher);
}

/* --- the SIGBUS guard --- */

static _Thread_local sigjmp_buf *volatile bus_error_jump; /* set while this thread reads a mapping */
static struct sigaction previous_bus_action;
static pthread_once_t bus_handler_once = PTHREAD_ONCE_INIT;

static void on_bus_error(int signal_number, siginfo_t *info, void *context)
{
    if (bus_error_jump)
        siglongjmp(*bus_error_jump, 1);
    /* Not a mapping of ours: restore whoever handled it before; returning re-runs
     * the faulting access, which then reaches them. */
    sigaction(SIGBUS, &previous_bus_action, NULL);
}

static void install_bus_handler(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_bus_error;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, &previous_bus_action);
}

/* --- hashing one range of a file --- */

typedef struct {
    const char *path;
    uint64_t size_bytes; /* as planned; a different size when read is an error */
    size_t n_chunks;
    ft_hash *chunk_hashes;
} file_job;

typedef struct {
    file_job *file;
    size_t chunk;
    int error_number;     /* 0, an errno, or -1: the file changed while being read */
    const char *error_what;
} hash_task;

typedef struct {
    char *buffer;         /* SMALL_RANGE_BYTES */
    ft_hasher *hasher;
} worker_memory;

typedef struct {
    hash_task *tasks;
    size_t n_tasks;
    worker_memory *memory; /* one per pool worker, made on its first task */
} task_queue;

static int fail_task(hash_task *task, const char *what, int error_number)
{
    task->error_what = what;
    task->error_number = error_number;
    return -1;
}

static int hash_small_range(int fd, uint64_t offset, size_t length, worker_memory *memory, hash_task *task,
                            ft_hash *out)
{
    size_t done = 0;
    while (done < length) {
        ssize_t n = pread(fd, memory->buffer + done, length - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fail_task(task, "cannot read", errno);
        if (n == 0)
            return fail_task(task, "changed while it was being hashed", -1);
        done += (size_t)n;
    }
    *out = ft_hash_bytes(memory->buffer, length);
    return 0;
}

/* false when the file shrank under the mapping. The signal mask is saved and
 * restored, so SIGBUS is not left blocked after the jump. */
static bool update_guarded(XXH3_state_t *state, const void *mapping, size_t length)
{
    sigjmp_buf jump;
    if (sigsetjmp(jump, 1) != 0) {
        bus_error_jump = NULL;
        return false;
    }
    bus_error_jump = &jump;
    XXH3_128bits_update(state, mapping, length);
    bus_error_jump = NULL;
    return true;
}

/* One mapping per chunk: fewer mappings mean fewer TLB shootdowns when many
 * threads unmap at once, and prefaulting (MAP_POPULATE) measured slower. */
static int hash_mapped_range(int fd, uint64_t offset, uint64_t length, worker_memory *memory, hash_task *task,
                             ft_hash *out)
{
    pthread_once(&bus_handler_once, install_bus_handler);
    void *mapping = mmap(NULL, (size_t)length, PROT_READ, MAP_PRIVATE, fd, (off_t)offset);
    if (mapping == MAP_FAILED)
        return fail_task(task, "cannot map", errno);
    madvise(mapping, (size_t)length, MADV_SEQUENTIAL);
    XXH3_state_t *state = memory->hasher->state;
    XXH3_128bits_reset(state);
    bool complete = update_guarded(state, mapping, (size_t)length);
    munmap(mapping, (size_t)length);
    if (!complete)
        return fail_task(task, "changed while it was being hashed", -1);
    *out = from_xxh(XXH3_128bits_digest(state));
    return 0;
}

static void run_task(hash_task *task, worker_memory *memory)
{
    file_job *file = task->file;
    int fd = open(file->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fail_task(task, "cannot open", errno);
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        fail_task(task, "cannot stat", errno);
    } else if ((uint64_t)st.st_size != file->size_bytes) {
        fail_task(task, "changed while it was being hashed", -1);
    } else {
        uint64_t offset = (uint64_t)task->chunk * FT_HASH_CHUNK_BYTES;
        uint64_t left = file->size_bytes - offset;
        uint64_t length = left < FT_HASH_CHUNK_BYTES ? left : FT_HASH_CHUNK_BYTES;
        ft_hash *out = &file->chunk_hashes[task->chunk];
        if (length <= SMALL_RANGE_BYTES)
            hash_small_range(fd, offset, (size_t)length, memory, task, out);
        else
            hash_mapped_range(fd, offset, length, memory, task, out);
    }
    close(fd);
}

static void run_one_task(void *context, size_t index, size_t worker)
{
    task_queue *queue = context;
    worker_memory *memory = &queue->memory[worker];
    if (!memory->buffer) {
        memory->buffer = ft_xmalloc(SMALL_RANGE_BYTES);
        memory->hasher = ft_hasher_new();
    }
    run_task(&queue->tasks[index], memory);
}

/* --- many files over a pool --- */

static size_t resolve_threads(int threads)
{
    if (threads <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > 0 ? (int)cores : 1;
    }
    return threads > MAX_THREADS ? MAX_THREADS : (size_t)threads;
}

static void run_pool(task_queue *queue, size_t n_threads)
{
    if (n_threads > queue->n_tasks)
        n_threads = queue->n_tasks ? queue->n_tasks : 1;
    ft_thread_pool *pool = ft_thread_pool_new(n_threads);
    size_t n_workers = ft_thread_pool_workers(pool);
    queue->memory = ft_xcalloc(n_workers, sizeof *queue->memory);
    ft_thread_pool_run(pool, queue->n_tasks, run_one_task, queue, NULL);
    ft_thread_pool_free(pool);
    for (size_t i = 0; i < n_workers; i++) {
        free(queue->memory[i].buffer);
        ft_hasher_free(queue->memory[i].hasher);
    }
    free(queue->memory);
}

static ft_hash combine_chunks(const file_job *file)
{
    if (file->n_chunks == 1)
        return file->chunk_hashes[0];
    ft_hasher *hasher = ft_hasher_new();
    for (size_t i = 0; i < file->n_chunks; i++) {
        XXH128_canonical_t canonical;
        XXH128_canonicalFromHash(&canonical,
                                 (XXH128_hash_t){.low64 = file->chunk_hashes[i].low,
                                                 .high64 = file->chunk_hashes[i].high});
        ft_hasher_update(hasher, canonical.digest, sizeof canonical.digest);
    }
    unsigned char size[8];
    for (int i = 0; i < 8; i++)
        size[i] = (unsigned char)(file->size_bytes >> (8 * i));
    ft_hasher_update(hasher, size, sizeof size);
    ft_hash result = ft_hasher_digest(hasher);
    ft_hasher_free(hasher);
    return result;
}

/* --- a file's hash from its bytes in order --- */

struct ft_file_hasher {
    ft_hasher *chunk;      /* the chunk being fed */
    uint64_t chunk_bytes;  /* fed into it so far */
    file_job job;          /* finished chunks' hashes, and the size */
    size_t capacity;
};

ft_file_hasher *ft_file_hasher_new(void)
{
    ft_file_hasher *hasher = ft_xcalloc(1, sizeof *hasher);
    hasher->chunk = ft_hasher_new();
    return hasher;
}

void ft_file_hasher_reset(ft_file_hasher *hasher)
{
    ft_hasher_free(hasher->chunk);
    hasher->chunk = ft_hasher_new();
    hasher->chunk_bytes = 0;
    hasher->job.n_chunks = 0;
    hasher->job.size_bytes = 0;
}

static void finish_chunk(ft_file_hasher *hasher)
{
    ft_grow((void **)&hasher->job.chunk_hashes, &hasher->capacity, hasher->job.n_chunks + 1,
            sizeof *hasher->job.chunk_hashes);
    hasher->job.chunk_hashes[hasher->job.n_chunks++] = ft_hasher_digest(hasher->chunk);
    ft_hasher_free(hasher->chunk);
    hasher->chunk = ft_hasher_new();
    hasher->chunk_bytes = 0;
}

void ft_file_hasher_update(ft_file_hasher *hasher, const void *bytes, size_t length)
{
    const unsigned char *p = bytes;
    while (length > 0) {
        if (hasher->chunk_bytes == FT_HASH_CHUNK_BYTES)
            finish_chunk(hasher);
        uint64_t room = FT_HASH_CHUNK_BYTES - hasher->chunk_bytes;
        size_t n = length < room ? length : (size_t)room;
        ft_hasher_update(hasher->chunk, p, n);
        hasher->chunk_bytes += n;
        hasher->job.size_bytes += n;
        p += n;
        length -= n;
    }
}

uint64_t ft_file_hasher_bytes(const ft_file_hasher *hasher) { return hasher->job.size_bytes; }

ft_hash ft_file_hasher_digest(ft_file_hasher *hasher)
{
    /* The last chunk counts even when partial (or empty, for an empty file). */
    if (hasher->chunk_bytes > 0 || hasher->job.n_chunks == 0)
        finish_chunk(hasher);
    return combine_chunks(&hasher->job);
}

void ft_file_hasher_free(ft_file_hasher *hasher)
{
    if (!hasher)
        return;
    ft_hasher_free(hasher->chunk);
    free(hasher->job.chunk_hashes);
    free(hasher);
}

static int plan_files(const char *const *paths, size_t count, file_job *files, size_t *n_tasks)
{
    *n_tasks = 0;
    for (size_t i = 0; i < count; i++) {
        struct stat st;
        if (stat(paths[i], &st) != 0)
            return ft_error_errno("cannot hash %s", paths[i]);
        if (!S_ISREG(st.st_mode))
            return ft_error("cannot hash %s: not a regular file", paths[i]);
        files[i].path = paths[i];
        files[i].size_bytes = (uint64_t)st.st_size;
        uint64_t n_chunks = (files[i].size_bytes + FT_HASH_CHUNK_BYTES - 1) / FT_HASH_CHUNK_BYTES;
        files[i].n_chunks = n_chunks ? (size_t)n_chunks : 1;
        files[i].chunk_hashes = ft_xcalloc(files[i].n_chunks, sizeof(ft_hash));
        *n_tasks += files[i].n_chunks;
    }
    return 0;
}

/* Bytes of files hashed by this process, for FTPIPE_STATS (a no-op hashes none). */
static _Atomic uint64_t file_bytes_hashed;

uint64_t ft_hash_file_bytes_total(void) { return atomic_load(&file_bytes_hashed); }

int ft_hash_files(const char *const *paths, size_t count, int threads, ft_hash *out)
{
    file_job *files = ft_xcalloc(count + 1, sizeof *files);
    task_queue queue = {.tasks = NULL, .n_tasks = 0};
    int result = plan_files(paths, count, files, &queue.n_tasks);
    if (result == 0) {
        queue.tasks = ft_xcalloc(queue.n_tasks + 1, sizeof *queue.tasks);
        size_t t = 0;
        for (size_t i = 0; i < count; i++)
            for (size_t chunk = 0; chunk < files[i].n_chunks; chunk++)
                queue.tasks[t++] = (hash_task){.file = &files[i], .chunk = chunk};
        run_pool(&queue, resolve_threads(threads));
        for (size_t i = 0; i < queue.n_tasks && result == 0; i++) {
            const hash_task *task = &queue.tasks[i];
            if (task->error_number > 0) {
                errno = task->error_number;
                result = ft_error_errno("%s %s", task->error_what, task->file->path);
            } else if (task->error_number < 0) {
                result = ft_error("%s %s: run again once nothing is writing it", task->file->path,
                                  task->error_what);
            }
        }
        for (size_t i = 0; i < count && result == 0; i++) {
            out[i] = combine_chunks(&files[i]);
            atomic_fetch_add(&file_bytes_hashed, files[i].size_bytes);
        }
    }
    for (size_t i = 0; i < count; i++)
        free(files[i].chunk_hashes);
    free(files);
    free(queue.tasks);
    return result;
}

int ft_hash_file(const char *path, int threads, ft_hash *out) { return ft_hash_files(&path, 1, threads, out); }
