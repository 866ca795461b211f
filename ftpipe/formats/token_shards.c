/* token_shards: the shard writer and the mmap reader of tokenized datasets.
 * meta.json is written and read in token_shards_meta.c. */
#include "ftpipe/formats/token_shards.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "token shards are little-endian and read in place: this host is not"
#endif

#define HEADER_BYTES 64
#define SECTION_ALIGN 64
#define FLAG_PACKED 1u
static const char magic[8] = {'F', 'T', 'T', 'O', 'K', 'E', 'N', 'S'};

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t flags;
    uint64_t n_tokens;
    uint64_t n_samples;
    uint64_t n_rows;
    uint32_t row_length;
    uint8_t zeros[HEADER_BYTES - 44];
} shard_header;

_Static_assert(sizeof(shard_header) == HEADER_BYTES, "the shard header is 64 bytes");

/* Where each section starts, from the counts; the file's size is `end`. */
typedef struct {
    uint64_t sample_offsets, row_offsets, ids, loss_mask, end;
} shard_layout;

static uint64_t align_up(uint64_t value) { return (value + SECTION_ALIGN - 1) / SECTION_ALIGN * SECTION_ALIGN; }

static shard_layout layout_of(uint64_t n_tokens, uint64_t n_samples, uint64_t n_rows)
{
    shard_layout layout;
    layout.sample_offsets = HEADER_BYTES;
    layout.row_offsets = align_up(layout.sample_offsets + (n_samples + 1) * 8);
    layout.ids = align_up(layout.row_offsets + (n_rows + 1) * 8);
    layout.loss_mask = align_up(layout.ids + n_tokens * 4);
    layout.end = layout.loss_mask + n_tokens;
    return layout;
}

/* --- writing --- */

struct ft_token_shard_writer {
    char *split_dir;
    bool packed;
    uint32_t row_length;
    uint64_t max_shard_tokens;
    bool failed;
    /* the shard being gathered; offsets are shard-local */
    uint32_t *ids;
    uint8_t *loss_mask;
    size_t n_tokens, tokens_capacity;
    uint64_t *sample_offsets; /* n_samples + 1 */
    size_t n_samples, samples_capacity;
    uint64_t *row_offsets;    /* n_rows + 1 */
    size_t n_rows, rows_capacity;
    size_t open_row_tokens;   /* packed: tokens in the row not yet ended */
    ft_token_split_stats stats;
};

int ft_token_shard_writer_open(const char *split_dir, bool packed, uint32_t row_length, uint64_t max_shard_tokens,
                               ft_token_shard_writer **out)
{
    if (row_length == 0)
        return ft_error("token shards in %s: the row length must be at least 1", split_dir);
    if (ft_mkdir_p(split_dir) != 0)
        return -1;
    ft_token_shard_writer *writer = ft_xcalloc(1, sizeof *writer);
    writer->split_dir = ft_xstrdup(split_dir);
    writer->packed = packed;
    writer->row_length = row_length;
    writer->max_shard_tokens = max_shard_tokens ? max_shard_tokens : FT_TOKEN_SHARD_DEFAULT_MAX_TOKENS;
    writer->sample_offsets = ft_xcalloc(1, sizeof(uint64_t));
    writer->samples_capacity = 1;
    writer->row_offsets = ft_xcalloc(1, sizeof(uint64_t));
    writer->rows_capacity = 1;
    *out = writer;
    return 0;
}

static int write_section(FILE *file, const char *path, uint64_t at, const void *data, size_t bytes)
{
    static const char zeros[SECTION_ALIGN];
    long position = ftell(file);
    if (position < 0 || (uint64_t)position > at ||
        fwrite(zeros, 1, (size_t)(at - (uint64_t)position), file) != (size_t)(at - (uint64_t)position) ||
        (bytes && fwrite(data, 1, bytes, file) != bytes))
        return ft_error_errno("cannot write token shard %s", path);
    return 0;
}

static int write_shard(ft_token_shard_writer *writer)
{
    char name[32];
    snprintf(name, sizeof name, "shard-%05llu.bin", (unsigned long long)writer->stats.n_shards);
    char *path = ft_path_join(writer->split_dir, name);
    shard_header header = {.version = FT_TOKEN_SHARD_VERSION,
                           .flags = writer->packed ? FLAG_PACKED : 0,
                           .n_tokens = writer->n_tokens,
                           .n_samples = writer->n_samples,
                           .n_rows = writer->n_rows,
                           .row_length = writer->row_length};
    memcpy(header.magic, magic, sizeof magic);
    shard_layout layout = layout_of(writer->n_tokens, writer->n_samples, writer->n_rows);

    FILE *file = fopen(path, "wb");
    int status = file ? 0 : ft_error_errno("cannot create token shard %s", path);
    if (status == 0)
        status = write_section(file, path, 0, &header, sizeof header);
    if (status == 0)
        status = write_section(file, path, layout.sample_offsets, writer->sample_offsets,
                               (writer->n_samples + 1) * sizeof(uint64_t));
    if (status == 0)
        status = write_section(file, path, layout.row_offsets, writer->row_offsets,
                               (writer->n_rows + 1) * sizeof(uint64_t));
    if (status == 0)
        status = write_section(file, path, layout.ids, writer->ids, writer->n_tokens * sizeof(uint32_t));
    if (status == 0)
        status = write_section(file, path, layout.loss_mask, writer->loss_mask, writer->n_tokens);
    if (status == 0 && (fflush(file) != 0 || fsync(fileno(file)) != 0))
        status = ft_error_errno("cannot write token shard %s", path);
    if (file && fclose(file) != 0 && status == 0)
        status = ft_error_errno("cannot write token shard %s", path);
    free(path);
    if (status != 0)
        return -1;

    writer->stats.n_shards++;
    writer->n_tokens = writer->n_samples = writer->n_rows = 0;
    return 0;
}

static int writer_failed(ft_token_shard_writer *writer)
{
    writer->failed = true;
    return -1;
}

static int close_row(ft_token_shard_writer *writer)
{
    ft_grow((void **)&writer->row_offsets, &writer->rows_capacity, writer->n_rows + 2, sizeof(uint64_t));
    writer->row_offsets[++writer->n_rows] = writer->n_samples;
    writer->stats.n_rows++;
    writer->open_row_tokens = 0;
    if (writer->n_tokens >= writer->max_shard_tokens && write_shard(writer) != 0)
        return writer_failed(writer);
    return 0;
}

int ft_token_shard_writer_add_sample(ft_token_shard_writer *writer, const uint32_t *ids, const uint8_t *loss_mask,
                                     size_t n_tokens)
{
    if (writer->failed)
        return -1;
    if (n_tokens == 0)
        return ft_error("token shards in %s: a sample has no tokens", writer->split_dir);
    if (writer->open_row_tokens + n_tokens > writer->row_length)
        return ft_error("token shards in %s: a sample of %zu tokens does not fit a row of %u tokens (%zu used)",
                        writer->split_dir, n_tokens, writer->row_length, writer->open_row_tokens);
    ft_grow((void **)&writer->ids, &writer->tokens_capacity, writer->n_tokens + n_tokens, sizeof(uint32_t));
    writer->loss_mask = ft_xrealloc(writer->loss_mask, writer->tokens_capacity);
    memcpy(writer->ids + writer->n_tokens, ids, n_tokens * sizeof(uint32_t));
    memcpy(writer->loss_mask + writer->n_tokens, loss_mask, n_tokens);
    writer->n_tokens += n_tokens;
    ft_grow((void **)&writer->sample_offsets, &writer->samples_capacity, writer->n_samples + 2, sizeof(uint64_t));
    writer->sample_offsets[++writer->n_samples] = writer->n_tokens;
    writer->open_row_tokens += n_tokens;

    ft_token_split_stats *stats = &writer->stats;
    stats->n_samples++;
    stats->n_tokens += n_tokens;
    for (size_t i = 0; i < n_tokens; i++)
        stats->n_trained_tokens += loss_mask[i] != 0;
    if (n_tokens > stats->max_sample_tokens)
        stats->max_sample_tokens = n_tokens;
    return writer->packed ? 0 : close_row(writer);
}

int ft_token_shard_writer_end_row(ft_token_shard_writer *writer)
{
    if (writer->failed)
        return -1;
    if (!writer->packed)
        return ft_error("token shards in %s: rows are ended only when packing", writer->split_dir);
    if (writer->open_row_tokens == 0)
        return ft_error("token shards in %s: a row has no samples", writer->split_dir);
    return close_row(writer);
}

int ft_token_shard_writer_finish(ft_token_shard_writer *writer, ft_token_split_stats *stats)
{
    int status = writer->failed ? -1 : 0;
    if (status == 0 && writer->open_row_tokens > 0)
        status = close_row(writer);
    if (status == 0 && (writer->n_rows > 0 || writer->stats.n_shards == 0))
        status = write_shard(writer);
    if (status == 0 && stats)
        *stats = writer->stats;
    free(writer->split_dir);
    free(writer->ids);
    free(writer->loss_mask);
    free(writer->sample_offsets);
    free(writer->row_offsets);
    free(writer);
    return status;
}

/* --- reading --- */

typedef struct {
    char *path;
    void *map;
    size_t map_bytes;
    uint64_t n_tokens, n_samples, n_rows;
    const uint64_t *sample_offsets;
    const uint64_t *row_offsets;
    const uint32_t *ids;
    const uint8_t *loss_mask;
    uint64_t first_row, first_sample; /* global indices */
} mapped_shard;

struct ft_token_shards {
    mapped_shard *shards;
    size_t n_shards;
    uint64_t n_rows, n_samples, n_tokens;
    uint32_t row_length;
    bool packed;
};

static int corrupt(const mapped_shard *shard, const char *what)
{
    return ft_error("%s: not a valid token shard: %s (re-run the tokenize stage that made it)", shard->path, what);
}

/* Checks every count and offset, so that serving rows needs no checks later. */
static int check_shard(mapped_shard *shard, bool packed, uint32_t row_length)
{
    if (shard->map_bytes < HEADER_BYTES)
        return corrupt(shard, "shorter than its header");
    const shard_header *header = shard->map;
    if (memcmp(header->magic, magic, sizeof magic) != 0)
        return corrupt(shard, "no FTTOKENS magic");
    if (header->version != FT_TOKEN_SHARD_VERSION)
        return ft_error("%s: token shard version %u; this ftpipe reads version %d (re-run the tokenize stage)",
                        shard->path, header->version, FT_TOKEN_SHARD_VERSION);
    if (((header->flags & FLAG_PACKED) != 0) != packed || header->row_length != row_length)
        return corrupt(shard, "packing or row length differs from meta.json");
    uint64_t size = shard->map_bytes;
    if (header->n_tokens > size || header->n_samples > size / 8 || header->n_rows > size / 8)
        return corrupt(shard, "counts larger than the file");
    shard_layout layout = layout_of(header->n_tokens, header->n_samples, header->n_rows);
    if (layout.end != size)
        return corrupt(shard, "file size does not match its counts");
    shard->n_tokens = header->n_tokens;
    shard->n_samples = header->n_samples;
    shard->n_rows = header->n_rows;
    const char *base = shard->map;
    shard->sample_offsets = (const uint64_t *)(base + layout.sample_offsets);
    shard->row_offsets = (const uint64_t *)(base + layout.row_offsets);
    shard->ids = (const uint32_t *)(base + layout.ids);
    shard->loss_mask = (const uint8_t *)(base + layout.loss_mask);

    const uint64_t *samples = shard->sample_offsets, *rows = shard->row_offsets;
    if (samples[0] != 0 || samples[shard->n_samples] != shard->n_tokens)
        return corrupt(shard, "sample offsets do not span the tokens");
    for (uint64_t i = 0; i < shard->n_samples; i++)
        if (samples[i + 1] <= samples[i])
            return corrupt(shard, "sample offsets are not increasing");
    if (rows[0] != 0 || rows[shard->n_rows] != shard->n_samples)
        return corrupt(shard, "row offsets do not span the samples");
    for (uint64_t r = 0; r < shard->n_rows; r++) {
        if (rows[r + 1] <= rows[r] || (!packed && rows[r + 1] != rows[r] + 1))
            return corrupt(shard, "row offsets are not increasing");
        if (samples[rows[r + 1]] - samples[rows[r]] > row_length)
            return corrupt(shard, "a row is longer than the row length");
    }
    return 0;
}

static int map_shard(mapped_shard *shard)
{
    int fd = open(shard->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ft_error_errno("cannot open token shard %s", shard->path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return ft_error_errno("cannot read token shard %s", shard->path);
    }
    shard->map_bytes = (size_t)st.st_size;
    shard->map = shard->map_bytes ? mmap(NULL, shard->map_bytes, PROT_READ, MAP_SHARED, fd, 0) : NULL;
    close(fd);
    if (shard->map == MAP_FAILED) {
        shard->map = NULL;
        return ft_error_errno("cannot map token shard %s", shard->path);
    }
    return 0;
}

void ft_token_shards_close(ft_token_shards *shards)
{
    if (!shards)
        return;
    for (size_t i = 0; i < shards->n_shards; i++) {
        if (shards->shards[i].map)
            munmap(shards->shards[i].map, shards->shards[i].map_bytes);
        free(shards->shards[i].path);
    }
    free(shards->shards);
    free(shards);
}

int ft_token_shards_open(const char *dataset_dir, const char *split, ft_token_shards **out)
{
    ft_token_dataset_meta meta;
    if (ft_token_dataset_meta_read(dataset_dir, &meta) != 0)
        return -1;
    bool is_train = strcmp(split, "train") == 0;
    if (!is_train && strcmp(split, "validation") != 0)
        return ft_error("token dataset %s: no split '%s' (the splits are train and validation)", dataset_dir, split);
    const ft_token_split_stats *expected = is_train ? &meta.train : &meta.validation;
    if (!is_train && expected->n_samples == 0)
        return ft_error("token dataset %s has no validation split (set val_size in its tokenize stage)",
                        dataset_dir);

    ft_token_shards *shards = ft_xcalloc(1, sizeof *shards);
    shards->packed = meta.packing;
    shards->row_length = meta.cutoff_len;
    shards->shards = ft_xcalloc(expected->n_shards ? expected->n_shards : 1, sizeof(mapped_shard));
    char *split_dir = ft_path_join(dataset_dir, split);
    int status = 0;
    for (uint64_t i = 0; i < expected->n_shards && status == 0; i++) {
        mapped_shard *shard = &shards->shards[shards->n_shards++];
        char name[32];
        snprintf(name, sizeof name, "shard-%05llu.bin", (unsigned long long)i);
        shard->path = ft_path_join(split_dir, name);
        status = map_shard(shard);
        if (status == 0)
            status = check_shard(shard, shards->packed, shards->row_length);
        shard->first_row = shards->n_rows;
        shard->first_sample = shards->n_samples;
        shards->n_rows += shard->n_rows;
        shards->n_samples += shard->n_samples;
        shards->n_tokens += shard->n_tokens;
    }
    if (status == 0 && (shards->n_rows != expected->n_rows || shards->n_samples != expected->n_samples ||
                        shards->n_tokens != expected->n_tokens))
        status = ft_error("token dataset %s: the %s shards hold %llu samples and %llu tokens, meta.json says %llu "
                          "and %llu (re-run the tokenize stage)",
                          dataset_dir, split, (unsigned long long)shards->n_samples,
                          (unsigned long long)shards->n_tokens, (unsigned long long)expected->n_samples,
                          (unsigned long long)expected->n_tokens);
    free(split_dir);
    if (status != 0) {
        ft_token_shards_close(shards);
        return -1;
    }
    *out = shards;
    return 0;
}

uint64_t ft_token_shards_n_rows(const ft_token_shards *shards) { return shards->n_rows; }
uint64_t ft_token_shards_n_samples(const ft_token_shards *shards) { return shards->n_samples; }
uint64_t ft_token_shards_n_tokens(const ft_token_shards *shards) { return shards->n_tokens; }
uint32_t ft_token_shards_row_length(const ft_token_shards *shards) { return shards->row_length; }
bool ft_token_shards_packed(const ft_token_shards *shards) { return shards->packed; }

/* The shard holding global index `index`, by first_row or first_sample. */
static const mapped_shard *find_shard(const ft_token_shards *shards, uint64_t index, bool by_row)
{
    size_t low = 0, high = shards->n_shards;
    while (high - low > 1) {
        size_t middle = (low + high) / 2;
        uint64_t first = by_row ? shards->shards[middle].first_row : shards->shards[middle].first_sample;
        if (first <= index)
            low = middle;
        else
            high = middle;
    }
    return &shards->shards[low];
}

static void fill_row(const mapped_shard *shard, uint64_t first_sample, uint64_t end_sample, ft_token_row *out)
{
    uint64_t start = shard->sample_offsets[first_sample];
    out->ids = shard->ids + start;
    out->loss_mask = shard->loss_mask + start;
    out->n_tokens = (size_t)(shard->sample_offsets[end_sample] - start);
    out->sample_offsets = shard->sample_offsets + first_sample;
    out->n_samples = (size_t)(end_sample - first_sample);
    out->first_sample = shard->first_sample + first_sample;
}

void ft_token_shards_row(const ft_token_shards *shards, uint64_t index, ft_token_row *out)
{
    const mapped_shard *shard = find_shard(shards, index, true);
    uint64_t local = index - shard->first_row;
    fill_row(shard, shard->row_offsets[local], shard->row_offsets[local + 1], out);
}

void ft_token_shards_sample(const ft_token_shards *shards, uint64_t index, ft_token_row *out)
{
    const mapped_shard *shard = find_shard(shards, index, false);
    uint64_t local = index - shard->first_sample;
    fill_row(shard, local, local + 1, out);
}

void ft_token_row_segment_ids(const ft_token_row *row, int32_t *segment_ids)
{
    uint64_t base = row->sample_offsets[0];
    for (size_t j = 0; j < row->n_samples; j++)
        for (uint64_t t = row->sample_offsets[j]; t < row->sample_offsets[j + 1]; t++)
            segment_ids[t - base] = (int32_t)j;
}
