/* image: JPEG (libjpeg-turbo), PNG (libpng) and WebP (libwebp) into upright RGB. */
#include "ftpipe/formats/image.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>
#include <webp/demux.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/image_orientation.h"

/* Larger images are refused before any allocation: a corrupt header must not ask
 * for gigabytes (Pillow's own decompression-bomb limit is about 179 M pixels). */
enum { MAX_IMAGE_PIXELS = 178956970 };

void ft_image_alloc(ft_image *image, int width, int height)
{
    image->width = width;
    image->height = height;
    image->rgb = ft_xmalloc((size_t)width * height * 3);
}

void ft_image_free(ft_image *image)
{
    free(image->rgb);
    image->rgb = NULL;
    image->width = image->height = 0;
}

static int check_size(const char *name, long long width, long long height)
{
    if (width <= 0 || height <= 0)
        return ft_error("image '%s' has no pixels (%lld x %lld): the file is corrupt", name, width, height);
    if (width * height > MAX_IMAGE_PIXELS)
        return ft_error("image '%s' is %lld x %lld pixels, more than %d: shrink it before training on it",
                        name, width, height, MAX_IMAGE_PIXELS);
    return 0;
}

/* --- JPEG ------------------------------------------------------------------- */

struct jpeg_failure {
    struct jpeg_error_mgr manager;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void jpeg_fail(j_common_ptr info)
{
    struct jpeg_failure *failure = (struct jpeg_failure *)info->err;
    info->err->format_message(info, failure->message);
    longjmp(failure->jump, 1);
}

/* Corrupt-data warnings make libjpeg invent pixels; treat them as errors. */
static void jpeg_warn(j_common_ptr info, int level)
{
    if (level < 0)
        jpeg_fail(info);
}

static int exif_orientation_in_jpeg(struct jpeg_decompress_struct *info)
{
    for (jpeg_saved_marker_ptr m = info->marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length > 6 && memcmp(m->data, "Exif\0\0", 6) == 0)
            return ft_exif_orientation(m->data + 6, m->data_length - 6);
    return 1;
}

static int decode_jpeg(const uint8_t *bytes, size_t n_bytes, const char *name, ft_image *out)
{
    struct jpeg_decompress_struct info;
    struct jpeg_failure failure;
    /* volatile: read after longjmp */
    uint8_t *volatile rgb = NULL;
    uint8_t *volatile row = NULL;
    info.err = jpeg_std_error(&failure.manager);
    failure.manager.error_exit = jpeg_fail;
    failure.manager.emit_message = jpeg_warn;
    if (setjmp(failure.jump)) {
        jpeg_destroy_decompress(&info);
        free(rgb);
        free(row);
        return ft_error("image '%s' is not a readable JPEG (%s): the file is corrupt or truncated; "
                        "re-export it or remove it from the data", name, failure.message);
    }
    jpeg_create_decompress(&info);
    jpeg_mem_src(&info, bytes, (unsigned long)n_bytes);
    jpeg_save_markers(&info, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(&info, TRUE);
    int grey = info.jpeg_color_space == JCS_GRAYSCALE;
    if (info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&info);
        return ft_error("image '%s' is a CMYK JPEG, which is not supported: convert it to RGB "
                        "(e.g. `convert IN -colorspace sRGB OUT`)", name);
    }
    info.out_color_space = grey ? JCS_GRAYSCALE : JCS_RGB;
    if (check_size(name, info.image_width, info.image_height) != 0) {
        jpeg_destroy_decompress(&info);
        return -1;
    }
    int orientation = exif_orientation_in_jpeg(&info);
    jpeg_start_decompress(&info);
    int w = (int)info.output_width, h = (int)info.output_height;
    rgb = ft_xmalloc((size_t)w * h * 3);
    row = ft_xmalloc((size_t)w * 3);
    while (info.output_scanline < info.output_height) {
        JSAMPROW rows[1] = {grey ? row : rgb + (size_t)info.output_scanline * w * 3};
        int y = (int)info.output_scanline;
        jpeg_read_scanlines(&info, rows, 1);
        if (grey)
            for (int x = 0; x < w; x++)
                memset(rgb + ((size_t)y * w + x) * 3, row[x], 3);
    }
    jpeg_finish_decompress(&info);
    jpeg_destroy_decompress(&info);
    free(row);
    out->width = w;
    out->height = h;
    out->rgb = rgb;
    ft_image_apply_orientation(out, orientation);
    return 0;
}

/* --- PNG -------------------------------------------------------------------- */

struct png_reader {
    const uint8_t *bytes;
    size_t n_bytes, offset;
    char message[200];
};

static void png_read_memory(png_structp png, png_bytep data, png_size_t length)
{
    struct png_reader *reader = png_get_io_ptr(png);
    if (reader->n_bytes - reader->offset < length)
        png_error(png, "the file ends early");
    memcpy(data, reader->bytes + reader->offset, length);
    reader->offset += length;
}

static void png_fail(png_structp png, png_const_charp message)
{
    struct png_reader *reader = png_get_error_ptr(png);
    snprintf(reader->message, sizeof reader->message, "%s", message);
    png_longjmp(png, 1);
}

static void png_warn(png_structp png, png_const_charp message) {}

static int decode_png(const uint8_t *bytes, size_t n_bytes, const char *name, ft_image *out)
{
    struct png_reader reader = {bytes, n_bytes, 0, ""};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader, png_fail, png_warn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info)
        return ft_error("image '%s': out of memory starting the PNG decoder", name);
    uint8_t *volatile rgb = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rgb);
        free(rows);
        return ft_error("image '%s' is not a readable PNG (%s): the file is corrupt or truncated; "
                        "re-export it or remove it from the data", name, reader.message);
    }
    png_set_read_fn(png, &reader, png_read_memory);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if (check_size(name, w, h) != 0) {
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    int color = png_get_color_type(png, info);
    /* As Pillow's convert("RGB"): palette looked up, transparency ignored, alpha
     * dropped without blending, grey replicated, 16-bit samples cut to their high byte. */
    if (color == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) {
        png_set_expand_gray_1_2_4_to_8(png);
        png_set_gray_to_rgb(png);
    }
    /* expanding a palette also turns its tRNS chunk into an alpha channel */
    if ((color & PNG_COLOR_MASK_ALPHA) || (color == PNG_COLOR_TYPE_PALETTE && png_get_valid(png, info, PNG_INFO_tRNS)))
        png_set_strip_alpha(png);
    png_set_strip_16(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3)
        png_error(png, "unexpected sample layout");
    rgb = ft_xmalloc((size_t)w * h * 3);
    rows = ft_xmalloc(sizeof(png_bytep) * h);
    for (png_uint_32 y = 0; y < h; y++)
        rows[y] = rgb + (size_t)y * w * 3;
    png_read_image(png, rows);
    png_read_end(png, info);
    int orientation = 1;
    png_uint_32 n_exif = 0;
    png_bytep exif = NULL;
    if (png_get_eXIf_1(png, info, &n_exif, &exif) && exif)
        orientation = ft_exif_orientation(exif, n_exif);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    out->width = (int)w;
    out->height = (int)h;
    out->rgb = rgb;
    ft_image_apply_orientation(out, orientation);
    return 0;
}

/* --- WebP ------------------------------------------------------------------- */

static int exif_orientation_in_webp(const uint8_t *bytes, size_t n_bytes)
{
    WebPData data = {bytes, n_bytes};
    WebPDemuxer *demux = WebPDemux(&data);
    if (!demux)
        return 1;
    int orientation = 1;
    WebPChunkIterator chunk;
    if (WebPDemuxGetChunk(demux, "EXIF", 1, &chunk)) {
        const uint8_t *tiff = chunk.chunk.bytes;
        size_t n = chunk.chunk.size;
        if (n > 6 && memcmp(tiff, "Exif\0\0", 6) == 0) {
            tiff += 6;
            n -= 6;
        }
        orientation = ft_exif_orientation(tiff, n);
        WebPDemuxReleaseChunkIterator(&chunk);
    }
    WebPDemuxDelete(demux);
    return orientation;
}

static int decode_webp(const uint8_t *bytes, size_t n_bytes, const char *name, ft_image *out)
{
    WebPBitstreamFeatures features;
    if (WebPGetFeatures(bytes, n_bytes, &features) != VP8_STATUS_OK)
        return ft_error("image '%s' is not a readable WebP: the file is corrupt or truncated; "
                        "re-export it or remove it from the data", name);
    if (features.has_animation)
        return ft_error("image '%s' is an animated WebP, which is not supported: use a still image", name);
    if (check_size(name, features.width, features.height) != 0)
        return -1;
    int w, h;
    uint8_t *decoded = WebPDecodeRGB(bytes, n_bytes, &w, &h);
    if (!decoded)
        return ft_error("image '%s' is not a readable WebP: the file is corrupt or truncated; "
                        "re-export it or remove it from the data", name);
    ft_image_alloc(out, w, h);
    memcpy(out->rgb, decoded, (size_t)w * h * 3);
    WebPFree(decoded);
    ft_image_apply_orientation(out, exif_orientation_in_webp(bytes, n_bytes));
    return 0;
}

int ft_image_decode(const uint8_t *bytes, size_t n_bytes, const char *name, ft_image *out)
{
    memset(out, 0, sizeof *out);
    if (n_bytes >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
        return decode_jpeg(bytes, n_bytes, name, out);
    if (n_bytes >= 8 && memcmp(bytes, "\x89PNG\r\n\x1a\n", 8) == 0)
        return decode_png(bytes, n_bytes, name, out);
    if (n_bytes >= 12 && memcmp(bytes, "RIFF", 4) == 0 && memcmp(bytes + 8, "WEBP", 4) == 0)
        return decode_webp(bytes, n_bytes, name, out);
    if (n_bytes == 0)
        return ft_error("image '%s' is an empty file: re-export it or remove it from the data", name);
    return ft_error("image '%s' is not a JPEG, PNG or WebP file (by its first bytes): convert it to one "
                    "of these", name);
}

int ft_image_read_file(const char *path, ft_image *out)
{
    char *bytes;
    size_t n_bytes;
    memset(out, 0, sizeof *out);
    if (ft_read_file(path, &bytes, &n_bytes) != 0)
        return ft_error_context("reading image '%s'", path);
    int status = ft_image_decode((const uint8_t *)bytes, n_bytes, path, out);
    free(bytes);
    return status;
}
