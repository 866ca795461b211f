/* libFuzzer target for dataset records: any bytes as an alpaca or sharegpt
 * .json array or .jsonl file (the first byte picks which) are read, with
 * on_error = fail and skip, images read or refused, or refused with the file
 * and record named.
 *   make fuzz && build/fuzz/fuzz_dataset -max_total_time=600 tests/fuzz/corpus/dataset */
#include "fuzz_input.h"

#include <stdbool.h>

#include "ftpipe/formats/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    static const char *const names[] = {"data.json", "data.jsonl"};
    static const ft_dataset_format formats[] = {FT_DATASET_FORMAT_AUTO, FT_DATASET_FORMAT_ALPACA,
                                                FT_DATASET_FORMAT_SHAREGPT};
    const char *name = names[data[0] & 1];
    ft_dataset_source source;
    ft_dataset_source_for_file(name, formats[(data[0] >> 1) % 3], &source);
    ft_on_error on_error = (data[0] & 8) ? FT_ON_ERROR_SKIP : FT_ON_ERROR_FAIL;
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    dataset.read_images = (data[0] & 16) != 0;
    dataset.media_dir = fuzz_folder(); /* images named in records are looked for here: cat.jpg is found */
    static bool made_image;
    if (!made_image) {
        char *image = ft_path_join(fuzz_folder(), "cat.jpg");
        if (ft_write_file_atomic(image, "not decoded here", 16) != 0)
            abort();
        free(image);
        made_image = true;
    }
    if (ft_dataset_read_text(&dataset, name, (const char *)data + 1, size - 1, &source.columns, on_error) != 0)
        fuzz_check_refusal();
    for (size_t i = 0; i < dataset.count; i++)
        if (dataset.conversations[i].count == 0 || (!dataset.read_images && dataset.conversations[i].n_images))
            abort(); /* a conversation the reader accepted has its turns, and images only when asked */
    ft_dataset_free(&dataset);
    ft_dataset_source_free(&source);
    return 0;
}
