/* status_lines: a stage's lines in `ftpipe status`. */
#include "ftpipe/engine/status_lines.h"

#include <stdbool.h>
#include <stdint.h>
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

/* Formatted texts kept by value in a small table (a value's slot is fixed by
 * the value), as status prints thousands of runs that share few start seconds
 * and durations, which then are formatted once each. */
#define FORMATTED_SLOTS 64

typedef struct {
    int64_t value;
    bool used;
    char text[32];
} formatted_text;

/* A start time as local time. */
static const char *start_time_text(int64_t ms)
{
    static formatted_text slots[FORMATTED_SLOTS];
    int64_t seconds = ms / 1000;
    formatted_text *slot = &slots[(uint64_t)seconds % FORMATTED_SLOTS];
    if (!slot->used || slot->value != seconds) {
        time_t at = (time_t)seconds;
        struct tm local;
        localtime_r(&at, &local);
        strftime(slot->text, sizeof slot->text, "%Y-%m-%d %H:%M:%S", &local);
        slot->value = seconds;
        slot->used = true;
    }
    return slot->text;
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

/* A duration in seconds with one decimal, as %.1f writes it. */
static const char *duration_text(int64_t ms)
{
    static formatted_text slots[FORMATTED_SLOTS];
    formatted_text *slot = &slots[(uint64_t)ms % FORMATTED_SLOTS];
    if (!slot->used || slot->value != ms) {
        snprintf(slot->text, sizeof slot->text, "%.1f", (double)ms / 1000.0);
        slot->value = ms;
        slot->used = true;
    }
    return slot->text;
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

/* Written without printf, both lines in one write: status prints two lines for
 * each of thousands of stages. */
void ft_status_print_line(const char *target_name, const char *kind, const char *action, const char *reason,
                          const ft_run_record *last)
{
    char *target = ft_terminal_text(target_name);
    size_t target_length = strlen(target), kind_length = strlen(kind), reason_length = strlen(reason);
    size_t size = target_length + kind_length + reason_length + 256;
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
    if (last) {
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
    }
    fwrite(line, 1, (size_t)(at - line), stdout);
    if (line != small)
        free(line);
    free(target);
}
