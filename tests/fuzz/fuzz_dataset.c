/* libFuzzer target for dataset records: any bytes as an alpaca or sharegpt
 * .json array or .jsonl file (the first byte picks which) are read, with
 * on_error = fail and skip, or refused with the file and record named.
 *   make fuzz && build/fuzz/fuzz_dataset -max_total_time=600 tests/fuzz/corpus/dataset */
#include "fuzz_input.h"

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
    if (ft_dataset_read_text(&dataset, name, (const char *)data + 1, size - 1, &source.columns, on_error) != 0)
        fuzz_check_refusal();
    for (size_t i = 0; i < dataset.count; i++)
        if (dataset.conversations[i].count == 0)
            abort(); /* a conversation the reader accepted has its turns */
    ft_dataset_free(&dataset);
    ft_dataset_source_free(&source);
    return 0;
}
