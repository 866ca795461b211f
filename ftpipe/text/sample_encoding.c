/* sample_encoding: LLaMA-Factory's supervised sample assembly (infer_seqlen,
 * masks), its packing, the validation split, and the writing of a split into
 * token shards. Running the tokenizer over conversations is in
 * conversation_encoding.c. */
#include "ftpipe/text/sample_encoding.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"

void ft_encoded_sample_free(ft_encoded_sample *sample)
{
    free(sample->ids);
    free(sample->loss_mask);
    memset(sample, 0, sizeof *sample);
}

void ft_infer_seqlen(size_t source_len, size_t target_len, size_t budget, size_t *new_source_len,
                     size_t *new_target_len)
{
    size_t max_target_len;
    if (target_len * 2 < budget)
        max_target_len = budget;
    else if (source_len * 2 < budget)
        max_target_len = budget - source_len;
    else /* in double, as Python computes int(budget * (target / (source + target))) */
        max_target_len = (size_t)((double)budget * ((double)target_len / (double)(source_len + target_len)));
    size_t target = target_len < max_target_len ? target_len : max_target_len;
    size_t max_source_len = budget > target ? budget - target : 0;
    *new_source_len = source_len < max_source_len ? source_len : max_source_len;
    *new_target_len = target;
}

static void append(ft_encoded_sample *out, const uint32_t *ids, size_t count, uint8_t trained)
{
    memcpy(out->ids + out->n_tokens, ids, count * sizeof(uint32_t));
    memset(out->loss_mask + out->n_tokens, trained, count);
    out->n_tokens += count;
}

void ft_encode_turns(const ft_turn_tokens *turns, size_t n_turns, const ft_encoding_options *options,
                     ft_encoded_sample *out)
{
    memset(out, 0, sizeof *out);
    size_t *kept_source = ft_xcalloc(n_turns ? n_turns : 1, sizeof(size_t));
    size_t *kept_target = ft_xcalloc(n_turns ? n_turns : 1, sizeof(size_t));
    /* Budget in LLaMA-Factory's order: first turns first, or last turns first
     * with mask_history. A turn reached with no budget left is dropped whole. */
    size_t total = 0;
    for (size_t k = 0; k < n_turns; k++) {
        size_t t = options->mask_history ? n_turns - 1 - k : k;
        out->full_tokens += turns[t].n_source + turns[t].n_target;
        if (total >= options->cutoff_len)
            continue;
        ft_infer_seqlen(turns[t].n_source, turns[t].n_target, options->cutoff_len - total, &kept_source[t],
                        &kept_target[t]);
        total += kept_source[t] + kept_target[t];
    }
    out->ids = ft_xmalloc((total ? total : 1) * sizeof(uint32_t));
    out->loss_mask = ft_xmalloc(total ? total : 1);
    for (size_t t = 0; t < n_turns; t++) {
        bool last = t + 1 == n_turns;
        append(out, turns[t].source, kept_source[t], options->train_on_prompt);
        append(out, turns[t].target, kept_target[t], !options->mask_history || last);
    }
    free(kept_source);
    free(kept_target);
}

/* --- packing --- */

/* The longest length <= limit that has samples left, or 0. */
static size_t longest_fitting(const uint64_t *nonempty, size_t limit)
{
    size_t word = limit / 64;
    uint64_t bits = nonempty[word] & (limit % 64 == 63 ? ~0ULL : ((2ULL << (limit % 64)) - 1));
    for (;;) {
        if (bits)
            return word * 64 + 63 - (size_t)__builtin_clzll(bits);
        if (word == 0)
            return 0;
        bits = nonempty[--word];
    }
}

void ft_pack_rows(const size_t *lengths, size_t count, size_t capacity, size_t *order, size_t **row_starts,
                  size_t *n_rows)
{
    /* Samples grouped by length (a counting sort), lower indices first within a
     * length; top[L] is one past the next sample of length L to take. */
    size_t *top = ft_xcalloc(capacity + 2, sizeof(size_t));
    for (size_t i = 0; i < count; i++)
        top[lengths[i] + 1]++;
    for (size_t length = 1; length <= capacity + 1; length++)
        top[length] += top[length - 1];
    size_t *start = ft_xmalloc((capacity + 2) * sizeof(size_t));
    memcpy(start, top, (capacity + 2) * sizeof(size_t));
    size_t *by_length = ft_xmalloc((count ? count : 1) * sizeof(size_t));
    for (size_t i = 0; i < count; i++)
        by_length[top[lengths[i]]++] = i;
    uint64_t *nonempty = ft_xcalloc(capacity / 64 + 1, sizeof(uint64_t));
    for (size_t length = 1; length <= capacity; length++)
        if (top[length] > start[length])
            nonempty[length / 64] |= 1ULL << (length % 64);

    size_t *rows = ft_xmalloc((count + 1) * sizeof(size_t));
    size_t placed = 0, rows_made = 0;
    while (placed < count) {
        rows[rows_made++] = placed;
        size_t room = capacity;
        for (size_t length; room > 0 && (length = longest_fitting(nonempty, room)) != 0; room -= length) {
            order[placed++] = by_length[--top[length]];
            if (top[length] == start[length])
                nonempty[length / 64] &= ~(1ULL << (length % 64));
        }
        if (room == capacity)
            abort(); /* a length outside [1, capacity]: the caller broke the contract */
    }
    rows[rows_made] = count;
    *row_starts = rows;
    *n_rows = rows_made;
    free(top);
    free(start);
    free(by_length);
    free(nonempty);
}

/* --- splitting and writing --- */

int ft_choose_validation(size_t count, double val_size, uint64_t seed, bool *is_validation, size_t *n_validation)
{
    if (!(val_size >= 0) || (val_size >= 1 && val_size != floor(val_size)))
        return ft_error("val_size = %g: expected a fraction below 1 or a whole count of samples", val_size);
    size_t wanted = val_size < 1 ? (size_t)ceil(val_size * (double)count) : (size_t)val_size;
    if (wanted > 0 && wanted >= count)
        return ft_error("val_size = %g leaves no training samples: there are %zu samples", val_size, count);
    /* Fisher-Yates with counter-based draws: the first `wanted` of the shuffle. */
    size_t *shuffled = ft_xmalloc((count ? count : 1) * sizeof(size_t));
    for (size_t i = 0; i < count; i++)
        shuffled[i] = i;
    for (size_t i = count; i > 1; i--) {
        size_t j = (size_t)(ft_random_u64(seed, i) % i);
        size_t swap = shuffled[i - 1];
        shuffled[i - 1] = shuffled[j];
        shuffled[j] = swap;
    }
    memset(is_validation, 0, count * sizeof(bool));
    for (size_t i = 0; i < wanted; i++)
        is_validation[shuffled[count - 1 - i]] = true;
    free(shuffled);
    *n_validation = wanted;
    return 0;
}

int ft_write_samples(const char *split_dir, const ft_encoded_sample *samples, const size_t *indices, size_t count,
                     bool packing, size_t row_length, uint64_t max_shard_tokens, ft_token_split_stats *stats,
                     size_t *written)
{
    ft_token_shard_writer *writer;
    if (ft_token_shard_writer_open(split_dir, packing, (uint32_t)row_length, max_shard_tokens, &writer) != 0)
        return -1;
    size_t *order = ft_xmalloc((count ? count : 1) * sizeof(size_t));
    size_t *row_starts = NULL, n_rows = count;
    if (packing) {
        size_t *lengths = ft_xmalloc((count ? count : 1) * sizeof(size_t));
        for (size_t i = 0; i < count; i++)
            lengths[i] = samples[indices[i]].n_tokens;
        /* rows filled to one token short of their length, as LLaMA-Factory packs (its
         * cutoff_len - 1), so that packed rows hold the same samples as its */
        size_t capacity = row_length > 1 ? row_length - 1 : row_length;
        ft_pack_rows(lengths, count, capacity, order, &row_starts, &n_rows);
        free(lengths);
    } else {
        for (size_t i = 0; i < count; i++)
            order[i] = i;
    }
    int status = 0;
    uint64_t n_truncated = 0;
    for (size_t row = 0, i = 0; row < n_rows && status == 0; row++) {
        size_t end = packing ? row_starts[row + 1] : i + 1;
        for (; i < end && status == 0; i++) {
            const ft_encoded_sample *sample = &samples[indices[order[i]]];
            if (written)
                written[i] = indices[order[i]];
            n_truncated += sample->n_tokens < sample->full_tokens;
            status = ft_token_shard_writer_add_sample(writer, sample->ids, sample->loss_mask, sample->n_tokens);
        }
        if (packing && status == 0)
            status = ft_token_shard_writer_end_row(writer);
    }
    free(order);
    free(row_starts);
    if (ft_token_shard_writer_finish(writer, stats) != 0 || status != 0)
        return -1;
    stats->n_truncated = n_truncated;
    return 0;
}
