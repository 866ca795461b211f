/* tree_copy: a parallel copy of a folder, file ranges shared among threads. */
#include "ftpipe/transfer/tree_copy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/hash.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/thread_pool.h"

/* Small enough to stay in cache between the read, the write and the read back. */
#define BUFFER_BYTES ((size_t)256 << 10)

typedef struct {
    char *source;
    char *destination;
    uint64_t size_bytes;
    mode_t mode;
    size_t n_ranges;
    atomic_size_t ranges_left; /* the range that brings it to 0 sets the mode */
} file_job;

typedef struct {
    char *destination;
    mode_t mode;
} folder_job;

typedef struct {
    file_job *files;
    size_t n_files, files_capacity;
    folder_job *folders; /* parents before children */
    size_t n_folders, folders_capacity;
    ft_tree_summary summary;
} listing;

static void listing_free(listing *list)
{
    for (size_t i = 0; i < list->n_files; i++) {
        free(list->files[i].source);
        free(list->files[i].destination);
    }
    for (size_t i = 0; i < list->n_folders; i++)
        free(list->folders[i].destination);
    free(list->files);
    free(list->folders);
}

static int copy_link(const char *source, const char *destination)
{
    char target[4096];
    ssize_t n = readlink(source, target, sizeof target - 1);
    if (n < 0)
        return ft_error_errno("cannot read the symbolic link %s", source);
    target[n] = '\0';
    if (symlink(target, destination) != 0)
        return ft_error_errno("cannot create the symbolic link %s", destination);
    return 0;
}

/* Lists source below; when destination is not NULL also creates the folders
 * (owner-writable until the copy ends) and the links there. */
static int walk(listing *list, const char *source, const char *destination, bool is_root)
{
    struct stat st;
    if (lstat(source, &st) != 0)
        return ft_error_errno("cannot read %s", source);
    if (S_ISLNK(st.st_mode)) {
        list->summary.n_links++;
        return destination ? copy_link(source, destination) : 0;
    }
    if (S_ISREG(st.st_mode)) {
        ft_grow((void **)&list->files, &list->files_capacity, list->n_files + 1, sizeof *list->files);
        file_job *file = &list->files[list->n_files++];
        memset(file, 0, sizeof *file);
        file->source = ft_xstrdup(source);
        file->destination = destination ? ft_xstrdup(destination) : NULL;
        file->size_bytes = (uint64_t)st.st_size;
        file->mode = st.st_mode & 0777;
        list->summary.n_files++;
        list->summary.total_bytes += file->size_bytes;
        return 0;
    }
    if (!S_ISDIR(st.st_mode))
        return ft_error("cannot copy %s: not a file, folder or symbolic link", source);
    if (!is_root)
        list->summary.n_dirs++;
    if (destination) {
        if (mkdir(destination, 0700) != 0)
            return ft_error_errno("cannot create folder %s", destination);
        ft_grow((void **)&list->folders, &list->folders_capacity, list->n_folders + 1, sizeof *list->folders);
        list->folders[list->n_folders++] = (folder_job){ft_xstrdup(destination), st.st_mode & 0777};
    }
    DIR *dir = opendir(source);
    if (!dir)
        return ft_error_errno("cannot read folder %s", source);
    int result = 0;
    struct dirent *item;
    while (result == 0 && (item = readdir(dir))) {
        if (strcmp(item->d_name, ".") == 0 || strcmp(item->d_name, "..") == 0)
            continue;
        char *child_source = ft_path_join(source, item->d_name);
        char *child_destination = destination ? ft_path_join(destination, item->d_name) : NULL;
        result = walk(list, child_source, child_destination, false);
        free(child_source);
        free(child_destination);
    }
    closedir(dir);
    return result;
}

int ft_tree_measure(const char *source, ft_tree_summary *out)
{
    listing list = {0};
    int result = walk(&list, source, NULL, true);
    *out = list.summary;
    listing_free(&list);
    return result;
}

/* --- the copy --- */

typedef struct {
    file_job *file;
    uint64_t offset, length;
} range_task;

typedef struct {
    range_task *tasks;
    size_t n_tasks;
    size_t n_threads;
    char **buffers; /* one per pool worker, made on its first range */
    atomic_bool stop;
    atomic_uint_fast64_t copied_bytes;
    bool verify;
    pthread_mutex_t lock;
    char *error; /* the first worker's failure; the calling thread reports it */
    bool stopped; /* by the progress callback */
    const ft_tree_copy_options *options;
    uint64_t total_bytes;
} copy_run;

static void fail_run(copy_run *run, char *message)
{
    pthread_mutex_lock(&run->lock);
    if (!run->error)
        run->error = message;
    else
        free(message);
    pthread_mutex_unlock(&run->lock);
    atomic_store(&run->stop, true);
}

static int fail_errno(copy_run *run, const char *what, const char *path)
{
    fail_run(run, ft_xasprintf("%s %s: %s", what, path, strerror(errno)));
    return -1;
}

static int write_all(int fd, const char *bytes, size_t length, uint64_t offset)
{
    while (length > 0) {
        ssize_t n = pwrite(fd, bytes, length, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        bytes += n;
        length -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

/* Reads exactly length bytes; a short read means the file shrank. */
static ssize_t read_full(int fd, char *bytes, size_t length, uint64_t offset)
{
    size_t done = 0;
    while (done < length) {
        ssize_t n = pread(fd, bytes + done, length - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

/* The kernel copies without passing the bytes through us; 1 when it cannot
 * (another file system, an old kernel), so the caller copies by hand. */
static int copy_in_kernel(copy_run *run, const range_task *task, int in, int out)
{
    loff_t in_offset = (loff_t)task->offset, out_offset = (loff_t)task->offset;
    uint64_t left = task->length;
    while (left > 0 && !atomic_load(&run->stop)) {
        ssize_t n = copy_file_range(in, &in_offset, out, &out_offset, left, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && left == task->length &&
            (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL))
            return 1;
        if (n < 0)
            return fail_errno(run, "cannot copy", task->file->source);
        if (n == 0) {
            fail_run(run, ft_xasprintf("%s shrank while it was copied", task->file->source));
            return -1;
        }
        left -= (uint64_t)n;
        atomic_fetch_add(&run->copied_bytes, (uint64_t)n);
    }
    return 0;
}

/* With verify, each piece is read back from the copy right after it is
 * written, while it is still in the processor's cache, so checking costs no
 * second pass over memory; the hashes of what was read and of what the copy
 * holds are compared once the range is done. */
static int copy_by_hand(copy_run *run, const range_task *task, int in, int out, char *buffer, char *check_buffer)
{
    const file_job *file = task->file;
    ft_hasher *read_hash = run->verify ? ft_hasher_new() : NULL;
    ft_hasher *written_hash = run->verify ? ft_hasher_new() : NULL;
    int result = 0;
    for (uint64_t done = 0; done < task->length && result == 0 && !atomic_load(&run->stop);) {
        size_t piece = task->length - done < BUFFER_BYTES ? (size_t)(task->length - done) : BUFFER_BYTES;
        uint64_t offset = task->offset + done;
        ssize_t n = read_full(in, buffer, piece, offset);
        if (n < (ssize_t)piece) {
            if (n < 0) {
                result = fail_errno(run, "cannot read", file->source);
            } else {
                fail_run(run, ft_xasprintf("%s shrank while it was copied", file->source));
                result = -1;
            }
            break;
        }
        if (write_all(out, buffer, piece, offset) != 0) {
            result = fail_errno(run, "cannot write", file->destination);
            break;
        }
        if (read_hash) {
            ft_hasher_update(read_hash, buffer, piece);
            if (read_full(out, check_buffer, piece, offset) != (ssize_t)piece) {
                result = fail_errno(run, "cannot read back", file->destination);
                break;
            }
            ft_hasher_update(written_hash, check_buffer, piece);
        }
        done += piece;
        atomic_fetch_add(&run->copied_bytes, piece);
    }
    if (read_hash && result == 0 && !atomic_load(&run->stop) &&
        !ft_hash_equal(ft_hasher_digest(read_hash), ft_hasher_digest(written_hash))) {
        fail_run(run, ft_xasprintf("the copy %s differs from %s in bytes %llu to %llu after writing: the "
                                   "target's file system or memory may be failing",
                                   file->destination, file->source, (unsigned long long)task->offset,
                                   (unsigned long long)(task->offset + task->length)));
        result = -1;
    }
    ft_hasher_free(read_hash);
    ft_hasher_free(written_hash);
    return result;
}

static int copy_range(copy_run *run, const range_task *task, char *buffer, char *check_buffer)
{
    file_job *file = task->file;
    bool whole = file->n_ranges == 1;
    int in = open(file->source, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return fail_errno(run, "cannot open", file->source);
    /* A file in several ranges was created, at its full size, before the threads started. */
    int out = open(file->destination, O_RDWR | O_CLOEXEC | (whole ? O_CREAT | O_EXCL : 0), 0600);
    if (out < 0) {
        close(in);
        return fail_errno(run, "cannot create", file->destination);
    }
    posix_fadvise(in, (off_t)task->offset, (off_t)task->length, POSIX_FADV_SEQUENTIAL);
    int result = run->verify ? 1 : copy_in_kernel(run, task, in, out);
    if (result == 1)
        result = copy_by_hand(run, task, in, out, buffer, check_buffer);
    if (result == 0 && whole && fchmod(out, file->mode) != 0)
        result = fail_errno(run, "cannot set the mode of", file->destination);
    if (close(out) != 0 && result == 0)
        result = fail_errno(run, "cannot write", file->destination);
    close(in);
    bool last_range = !whole && result == 0 && atomic_fetch_sub(&file->ranges_left, 1) == 1;
    if (last_range && chmod(file->destination, file->mode) != 0)
        result = fail_errno(run, "cannot set the mode of", file->destination);
    return result;
}

/* Asks the kernel to start reading a task that another round will copy, so the
 * disk stays busy while the threads copy what is already in memory. */
static void prefetch(const range_task *task)
{
    int fd = open(task->file->source, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return; /* copy_range will say why */
    posix_fadvise(fd, (off_t)task->offset, (off_t)task->length, POSIX_FADV_WILLNEED);
    close(fd);
}

static void copy_one_range(void *context, size_t i, size_t worker)
{
    copy_run *run = context;
    if (atomic_load(&run->stop))
        return;
    if (!run->buffers[worker] && !(run->buffers[worker] = malloc(2 * BUFFER_BYTES))) {
        fail_run(run, ft_xstrdup("out of memory for a copy buffer"));
        return;
    }
    if (i + run->n_threads < run->n_tasks)
        prefetch(&run->tasks[i + run->n_threads]);
    char *buffer = run->buffers[worker];
    copy_range(run, &run->tasks[i], buffer, buffer + BUFFER_BYTES);
}

static int compare_tasks_longest_first(const void *a, const void *b)
{
    const range_task *x = a, *y = b;
    return x->length < y->length ? 1 : x->length > y->length ? -1 : 0;
}

/* Splits files into range tasks; files of several ranges are created now, at
 * their full size, so each range can be written wherever it falls. */
static int plan_tasks(listing *list, copy_run *run)
{
    for (size_t i = 0; i < list->n_files; i++) {
        file_job *file = &list->files[i];
        uint64_t n = (file->size_bytes + FT_TREE_COPY_RANGE_BYTES - 1) / FT_TREE_COPY_RANGE_BYTES;
        file->n_ranges = n ? (size_t)n : 1;
        atomic_init(&file->ranges_left, file->n_ranges);
        run->n_tasks += file->n_ranges;
        if (file->n_ranges == 1)
            continue;
        int fd = open(file->destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            return ft_error_errno("cannot create %s", file->destination);
        int result = ftruncate(fd, (off_t)file->size_bytes);
        if (result != 0)
            ft_error_errno("cannot size %s", file->destination);
        close(fd);
        if (result != 0)
            return -1;
    }
    run->tasks = ft_xcalloc(run->n_tasks + 1, sizeof *run->tasks);
    size_t t = 0;
    for (size_t i = 0; i < list->n_files; i++) {
        file_job *file = &list->files[i];
        for (size_t r = 0; r < file->n_ranges; r++) {
            uint64_t offset = (uint64_t)r * FT_TREE_COPY_RANGE_BYTES;
            uint64_t length = file->size_bytes - offset < FT_TREE_COPY_RANGE_BYTES ? file->size_bytes - offset
                                                                                  : FT_TREE_COPY_RANGE_BYTES;
            run->tasks[t++] = (range_task){file, offset, length};
        }
    }
    qsort(run->tasks, run->n_tasks, sizeof *run->tasks, compare_tasks_longest_first);
    return 0;
}

/* Asks the caller's progress callback; non-zero when it stops the copy. */
static int report_progress(void *context)
{
    copy_run *run = context;
    uint64_t copied_bytes = atomic_load(&run->copied_bytes);
    if (run->options->progress &&
        run->options->progress(run->options->progress_context, copied_bytes, run->total_bytes) &&
        !atomic_load(&run->stop)) {
        run->stopped = true;
        atomic_store(&run->stop, true);
    }
    return run->stopped;
}

/* Runs the ranges on n_threads threads while the calling thread reports
 * progress before, during and after. */
static void run_workers(copy_run *run)
{
    if (report_progress(run))
        return;
    ft_thread_pool *pool = ft_thread_pool_new(run->n_threads + 1);
    size_t n_workers = ft_thread_pool_workers(pool);
    run->buffers = ft_xcalloc(n_workers, sizeof *run->buffers);
    ft_pool_watch watch = {report_progress, run, 100};
    ft_thread_pool_run(pool, run->n_tasks, copy_one_range, run, &watch);
    ft_thread_pool_free(pool);
    for (size_t i = 0; i < n_workers; i++)
        free(run->buffers[i]);
    free(run->buffers);
    if (!run->error)
        report_progress(run);
}

int ft_tree_copy(const char *source, const char *destination, const ft_tree_copy_options *options,
                 ft_tree_summary *out)
{
    listing list = {0};
    copy_run run = {.verify = options->verify, .options = options};
    atomic_init(&run.stop, false);
    atomic_init(&run.copied_bytes, 0);
    pthread_mutex_init(&run.lock, NULL);
    int result = walk(&list, source, destination, true);
    if (result == 0)
        result = plan_tasks(&list, &run);
    if (result == 0 && run.n_tasks > 0) {
        size_t n_threads = options->threads > 0 ? (size_t)options->threads : (size_t)sysconf(_SC_NPROCESSORS_ONLN);
        if (n_threads > run.n_tasks)
            n_threads = run.n_tasks;
        run.n_threads = n_threads ? n_threads : 1;
        run.total_bytes = list.summary.total_bytes;
        run_workers(&run);
        if (run.error)
            result = ft_error("%s", run.error);
        else if (run.stopped)
            result = ft_error("the copy of %s to %s was stopped", source, destination);
    }
    /* Children first, so that a read-only folder is closed only once it is full. */
    for (size_t i = list.n_folders; i-- > 0 && result == 0;)
        if (chmod(list.folders[i].destination, list.folders[i].mode) != 0)
            result = ft_error_errno("cannot set the mode of %s", list.folders[i].destination);
    if (out)
        *out = list.summary;
    free(run.error);
    free(run.tasks);
    pthread_mutex_destroy(&run.lock);
    listing_free(&list);
    return result;
}
