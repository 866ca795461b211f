/* download: fetches a URL, files below a URL, or a Hugging Face hub repository
 * into a folder (rules/download.ft lists the parameters).
 *
 * Files land in <work>/download first, where partial files survive an
 * interruption for the next run with the same key to resume; only when every
 * file is complete and verified are they linked into the output folder. The
 * hub token comes from HF_TOKEN here, in the stage's own process, so it never
 * reaches the key, the state database or the log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/transfer/fetch.h"
#include "ftpipe/transfer/hf_hub.h"
#include "ftpipe/transfer/url.h"

typedef struct {
    char *name; /* the path below the output folder */
    char *url;
    int64_t size_bytes;
    char *sha256;
} wanted_file;

typedef struct {
    wanted_file *files;
    size_t n_files, capacity;
    char *auth_hint;
    char *not_found_hint;
} download_plan;

static void add_file(download_plan *plan, const char *name, char *url, int64_t size_bytes, const char *sha256)
{
    ft_grow((void **)&plan->files, &plan->capacity, plan->n_files + 1, sizeof *plan->files);
    plan->files[plan->n_files++] = (wanted_file){ft_xstrdup(name), url, size_bytes, sha256 ? ft_xstrdup(sha256) : NULL};
}

static void plan_free(download_plan *plan)
{
    for (size_t i = 0; i < plan->n_files; i++) {
        free(plan->files[i].name);
        free(plan->files[i].url);
        free(plan->files[i].sha256);
    }
    free(plan->files);
    free(plan->auth_hint);
    free(plan->not_found_hint);
}

/* --- what to fetch --- */

static int plan_hub(ft_stage *stage, const char *url, const char *download_dir, ft_fetch_options *options,
                    download_plan *plan, ft_fetch_stats *stats)
{
    const char *revision = ft_stage_param_is_set(stage, "revision") ? ft_stage_param_string(stage, "revision") : NULL;
    ft_hf_repo repo;
    if (ft_hf_parse_url(url, revision, getenv("HF_ENDPOINT"), &repo) != 0)
        return -1;
    plan->auth_hint = ft_hf_auth_hint(&repo, options->bearer_token != NULL);
    plan->not_found_hint = ft_hf_not_found_hint(&repo);
    options->auth_hint = plan->auth_hint;
    options->not_found_hint = plan->not_found_hint;
    size_t n_requests = 0;
    const char *const *requests = ft_stage_param_list(stage, "files", &n_requests);
    ft_hf_plan hub;
    int result = ft_hf_plan_files(&repo, requests, n_requests, download_dir, options, &hub);
    if (result == 0) {
        ft_stage_log(stage, "%s at revision %s is commit %s on %s: %zu files", url, repo.revision,
                     hub.commit ? hub.commit : "(not said)", repo.endpoint, hub.n_files);
        stats->bytes_received = hub.bytes_received;
        bool verify = ft_stage_param_bool(stage, "verify");
        for (size_t i = 0; i < hub.n_files; i++) {
            ft_hf_file *file = &hub.files[i];
            add_file(plan, file->path, file->url, file->size_bytes, verify ? file->sha256 : NULL);
            file->url = NULL;
        }
        ft_hf_plan_free(&hub);
    }
    ft_hf_repo_free(&repo);
    return result;
}

/* A URL's last path segment, without query or fragment: the name of a single file. */
static int plan_plain(ft_stage *stage, const char *url, download_plan *plan)
{
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0 && strncmp(url, "file://", 7) != 0)
        return ft_stage_fail(stage, "url = %s: expected an http://, https://, file:// or hf:// URL", url);
    if (ft_stage_param_is_set(stage, "revision"))
        return ft_stage_fail(stage, "revision applies to hf:// URLs only; %s is a plain URL", url);
    size_t n_files = 0;
    const char *const *files = ft_stage_param_list(stage, "files", &n_files);
    if (n_files == 0) {
        char *name = ft_url_file_name(url);
        if (!name || !ft_hf_path_is_safe(name)) {
            free(name);
            return ft_stage_fail(stage, "cannot name the file %s fetches: say it with files = NAME and a url of "
                                        "the folder holding it", url);
        }
        add_file(plan, name, ft_xstrdup(url), -1, NULL);
        free(name);
        return 0;
    }
    for (size_t i = 0; i < n_files; i++) {
        if (strpbrk(files[i], "*?["))
            return ft_stage_fail(stage, "files = %s: patterns need an hf:// URL (a plain web server has no file "
                                        "list to match them against); name the files", files[i]);
        if (!ft_hf_path_is_safe(files[i]))
            return ft_stage_fail(stage, "files = %s: expected a relative path without . or .. components", files[i]);
        bool listed = false;
        for (size_t k = 0; k < plan->n_files && !listed; k++)
            listed = strcmp(plan->files[k].name, files[i]) == 0;
        char *file_url = NULL;
        if (!listed && ft_url_join_file(url, files[i], &file_url) != 0)
            return ft_stage_fail(stage, "url = %s: %s", url, ft_error_message());
        if (!listed)
            add_file(plan, files[i], file_url, -1, NULL);
    }
    return 0;
}

/* Applies sha256 = FILE=HEX ... or size = FILE=BYTES ... to the planned files. */
static int apply_expected(ft_stage *stage, download_plan *plan, const char *param)
{
    size_t n = 0;
    const char *const *items = ft_stage_param_list(stage, param, &n);
    bool is_sha256 = strcmp(param, "sha256") == 0;
    for (size_t i = 0; i < n; i++) {
        const char *equals = strrchr(items[i], '=');
        const char *value = equals ? equals + 1 : items[i];
        wanted_file *file = NULL;
        if (!equals && plan->n_files == 1)
            file = &plan->files[0];
        else if (!equals)
            return ft_stage_fail(stage, "%s = %s: this download fetches %zu files; say which with FILE=%s", param,
                                 items[i], plan->n_files, is_sha256 ? "HEX" : "BYTES");
        for (size_t k = 0; equals && k < plan->n_files && !file; k++)
            if (strlen(plan->files[k].name) == (size_t)(equals - items[i]) &&
                strncmp(plan->files[k].name, items[i], (size_t)(equals - items[i])) == 0)
                file = &plan->files[k];
        if (!file)
            return ft_stage_fail(stage, "%s = %s: this download fetches no file %.*s", param, items[i],
                                 (int)(equals - items[i]), items[i]);
        char *end = NULL;
        if (is_sha256) {
            if (strlen(value) != 64 || strspn(value, "0123456789abcdefABCDEF") != 64)
                return ft_stage_fail(stage, "%s = %s: expected 64 hexadecimal digits", param, items[i]);
            free(file->sha256);
            file->sha256 = ft_xstrdup(value);
        } else {
            long long bytes = strtoll(value, &end, 10);
            if (!*value || *end || bytes < 0)
                return ft_stage_fail(stage, "%s = %s: expected a number of bytes", param, items[i]);
            file->size_bytes = bytes;
        }
    }
    return 0;
}

/* Ftpipe.lock's `locked` list: every planned file must be listed, and gets its size and SHA-256. */
static int apply_locked(ft_stage *stage, download_plan *plan)
{
    size_t n = 0;
    const char *const *items = ft_stage_param_list(stage, "locked", &n);
    if (n == 0)
        return 0;
    const char *target = ft_stage_target(stage);
    bool *used = ft_xcalloc(n, sizeof *used);
    int result = 0;
    for (size_t k = 0; k < plan->n_files && result == 0; k++) {
        wanted_file *file = &plan->files[k];
        size_t name_length = strlen(file->name);
        size_t i = 0;
        while (i < n && !(strncmp(items[i], file->name, name_length) == 0 && items[i][name_length] == '='))
            i++;
        if (i == n) {
            result = ft_stage_fail(stage, "%s is not in Ftpipe.lock: the download now brings a file it did not when "
                                   "locked; run `ftpipe lock --update %s` if that is wanted", file->name, target);
            break;
        }
        used[i] = true;
        const char *value = items[i] + name_length + 1;
        char *end = NULL;
        long long bytes = strtoll(value, &end, 10);
        if (bytes < 0 || *end != ':' || strlen(end + 1) != 64) {
            result = ft_stage_fail(stage, "Ftpipe.lock: %s: expected SIZE:SHA256", items[i]);
            break;
        }
        file->size_bytes = bytes;
        free(file->sha256);
        file->sha256 = ft_xstrdup(end + 1);
    }
    for (size_t i = 0; i < n && result == 0; i++)
        if (!used[i])
            result = ft_stage_fail(stage, "Ftpipe.lock lists %.*s, which the download no longer brings; run `ftpipe "
                                   "lock --update %s`", (int)strcspn(items[i], "="), items[i], target);
    free(used);
    return result;
}

/* --- reporting --- */

static void format_duration(double seconds, char *out, size_t out_size)
{
    int s = seconds < 0 ? 0 : seconds > 359999 ? 359999 : (int)(seconds + 0.5); /* under 100 hours */
    if (s >= 3600)
        snprintf(out, out_size, "%dh%02dm", s / 3600, s / 60 % 60);
    else if (s >= 60)
        snprintf(out, out_size, "%dm%02ds", s / 60, s % 60);
    else
        snprintf(out, out_size, "%ds", s);
}

static void on_progress(void *context, const ft_fetch_progress *progress)
{
    ft_stage *stage = context;
    char done[16], total[16], rate[16], eta[32];
    ft_format_bytes(progress->done_bytes, done, sizeof done);
    ft_format_bytes(progress->total_bytes, total, sizeof total);
    ft_format_bytes((uint64_t)progress->bytes_per_second, rate, sizeof rate);
    if (progress->verifying) {
        ft_stage_progress(stage, 1.0, "%s, verifying checksums", total);
    } else if (progress->total_bytes == 0) {
        ft_stage_progress(stage, -1, progress->done_bytes ? "%s" : "connecting", done);
    } else if (progress->bytes_per_second <= 0) {
        ft_stage_progress(stage, (double)progress->done_bytes / (double)progress->total_bytes, "%s/%s", done, total);
    } else {
        double left_bytes = progress->total_bytes > progress->done_bytes
                                ? (double)(progress->total_bytes - progress->done_bytes) : 0;
        format_duration(left_bytes / progress->bytes_per_second, eta, sizeof eta);
        ft_stage_progress(stage, (double)progress->done_bytes / (double)progress->total_bytes,
                          "%s/%s, %s/s, ETA %s", done, total, rate, eta);
    }
}

static void on_log(void *context, const char *line) { ft_stage_log(context, "%s", line); }
static bool on_cancel_check(void *context) { return ft_stage_cancelled(context); }

/* --- the run --- */

/* Links (or, where links fail, copies) every fetched file into the output folder. */
static int fill_output(const download_plan *plan, const char *download_dir, const char *output)
{
    if (ft_remove_tree(output) != 0 || ft_mkdir_p(output) != 0)
        return -1;
    for (size_t i = 0; i < plan->n_files; i++) {
        char *from = ft_path_join(download_dir, plan->files[i].name);
        char *to = ft_path_join(output, plan->files[i].name);
        char *folder = ft_path_dirname(to);
        int result = ft_mkdir_p(folder);
        if (result == 0 && link(from, to) != 0)
            result = ft_copy_file(from, to);
        free(folder);
        free(from);
        free(to);
        if (result != 0)
            return -1;
    }
    return 0;
}

static void summarize(ft_stage *stage, const download_plan *plan, const ft_fetch_stats *stats, uint64_t elapsed_ns)
{
    char total[16], received[16], resumed[16], rate[16];
    ft_format_bytes(stats->total_bytes, total, sizeof total);
    ft_format_bytes(stats->bytes_received, received, sizeof received);
    ft_format_bytes(stats->bytes_resumed, resumed, sizeof resumed);
    double seconds = (double)elapsed_ns / 1e9;
    ft_format_bytes(seconds > 0 ? (uint64_t)((double)stats->bytes_received / seconds) : 0, rate, sizeof rate);
    const char *files = plan->n_files == 1 ? "file" : "files";
    if (stats->bytes_resumed > 0)
        ft_stage_summary(stage, "%zu %s, %s (%s fetched at %s/s, %s resumed)", plan->n_files, files, total,
                         received, rate, resumed);
    else
        ft_stage_summary(stage, "%zu %s, %s (%s fetched at %s/s)", plan->n_files, files, total, received, rate);
}

static int run_download(ft_stage *stage)
{
    const char *url = ft_stage_param_string(stage, "url");
    char *download_dir = ft_path_join(ft_stage_work_dir(stage), "download");
    ft_fetch_options options;
    ft_fetch_options_default(&options);
    options.transfers = (int)ft_stage_param_int(stage, "transfers");
    options.connections_per_file = (int)ft_stage_param_int(stage, "connections_per_file");
    options.retries = (int)ft_stage_param_int(stage, "retries");
    options.stall_timeout_ms = ft_stage_param_duration_ms(stage, "timeout");
    options.max_file_bytes = (uint64_t)ft_stage_param_size_bytes(stage, "max_size");
    options.on_progress = on_progress;
    options.on_log = on_log;
    options.is_cancelled = on_cancel_check;
    options.context = stage;
    download_plan plan = {0};
    ft_fetch_stats planning_stats = {0};
    uint64_t started_ns = ft_now_ns();
    int result = 0;
    if (options.transfers < 1 || options.connections_per_file < 1 || options.retries < 0)
        result = ft_stage_fail(stage, "transfers and connections_per_file must be at least 1, retries at least 0");
    else
        result = ft_mkdir_p(download_dir);
    if (result == 0 && strncmp(url, "hf://", 5) == 0) {
        const char *token = getenv("HF_TOKEN");
        options.bearer_token = token && token[0] ? token : NULL;
        result = plan_hub(stage, url, download_dir, &options, &plan, &planning_stats);
    } else if (result == 0) {
        result = plan_plain(stage, url, &plan);
    }
    if (result == 0)
        result = apply_expected(stage, &plan, "sha256");
    if (result == 0)
        result = apply_expected(stage, &plan, "size");
    if (result == 0)
        result = apply_locked(stage, &plan);

    ft_fetch_file *files = ft_xcalloc(plan.n_files ? plan.n_files : 1, sizeof *files);
    for (size_t i = 0; i < plan.n_files; i++)
        files[i] = (ft_fetch_file){plan.files[i].url, ft_path_join(download_dir, plan.files[i].name),
                                   plan.files[i].name, plan.files[i].size_bytes, plan.files[i].sha256};
    ft_fetch_stats stats = {0};
    if (result == 0)
        result = ft_fetch_files(files, plan.n_files, &options, &stats);
    stats.bytes_received += planning_stats.bytes_received;
    if (result == 0)
        result = fill_output(&plan, download_dir, ft_stage_output_path(stage));
    if (result == 0)
        summarize(stage, &plan, &stats, ft_now_ns() - started_ns);
    for (size_t i = 0; i < plan.n_files; i++)
        free((char *)files[i].destination);
    free(files);
    plan_free(&plan);
    free(download_dir);
    return result;
}

const ft_stage_kind ft_kind_download = {
    .name = "download",
    .version = 1,
    .run = run_download,
};
