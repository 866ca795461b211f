/* status_lines: a stage's lines in `ftpipe status`. */
#include "ftpipe/engine/status_lines.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ftpipe/base/mem.h"
#include "ftpipe/base/terminal_text.h"

static const char *run_status_word(ft_run_status status)
{
    static const char *const words[] = {"running (or killed)", "done", "failed", "stopped", "restored"};
    return words[status];
}

/* A start time as local time; formatted once per distinct second, as a build's
 * runs share few (status prints thousands). */
static const char *start_time_text(int64_t ms)
{
    static time_t formatted = (time_t)-1;
    static char text[64];
    time_t seconds = (time_t)(ms / 1000);
    if (seconds != formatted) {
        struct tm local;
        localtime_r(&seconds, &local);
        strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &local);
        formatted = seconds;
    }
    return text;
}

int ft_last_runs_load(ft_state *state, ft_last_runs *out)
{
    ft_strmap_init(&out->by_target);
    if (ft_state_last_runs(state, &out->runs, &out->n_runs) != 0)
        return -1;
    for (size_t i = 0; i < out->n_runs; i++)
        ft_strmap_put(&out->by_target, out->runs[i].target, i);
    return 0;
}

const ft_run_record *ft_last_run_of(const ft_last_runs *runs, const char *target)
{
    size_t *found = ft_strmap_get(&runs->by_target, target);
    return found ? &runs->runs[*found] : NULL;
}

void ft_last_runs_free(ft_last_runs *runs)
{
    for (size_t i = 0; i < runs->n_runs; i++)
        ft_run_record_free(&runs->runs[i]);
    free(runs->runs);
    ft_strmap_free(&runs->by_target);
}

/* A duration in seconds with one decimal, as %.1f writes it; formatted once per
 * distinct value (many stages take the same few tenths). */
static const char *duration_text(int64_t ms)
{
    static int64_t formatted = -1;
    static char text[32];
    if (ms != formatted) {
        snprintf(text, sizeof text, "%.1f", (double)ms / 1000.0);
        formatted = ms;
    }
    return text;
}

/* text, then spaces up to width, at *at in line (which holds a status line). */
static char *put_padded(char *at, const char *text, size_t width)
{
    size_t length = strlen(text);
    memcpy(at, text, length);
    at += length;
    for (; length < width; length++)
        *at++ = ' ';
    return at;
}

/* Written without printf: status prints two lines for each of thousands of stages. */
void ft_status_print_line(const char *target_name, const char *kind, const char *action, const char *reason,
                          const ft_run_record *last)
{
    char *target = ft_terminal_text(target_name);
    size_t target_length = strlen(target), kind_length = strlen(kind), reason_length = strlen(reason);
    size_t size = target_length + kind_length + reason_length + 128;
    char small[512];
    char *line = size <= sizeof small ? small : ft_xmalloc(size);
    char *at = put_padded(line, target, 32);
    *at++ = ' ';
    at = put_padded(at, kind, 8);
    *at++ = ' ';
    at = put_padded(at, action, 10);
    *at++ = ' ';
    memcpy(at, reason, reason_length);
    at += reason_length;
    *at++ = '\n';
    fwrite(line, 1, (size_t)(at - line), stdout);
    if (line != small)
        free(line);
    free(target);
    if (!last)
        return;
    at = line = small;
    at = put_padded(at, "    last run ", 0);
    at = put_padded(at, start_time_text(last->start_ms), 0);
    at = put_padded(at, ": ", 0);
    at = put_padded(at, run_status_word(last->status), 0);
    if (last->end_ms > 0) {
        at = put_padded(at, " in ", 0);
        at = put_padded(at, duration_text(last->end_ms - last->start_ms), 0);
        at = put_padded(at, " s", 0);
    }
    *at++ = '\n';
    fwrite(line, 1, (size_t)(at - line), stdout);
}
