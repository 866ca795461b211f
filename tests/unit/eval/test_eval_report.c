/* The evaluate stage's metrics, results table and example answers. */
#include "check.h"

#include <math.h>

#include "ftpipe/base/mem.h"
#include "ftpipe/eval/eval_report.h"

static ft_eval_result adapted(void)
{
    return (ft_eval_result){.model = "adapter", .n_samples = 50, .n_correct = 31, .eval_loss = 0.41,
                            .loss_tokens = 900, .generated_tokens = 1200, .load_s = 0.5, .generate_s = 4.0,
                            .loss_s = 1.0, .total_s = 6.25, .load_peak_bytes = 1024, .peak_bytes = 3 << 20};
}

TEST(derived_numbers)
{
    ft_eval_result result = adapted();
    CHECK(ft_eval_accuracy(&result) == 0.62);
    CHECK(fabs(ft_eval_perplexity(&result) - exp(0.41)) < 1e-12);
    CHECK(ft_eval_tokens_per_s(&result) == 300.0);
    ft_eval_result empty = {.model = "none"};
    CHECK(ft_eval_accuracy(&empty) == 0.0);
    CHECK(ft_eval_tokens_per_s(&empty) == 0.0);
    CHECK(ft_eval_perplexity(&empty) == 1.0);
}

TEST(metrics_are_named_with_the_prefix)
{
    ft_eval_result result = adapted();
    ft_eval_metric metrics[FT_EVAL_METRIC_COUNT];
    ft_eval_metrics(&result, "base_", metrics);
    CHECK_STR(metrics[0].name, "base_accuracy");
    CHECK(metrics[0].value == 0.62);
    CHECK_STR(metrics[3].name, "base_eval_loss");
    CHECK(metrics[3].value == 0.41);
    CHECK_STR(metrics[7].name, "base_tokens_per_s");
    CHECK(metrics[7].value == 300.0);
    CHECK_STR(metrics[FT_EVAL_METRIC_COUNT - 1].name, "base_peak_bytes");
    CHECK(metrics[FT_EVAL_METRIC_COUNT - 1].value == (double)(3 << 20));
    ft_eval_metrics(&result, "", metrics);
    CHECK_STR(metrics[1].name, "correct");
    CHECK(metrics[1].value == 31.0);
}

TEST(table_has_a_row_per_model)
{
    ft_eval_result results[2] = {adapted(), {.model = "tiny", .n_samples = 50, .n_correct = 0, .eval_loss = 2.0,
                                             .generated_tokens = 10, .generate_s = 2.0, .total_s = 3.0,
                                             .peak_bytes = 1536}};
    ft_strbuf text;
    ft_strbuf_init(&text);
    ft_eval_report_table(results, 2, &text);
    char *table = ft_strbuf_take(&text);
    CHECK_STR(table, "| model | accuracy | eval loss | perplexity | tokens/s | time | peak memory |\n"
                     "|---|---|---|---|---|---|---|\n"
                     "| adapter | 0.6200 (31/50) | 0.4100 | 1.507 | 300.0 | 6.2 s | 3.0 MiB |\n"
                     "| tiny | 0.0000 (0/50) | 2.0000 | 7.389 | 5.0 | 3.0 s | 1.5 KiB |\n");
    free(table);
}

TEST(examples_are_indented_blocks)
{
    ft_eval_answer answers[2] = {{"adapter", "7 + 8", true}, {"tiny", "", false}};
    ft_strbuf text;
    ft_strbuf_init(&text);
    ft_eval_report_example(3, "15=\nsecond line", "a | b", answers, 2, &text);
    char *example = ft_strbuf_take(&text);
    CHECK_STR(example, "### Example 3\n\n"
                       "Prompt:\n\n    15=\n    second line\n\n"
                       "Expected:\n\n    a | b\n\n"
                       "adapter (correct):\n\n    7 + 8\n\n"
                       "tiny (wrong):\n\n    (empty)\n\n");
    free(example);
}

int main(void)
{
    RUN(derived_numbers);
    RUN(metrics_are_named_with_the_prefix);
    RUN(table_has_a_row_per_model);
    RUN(examples_are_indented_blocks);
    return check_done();
}
