/* progress: permanent messages and live status lines. */
#include "ftpipe/engine/progress.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/base/terminal_text.h"

typedef struct {
    size_t slot;
    char *text;
    uint64_t printed_ns;  /* not live: when it was last printed as a plain line */
} status_line;

struct ft_progress {
    FILE *out;
    bool live;
    uint64_t plain_interval_ns;  /* not live: a running stage's status at most this often */
    status_line *lines;
    size_t n_lines;
    size_t drawn;        /* live lines currently on screen */
    uint64_t last_draw_ns;
    uint64_t start_ns;
    size_t settled;      /* stages finished one way or another, of total */
    size_t total;
};

ft_progress *ft_progress_new(FILE *out)
{
    ft_progress *progress = ft_xcalloc(1, sizeof *progress);
    progress->out = out;
    progress->start_ns = ft_now_ns();
    const char *term = getenv("TERM");
    progress->live = isatty(fileno(out)) && !(term && strcmp(term, "dumb") == 0);
    const char *interval = getenv("FTPIPE_PROGRESS_INTERVAL");
    double seconds = interval && *interval ? strtod(interval, NULL) : 30.0;
    progress->plain_interval_ns = seconds > 0.0 ? (uint64_t)(seconds * 1e9) : 0;
    return progress;
}

void ft_progress_free(ft_progress *progress)
{
    if (!progress)
        return;
    for (size_t i = 0; i < progress->n_lines; i++)
        free(progress->lines[i].text);
    free(progress->lines);
    free(progress);
}

bool ft_progress_is_live(const ft_progress *progress) { return progress->live; }

static void erase(ft_progress *progress)
{
    for (size_t i = 0; i < progress->drawn; i++)
        fputs("\033[1A\033[2K", progress->out);
    progress->drawn = 0;
}

static void draw(ft_progress *progress)
{
    if (progress->total > 0 && progress->n_lines > 0) {
        uint64_t seconds = (ft_now_ns() - progress->start_ns) / 1000000000u;
        fprintf(progress->out, "[%zu/%zu stages] %llum%02llus elapsed\n", progress->settled, progress->total,
                (unsigned long long)(seconds / 60), (unsigned long long)(seconds % 60));
        progress->drawn++;
    }
    for (size_t i = 0; i < progress->n_lines; i++) {
        char *shown = ft_terminal_text(progress->lines[i].text);
        fprintf(progress->out, "%.*s\n", 160, shown);
        free(shown);
    }
    progress->drawn += progress->n_lines;
    fflush(progress->out);
}

void ft_progress_message(ft_progress *progress, const char *fmt, ...)
{
    if (progress->live)
        erase(progress);
    va_list args;
    va_start(args, fmt);
    ft_strbuf message;
    ft_strbuf_init(&message);
    ft_strbuf_vprintf(&message, fmt, args);
    va_end(args);
    char *shown = ft_terminal_text(message.data);
    fputs(shown, progress->out);
    free(shown);
    ft_strbuf_free(&message);
    fputc('\n', progress->out);
    if (progress->live)
        draw(progress);
    fflush(progress->out);
}

void ft_progress_overall(ft_progress *progress, size_t settled, size_t total)
{
    progress->settled = settled;
    progress->total = total;
}

/* Not on a terminal (a log file, CI): the status as a plain line now and then. */
static void print_plain(ft_progress *progress, status_line *line, const char *text)
{
    uint64_t now = ft_now_ns();
    if (now - line->printed_ns < progress->plain_interval_ns)
        return;
    line->printed_ns = now;
    fprintf(progress->out, "         %s\n", text);
    fflush(progress->out);
}

void ft_progress_status(ft_progress *progress, size_t slot, const char *text)
{
    size_t i = 0;
    while (i < progress->n_lines && progress->lines[i].slot != slot)
        i++;
    if (!text) {
        if (i == progress->n_lines)
            return;
        free(progress->lines[i].text);
        memmove(&progress->lines[i], &progress->lines[i + 1], (progress->n_lines - i - 1) * sizeof *progress->lines);
        progress->n_lines--;
    } else if (i == progress->n_lines) {
        progress->lines = ft_xrealloc(progress->lines, (progress->n_lines + 1) * sizeof *progress->lines);
        progress->lines[i].slot = slot;
        progress->lines[i].text = ft_xstrdup(text);
        progress->lines[i].printed_ns = ft_now_ns(); /* the run line was just printed */
        progress->n_lines++;
    } else {
        free(progress->lines[i].text);
        progress->lines[i].text = ft_xstrdup(text);
        if (!progress->live) {
            print_plain(progress, &progress->lines[i], text);
            return;
        }
        uint64_t now = ft_now_ns();
        if (now - progress->last_draw_ns < 100000000u)
            return;
        progress->last_draw_ns = now;
    }
    if (!progress->live)
        return;
    erase(progress);
    draw(progress);
}
