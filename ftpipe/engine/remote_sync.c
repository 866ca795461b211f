/* remote_sync: stage results to and from the remote cache, verified both ways. */
#include "ftpipe/engine/remote_sync.h"

#include <inttypes.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/hash.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/sha256.h"
#include "ftpipe/base/signature.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/transfer/remote.h"

#define ENTRY_HEADER "ftpipe remote entry 1\n"
#define DEFAULT_TRANSFERS 8

struct ft_remote_sync {
    ft_remote *remote;
    bool writable;
    bool strict;
    int transfers;
    ft_progress *progress;
    ft_signature_key *signing_key;
    ft_signature_key *public_key;
    bool given_up; /* unreachable once: the rest of the run goes on without it */
    pthread_mutex_t lock;
    char (*refused)[FT_SHA256_HEX_LENGTH + 1]; /* objects that failed verification: the next push replaces them */
    size_t n_refused;
};

int ft_remote_sync_mode_writable(bool *writable)
{
    const char *mode = getenv("FTPIPE_REMOTE_MODE");
    if (!mode || !*mode || strcmp(mode, "read-write") == 0)
        *writable = true;
    else if (strcmp(mode, "read") == 0)
        *writable = false;
    else
        return ft_error("FTPIPE_REMOTE_MODE=%s: expected read or read-write", mode);
    return 0;
}

int ft_remote_sync_open(const ft_remote_sync_options *options, ft_remote_sync **out)
{
    ft_remote *remote = NULL;
    ft_signature_key *signing_key = NULL, *public_key = NULL;
    if (options->signing_key_path && *options->signing_key_path &&
        ft_signature_key_load(options->signing_key_path, true, &signing_key) != 0)
        return ft_error_context("FTPIPE_REMOTE_KEY");
    if (options->public_key_path && *options->public_key_path &&
        ft_signature_key_load(options->public_key_path, false, &public_key) != 0) {
        ft_signature_key_free(signing_key);
        return ft_error_context("FTPIPE_REMOTE_PUBLIC_KEY");
    }
    if (ft_remote_open(options->url, &remote) != 0) {
        ft_signature_key_free(signing_key);
        ft_signature_key_free(public_key);
        return -1;
    }
    ft_remote_sync *sync = ft_xcalloc(1, sizeof *sync);
    sync->signing_key = signing_key;
    sync->public_key = public_key;
    sync->remote = remote;
    sync->writable = options->writable;
    sync->strict = options->strict;
    sync->transfers = options->transfers > 0 ? options->transfers : DEFAULT_TRANSFERS;
    sync->progress = options->progress;
    pthread_mutex_init(&sync->lock, NULL);
    *out = sync;
    return 0;
}

void ft_remote_sync_close(ft_remote_sync *sync)
{
    if (!sync)
        return;
    ft_remote_close(sync->remote);
    ft_signature_key_free(sync->signing_key);
    ft_signature_key_free(sync->public_key);
    pthread_mutex_destroy(&sync->lock);
    free(sync->refused);
    free(sync);
}

const char *ft_remote_sync_url(const ft_remote_sync *sync) { return ft_remote_url(sync->remote); }
bool ft_remote_sync_writable(const ft_remote_sync *sync) { return sync->writable; }

static void warn(ft_remote_sync *sync, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(ft_remote_sync *sync, const char *fmt, ...)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    va_list args;
    va_start(args, fmt);
    ft_strbuf_vprintf(&text, fmt, args);
    va_end(args);
    if (sync->progress)
        ft_progress_message(sync->progress, "warning: %s", text.data);
    else
        fprintf(stderr, "ftpipe: warning: %s\n", text.data);
    ft_strbuf_free(&text);
}

/* What a failed remote call means for the caller: strict or refused credentials
 * stop it (-1); otherwise the first failure warns and switches the remote off (0). */
static int settle(ft_remote_sync *sync, int failure)
{
    if (sync->strict || failure == FT_REMOTE_DENIED)
        return -1;
    pthread_mutex_lock(&sync->lock);
    bool first = !sync->given_up;
    sync->given_up = true;
    pthread_mutex_unlock(&sync->lock);
    if (first)
        warn(sync, "%s; going on without the remote cache for the rest of this run", ft_error_message());
    return 0;
}

static void entry_name(const char *key, char name[4 + FT_SHA256_HEX_LENGTH + 1])
{
    ft_sha256 context;
    ft_sha256_init(&context);
    ft_sha256_update(&context, key, strlen(key));
    char hex[FT_SHA256_HEX_LENGTH + 1];
    ft_sha256_finish_hex(&context, hex);
    snprintf(name, 4 + FT_SHA256_HEX_LENGTH + 1, "ac/%s", hex);
}

int ft_remote_sync_has(ft_remote_sync *sync, const char *key)
{
    if (sync->given_up)
        return 0;
    char name[4 + FT_SHA256_HEX_LENGTH + 1];
    entry_name(key, name);
    int found = ft_remote_has(sync->remote, name);
    return found >= 0 ? found : settle(sync, found);
}

/* --- parallel transfers --- */

typedef struct {
    size_t n_items;
    size_t next;
    int failure;           /* the first failure's code; 0 none */
    char *failure_message;
    pthread_mutex_t lock;
    int (*work)(void *context, size_t item);
    void *context;
} parallel_loop;

static void *parallel_worker(void *argument)
{
    parallel_loop *loop = argument;
    for (;;) {
        pthread_mutex_lock(&loop->lock);
        size_t item = loop->next++;
        bool stop = loop->failure != 0;
        pthread_mutex_unlock(&loop->lock);
        if (stop || item >= loop->n_items)
            return NULL;
        int result = loop->work(loop->context, item);
        if (result != 0) {
            pthread_mutex_lock(&loop->lock);
            if (loop->failure == 0) {
                loop->failure = result;
                loop->failure_message = ft_xstrdup(ft_error_message());
            }
            pthread_mutex_unlock(&loop->lock);
        }
    }
}

/* Runs work(context, i) for every item on up to `threads` threads; the first
 * failure stops the others from starting more and is returned, its message set here. */
static int run_parallel(size_t n_items, int threads, int (*work)(void *, size_t), void *context)
{
    parallel_loop loop = {.n_items = n_items, .work = work, .context = context};
    pthread_mutex_init(&loop.lock, NULL);
    size_t n_threads = n_items < (size_t)threads ? n_items : (size_t)threads;
    pthread_t *ids = ft_xcalloc(n_threads + 1, sizeof *ids);
    size_t started = 0;
    for (; started < n_threads; started++)
        if (pthread_create(&ids[started], NULL, parallel_worker, &loop) != 0)
            break;
    if (started == 0)
        parallel_worker(&loop);
    for (size_t i = 0; i < started; i++)
        pthread_join(ids[i], NULL);
    free(ids);
    pthread_mutex_destroy(&loop.lock);
    if (loop.failure) {
        ft_error("%s", loop.failure_message);
        free(loop.failure_message);
    }
    return loop.failure;
}

/* --- entries --- */

typedef struct {
    ft_hash hash;
    char sha256[FT_SHA256_HEX_LENGTH + 1];
    uint64_t size_bytes;
    bool executable;
    const char *path; /* the first file with this content, for messages */
} object_row;

/* The manifest's distinct file contents. */
static object_row *distinct_objects(const ft_manifest *manifest, size_t *count)
{
    object_row *rows = ft_xcalloc(manifest->n_entries + 1, sizeof *rows);
    size_t n = 0;
    for (size_t i = 0; i < manifest->n_entries; i++) {
        const ft_manifest_entry *entry = &manifest->entries[i];
        if (entry->type != FT_ENTRY_FILE)
            continue;
        bool seen = false;
        for (size_t j = 0; j < n && !seen; j++)
            seen = ft_hash_equal(rows[j].hash, entry->hash);
        if (seen)
            continue;
        rows[n].hash = entry->hash;
        rows[n].size_bytes = entry->size_bytes;
        rows[n].executable = entry->executable;
        rows[n].path = entry->path[0] ? entry->path : ".";
        n++;
    }
    *count = n;
    return rows;
}

static char *entry_text(const char *key, const ft_manifest *manifest, const object_row *rows, size_t n_rows)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    ft_strbuf_puts(&text, ENTRY_HEADER);
    ft_strbuf_printf(&text, "key %s\n", key);
    for (size_t i = 0; i < n_rows; i++) {
        char hex[FT_HASH_HEX_LENGTH + 1];
        ft_hash_to_hex(rows[i].hash, hex);
        ft_strbuf_printf(&text, "object %s %s %" PRIu64 "\n", hex, rows[i].sha256, rows[i].size_bytes);
    }
    ft_strbuf_puts(&text, "manifest\n");
    char *canonical = ft_manifest_serialize(manifest);
    ft_strbuf_puts(&text, canonical);
    free(canonical);
    return ft_strbuf_take(&text);
}

static bool is_sha256_hex(const char *text)
{
    size_t n = 0;
    for (; text[n]; n++)
        if (!((text[n] >= '0' && text[n] <= '9') || (text[n] >= 'a' && text[n] <= 'f')))
            return false;
    return n == FT_SHA256_HEX_LENGTH;
}

/* Reads an entry; the rows get their SHA-256 from it. -1 with a message when it is not a whole, matching entry. */
static int parse_entry(const char *text, const char *key, const char *origin, ft_manifest **manifest_out,
                       object_row **rows_out, size_t *n_rows_out)
{
    if (strncmp(text, ENTRY_HEADER, strlen(ENTRY_HEADER)) != 0)
        return ft_error("%s: not an ftpipe remote entry", origin);
    const char *line = text + strlen(ENTRY_HEADER);
    char entry_key[FT_HASH_HEX_LENGTH + 2] = "";
    if (sscanf(line, "key %33s", entry_key) != 1 || strcmp(entry_key, key) != 0)
        return ft_error("%s: the entry is for another key (%s)", origin, entry_key);
    const char *manifest_text = strstr(text, "\nmanifest\n");
    if (!manifest_text)
        return ft_error("%s: the entry has no manifest (cut short?)", origin);
    manifest_text += strlen("\nmanifest\n");
    ft_manifest *manifest = NULL;
    if (ft_manifest_parse(manifest_text, origin, &manifest) != 0)
        return -1;
    size_t n_rows = 0;
    object_row *rows = distinct_objects(manifest, &n_rows);
    for (size_t i = 0; i < n_rows; i++) {
        char hex[FT_HASH_HEX_LENGTH + 1];
        ft_hash_to_hex(rows[i].hash, hex);
        char needle[FT_HASH_HEX_LENGTH + 16];
        snprintf(needle, sizeof needle, "\nobject %s ", hex);
        const char *found = strstr(text, needle);
        char sha[FT_SHA256_HEX_LENGTH + 2] = "";
        uint64_t size = 0;
        if (!found || found > manifest_text || sscanf(found + strlen(needle), "%65s %" SCNu64, sha, &size) != 2 ||
            !is_sha256_hex(sha) || size != rows[i].size_bytes) {
            ft_error("%s: the entry names no SHA-256 (or another size) for %s", origin, rows[i].path);
            free(rows);
            ft_manifest_free(manifest);
            return -1;
        }
        memcpy(rows[i].sha256, sha, sizeof rows[i].sha256);
    }
    *manifest_out = manifest;
    *rows_out = rows;
    *n_rows_out = n_rows;
    return 0;
}

/* --- signatures --- */

#define SIGNATURE_PREFIX "signature ed25519 "

/* With a public key: the entry must end in a signature line that verifies; the
 * line is cut off the text either way. */
static int check_signature(const ft_remote_sync *sync, char *text, const char *origin)
{
    char *line = strstr(text, "\n" SIGNATURE_PREFIX);
    if (line)
        line[1] = '\0';
    const ft_signature_key *verify_key = sync->public_key ? sync->public_key : sync->signing_key;
    if (!verify_key)
        return 0;
    if (!line)
        return ft_error("%s is not signed, and FTPIPE_REMOTE_PUBLIC_KEY asks for signed entries", origin);
    char *hex = line + 1 + strlen(SIGNATURE_PREFIX);
    hex[strcspn(hex, "\n")] = '\0';
    if (!ft_signature_verify(verify_key, text, strlen(text), hex))
        return ft_error("%s has a signature that the public key does not verify (signed by another key, or "
                        "changed after signing)", origin);
    return 0;
}

/* --- restore --- */

typedef struct {
    ft_remote_sync *sync;
    ft_cache *cache;
    const char *target;
    object_row *rows;
    char *incoming_dir;
    bool *refused; /* per row: failed verification */
} restore_job;

#define VERIFICATION_FAILED 1 /* a row's object was refused: not a remote failure */
#define LOCAL_FAILED (-10)    /* this machine's cache, not the remote */

/* Both checksums of a download, computed as its bytes arrive. */
typedef struct {
    ft_sha256 sha;
    ft_file_hasher *xxh;
    uint64_t bytes;
} stream_check;

static void stream_check_restart(void *context)
{
    stream_check *check = context;
    ft_sha256_discard(&check->sha);
    ft_sha256_init(&check->sha);
    ft_file_hasher_reset(check->xxh);
    check->bytes = 0;
}

static void stream_check_bytes(void *context, const void *data, size_t length)
{
    stream_check *check = context;
    ft_sha256_update(&check->sha, data, length);
    ft_file_hasher_update(check->xxh, data, length);
    check->bytes += length;
}

/* Starts the checksums with what an interrupted earlier download left in path. */
static void stream_check_start(stream_check *check, const char *path)
{
    check->xxh = ft_file_hasher_new();
    stream_check_restart(check);
    FILE *file = fopen(path, "rb");
    if (!file)
        return;
    char *buffer = ft_xmalloc(1 << 20);
    size_t n;
    while ((n = fread(buffer, 1, 1 << 20, file)) > 0)
        stream_check_bytes(check, buffer, n);
    free(buffer);
    fclose(file);
}

/* Marks the row refused; during a run, says so (strict callers report the error instead). */
static void refuse(restore_job *job, size_t item)
{
    job->refused[item] = true;
    if (!job->sync->strict)
        warn(job->sync, "%s; %s is built here and the next push replaces the object", ft_error_message(),
             job->target);
}

static int restore_object(void *context, size_t item)
{
    restore_job *job = context;
    object_row *row = &job->rows[item];
    ft_manifest_entry entry = {.type = FT_ENTRY_FILE, .executable = row->executable, .size_bytes = row->size_bytes,
                               .hash = row->hash, .path = (char *)row->path};
    if (ft_cache_has_object(job->cache, &entry))
        return 0;
    char name[4 + FT_SHA256_HEX_LENGTH + 1];
    snprintf(name, sizeof name, "cas/%s", row->sha256);
    /* Named by content alone, so a restore cut short resumes where it stopped
     * (the workspace lock keeps two runs from sharing the file). */
    char *temporary = ft_xasprintf("%s/%s", job->incoming_dir, row->sha256);
    stream_check check = {.sha = {NULL}};
    stream_check_start(&check, temporary);
    ft_remote_observer observer = {stream_check_restart, stream_check_bytes, &check};
    int result = ft_remote_get_file(job->sync->remote, name, temporary, &observer);
    if (result == 0) {
        ft_error("remote %s: %s (%s of %s) is missing, so the entry is refused", ft_remote_url(job->sync->remote),
                 name, row->path, job->target);
        refuse(job, item);
        result = VERIFICATION_FAILED;
    } else if (result == 1) {
        struct stat st;
        char sha[FT_SHA256_HEX_LENGTH + 1] = "";
        ft_hash hash = {0, 0};
        bool good = stat(temporary, &st) == 0 && (uint64_t)st.st_size == row->size_bytes;
        if (good && check.bytes == (uint64_t)st.st_size) {
            /* Every byte was seen on its way in: no second read of the file. */
            ft_sha256_finish_hex(&check.sha, sha);
            hash = ft_file_hasher_digest(check.xxh);
        } else if (good) {
            good = ft_sha256_file_hex(temporary, sha) == 0 && ft_hash_file(temporary, 0, &hash) == 0;
        }
        good = good && strcmp(sha, row->sha256) == 0 && ft_hash_equal(hash, row->hash);
        if (!good) {
            ft_error("remote %s: %s (%s of %s) does not match its SHA-256 and size: refused",
                     ft_remote_url(job->sync->remote), name, row->path, job->target);
            refuse(job, item);
            result = VERIFICATION_FAILED;
        } else {
            result = ft_cache_store_object(job->cache, temporary, &entry) == 0 ? 0 : LOCAL_FAILED;
        }
    }
    if (result != FT_REMOTE_UNAVAILABLE)
        unlink(temporary);
    ft_sha256_discard(&check.sha); /* when it was not finished */
    ft_file_hasher_free(check.xxh);
    free(temporary);
    return result;
}

static void remember_refused(ft_remote_sync *sync, const object_row *rows, const bool *refused, size_t n_rows)
{
    pthread_mutex_lock(&sync->lock);
    for (size_t i = 0; i < n_rows; i++) {
        if (!refused[i])
            continue;
        sync->refused = ft_xrealloc(sync->refused, (sync->n_refused + 1) * sizeof *sync->refused);
        memcpy(sync->refused[sync->n_refused++], rows[i].sha256, FT_SHA256_HEX_LENGTH + 1);
    }
    pthread_mutex_unlock(&sync->lock);
}

int ft_remote_sync_restore(ft_remote_sync *sync, ft_cache *cache, const char *key, const char *target,
                           ft_manifest **out)
{
    if (sync->given_up)
        return 0;
    char name[4 + FT_SHA256_HEX_LENGTH + 1];
    entry_name(key, name);
    char *text = NULL;
    int found = ft_remote_get_text(sync->remote, name, &text, NULL);
    if (found < 0)
        return settle(sync, found);
    if (found == 0)
        return 0;
    char *origin = ft_xasprintf("%s/%s", ft_remote_url(sync->remote), name);
    ft_manifest *manifest = NULL;
    object_row *rows = NULL;
    size_t n_rows = 0;
    int result = check_signature(sync, text, origin);
    if (result == 0)
        result = parse_entry(text, key, origin, &manifest, &rows, &n_rows);
    free(text);
    free(origin);
    if (result != 0) {
        if (sync->strict)
            return -1;
        warn(sync, "%s: refused; %s is built here", ft_error_message(), target);
        return 0;
    }
    restore_job job = {
        .sync = sync,
        .cache = cache,
        .target = target,
        .rows = rows,
        .incoming_dir = ft_path_join(ft_cache_dir(cache), "incoming"),
        .refused = ft_xcalloc(n_rows + 1, sizeof(bool)),
    };
    result = ft_mkdir_p(job.incoming_dir) == 0 ? 0 : LOCAL_FAILED;
    if (result == 0)
        result = run_parallel(n_rows, sync->transfers, restore_object, &job);
    remember_refused(sync, rows, job.refused, n_rows);
    if (result == 0)
        result = ft_cache_store_manifest(cache, key, manifest) == 0 ? 0 : LOCAL_FAILED;
    free(job.incoming_dir);
    free(job.refused);
    free(rows);
    if (result == 0) {
        *out = manifest;
        return 1;
    }
    ft_manifest_free(manifest);
    if (result == VERIFICATION_FAILED)
        return sync->strict ? -1 : 0;
    if (result == LOCAL_FAILED)
        return -1;
    return settle(sync, result);
}

/* --- push --- */

typedef struct {
    ft_remote_sync *sync;
    ft_cache *cache;
    object_row *rows;
    uint64_t sent_bytes;
    pthread_mutex_t lock;
} push_job;

static bool was_refused(ft_remote_sync *sync, const char *sha256)
{
    pthread_mutex_lock(&sync->lock);
    bool refused = false;
    for (size_t i = 0; i < sync->n_refused && !refused; i++)
        refused = strcmp(sync->refused[i], sha256) == 0;
    pthread_mutex_unlock(&sync->lock);
    return refused;
}

static int push_object(void *context, size_t item)
{
    push_job *job = context;
    object_row *row = &job->rows[item];
    char *object = ft_cache_object_path(job->cache, row->hash);
    int result = ft_sha256_file_hex(object, row->sha256) == 0 ? 0 : LOCAL_FAILED;
    char name[4 + FT_SHA256_HEX_LENGTH + 1];
    snprintf(name, sizeof name, "cas/%s", row->sha256);
    int present = result == 0 && !was_refused(job->sync, row->sha256) ? ft_remote_has(job->sync->remote, name) : 0;
    if (result == 0 && present < 0)
        result = present;
    if (result == 0 && present == 0) {
        result = ft_remote_put_file(job->sync->remote, name, object);
        if (result == 0) {
            pthread_mutex_lock(&job->lock);
            job->sent_bytes += row->size_bytes;
            pthread_mutex_unlock(&job->lock);
        }
    }
    free(object);
    return result;
}

int ft_remote_sync_push(ft_remote_sync *sync, ft_cache *cache, const char *key, const char *target,
                        const ft_manifest *manifest, uint64_t *sent_bytes)
{
    if (sent_bytes)
        *sent_bytes = 0;
    if (sync->given_up || !sync->writable)
        return 0;
    size_t n_rows = 0;
    object_row *rows = distinct_objects(manifest, &n_rows);
    push_job job = {.sync = sync, .cache = cache, .rows = rows};
    pthread_mutex_init(&job.lock, NULL);
    int result = run_parallel(n_rows, sync->transfers, push_object, &job);
    pthread_mutex_destroy(&job.lock);
    if (result == 0) {
        /* Last, so the entry is visible only once every object it names is stored. */
        char *text = entry_text(key, manifest, rows, n_rows);
        char name[4 + FT_SHA256_HEX_LENGTH + 1];
        entry_name(key, name);
        char signature[FT_SIGNATURE_HEX_LENGTH + 1];
        if (sync->signing_key) {
            if (ft_signature_sign(sync->signing_key, text, strlen(text), signature) != 0) {
                result = LOCAL_FAILED;
            } else {
                char *signed_text = ft_xasprintf("%s" SIGNATURE_PREFIX "%s\n", text, signature);
                free(text);
                text = signed_text;
            }
        }
        if (result == 0)
            result = ft_remote_put_text(sync->remote, name, text, strlen(text));
        free(text);
    }
    free(rows);
    if (sent_bytes)
        *sent_bytes = job.sent_bytes;
    if (result == 0)
        return 0;
    if (result == LOCAL_FAILED)
        return ft_error_context("cannot push %s", target);
    return settle(sync, result);
}
