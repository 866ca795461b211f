/* token_shards: tokenized training data on disk, read by mmap so that training
 * needs no data-loader workers.
 *
 * A tokenized dataset is a folder:
 *   meta.json              tokenizer hash, template, cutoff_len, packing, counts
 *   train/shard-00000.bin  ... the training split's shards
 *   train/images.bin       with images: their preprocessed pixels (image_store.h)
 *   validation/...         only when a validation set was split off
 *
 * The unit of training is a row: at most row_length tokens. Unpacked, a row is
 * one sample; packed, a row holds several whole samples, and attention must not
 * cross from one to the next. Rows and samples never straddle shards.
 *
 * A shard file (little-endian, each section starting at a multiple of 64 bytes):
 *   header      64 bytes: magic "FTTOKENS", uint32 version (1), uint32 flags
 *               (bit 0: packed), uint64 n_tokens, uint64 n_samples, uint64 n_rows,
 *               uint32 row_length, then zeros
 *   sample_offsets  uint64[n_samples + 1]: sample i is tokens [off[i], off[i+1])
 *   row_offsets     uint64[n_rows + 1]: row r is samples [row[r], row[r+1])
 *   ids             uint32[n_tokens]
 *   loss_mask       uint8[n_tokens]: 1 = trained on (the answer), 0 = prompt
 * The reader checks the whole layout (sizes, monotonic offsets, rows within
 * row_length) before serving anything; errors name the file. */
#ifndef FTPIPE_TOKEN_SHARDS_H
#define FTPIPE_TOKEN_SHARDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FT_TOKEN_SHARD_VERSION 1
#define FT_TOKEN_SHARD_DEFAULT_MAX_TOKENS ((uint64_t)1 << 28) /* 1 GiB of ids per shard */

/* What one split holds. */
typedef struct {
    uint64_t n_samples;
    uint64_t n_rows;
    uint64_t n_tokens;
    uint64_t n_trained_tokens;  /* loss_mask == 1 */
    uint64_t n_truncated;       /* samples cut to cutoff_len (kept by the caller) */
    uint64_t max_sample_tokens;
    uint64_t n_shards;
    uint64_t n_images;          /* distinct images in the split's image store */
} ft_token_split_stats;

/* --- writing --- */

typedef struct ft_token_shard_writer ft_token_shard_writer;

/* Creates split_dir and writes shards into it. packed: rows are closed with
 * ft_token_shard_writer_end_row; otherwise each sample is a row. max_shard_tokens
 * 0 means FT_TOKEN_SHARD_DEFAULT_MAX_TOKENS. */
int ft_token_shard_writer_open(const char *split_dir, bool packed, uint32_t row_length, uint64_t max_shard_tokens,
                               ft_token_shard_writer **out);
/* A sample longer than row_length, or one that overflows a packed row, is refused. */
int ft_token_shard_writer_add_sample(ft_token_shard_writer *writer, const uint32_t *ids, const uint8_t *loss_mask,
                                     size_t n_tokens);
int ft_token_shard_writer_end_row(ft_token_shard_writer *writer);
/* Writes what is left and frees the writer (also on failure); stats may be NULL. */
int ft_token_shard_writer_finish(ft_token_shard_writer *writer, ft_token_split_stats *stats);

/* --- meta.json --- */

typedef struct {
    char tokenizer_hash[33];  /* 32 hex digits: ft_tokenizer_hash of the tokenizer used */
    char template_name[64];
    uint32_t cutoff_len;
    bool packing;
    bool train_on_prompt;
    bool mask_history;
    char vision_processor[32];  /* "qwen2_vl" or "clip" (LLaVA) when each split has an image store, else "" */
    uint64_t n_records;         /* read from the datasets, skipped ones included */
    uint64_t n_skipped_records;
    ft_token_split_stats train;
    ft_token_split_stats validation;  /* n_samples 0: no validation split */
} ft_token_dataset_meta;

int ft_token_dataset_meta_write(const char *dataset_dir, const ft_token_dataset_meta *meta);
int ft_token_dataset_meta_read(const char *dataset_dir, ft_token_dataset_meta *out);

/* --- reading --- */

typedef struct ft_token_shards ft_token_shards;

/* One row, pointing into the mapping. Sample j of the row is tokens
 * [sample_offsets[j] - sample_offsets[0], sample_offsets[j + 1] - sample_offsets[0]). */
typedef struct {
    const uint32_t *ids;
    const uint8_t *loss_mask;
    size_t n_tokens;
    const uint64_t *sample_offsets;  /* n_samples + 1 values */
    size_t n_samples;
    uint64_t first_sample;           /* the split's index of the row's first sample (the image store's) */
} ft_token_row;

/* Opens and maps a split ("train" or "validation") of a tokenized dataset,
 * checking it against meta.json. */
int ft_token_shards_open(const char *dataset_dir, const char *split, ft_token_shards **out);
void ft_token_shards_close(ft_token_shards *shards);

uint64_t ft_token_shards_n_rows(const ft_token_shards *shards);
uint64_t ft_token_shards_n_samples(const ft_token_shards *shards);
uint64_t ft_token_shards_n_tokens(const ft_token_shards *shards);
uint32_t ft_token_shards_row_length(const ft_token_shards *shards);
bool ft_token_shards_packed(const ft_token_shards *shards);

/* Row index in [0, n_rows): its tokens and sample boundaries. */
void ft_token_shards_row(const ft_token_shards *shards, uint64_t index, ft_token_row *out);
/* Sample index in [0, n_samples) as a one-sample row. */
void ft_token_shards_sample(const ft_token_shards *shards, uint64_t index, ft_token_row *out);

/* Per-token sample number within the row (0, 0, 0, 1, 1, ...) into
 * segment_ids[row->n_tokens], for attention that must not cross samples. */
void ft_token_row_segment_ids(const ft_token_row *row, int32_t *segment_ids);

#endif
