/* bpe: vocabulary and merge tables, the merge loop, the per-thread word cache. */
#include "ftpipe/text/bpe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "ftpipe/base/mem.h"

#define NO_TOKEN UINT32_MAX
#define EMPTY_PAIR UINT64_MAX
/* How full the tables may get: the merge table is the one probed most, and
 * the smaller it is, the more of it stays in cache. */
#define VOCAB_LOAD_PERCENT 50
#define MERGE_LOAD_PERCENT 75

/* Words up to this many bytes are cached: longer ones are rare and costly to keep. */
#define CACHE_MAX_WORD_BYTES 256
#define CACHE_SLOT_BITS 16
#define CACHE_MAX_ENTRIES ((1u << CACHE_SLOT_BITS) / 2)

typedef struct {
    uint32_t offset; /* into bytes */
    uint32_t length;
    uint32_t id;
} vocab_entry;

typedef struct {
    uint64_t pair; /* left id << 32 | right id; EMPTY_PAIR when free */
    uint32_t rank;
    uint32_t merged_id;
} merge_slot;

struct ft_bpe {
    uint8_t *bytes; /* every token's raw bytes, back to back */
    size_t n_bytes, bytes_capacity;
    vocab_entry *entries;
    size_t n_entries, entries_capacity;
    uint32_t *vocab_slots; /* entry index + 1; 0 when free */
    size_t vocab_slot_mask;

    merge_slot *merges;
    size_t n_merges, merge_slot_mask;

    uint32_t byte_ids[256]; /* the token of each single byte, or NO_TOKEN */
    bool characters;                 /* symbols start as UTF-8 characters, not bytes */
    uint32_t fallback_ids[256];      /* <0xXX> of each byte, or NO_TOKEN */
    bool ignore_merges;
    int64_t unknown_id;
    bool fuse_unknown;
};

typedef struct {
    uint64_t hash; /* 0 when free */
    uint32_t key_offset, ids_offset;
    uint16_t key_length, n_ids;
} cache_slot;

struct ft_bpe_worker {
    /* the word being merged: one symbol per byte at first, linked as a list */
    uint32_t *symbol_ids;
    int32_t *previous, *next;
    size_t symbols_capacity;
    uint64_t *heap; /* rank << 32 | position, smallest first; 2 * symbols_capacity */

    cache_slot *cache;
    size_t n_cached;
    uint8_t *cache_keys;
    size_t cache_keys_length, cache_keys_capacity;
    uint32_t *cache_ids;
    size_t cache_ids_length, cache_ids_capacity;
};

static inline size_t mix64(uint64_t key) { return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20); }

/* Open-addressing tables of 2^k slots, at most `load` percent full. */
static size_t slots_for(size_t count, size_t load_percent)
{
    size_t slots = 1024;
    while (count * 100 > slots * load_percent)
        slots *= 2;
    return slots;
}

ft_bpe *ft_bpe_new(size_t expected_tokens, size_t expected_merges)
{
    ft_bpe *bpe = ft_xcalloc(1, sizeof *bpe);
    for (size_t i = 0; i < 256; i++)
        bpe->byte_ids[i] = bpe->fallback_ids[i] = NO_TOKEN;
    bpe->unknown_id = -1;
    bpe->vocab_slot_mask = slots_for(expected_tokens, VOCAB_LOAD_PERCENT) - 1;
    bpe->vocab_slots = ft_xcalloc(bpe->vocab_slot_mask + 1, sizeof *bpe->vocab_slots);
    bpe->merge_slot_mask = slots_for(expected_merges, MERGE_LOAD_PERCENT) - 1;
    bpe->merges = ft_xmalloc((bpe->merge_slot_mask + 1) * sizeof *bpe->merges);
    for (size_t i = 0; i <= bpe->merge_slot_mask; i++)
        bpe->merges[i].pair = EMPTY_PAIR;
    return bpe;
}

void ft_bpe_free(ft_bpe *bpe)
{
    if (!bpe)
        return;
    free(bpe->bytes);
    free(bpe->entries);
    free(bpe->vocab_slots);
    free(bpe->merges);
    free(bpe);
}

/* ---- vocabulary: raw bytes -> id, open addressing ---- */
static size_t vocab_hash(const void *bytes, size_t length) { return (size_t)XXH3_64bits(bytes, length); }

static uint32_t *vocab_find_slot(uint32_t *slots, size_t mask, const ft_bpe *bpe, const void *bytes, size_t length)
{
    for (size_t i = vocab_hash(bytes, length) & mask;; i = (i + 1) & mask) {
        uint32_t entry_index = slots[i];
        if (entry_index == 0)
            return &slots[i];
        const vocab_entry *entry = &bpe->entries[entry_index - 1];
        if (entry->length == length && memcmp(bpe->bytes + entry->offset, bytes, length) == 0)
            return &slots[i];
    }
}

static void vocab_grow(ft_bpe *bpe)
{
    size_t mask = bpe->vocab_slot_mask * 2 + 1;
    uint32_t *slots = ft_xcalloc(mask + 1, sizeof *slots);
    for (size_t e = 0; e < bpe->n_entries; e++) {
        const vocab_entry *entry = &bpe->entries[e];
        *vocab_find_slot(slots, mask, bpe, bpe->bytes + entry->offset, entry->length) = (uint32_t)e + 1;
    }
    free(bpe->vocab_slots);
    bpe->vocab_slots = slots;
    bpe->vocab_slot_mask = mask;
}

void ft_bpe_add_token(ft_bpe *bpe, uint32_t id, const void *bytes, size_t length)
{
    if ((bpe->n_entries + 1) * 100 > (bpe->vocab_slot_mask + 1) * VOCAB_LOAD_PERCENT)
        vocab_grow(bpe);
    uint32_t *slot = vocab_find_slot(bpe->vocab_slots, bpe->vocab_slot_mask, bpe, bytes, length);
    if (*slot != 0) { /* the same bytes again: the later id wins, as in a JSON object */
        bpe->entries[*slot - 1].id = id;
    } else {
        if (length > 0) { /* an empty token ("" in the vocab) has no bytes, and the buffer may not exist yet */
            ft_grow((void **)&bpe->bytes, &bpe->bytes_capacity, bpe->n_bytes + length, 1);
            memcpy(bpe->bytes + bpe->n_bytes, bytes, length);
        }
        ft_grow((void **)&bpe->entries, &bpe->entries_capacity, bpe->n_entries + 1, sizeof *bpe->entries);
        bpe->entries[bpe->n_entries] = (vocab_entry){(uint32_t)bpe->n_bytes, (uint32_t)length, id};
        bpe->n_bytes += length;
        *slot = (uint32_t)++bpe->n_entries;
    }
    if (length == 1)
        bpe->byte_ids[*(const uint8_t *)bytes] = id;
}

int64_t ft_bpe_token_id(const ft_bpe *bpe, const void *bytes, size_t length)
{
    uint32_t entry_index = *vocab_find_slot(bpe->vocab_slots, bpe->vocab_slot_mask, bpe, bytes, length);
    return entry_index ? (int64_t)bpe->entries[entry_index - 1].id : -1;
}

/* ---- merges: (left, right) -> (rank, merged), open addressing ---- */
static merge_slot *merge_find_slot(merge_slot *slots, size_t mask, uint64_t pair)
{
    for (size_t i = mix64(pair) & mask;; i = (i + 1) & mask)
        if (slots[i].pair == pair || slots[i].pair == EMPTY_PAIR)
            return &slots[i];
}

static void merges_grow(ft_bpe *bpe)
{
    size_t mask = bpe->merge_slot_mask * 2 + 1;
    merge_slot *slots = ft_xmalloc((mask + 1) * sizeof *slots);
    for (size_t i = 0; i <= mask; i++)
        slots[i].pair = EMPTY_PAIR;
    for (size_t i = 0; i <= bpe->merge_slot_mask; i++)
        if (bpe->merges[i].pair != EMPTY_PAIR)
            *merge_find_slot(slots, mask, bpe->merges[i].pair) = bpe->merges[i];
    free(bpe->merges);
    bpe->merges = slots;
    bpe->merge_slot_mask = mask;
}

void ft_bpe_add_merge(ft_bpe *bpe, uint32_t left_id, uint32_t right_id, uint32_t merged_id, uint32_t rank)
{
    if ((bpe->n_merges + 1) * 100 > (bpe->merge_slot_mask + 1) * MERGE_LOAD_PERCENT)
        merges_grow(bpe);
    uint64_t pair = (uint64_t)left_id << 32 | right_id;
    merge_slot *slot = merge_find_slot(bpe->merges, bpe->merge_slot_mask, pair);
    if (slot->pair == EMPTY_PAIR)
        bpe->n_merges++;
    *slot = (merge_slot){pair, rank, merged_id};
}

static inline const merge_slot *merge_lookup(const ft_bpe *bpe, uint32_t left_id, uint32_t right_id)
{
    const merge_slot *slot =
        merge_find_slot(bpe->merges, bpe->merge_slot_mask, (uint64_t)left_id << 32 | right_id);
    return slot->pair == EMPTY_PAIR ? NULL : slot;
}

void ft_bpe_set_options(ft_bpe *bpe, bool ignore_merges, int64_t unknown_id, bool fuse_unknown)
{
    bpe->ignore_merges = ignore_merges;
    bpe->unknown_id = unknown_id;
    bpe->fuse_unknown = fuse_unknown;
}

void ft_bpe_use_characters(ft_bpe *bpe, bool byte_fallback)
{
    bpe->characters = true;
    for (int b = 0; b < 256 && byte_fallback; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        int64_t id = ft_bpe_token_id(bpe, name, strlen(name));
        bpe->fallback_ids[b] = id < 0 ? NO_TOKEN : (uint32_t)id;
    }
}

/* ---- the merge loop ---- */
ft_bpe_worker *ft_bpe_worker_new(void)
{
    ft_bpe_worker *worker = ft_xcalloc(1, sizeof *worker);
    worker->cache = ft_xcalloc((size_t)1 << CACHE_SLOT_BITS, sizeof *worker->cache);
    return worker;
}

void ft_bpe_worker_free(ft_bpe_worker *worker)
{
    if (!worker)
        return;
    free(worker->symbol_ids);
    free(worker->previous);
    free(worker->next);
    free(worker->heap);
    free(worker->cache);
    free(worker->cache_keys);
    free(worker->cache_ids);
    free(worker);
}

static void heap_push(ft_bpe_worker *worker, size_t *count, uint64_t item)
{
    uint64_t *heap = worker->heap;
    size_t i = (*count)++;
    while (i > 0 && heap[(i - 1) / 2] > item) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = item;
}

static uint64_t heap_pop(ft_bpe_worker *worker, size_t *count)
{
    uint64_t *heap = worker->heap;
    uint64_t top = heap[0], last = heap[--*count];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= *count)
            break;
        if (child + 1 < *count && heap[child + 1] < heap[child])
            child++;
        if (heap[child] >= last)
            break;
        heap[i] = heap[child];
        i = child;
    }
    heap[i] = last;
    return top;
}

static void push_pair(const ft_bpe *bpe, ft_bpe_worker *worker, size_t *heap_count, int32_t position)
{
    int32_t right = worker->next[position];
    if (right < 0)
        return;
    const merge_slot *merge = merge_lookup(bpe, worker->symbol_ids[position], worker->symbol_ids[right]);
    if (merge)
        heap_push(worker, heap_count, (uint64_t)merge->rank << 32 | (uint32_t)position);
}

static void add_symbol(ft_bpe_worker *worker, uint32_t id, int32_t *n_symbols)
{
    int32_t n = (*n_symbols)++;
    worker->symbol_ids[n] = id;
    worker->previous[n] = n - 1;
    worker->next[n] = n + 1;
}

/* The bytes of a UTF-8 character at the start of valid text. */
static size_t character_length(const uint8_t *bytes, size_t available)
{
    size_t length = bytes[0] < 0x80 ? 1 : bytes[0] < 0xE0 ? 2 : bytes[0] < 0xF0 ? 3 : 4;
    return length < available ? length : available;
}

/* Byte fallback: a character without a token becomes its bytes' <0xXX> tokens,
 * when all of them exist (else it is unknown). */
static bool add_fallback_bytes(const ft_bpe *bpe, ft_bpe_worker *worker, const uint8_t *bytes, size_t length,
                               int32_t *n_symbols)
{
    for (size_t i = 0; i < length; i++)
        if (bpe->fallback_ids[bytes[i]] == NO_TOKEN)
            return false;
    for (size_t i = 0; i < length; i++)
        add_symbol(worker, bpe->fallback_ids[bytes[i]], n_symbols);
    return true;
}

/* One symbol per byte, or per character (unknown ones per the options), then
 * merges until none applies. */
static void merge_word(const ft_bpe *bpe, ft_bpe_worker *worker, const uint8_t *bytes, size_t length,
                       ft_token_ids *out)
{
    if (length > worker->symbols_capacity) {
        size_t capacity = length > 2 * worker->symbols_capacity ? length : 2 * worker->symbols_capacity;
        worker->symbol_ids = ft_xrealloc(worker->symbol_ids, capacity * sizeof *worker->symbol_ids);
        worker->previous = ft_xrealloc(worker->previous, capacity * sizeof *worker->previous);
        worker->next = ft_xrealloc(worker->next, capacity * sizeof *worker->next);
        /* each merge queues at most one more pair than it removes */
        worker->heap = ft_xrealloc(worker->heap, 2 * capacity * sizeof *worker->heap);
        worker->symbols_capacity = capacity;
    }

    /* As `tokenizers` does it: an unknown symbol waits until the next known one
     * (fused with the unknown ones between, if asked), so byte-fallback tokens
     * met meanwhile come before it. */
    int32_t n_symbols = 0;
    bool unknown_waits = false;
    for (size_t i = 0; i < length;) {
        size_t symbol_length = bpe->characters ? character_length(bytes + i, length - i) : 1;
        uint32_t id = symbol_length == 1 ? bpe->byte_ids[bytes[i]] : NO_TOKEN;
        if (id == NO_TOKEN && symbol_length > 1) {
            int64_t found = ft_bpe_token_id(bpe, bytes + i, symbol_length);
            id = found < 0 ? NO_TOKEN : (uint32_t)found;
        }
        bool fell_back = id == NO_TOKEN && add_fallback_bytes(bpe, worker, bytes + i, symbol_length, &n_symbols);
        i += symbol_length;
        if (fell_back || (id == NO_TOKEN && bpe->unknown_id < 0))
            continue;
        if (unknown_waits && (id != NO_TOKEN || !bpe->fuse_unknown)) {
            add_symbol(worker, (uint32_t)bpe->unknown_id, &n_symbols);
            unknown_waits = false;
        }
        if (id == NO_TOKEN)
            unknown_waits = true;
        else
            add_symbol(worker, id, &n_symbols);
    }
    if (unknown_waits)
        add_symbol(worker, (uint32_t)bpe->unknown_id, &n_symbols);
    if (n_symbols == 0)
        return;
    worker->next[n_symbols - 1] = -1;

    /* The table is large and probed at random: start all first lookups at once. */
    for (int32_t i = 0; i + 1 < n_symbols; i++) {
        uint64_t pair = (uint64_t)worker->symbol_ids[i] << 32 | worker->symbol_ids[i + 1];
        __builtin_prefetch(&bpe->merges[mix64(pair) & bpe->merge_slot_mask]);
    }
    size_t heap_count = 0;
    for (int32_t i = 0; i + 1 < n_symbols; i++)
        push_pair(bpe, worker, &heap_count, i);
    while (heap_count > 0) {
        uint64_t top = heap_pop(worker, &heap_count);
        int32_t position = (int32_t)(uint32_t)top;
        int32_t right = worker->next[position];
        if (worker->symbol_ids[position] == NO_TOKEN || right < 0)
            continue; /* merged away since it was queued */
        const merge_slot *merge = merge_lookup(bpe, worker->symbol_ids[position], worker->symbol_ids[right]);
        if (!merge || merge->rank != (uint32_t)(top >> 32))
            continue; /* the pair at this position changed since it was queued */
        worker->symbol_ids[position] = merge->merged_id;
        worker->symbol_ids[right] = NO_TOKEN;
        worker->next[position] = worker->next[right];
        if (worker->next[right] >= 0)
            worker->previous[worker->next[right]] = position;
        if (worker->previous[position] >= 0)
            push_pair(bpe, worker, &heap_count, worker->previous[position]);
        push_pair(bpe, worker, &heap_count, position);
    }
    for (int32_t i = 0; i >= 0; i = worker->next[i])
        ft_token_ids_push(out, worker->symbol_ids[i]);
}

/* ---- the word cache: raw bytes -> ids, cleared whole when full ---- */
static void cache_clear(ft_bpe_worker *worker)
{
    memset(worker->cache, 0, ((size_t)1 << CACHE_SLOT_BITS) * sizeof *worker->cache);
    worker->n_cached = 0;
    worker->cache_keys_length = 0;
    worker->cache_ids_length = 0;
}

static cache_slot *cache_find(ft_bpe_worker *worker, uint64_t hash, const uint8_t *bytes, size_t length)
{
    size_t mask = ((size_t)1 << CACHE_SLOT_BITS) - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        cache_slot *slot = &worker->cache[i];
        if (slot->hash == 0)
            return slot;
        if (slot->hash == hash && slot->key_length == length &&
            memcmp(worker->cache_keys + slot->key_offset, bytes, length) == 0)
            return slot;
    }
}

static void cache_store(ft_bpe_worker *worker, cache_slot *slot, uint64_t hash, const uint8_t *bytes,
                        size_t length, const uint32_t *ids, size_t n_ids)
{
    ft_grow((void **)&worker->cache_keys, &worker->cache_keys_capacity, worker->cache_keys_length + length, 1);
    if (length > 0) /* memcpy from NULL is undefined even for 0 bytes */
        memcpy(worker->cache_keys + worker->cache_keys_length, bytes, length);
    ft_grow((void **)&worker->cache_ids, &worker->cache_ids_capacity, worker->cache_ids_length + n_ids,
            sizeof *worker->cache_ids);
    if (n_ids > 0)
        memcpy(worker->cache_ids + worker->cache_ids_length, ids, n_ids * sizeof *ids);
    *slot = (cache_slot){hash, (uint32_t)worker->cache_keys_length, (uint32_t)worker->cache_ids_length,
                         (uint16_t)length, (uint16_t)n_ids};
    worker->cache_keys_length += length;
    worker->cache_ids_length += n_ids;
    worker->n_cached++;
}

void ft_bpe_encode_word(const ft_bpe *bpe, ft_bpe_worker *worker, const uint8_t *bytes, size_t length,
                        ft_token_ids *out)
{
    if (length == 1 && bpe->byte_ids[bytes[0]] != NO_TOKEN) {
        ft_token_ids_push(out, bpe->byte_ids[bytes[0]]);
        return;
    }
    /* The cache is small and hot: ask it before the large tables. */
    bool cacheable = length <= CACHE_MAX_WORD_BYTES;
    uint64_t hash = 0;
    cache_slot *slot = NULL;
    if (cacheable) {
        hash = XXH3_64bits(bytes, length) | 1;
        slot = cache_find(worker, hash, bytes, length);
        if (slot->hash != 0) {
            for (size_t i = 0; i < slot->n_ids; i++)
                ft_token_ids_push(out, worker->cache_ids[slot->ids_offset + i]);
            return;
        }
    }
    size_t first = out->count;
    int64_t whole = bpe->ignore_merges ? ft_bpe_token_id(bpe, bytes, length) : -1;
    if (whole >= 0)
        ft_token_ids_push(out, (uint32_t)whole);
    else
        merge_word(bpe, worker, bytes, length, out);
    if (!cacheable)
        return;
    if (worker->n_cached >= CACHE_MAX_ENTRIES) {
        cache_clear(worker);
        slot = cache_find(worker, hash, bytes, length);
    }
    /* A word that yields no ids (a tokenizer without them) leaves out->ids NULL. */
    cache_store(worker, slot, hash, bytes, length, out->count > first ? out->ids + first : NULL, out->count - first);
}
