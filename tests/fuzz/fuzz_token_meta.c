/* libFuzzer target for a tokenized dataset's meta.json and shard reader: the
 * input is a 4-byte little-endian length, that many bytes of meta.json, and the
 * rest as train/shard-00000.bin; the meta is read and the train split opened and
 * walked, or refused with a message.
 *   make fuzz && build/fuzz/fuzz_token_meta -max_total_time=600 tests/fuzz/corpus/token_meta */
#include "fuzz_input.h"

#include "ftpipe/formats/token_shards.h"

static volatile uint32_t sink; /* reads of every token land here */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    size_t meta_bytes = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 | (size_t)data[3] << 24;
    if (meta_bytes > size - 4)
        meta_bytes = size - 4;
    char *path = fuzz_file("meta.json", data + 4, meta_bytes);
    char *split = ft_path_join(fuzz_folder(), "train");
    char *shard = ft_path_join(split, "shard-00000.bin");
    FILE *file = NULL;
    if (ft_mkdir_p(split) != 0 || !(file = fopen(shard, "wb")))
        abort();
    fwrite(data + 4 + meta_bytes, 1, size - 4 - meta_bytes, file);
    fclose(file);
    ft_token_dataset_meta meta;
    if (ft_token_dataset_meta_read(fuzz_folder(), &meta) != 0) {
        fuzz_check_refusal();
    } else {
        ft_token_shards *shards = NULL;
        if (ft_token_shards_open(fuzz_folder(), "train", &shards) == 0) {
            /* Every row and sample the reader admits lies inside the mapping. */
            for (uint64_t i = 0; i < ft_token_shards_n_rows(shards); i++) {
                ft_token_row row;
                ft_token_shards_row(shards, i, &row);
                for (size_t t = 0; t < row.n_tokens; t++)
                    sink ^= row.ids[t] + row.loss_mask[t];
            }
            ft_token_shards_close(shards);
        } else {
            fuzz_check_refusal();
        }
    }
    free(shard);
    free(split);
    free(path);
    return 0;
}
