/* Token decoder: byte-level tokens to raw bytes, SentencePiece-style "▁" and
 * "<0xXX>" tokens, Strip and Metaspace's first-token strip, ids never set, and
 * the refusals. Decoding through whole tokenizers is test_tokenizer.c's. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/text/token_decoder.h"

static ft_token_decoder *parse(const char *json, bool byte_level)
{
    json_t *value = json_loads(json, JSON_DECODE_ANY, NULL);
    ft_token_decoder *decoder = NULL;
    if (ft_token_decoder_parse("tokenizer.json", value, byte_level, &decoder) < 0)
        decoder = NULL;
    json_decref(value);
    return decoder;
}

static void set(ft_token_decoder *decoder, uint32_t id, const char *token)
{
    ft_token_decoder_set(decoder, id, token, strlen(token));
}

#define CHECK_DECODES(decoder, expected, ...)                                               \
    do {                                                                                    \
        uint32_t ids[] = {__VA_ARGS__};                                                     \
        char *text = NULL;                                                                  \
        CHECK_INT(ft_token_decoder_decode(decoder, ids, sizeof ids / sizeof ids[0], false, &text), 0); \
        CHECK_STR(text, expected);                                                          \
        free(text);                                                                         \
    } while (0)

#define LLAMA2 "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u2581\"}, " \
               "\"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", "     \
               "\"content\": \" \", \"start\": 1, \"stop\": 0}]}"

TEST(byte_level_tokens_are_raw_bytes)
{
    ft_token_decoder *decoder = parse("{\"type\": \"ByteLevel\"}", true);
    ft_token_decoder_reserve(decoder, 3);
    set(decoder, 0, "\xc4\xa0hi"); /* Ġhi: " hi" */
    set(decoder, 1, "<|im_end|>"); /* outside the alphabet: its own text */
    CHECK_INT(ft_token_decoder_size(decoder), 3);
    CHECK_DECODES(decoder, " hi<|im_end|>", 0, 1);
    char *text = NULL;
    uint32_t never_set[] = {0, 2};
    CHECK_INT(ft_token_decoder_decode(decoder, never_set, 2, false, &text), -1);
    CHECK_STR(ft_error_message(), "token id 2 is not in the vocabulary (3 tokens)");
    CHECK_INT(ft_token_decoder_decode(decoder, never_set, 2, true, &text), 0);
    CHECK_STR(text, " hi");
    free(text);
    ft_token_decoder_free(decoder);
}

TEST(sentencepiece_tokens_spaces_and_bytes)
{
    ft_token_decoder *decoder = parse(LLAMA2, false);
    ft_token_decoder_reserve(decoder, 5);
    set(decoder, 0, "\xe2\x96\x81hello");
    set(decoder, 1, "<0xC3>");
    set(decoder, 2, "<0xA9>");
    set(decoder, 3, "\xe2\x96\x81");
    set(decoder, 4, "<0xZZ>"); /* not a byte: its own text */
    CHECK_DECODES(decoder, "hello\xc3\xa9 hello", 0, 1, 2, 0);
    CHECK_DECODES(decoder, "\xef\xbf\xbd" "<0xZZ>", 1, 4); /* a lone lead byte: U+FFFD */
    CHECK_DECODES(decoder, " hello ", 3, 0, 3);           /* one space stripped, the end kept */
    ft_token_decoder_free(decoder);
}

TEST(metaspace_strips_only_the_first_token)
{
    ft_token_decoder *decoder =
        parse("{\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"first\"}", false);
    ft_token_decoder_reserve(decoder, 2);
    set(decoder, 0, "a");
    set(decoder, 1, "\xe2\x96\x81" "b");
    CHECK_DECODES(decoder, "b b", 1, 1);
    CHECK_DECODES(decoder, "a b", 0, 1);
    ft_token_decoder_free(decoder);
}

TEST(refuses_by_name)
{
    struct {
        const char *json;
        bool byte_level;
        const char *message;
    } cases[] = {
        {"{\"type\": \"WordPiece\"}", true,
         "tokenizer.json: decoder type 'WordPiece' is not supported with a ByteLevel pre-tokenizer; supported: "
         "ByteLevel"},
        {"{\"type\": \"ByteLevel\"}", false,
         "tokenizer.json: decoder ByteLevel needs the ByteLevel pre-tokenizer, which pre_tokenizer lacks"},
        {"null", false,
         "tokenizer.json: decoder is missing; SentencePiece-style BPE needs Replace (or Metaspace), ByteFallback, "
         "Fuse and Strip"},
        {"{\"type\": \"CTC\"}", false,
         "tokenizer.json: decoder step 'CTC' is not supported; supported: Replace, Metaspace, ByteFallback, Fuse, "
         "Strip"},
        {"{\"type\": \"Strip\", \"content\": \"x\", \"start\": 1, \"stop\": 0}", false,
         "tokenizer.json: decoder Strip is supported with content \" \" and start and stop from 0 to 64"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK(parse(cases[i].json, cases[i].byte_level) == NULL);
        CHECK_STR(ft_error_message(), cases[i].message);
    }
}

int main(void)
{
    RUN(byte_level_tokens_are_raw_bytes);
    RUN(sentencepiece_tokens_spaces_and_bytes);
    RUN(metaspace_strips_only_the_first_token);
    RUN(refuses_by_name);
    return check_done();
}
