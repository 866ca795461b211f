/* tokenizer: tokenizer.json loaded with jansson; encoding (added tokens, then
 * normalizer, pre-tokenizer and BPE on what lies between them) and decoding.
 * Two families: byte-level BPE (GPT-2, Llama 3, Qwen: the ByteLevel
 * pre-tokenizer and decoder) and SentencePiece-style BPE (Llama 2, LLaVA-1.5:
 * "▁" for spaces through the normalizer or a Metaspace pre-tokenizer,
 * characters with byte fallback). Decoding is token_decoder.c's. */
#include "ftpipe/text/tokenizer.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/utf8.h"
#include "ftpipe/text/added_tokens.h"
#include "ftpipe/text/bpe.h"
#include "ftpipe/text/normalizer.h"
#include "ftpipe/text/pretokenizer.h"
#include "ftpipe/text/token_decoder.h"
#include "ftpipe/text/tokenizer_json.h"

/* Ids above this are refused: tables are indexed by id. */
#define MAX_TOKEN_ID ((1 << 24) - 1)

/* GPT-2's split, which ByteLevel applies when use_regex is true. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* One thread's state for one tokenizer; listed so that freeing the tokenizer frees all. */
typedef struct worker {
    struct worker *previous, *next;
    struct ft_tokenizer *tokenizer;
    ft_word_matcher *matcher;
    ft_bpe_worker *bpe;
    ft_strbuf normalized, scratch, spaced;
} worker;

/* Metaspace's prepend_scheme: when a word gets the replacement in front. */
typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } prepend_scheme;

struct ft_tokenizer {
    ft_bpe *bpe;
    ft_word_splitter *splitter; /* NULL: each stretch between added tokens is one word */
    ft_normalizer *normalizer;
    bool byte_level;            /* else SentencePiece-style: tokens are their own text */
    char *metaspace;            /* the Metaspace pre-tokenizer's replacement, or NULL */
    prepend_scheme metaspace_prepend;
    bool metaspace_split;
    ft_token_decoder *decoder;
    ft_added_tokens *raw_added;        /* normalized false: matched before normalizing */
    ft_added_tokens *normalized_added; /* normalized true: matched in the normalized text */


    char *bos_token, *eos_token;
    ft_hash hash;

    pthread_key_t worker_key;
    pthread_mutex_t workers_lock;
    worker *workers;
};

/* ---- loading ---- */
/* "PATH: message" */
static int load_error(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int load_error(const char *path, const char *fmt, ...)
{
    char message[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    return ft_error("%s: %s", path, message);
}

/* Metaspace: spaces become the replacement, which also goes in front of a
 * word per prepend_scheme (older files: add_prefix_space), and with split each
 * replacement starts a new word. */
static int parse_metaspace(ft_tokenizer *tokenizer, const char *path, const json_t *step)
{
    const char *replacement = json_string_value(json_object_get(step, "replacement"));
    if (!replacement || !*replacement)
        return load_error(path, "pre_tokenizer Metaspace has no \"replacement\" text");
    const char *scheme = json_string_value(json_object_get(step, "prepend_scheme"));
    if (!scheme)
        tokenizer->metaspace_prepend = ft_tokenizer_json_flag(step, "add_prefix_space", true) ? PREPEND_ALWAYS : PREPEND_NEVER;
    else if (strcmp(scheme, "always") == 0)
        tokenizer->metaspace_prepend = PREPEND_ALWAYS;
    else if (strcmp(scheme, "first") == 0)
        tokenizer->metaspace_prepend = PREPEND_FIRST;
    else if (strcmp(scheme, "never") == 0)
        tokenizer->metaspace_prepend = PREPEND_NEVER;
    else
        return load_error(path, "pre_tokenizer Metaspace prepend_scheme '%s' is not one of always, first, never",
                          scheme);
    tokenizer->metaspace = ft_xstrdup(replacement);
    tokenizer->metaspace_split = ft_tokenizer_json_flag(step, "split", true);
    return 0;
}

static int parse_pre_tokenizer(ft_tokenizer *tokenizer, const char *path, const json_t *pre_tokenizer)
{
    if (!pre_tokenizer || json_is_null(pre_tokenizer))
        return 0; /* SentencePiece-style: the normalizer makes the spaces "▁" */
    if (strcmp(ft_tokenizer_json_type(pre_tokenizer), "Metaspace") == 0)
        return parse_metaspace(tokenizer, path, pre_tokenizer);
    bool sequence = strcmp(ft_tokenizer_json_type(pre_tokenizer), "Sequence") == 0;
    const json_t *steps = json_object_get(pre_tokenizer, "pretokenizers");
    size_t n_steps = sequence ? json_array_size(steps) : 1;
    const char *pattern = NULL;
    bool literal = false, byte_level = false;
    for (size_t i = 0; i < n_steps; i++) {
        const json_t *step = sequence ? json_array_get(steps, i) : pre_tokenizer;
        const char *type = ft_tokenizer_json_type(step);
        if (byte_level)
            return load_error(path, "pre_tokenizer step '%s' after ByteLevel is not supported", type);
        if (strcmp(type, "Split") == 0) {
            const json_t *regex = json_object_get(json_object_get(step, "pattern"), "Regex");
            const json_t *string = json_object_get(json_object_get(step, "pattern"), "String");
            const char *behavior = json_string_value(json_object_get(step, "behavior"));
            if (pattern)
                return load_error(path, "pre_tokenizer has two Split steps; only one is supported");
            if (!json_is_string(regex) && !json_is_string(string))
                return load_error(path, "pre_tokenizer Split has no pattern (\"Regex\" or \"String\")");
            if (!behavior || strcmp(behavior, "Isolated") != 0)
                return load_error(path, "pre_tokenizer Split behavior '%s' is not supported; supported: Isolated",
                                  behavior ? behavior : "(none)");
            if (ft_tokenizer_json_flag(step, "invert", false))
                return load_error(path, "pre_tokenizer Split with invert true is not supported");
            literal = !json_is_string(regex);
            pattern = json_string_value(literal ? string : regex);
        } else if (strcmp(type, "ByteLevel") == 0) {
            if (ft_tokenizer_json_flag(step, "add_prefix_space", false))
                return load_error(path, "pre_tokenizer ByteLevel with add_prefix_space true is not supported");
            if (ft_tokenizer_json_flag(step, "use_regex", true)) {
                if (pattern)
                    return load_error(path, "pre_tokenizer ByteLevel with use_regex true after Split is "
                                            "not supported");
                pattern = gpt2_pattern;
            }
            byte_level = true;
        } else {
            return load_error(path,
                              "pre_tokenizer type '%s' is not supported; supported: ByteLevel (alone, or in a "
                              "Sequence after Split), Metaspace (alone), none",
                              type);
        }
    }
    if (!byte_level)
        return load_error(path, "pre_tokenizer has no ByteLevel step; supported: byte-level BPE (ByteLevel, alone or "
                                "after Split) and SentencePiece-style BPE (Metaspace, or none)");
    tokenizer->byte_level = true;
    if (pattern && ft_word_splitter_new(pattern, literal, &tokenizer->splitter) < 0)
        return ft_error_context("%s", path);
    return 0;
}

static int parse_id(const char *path, const json_t *value, const char *what, uint32_t *id)
{
    if (!json_is_integer(value) || json_integer_value(value) < 0 || json_integer_value(value) > MAX_TOKEN_ID) {
        ft_error("%s: %s is not a token id (an integer from 0 to %d)", path, what, MAX_TOKEN_ID);
        return -1;
    }
    *id = (uint32_t)json_integer_value(value);
    return 0;
}

/* Checks the ids; *size is one past the largest. */
static int parse_vocab(const char *path, const json_t *vocab, size_t *size)
{
    if (!json_is_object(vocab))
        return load_error(path, "model.vocab is missing or not an object");
    *size = 0;
    const char *token;
    const json_t *value;
    json_object_foreach((json_t *)vocab, token, value) {
        char *what = ft_xasprintf("model.vocab[\"%s\"]", token);
        uint32_t id;
        int rc = parse_id(path, value, what, &id);
        free(what);
        if (rc < 0)
            return -1;
        *size = id + 1 > *size ? id + 1 : *size;
    }
    return 0;
}

static int add_vocab(ft_tokenizer *tokenizer, const json_t *vocab, ft_strbuf *scratch)
{
    const char *token;
    const json_t *value;
    json_object_foreach((json_t *)vocab, token, value) {
        uint32_t id = (uint32_t)json_integer_value(value);
        size_t length = strlen(token);
        if (!tokenizer->byte_level)
            ft_bpe_add_token(tokenizer->bpe, id, token, length);
        else if (ft_byte_level_to_raw(token, length, scratch))
            ft_bpe_add_token(tokenizer->bpe, id, scratch->data, scratch->length);
        /* else: it can never come out of byte-level text; it still decodes */
        ft_token_decoder_set(tokenizer->decoder, id, token, length);
    }
    return 0;
}

/* Merges name their tokens as the vocabulary writes them; a merge whose
 * tokens lie outside the byte-level alphabet is kept but can never apply. */
static int parse_merges(ft_tokenizer *tokenizer, const char *path, const json_t *vocab, const json_t *merges)
{
    if (!json_is_array(merges))
        return load_error(path, "model.merges is missing or not a list");
    ft_strbuf sides; /* "left\0right\0leftright" */
    ft_strbuf_init(&sides);
    int rc = 0;
    uint32_t rank = 0;
    size_t i;
    const json_t *merge;
    json_array_foreach(merges, i, merge) {
        const char *left = NULL, *right = NULL;
        size_t left_length = 0;
        ft_strbuf_reset(&sides);
        if (json_is_string(merge)) {
            const char *text = json_string_value(merge);
            if (strncmp(text, "#version", 8) == 0)
                continue;
            const char *space = strchr(text, ' ');
            if (space && !strchr(space + 1, ' ')) {
                left_length = (size_t)(space - text);
                right = space + 1;
                left = text;
            }
        } else if (json_array_size(merge) == 2 && json_is_string(json_array_get(merge, 0)) &&
                   json_is_string(json_array_get(merge, 1))) {
            left = json_string_value(json_array_get(merge, 0));
            left_length = strlen(left);
            right = json_string_value(json_array_get(merge, 1));
        }
        if (!left) {
            rc = ft_error("%s: model.merges[%zu] is neither \"A B\" nor [\"A\", \"B\"]", path, i);
            break;
        }
        size_t right_length = strlen(right);
        ft_strbuf_add(&sides, left, left_length);
        ft_strbuf_add(&sides, "", 1);
        ft_strbuf_add(&sides, right, right_length + 1);
        ft_strbuf_add(&sides, left, left_length);
        ft_strbuf_add(&sides, right, right_length);
        const char *names[3] = {sides.data, sides.data + left_length + 1, sides.data + left_length + right_length + 2};
        const json_t *ids[3];
        for (size_t side = 0; side < 3 && rc == 0; side++)
            if (!(ids[side] = json_object_get(vocab, names[side])))
                rc = ft_error("%s: model.merges[%zu] (\"%s\" + \"%s\"): \"%s\" is not in the vocabulary", path, i,
                              names[0], names[1], names[side]);
        if (rc < 0)
            break;
        ft_bpe_add_merge(tokenizer->bpe, (uint32_t)json_integer_value(ids[0]), (uint32_t)json_integer_value(ids[1]),
                         (uint32_t)json_integer_value(ids[2]), rank++);
    }
    ft_strbuf_free(&sides);
    return rc;
}

static int parse_model(ft_tokenizer *tokenizer, const char *path, const json_t *model)
{
    if (!json_is_object(model))
        return load_error(path, "model is missing or not an object");
    if (strcmp(ft_tokenizer_json_type(model), "BPE") != 0)
        return load_error(path, "model type '%s' is not supported; supported: BPE", ft_tokenizer_json_type(model));
    const char *text_options[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        const char *value = json_string_value(json_object_get(model, text_options[i]));
        if (value && *value)
            return load_error(path, "model.%s is not supported (only BPE where it is empty)",
                              text_options[i]);
    }
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout))
        return load_error(path, "model.dropout is not supported (encoding must be deterministic)");
    bool byte_fallback = ft_tokenizer_json_flag(model, "byte_fallback", false);
    if (byte_fallback && tokenizer->byte_level)
        return load_error(path, "model.byte_fallback with a ByteLevel pre-tokenizer is not supported (byte-level "
                                "BPE has a token for every byte already)");

    const json_t *vocab = json_object_get(model, "vocab");
    size_t size = 0;
    if (parse_vocab(path, vocab, &size) < 0)
        return -1;
    tokenizer->bpe = ft_bpe_new(json_object_size(vocab), json_array_size(json_object_get(model, "merges")));
    ft_token_decoder_reserve(tokenizer->decoder, size);
    ft_strbuf scratch;
    ft_strbuf_init(&scratch);
    add_vocab(tokenizer, vocab, &scratch);
    ft_strbuf_free(&scratch);

    int64_t unknown_id = -1;
    const char *unknown = json_string_value(json_object_get(model, "unk_token"));
    if (unknown) {
        const json_t *id = json_object_get(vocab, unknown);
        if (!id)
            return load_error(path, "model.unk_token '%s' is not in the vocabulary", unknown);
        unknown_id = json_integer_value(id);
    }
    ft_bpe_set_options(tokenizer->bpe, ft_tokenizer_json_flag(model, "ignore_merges", false), unknown_id, ft_tokenizer_json_flag(model, "fuse_unk", false));
    if (!tokenizer->byte_level)
        ft_bpe_use_characters(tokenizer->bpe, byte_fallback);
    return parse_merges(tokenizer, path, vocab, json_object_get(model, "merges"));
}

/* The id of a token's text: the vocabulary's, else an earlier added token's. */
static int64_t existing_id(const ft_tokenizer *tokenizer, const json_t *vocab, const char *content)
{
    const json_t *id = json_object_get(vocab, content);
    if (id)
        return json_integer_value(id);
    int64_t added = ft_added_tokens_id(tokenizer->raw_added, content, strlen(content));
    return added >= 0 ? added : ft_added_tokens_id(tokenizer->normalized_added, content, strlen(content));
}

/* As `tokenizers` loads them: a token whose text is already known keeps that
 * id; the others are numbered from the vocabulary's size on, in file order,
 * whatever "id" the file gives them. */
static int parse_added_tokens(ft_tokenizer *tokenizer, const char *path, const json_t *list, const json_t *vocab)
{
    if (!list || json_is_null(list))
        return 0;
    if (!json_is_array(list))
        return load_error(path, "added_tokens is not a list");
    ft_strbuf scratch, normalized;
    ft_strbuf_init(&scratch);
    ft_strbuf_init(&normalized);
    uint32_t next_id = (uint32_t)json_object_size(vocab);
    int rc = 0;
    size_t i;
    const json_t *item;
    json_array_foreach(list, i, item) {
        const char *content = json_string_value(json_object_get(item, "content"));
        char what[64];
        snprintf(what, sizeof what, "added_tokens[%zu].id", i);
        uint32_t file_id;
        if (!content) {
            rc = ft_error("%s: added_tokens[%zu].content is missing or not text", path, i);
            break;
        }
        if ((rc = parse_id(path, json_object_get(item, "id"), what, &file_id)) < 0)
            break;
        if (!*content)
            continue;
        int64_t known = existing_id(tokenizer, vocab, content);
        uint32_t id = known >= 0 ? (uint32_t)known : next_id++;
        if (id > MAX_TOKEN_ID) {
            rc = ft_error("%s: added_tokens[%zu] would get id %u, above the limit %d", path, i, id, MAX_TOKEN_ID);
            break;
        }
        bool special = ft_tokenizer_json_flag(item, "special", false);
        bool single_word = ft_tokenizer_json_flag(item, "single_word", false), lstrip = ft_tokenizer_json_flag(item, "lstrip", false),
             rstrip = ft_tokenizer_json_flag(item, "rstrip", false);
        size_t length = strlen(content);
        if (ft_tokenizer_json_flag(item, "normalized", !special)) {
            const char *text;
            size_t text_length;
            if ((rc = ft_normalizer_apply(tokenizer->normalizer, content, length, &normalized, &scratch, &text,
                                          &text_length)) < 0)
                break;
            ft_added_tokens_add(tokenizer->normalized_added, text, text_length, id, single_word, lstrip, rstrip);
        } else {
            ft_added_tokens_add(tokenizer->raw_added, content, length, id, single_word, lstrip, rstrip);
        }
        ft_token_decoder_reserve(tokenizer->decoder, (size_t)id + 1);
        ft_token_decoder_set(tokenizer->decoder, id, content, length);
    }
    ft_strbuf_free(&scratch);
    ft_strbuf_free(&normalized);
    return rc;
}

/* A special token's text in tokenizer_config.json: text or {"content": text}. */
static char *special_token_text(const json_t *config, const char *key)
{
    const json_t *token = json_object_get(config, key);
    const char *text = json_is_object(token) ? json_string_value(json_object_get(token, "content"))
                                             : json_string_value(token);
    return text ? ft_xstrdup(text) : NULL;
}

/* "bos_token" and "eos_token" of tokenizer_config.json beside the tokenizer.json. */
static int load_special_tokens(ft_tokenizer *tokenizer, const char *tokenizer_path)
{
    char *folder = ft_path_dirname(tokenizer_path);
    char *config_path = ft_path_join(folder, "tokenizer_config.json");
    free(folder);
    int rc = 0;
    if (ft_path_exists(config_path)) {
        json_error_t error;
        json_t *config = json_load_file(config_path, JSON_DECODE_INT_AS_REAL, &error);
        if (!config) {
            rc = ft_error("%s:%d:%d: %s", config_path, error.line, error.column, error.text);
        } else {
            tokenizer->bos_token = special_token_text(config, "bos_token");
            tokenizer->eos_token = special_token_text(config, "eos_token");
            json_decref(config);
        }
    }
    free(config_path);
    return rc;
}

static int parse_tokenizer(ft_tokenizer *tokenizer, const char *path, const char *data, size_t length)
{
    json_error_t error;
    json_t *root = json_loadb(data, length, 0, &error);
    if (!root)
        return ft_error("%s:%d:%d: not valid JSON: %s", path, error.line, error.column, error.text);
    int rc = -1;
    if (!json_is_object(root))
        load_error(path, "not a tokenizer (the top level is not a JSON object)");
    else if (ft_normalizer_parse(path, json_object_get(root, "normalizer"), &tokenizer->normalizer) == 0 &&
             parse_pre_tokenizer(tokenizer, path, json_object_get(root, "pre_tokenizer")) == 0 &&
             ft_token_decoder_parse(path, json_object_get(root, "decoder"), tokenizer->byte_level,
                                    &tokenizer->decoder) == 0 &&
             parse_model(tokenizer, path, json_object_get(root, "model")) == 0 &&
             parse_added_tokens(tokenizer, path, json_object_get(root, "added_tokens"),
                                json_object_get(json_object_get(root, "model"), "vocab")) == 0)
        rc = 0;
    json_decref(root);
    return rc;
}

static void release_worker(void *pointer);

/* What determines the ids a dataset gets: the tokenizer.json bytes and the bos
 * and eos tokens from tokenizer_config.json, which templates place. */
static ft_hash identity_hash(ft_hash json_hash, const char *bos_token, const char *eos_token)
{
    char hex[FT_HASH_HEX_LENGTH + 1];
    ft_hash_to_hex(json_hash, hex);
    char *text = ft_xasprintf("tokenizer.json %s\n%s%s\n%s%s\n", hex, bos_token ? "bos_token " : "no bos_token",
                              bos_token ? bos_token : "", eos_token ? "eos_token " : "no eos_token",
                              eos_token ? eos_token : "");
    ft_hash hash = ft_hash_bytes(text, strlen(text));
    free(text);
    return hash;
}

int ft_tokenizer_load(const char *path, ft_tokenizer **out)
{
    char *file = ft_path_is_dir(path) ? ft_path_join(path, "tokenizer.json") : ft_xstrdup(path);
    if (ft_path_is_dir(path) && !ft_path_exists(file)) {
        free(file);
        return ft_error("%s: the folder has no tokenizer.json", path);
    }
    char *data;
    size_t length;
    if (ft_read_file(file, &data, &length) < 0) {
        free(file);
        return -1;
    }
    ft_tokenizer *tokenizer = ft_xcalloc(1, sizeof *tokenizer);
    tokenizer->raw_added = ft_added_tokens_new();
    tokenizer->normalized_added = ft_added_tokens_new();
    tokenizer->hash = ft_hash_bytes(data, length);
    pthread_key_create(&tokenizer->worker_key, release_worker);
    pthread_mutex_init(&tokenizer->workers_lock, NULL);
    int rc = parse_tokenizer(tokenizer, file, data, length);
    if (rc == 0)
        rc = load_special_tokens(tokenizer, file);
    if (rc == 0)
        tokenizer->hash = identity_hash(tokenizer->hash, tokenizer->bos_token, tokenizer->eos_token);
    free(data);
    free(file);
    if (rc < 0) {
        ft_tokenizer_free(tokenizer);
        return -1;
    }
    *out = tokenizer;
    return 0;
}

static void free_worker(worker *state)
{
    ft_word_matcher_free(state->matcher);
    ft_bpe_worker_free(state->bpe);
    ft_strbuf_free(&state->normalized);
    ft_strbuf_free(&state->scratch);
    ft_strbuf_free(&state->spaced);
    free(state);
}

void ft_tokenizer_free(ft_tokenizer *tokenizer)
{
    if (!tokenizer)
        return;
    pthread_key_delete(tokenizer->worker_key);
    while (tokenizer->workers) {
        worker *next = tokenizer->workers->next;
        free_worker(tokenizer->workers);
        tokenizer->workers = next;
    }
    pthread_mutex_destroy(&tokenizer->workers_lock);
    ft_bpe_free(tokenizer->bpe);
    ft_word_splitter_free(tokenizer->splitter);
    ft_normalizer_free(tokenizer->normalizer);
    free(tokenizer->metaspace);
    ft_token_decoder_free(tokenizer->decoder);
    ft_added_tokens_free(tokenizer->raw_added);
    ft_added_tokens_free(tokenizer->normalized_added);
    free(tokenizer->bos_token);
    free(tokenizer->eos_token);
    free(tokenizer);
}

/* ---- per-thread state ---- */
static void release_worker(void *pointer)
{
    worker *state = pointer;
    ft_tokenizer *tokenizer = state->tokenizer;
    pthread_mutex_lock(&tokenizer->workers_lock);
    if (state->previous)
        state->previous->next = state->next;
    else
        tokenizer->workers = state->next;
    if (state->next)
        state->next->previous = state->previous;
    pthread_mutex_unlock(&tokenizer->workers_lock);
    free_worker(state);
}

static worker *thread_worker(const ft_tokenizer *shared)
{
    /* Only the list of workers changes, under its lock; the tokenizer stays read-only. */
    ft_tokenizer *tokenizer = (ft_tokenizer *)shared;
    worker *state = pthread_getspecific(tokenizer->worker_key);
    if (state)
        return state;
    state = ft_xcalloc(1, sizeof *state);
    state->tokenizer = tokenizer;
    state->matcher = tokenizer->splitter ? ft_word_matcher_new(tokenizer->splitter) : NULL;
    state->bpe = ft_bpe_worker_new();
    ft_strbuf_init(&state->normalized);
    ft_strbuf_init(&state->scratch);
    ft_strbuf_init(&state->spaced);
    pthread_mutex_lock(&tokenizer->workers_lock);
    state->next = tokenizer->workers;
    if (state->next)
        state->next->previous = state;
    tokenizer->workers = state;
    pthread_mutex_unlock(&tokenizer->workers_lock);
    pthread_setspecific(tokenizer->worker_key, state);
    return state;
}

/* ---- encoding ---- */
typedef struct {
    const ft_tokenizer *tokenizer;
    worker *state;
    ft_token_ids *out;
    const char *original;  /* the text being encoded */
    const char *first;     /* where the piece that starts the original text starts, or NULL */
} encoding;

/* Metaspace: spaces made the replacement, which goes in front per the
 * prepend scheme ("first": only the piece at the start of the whole text),
 * then each replacement starts a word if split. */
static void encode_metaspace(encoding *job, const char *text, size_t length)
{
    const ft_tokenizer *tokenizer = job->tokenizer;
    const char *mark = tokenizer->metaspace;
    size_t mark_length = strlen(mark);
    ft_strbuf *spaced = &job->state->spaced;
    ft_strbuf_reset(spaced);
    bool prepend = tokenizer->metaspace_prepend == PREPEND_ALWAYS ||
                   (tokenizer->metaspace_prepend == PREPEND_FIRST && text == job->first);
    if (prepend && !(length >= mark_length && memcmp(text, mark, mark_length) == 0) && text[0] != ' ')
        ft_strbuf_add(spaced, mark, mark_length);
    for (size_t i = 0; i < length; i++)
        if (text[i] == ' ')
            ft_strbuf_add(spaced, mark, mark_length);
        else
            ft_strbuf_putc(spaced, text[i]);
    const uint8_t *word = (const uint8_t *)spaced->data;
    size_t start = 0;
    for (size_t i = 1; tokenizer->metaspace_split && i + mark_length <= spaced->length; i++)
        if (memcmp(spaced->data + i, mark, mark_length) == 0) {
            ft_bpe_encode_word(tokenizer->bpe, job->state->bpe, word + start, i - start, job->out);
            start = i;
        }
    ft_bpe_encode_word(tokenizer->bpe, job->state->bpe, word + start, spaced->length - start, job->out);
}

/* Words of a normalized stretch, each through BPE. */
static int encode_words(void *context, const char *text, size_t length)
{
    encoding *job = context;
    const ft_tokenizer *tokenizer = job->tokenizer;
    if (tokenizer->metaspace) {
        if (length > 0)
            encode_metaspace(job, text, length);
        return 0;
    }
    if (!tokenizer->splitter) {
        ft_bpe_encode_word(tokenizer->bpe, job->state->bpe, (const uint8_t *)text, length, job->out);
        return 0;
    }
    ft_word_matcher_start(job->state->matcher, text, length);
    size_t start, end;
    int rc;
    while ((rc = ft_word_matcher_next(job->state->matcher, &start, &end)) > 0)
        ft_bpe_encode_word(tokenizer->bpe, job->state->bpe, (const uint8_t *)text + start, end - start, job->out);
    return rc;
}

/* A stretch between raw added tokens: normalized, then split on normalized added tokens. */
static int encode_stretch(void *context, const char *text, size_t length)
{
    encoding *job = context;
    const ft_tokenizer *tokenizer = job->tokenizer;
    bool at_start = text == job->original;
    if (ft_normalizer_is_active(tokenizer->normalizer) &&
        ft_normalizer_apply(tokenizer->normalizer, text, length, &job->state->normalized, &job->state->scratch, &text,
                            &length) < 0)
        return -1;
    job->first = at_start ? text : NULL;
    if (ft_added_tokens_count(tokenizer->normalized_added) > 0)
        return ft_added_tokens_split(tokenizer->normalized_added, text, length, encode_words, job, job->out);
    return encode_words(job, text, length);
}

int ft_tokenizer_encode(const ft_tokenizer *tokenizer, const char *text, size_t length, ft_token_ids *out)
{
    size_t invalid = ft_utf8_invalid_offset(text, length);
    if (invalid < length)
        return ft_error("the text is not valid UTF-8 (at byte %zu)", invalid);
    encoding job = {tokenizer, thread_worker(tokenizer), out, text, NULL};
    if (ft_added_tokens_count(tokenizer->raw_added) > 0)
        return ft_added_tokens_split(tokenizer->raw_added, text, length, encode_stretch, &job, out);
    return length ? encode_stretch(&job, text, length) : 0;
}

/* ---- decoding ---- */
int ft_tokenizer_decode(const ft_tokenizer *tokenizer, const uint32_t *ids, size_t count, char **text)
{
    return ft_token_decoder_decode(tokenizer->decoder, ids, count, false, text);
}

int ft_tokenizer_decode_generated(const ft_tokenizer *tokenizer, const uint32_t *ids, size_t count, char **text)
{
    return ft_token_decoder_decode(tokenizer->decoder, ids, count, true, text);
}

/* ---- accessors ---- */
size_t ft_tokenizer_vocab_size(const ft_tokenizer *tokenizer) { return ft_token_decoder_size(tokenizer->decoder); }

int64_t ft_tokenizer_token_id(const ft_tokenizer *tokenizer, const char *token)
{
    size_t length = strlen(token);
    int64_t id = ft_added_tokens_id(tokenizer->raw_added, token, length);
    if (id < 0)
        id = ft_added_tokens_id(tokenizer->normalized_added, token, length);
    if (id >= 0)
        return id;
    if (!tokenizer->byte_level)
        return ft_bpe_token_id(tokenizer->bpe, token, length);
    ft_strbuf raw;
    ft_strbuf_init(&raw);
    if (ft_byte_level_to_raw(token, length, &raw))
        id = ft_bpe_token_id(tokenizer->bpe, raw.data, raw.length);
    ft_strbuf_free(&raw);
    return id;
}

const char *ft_tokenizer_bos_token(const ft_tokenizer *tokenizer) { return tokenizer->bos_token; }
const char *ft_tokenizer_eos_token(const ft_tokenizer *tokenizer) { return tokenizer->eos_token; }

ft_hash ft_tokenizer_hash(const ft_tokenizer *tokenizer) { return tokenizer->hash; }
