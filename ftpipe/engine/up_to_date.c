/* up_to_date: the no-op's answer from a record of stats. */
#include "ftpipe/engine/up_to_date.h"

#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/hash.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/base/strmap.h"
#include "ftpipe/base/thread_pool.h"
#include "ftpipe/engine/lock_file.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/engine/status_lines.h"

#define RECORD_HEADER "ftpipe up-to-date 4\n"

/* A stat as the record writes it: device, inode, size and mtime in nanoseconds,
 * each as 16 hex digits and a space. Fixed widths let a check format the stat
 * it took and compare bytes: no number is parsed (a no-op compares 20,000 of
 * them at 10,000 stages). */
#define STAT_TEXT_LENGTH (4 * 17)

static char *record_path(const char *state_dir) { return ft_path_join(state_dir, "up-to-date"); }

static void put_field(ft_strbuf *text, const char *name, const char *value)
{
    ft_strbuf_printf(text, "%s %zu:%s\n", name, strlen(value), value);
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void ft_up_to_date_question(const ft_invocation *invocation, char *key)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    /* The program that plans: another build of it may plan differently (kind versions, rules). */
    struct stat program;
    if (stat(invocation->program_path ? invocation->program_path : "/proc/self/exe", &program) == 0)
        ft_strbuf_printf(&text, "program %llu %llu %lld %lld.%09ld\n", (unsigned long long)program.st_dev,
                         (unsigned long long)program.st_ino, (long long)program.st_size,
                         (long long)program.st_mtim.tv_sec, program.st_mtim.tv_nsec);
    char *pipeline = ft_path_absolute(invocation->pipeline_path);
    put_field(&text, "pipeline", pipeline);
    free(pipeline);
    for (size_t i = 0; i < invocation->n_arguments; i++)
        put_field(&text, "target", invocation->arguments[i]);
    for (size_t i = 0; i < invocation->n_overrides; i++) {
        put_field(&text, "override", invocation->overrides[i].name);
        put_field(&text, "value", invocation->overrides[i].value);
    }
    /* Variables, declared `env` and kinds read the environment: all of it is asked,
     * but for FTPIPE_STATS, which only reports, and the shell's own bookkeeping
     * (SHLVL, `_`, OLDPWD), which differs between a terminal and a script. */
    size_t n = 0, total = 0;
    while (environ[total])
        total++;
    char **sorted = ft_xcalloc(total + 1, sizeof *sorted);
    for (size_t i = 0; i < total; i++)
        if (strncmp(environ[i], "FTPIPE_STATS=", 13) != 0 && strncmp(environ[i], "SHLVL=", 6) != 0 &&
            strncmp(environ[i], "_=", 2) != 0 && strncmp(environ[i], "OLDPWD=", 7) != 0)
            sorted[n++] = environ[i];
    qsort(sorted, n, sizeof *sorted, compare_strings);
    for (size_t i = 0; i < n; i++)
        put_field(&text, "env", sorted[i]);
    free(sorted);
    ft_hash_to_hex(ft_hash_bytes(text.data, text.length), key);
    ft_strbuf_free(&text);
}

/* A file's content hash in hex, or "absent". */
static void content_hash(const char *path, char *hex)
{
    char *text = NULL;
    size_t length = 0;
    if (ft_read_file(path, &text, &length) != 0) {
        ft_error_clear();
        strcpy(hex, "absent");
        return;
    }
    ft_hash_to_hex(ft_hash_bytes(text, length), hex);
    free(text);
}

static unsigned long long mtime_ns(const struct stat *st)
{
    return (unsigned long long)((long long)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec);
}

static void format_stat(const struct stat *st, char text[STAT_TEXT_LENGTH])
{
    static const char digits[] = "0123456789abcdef";
    const unsigned long long fields[4] = {(unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
                                          (unsigned long long)st->st_size, mtime_ns(st)};
    for (int f = 0; f < 4; f++) {
        unsigned long long value = fields[f];
        for (int i = 15; i >= 0; i--, value >>= 4)
            text[17 * f + i] = digits[value & 15];
        text[17 * f + 16] = ' ';
    }
}

/* A pipeline file's line, "file HASH STAT_TEXT PATH" (HASH: its content hash or
 * "absent"): its stat stands for its content, as a target's does, unless the
 * file was written in the second before the record (then an edit in the same
 * clock tick would keep its size and mtime), which is recorded as a stat of
 * zeros that no file has (no inode is 0). */
static void put_file_line(ft_strbuf *text, const char *path)
{
    struct stat st;
    bool settled = stat(path, &st) == 0 && st.st_mtim.tv_sec + 1 < time(NULL);
    if (!settled)
        memset(&st, 0, sizeof st);
    char hex[FT_HASH_HEX_LENGTH + 8], stat_text[STAT_TEXT_LENGTH];
    content_hash(path, hex);
    format_stat(&st, stat_text);
    ft_strbuf_printf(text, "file %s %.*s%s\n", hex, STAT_TEXT_LENGTH, stat_text, path);
}

/* The record is mapped, not read: its pages come from the page cache without a
 * copy, and nothing is written into them. A line is `length` bytes before its
 * '\n'. */
typedef struct {
    const char *text;
    size_t length;
} record_line;

static bool line_is(record_line line, const char *word)
{
    size_t length = strlen(word);
    return line.length == length && memcmp(line.text, word, length) == 0;
}

/* Whether line begins with `word` and a space; then `rest` is what follows. */
static bool line_starts(record_line line, const char *word, record_line *rest)
{
    size_t length = strlen(word);
    if (line.length <= length || line.text[length] != ' ' || memcmp(line.text, word, length) != 0)
        return false;
    *rest = (record_line){line.text + length + 1, line.length - length - 1};
    return true;
}

/* Whether a pipeline file's line (after "file ") still holds: the same stat, or
 * else the same content (a touch without a change keeps the answer). */
static bool file_unchanged(record_line line)
{
    const char *space = memchr(line.text, ' ', line.length);
    size_t hash_length = space ? (size_t)(space - line.text) : 0;
    if (!space || hash_length > FT_HASH_HEX_LENGTH || line.length - hash_length - 1 <= STAT_TEXT_LENGTH ||
        line.length - hash_length - 1 - STAT_TEXT_LENGTH >= PATH_MAX)
        return false;
    const char *recorded_stat = space + 1;
    char path[PATH_MAX];
    size_t path_length = line.length - hash_length - 1 - STAT_TEXT_LENGTH;
    memcpy(path, recorded_stat + STAT_TEXT_LENGTH, path_length);
    path[path_length] = '\0';
    struct stat st;
    char now[STAT_TEXT_LENGTH];
    if (stat(path, &st) == 0) {
        format_stat(&st, now);
        if (memcmp(now, recorded_stat, STAT_TEXT_LENGTH) == 0)
            return true;
    }
    char hex[FT_HASH_HEX_LENGTH + 8];
    content_hash(path, hex);
    return strlen(hex) == hash_length && memcmp(hex, line.text, hash_length) == 0;
}

void ft_up_to_date_answer_free(ft_up_to_date_answer *answer)
{
    free(answer->kinds);
    free(answer->targets);
    free(answer->last_runs);
    free(answer->record_text);
    memset(answer, 0, sizeof *answer);
}

/* "KIND TARGET": copied, NUL-terminated, into the answer's text (which status
 * keeps; it is as large as the record, which holds every name). */
static void add_stage(ft_up_to_date_answer *answer, record_line line, bool list_stages, size_t *text_used)
{
    const char *space = memchr(line.text, ' ', line.length);
    if (!space)
        return;
    if (!list_stages) {
        answer->n_stages++;
        return;
    }
    if (answer->n_stages == answer->capacity) {
        answer->capacity = answer->capacity ? 2 * answer->capacity : 64;
        answer->kinds = ft_xrealloc(answer->kinds, answer->capacity * sizeof *answer->kinds);
        answer->targets = ft_xrealloc(answer->targets, answer->capacity * sizeof *answer->targets);
        answer->last_runs = ft_xrealloc(answer->last_runs, answer->capacity * sizeof *answer->last_runs);
    }
    memset(&answer->last_runs[answer->n_stages], 0, sizeof *answer->last_runs);
    char *copy = answer->record_text + *text_used;
    memcpy(copy, line.text, line.length);
    copy[space - line.text] = '\0';
    copy[line.length] = '\0';
    *text_used += line.length + 1;
    answer->kinds[answer->n_stages] = copy;
    answer->targets[answer->n_stages++] = copy + (space - line.text) + 1;
}

/* A lowercase hex number ending at `end` (as the record writes them with %llx),
 * from *p; moves *p past the end. */
static bool parse_hex(const char **p, char end, unsigned long long *value)
{
    const char *at = *p;
    unsigned long long number = 0;
    int digits = 0;
    for (;; at++, digits++) {
        unsigned digit;
        if (*at >= '0' && *at <= '9')
            digit = (unsigned)(*at - '0');
        else if (*at >= 'a' && *at <= 'f')
            digit = (unsigned)(*at - 'a' + 10);
        else
            break;
        if (digits == 16)
            return false;
        number = number << 4 | digit;
    }
    if (digits == 0 || *at != end)
        return false;
    *value = number;
    *p = at + 1;
    return true;
}

/* "last ID START_MS END_MS STATUS" in hex: the last run of the stage just
 * listed. Only status reads them; a no-op only counts stages. */
static bool add_last_run(ft_up_to_date_answer *answer, record_line line, bool list_stages)
{
    if (!list_stages)
        return answer->n_stages > 0;
    unsigned long long fields[4];
    const char *at = line.text; /* the line ends in '\n', which no hex digit is */
    for (int i = 0; i < 4; i++)
        if (!parse_hex(&at, i < 3 ? ' ' : '\n', &fields[i]))
            return false;
    if (answer->n_stages == 0 || fields[3] > FT_RUN_CACHED)
        return false;
    ft_up_to_date_run *run = &answer->last_runs[answer->n_stages - 1];
    run->id = (int64_t)fields[0];
    run->start_ms = (int64_t)fields[1];
    run->end_ms = (int64_t)fields[2];
    run->status = (ft_run_status)fields[3];
    return true;
}

/* The stat lines of a record, "STAT_TEXT PATH", are checked after the rest of
 * it: on every core when there are many (a lookup is mostly the kernel's; two
 * cores do it in about half the time), stopping early once one differs. Each
 * worker keeps a few folders open: a lookup relative to one walks one
 * component, not every one (records alternate among few, as out/ and in/). */
#define STATS_PER_ITEM 256
#define FOLDERS_PER_WORKER 4

typedef struct {
    const char *path; /* in the record's text; `length` bytes, no '/' at the end */
    size_t length;
    int fd;
} open_folder;

typedef struct {
    int dir_fd;
    const record_line *lines;
    size_t n_lines;
    open_folder *folders; /* FOLDERS_PER_WORKER per worker */
    atomic_bool changed;
} stat_job;

/* The folder holding path (its part before the last '/'), opened once per
 * worker, and in name the rest; the pipeline's folder and the whole path when
 * that fails or there is no folder. false for a path too long to be one. */
static bool folder_of(open_folder *folders, int dir_fd, record_line path, int *fd, char name[PATH_MAX])
{
    const char *slash = memrchr(path.text, '/', path.length);
    size_t folder_length = slash && slash != path.text ? (size_t)(slash - path.text) : 0;
    const char *rest = folder_length ? slash + 1 : path.text;
    size_t rest_length = path.length - (size_t)(rest - path.text);
    *fd = dir_fd;
    if (folder_length >= PATH_MAX)
        return false;
    if (folder_length) {
        int i = 0;
        while (i < FOLDERS_PER_WORKER && !(folders[i].path && folders[i].length == folder_length &&
                                           memcmp(folders[i].path, path.text, folder_length) == 0))
            i++;
        if (i < FOLDERS_PER_WORKER) {
            *fd = folders[i].fd;
        } else {
            char folder[PATH_MAX];
            memcpy(folder, path.text, folder_length);
            folder[folder_length] = '\0';
            int opened = openat(dir_fd, folder, O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (opened < 0) {
                rest = path.text; /* then looked up whole, and fails as the plan would */
                rest_length = path.length;
            } else {
                open_folder *slot = &folders[FOLDERS_PER_WORKER - 1]; /* the oldest goes */
                if (slot->path)
                    close(slot->fd);
                memmove(folders + 1, folders, (FOLDERS_PER_WORKER - 1) * sizeof *folders);
                folders[0] = (open_folder){.path = path.text, .length = folder_length, .fd = opened};
                *fd = opened;
            }
        }
    }
    if (rest_length >= PATH_MAX)
        return false;
    memcpy(name, rest, rest_length);
    name[rest_length] = '\0';
    return true;
}

/* A stat line, "STAT_TEXT PATH": its path's lstat now, formatted, is the same text. */
static bool stat_line_unchanged(record_line line, open_folder *folders, int dir_fd)
{
    if (line.length <= STAT_TEXT_LENGTH)
        return false;
    record_line path = {line.text + STAT_TEXT_LENGTH, line.length - STAT_TEXT_LENGTH};
    int fd;
    char name[PATH_MAX];
    struct stat st;
    if (!folder_of(folders, dir_fd, path, &fd, name) || fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return false;
    char now[STAT_TEXT_LENGTH];
    format_stat(&st, now);
    return memcmp(now, line.text, STAT_TEXT_LENGTH) == 0;
}

static void check_stats(void *context, size_t item, size_t worker)
{
    stat_job *job = context;
    open_folder *folders = job->folders + worker * FOLDERS_PER_WORKER;
    size_t end = (item + 1) * STATS_PER_ITEM < job->n_lines ? (item + 1) * STATS_PER_ITEM : job->n_lines;
    for (size_t i = item * STATS_PER_ITEM; i < end && !atomic_load_explicit(&job->changed, memory_order_relaxed); i++)
        if (!stat_line_unchanged(job->lines[i], folders, job->dir_fd))
            atomic_store(&job->changed, true);
}

static bool stats_unchanged(int dir_fd, const record_line *lines, size_t n_lines)
{
    size_t n_items = (n_lines + STATS_PER_ITEM - 1) / STATS_PER_ITEM;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    /* a thread's start costs about as much as a few hundred lookups */
    size_t n_workers = n_items >= 8 && cores > 1 ? (size_t)cores : 1;
    stat_job job = {.dir_fd = dir_fd, .lines = lines, .n_lines = n_lines,
                    .folders = ft_xcalloc(n_workers * FOLDERS_PER_WORKER, sizeof *job.folders)};
    atomic_init(&job.changed, false);
    ft_parallel_for(n_workers, n_items, check_stats, &job, NULL);
    for (size_t i = 0; i < n_workers * FOLDERS_PER_WORKER; i++)
        if (job.folders[i].path)
            close(job.folders[i].fd);
    free(job.folders);
    return !atomic_load(&job.changed);
}

/* The record's lines after its header, checked in order; 2 when it is whole
 * (ends with "end") and all but its stat lines, gathered in *stat_lines, hold. */
static int check_lines(const char *text, size_t size, const char *key, bool list_stages, ft_up_to_date_answer *answer,
                       record_line **stat_lines, size_t *n_stat_lines)
{
    size_t header_length = strlen(RECORD_HEADER), capacity = 0, text_used = 0;
    if (size < header_length || memcmp(text, RECORD_HEADER, header_length) != 0)
        return 0;
    if (list_stages)
        answer->record_text = ft_xmalloc(size);
    const char *at = text + header_length, *end = text + size;
    while (at < end) {
        const char *newline = memchr(at, '\n', (size_t)(end - at));
        if (!newline)
            return 0; /* cut short */
        record_line line = {at, (size_t)(newline - at)}, rest;
        at = newline + 1;
        /* Most lines are stat lines, which begin with a hex digit of a device
         * number: a word's first letter is looked at before the word. */
        bool holds = true;
        char first = line.length ? line.text[0] : '\0';
        if (first == 'q' && line_starts(line, "question", &rest))
            holds = rest.length == strlen(key) && memcmp(rest.text, key, rest.length) == 0;
        else if (first == 's' && line_starts(line, "stage", &rest))
            add_stage(answer, rest, list_stages, &text_used);
        else if (first == 'l' && line_starts(line, "last", &rest))
            holds = add_last_run(answer, rest, list_stages);
        else if (first == 'a' && line_is(line, "all stages"))
            answer->all_stages = true;
        else if (first == 'f' && line_starts(line, "file", &rest))
            holds = file_unchanged(rest);
        else if (first == 'e' && line_is(line, "end"))
            return 2;
        else { /* a stat line: checked later (a malformed one is a change) */
            ft_grow((void **)stat_lines, &capacity, *n_stat_lines + 1, sizeof **stat_lines);
            (*stat_lines)[(*n_stat_lines)++] = line;
        }
        if (!holds)
            return 0;
    }
    return 0; /* no "end": cut short */
}

int ft_up_to_date_check(const char *pipeline_dir, const char *key, bool list_stages, ft_up_to_date_answer *answer)
{
    uint64_t start_ns = ft_now_ns();
    memset(answer, 0, sizeof *answer);
    /* Paths under the pipeline's folder are recorded relative to it: a lookup then
     * walks two components, not every one of an absolute path. */
    int dir_fd = open(pipeline_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0)
        return 0;
    int record_fd = openat(dir_fd, ".ftpipe/up-to-date", O_RDONLY | O_CLOEXEC);
    struct stat record;
    void *text = MAP_FAILED;
    if (record_fd >= 0 && fstat(record_fd, &record) == 0 && record.st_size > 0)
        text = mmap(NULL, (size_t)record.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, record_fd, 0);
    if (record_fd >= 0)
        close(record_fd);
    int answer_code = 0;
    uint64_t lines_ns = 0, stats_ns = 0;
    size_t n_stat_lines = 0;
    if (text != MAP_FAILED) {
        record_line *stat_lines = NULL;
        answer_code = check_lines(text, (size_t)record.st_size, key, list_stages, answer, &stat_lines, &n_stat_lines);
        lines_ns = ft_now_ns() - start_ns;
        if (answer_code == 2 && !stats_unchanged(dir_fd, stat_lines, n_stat_lines))
            answer_code = 0;
        stats_ns = ft_now_ns() - start_ns - lines_ns;
        free(stat_lines);
        munmap(text, (size_t)record.st_size);
    }
    close(dir_fd);
    answer->lines_ns = lines_ns;
    answer->stats_ns = stats_ns;
    answer->n_stat_lines = n_stat_lines;
    if (answer_code == 2)
        return 1;
    ft_up_to_date_answer_free(answer);
    return 0;
}

/* Adds path's lstat line once; false when it cannot stand for its content (gone,
 * or an input that is not a regular file: a folder's content is not in its stat). */
static bool add_stat(ft_strbuf *text, ft_strmap *seen, const char *pipeline_dir, const char *path,
                     bool must_be_file)
{
    size_t *known = ft_strmap_get(seen, path);
    if (known)
        return true;
    ft_strmap_put(seen, path, 1);
    struct stat st;
    if (lstat(path, &st) != 0 || (must_be_file && !S_ISREG(st.st_mode)))
        return false;
    size_t dir_length = strlen(pipeline_dir);
    const char *shown = strncmp(path, pipeline_dir, dir_length) == 0 && path[dir_length] == '/' && path[dir_length + 1]
                            ? path + dir_length + 1
                            : path;
    char stat_text[STAT_TEXT_LENGTH];
    format_stat(&st, stat_text);
    ft_strbuf_add(text, stat_text, STAT_TEXT_LENGTH);
    ft_strbuf_puts(text, shown);
    ft_strbuf_putc(text, '\n');
    return true;
}

void ft_up_to_date_write(const ft_workspace *workspace, const ft_graph *graph, const char *key)
{
    const ft_pipeline *pipeline = graph->pipeline;
    const char *rules = getenv("FTPIPE_RULES");
    if (pipeline->lists_folders || (rules && *rules))
        return;
    for (size_t i = 0; i < pipeline->n_files; i++)
        if (strchr(pipeline->files[i], '\n'))
            return; /* a record is lines */
    ft_strbuf text;
    ft_strbuf_init(&text);
    ft_strbuf_puts(&text, RECORD_HEADER);
    ft_strbuf_printf(&text, "question %s\n", key);
    for (size_t i = 0; i < pipeline->n_files; i++)
        put_file_line(&text, pipeline->files[i]);
    char *lock = ft_lock_path(pipeline->path);
    put_file_line(&text, lock);
    free(lock);
    ft_last_runs runs;
    bool recordable = ft_last_runs_load(workspace->state, &runs) == 0;
    if (!recordable)
        ft_error_clear();
    ft_strmap seen;
    ft_strmap_init(&seen);
    size_t n_selected = 0;
    for (size_t o = 0; o < graph->n_nodes && recordable; o++) {
        const ft_node *node = &graph->nodes[graph->order[o]];
        if (!node->selected)
            continue;
        n_selected++;
        ft_strbuf_printf(&text, "stage %s %s\n", node->kind->name, node->target);
        const ft_run_record *last = ft_last_run_of(&runs, node->target);
        if (last)
            ft_strbuf_printf(&text, "last %llx %llx %llx %x\n", (unsigned long long)last->id,
                             (unsigned long long)last->start_ms, (unsigned long long)last->end_ms,
                             (unsigned)last->status);
        recordable = !node->kind->cached_output_usable && !strchr(node->target, '\n') &&
                     !strchr(node->target_path, '\n') &&
                     add_stat(&text, &seen, pipeline->dir, node->target_path, false);
        for (size_t k = 0; k < node->n_inputs && recordable; k++)
            if (node->input_nodes[k] == FT_NO_NODE)
                recordable = !strchr(node->input_paths[k], '\n') && add_stat(&text, &seen, pipeline->dir, node->input_paths[k], true);
    }
    ft_strmap_free(&seen);
    ft_last_runs_free(&runs);
    if (recordable) {
        ft_strbuf_puts(&text, n_selected == graph->n_nodes ? "all stages\nend\n" : "end\n");
        char *path = record_path(workspace->state_dir);
        char *temporary = ft_xasprintf("%s.tmp.%ld", path, (long)getpid());
        FILE *out = fopen(temporary, "we");
        bool written = out && fwrite(text.data, 1, text.length, out) == text.length;
        if (out && fclose(out) != 0)
            written = false;
        if (!written || rename(temporary, path) != 0)
            unlink(temporary);
        free(temporary);
        free(path);
    }
    ft_strbuf_free(&text);
}

void ft_up_to_date_forget(const char *state_dir)
{
    char *path = record_path(state_dir);
    unlink(path);
    free(path);
}
