/* up_to_date: the no-op's answer from a record of stats. */
#include "ftpipe/engine/up_to_date.h"

#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

#define RECORD_HEADER "ftpipe up-to-date 3\n"

static char *record_path(const char *dir_holding_state, bool is_state_dir)
{
    return is_state_dir ? ft_path_join(dir_holding_state, "up-to-date")
                        : ft_xasprintf("%s/.ftpipe/up-to-date", dir_holding_state);
}

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

static bool same_stat(const struct stat *st, const unsigned long long recorded[4])
{
    return (unsigned long long)st->st_dev == recorded[0] && (unsigned long long)st->st_ino == recorded[1] &&
           (unsigned long long)st->st_size == recorded[2] && mtime_ns(st) == recorded[3];
}

void ft_up_to_date_answer_free(ft_up_to_date_answer *answer)
{
    free(answer->kinds);
    free(answer->targets);
    free(answer->last_runs);
    free(answer->record_text);
    memset(answer, 0, sizeof *answer);
}

/* "KIND TARGET": listed as pointers into the record's text, which the answer keeps. */
static void add_stage(ft_up_to_date_answer *answer, char *line, bool list_stages)
{
    char *space = strchr(line, ' ');
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
    *space = '\0';
    answer->kinds[answer->n_stages] = line;
    answer->targets[answer->n_stages++] = space + 1;
}

/* A lowercase hex number ending at `end` (as the record writes them with %llx),
 * from *p; moves *p past the end. A no-op reads four per path (80,000 at 10,000
 * stages), so without strtoull's locale and base handling. */
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

/* "last ID START_MS END_MS STATUS" in hex: the last run of the stage just listed. */
static bool add_last_run(ft_up_to_date_answer *answer, const char *line, bool list_stages)
{
    unsigned long long fields[4];
    for (int i = 0; i < 4; i++)
        if (!parse_hex(&line, i < 3 ? ' ' : '\0', &fields[i]))
            return false;
    if (answer->n_stages == 0 || fields[3] > FT_RUN_CACHED)
        return false;
    if (list_stages) {
        ft_up_to_date_run *run = &answer->last_runs[answer->n_stages - 1];
        run->id = (int64_t)fields[0];
        run->start_ms = (int64_t)fields[1];
        run->end_ms = (int64_t)fields[2];
        run->status = (ft_run_status)fields[3];
    }
    return true;
}

/* The stat lines of a record, "DEVICE INODE SIZE MTIME_NS PATH" in hex, are parsed
 * and checked after the rest of it: on every core when there are many (a lookup
 * is mostly the kernel's; two cores do it in about half the time), stopping early
 * once one differs. Each worker keeps a few folders open: a lookup relative to
 * one walks one component, not every one (records alternate among few, as out/
 * and in/). */
#define STATS_PER_ITEM 256
#define FOLDERS_PER_WORKER 4

typedef struct {
    const char *path; /* in the record's text; `length` bytes, no '/' at the end */
    size_t length;
    int fd;
} open_folder;

typedef struct {
    int dir_fd;
    const char *const *lines;
    size_t n_lines;
    open_folder *folders; /* FOLDERS_PER_WORKER per worker */
    atomic_bool changed;
} stat_job;

/* The folder holding path (its part before the last '/'), opened once per worker;
 * the pipeline's folder, with *name the whole path, when that fails or there is none. */
static int folder_of(open_folder *folders, int dir_fd, const char *path, const char **name)
{
    const char *slash = strrchr(path, '/');
    *name = path;
    if (!slash || slash == path || (size_t)(slash - path) >= PATH_MAX)
        return dir_fd;
    size_t length = (size_t)(slash - path);
    for (int i = 0; i < FOLDERS_PER_WORKER; i++)
        if (folders[i].path && folders[i].length == length && memcmp(folders[i].path, path, length) == 0) {
            *name = slash + 1;
            return folders[i].fd;
        }
    char folder[PATH_MAX];
    memcpy(folder, path, length);
    folder[length] = '\0';
    int fd = openat(dir_fd, folder, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return dir_fd;
    open_folder *slot = &folders[FOLDERS_PER_WORKER - 1]; /* the oldest goes */
    if (slot->path)
        close(slot->fd);
    memmove(folders + 1, folders, (FOLDERS_PER_WORKER - 1) * sizeof *folders);
    folders[0] = (open_folder){.path = path, .length = length, .fd = fd};
    *name = slash + 1;
    return fd;
}

static bool stat_line_unchanged(const char *line, open_folder *folders, int dir_fd)
{
    unsigned long long recorded[4];
    for (int i = 0; i < 4; i++)
        if (!parse_hex(&line, ' ', &recorded[i]))
            return false;
    if (!*line)
        return false;
    const char *name;
    int fd = folder_of(folders, dir_fd, line, &name);
    struct stat st;
    return fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && same_stat(&st, recorded);
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

static bool stats_unchanged(int dir_fd, const char *const *lines, size_t n_lines)
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

int ft_up_to_date_check(const char *pipeline_dir, const char *key, bool list_stages, ft_up_to_date_answer *answer)
{
    memset(answer, 0, sizeof *answer);
    /* Paths under the pipeline's folder are recorded relative to it: a lookup then
     * walks two components, not every one of an absolute path. */
    int dir_fd = open(pipeline_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0)
        return 0;
    char *path = record_path(pipeline_dir, false);
    char *text = NULL;
    int read = ft_read_file(path, &text, NULL);
    free(path);
    if (read != 0) {
        ft_error_clear();
        close(dir_fd);
        return 0;
    }
    char **stat_lines = NULL;
    size_t n_stat_lines = 0, capacity = 0;
    char *line = text, *next;
    int answer_code = strncmp(line, RECORD_HEADER, strlen(RECORD_HEADER)) == 0 ? 1 : 0;
    line += answer_code ? strlen(RECORD_HEADER) : 0;
    for (; answer_code == 1 && *line; line = next) {
        next = strchr(line, '\n');
        if (!next)
            break;
        *next++ = '\0';
        char hex[FT_HASH_HEX_LENGTH + 8];
        int offset = 0;
        if (strncmp(line, "question ", 9) == 0) {
            answer_code = strcmp(line + 9, key) == 0;
        } else if (strncmp(line, "stage ", 6) == 0) {
            add_stage(answer, line + 6, list_stages);
        } else if (strncmp(line, "last ", 5) == 0) {
            answer_code = add_last_run(answer, line + 5, list_stages);
        } else if (strcmp(line, "all stages") == 0) {
            answer->all_stages = true;
        } else if (strncmp(line, "file ", 5) == 0 && sscanf(line + 5, "%39s %n", hex, &offset) == 1 && offset) {
            char now[FT_HASH_HEX_LENGTH + 8];
            content_hash(line + 5 + offset, now);
            answer_code = strcmp(now, hex) == 0;
        } else if (strcmp(line, "end") == 0) {
            answer_code = 2; /* complete: a record cut short answers nothing */
        } else { /* a stat line: parsed with its check (a malformed one is a change) */
            ft_grow((void **)&stat_lines, &capacity, n_stat_lines + 1, sizeof *stat_lines);
            stat_lines[n_stat_lines++] = line;
        }
    }
    if (answer_code == 2 && !stats_unchanged(dir_fd, (const char *const *)stat_lines, n_stat_lines))
        answer_code = 0;
    free(stat_lines);
    answer->record_text = text;
    close(dir_fd);
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
    ft_strbuf_printf(text, "%llx %llx %llx %llx %s\n", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
                     (unsigned long long)st.st_size, mtime_ns(&st), shown);
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
    char hex[FT_HASH_HEX_LENGTH + 8];
    for (size_t i = 0; i < pipeline->n_files; i++) {
        content_hash(pipeline->files[i], hex);
        ft_strbuf_printf(&text, "file %s %s\n", hex, pipeline->files[i]);
    }
    char *lock = ft_lock_path(pipeline->path);
    content_hash(lock, hex);
    ft_strbuf_printf(&text, "file %s %s\n", hex, lock);
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
        char *path = record_path(workspace->state_dir, true);
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
    char *path = record_path(state_dir, true);
    unlink(path);
    free(path);
}
