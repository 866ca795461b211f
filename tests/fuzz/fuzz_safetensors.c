/* libFuzzer target for the safetensors reader: any byte string, opened as a file,
 * must either be refused with a message or give views that stay inside the file.
 *
 *   clang -std=c11 -D_GNU_SOURCE -Iinclude -g -O1 -fsanitize=fuzzer,address,undefined \
 *     tests/fuzz/fuzz_safetensors.c ftpipe/safetensors.c ftpipe/error.c ftpipe/mem.c \
 *     ftpipe/strbuf.c ftpipe/fsutil.c -ljansson -lxxhash -o build/fuzz/fuzz_safetensors
 *   build/fuzz/fuzz_safetensors -max_total_time=60
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink; /* reads of every tensor byte land here, so they are not optimised away */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An in-memory file: the reader maps it like any other. */
    int fd = memfd_create("fuzz.safetensors", 0);
    if (fd < 0 || (size > 0 && write(fd, data, size) != (ssize_t)size))
        abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ft_safetensors *set;
    if (ft_safetensors_open(path, &set) != 0) {
        if (ft_error_message()[0] == '\0')
            abort(); /* a refusal always says why */
        close(fd);
        return 0;
    }
    for (size_t i = 0; i < ft_safetensors_count(set); i++) {
        const ft_tensor_view *tensor = ft_safetensors_at(set, i);
        if (ft_safetensors_find(set, tensor->name) != tensor)
            abort();
        if (tensor->size_bytes > size)
            abort();
        /* A view reaching past the mapping faults here. */
        for (size_t b = 0; b < tensor->size_bytes; b++)
            sink ^= ((const uint8_t *)tensor->data)[b];
        if (tensor->dtype == FT_DTYPE_F32 || tensor->dtype == FT_DTYPE_F16 || tensor->dtype == FT_DTYPE_BF16) {
            float *values = malloc(tensor->size_bytes / ft_dtype_size(tensor->dtype) * sizeof(float) + 1);
            if (ft_tensor_to_f32(tensor, values) != 0)
                abort();
            free(values);
        }
    }
    ft_safetensors_close(set);
    close(fd);
    return 0;
}
