/* An LD_PRELOAD library that makes the Nth call of a kind fail, for
 * tests/e2e/test_fault_injection.sh. Only ftpipe-full processes count (not the
 * shells a stage starts, nor `ftpipe`, which writes nothing but an answer from
 * the record and otherwise hands the run to ftpipe-full by exec, where counting
 * starts afresh); each process counts on its own (a forked stage starts from its
 * parent's count).
 *   FT_FAULT_KIND  io: write, pwrite, writev, fsync, fdatasync, rename, copy_file_range
 *                  alloc: malloc, calloc, realloc
 *   FT_FAULT_AT    N: the Nth such call fails (io: with EIO when N is odd, else
 *                  ENOSPC; alloc: returns NULL)
 *   FT_FAULT_COUNT_FILE  where each process appends its call count at exit (or _exit)
 *   FT_FAULT_LOG   where a process that failed a call appends "CALL PATH" (io: the
 *                  file written, or the rename's source), so a test can name it
 * Built by the Makefile as build/fault_inject.so. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);

static int active;        /* this process is ftpipe and a kind is chosen */
static int kind_alloc;    /* 1: allocations, 0: io */
static long fail_at;      /* 0: only count */
static long calls;

static void write_count(void);

__attribute__((constructor)) static void start(void)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    const char *base = strrchr(exe, '/');
    const char *kind = getenv("FT_FAULT_KIND");
    if (!kind || !base || strcmp(base + 1, "ftpipe-full") != 0)
        return;
    kind_alloc = strcmp(kind, "alloc") == 0;
    const char *at = getenv("FT_FAULT_AT");
    fail_at = at ? atol(at) : 0;
    active = 1;
}

__attribute__((destructor)) static void finish(void)
{
    write_count();
}

/* Stage processes end with _exit, which runs no destructor: they count here. */
void _exit(int status)
{
    write_count();
    __typeof__(&_exit) real = (__typeof__(&_exit))dlsym(RTLD_NEXT, "_exit");
    real(status);
    __builtin_unreachable();
}

static void write_count(void)
{
    const char *file = getenv("FT_FAULT_COUNT_FILE");
    if (!active || !file)
        return;
    active = 0;
    char line[32];
    int length = snprintf(line, sizeof line, "%ld\n", calls);
    int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        ssize_t written = write(fd, line, (size_t)length); /* active is 0 now: not counted */
        (void)written;
        close(fd);
    }
}

/* True when this call is the one to fail. */
static int should_fail(int alloc)
{
    if (!active || alloc != kind_alloc)
        return 0;
    calls++;
    return fail_at > 0 && calls == fail_at;
}

/* Appends "CALL PATH" to FT_FAULT_LOG, with the real write (the failing call is spent). */
static void log_failure(const char *call, int fd, const char *path)
{
    const char *file = getenv("FT_FAULT_LOG");
    if (!file)
        return;
    char target[4096] = "?";
    if (path) {
        snprintf(target, sizeof target, "%s", path);
    } else {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        target[n > 0 ? n : 1] = '\0';
    }
    char line[4200];
    int length = snprintf(line, sizeof line, "%s %s\n", call, target);
    int out = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (out >= 0) {
        __typeof__(&write) real_write = (__typeof__(&write))dlsym(RTLD_NEXT, "write");
        ssize_t written = real_write(out, line, (size_t)length);
        (void)written;
        close(out);
    }
}

static int io_errno(void) { return fail_at % 2 ? EIO : ENOSPC; }

#define REAL(name) static __typeof__(&name) real; if (!real) real = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *data, size_t size)
{
    REAL(write);
    if (should_fail(0)) { log_failure("write", fd, NULL); errno = io_errno(); return -1; }
    return real(fd, data, size);
}

ssize_t pwrite(int fd, const void *data, size_t size, off_t offset)
{
    REAL(pwrite);
    if (should_fail(0)) { log_failure("pwrite", fd, NULL); errno = io_errno(); return -1; }
    return real(fd, data, size, offset);
}

ssize_t pwrite64(int fd, const void *data, size_t size, off_t offset)
{
    REAL(pwrite64);
    if (should_fail(0)) { log_failure("pwrite64", fd, NULL); errno = io_errno(); return -1; }
    return real(fd, data, size, offset);
}

ssize_t writev(int fd, const struct iovec *parts, int count)
{
    REAL(writev);
    if (should_fail(0)) { log_failure("writev", fd, NULL); errno = io_errno(); return -1; }
    return real(fd, parts, count);
}

int fsync(int fd)
{
    REAL(fsync);
    if (should_fail(0)) { log_failure("fsync", fd, NULL); errno = io_errno(); return -1; }
    return real(fd);
}

int fdatasync(int fd)
{
    REAL(fdatasync);
    if (should_fail(0)) { log_failure("fdatasync", fd, NULL); errno = io_errno(); return -1; }
    return real(fd);
}

int rename(const char *from, const char *to)
{
    REAL(rename);
    if (should_fail(0)) { log_failure("rename", -1, from); errno = io_errno(); return -1; }
    return real(from, to);
}

int renameat(int from_dir, const char *from, int to_dir, const char *to)
{
    REAL(renameat);
    if (should_fail(0)) { log_failure("renameat", -1, from); errno = io_errno(); return -1; }
    return real(from_dir, from, to_dir, to);
}

ssize_t copy_file_range(int in, off_t *in_offset, int out, off_t *out_offset, size_t size, unsigned int flags)
{
    REAL(copy_file_range);
    if (should_fail(0)) { log_failure("copy_file_range", out, NULL); errno = io_errno(); return -1; }
    return real(in, in_offset, out, out_offset, size, flags);
}

void *malloc(size_t size)
{
    if (should_fail(1)) { errno = ENOMEM; return NULL; }
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size)
{
    if (should_fail(1)) { errno = ENOMEM; return NULL; }
    return __libc_calloc(count, size);
}

void *realloc(void *pointer, size_t size)
{
    if (should_fail(1)) { errno = ENOMEM; return NULL; }
    return __libc_realloc(pointer, size);
}
