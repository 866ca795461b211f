/* Tokenizer: a small hand-written tokenizer.json (tests/fixtures/tokenizer/tiny)
 * whose expected ids were checked against the `tokenizers` library; loading
 * refusals, each with its message; decoding; threads. The parity of the Qwen3
 * and Llama 3 tokenizers on a large corpus is tests/e2e/test_tokenizer_parity.sh. */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/text/pretokenizer.h"
#include "ftpipe/text/tokenizer.h"

#define TINY "tests/fixtures/tokenizer/tiny"

static char scratch_dir[] = "/tmp/ftpipe-test-tokenizer.XXXXXX";

/* Ids of text as "1 2 3" (caller frees), or the error message. */
static char *encode_text(const ft_tokenizer *tokenizer, const char *text)
{
    ft_token_ids ids = {0};
    if (ft_tokenizer_encode(tokenizer, text, strlen(text), &ids) < 0)
        return strdup(ft_error_message());
    char *out = calloc(ids.count * 12 + 1, 1);
    for (size_t i = 0; i < ids.count; i++)
        sprintf(out + strlen(out), i ? " %u" : "%u", ids.ids[i]);
    ft_token_ids_free(&ids);
    return out;
}

static ft_tokenizer *tiny(void)
{
    ft_tokenizer *tokenizer = NULL;
    if (ft_tokenizer_load(TINY "/tokenizer.json", &tokenizer) < 0)
        fprintf(stderr, "  %s\n", ft_error_message());
    return tokenizer;
}

#define CHECK_ENCODES(tokenizer, text, expected)      \
    do {                                              \
        char *check_ids = encode_text(tokenizer, text); \
        CHECK_STR(check_ids, expected);               \
        free(check_ids);                              \
    } while (0)

TEST(merges_by_rank)
{
    ft_tokenizer *tokenizer = tiny();
    CHECK_ENCODES(tokenizer, "hello the aaa", "261 258 32 262 97");
    CHECK_ENCODES(tokenizer, "aaaaa", "262 262 97"); /* equal pairs: leftmost first */
    CHECK_ENCODES(tokenizer, "\xe4\xb8\xad", "265"); /* 中 through two merges */
    CHECK_ENCODES(tokenizer, "It's HELLO 12\r\n\r\nthe", "73 116 39 115 32 72 69 76 76 79 32 49 50 13 10 13 10 116 257");
    CHECK_ENCODES(tokenizer, "a\xc2\xa0\xc2\xa0" "b", "97 194 160 194 160 98");
    CHECK_ENCODES(tokenizer, "", "");
    ft_tokenizer_free(tokenizer);
}

TEST(matches_added_tokens_first)
{
    ft_tokenizer *tokenizer = tiny();
    CHECK_ENCODES(tokenizer, "<|im_start|>hello<|im_end|>", "266 261 267");
    CHECK_ENCODES(tokenizer, "<|im", "271");                     /* the longest token wins... */
    CHECK_ENCODES(tokenizer, "<|im_", "271 95");                 /* ...where it matches */
    CHECK_ENCODES(tokenizer, "  <|im_end|>  ", "32 32 267 32 32"); /* no strip flags: spaces stay */
    CHECK_ENCODES(tokenizer, "a  <mask>  b", "97 268 98");       /* lstrip and rstrip take the spaces */
    CHECK_ENCODES(tokenizer, "x [WORD] y", "120 32 269 32 121"); /* single_word between spaces */
    CHECK_ENCODES(tokenizer, "x[WORD]y", "120 91 87 79 82 68 93 121");
    CHECK_ENCODES(tokenizer, "[WORD]", "269");
    ft_tokenizer_free(tokenizer);
}

TEST(normalizes_with_nfc)
{
    ft_tokenizer *tokenizer = tiny();
    CHECK_ENCODES(tokenizer, "e\xcc\x81", "263");             /* e + combining acute -> é */
    CHECK_ENCODES(tokenizer, "cafe\xcc\x81", "270");          /* a normalized added token after NFC */
    CHECK_ENCODES(tokenizer, "\tcafe\xcc\x81 <mask>", "9 270 268");
    ft_tokenizer_free(tokenizer);
}

/* The stretch-wise NFC equals utf8proc's NFC of the whole text. */
TEST(nfc_by_stretches_equals_whole_nfc)
{
    static const char *const pieces[] = {"a", "e", "\xcc\x81", "\xcc\xa3", "\xc3\xa9", "\xe1\x84\x80", "\xe1\x85\xa1",
                                         "\xe1\x86\xa8", "\xea\xb0\x80", "\xef\xa4\x80", "\xe2\x84\xab", " ", "\xe4\xb8\xad",
                                         "\xc3\x85", "\xe0\xa4\x95", "\xe0\xa4\xbc", "\xe0\xbd\xb3", "o"};
    uint64_t state = 12345;
    for (int round = 0; round < 2000; round++) {
        char text[256] = "";
        for (int i = 0; i < 12; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            strcat(text, pieces[(state >> 33) % (sizeof pieces / sizeof pieces[0])]);
        }
        ft_strbuf ours;
        ft_strbuf_init(&ours);
        CHECK_INT(ft_nfc_append(text, strlen(text), &ours), 0);
        char *whole = (char *)utf8proc_NFC((const utf8proc_uint8_t *)text);
        if (strcmp(ours.data, whole) != 0) {
            CHECK_STR(ours.data, whole);
            round = 2000;
        }
        CHECK(!ft_nfc_is_unchanged(text, strlen(text)) || strcmp(text, whole) == 0);
        free(whole);
        ft_strbuf_free(&ours);
    }
}

TEST(decodes)
{
    ft_tokenizer *tokenizer = tiny();
    struct {
        uint32_t ids[4];
        size_t count;
        const char *text;
    } cases[] = {
        {{258}, 1, " the"},
        {{266, 261, 267}, 3, "<|im_start|>hello<|im_end|>"},
        /* the added token "café" goes through the byte-level decoder too, as in tokenizers */
        {{263, 270}, 2, "\xc3\xa9" "caf\xef\xbf\xbd"},
        {{228}, 1, "\xef\xbf\xbd"},          /* a lone lead byte: U+FFFD */
        {{228, 184}, 2, "\xef\xbf\xbd"},     /* a cut sequence: one U+FFFD, as tokenizers does */
        {{228, 65}, 2, "\xef\xbf\xbd" "A"},
        {{0}, 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = NULL;
        CHECK_INT(ft_tokenizer_decode(tokenizer, cases[i].ids, cases[i].count, &text), 0);
        CHECK_STR(text, cases[i].text);
        free(text);
    }
    uint32_t unknown[] = {261, 272};
    char *text = NULL;
    CHECK_INT(ft_tokenizer_decode(tokenizer, unknown, 2, &text), -1);
    CHECK_STR(ft_error_message(), "token id 272 is not in the vocabulary (272 tokens)");
    /* generated ids the tokenizer lacks are left out, as Hugging Face's decode does */
    char *known = NULL;
    CHECK_INT(ft_tokenizer_decode(tokenizer, unknown, 1, &known), 0);
    uint32_t generated[] = {272, 261, 151000};
    CHECK_INT(ft_tokenizer_decode_generated(tokenizer, generated, 3, &text), 0);
    CHECK_STR(text, known);
    CHECK(strlen(text) > 0);
    free(text);
    free(known);
    ft_tokenizer_free(tokenizer);
}

TEST(answers_about_the_vocabulary)
{
    ft_tokenizer *tokenizer = NULL;
    CHECK_INT(ft_tokenizer_load(TINY, &tokenizer), 0); /* a folder holding a tokenizer.json */
    CHECK_INT(ft_tokenizer_vocab_size(tokenizer), 272);
    CHECK_INT(ft_tokenizer_token_id(tokenizer, "<|im_end|>"), 267);
    CHECK_INT(ft_tokenizer_token_id(tokenizer, "\xc4\xa0the"), 258); /* "Ġthe", as the vocabulary writes it */
    CHECK_INT(ft_tokenizer_token_id(tokenizer, "caf\xc3\xa9"), 270);
    CHECK_INT(ft_tokenizer_token_id(tokenizer, "nope"), -1);
    CHECK_STR(ft_tokenizer_eos_token(tokenizer), "<|im_end|>");
    ft_tokenizer_free(tokenizer);
}

/* The identity covers what decides the ids: the same tokenizer.json with another
 * eos_token in tokenizer_config.json (or none) is another tokenizer. */
TEST(identity_covers_the_eos_token)
{
    char folder[] = "/tmp/ftpipe-tokenizer-eos-XXXXXX";
    CHECK(mkdtemp(folder) != NULL);
    char *json = ft_path_join(folder, "tokenizer.json");
    char *config = ft_path_join(folder, "tokenizer_config.json");
    CHECK_INT(ft_copy_file(TINY "/tokenizer.json", json), 0);
    const char *eos_texts[] = {"{\"eos_token\": \"<|im_end|>\"}", "{\"eos_token\": \"<|endoftext|>\"}", NULL};
    ft_hash hashes[3];
    for (size_t i = 0; i < 3; i++) {
        if (eos_texts[i])
            CHECK_INT(ft_write_file_atomic(config, eos_texts[i], strlen(eos_texts[i])), 0);
        else
            unlink(config);
        ft_tokenizer *tokenizer = NULL;
        CHECK_INT(ft_tokenizer_load(folder, &tokenizer), 0);
        hashes[i] = tokenizer ? ft_tokenizer_hash(tokenizer) : (ft_hash){0, 0};
        ft_tokenizer_free(tokenizer);
    }
    ft_tokenizer *original = NULL;
    CHECK_INT(ft_tokenizer_load(TINY, &original), 0); /* the same files in another folder: the same identity */
    CHECK(original && ft_hash_equal(ft_tokenizer_hash(original), hashes[0]));
    ft_tokenizer_free(original);
    CHECK(!ft_hash_equal(hashes[0], hashes[1]));
    CHECK(!ft_hash_equal(hashes[0], hashes[2]));
    CHECK(!ft_hash_equal(hashes[1], hashes[2]));
    unlink(json);
    free(json);
    free(config);
    rmdir(folder);
}

TEST(refuses_invalid_utf8)
{
    ft_tokenizer *tokenizer = tiny();
    CHECK_ENCODES(tokenizer, "ok \xff no", "the text is not valid UTF-8 (at byte 3)");
    CHECK_ENCODES(tokenizer, "\xed\xa0\x80", "the text is not valid UTF-8 (at byte 0)"); /* a surrogate */
    ft_tokenizer_free(tokenizer);
}

TEST(long_words)
{
    ft_tokenizer *tokenizer = tiny();
    size_t n = 100000;
    char *text = malloc(n + 1);
    memset(text, ' ', n);
    text[n] = '\0';
    ft_token_ids ids = {0};
    CHECK_INT(ft_tokenizer_encode(tokenizer, text, n, &ids), 0);
    CHECK_INT(ids.count, n);
    memset(text, 'a', 1001);
    text[1001] = '\0';
    ids.count = 0;
    CHECK_INT(ft_tokenizer_encode(tokenizer, text, 1001, &ids), 0);
    CHECK_INT(ids.count, 501);
    CHECK_INT(ids.ids[499], 262);
    CHECK_INT(ids.ids[500], 97);
    ft_token_ids_free(&ids);
    free(text);
    ft_tokenizer_free(tokenizer);
}

typedef struct {
    const ft_tokenizer *tokenizer;
    const char *text;
    char *result;
} thread_job;

static void *encode_in_thread(void *argument)
{
    thread_job *job = argument;
    for (int i = 0; i < 20; i++) {
        free(job->result);
        job->result = encode_text(job->tokenizer, job->text);
    }
    return NULL;
}

TEST(threads_share_a_tokenizer)
{
    ft_tokenizer *tokenizer = tiny();
    const char *text = "<|im_start|>hello the aaa, cafe\xcc\x81 x [WORD] y \xe4\xb8\xad aaaa<|im_end|>";
    char *expected = encode_text(tokenizer, text);
    thread_job jobs[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (thread_job){tokenizer, text, NULL};
        pthread_create(&threads[i], NULL, encode_in_thread, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        CHECK_STR(jobs[i].result, expected);
        free(jobs[i].result);
    }
    free(expected);
    ft_tokenizer_free(tokenizer);
}

/* ---- variants of the tiny tokenizer.json ---- */
/* Sets (or with value NULL removes) the member at a dotted path ("model.merges.0"). */
static void set_path(json_t *root, const char *path, const char *value)
{
    char buffer[256];
    snprintf(buffer, sizeof buffer, "%s", path);
    json_t *node = root;
    char *key = buffer, *dot;
    while ((dot = strchr(key, '.'))) {
        *dot = '\0';
        node = json_is_array(node) ? json_array_get(node, (size_t)atoi(key)) : json_object_get(node, key);
        key = dot + 1;
    }
    json_t *new_value = value ? json_loads(value, JSON_DECODE_ANY, NULL) : NULL;
    if (json_is_array(node) && new_value)
        json_array_set_new(node, (size_t)atoi(key), new_value);
    else if (json_is_array(node))
        json_array_remove(node, (size_t)atoi(key));
    else if (new_value)
        json_object_set_new(node, key, new_value);
    else
        json_object_del(node, key);
}

/* Loads the tiny tokenizer with one change; returns the load's result. */
static int load_variant(const char *path, const char *value, const char *file, ft_tokenizer **out)
{
    json_t *root = json_load_file(TINY "/tokenizer.json", 0, NULL);
    set_path(root, path, value);
    json_dump_file(root, file, 0);
    json_decref(root);
    return ft_tokenizer_load(file, out);
}

TEST(loads_both_merge_formats_and_renumbers_added_tokens)
{
    char *file = ft_path_join(scratch_dir, "tokenizer.json");
    ft_tokenizer *tokenizer = NULL;
    /* merges as "a b" strings, with a #version line that does not count */
    CHECK_INT(load_variant("model.merges", "[\"#version: 0.2\", \"\\u0120 t\", \"h e\", \"\\u0120t he\", \"l l\", "
                                           "\"he ll\", \"hell o\", \"a a\"]", file, &tokenizer), 0);
    CHECK_ENCODES(tokenizer, "hello the aaa", "261 258 32 262 97");
    ft_tokenizer_free(tokenizer);
    /* the file's ids of added tokens give way to the vocabulary size onwards */
    CHECK_INT(load_variant("added_tokens.0.id", "500", file, &tokenizer), 0);
    CHECK_ENCODES(tokenizer, "<|im_start|>", "266");
    ft_tokenizer_free(tokenizer);
    /* an added token that is in the vocabulary keeps its id there */
    CHECK_INT(load_variant("added_tokens.1.content", "\"hello\"", file, &tokenizer), 0);
    CHECK_ENCODES(tokenizer, "hellohello the", "261 261 258");
    CHECK_INT(ft_tokenizer_token_id(tokenizer, "<mask>"), 267);
    ft_tokenizer_free(tokenizer);
    /* Llama 3's ignore_merges: a word in the vocabulary is taken whole */
    CHECK_INT(load_variant("model.ignore_merges", "true", file, &tokenizer), 0);
    CHECK_ENCODES(tokenizer, "hello", "261");
    ft_tokenizer_free(tokenizer);
    free(file);
}

TEST(refuses_malformed_files_by_name)
{
    char *file = ft_path_join(scratch_dir, "tokenizer.json");
    struct {
        const char *path, *value, *message;
    } cases[] = {
        {"model.type", "\"WordPiece\"", "model type 'WordPiece' is not supported; supported: BPE"},
        {"model", NULL, "model is missing or not an object"},
        {"model.vocab", "[]", "model.vocab is missing or not an object"},
        {"model.vocab.a", "\"x\"", "model.vocab[\"a\"] is not a token id (an integer from 0 to 16777215)"},
        {"model.vocab.a", "-1", "model.vocab[\"a\"] is not a token id (an integer from 0 to 16777215)"},
        {"model.merges", NULL, "model.merges is missing or not a list"},
        {"model.merges.0", "\"a b c\"", "model.merges[0] is neither \"A B\" nor [\"A\", \"B\"]"},
        {"model.merges.0", "[\"a\"]", "model.merges[0] is neither \"A B\" nor [\"A\", \"B\"]"},
        {"model.merges.1", "[\"h\", \"zz\"]", "model.merges[1] (\"h\" + \"zz\"): \"zz\" is not in the vocabulary"},
        {"model.merges.1", "[\"h\", \"h\"]", "model.merges[1] (\"h\" + \"h\"): \"hh\" is not in the vocabulary"},
        {"model.dropout", "0.1", "model.dropout is not supported (encoding must be deterministic)"},
        {"model.byte_fallback", "true",
         "model.byte_fallback with a ByteLevel pre-tokenizer is not supported (byte-level BPE has a token for every "
         "byte already)"},
        {"model.continuing_subword_prefix", "\"##\"",
         "model.continuing_subword_prefix is not supported (only BPE where it is empty)"},
        {"model.unk_token", "\"<unk>\"", "model.unk_token '<unk>' is not in the vocabulary"},
        {"normalizer", "{\"type\": \"NFKC\"}",
         "normalizer type 'NFKC' is not supported; supported: NFC, Prepend, Replace (of a String), or a Sequence of "
         "them"},
        {"normalizer", "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, {\"type\": \"Lowercase\"}]}",
         "normalizer type 'Lowercase' is not supported; supported: NFC, Prepend, Replace (of a String), or a Sequence "
         "of them"},
        {"normalizer", "{\"type\": \"Replace\", \"pattern\": {\"Regex\": \" +\"}, \"content\": \" \"}",
         "normalizer Replace is supported with a non-empty \"pattern\": {\"String\": ...} and a \"content\" text only "
         "(not a Regex)"},
        {"pre_tokenizer", NULL, "decoder ByteLevel needs the ByteLevel pre-tokenizer, which pre_tokenizer lacks"},
        {"pre_tokenizer", "{\"type\": \"Whitespace\"}",
         "pre_tokenizer type 'Whitespace' is not supported; supported: ByteLevel (alone, or in a Sequence after "
         "Split), Metaspace (alone), none"},
        {"pre_tokenizer", "{\"type\": \"Metaspace\", \"replacement\": \"_\", \"prepend_scheme\": \"sometimes\"}",
         "pre_tokenizer Metaspace prepend_scheme 'sometimes' is not one of always, first, never"},
        {"pre_tokenizer.pretokenizers.0.behavior", "\"Removed\"",
         "pre_tokenizer Split behavior 'Removed' is not supported; supported: Isolated"},
        {"pre_tokenizer.pretokenizers.0.pattern", "{\"Regex\": \"(a\"}",
         "the pre-tokenizer regex /(a/ does not compile: missing closing parenthesis (near character 2)"},
        {"pre_tokenizer.pretokenizers.1", NULL,
         "pre_tokenizer has no ByteLevel step; supported: byte-level BPE (ByteLevel, alone or after Split) and "
         "SentencePiece-style BPE (Metaspace, or none)"},
        {"pre_tokenizer.pretokenizers.1.add_prefix_space", "true",
         "pre_tokenizer ByteLevel with add_prefix_space true is not supported"},
        {"decoder", "{\"type\": \"WordPiece\"}",
         "decoder type 'WordPiece' is not supported with a ByteLevel pre-tokenizer; supported: ByteLevel"},
        {"decoder", NULL, "decoder type '(none)' is not supported with a ByteLevel pre-tokenizer; supported: ByteLevel"},
        {"added_tokens", "{}", "added_tokens is not a list"},
        {"added_tokens.2.content", "7", "added_tokens[2].content is missing or not text"},
        {"added_tokens.3.id", "\"x\"", "added_tokens[3].id is not a token id (an integer from 0 to 16777215)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ft_tokenizer *tokenizer = NULL;
        int rc = load_variant(cases[i].path, cases[i].value, file, &tokenizer);
        char expected[512];
        snprintf(expected, sizeof expected, "%s: %s", file, cases[i].message);
        CHECK_INT(rc, -1);
        CHECK_STR(ft_error_message(), expected);
        ft_tokenizer_free(tokenizer);
    }
    free(file);
}

/* SentencePiece-style tokenizers (Llama 2, LLaVA-1.5): the expected ids are
 * the `tokenizers` library's for tests/fixtures/tokenizer/sentencepiece_small
 * (make_sentencepiece.py); the corpus-wide parity is test_tokenizer_parity.sh. */
#define SMALL "tests/fixtures/tokenizer/sentencepiece_small/"

static ft_tokenizer *small(const char *name)
{
    ft_tokenizer *tokenizer = NULL;
    char path[256];
    snprintf(path, sizeof path, SMALL "%s.json", name);
    if (ft_tokenizer_load(path, &tokenizer) < 0)
        fprintf(stderr, "  %s\n", ft_error_message());
    return tokenizer;
}

TEST(sentencepiece_falls_back_to_bytes_and_fuses_unknowns)
{
    const char *names[] = {"legacy", "first", "always_split"};
    for (size_t i = 0; i < 3; i++) {
        ft_tokenizer *tokenizer = small(names[i]);
        CHECK(tokenizer != NULL);
        if (!tokenizer)
            continue;
        CHECK_ENCODES(tokenizer, "hello", "15");
        CHECK_ENCODES(tokenizer, "hello hello", "15 15");
        CHECK_ENCODES(tokenizer, "h\xc3\xa9", "11 3 4");                /* é: <0xC3> <0xA9> */
        CHECK_ENCODES(tokenizer, "h\n", "11 5");                        /* \n: <0x0A> */
        CHECK_ENCODES(tokenizer, "h\xe4\xb8\xad\xe4\xb8\xadw", "11 0 16"); /* 中中: no byte tokens, one <unk> */
        CHECK_ENCODES(tokenizer, "hellohello", "15 7 8 12 10");
        CHECK_ENCODES(tokenizer, "", "");
        CHECK_INT(ft_tokenizer_token_id(tokenizer, "\xe2\x96\x81hello"), 15);
        ft_tokenizer_free(tokenizer);
    }
}

TEST(sentencepiece_prepends_as_each_conversion_does)
{
    /* legacy: every stretch between added tokens gets a "▁", even after a space */
    ft_tokenizer *tokenizer = small("legacy");
    CHECK_ENCODES(tokenizer, " hello", "6 15");
    CHECK_ENCODES(tokenizer, "<image>hello", "17 15");
    CHECK_ENCODES(tokenizer, "hello<image> hello", "15 17 6 15");
    CHECK_ENCODES(tokenizer, "  ", "6 6 6");
    /* an unknown waits for the next known token: byte fallbacks meanwhile come first */
    CHECK_ENCODES(tokenizer, "\xe4\xb8\xad\n\xe4\xb8\xadh", "6 5 0 7");
    CHECK_ENCODES(tokenizer, "\xe4\xb8\xad\n", "6 5 0");
    ft_tokenizer_free(tokenizer);
    /* Metaspace "first": only the text's start, and not where a space is already */
    tokenizer = small("first");
    CHECK_ENCODES(tokenizer, " hello", "15");
    CHECK_ENCODES(tokenizer, "<image>hello", "17 7 8 12 10");
    CHECK_ENCODES(tokenizer, "hello<image> hello", "15 17 15");
    CHECK_ENCODES(tokenizer, "  ", "6 6");
    ft_tokenizer_free(tokenizer);
    /* "always", split into words at each "▁" */
    tokenizer = small("always_split");
    CHECK_ENCODES(tokenizer, "<image>hello", "17 15");
    CHECK_ENCODES(tokenizer, "hello<image> hello", "15 17 15");
    ft_tokenizer_free(tokenizer);
}

TEST(sentencepiece_decodes_bytes_and_strips_one_space)
{
    ft_tokenizer *tokenizer = small("legacy");
    struct {
        uint32_t ids[3];
        size_t count;
        const char *text;
    } cases[] = {
        {{15, 15}, 2, "hello hello"},   {{11, 3, 4}, 3, "h\xc3\xa9"},
        {{3}, 1, "\xef\xbf\xbd"},       {{3, 3}, 2, "\xef\xbf\xbd\xef\xbf\xbd"}, /* one U+FFFD a byte */
        {{6, 15}, 2, " hello"},         {{17, 15}, 2, "<image> hello"},
        {{5, 15}, 2, "\n hello"},       {{15, 6}, 2, "hello "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = NULL;
        CHECK_INT(ft_tokenizer_decode(tokenizer, cases[i].ids, cases[i].count, &text), 0);
        CHECK_STR(text, cases[i].text);
        free(text);
    }
    ft_tokenizer_free(tokenizer);
}

TEST(refuses_what_is_not_a_tokenizer)
{
    char *file = ft_path_join(scratch_dir, "broken.json");
    char expected[512];
    ft_tokenizer *tokenizer = NULL;
    ft_write_file_atomic(file, "{\"model\": ", 10);
    CHECK_INT(ft_tokenizer_load(file, &tokenizer), -1);
    snprintf(expected, sizeof expected, "%s:1:10: not valid JSON: unexpected token near end of file", file);
    CHECK_STR(ft_error_message(), expected);
    ft_write_file_atomic(file, "[1, 2]", 6);
    CHECK_INT(ft_tokenizer_load(file, &tokenizer), -1);
    snprintf(expected, sizeof expected, "%s: not a tokenizer (the top level is not a JSON object)", file);
    CHECK_STR(ft_error_message(), expected);
    char *empty = ft_path_join(scratch_dir, "empty");
    ft_mkdir_p(empty);
    CHECK_INT(ft_tokenizer_load(empty, &tokenizer), -1);
    snprintf(expected, sizeof expected, "%s: the folder has no tokenizer.json", empty);
    free(empty);
    CHECK_STR(ft_error_message(), expected);
    CHECK(tokenizer == NULL);
    free(file);
}

int main(void)
{
    if (!mkdtemp(scratch_dir))
        return 1;
    RUN(merges_by_rank);
    RUN(matches_added_tokens_first);
    RUN(normalizes_with_nfc);
    RUN(nfc_by_stretches_equals_whole_nfc);
    RUN(decodes);
    RUN(answers_about_the_vocabulary);
    RUN(identity_covers_the_eos_token);
    RUN(refuses_invalid_utf8);
    RUN(long_words);
    RUN(threads_share_a_tokenizer);
    RUN(loads_both_merge_formats_and_renumbers_added_tokens);
    RUN(refuses_malformed_files_by_name);
    RUN(sentencepiece_falls_back_to_bytes_and_fuses_unknowns);
    RUN(sentencepiece_prepends_as_each_conversion_does);
    RUN(sentencepiece_decodes_bytes_and_strips_one_space);
    RUN(refuses_what_is_not_a_tokenizer);
    ft_remove_tree(scratch_dir);
    return check_done();
}
