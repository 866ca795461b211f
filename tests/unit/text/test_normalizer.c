/* Normalizer: the steps in order, the text itself returned when nothing
 * changes, and the refusals (the tokenizer's tests cover it inside encoding). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/text/normalizer.h"

static ft_normalizer *parse(const char *json)
{
    json_t *value = json_loads(json, 0, NULL);
    ft_normalizer *normalizer = NULL;
    if (ft_normalizer_parse("tokenizer.json", value, &normalizer) < 0)
        normalizer = NULL;
    json_decref(value);
    return normalizer;
}

/* The normalized text (caller frees); sets *same when the input came back as is. */
static char *apply(const ft_normalizer *normalizer, const char *text, int *same)
{
    ft_strbuf out, scratch;
    ft_strbuf_init(&out);
    ft_strbuf_init(&scratch);
    const char *result = NULL;
    size_t length = 0;
    CHECK_INT(ft_normalizer_apply(normalizer, text, strlen(text), &out, &scratch, &result, &length), 0);
    *same = result == text;
    char *copy = strndup(result ? result : "", length);
    ft_strbuf_free(&out);
    ft_strbuf_free(&scratch);
    return copy;
}

#define CHECK_NORMALIZES(normalizer, text, expected, expect_same) \
    do {                                                          \
        int same;                                                 \
        char *got = apply(normalizer, text, &same);               \
        CHECK_STR(got, expected);                                 \
        CHECK_INT(same, expect_same);                             \
        free(got);                                                \
    } while (0)

TEST(applies_prepend_then_replace_as_llama_2_writes_them)
{
    ft_normalizer *normalizer =
        parse("{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"}, "
              "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]}");
    CHECK(normalizer && ft_normalizer_is_active(normalizer));
    CHECK_NORMALIZES(normalizer, "a b", "\xe2\x96\x81" "a" "\xe2\x96\x81" "b", 0);
    CHECK_NORMALIZES(normalizer, " ", "\xe2\x96\x81\xe2\x96\x81", 0);
    CHECK_NORMALIZES(normalizer, "", "", 1); /* Prepend leaves empty text alone */
    ft_normalizer_free(normalizer);
}

TEST(nfc_and_none)
{
    ft_normalizer *normalizer = parse("{\"type\": \"NFC\"}");
    CHECK_NORMALIZES(normalizer, "e\xcc\x81", "\xc3\xa9", 0); /* e + combining acute -> é */
    CHECK_NORMALIZES(normalizer, "plain", "plain", 1);
    ft_normalizer_free(normalizer);
    normalizer = parse("null");
    CHECK(normalizer && !ft_normalizer_is_active(normalizer));
    CHECK_NORMALIZES(normalizer, "a b", "a b", 1);
    ft_normalizer_free(normalizer);
    /* three steps: the result moves between the two buffers and ends in out */
    normalizer = parse("{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Replace\", \"pattern\": {\"String\": "
                       "\"a\"}, \"content\": \"bb\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \"b\"}, "
                       "\"content\": \"c\"}, {\"type\": \"Prepend\", \"prepend\": \">\"}]}");
    CHECK_NORMALIZES(normalizer, "xay", ">xccy", 0);
    ft_normalizer_free(normalizer);
}

TEST(refuses_what_it_does_not_do)
{
    CHECK(parse("{\"type\": \"Lowercase\"}") == NULL);
    CHECK_STR(ft_error_message(), "tokenizer.json: normalizer type 'Lowercase' is not supported; supported: NFC, "
                                  "Prepend, Replace (of a String), or a Sequence of them");
    CHECK(parse("{\"type\": \"Prepend\"}") == NULL);
    CHECK_STR(ft_error_message(), "tokenizer.json: normalizer Prepend has no \"prepend\" text");
}

int main(void)
{
    RUN(applies_prepend_then_replace_as_llama_2_writes_them);
    RUN(nfc_and_none);
    RUN(refuses_what_it_does_not_do);
    return check_done();
}
