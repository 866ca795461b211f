/* image_orientation: EXIF orientation tag and the transposition Pillow applies. */
#include "ftpipe/formats/image_orientation.h"

#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/mem.h"

static unsigned read_u16(const uint8_t *p, int big_endian)
{
    return big_endian ? (unsigned)(p[0] << 8 | p[1]) : (unsigned)(p[1] << 8 | p[0]);
}

static uint32_t read_u32(const uint8_t *p, int big_endian)
{
    return big_endian ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
                      : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

int ft_exif_orientation(const uint8_t *tiff, size_t n_bytes)
{
    if (n_bytes < 8)
        return 1;
    int big_endian;
    if (tiff[0] == 'M' && tiff[1] == 'M')
        big_endian = 1;
    else if (tiff[0] == 'I' && tiff[1] == 'I')
        big_endian = 0;
    else
        return 1;
    if (read_u16(tiff + 2, big_endian) != 42)
        return 1;
    uint32_t ifd = read_u32(tiff + 4, big_endian);
    if (ifd > n_bytes || n_bytes - ifd < 2)
        return 1;
    unsigned n_entries = read_u16(tiff + ifd, big_endian);
    for (unsigned i = 0; i < n_entries; i++) {
        size_t entry = (size_t)ifd + 2 + (size_t)i * 12;
        if (entry + 12 > n_bytes)
            return 1;
        if (read_u16(tiff + entry, big_endian) != 0x0112)
            continue;
        /* type SHORT (3), one value, stored in the first two bytes of the value field */
        if (read_u16(tiff + entry + 2, big_endian) != 3)
            return 1;
        unsigned value = read_u16(tiff + entry + 8, big_endian);
        return value >= 1 && value <= 8 ? (int)value : 1;
    }
    return 1;
}

void ft_image_apply_orientation(ft_image *image, int orientation)
{
    if (orientation < 2 || orientation > 8)
        return;
    int w = image->width, h = image->height;
    int swaps = orientation >= 5; /* 5..8 exchange width and height */
    int out_w = swaps ? h : w, out_h = swaps ? w : h;
    uint8_t *out = ft_xmalloc((size_t)out_w * out_h * 3);
    for (int y = 0; y < out_h; y++) {
        for (int x = 0; x < out_w; x++) {
            int sx, sy;
            switch (orientation) {
            case 2: sx = w - 1 - x; sy = y; break;             /* mirrored */
            case 3: sx = w - 1 - x; sy = h - 1 - y; break;     /* rotated 180 */
            case 4: sx = x; sy = h - 1 - y; break;             /* flipped */
            case 5: sx = y; sy = x; break;                     /* transposed */
            case 6: sx = y; sy = h - 1 - x; break;             /* turned clockwise */
            case 7: sx = w - 1 - y; sy = h - 1 - x; break;     /* transversed */
            default: sx = w - 1 - y; sy = x; break;            /* 8: turned counter-clockwise */
            }
            memcpy(out + ((size_t)y * out_w + x) * 3, image->rgb + ((size_t)sy * w + sx) * 3, 3);
        }
    }
    free(image->rgb);
    image->rgb = out;
    image->width = out_w;
    image->height = out_h;
}
