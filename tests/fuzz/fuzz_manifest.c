/* libFuzzer target for cached output manifests: any text is parsed or refused
 * with a message; what parses serializes back to the same text (the manifest's
 * hash is its text's hash, so the two must agree).
 *   make fuzz && build/fuzz/fuzz_manifest -max_total_time=600 tests/fuzz/corpus/manifest */
#include "fuzz_input.h"

#include "ftpipe/engine/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    ft_manifest *manifest = NULL;
    if (ft_manifest_parse(text, "fuzzed", &manifest) != 0) {
        fuzz_check_refusal();
    } else {
        char *again = ft_manifest_serialize(manifest);
        if (strcmp(again, text) != 0)
            abort();
        free(again);
        ft_manifest_free(manifest);
    }
    free(text);
    return 0;
}
