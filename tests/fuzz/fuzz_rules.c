/* libFuzzer target for rule files (rules/KIND.ft): any text as a rule file is
 * loaded or refused with a message.
 *   make fuzz && build/fuzz/fuzz_rules -max_total_time=600 tests/fuzz/corpus/rules */
#include "fuzz_input.h"

#include "ftpipe/engine/rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = fuzz_file("fuzzed.ft", data, size);
    const char *dirs[] = {fuzz_folder()};
    ft_rulebook *book = NULL;
    if (ft_rulebook_load(dirs, 1, &book) != 0)
        fuzz_check_refusal();
    else
        ft_rulebook_free(book);
    free(path);
    return 0;
}
