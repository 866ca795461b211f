/* status_lines: a stage's lines in `ftpipe status`. */
#include "ftpipe/engine/status_lines.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ftpipe/base/terminal_text.h"

static const char *run_status_word(ft_run_status status)
{
    static const char *const words[] = {"running (or killed)", "done", "failed", "stopped", "restored"};
    return words[status];
}

static void format_time(int64_t ms, char *out, size_t size)
{
    time_t seconds = (time_t)(ms / 1000);
    struct tm local;
    localtime_r(&seconds, &local);
    strftime(out, size, "%Y-%m-%d %H:%M:%S", &local);
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

void ft_status_print_line(const char *target_name, const char *kind, const char *action, const char *reason,
                          const ft_run_record *last)
{
    char *target = ft_terminal_text(target_name);
    printf("%-32s %-8s %-10s %s\n", target, kind, action, reason);
    free(target);
    if (!last)
        return;
    char when[64];
    format_time(last->start_ms, when, sizeof when);
    if (last->end_ms > 0)
        printf("    last run %s: %s in %.1f s\n", when, run_status_word(last->status),
               (double)(last->end_ms - last->start_ms) / 1000.0);
    else
        printf("    last run %s: %s\n", when, run_status_word(last->status));
}
