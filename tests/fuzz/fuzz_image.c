/* libFuzzer target for image decoding and preprocessing: any byte string must
 * either be refused with a message or decode to an image whose every pixel can
 * be read, and which preprocesses for Qwen2-VL and CLIP without fault.
 *
 *   make fuzz && build/fuzz/fuzz_image -max_total_time=60 tests/fuzz/corpus/image
 */
#include <stdint.h>
#include <stdlib.h>

#include "ftpipe/base/error.h"
#include "ftpipe/formats/image.h"
#include "ftpipe/formats/vision_preprocess.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink; /* every pixel is read into it, so the reads stay */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ft_image image;
    if (ft_image_decode(data, size, "fuzz", &image) != 0) {
        if (!ft_error_message()[0])
            abort(); /* a refusal always says why */
        return 0;
    }
    for (size_t i = 0; i < (size_t)image.width * image.height * 3; i++)
        sink ^= image.rgb[i];
    /* keep the preprocessing small: large decodes are only read */
    if ((int64_t)image.width * image.height <= 512 * 512) {
        ft_vision_pixels pixels;
        ft_qwen2vl_image_options qwen;
        ft_qwen2vl_image_options_default(&qwen);
        if (ft_qwen2vl_preprocess(&image, &qwen, "fuzz", &pixels) == 0)
            ft_vision_pixels_free(&pixels);
        ft_clip_image_options clip;
        ft_clip_image_options_default(&clip);
        if (ft_clip_preprocess(&image, &clip, "fuzz", &pixels) == 0)
            ft_vision_pixels_free(&pixels);
    }
    ft_image_free(&image);
    return 0;
}
