/* fetch: the transfer engine; one libcurl multi handle drives every request.
 *
 * A download goes through three phases: probe every file (HEAD: size, byte-range
 * support, validator), check sizes and free space, then transfer pieces of every
 * file with a bounded number of requests at once. Completed files are verified
 * (sha256, in threads) and renamed into place. A server that refuses HEAD, or a
 * redirect to a URL signed for GET only, is probed with a one-byte GET instead. */
#include "ftpipe/transfer/fetch.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/sha256.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/transfer/fetch_http.h"
#include "ftpipe/transfer/fetch_part.h"

#define UNKNOWN_END UINT64_MAX
#define MIN_PIECE_BYTES ((uint64_t)8 << 20)
#define MAX_PIECE_BYTES ((uint64_t)1 << 30)
#define PROGRESS_INTERVAL_NS 200000000ull
#define RATE_INTERVAL_NS 1000000000ull
enum { MAX_PROBES_AT_ONCE = 16, POLL_MS = 50 };

typedef struct {
    uint64_t start;
    uint64_t end; /* UNKNOWN_END while the size is unknown */
    int attempt;  /* failed attempts so far */
    uint64_t not_before_ns;
} piece;

typedef enum { JOB_PRESENT, JOB_PROBE, JOB_TRANSFER, JOB_TRANSFERRED, JOB_PUBLISHED } job_state;

typedef struct {
    const ft_fetch_file *file;
    job_state state;
    int64_t size_bytes;     /* -1: unknown */
    bool ranges;            /* the server serves byte ranges */
    char *validator;
    int probe_attempt;
    uint64_t probe_not_before_ns;
    bool probing;
    bool probe_with_get;    /* HEAD was refused: probe with GET of byte 0 */
    ft_part_file part;
    piece *pieces;          /* waiting to be requested, by offset */
    size_t n_pieces, pieces_capacity;
    int n_active;
    uint64_t done_bytes;    /* recorded ranges plus what running requests wrote */
    bool dirty;             /* written since the last save */
    uint64_t saved_ns;
    char *sha256_hex;       /* computed after the transfer when one is expected */
} job;

typedef struct engine engine;

typedef struct {
    engine *engine;
    job *job;
    CURL *easy;
    bool probe;
    piece piece;
    uint64_t written;
    uint64_t skip_bytes;    /* of a whole file sent for a range: bytes before the piece, not written */
    bool body_checked;
    bool probe_answered;    /* a GET probe had what it needed and stopped the body */
    char *fatal;            /* a message that stops the whole download */
    char curl_error[CURL_ERROR_SIZE];
    ft_http_headers headers;
} request;

struct engine {
    const ft_fetch_options *options;
    CURLM *multi;
    job *jobs;
    size_t n_jobs;
    request **active;
    size_t n_active, active_capacity;
    ft_strbuf failure;      /* the first fatal message */
    uint64_t bytes_received;
    uint64_t present_bytes;
    uint64_t rate_ns, rate_bytes, progress_ns;
    double bytes_per_second;
};

void ft_fetch_options_default(ft_fetch_options *options)
{
    *options = (ft_fetch_options){
        .transfers = 8,
        .connections_per_file = 4,
        .retries = 5,
        .stall_timeout_ms = 60000,
        .retry_delay_ms = 1000,
        .save_interval_ms = 1000,
    };
}

/* The first bytes of a body: is this the response asked for? */
static bool check_body_start(request *r)
{
    job *j = r->job;
    ft_http_read_headers(r->easy, &r->headers);
    long status = ft_http_status(r->easy);
    bool whole = r->piece.start == 0 && (r->piece.end == UNKNOWN_END || r->piece.end == (uint64_t)j->size_bytes);
    if (status == 200 && !whole && r->piece.end == (uint64_t)j->size_bytes && j->n_active == 1) {
        /* The rest of a transfer cut short, answered with the whole file: read past what is on disk. */
        r->skip_bytes = r->piece.start;
        ft_http_log(r->engine->options, "%s: the server sent the whole file instead of the bytes from %" PRIu64
                    "; reading past those already on disk", j->file->name, r->piece.start);
    } else if (status == 200 && !whole) {
        r->fatal = ft_xasprintf("cannot download %s from %s: the server ignored a byte-range request although "
                                "it advertises byte ranges; set connections_per_file = 1 and run again",
                                j->file->name, j->file->url);
        return false;
    }
    if (status == 206 && (!r->headers.has_content_range || r->headers.content_range_start != r->piece.start)) {
        r->fatal = ft_xasprintf("cannot download %s from %s: the server answered a request for bytes from %" PRIu64
                                " with other bytes", j->file->name, j->file->url, r->piece.start);
        return false;
    }
    /* Only strong ETags ("...") are compared: weak ones and dates may differ between a
     * content server's machines for the same bytes. */
    const char *etag = r->headers.etag;
    if (etag && j->validator && etag[0] == '"' && j->validator[0] == '"' && strcmp(etag, j->validator) != 0) {
        r->fatal = ft_xasprintf("cannot download %s from %s: the file changed on the server during the download "
                                "(its ETag went from %s to %s); run again to fetch it anew",
                                j->file->name, j->file->url, j->validator, etag);
        ft_part_discard(&j->part);
        return false;
    }
    return true;
}

static uint64_t bytes_still_needed(const engine *e);

/* A body of unannounced length stops at the declared size, or at max_file_bytes. */
static bool past_size_bound(request *r, uint64_t end)
{
    job *j = r->job;
    int64_t expected = j->file->expected_size_bytes;
    if (expected >= 0 && end > (uint64_t)expected) {
        r->fatal = ft_xasprintf("cannot download %s from %s: the server sent more than the declared size of %"
                                PRId64 " bytes; stopped there (check the size parameter and the URL)",
                                j->file->name, j->file->url, expected);
        ft_part_discard(&j->part);
        return true;
    }
    uint64_t bound = r->engine->options->max_file_bytes;
    if (expected < 0 && bound > 0 && end > bound) {
        char bound_text[16];
        ft_format_bytes(bound, bound_text, sizeof bound_text);
        r->fatal = ft_xasprintf("cannot download %s from %s: the server sent more than max_size (%s) without "
                                "saying how large the file is; stopped there (raise max_size, or declare the file's "
                                "size)", j->file->name, j->file->url, bound_text);
        ft_part_discard(&j->part);
        return true;
    }
    return false;
}

static size_t on_body(char *data, size_t size, size_t count, void *pointer)
{
    request *r = pointer;
    job *j = r->job;
    size_t length = size * count;
    if (ft_http_status(r->easy) >= 300)
        return length; /* an error page, not the file */
    if (r->probe) {
        /* A whole file answering a one-byte probe: the headers said enough. */
        r->probe_answered = ft_http_status(r->easy) == 200;
        return r->probe_answered ? 0 : length;
    }
    if (!r->body_checked) {
        if (!check_body_start(r))
            return 0;
        r->body_checked = true;
    }
    if (r->skip_bytes > 0) {
        size_t skipped = length < r->skip_bytes ? length : (size_t)r->skip_bytes;
        r->skip_bytes -= skipped;
        r->engine->bytes_received += skipped;
        if (skipped == length)
            return length;
        return skipped + on_body(data + skipped, 1, length - skipped, pointer);
    }
    uint64_t offset = r->piece.start + r->written;
    if (r->piece.end != UNKNOWN_END && offset + length > r->piece.end) {
        r->fatal = ft_xasprintf("cannot download %s from %s: the server sent more bytes than the file has",
                                j->file->name, j->file->url);
        return 0;
    }
    if (r->piece.end == UNKNOWN_END && past_size_bound(r, offset + length))
        return 0;
    if (ft_part_write(&j->part, data, length, offset) != 0) {
        if (errno == ENOSPC && j->size_bytes >= 0) {
            char needed[16];
            ft_format_bytes(bytes_still_needed(r->engine), needed, sizeof needed);
            r->fatal = ft_xasprintf("no space left on the device while writing %s: the download still needs %s "
                                    "more; free some space and run again%s", j->part.part_path, needed,
                                    j->part.resumable ? " (the bytes written so far are kept)" : "");
        } else if (errno == ENOSPC) {
            char written[16];
            ft_format_bytes(j->done_bytes, written, sizeof written);
            r->fatal = ft_xasprintf("no space left on the device while writing %s after %s (the server did not say "
                                    "how large the file is); free some space and run again",
                                    j->part.part_path, written);
        } else {
            r->fatal = ft_xstrdup(ft_error_message());
        }
        return 0;
    }
    r->written += length;
    j->done_bytes += length;
    j->dirty = true;
    r->engine->bytes_received += length;
    return length;
}

/* --- the request pool --- */

static int start_request(engine *e, job *j, bool probe, piece p)
{
    request *r = ft_xcalloc(1, sizeof *r);
    *r = (request){.engine = e, .job = j, .probe = probe, .piece = p, .headers.content_range_total = -1};
    r->easy = ft_http_new_handle(e->options, j->file->url, r->curl_error);
    if (!r->easy) {
        free(r);
        return ft_error("cannot start a transfer for %s: libcurl could not create a handle", j->file->name);
    }
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    if (probe) {
        if (j->probe_with_get)
            curl_easy_setopt(r->easy, CURLOPT_RANGE, "0-0");
        else
            curl_easy_setopt(r->easy, CURLOPT_NOBODY, 1L);
        j->probing = true;
    } else {
        /* Larger reads mean fewer pwrite calls on fast links. */
        curl_easy_setopt(r->easy, CURLOPT_BUFFERSIZE, 256L * 1024);
        bool whole = p.start == 0 && (p.end == UNKNOWN_END || p.end == (uint64_t)j->size_bytes);
        if (!whole) {
            char range[64];
            snprintf(range, sizeof range, "%" PRIu64 "-%" PRIu64, p.start, p.end - 1);
            curl_easy_setopt(r->easy, CURLOPT_RANGE, range);
        }
        j->n_active++;
    }
    curl_multi_add_handle(e->multi, r->easy);
    ft_grow((void **)&e->active, &e->active_capacity, e->n_active + 1, sizeof *e->active);
    e->active[e->n_active++] = r;
    return 0;
}

/* Detaches a request from the pool and frees it. */
static void end_request(engine *e, request *r)
{
    for (size_t i = 0; i < e->n_active; i++) {
        if (e->active[i] == r) {
            e->active[i] = e->active[--e->n_active];
            break;
        }
    }
    if (r->probe)
        r->job->probing = false;
    else
        r->job->n_active--;
    curl_multi_remove_handle(e->multi, r->easy);
    curl_easy_cleanup(r->easy);
    ft_http_headers_free(&r->headers);
    free(r->fatal);
    free(r);
}

/* Records why the download stops; the first reason wins. */
static void fail(engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(engine *e, const char *fmt, ...)
{
    if (e->failure.length > 0)
        return;
    va_list args;
    va_start(args, fmt);
    ft_strbuf_vprintf(&e->failure, fmt, args);
    va_end(args);
}

static void add_piece(job *j, piece p)
{
    size_t at = 0;
    while (at < j->n_pieces && j->pieces[at].start < p.start)
        at++;
    ft_grow((void **)&j->pieces, &j->pieces_capacity, j->n_pieces + 1, sizeof *j->pieces);
    memmove(j->pieces + at + 1, j->pieces + at, (j->n_pieces - at) * sizeof *j->pieces);
    j->pieces[at] = p;
    j->n_pieces++;
}

static bool take_ready_piece(job *j, uint64_t now_ns, piece *out)
{
    for (size_t i = 0; i < j->n_pieces; i++) {
        if (j->pieces[i].not_before_ns <= now_ns) {
            *out = j->pieces[i];
            memmove(j->pieces + i, j->pieces + i + 1, (j->n_pieces - i - 1) * sizeof *j->pieces);
            j->n_pieces--;
            return true;
        }
    }
    return false;
}

/* Records the job's written ranges, including those of its running requests. */
static int save_job(engine *e, job *j)
{
    ft_range_set in_flight = {0};
    for (size_t i = 0; i < e->n_active; i++) {
        request *r = e->active[i];
        if (r->job == j && !r->probe)
            ft_range_set_add(&in_flight, r->piece.start, r->piece.start + r->written);
    }
    int result = ft_part_save(&j->part, &in_flight);
    ft_range_set_free(&in_flight);
    j->dirty = false;
    j->saved_ns = ft_now_ns();
    return result;
}

/* --- what a finished request means --- */

static void probe_succeeded(engine *e, request *r)
{
    job *j = r->job;
    ft_http_read_headers(r->easy, &r->headers);
    curl_off_t length = -1;
    curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
    if (j->probe_with_get && r->headers.content_range_total >= 0) {
        length = r->headers.content_range_total; /* a 206 answer: ranges work */
        j->ranges = length > 0;
    } else {
        j->ranges = r->headers.accept_ranges && length > 0;
    }
    j->size_bytes = length;
    const char *validator = r->headers.etag ? r->headers.etag : r->headers.last_modified;
    j->validator = validator ? ft_xstrdup(validator) : NULL;
    j->state = JOB_TRANSFER;
    int64_t expected = j->file->expected_size_bytes;
    if (expected >= 0 && length >= 0 && expected != length) {
        fail(e, "size mismatch for %s (%s): expected %" PRId64 " bytes, the server has %" PRId64
             " bytes; nothing was downloaded: check the size parameter and the URL", j->file->name, j->file->url,
             expected, (int64_t)length);
    }
    uint64_t bound = e->options->max_file_bytes;
    if (expected < 0 && bound > 0 && length > 0 && (uint64_t)length > bound) {
        char bound_text[16], length_text[16];
        ft_format_bytes(bound, bound_text, sizeof bound_text);
        ft_format_bytes((uint64_t)length, length_text, sizeof length_text);
        fail(e, "%s (%s) is %s, more than max_size (%s); nothing was downloaded: raise max_size if it is right",
             j->file->name, j->file->url, length_text, bound_text);
    }
}

static void retry_or_fail(engine *e, request *r, const char *reason);

/* Why a transfer stopped short, with the bytes it has against those it expects. */
static void describe_cut(ft_strbuf *out, const request *r, const char *how)
{
    const job *j = r->job;
    ft_strbuf_printf(out, "the transfer was cut short (%s): %" PRIu64, how, j->done_bytes);
    if (j->size_bytes >= 0)
        ft_strbuf_printf(out, " of %" PRId64, j->size_bytes);
    ft_strbuf_puts(out, " bytes received");
}

static void transfer_succeeded(engine *e, request *r)
{
    job *j = r->job;
    if (r->piece.end == UNKNOWN_END) {
        j->size_bytes = (int64_t)r->written;
        j->part.size_bytes = j->size_bytes;
    } else if (r->written < r->piece.end - r->piece.start) {
        ft_strbuf reason;
        ft_strbuf_init(&reason);
        describe_cut(&reason, r, "the server ended its answer early");
        retry_or_fail(e, r, reason.data);
        ft_strbuf_free(&reason);
        return;
    }
    ft_range_set_add(&j->part.done, r->piece.start, r->piece.start + r->written);
}

/* Schedules the unfinished rest of a piece again, or gives up after too many
 * attempts; a request that made progress before failing costs no attempt. */
static void retry_or_fail(engine *e, request *r, const char *reason)
{
    job *j = r->job;
    piece rest = r->piece;
    bool progressed = false;
    if (r->probe) {
        rest.attempt = ++j->probe_attempt;
    } else if (j->ranges) {
        ft_range_set_add(&j->part.done, rest.start, rest.start + r->written);
        rest.start += r->written;
        progressed = r->written > 0;
        rest.attempt += !progressed;
    } else {
        j->done_bytes -= r->written;
        rest.attempt++;
        if (ft_part_restart(&j->part) != 0) {
            fail(e, "%s", ft_error_message());
            return;
        }
    }
    if (rest.attempt > e->options->retries) {
        fail(e, "cannot download %s from %s after %d attempts: %s%s", j->file->name, j->file->url, rest.attempt,
             reason, j->part.done.count > 0 ? "; run again to resume" : "");
        return;
    }
    int64_t delay_ms = ft_http_retry_delay_ms(e->options, rest.attempt);
    uint64_t not_before = ft_now_ns() + (uint64_t)delay_ms * 1000000u;
    if (progressed)
        ft_http_log(e->options, "%s: %s; asking for the rest from byte %" PRIu64 " in %.1f s", j->file->name,
                    reason, rest.start, (double)delay_ms / 1000.0);
    else
        ft_http_log(e->options, "%s: %s; retrying in %.1f s (attempt %d of %d)", j->file->name, reason,
                    (double)delay_ms / 1000.0, rest.attempt + 1, e->options->retries + 1);
    if (r->probe) {
        j->probe_not_before_ns = not_before;
    } else {
        rest.not_before_ns = not_before;
        add_piece(j, rest);
    }
}

static void request_finished(engine *e, request *r, CURLcode code)
{
    job *j = r->job;
    long status = ft_http_status(r->easy);
    bool http = status != 0;
    long redirects = 0;
    curl_easy_getinfo(r->easy, CURLINFO_REDIRECT_COUNT, &redirects);
    if (r->fatal) {
        fail(e, "%s", r->fatal);
    } else if (r->probe && !j->probe_with_get && code == CURLE_OK &&
               (status == 405 || status == 501 || (status == 403 && redirects > 0))) {
        j->probe_with_get = true; /* probed again by the next round */
    } else if (r->probe_answered || (code == CURLE_OK && (!http || (status >= 200 && status < 300)))) {
        if (r->probe)
            probe_succeeded(e, r);
        else
            transfer_succeeded(e, r);
    } else if (ft_http_is_transient(status, code)) {
        ft_strbuf reason, how;
        ft_strbuf_init(&reason);
        ft_strbuf_init(&how);
        ft_http_describe_transient(&how, status, code, r->curl_error);
        if (!r->probe && code != CURLE_OK && status >= 200 && status < 300)
            describe_cut(&reason, r, how.data);
        else
            ft_strbuf_puts(&reason, how.data);
        retry_or_fail(e, r, reason.data);
        ft_strbuf_free(&reason);
        ft_strbuf_free(&how);
    } else {
        if (e->failure.length == 0)
            ft_http_describe_failure(&e->failure, e->options, j->file->name, j->file->url, status, code,
                                     r->curl_error);
    }
}

/* --- scheduling --- */

static uint64_t bytes_still_needed(const engine *e)
{
    uint64_t needed = 0;
    for (size_t i = 0; i < e->n_jobs; i++) {
        const job *j = &e->jobs[i];
        if (j->state == JOB_TRANSFER && j->size_bytes > (int64_t)j->done_bytes)
            needed += (uint64_t)j->size_bytes - j->done_bytes;
    }
    return needed;
}

static void start_probes(engine *e)
{
    uint64_t now = ft_now_ns();
    size_t probing = 0;
    for (size_t i = 0; i < e->n_jobs; i++)
        probing += e->jobs[i].probing;
    for (size_t i = 0; i < e->n_jobs && probing < MAX_PROBES_AT_ONCE; i++) {
        job *j = &e->jobs[i];
        if (j->state != JOB_PROBE || j->probing || j->probe_not_before_ns > now)
            continue;
        if (start_request(e, j, true, (piece){0}) != 0) {
            fail(e, "%s", ft_error_message());
            return;
        }
        probing++;
    }
}

/* Closes a job whose every piece is written: its ranges are recorded, its data synced. */
static void finish_transfer(engine *e, job *j)
{
    if (j->file->expected_size_bytes >= 0 && j->size_bytes != j->file->expected_size_bytes) {
        ft_part_discard(&j->part);
        fail(e, "size mismatch for %s (%s): expected %" PRId64 " bytes, received %" PRId64 " bytes; the file was "
             "deleted: check the size parameter and the URL", j->file->name, j->file->url,
             j->file->expected_size_bytes, j->size_bytes);
        return;
    }
    if (save_job(e, j) != 0 || ft_part_finish(&j->part) != 0) {
        fail(e, "%s", ft_error_message());
        return;
    }
    j->state = JOB_TRANSFERRED;
    ft_http_log(e->options, "%s: received", j->file->name);
}

static void start_transfers(engine *e)
{
    uint64_t now = ft_now_ns();
    int busy_jobs = 0;
    for (size_t i = 0; i < e->n_jobs; i++)
        busy_jobs += e->jobs[i].n_active > 0;
    for (size_t i = 0; i < e->n_jobs; i++) {
        job *j = &e->jobs[i];
        if (j->state != JOB_TRANSFER)
            continue;
        if (j->n_pieces == 0 && j->n_active == 0) {
            finish_transfer(e, j);
            continue;
        }
        if (j->n_active == 0 && busy_jobs >= e->options->transfers)
            continue;
        bool was_idle = j->n_active == 0;
        piece p;
        while (j->n_active < e->options->connections_per_file && take_ready_piece(j, now, &p)) {
            if (start_request(e, j, false, p) != 0) {
                fail(e, "%s", ft_error_message());
                return;
            }
        }
        busy_jobs += was_idle && j->n_active > 0;
    }
}

static bool phase_over(const engine *e, job_state phase)
{
    if (e->failure.length > 0)
        return true;
    for (size_t i = 0; i < e->n_jobs; i++)
        if (e->jobs[i].state == phase)
            return false;
    return true;
}

static void report_progress(engine *e, bool verifying)
{
    uint64_t now = ft_now_ns();
    if (now - e->rate_ns >= RATE_INTERVAL_NS) {
        double rate = (double)(e->bytes_received - e->rate_bytes) * 1e9 / (double)(now - e->rate_ns);
        e->bytes_per_second = e->bytes_per_second == 0 ? rate : 0.7 * e->bytes_per_second + 0.3 * rate;
        e->rate_ns = now;
        e->rate_bytes = e->bytes_received;
    }
    if (!e->options->on_progress)
        return;
    ft_fetch_progress progress = {.done_bytes = e->present_bytes, .total_bytes = e->present_bytes,
                                  .bytes_per_second = e->bytes_per_second, .verifying = verifying};
    for (size_t i = 0; i < e->n_jobs; i++) {
        const job *j = &e->jobs[i];
        if (j->state == JOB_PRESENT)
            continue;
        progress.done_bytes += j->done_bytes;
        if (j->size_bytes >= 0)
            progress.total_bytes += (uint64_t)j->size_bytes;
    }
    e->options->on_progress(e->options->context, &progress);
    e->progress_ns = now;
}

/* Runs requests until no job is left in `phase`, a failure, or cancellation. */
static void run_phase(engine *e, job_state phase)
{
    int64_t save_interval_ms = e->options->save_interval_ms > 0 ? e->options->save_interval_ms : 1000;
    while (!phase_over(e, phase)) {
        if (e->options->is_cancelled && e->options->is_cancelled(e->options->context)) {
            fail(e, "the download was interrupted; run again to resume it");
            break;
        }
        if (phase == JOB_PROBE)
            start_probes(e);
        else
            start_transfers(e);
        int running = 0;
        curl_multi_perform(e->multi, &running);
        CURLMsg *message;
        int left;
        while ((message = curl_multi_info_read(e->multi, &left))) {
            if (message->msg != CURLMSG_DONE)
                continue;
            request *r = NULL;
            curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            CURLcode code = message->data.result;
            request_finished(e, r, code);
            end_request(e, r);
        }
        uint64_t now = ft_now_ns();
        for (size_t i = 0; i < e->n_jobs; i++) {
            job *j = &e->jobs[i];
            if (j->state == JOB_TRANSFER && j->dirty && now - j->saved_ns >= (uint64_t)save_interval_ms * 1000000u &&
                save_job(e, j) != 0)
                fail(e, "%s", ft_error_message());
        }
        if (now - e->progress_ns >= PROGRESS_INTERVAL_NS)
            report_progress(e, false);
        if (!phase_over(e, phase))
            curl_multi_poll(e->multi, NULL, 0, POLL_MS, NULL);
    }
}

/* Stops every request, keeping what they wrote for a resume. */
static void stop_all(engine *e)
{
    for (size_t i = 0; i < e->n_jobs; i++) {
        job *j = &e->jobs[i];
        if (j->state == JOB_TRANSFER && j->part.fd >= 0 && j->done_bytes > 0)
            save_job(e, j);
    }
    while (e->n_active > 0)
        end_request(e, e->active[0]);
}

/* --- planning: sizes known, before the first byte --- */

/* The nearest folder above path that exists (a destination's own may not yet). */
static char *existing_folder(const char *path)
{
    char *folder = ft_path_dirname(path);
    while (!ft_path_is_dir(folder) && strcmp(folder, "/") != 0 && strcmp(folder, ".") != 0) {
        char *parent = ft_path_dirname(folder);
        free(folder);
        folder = parent;
    }
    return folder;
}

/* Compares, per file system, the bytes the downloads still have to allocate with
 * the free space, counting what parts of earlier runs already hold. */
static int check_free_space(engine *e)
{
    char **folders = ft_xcalloc(e->n_jobs + 1, sizeof *folders);
    dev_t *devices = ft_xcalloc(e->n_jobs + 1, sizeof *devices);
    for (size_t i = 0; i < e->n_jobs; i++) {
        struct stat st;
        folders[i] = e->jobs[i].state == JOB_TRANSFER ? existing_folder(e->jobs[i].file->destination) : NULL;
        if (folders[i] && stat(folders[i], &st) == 0)
            devices[i] = st.st_dev;
    }
    int result = 0;
    for (size_t i = 0; i < e->n_jobs && result == 0; i++) {
        bool counted = !folders[i];
        for (size_t k = 0; k < i && !counted; k++)
            counted = folders[k] && devices[k] == devices[i];
        if (counted)
            continue;
        uint64_t needed = 0, free_bytes = 0;
        for (size_t k = i; k < e->n_jobs; k++) {
            const job *j = &e->jobs[k];
            uint64_t allocated = folders[k] && devices[k] == devices[i] ? ft_part_allocated_bytes(j->file->destination) : 0;
            if (folders[k] && devices[k] == devices[i] && j->size_bytes > (int64_t)allocated)
                needed += (uint64_t)j->size_bytes - allocated;
        }
        result = ft_free_space_bytes(folders[i], &free_bytes);
        if (result == 0 && needed > free_bytes) {
            char needed_text[16], free_text[16];
            ft_format_bytes(needed, needed_text, sizeof needed_text);
            ft_format_bytes(free_bytes, free_text, sizeof free_text);
            result = ft_error("not enough free space for the download in %s: it needs %s more and %s is free; "
                              "free some space or move the workspace to a larger disk",
                              folders[i], needed_text, free_text);
        }
    }
    for (size_t i = 0; i < e->n_jobs; i++)
        free(folders[i]);
    free(folders);
    free(devices);
    return result;
}

static uint64_t choose_piece_bytes(const ft_fetch_options *options, uint64_t size)
{
    if (options->piece_bytes > 0)
        return options->piece_bytes;
    uint64_t piece_bytes = size / ((uint64_t)options->connections_per_file * 4);
    piece_bytes = (piece_bytes + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
    return piece_bytes < MIN_PIECE_BYTES ? MIN_PIECE_BYTES : piece_bytes > MAX_PIECE_BYTES ? MAX_PIECE_BYTES : piece_bytes;
}

/* Opens the part file (keeping an earlier run's ranges) and cuts what is missing into pieces. */
static int plan_job(engine *e, job *j)
{
    char *dir = ft_path_dirname(j->file->destination);
    int result = ft_mkdir_p(dir);
    free(dir);
    if (result != 0 ||
        ft_part_open(&j->part, j->file->destination, j->file->url, j->size_bytes, j->validator, j->ranges) != 0)
        return -1;
    if (j->size_bytes < 0) {
        add_piece(j, (piece){0, UNKNOWN_END, 0, 0});
        return 0;
    }
    j->done_bytes = ft_range_set_bytes(&j->part.done);
    if (j->done_bytes > 0) {
        char done_text[16], size_text[16];
        ft_format_bytes(j->done_bytes, done_text, sizeof done_text);
        ft_format_bytes((uint64_t)j->size_bytes, size_text, sizeof size_text);
        ft_http_log(e->options, "%s: resuming with %s of %s already on disk", j->file->name, done_text, size_text);
    }
    ft_range_set missing = {0};
    ft_range_set_missing(&j->part.done, (uint64_t)j->size_bytes, &missing);
    uint64_t piece_bytes = j->ranges ? choose_piece_bytes(e->options, (uint64_t)j->size_bytes) : UINT64_MAX;
    for (size_t i = 0; i < missing.count; i++)
        for (uint64_t start = missing.items[i].start; start < missing.items[i].end; start += piece_bytes) {
            uint64_t end = missing.items[i].end - start > piece_bytes ? start + piece_bytes : missing.items[i].end;
            add_piece(j, (piece){start, end, 0, 0});
        }
    ft_range_set_free(&missing);
    return 0;
}

/* --- verification and publishing --- */

/* Computes the sha256 of every received file that expects one. */
static void verify_checksums(engine *e)
{
    size_t n_to_verify = 0;
    for (size_t i = 0; i < e->n_jobs; i++)
        n_to_verify += e->jobs[i].state == JOB_TRANSFERRED && e->jobs[i].file->expected_sha256;
    if (n_to_verify == 0)
        return;
    report_progress(e, true);
    const char **paths = ft_xcalloc(n_to_verify, sizeof *paths);
    job **jobs = ft_xcalloc(n_to_verify, sizeof *jobs);
    char(*hex)[FT_SHA256_HEX_LENGTH + 1] = ft_xcalloc(n_to_verify, sizeof *hex);
    size_t n = 0;
    for (size_t i = 0; i < e->n_jobs; i++) {
        if (e->jobs[i].state == JOB_TRANSFERRED && e->jobs[i].file->expected_sha256) {
            jobs[n] = &e->jobs[i];
            paths[n++] = e->jobs[i].part.part_path;
        }
    }
    if (ft_sha256_files_hex(paths, n, hex) != 0)
        fail(e, "%s", ft_error_message());
    else
        for (size_t i = 0; i < n; i++)
            jobs[i]->sha256_hex = ft_xstrdup(hex[i]);
    free(paths);
    free(jobs);
    free(hex);
}

static void publish(engine *e, ft_fetch_stats *stats)
{
    for (size_t i = 0; i < e->n_jobs; i++) {
        job *j = &e->jobs[i];
        if (j->state != JOB_TRANSFERRED)
            continue;
        if (j->sha256_hex && strcasecmp(j->sha256_hex, j->file->expected_sha256) != 0) {
            fail(e, "checksum mismatch for %s (%s): expected sha256 %s, got %s; the file was deleted and nothing "
                 "was published: check the expected checksum, or run again to fetch the file anew", j->file->name,
                 j->file->url, j->file->expected_sha256, j->sha256_hex);
            ft_part_discard(&j->part);
            continue;
        }
        if (ft_part_publish(&j->part, j->file->destination) != 0) {
            fail(e, "%s", ft_error_message());
            continue;
        }
        j->state = JOB_PUBLISHED;
        stats->n_files_fetched++;
    }
    for (size_t i = 0; i < e->n_jobs; i++) {
        if (e->jobs[i].state != JOB_PUBLISHED)
            continue;
        char *dir = ft_path_dirname(e->jobs[i].file->destination);
        if (ft_fsync_dir(dir) != 0)
            fail(e, "%s", ft_error_message());
        free(dir);
    }
}

static void free_engine(engine *e)
{
    while (e->n_active > 0)
        end_request(e, e->active[0]);
    for (size_t i = 0; i < e->n_jobs; i++) {
        job *j = &e->jobs[i];
        ft_part_close(&j->part);
        free(j->validator);
        free(j->pieces);
        free(j->sha256_hex);
    }
    free(e->jobs);
    free(e->active);
    if (e->multi)
        curl_multi_cleanup(e->multi);
    ft_strbuf_free(&e->failure);
}

int ft_fetch_files(const ft_fetch_file *files, size_t count, const ft_fetch_options *options,
                   ft_fetch_stats *stats)
{
    ft_fetch_stats ignored;
    stats = stats ? stats : &ignored;
    *stats = (ft_fetch_stats){0};
    engine e = {.options = options, .n_jobs = count};
    ft_strbuf_init(&e.failure);
    e.jobs = ft_xcalloc(count ? count : 1, sizeof *e.jobs);
    for (size_t i = 0; i < count; i++) {
        job *j = &e.jobs[i];
        *j = (job){.file = &files[i], .state = JOB_PROBE, .size_bytes = -1, .part = {.fd = -1}};
        struct stat st;
        if (stat(files[i].destination, &st) == 0 && S_ISREG(st.st_mode)) {
            j->state = JOB_PRESENT;
            e.present_bytes += (uint64_t)st.st_size;
            stats->n_files_present++;
        }
    }
    e.multi = curl_multi_init();
    if (!e.multi) {
        free_engine(&e);
        return ft_error("cannot start downloading: libcurl could not create a multi handle");
    }
    /* One connection per request: byte ranges multiplexed over one HTTP/2 connection
     * would share its bandwidth instead of adding to it. */
    curl_multi_setopt(e.multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
    run_phase(&e, JOB_PROBE);
    int result = 0;
    if (result == 0 && e.failure.length == 0 && check_free_space(&e) != 0)
        result = -1;
    for (size_t i = 0; i < count && result == 0 && e.failure.length == 0; i++)
        if (e.jobs[i].state == JOB_TRANSFER && plan_job(&e, &e.jobs[i]) != 0)
            result = -1;
    for (size_t i = 0; i < count; i++)
        stats->bytes_resumed += e.jobs[i].state == JOB_TRANSFER ? e.jobs[i].done_bytes : 0;
    if (result == 0 && e.failure.length == 0) {
        e.rate_ns = ft_now_ns(); /* the rate counts transfer time only */
        run_phase(&e, JOB_TRANSFER);
        stop_all(&e);
    }
    if (result == 0 && e.failure.length == 0)
        verify_checksums(&e);
    if (result == 0 && e.failure.length == 0)
        publish(&e, stats);
    report_progress(&e, false);
    stats->bytes_received = e.bytes_received;
    for (size_t i = 0; i < count; i++) {
        const job *j = &e.jobs[i];
        stats->total_bytes += j->state == JOB_PRESENT ? 0 : j->size_bytes > 0 ? (uint64_t)j->size_bytes : 0;
    }
    stats->total_bytes += e.present_bytes;
    if (result == 0 && e.failure.length > 0)
        result = ft_error("%s", e.failure.data);
    free_engine(&e);
    return result;
}
