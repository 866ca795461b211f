/* libFuzzer target for tokenizer.json: any file is loaded or refused with a
 * message; a loaded tokenizer encodes and decodes a fixed text without fault.
 *   make fuzz && build/fuzz/fuzz_tokenizer -max_total_time=600 tests/fuzz/corpus/tokenizer */
#include "fuzz_input.h"

#include "ftpipe/text/token_ids.h"
#include "ftpipe/text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = fuzz_file("tokenizer.json", data, size);
    ft_tokenizer *tokenizer = NULL;
    if (ft_tokenizer_load(path, &tokenizer) != 0) {
        fuzz_check_refusal();
    } else {
        static const char sample[] = "Hello, world! 12 + 30 = 42\n<|im_start|>user\n\xe4\xbd\xa0\xe5\xa5\xbd";
        ft_token_ids ids = {0};
        if (ft_tokenizer_encode(tokenizer, sample, sizeof sample - 1, &ids) == 0) {
            char *text = NULL;
            if (ft_tokenizer_decode(tokenizer, ids.ids, ids.count, &text) == 0)
                free(text);
        }
        ft_token_ids_free(&ids);
        ft_tokenizer_free(tokenizer);
    }
    free(path);
    return 0;
}
