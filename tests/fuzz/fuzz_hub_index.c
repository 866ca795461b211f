/* libFuzzer target for the hub's JSON as ftpipe reads it: a checkpoint index
 * (model.safetensors.index.json, whose weight_map brings the shards) is read or
 * refused with a message, and every shard it yields stays inside the index's
 * folder.
 *   make fuzz && build/fuzz/fuzz_hub_index -max_total_time=600 tests/fuzz/corpus/hub_index */
#include "fuzz_input.h"

#include "ftpipe/transfer/hf_hub.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = fuzz_file("model.safetensors.index.json", data, size);
    char **shards = NULL;
    size_t count = 0;
    if (ft_hf_index_shards(path, &shards, &count) != 0) {
        fuzz_check_refusal();
    } else {
        for (size_t i = 0; i < count; i++) {
            if (!ft_hf_path_is_safe(shards[i]))
                abort(); /* a shard name must not lead out of the download folder */
            free(shards[i]);
        }
        free(shards);
    }
    free(path);
    return 0;
}
