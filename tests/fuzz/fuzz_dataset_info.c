/* libFuzzer target for LLaMA-Factory's dataset_info.json: any bytes are read
 * (every entry it names, then the names list) or refused with a message.
 *   make fuzz && build/fuzz/fuzz_dataset_info -max_total_time=600 tests/fuzz/corpus/dataset_info */
#include "fuzz_input.h"

#include "ftpipe/formats/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = fuzz_file("dataset_info.json", data, size);
    char *names = NULL;
    if (ft_dataset_info_names(fuzz_folder(), &names) != 0) {
        fuzz_check_refusal();
    } else {
        const char *requested[] = {"train", "alpaca_en", "a"};
        ft_dataset_source *sources = NULL;
        size_t count = 0;
        if (ft_dataset_info_load(fuzz_folder(), requested, 3, &sources, &count) == 0)
            ft_dataset_sources_free(sources, count);
        else
            fuzz_check_refusal();
        free(names);
    }
    free(path);
    return 0;
}
