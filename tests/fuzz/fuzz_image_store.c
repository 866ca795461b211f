/* libFuzzer target for the image store reader (a tokenized split's images.bin):
 * the input is the file; it is opened and every image and sample walked, or
 * refused with a message.
 *   make fuzz && build/fuzz/fuzz_image_store -max_total_time=600 tests/fuzz/corpus/image_store */
#include "fuzz_input.h"

#include "ftpipe/formats/image_store.h"

static volatile float sink; /* reads of every pixel land here */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = fuzz_file(FT_IMAGE_STORE_FILE, data, size);
    ft_image_store *store = NULL;
    if (ft_image_store_open(path, &store) == 0) {
        /* Every image and reference the reader admits lies inside the mapping. */
        uint32_t row_length = ft_image_store_row_length(store);
        for (uint64_t i = 0; i < ft_image_store_n_images(store); i++) {
            ft_stored_image image;
            ft_image_store_image(store, i, &image);
            size_t n_values = (size_t)ft_image_layout_rows(ft_image_store_layout(store), image.grid_t, image.grid_h,
                                                          image.grid_w) * row_length;
            for (size_t v = 0; v < n_values; v++)
                sink += image.pixels[v];
        }
        for (uint64_t s = 0; s < ft_image_store_n_samples(store); s++) {
            size_t count;
            const uint32_t *refs = ft_image_store_sample_images(store, s, &count);
            for (size_t r = 0; r < count; r++) {
                ft_stored_image image;
                ft_image_store_image(store, refs[r], &image);
                sink += image.pixels[0];
            }
        }
        ft_image_store_close(store);
    } else {
        fuzz_check_refusal();
    }
    free(path);
    return 0;
}
