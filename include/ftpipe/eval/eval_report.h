/* eval_report: the evaluate stage's numbers for one model, as named metrics
 * (the stage's metrics and metrics.json) and as the Markdown that report.md
 * and the stage log show: a table with a row per model, and example answers. */
#ifndef FTPIPE_EVAL_REPORT_H
#define FTPIPE_EVAL_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/base/strbuf.h"

typedef struct {
    const char *model;           /* what the table calls it */
    size_t n_samples;
    size_t n_correct;
    double eval_loss;            /* mean over the answers' tokens */
    uint64_t loss_tokens;
    uint64_t generated_tokens;
    double load_s;
    double generate_s;
    double loss_s;
    double total_s;              /* load, generation, loss and judging */
    uint64_t load_peak_bytes;    /* the backend's peak after loading */
    uint64_t peak_bytes;         /* its peak by the end of generation */
} ft_eval_result;

double ft_eval_accuracy(const ft_eval_result *result);     /* 0 without samples */
double ft_eval_perplexity(const ft_eval_result *result);   /* exp(eval_loss) */
double ft_eval_tokens_per_s(const ft_eval_result *result); /* generated tokens over generation time */

enum { FT_EVAL_METRIC_COUNT = 14 };

typedef struct {
    char name[64];
    double value;
} ft_eval_metric;

/* The result's numbers as metrics named accuracy, correct, samples, eval_loss,
 * perplexity, loss_tokens, generated_tokens, tokens_per_s, load_s, generate_s,
 * loss_s, total_s, load_peak_bytes and peak_bytes, each after prefix ("" or
 * "base_"). Fills FT_EVAL_METRIC_COUNT entries of out. */
void ft_eval_metrics(const ft_eval_result *result, const char *prefix, ft_eval_metric *out);

/* Appends a Markdown table: model, accuracy (correct/samples), eval loss,
 * perplexity, tokens/s, time, peak memory; a row per result. */
void ft_eval_report_table(const ft_eval_result *results, size_t count, ft_strbuf *out);

/* One model's answer to an example, for ft_eval_report_example. */
typedef struct {
    const char *model;
    const char *answer;
    bool correct;
} ft_eval_answer;

/* Appends example `number` (from 1): its prompt, the expected answer and each
 * model's answer with its verdict, as indented blocks that need no escaping. */
void ft_eval_report_example(size_t number, const char *prompt, const char *expected, const ft_eval_answer *answers,
                            size_t count, ft_strbuf *out);

#endif
