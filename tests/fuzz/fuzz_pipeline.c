/* libFuzzer target for the pipeline language: any text is parsed (with include,
 * variables, continuations) and then checked against the built-in rules, as
 * `ftpipe` does before it builds the graph; it is accepted or refused with a
 * message, never crashes or leaks.
 *   make fuzz && build/fuzz/fuzz_pipeline -max_total_time=600 tests/fuzz/corpus/pipeline */
#include "fuzz_input.h"

#include "ftpipe/engine/pipeline.h"
#include "ftpipe/engine/rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ft_rulebook *book;
    if (!book && ft_rulebook_load(NULL, 0, &book) != 0)
        abort();
    /* A file beside the pipeline, so that `include extra` reads fuzzed text too. */
    char *extra = fuzz_file("extra.ft", data, size / 2);
    free(extra);
    char *text = fuzz_text(data, size);
    char *name = ft_path_join(fuzz_folder(), "Ftpipe");
    ft_pipeline *pipeline = NULL;
    if (ft_pipeline_parse_string(name, text, NULL, &pipeline) != 0) {
        fuzz_check_refusal();
    } else {
        for (size_t i = 0; i < pipeline->n_stages; i++) {
            ft_param_set params = {0};
            if (ft_params_check(book, &pipeline->stages[i], &params) == 0)
                ft_params_free(&params);
            else
                fuzz_check_refusal();
        }
        ft_pipeline_free(pipeline);
    }
    free(name);
    free(text);
    return 0;
}
