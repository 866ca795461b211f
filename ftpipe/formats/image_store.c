/* image_store: the writer and the mmap reader of a split's preprocessed images. */
#include "ftpipe/formats/image_store.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "image stores are little-endian and read in place: this host is not"
#endif

#define HEADER_BYTES 64
#define SECTION_ALIGN 64
static const char magic[8] = {'F', 'T', 'I', 'M', 'A', 'G', 'E', 'S'};

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t row_length;
    uint64_t n_images;
    uint64_t n_pixel_rows;
    uint64_t n_samples;
    uint64_t n_image_refs;
    uint32_t layout; /* version 2 on; zero in version 1 */
    uint8_t zeros[HEADER_BYTES - 52];
} store_header;

typedef struct {
    uint64_t hash_high, hash_low;
    uint32_t grid_t, grid_h, grid_w, zero;
    uint64_t first_row;
} image_entry;

_Static_assert(sizeof(store_header) == HEADER_BYTES, "the image store header is 64 bytes");
_Static_assert(sizeof(image_entry) == 40, "an image entry is 40 bytes");

typedef struct {
    uint64_t pixels, images, sample_offsets, image_refs, end;
} store_layout;

static uint64_t align_up(uint64_t value) { return (value + SECTION_ALIGN - 1) / SECTION_ALIGN * SECTION_ALIGN; }

/* The counts must be small enough not to overflow (the reader checks them first). */
static store_layout layout_of(const store_header *header)
{
    store_layout layout;
    layout.pixels = HEADER_BYTES;
    layout.images = align_up(layout.pixels + header->n_pixel_rows * header->row_length * sizeof(float));
    layout.sample_offsets = align_up(layout.images + header->n_images * sizeof(image_entry));
    layout.image_refs = align_up(layout.sample_offsets + (header->n_samples + 1) * sizeof(uint64_t));
    layout.end = layout.image_refs + header->n_image_refs * sizeof(uint32_t);
    return layout;
}

int64_t ft_image_layout_rows(ft_image_layout layout, int grid_t, int grid_h, int grid_w)
{
    return layout == FT_IMAGE_LAYOUT_CLIP ? 1 : (int64_t)grid_t * grid_h * grid_w;
}

/* --- writing --- */

struct ft_image_store_writer {
    char *path;
    FILE *file;
    store_header header;
    image_entry *images;
    size_t images_capacity;
    uint64_t *sample_offsets; /* n_samples + 1 */
    size_t samples_capacity;
    uint32_t *image_refs;
    size_t refs_capacity;
    bool failed;
};

int ft_image_store_writer_open(const char *path, ft_image_layout layout, uint32_t row_length,
                               ft_image_store_writer **out)
{
    if (row_length == 0)
        return ft_error("image store %s: the row length must be at least 1", path);
    if (layout != FT_IMAGE_LAYOUT_PATCHES && layout != FT_IMAGE_LAYOUT_CLIP)
        return ft_error("image store %s: unknown layout %d", path, (int)layout);
    FILE *file = fopen(path, "wb");
    if (!file)
        return ft_error_errno("cannot create image store %s", path);
    ft_image_store_writer *writer = ft_xcalloc(1, sizeof *writer);
    writer->path = ft_xstrdup(path);
    writer->file = file;
    memcpy(writer->header.magic, magic, sizeof magic);
    writer->header.version = FT_IMAGE_STORE_VERSION;
    writer->header.row_length = row_length;
    writer->header.layout = (uint32_t)layout;
    writer->sample_offsets = ft_xcalloc(1, sizeof(uint64_t));
    writer->samples_capacity = 1;
    if (fseek(file, HEADER_BYTES, SEEK_SET) != 0) {
        int status = ft_error_errno("cannot write image store %s", path);
        ft_image_store_writer_finish(writer);
        return status;
    }
    *out = writer;
    return 0;
}

int64_t ft_image_store_writer_add_image(ft_image_store_writer *writer, const ft_stored_image *image)
{
    if (writer->failed)
        return -1;
    ft_image_layout layout = (ft_image_layout)writer->header.layout;
    int64_t rows = ft_image_layout_rows(layout, image->grid_t, image->grid_h, image->grid_w);
    if (image->grid_t < 1 || image->grid_h < 1 || image->grid_w < 1)
        return ft_error("image store %s: an image grid of %d x %d x %d", writer->path, image->grid_t, image->grid_h,
                        image->grid_w);
    if (layout == FT_IMAGE_LAYOUT_CLIP &&
        (image->grid_t != 1 || (int64_t)3 * image->grid_h * image->grid_w != writer->header.row_length))
        return ft_error("image store %s: a CLIP image of %d x %d x %d in rows of %u floats", writer->path,
                        image->grid_t, image->grid_h, image->grid_w, writer->header.row_length);
    if (writer->header.n_images >= UINT32_MAX)
        return ft_error("image store %s: more than %u images in one split", writer->path, UINT32_MAX - 1);
    size_t bytes = (size_t)rows * writer->header.row_length * sizeof(float);
    if (fwrite(image->pixels, 1, bytes, writer->file) != bytes) {
        writer->failed = true;
        return ft_error_errno("cannot write image store %s", writer->path);
    }
    ft_grow((void **)&writer->images, &writer->images_capacity, writer->header.n_images + 1, sizeof(image_entry));
    writer->images[writer->header.n_images] = (image_entry){image->hash.high, image->hash.low,
                                                            (uint32_t)image->grid_t, (uint32_t)image->grid_h,
                                                            (uint32_t)image->grid_w, 0, writer->header.n_pixel_rows};
    writer->header.n_pixel_rows += (uint64_t)rows;
    return (int64_t)writer->header.n_images++;
}

int ft_image_store_writer_add_sample(ft_image_store_writer *writer, const uint32_t *image_indices, size_t n_images)
{
    if (writer->failed)
        return -1;
    for (size_t i = 0; i < n_images; i++)
        if (image_indices[i] >= writer->header.n_images)
            return ft_error("image store %s: a sample names image %u of %llu", writer->path, image_indices[i],
                            (unsigned long long)writer->header.n_images);
    ft_grow((void **)&writer->image_refs, &writer->refs_capacity, writer->header.n_image_refs + n_images + 1,
            sizeof(uint32_t));
    if (n_images)
        memcpy(writer->image_refs + writer->header.n_image_refs, image_indices, n_images * sizeof(uint32_t));
    writer->header.n_image_refs += n_images;
    ft_grow((void **)&writer->sample_offsets, &writer->samples_capacity, writer->header.n_samples + 2,
            sizeof(uint64_t));
    writer->sample_offsets[++writer->header.n_samples] = writer->header.n_image_refs;
    return 0;
}

static int write_at(ft_image_store_writer *writer, uint64_t at, const void *data, size_t bytes)
{
    static const char zeros[SECTION_ALIGN];
    long position = ftell(writer->file);
    if (position < 0 || (uint64_t)position > at)
        return ft_error_errno("cannot write image store %s", writer->path);
    size_t gap = (size_t)(at - (uint64_t)position);
    if (fwrite(zeros, 1, gap, writer->file) != gap || (bytes && fwrite(data, 1, bytes, writer->file) != bytes))
        return ft_error_errno("cannot write image store %s", writer->path);
    return 0;
}

int ft_image_store_writer_finish(ft_image_store_writer *writer)
{
    int status = writer->failed ? -1 : 0;
    store_layout layout = layout_of(&writer->header);
    if (status == 0)
        status = write_at(writer, layout.images, writer->images, writer->header.n_images * sizeof(image_entry));
    if (status == 0)
        status = write_at(writer, layout.sample_offsets, writer->sample_offsets,
                          (writer->header.n_samples + 1) * sizeof(uint64_t));
    if (status == 0)
        status = write_at(writer, layout.image_refs, writer->image_refs,
                          writer->header.n_image_refs * sizeof(uint32_t));
    if (status == 0 && (fseek(writer->file, 0, SEEK_SET) != 0 ||
                        fwrite(&writer->header, 1, sizeof writer->header, writer->file) != sizeof writer->header ||
                        fflush(writer->file) != 0 || fsync(fileno(writer->file)) != 0))
        status = ft_error_errno("cannot write image store %s", writer->path);
    if (fclose(writer->file) != 0 && status == 0)
        status = ft_error_errno("cannot write image store %s", writer->path);
    free(writer->path);
    free(writer->images);
    free(writer->sample_offsets);
    free(writer->image_refs);
    free(writer);
    return status;
}

/* --- reading --- */

struct ft_image_store {
    char *path;
    void *map;
    size_t map_bytes;
    store_header header;
    const float *pixels;
    const image_entry *images;
    const uint64_t *sample_offsets;
    const uint32_t *image_refs;
};

static int corrupt(const ft_image_store *store, const char *what)
{
    return ft_error("%s: not a valid image store: %s (re-run the tokenize stage that made it)", store->path, what);
}

/* Checks every count, offset and index, so that serving images needs no checks later. */
static int check_store(ft_image_store *store)
{
    if (store->map_bytes < HEADER_BYTES)
        return corrupt(store, "shorter than its header");
    const store_header *header = store->map;
    if (memcmp(header->magic, magic, sizeof magic) != 0)
        return corrupt(store, "no FTIMAGES magic");
    if (header->version != 1 && header->version != FT_IMAGE_STORE_VERSION)
        return ft_error("%s: image store version %u; this ftpipe reads versions 1 to %d (re-run the tokenize stage)",
                        store->path, header->version, FT_IMAGE_STORE_VERSION);
    if (header->version == 1 ? header->layout != 0
                             : header->layout != FT_IMAGE_LAYOUT_PATCHES && header->layout != FT_IMAGE_LAYOUT_CLIP)
        return corrupt(store, "an unknown layout");
    uint64_t size = store->map_bytes;
    if (header->row_length == 0 || header->n_pixel_rows > size / ((uint64_t)header->row_length * sizeof(float)) ||
        header->n_images > size / sizeof(image_entry) || header->n_samples > size / sizeof(uint64_t) ||
        header->n_image_refs > size / sizeof(uint32_t))
        return corrupt(store, "counts larger than the file");
    store->header = *header;
    store_layout layout = layout_of(header);
    if (layout.end != size)
        return corrupt(store, "file size does not match its counts");
    const char *base = store->map;
    store->pixels = (const float *)(base + layout.pixels);
    store->images = (const image_entry *)(base + layout.images);
    store->sample_offsets = (const uint64_t *)(base + layout.sample_offsets);
    store->image_refs = (const uint32_t *)(base + layout.image_refs);

    uint64_t next_row = 0;
    for (uint64_t i = 0; i < header->n_images; i++) {
        const image_entry *image = &store->images[i];
        if (image->grid_t < 1 || image->grid_h < 1 || image->grid_w < 1 || image->grid_t > INT32_MAX ||
            image->grid_h > INT32_MAX || image->grid_w > INT32_MAX)
            return corrupt(store, "an image has an empty grid");
        uint64_t rows = 1;
        if (header->layout == FT_IMAGE_LAYOUT_CLIP) {
            if (image->grid_t != 1 || (uint64_t)image->grid_h * image->grid_w > UINT32_MAX ||
                3 * (uint64_t)image->grid_h * image->grid_w != header->row_length)
                return corrupt(store, "a CLIP image's size differs from its row");
        } else {
            uint64_t planes = (uint64_t)image->grid_t * image->grid_h;
            if (planes > header->n_pixel_rows || (uint64_t)image->grid_w > header->n_pixel_rows / planes)
                return corrupt(store, "image rows do not follow one another within the pixels");
            rows = planes * image->grid_w;
        }
        if (image->first_row != next_row || rows > header->n_pixel_rows - next_row)
            return corrupt(store, "image rows do not follow one another within the pixels");
        next_row += rows;
    }
    if (next_row != header->n_pixel_rows)
        return corrupt(store, "the images do not span the pixels");
    const uint64_t *offsets = store->sample_offsets;
    if (offsets[0] != 0 || offsets[header->n_samples] != header->n_image_refs)
        return corrupt(store, "sample offsets do not span the image references");
    for (uint64_t s = 0; s < header->n_samples; s++)
        if (offsets[s + 1] < offsets[s])
            return corrupt(store, "sample offsets decrease");
    for (uint64_t r = 0; r < header->n_image_refs; r++)
        if (store->image_refs[r] >= header->n_images)
            return corrupt(store, "a sample names an image the store lacks");
    return 0;
}

int ft_image_store_open(const char *path, ft_image_store **out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ft_error_errno("cannot open image store %s", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return ft_error_errno("cannot read image store %s", path);
    }
    ft_image_store *store = ft_xcalloc(1, sizeof *store);
    store->path = ft_xstrdup(path);
    store->map_bytes = (size_t)st.st_size;
    store->map = store->map_bytes ? mmap(NULL, store->map_bytes, PROT_READ, MAP_SHARED, fd, 0) : NULL;
    close(fd);
    int status = 0;
    if (store->map == MAP_FAILED) {
        store->map = NULL;
        status = ft_error_errno("cannot map image store %s", path);
    }
    if (status == 0)
        status = check_store(store);
    if (status != 0) {
        ft_image_store_close(store);
        return -1;
    }
    *out = store;
    return 0;
}

void ft_image_store_close(ft_image_store *store)
{
    if (!store)
        return;
    if (store->map)
        munmap(store->map, store->map_bytes);
    free(store->path);
    free(store);
}

uint64_t ft_image_store_n_images(const ft_image_store *store) { return store->header.n_images; }
uint64_t ft_image_store_n_samples(const ft_image_store *store) { return store->header.n_samples; }
uint32_t ft_image_store_row_length(const ft_image_store *store) { return store->header.row_length; }
ft_image_layout ft_image_store_layout(const ft_image_store *store) { return (ft_image_layout)store->header.layout; }

void ft_image_store_image(const ft_image_store *store, uint64_t index, ft_stored_image *out)
{
    const image_entry *image = &store->images[index];
    out->hash = (ft_hash){image->hash_high, image->hash_low};
    out->grid_t = (int)image->grid_t;
    out->grid_h = (int)image->grid_h;
    out->grid_w = (int)image->grid_w;
    out->pixels = store->pixels + image->first_row * store->header.row_length;
}

const uint32_t *ft_image_store_sample_images(const ft_image_store *store, uint64_t sample, size_t *count)
{
    *count = (size_t)(store->sample_offsets[sample + 1] - store->sample_offsets[sample]);
    return store->image_refs + store->sample_offsets[sample];
}
