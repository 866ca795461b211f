/* Tests for fetch against a real nginx started for the test (tests/e2e/nginx.sh,
 * tests/fixtures/download/nginx.conf.in) on a free port of 127.0.0.1; the bytes
 * it served are read back from its access log. The last cases use a small server
 * of its own that cuts connections midway. */
#include "check.h"
#include "fixtures.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/sha256.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/transfer/fetch.h"
#include "ftpipe/transfer/fetch_http.h"

#define MIB (1024 * 1024)
#define BIG_BYTES (24 * MIB)

static char *server_dir;
static int server_port;

/* --- the server and its files --- */

static void fill_pattern(char *bytes, size_t length, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < length; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes[i] = (char)(x >> 24);
    }
}

static void write_served(const char *relative, const char *bytes, size_t length)
{
    char *path = ft_xasprintf("%s/www/%s", server_dir, relative);
    char *dir = ft_path_dirname(path);
    ft_mkdir_p(dir);
    ft_write_file_atomic(path, bytes, length);
    free(dir);
    free(path);
}

static char *big_bytes;

static bool start_server(void)
{
    char template[] = "/tmp/ftpipe-fetch-XXXXXX";
    server_dir = ft_xstrdup(mkdtemp(template));
    write_served("files/a.txt", "alpha\n", 6);
    write_served("files/b.txt", "bravo!\n", 7);
    write_served("files/empty.txt", "", 0);
    big_bytes = ft_xmalloc(BIG_BYTES);
    fill_pattern(big_bytes, BIG_BYTES, 7);
    write_served("files/big.bin", big_bytes, BIG_BYTES);
    /* A sparse file larger than any free space: only its size is ever read. */
    char *huge = ft_xasprintf("%s/www/files/huge.bin", server_dir);
    FILE *file = fopen(huge, "w");
    if (file) {
        CHECK_INT(ftruncate(fileno(file), (off_t)8 << 40), 0);
        fclose(file);
    }
    free(huge);
    server_port = fixture_nginx_start(server_dir);
    return server_port > 0;
}

static void stop_server(void)
{
    fixture_nginx_stop(server_dir);
    free(server_dir);
    free(big_bytes);
}

static char *url_of(const char *path) { return ft_xasprintf("http://127.0.0.1:%d%s", server_port, path); }

/* --- the access log: "$msec $request_time $request_method $uri $status $body_bytes_sent ..." --- */

typedef struct {
    int64_t start_ms;
    char method[8];
    char uri[128];
    int status;
    long long body_bytes;
    char range[64];
    char auth[8];
} log_entry;

/* The log's entries for uri (NULL: all) whose request started at or after since_ms. */
static size_t read_log(const char *uri, int64_t since_ms, log_entry *out, size_t capacity)
{
    char *path = ft_xasprintf("%s/access.log", server_dir);
    FILE *file = fopen(path, "r");
    free(path);
    size_t n = 0;
    char line[512];
    while (file && fgets(line, sizeof line, file)) {
        double end_s, duration_s;
        log_entry entry;
        long long bytes_with_headers;
        if (sscanf(line, "%lf %lf %7s %127s %d %lld %lld \"%63[^\"]\" %7s", &end_s, &duration_s, entry.method,
                   entry.uri, &entry.status, &entry.body_bytes, &bytes_with_headers, entry.range, entry.auth) != 9)
            continue;
        entry.start_ms = (int64_t)((end_s - duration_s) * 1000.0 + 0.5);
        if ((uri && strcmp(entry.uri, uri) != 0) || entry.start_ms < since_ms)
            continue;
        if (n < capacity)
            out[n] = entry;
        n++;
    }
    if (file)
        fclose(file);
    return n;
}

/* A time after every request made so far: the log keeps milliseconds, so a request that
 * ended in the millisecond this is called would otherwise count as starting at it. */
static int64_t log_mark(void)
{
    usleep(2000);
    return ft_wall_ms();
}

/* nginx logs a request when it ends, a moment after the client has all it needs. */
static size_t wait_for_log(const char *uri, int64_t since_ms, size_t expected, log_entry *out, size_t capacity)
{
    size_t n = 0;
    for (int i = 0; i < 100 && (n = read_log(uri, since_ms, out, capacity)) < expected; i++)
        usleep(20000);
    return n;
}

static long long body_bytes_of(const log_entry *entries, size_t n, const char *method)
{
    long long sum = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(entries[i].method, method) == 0)
            sum += entries[i].body_bytes;
    return sum;
}

/* --- helpers --- */

static char *make_dir(void)
{
    char template[] = "/tmp/ftpipe-fetched-XXXXXX";
    return ft_xstrdup(mkdtemp(template));
}

static bool file_equals(const char *path, const char *bytes, size_t length)
{
    char *data = NULL;
    size_t got = 0;
    if (ft_read_file(path, &data, &got) != 0)
        return false;
    bool same = got == length && memcmp(data, bytes, length) == 0;
    free(data);
    return same;
}

static ft_fetch_options test_options(void)
{
    ft_fetch_options options;
    ft_fetch_options_default(&options);
    options.retry_delay_ms = 100;
    options.stall_timeout_ms = 10000;
    return options;
}

/* --- cases --- */

TEST(several_files_at_once)
{
    char *dir = make_dir();
    char *urls[3] = {url_of("/files/a.txt"), url_of("/files/b.txt"), url_of("/files/empty.txt")};
    char *dests[3] = {ft_path_join(dir, "a.txt"), ft_path_join(dir, "sub/b.txt"), ft_path_join(dir, "empty.txt")};
    ft_fetch_file files[3];
    for (int i = 0; i < 3; i++)
        files[i] = (ft_fetch_file){urls[i], dests[i], ft_path_basename(dests[i]), -1, NULL};
    ft_fetch_options options = test_options();
    options.transfers = 2;
    ft_fetch_stats stats;
    CHECK_INT(ft_fetch_files(files, 3, &options, &stats), 0);
    CHECK(file_equals(dests[0], "alpha\n", 6));
    CHECK(file_equals(dests[1], "bravo!\n", 7));
    CHECK(file_equals(dests[2], "", 0));
    CHECK_INT(stats.n_files_fetched, 3);
    CHECK_INT(stats.bytes_received, 13);
    CHECK_INT(stats.total_bytes, 13);
    char *part = ft_xasprintf("%s.part", dests[0]);
    CHECK(!ft_path_exists(part));
    free(part);
    /* A second run finds every file in place and asks the server nothing. */
    int64_t second_run_ms = ft_wall_ms();
    CHECK_INT(ft_fetch_files(files, 3, &options, &stats), 0);
    CHECK_INT(stats.n_files_present, 3);
    CHECK_INT(stats.n_files_fetched, 0);
    log_entry entries[8];
    usleep(100000);
    CHECK_INT(read_log(NULL, second_run_ms, entries, 8), 0);
    for (int i = 0; i < 3; i++) {
        free(urls[i]);
        free(dests[i]);
    }
    ft_remove_tree(dir);
    free(dir);
}

TEST(large_file_in_parallel_ranges)
{
    char *dir = make_dir();
    char *url = url_of("/files/big.bin");
    char *dest = ft_path_join(dir, "big.bin");
    ft_fetch_file file = {url, dest, "big.bin", BIG_BYTES, NULL};
    ft_fetch_options options = test_options();
    options.connections_per_file = 4;
    options.piece_bytes = 4 * MIB;
    int64_t since_ms = log_mark();
    ft_fetch_stats stats;
    CHECK_INT(ft_fetch_files(&file, 1, &options, &stats), 0);
    CHECK(file_equals(dest, big_bytes, BIG_BYTES));
    CHECK_INT(stats.bytes_received, BIG_BYTES);
    log_entry entries[16];
    size_t n = wait_for_log("/files/big.bin", since_ms, 7, entries, 16);
    CHECK_INT(n, 7); /* one HEAD, six ranges of 4 MiB */
    int ranges_seen = 0;
    for (size_t i = 0; i < n && i < 16; i++) {
        if (strcmp(entries[i].method, "GET") != 0)
            continue;
        CHECK_INT(entries[i].status, 206);
        CHECK_INT(entries[i].body_bytes, 4 * MIB);
        long long start, end;
        CHECK(sscanf(entries[i].range, "bytes=%lld-%lld", &start, &end) == 2);
        CHECK_INT(end - start + 1, 4 * MIB);
        ranges_seen++;
    }
    CHECK_INT(ranges_seen, 6);
    CHECK_INT(body_bytes_of(entries, n < 16 ? n : 16, "GET"), BIG_BYTES);
    free(url);
    free(dest);
    ft_remove_tree(dir);
    free(dir);
}

/* The done bytes a progress file records. */
static long long recorded_bytes(const char *progress_path)
{
    char *text = NULL;
    if (ft_read_file(progress_path, &text, NULL) != 0) {
        ft_error_clear();
        return 0;
    }
    long long sum = 0;
    for (char *line = strstr(text, "\ndone "); line; line = strstr(line + 1, "\ndone ")) {
        long long start, end;
        if (sscanf(line, "\ndone %lld %lld", &start, &end) == 2)
            sum += end - start;
    }
    free(text);
    return sum;
}

static ft_fetch_options resumable_options(void)
{
    ft_fetch_options options = test_options();
    options.connections_per_file = 4;
    options.piece_bytes = 4 * MIB;
    options.save_interval_ms = 100;
    return options;
}

/* A download killed midway (kill -9: no chance to save anything more) resumes
 * where its progress file says, and the server sends only the rest. */
TEST(killed_download_resumes_with_only_the_missing_bytes)
{
    char *dir = make_dir();
    char *url = url_of("/slow/big.bin");
    char *dest = ft_path_join(dir, "big.bin");
    char *progress_path = ft_xasprintf("%s.part.progress", dest);
    ft_fetch_file file = {url, dest, "big.bin", -1, NULL};
    ft_fetch_options options = resumable_options();
    pid_t child = fork();
    if (child == 0)
        _exit(ft_fetch_files(&file, 1, &options, NULL) == 0 ? 0 : 1);
    for (int i = 0; i < 1000 && recorded_bytes(progress_path) < 8 * MIB; i++)
        usleep(10000);
    kill(child, SIGKILL);
    int status;
    waitpid(child, &status, 0);
    CHECK(WIFSIGNALED(status));
    int64_t killed_ms = ft_wall_ms();
    long long kept = recorded_bytes(progress_path);
    CHECK(kept >= 8 * MIB && kept < BIG_BYTES);

    usleep(20000); /* so that the resume's requests start strictly after killed_ms */
    ft_fetch_stats stats;
    CHECK_INT(ft_fetch_files(&file, 1, &options, &stats), 0);
    CHECK(file_equals(dest, big_bytes, BIG_BYTES));
    CHECK_INT(stats.bytes_resumed, kept);
    CHECK_INT(stats.bytes_received, BIG_BYTES - kept);
    log_entry entries[32];
    long long served = 0;
    for (int i = 0; i < 100 && served < BIG_BYTES - kept; i++, usleep(20000)) {
        size_t n = read_log("/slow/big.bin", killed_ms + 10, entries, 32);
        served = body_bytes_of(entries, n < 32 ? n : 32, "GET");
    }
    CHECK_INT(served, BIG_BYTES - kept);
    CHECK(!ft_path_exists(progress_path));
    free(progress_path);
    free(url);
    free(dest);
    ft_remove_tree(dir);
    free(dir);
}

static bool cancel_after_4_mib(void *context)
{
    const char *progress_path = context;
    return recorded_bytes(progress_path) >= 4 * MIB;
}

TEST(cancelled_download_keeps_its_bytes)
{
    char *dir = make_dir();
    char *url = url_of("/slow/big.bin");
    char *dest = ft_path_join(dir, "big.bin");
    char *progress_path = ft_xasprintf("%s.part.progress", dest);
    ft_fetch_file file = {url, dest, "big.bin", -1, NULL};
    ft_fetch_options options = resumable_options();
    options.is_cancelled = cancel_after_4_mib;
    options.context = progress_path;
    ft_fetch_stats stats;
    CHECK_INT(ft_fetch_files(&file, 1, &options, &stats), -1);
    CHECK_STR(ft_error_message(), "the download was interrupted; run again to resume it");
    CHECK(!ft_path_exists(dest));
    long long kept = recorded_bytes(progress_path);
    /* Everything received before the cancel is recorded, not only the last save. */
    CHECK_INT(kept, stats.bytes_received);

    options.is_cancelled = NULL;
    CHECK_INT(ft_fetch_files(&file, 1, &options, &stats), 0);
    CHECK(file_equals(dest, big_bytes, BIG_BYTES));
    CHECK_INT(stats.bytes_resumed, kept);
    CHECK_INT(stats.bytes_received, BIG_BYTES - kept);
    free(progress_path);
    free(url);
    free(dest);
    ft_remove_tree(dir);
    free(dir);
}

/* Fetches one URL path into a fresh folder; returns the result and leaves the message. */
static int fetch_one(const char *path, const char *name, int64_t size, const char *sha256,
                     ft_fetch_options *options, char **dest_out)
{
    char *dir = make_dir();
    char *url = url_of(path);
    char *dest = ft_path_join(dir, name);
    ft_fetch_file file = {url, dest, name, size, sha256};
    ft_fetch_options defaults = test_options();
    int result = ft_fetch_files(&file, 1, options ? options : &defaults, NULL);
    free(url);
    free(dir);
    *dest_out = dest;
    return result;
}

static void remove_fetched(char *dest)
{
    char *dir = ft_path_dirname(dest);
    ft_remove_tree(dir);
    free(dir);
    free(dest);
}

static char *expected_message(const char *fmt, const char *path)
{
    char *url = url_of(path);
    char *message = ft_xasprintf(fmt, url);
    free(url);
    return message;
}

TEST(missing_file_says_which_and_where)
{
    char *dest;
    CHECK_INT(fetch_one("/files/nope.bin", "nope.bin", -1, NULL, NULL, &dest), -1);
    char *expected = expected_message("cannot download nope.bin: %s answered 404 Not Found; check the URL",
                                      "/files/nope.bin");
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    char *dir = ft_path_dirname(dest);
    char *part = ft_xasprintf("%s.part", dest);
    CHECK(!ft_path_exists(dest) && !ft_path_exists(part));
    free(part);
    free(dir);
    remove_fetched(dest);
}

TEST(credentials_refused_or_missing)
{
    char *dest;
    ft_fetch_options options = test_options();
    options.auth_hint = "set HF_TOKEN to a token that can read it";
    CHECK_INT(fetch_one("/private/a.txt", "a.txt", -1, NULL, &options, &dest), -1);
    char *expected = expected_message(
        "cannot download a.txt: %s answered 401 Unauthorized; set HF_TOKEN to a token that can read it",
        "/private/a.txt");
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    remove_fetched(dest);

    CHECK_INT(fetch_one("/forbidden/a.txt", "a.txt", -1, NULL, NULL, &dest), -1);
    expected = expected_message("cannot download a.txt: %s answered 403 Forbidden; the server wants "
                                "credentials this download lacks", "/forbidden/a.txt");
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    remove_fetched(dest);

    /* With the token, the same file comes, and the server saw an Authorization header. */
    int64_t since_ms = log_mark();
    options.bearer_token = "test-token-123";
    CHECK_INT(fetch_one("/private/a.txt", "a.txt", -1, NULL, &options, &dest), 0);
    CHECK(file_equals(dest, "alpha\n", 6));
    remove_fetched(dest);
    log_entry entries[4];
    size_t n = wait_for_log("/private/a.txt", since_ms, 2, entries, 4);
    CHECK_INT(n, 2);
    for (size_t i = 0; i < n && i < 4; i++)
        CHECK_STR(entries[i].auth, "auth");

    /* Redirected to another host, the request goes on without the token. */
    since_ms = log_mark();
    CHECK_INT(fetch_one("/elsewhere/b.txt", "b.txt", -1, NULL, &options, &dest), 0);
    CHECK(file_equals(dest, "bravo!\n", 7));
    remove_fetched(dest);
    CHECK_INT(wait_for_log("/elsewhere/b.txt", since_ms, 2, entries, 4), 2);
    CHECK_STR(entries[0].auth, "auth");
    n = wait_for_log("/files/b.txt", since_ms, 2, entries, 4);
    CHECK_INT(n, 2);
    for (size_t i = 0; i < n && i < 4; i++)
        CHECK_STR(entries[i].auth, "-");
}

TEST(redirect_is_followed)
{
    char *dest;
    int64_t since_ms = log_mark();
    CHECK_INT(fetch_one("/moved/b.txt", "b.txt", -1, NULL, NULL, &dest), 0);
    CHECK(file_equals(dest, "bravo!\n", 7));
    remove_fetched(dest);
    log_entry entries[4];
    CHECK_INT(wait_for_log("/moved/b.txt", since_ms, 2, entries, 4), 2);
    CHECK_INT(entries[0].status, 302);
    CHECK_INT(entries[1].status, 302);
    CHECK_INT(wait_for_log("/files/b.txt", since_ms, 2, entries, 4), 2);
    CHECK_INT(entries[1].status, 200);
    CHECK_INT(entries[1].body_bytes, 7);
}

TEST(checksum_mismatch_publishes_nothing)
{
    char *dest;
    const char *wrong = "0000000000000000000000000000000000000000000000000000000000000000";
    CHECK_INT(fetch_one("/files/a.txt", "a.txt", -1, wrong, NULL, &dest), -1);
    char *expected = expected_message(
        "checksum mismatch for a.txt (%s): expected sha256 0000000000000000000000000000000000000000000000000000000000000000, "
        "got b6a98d9ce9a2d9149288fa3df42d377c3e42737afdcdaf714e33c0a100b51060; the file was deleted and nothing "
        "was published: check the expected checksum, or run again to fetch the file anew", "/files/a.txt");
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    char *part = ft_xasprintf("%s.part", dest);
    char *progress = ft_xasprintf("%s.part.progress", dest);
    CHECK(!ft_path_exists(dest));
    CHECK(!ft_path_exists(part));
    CHECK(!ft_path_exists(progress));
    free(part);
    free(progress);
    remove_fetched(dest);

    char right[FT_SHA256_HEX_LENGTH + 1];
    ft_sha256 context;
    ft_sha256_init(&context);
    ft_sha256_update(&context, "alpha\n", 6);
    ft_sha256_finish_hex(&context, right);
    CHECK_INT(fetch_one("/files/a.txt", "a.txt", 6, right, NULL, &dest), 0);
    CHECK(file_equals(dest, "alpha\n", 6));
    remove_fetched(dest);
}

TEST(wrong_size_stops_before_downloading)
{
    char *dest;
    int64_t since_ms = log_mark();
    CHECK_INT(fetch_one("/files/b.txt", "b.txt", 5, NULL, NULL, &dest), -1);
    char *expected = expected_message("size mismatch for b.txt (%s): expected 5 bytes, the server has 7 bytes; "
                                      "nothing was downloaded: check the size parameter and the URL",
                                      "/files/b.txt");
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    remove_fetched(dest);
    log_entry entries[4];
    CHECK_INT(wait_for_log("/files/b.txt", since_ms, 1, entries, 4), 1);
    CHECK_STR(entries[0].method, "HEAD");
}

static void collect_log(void *context, const char *line)
{
    ft_strbuf_printf(context, "%s\n", line);
}

TEST(transient_errors_are_retried_with_backoff)
{
    ft_strbuf log;
    ft_strbuf_init(&log);
    ft_fetch_options options = test_options();
    options.retries = 2;
    options.on_log = collect_log;
    options.context = &log;
    char *dest;
    int64_t since_ms = log_mark();
    uint64_t started_ns = ft_now_ns();
    CHECK_INT(fetch_one("/flaky/x.bin", "x.bin", -1, NULL, &options, &dest), -1);
    uint64_t elapsed_ms = (ft_now_ns() - started_ns) / 1000000;
    char *expected = expected_message("cannot download x.bin from %s after 3 attempts: 503 Service Unavailable",
                                      "/flaky/x.bin");
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    CHECK_STR(log.data, "x.bin: 503 Service Unavailable; retrying in 0.1 s (attempt 2 of 3)\n"
                        "x.bin: 503 Service Unavailable; retrying in 0.2 s (attempt 3 of 3)\n");
    CHECK(elapsed_ms >= 300);
    log_entry entries[8];
    CHECK_INT(wait_for_log("/flaky/x.bin", since_ms, 3, entries, 8), 3);
    remove_fetched(dest);
    ft_strbuf_free(&log);
}

TEST(not_enough_space_is_said_before_downloading)
{
    char *dest;
    int64_t since_ms = log_mark();
    CHECK_INT(fetch_one("/files/huge.bin", "huge.bin", -1, NULL, NULL, &dest), -1);
    char *dir = ft_path_dirname(dest);
    char *prefix = ft_xasprintf("not enough free space for the download in %s: it needs 8.0 TiB more and ", dir);
    CHECK(strncmp(ft_error_message(), prefix, strlen(prefix)) == 0);
    const char *suffix = " is free; free some space or move the workspace to a larger disk";
    size_t length = strlen(ft_error_message());
    CHECK(length > strlen(suffix) && strcmp(ft_error_message() + length - strlen(suffix), suffix) == 0);
    free(prefix);
    free(dir);
    remove_fetched(dest);
    log_entry entries[4];
    CHECK_INT(wait_for_log("/files/huge.bin", since_ms, 1, entries, 4), 1);
    CHECK_STR(entries[0].method, "HEAD");
}

/* What a probe learns from the last response's headers: over http, nginx's
 * ETag, Last-Modified and Accept-Ranges; over file://, which has no headers,
 * ranges and the file's mtime as the validator. */
static void probe_headers(const char *url, ft_http_headers *headers)
{
    ft_fetch_options options = test_options();
    char curl_error[CURL_ERROR_SIZE];
    CURL *easy = ft_http_new_handle(&options, url, curl_error);
    curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    CHECK_INT(curl_easy_perform(easy), CURLE_OK);
    ft_http_read_headers(easy, headers);
    curl_easy_cleanup(easy);
}

TEST(reads_the_headers_a_probe_needs)
{
    ft_http_headers headers = {.content_range_total = -1};
    char *http_url = ft_xasprintf("http://127.0.0.1:%d/files/big.bin", server_port);
    probe_headers(http_url, &headers);
    CHECK(headers.accept_ranges);
    CHECK(headers.etag && headers.etag[0] == '"');
    CHECK(headers.last_modified != NULL);
    CHECK(!headers.has_content_range);
    char *file_url = ft_xasprintf("file://%s/www/files/big.bin", server_dir);
    probe_headers(file_url, &headers);
    CHECK(headers.accept_ranges);
    CHECK(headers.etag == NULL);
    CHECK(headers.last_modified && strncmp(headers.last_modified, "mtime ", 6) == 0);
    ft_http_headers_free(&headers);
    free(http_url);
    free(file_url);
}

TEST(file_urls_work_like_http)
{
    char *dir = make_dir();
    char *url = ft_xasprintf("file://%s/www/files/big.bin", server_dir);
    char *missing_url = ft_xasprintf("file://%s/www/files/nope.bin", server_dir);
    char *dest = ft_path_join(dir, "big.bin");
    ft_fetch_file file = {url, dest, "big.bin", -1, NULL};
    ft_fetch_options options = test_options();
    options.piece_bytes = 5 * MIB; /* uneven pieces: the last is shorter */
    ft_fetch_stats stats;
    CHECK_INT(ft_fetch_files(&file, 1, &options, &stats), 0);
    CHECK(file_equals(dest, big_bytes, BIG_BYTES));
    CHECK_INT(stats.bytes_received, BIG_BYTES);
    ft_fetch_file missing = {missing_url, dest, "nope.bin", -1, NULL};
    unlink(dest);
    CHECK_INT(ft_fetch_files(&missing, 1, &options, &stats), -1);
    char *expected = ft_xasprintf("cannot download nope.bin: %s does not exist or cannot be read; check the URL",
                                  missing_url);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(url);
    free(missing_url);
    free(dest);
    ft_remove_tree(dir);
    free(dir);
}

typedef struct {
    uint64_t done_bytes;
    uint64_t cancel_at_bytes;
} cancel_point;

static void remember_progress(void *context, const ft_fetch_progress *progress)
{
    ((cancel_point *)context)->done_bytes = progress->done_bytes;
}

static bool reached_cancel_point(void *context)
{
    const cancel_point *point = context;
    return point->cancel_at_bytes > 0 && point->done_bytes >= point->cancel_at_bytes;
}

TEST(server_refusing_head_is_probed_with_one_byte)
{
    char *dest;
    int64_t since_ms = log_mark();
    CHECK_INT(fetch_one("/nohead/big.bin", "big.bin", BIG_BYTES, NULL, NULL, &dest), 0);
    CHECK(file_equals(dest, big_bytes, BIG_BYTES));
    remove_fetched(dest);
    log_entry entries[8];
    size_t n = wait_for_log("/nohead/big.bin", since_ms, 5, entries, 8);
    CHECK_INT(n, 5); /* HEAD, the probe, three pieces of 8 MiB */
    CHECK_STR(entries[0].method, "HEAD");
    CHECK_INT(entries[0].status, 405);
    CHECK_STR(entries[1].range, "bytes=0-0");
    CHECK_INT(entries[1].status, 206);
    CHECK_INT(entries[1].body_bytes, 1);
    CHECK_INT(body_bytes_of(entries, n < 8 ? n : 8, "GET"), BIG_BYTES + 1);
}

TEST(unknown_length_and_no_byte_ranges_still_work)
{
    char *dest;
    int64_t since_ms = log_mark();
    CHECK_INT(fetch_one("/chunked/big.bin", "big.bin", -1, NULL, NULL, &dest), 0);
    CHECK(file_equals(dest, big_bytes, BIG_BYTES));
    remove_fetched(dest);
    log_entry entries[8];
    CHECK_INT(wait_for_log("/chunked/big.bin", since_ms, 2, entries, 8), 2);
    CHECK_STR(entries[1].range, "-");

    /* Without byte ranges: one connection, and an interrupted download starts over. */
    cancel_point point = {.cancel_at_bytes = 4 * MIB};
    ft_fetch_options options = resumable_options();
    options.on_progress = remember_progress;
    options.is_cancelled = reached_cancel_point;
    options.context = &point;
    since_ms = log_mark();
    CHECK_INT(fetch_one("/noranges/big.bin", "big.bin", -1, NULL, &options, &dest), -1);
    CHECK_STR(ft_error_message(), "the download was interrupted; run again to resume it");
    char *progress_path = ft_xasprintf("%s.part.progress", dest);
    CHECK(!ft_path_exists(progress_path));
    free(progress_path);
    char *url = url_of("/noranges/big.bin");
    ft_fetch_file file = {url, dest, "big.bin", -1, NULL};
    point.cancel_at_bytes = 0;
    ft_fetch_stats stats;
    CHECK_INT(ft_fetch_files(&file, 1, &options, &stats), 0);
    CHECK(file_equals(dest, big_bytes, BIG_BYTES));
    CHECK_INT(stats.bytes_resumed, 0);
    CHECK_INT(stats.bytes_received, BIG_BYTES);
    size_t n = wait_for_log("/noranges/big.bin", since_ms, 4, entries, 8);
    CHECK_INT(n, 4); /* HEAD, the interrupted GET, HEAD, the whole GET */
    for (size_t i = 0; i < n && i < 8; i++)
        CHECK_STR(entries[i].range, "-");
    free(url);
    remove_fetched(dest);
}

/* --- a server that cuts downloads midway --- */

typedef struct {
    int listen_fd;
    int port;
    const char *body;
    size_t length;
    bool ignores_ranges; /* answers every GET with the whole file, as a range-blind proxy does */
    int n_cut;           /* the first n_cut answers break halfway */
    char ranges[8][64];  /* the Range header of each GET ("" when none) */
    int n_gets;
    size_t body_bytes_sent;
} cutting_server;

static void *serve_with_cuts(void *pointer)
{
    cutting_server *server = pointer;
    int fd;
    while ((fd = accept(server->listen_fd, NULL, NULL)) >= 0) {
        char request[4096];
        size_t got = 0;
        request[0] = '\0';
        while (got < sizeof request - 1 && !strstr(request, "\r\n\r\n")) {
            ssize_t n = read(fd, request + got, sizeof request - 1 - got);
            if (n <= 0)
                break;
            got += (size_t)n;
            request[got] = '\0';
        }
        const char *range = server->ignores_ranges ? NULL : strstr(request, "\r\nRange: bytes=");
        size_t start = 0;
        if (range)
            sscanf(range + 15, "%zu", &start);
        if (strncmp(request, "HEAD ", 5) == 0) {
            dprintf(fd, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nAccept-Ranges: bytes\r\nETag: \"v1\"\r\n"
                        "Connection: close\r\n\r\n", server->length);
        } else if (server->n_gets < 8) {
            int index = server->n_gets++;
            const char *asked = strstr(request, "\r\nRange: ");
            if (asked)
                sscanf(asked + 9, "%63[^\r]", server->ranges[index]);
            size_t left = server->length - start;
            if (range)
                dprintf(fd, "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %zu-%zu/%zu\r\n", start,
                        server->length - 1, server->length);
            else
                dprintf(fd, "HTTP/1.1 200 OK\r\n");
            dprintf(fd, "Content-Length: %zu\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n", left);
            size_t send_bytes = index < server->n_cut ? left / 2 : left;
            size_t sent = 0;
            while (sent < send_bytes) {
                ssize_t n = write(fd, server->body + start + sent, send_bytes - sent);
                if (n <= 0)
                    break;
                sent += (size_t)n;
            }
            server->body_bytes_sent += sent;
        }
        close(fd);
    }
    return NULL;
}

/* What a download from a cutting server ended with. */
typedef struct {
    int result;      /* ft_fetch_files' */
    char *error;     /* its message when it failed, else "" */
    ft_strbuf log;
    ft_fetch_stats stats;
    bool arrived;    /* the file is whole at its destination */
} cut_fetch;

/* Downloads MIB bytes of big_bytes from `server` into a fresh folder. */
static cut_fetch fetch_from_cutting_server(cutting_server *server, int retries)
{
    cut_fetch got = {0};
    ft_strbuf_init(&got.log);
    server->body = big_bytes;
    server->length = MIB;
    server->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t address_length = sizeof address;
    CHECK_INT(bind(server->listen_fd, (struct sockaddr *)&address, sizeof address), 0);
    CHECK_INT(listen(server->listen_fd, 8), 0);
    getsockname(server->listen_fd, (struct sockaddr *)&address, &address_length);
    server->port = ntohs(address.sin_port);
    pthread_t thread;
    pthread_create(&thread, NULL, serve_with_cuts, server);

    char *dir = make_dir();
    char *url = ft_xasprintf("http://127.0.0.1:%d/cut.bin", server->port);
    char *dest = ft_path_join(dir, "cut.bin");
    ft_fetch_file file = {url, dest, "cut.bin", MIB, NULL};
    ft_fetch_options options = test_options();
    options.retries = retries;
    options.on_log = collect_log;
    options.context = &got.log;
    got.result = ft_fetch_files(&file, 1, &options, &got.stats);
    got.error = ft_xstrdup(got.result != 0 ? ft_error_message() : "");
    shutdown(server->listen_fd, SHUT_RDWR);
    pthread_join(thread, NULL);
    close(server->listen_fd);
    got.arrived = file_equals(dest, big_bytes, MIB);
    free(url);
    free(dest);
    ft_remove_tree(dir);
    free(dir);
    return got;
}

static void cut_fetch_free(cut_fetch *got)
{
    free(got->error);
    ft_strbuf_free(&got->log);
}

TEST(connection_cut_midway_continues_with_a_range_request)
{
    cutting_server server = {.n_cut = 1};
    cut_fetch got = fetch_from_cutting_server(&server, 5);
    CHECK_INT(got.result, 0);
    CHECK(got.arrived);
    CHECK_INT(server.n_gets, 2);
    CHECK_STR(server.ranges[0], "");
    CHECK_STR(server.ranges[1], "bytes=524288-1048575");
    CHECK_INT(server.body_bytes_sent, MIB); /* no byte was sent twice */
    CHECK_INT(got.stats.bytes_received, MIB);
    CHECK(strstr(got.log.data, "cut.bin: the transfer was cut short (") == got.log.data);
    CHECK(strstr(got.log.data, "): 524288 of 1048576 bytes received; asking for the rest from byte 524288 in 0.1 s\n"));
    cut_fetch_free(&got);
}

/* The rest of a cut transfer answered with the whole file: read past the bytes on disk. */
TEST(cut_transfer_resumes_from_a_server_that_ignores_the_range)
{
    cutting_server server = {.ignores_ranges = true, .n_cut = 1};
    cut_fetch got = fetch_from_cutting_server(&server, 5);
    CHECK_INT(got.result, 0);
    CHECK(got.arrived);
    CHECK_INT(server.n_gets, 2);
    CHECK_STR(server.ranges[1], "bytes=524288-1048575");
    CHECK(strstr(got.log.data, "): 524288 of 1048576 bytes received; asking for the rest from byte 524288"));
    CHECK(strstr(got.log.data, "cut.bin: the server sent the whole file instead of the bytes from 524288; "
                               "reading past those already on disk\n"));
    cut_fetch_free(&got);
}

/* A server that cuts every answer: the failure says so, with the bytes received and expected. */
TEST(transfer_cut_every_time_says_how_far_it_got)
{
    cutting_server server = {.ignores_ranges = true, .n_cut = 8};
    cut_fetch got = fetch_from_cutting_server(&server, 2);
    CHECK_INT(got.result, -1);
    CHECK(!got.arrived);
    CHECK_INT(server.n_gets, 4); /* the first cut made progress, so it cost no attempt */
    char *expected = ft_xasprintf("cannot download cut.bin from http://127.0.0.1:%d/cut.bin after 3 attempts: "
                                  "the transfer was cut short (", server.port);
    CHECK(strstr(got.error, expected) == got.error);
    CHECK(strstr(got.error, "): 524288 of 1048576 bytes received; run again to resume"));
    CHECK(!strstr(got.error, "byte-range"));
    free(expected);
    cut_fetch_free(&got);
}

int main(void)
{
    if (!start_server()) {
        printf("not ok nginx_started (see the nginx error log in %s)\n", server_dir);
        return 1;
    }
    RUN(several_files_at_once);
    RUN(large_file_in_parallel_ranges);
    RUN(killed_download_resumes_with_only_the_missing_bytes);
    RUN(cancelled_download_keeps_its_bytes);
    RUN(missing_file_says_which_and_where);
    RUN(credentials_refused_or_missing);
    RUN(redirect_is_followed);
    RUN(checksum_mismatch_publishes_nothing);
    RUN(wrong_size_stops_before_downloading);
    RUN(transient_errors_are_retried_with_backoff);
    RUN(not_enough_space_is_said_before_downloading);
    RUN(reads_the_headers_a_probe_needs);
    RUN(file_urls_work_like_http);
    RUN(server_refusing_head_is_probed_with_one_byte);
    RUN(unknown_length_and_no_byte_ranges_still_work);
    RUN(connection_cut_midway_continues_with_a_range_request);
    RUN(cut_transfer_resumes_from_a_server_that_ignores_the_range);
    RUN(transfer_cut_every_time_says_how_far_it_got);
    stop_server();
    return check_done();
}
