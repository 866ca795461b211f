/* dataset_refusals: every refused column (and images) gets a reason that says why the data
 * would mis-train and never advises dropping the column. */
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/formats/dataset_refusals.h"

TEST(every_refused_column_has_a_reason_without_advice_to_drop_it)
{
    static const struct {
        const char *column, *reason;
    } expected[] = {
        {"tools", "tool calls against definitions the model never sees"},
        {"videos", "literal <image>/<video>/<audio> placeholders"},
        {"audios", "literal <image>/<video>/<audio> placeholders"},
        {"chosen", "chosen/rejected pairs for DPO or reward modelling"},
        {"rejected", "chosen/rejected pairs for DPO or reward modelling"},
        {"kto_tag", "would train on the undesirable ones as targets"},
    };
    size_t n = 0;
    for (const char *const *column = ft_dataset_refused_columns(); *column; column++, n++) {
        CHECK(n < sizeof expected / sizeof *expected);
        if (n >= sizeof expected / sizeof *expected)
            break;
        CHECK_STR(*column, expected[n].column);
        CHECK_INT(ft_dataset_refuse_column("dataset 'd'", *column), -1);
        CHECK(strstr(ft_error_message(), expected[n].reason) != NULL);
        CHECK(strncmp(ft_error_message(), "dataset 'd' ", 12) == 0);
        CHECK(strstr(ft_error_message(), "remove") == NULL);
        CHECK(strstr(ft_error_message(), "not usable for supervised fine-tuning") != NULL ||
              strstr(ft_error_message(), "cannot be used for supervised fine-tuning") != NULL);
    }
    CHECK_INT(n, sizeof expected / sizeof *expected);
    /* images are read for vision-language templates: not in the list, but the
     * reader refuses them elsewhere with a reason of their own */
    CHECK_INT(ft_dataset_refuse_column("the record", "images"), -1);
    CHECK(strstr(ft_error_message(), "only in the tokenize stage with a vision-language template (qwen2_vl; llava or llama3 with a LLaVA model)") != NULL);
    CHECK(strstr(ft_error_message(), "literal <image>/<video>/<audio> placeholders") != NULL);
}

int main(void)
{
    RUN(every_refused_column_has_a_reason_without_advice_to_drop_it);
    return check_done();
}
