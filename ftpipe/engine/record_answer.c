/* record_answer: the no-op and `ftpipe status` from .ftpipe/up-to-date. */
#include "ftpipe/engine/record_answer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/hash.h"
#include "ftpipe/engine/run_stats.h"
#include "ftpipe/engine/status_lines.h"
#include "ftpipe/engine/up_to_date.h"

static char *pipeline_dir(const ft_invocation *invocation)
{
    char *pipeline = ft_path_absolute(invocation->pipeline_path);
    char *dir = ft_path_dirname(pipeline);
    free(pipeline);
    return dir;
}

bool ft_record_answer_run(const ft_invocation *invocation, const char *question)
{
    uint64_t start_ns = ft_now_ns();
    char *dir = pipeline_dir(invocation);
    ft_up_to_date_answer answer;
    bool answered = ft_up_to_date_check(dir, question, false, &answer) == 1;
    free(dir);
    if (!answered)
        return false;
    size_t n_stages = answer.n_stages;
    if (ft_run_stats_wanted()) {
        fprintf(stderr,
                "ftpipe stats: answered from .ftpipe/up-to-date in %.1f ms (its lines %.1f ms, %zu stat lines %.1f ms);",
                (double)(ft_now_ns() - start_ns) / 1e6, (double)answer.lines_ns / 1e6, answer.n_stat_lines,
                (double)answer.stats_ns / 1e6);
        ft_run_stats_print_reads();
    }
    ft_up_to_date_answer_free(&answer);
    printf("ftpipe: nothing to do (%zu up to date)\n", n_stages);
    return true;
}

bool ft_record_answer_status(const ft_invocation *invocation)
{
    if (invocation->n_arguments > 0 || invocation->lock)
        return false;
    uint64_t start_ns = ft_now_ns();
    char question[FT_HASH_HEX_LENGTH + 1];
    ft_up_to_date_question(invocation, question);
    char *dir = pipeline_dir(invocation);
    ft_up_to_date_answer answer;
    int answered = ft_up_to_date_check(dir, question, true, &answer);
    bool have_answer = answered == 1;
    for (size_t i = 0; answered == 1 && i < answer.n_stages; i++)
        if (strcmp(answer.targets[i], "status") == 0)
            answered = 0; /* then `ftpipe status` builds that target */
    if (answered == 1 && !answer.all_stages)
        answered = 0;
    uint64_t checked_ns = ft_now_ns();
    if (answered == 1) {
        /* two lines a stage: written 64 KiB at a time, not stdio's 4 KiB */
        setvbuf(stdout, NULL, _IOFBF, (size_t)1 << 16);
        for (size_t i = 0; i < answer.n_stages; i++) {
            const ft_up_to_date_run *recorded = &answer.last_runs[i];
            ft_run_record last = {.id = recorded->id, .target = answer.targets[i], .kind = answer.kinds[i],
                                  .start_ms = recorded->start_ms, .end_ms = recorded->end_ms,
                                  .status = recorded->status};
            ft_status_print_line(answer.targets[i], answer.kinds[i], "up to date", "", recorded->id ? &last : NULL);
        }
        fflush(stdout);
        if (ft_run_stats_wanted()) {
            fprintf(stderr, "ftpipe stats: status answered from .ftpipe/up-to-date: record %.1f ms, printed %.1f ms;",
                    (double)(checked_ns - start_ns) / 1e6, (double)(ft_now_ns() - checked_ns) / 1e6);
            ft_run_stats_print_reads();
        }
    }
    if (have_answer)
        ft_up_to_date_answer_free(&answer);
    free(dir);
    return answered == 1;
}
