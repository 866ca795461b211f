/* eval_report: metrics, the results table and example answers. */
#include "ftpipe/eval/eval_report.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ftpipe/base/fsutil.h"

double ft_eval_accuracy(const ft_eval_result *result)
{
    return result->n_samples ? (double)result->n_correct / (double)result->n_samples : 0.0;
}

double ft_eval_perplexity(const ft_eval_result *result)
{
    return exp(result->eval_loss);
}

double ft_eval_tokens_per_s(const ft_eval_result *result)
{
    return result->generate_s > 0 ? (double)result->generated_tokens / result->generate_s : 0.0;
}

void ft_eval_metrics(const ft_eval_result *result, const char *prefix, ft_eval_metric *out)
{
    const struct {
        const char *name;
        double value;
    } metrics[FT_EVAL_METRIC_COUNT] = {
        {"accuracy", ft_eval_accuracy(result)},
        {"correct", (double)result->n_correct},
        {"samples", (double)result->n_samples},
        {"eval_loss", result->eval_loss},
        {"perplexity", ft_eval_perplexity(result)},
        {"loss_tokens", (double)result->loss_tokens},
        {"generated_tokens", (double)result->generated_tokens},
        {"tokens_per_s", ft_eval_tokens_per_s(result)},
        {"load_s", result->load_s},
        {"generate_s", result->generate_s},
        {"loss_s", result->loss_s},
        {"total_s", result->total_s},
        {"load_peak_bytes", (double)result->load_peak_bytes},
        {"peak_bytes", (double)result->peak_bytes},
    };
    for (size_t i = 0; i < FT_EVAL_METRIC_COUNT; i++) {
        snprintf(out[i].name, sizeof out[i].name, "%s%s", prefix, metrics[i].name);
        out[i].value = metrics[i].value;
    }
}

void ft_eval_report_table(const ft_eval_result *results, size_t count, ft_strbuf *out)
{
    ft_strbuf_puts(out, "| model | accuracy | eval loss | perplexity | tokens/s | time | peak memory |\n");
    ft_strbuf_puts(out, "|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < count; i++) {
        const ft_eval_result *r = &results[i];
        char peak[32];
        ft_format_bytes(r->peak_bytes, peak, sizeof peak);
        ft_strbuf_printf(out, "| %s | %.4f (%zu/%zu) | %.4f | %.3f | %.1f | %.1f s | %s |\n", r->model,
                         ft_eval_accuracy(r), r->n_correct, r->n_samples, r->eval_loss, ft_eval_perplexity(r),
                         ft_eval_tokens_per_s(r), r->total_s, peak);
    }
}

/* Markdown's indented code block: every line four spaces in, shown as is. */
static void indented(const char *text, ft_strbuf *out)
{
    if (!*text)
        ft_strbuf_puts(out, "    (empty)\n");
    while (*text) {
        size_t length = strcspn(text, "\n");
        ft_strbuf_puts(out, "    ");
        ft_strbuf_add(out, text, length);
        ft_strbuf_putc(out, '\n');
        text += length + (text[length] == '\n');
    }
    ft_strbuf_putc(out, '\n');
}

void ft_eval_report_example(size_t number, const char *prompt, const char *expected, const ft_eval_answer *answers,
                            size_t count, ft_strbuf *out)
{
    ft_strbuf_printf(out, "### Example %zu\n\nPrompt:\n\n", number);
    indented(prompt, out);
    ft_strbuf_puts(out, "Expected:\n\n");
    indented(expected, out);
    for (size_t i = 0; i < count; i++) {
        ft_strbuf_printf(out, "%s (%s):\n\n", answers[i].model, answers[i].correct ? "correct" : "wrong");
        indented(answers[i].answer, out);
    }
}
