/* token_decoder: each id's bytes worked out at loading, then joined. */
#include "ftpipe/text/token_decoder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/base/utf8.h"
#include "ftpipe/text/pretokenizer.h"
#include "ftpipe/text/tokenizer_json.h"

#define ABSENT UINT32_MAX

struct ft_token_decoder {
    bool byte_level;
    /* SentencePiece-style */
    char *replace, *replacement; /* Replace (or Metaspace): this text by that */
    bool byte_fallback;          /* "<0xXX>" decodes to the byte */
    int strip_start, strip_stop; /* Strip: spaces removed at the text's start and end */
    bool strip_first_token;      /* Metaspace: only from the first token */

    /* what each id decodes to (absent ids: offset ABSENT) */
    uint8_t *bytes;
    size_t n_bytes, capacity;
    uint32_t *offset, *length;
    uint8_t *is_byte; /* 1 where the id is a byte-fallback token (its one byte) */
    size_t size;
    ft_strbuf scratch;
};

/* One step of a SentencePiece-style decoder. */
static int parse_step(ft_token_decoder *decoder, const char *path, const json_t *step)
{
    const char *type = ft_tokenizer_json_type(step);
    if (strcmp(type, "Replace") == 0 || strcmp(type, "Metaspace") == 0) {
        bool metaspace = type[0] == 'M';
        const char *from = json_string_value(metaspace ? json_object_get(step, "replacement")
                                                       : json_object_get(json_object_get(step, "pattern"), "String"));
        const char *to = metaspace ? " " : json_string_value(json_object_get(step, "content"));
        if (!from || !*from || !to || decoder->replace)
            return ft_error("%s: decoder %s is supported once, replacing a non-empty String by a text", path, type);
        decoder->replace = ft_xstrdup(from);
        decoder->replacement = ft_xstrdup(to);
        const char *scheme = json_string_value(json_object_get(step, "prepend_scheme"));
        if (metaspace && !(scheme ? strcmp(scheme, "never") == 0 : !ft_tokenizer_json_flag(step, "add_prefix_space", true))) {
            decoder->strip_start = 1; /* the space the pre-tokenizer put in front */
            decoder->strip_first_token = true;
        }
    } else if (strcmp(type, "ByteFallback") == 0) {
        decoder->byte_fallback = true;
    } else if (strcmp(type, "Fuse") == 0) {
        /* tokens are joined anyway */
    } else if (strcmp(type, "Strip") == 0) {
        const char *content = json_string_value(json_object_get(step, "content"));
        json_int_t start = json_integer_value(json_object_get(step, "start"));
        json_int_t stop = json_integer_value(json_object_get(step, "stop"));
        if (!content || strcmp(content, " ") != 0 || start < 0 || stop < 0 || start > 64 || stop > 64)
            return ft_error("%s: decoder Strip is supported with content \" \" and start and stop from 0 to 64",
                            path);
        decoder->strip_start = (int)start;
        decoder->strip_stop = (int)stop;
    } else {
        return ft_error("%s: decoder step '%s' is not supported; supported: Replace, Metaspace, ByteFallback, Fuse, "
                        "Strip",
                        path, type);
    }
    return 0;
}

static int parse(ft_token_decoder *decoder, const char *path, const json_t *value)
{
    const char *type = value && !json_is_null(value) ? ft_tokenizer_json_type(value) : "(none)";
    if (decoder->byte_level) {
        if (strcmp(type, "ByteLevel") != 0)
            return ft_error("%s: decoder type '%s' is not supported with a ByteLevel pre-tokenizer; supported: "
                            "ByteLevel",
                            path, type);
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0)
        return ft_error("%s: decoder ByteLevel needs the ByteLevel pre-tokenizer, which pre_tokenizer lacks", path);
    if (strcmp(type, "(none)") == 0)
        return ft_error("%s: decoder is missing; SentencePiece-style BPE needs Replace (or Metaspace), ByteFallback, "
                        "Fuse and Strip",
                        path);
    if (strcmp(type, "Sequence") != 0)
        return parse_step(decoder, path, value);
    size_t i;
    const json_t *step;
    json_array_foreach(json_object_get(value, "decoders"), i, step) if (parse_step(decoder, path, step) < 0) return -1;
    return 0;
}

int ft_token_decoder_parse(const char *path, const json_t *value, bool byte_level, ft_token_decoder **out)
{
    ft_token_decoder *decoder = ft_xcalloc(1, sizeof *decoder);
    decoder->byte_level = byte_level;
    ft_strbuf_init(&decoder->scratch);
    if (parse(decoder, path, value) < 0) {
        ft_token_decoder_free(decoder);
        return -1;
    }
    *out = decoder;
    return 0;
}

void ft_token_decoder_free(ft_token_decoder *decoder)
{
    if (!decoder)
        return;
    free(decoder->replace);
    free(decoder->replacement);
    free(decoder->bytes);
    free(decoder->offset);
    free(decoder->length);
    free(decoder->is_byte);
    ft_strbuf_free(&decoder->scratch);
    free(decoder);
}

void ft_token_decoder_reserve(ft_token_decoder *decoder, size_t size)
{
    if (size <= decoder->size)
        return;
    decoder->offset = ft_xrealloc(decoder->offset, size * sizeof *decoder->offset);
    decoder->length = ft_xrealloc(decoder->length, size * sizeof *decoder->length);
    decoder->is_byte = ft_xrealloc(decoder->is_byte, size);
    for (size_t i = decoder->size; i < size; i++) {
        decoder->offset[i] = ABSENT;
        decoder->is_byte[i] = 0;
    }
    decoder->size = size;
}

size_t ft_token_decoder_size(const ft_token_decoder *decoder) { return decoder->size; }

/* The byte of a "<0xXX>" token, or -1. */
static int fallback_byte(const char *text, size_t length)
{
    unsigned value;
    char end;
    if (length != 6 || strncmp(text, "<0x", 3) != 0 || sscanf(text + 3, "%2X%c", &value, &end) != 2 || end != '>')
        return -1;
    return (int)value;
}

static void replace_all(const ft_token_decoder *decoder, const char *text, size_t length, ft_strbuf *out)
{
    size_t from = strlen(decoder->replace);
    ft_strbuf_reset(out);
    for (size_t i = 0; i < length;) {
        if (length - i >= from && memcmp(text + i, decoder->replace, from) == 0) {
            ft_strbuf_puts(out, decoder->replacement);
            i += from;
        } else {
            ft_strbuf_putc(out, text[i++]);
        }
    }
}

/* As the decoder does it token by token: ByteLevel's raw bytes for a token
 * wholly in its alphabet; the byte of a "<0xXX>" token, the replacement of "▁"
 * in the others; else the token's own text. */
void ft_token_decoder_set(ft_token_decoder *decoder, uint32_t id, const char *token, size_t length)
{
    ft_strbuf *scratch = &decoder->scratch;
    bool converted = false;
    int byte = -1;
    decoder->is_byte[id] = 0;
    if (decoder->byte_level) {
        converted = ft_byte_level_to_raw(token, length, scratch);
    } else if (decoder->byte_fallback && (byte = fallback_byte(token, length)) >= 0) {
        ft_strbuf_reset(scratch);
        ft_strbuf_putc(scratch, (char)byte);
        decoder->is_byte[id] = 1;
        converted = true;
    } else if (decoder->replace) {
        replace_all(decoder, token, length, scratch);
        converted = true;
    }
    const char *bytes = converted ? scratch->data : token;
    size_t n = converted ? scratch->length : length;
    if (n > 0) { /* an empty token decodes to nothing; the buffer may not exist yet */
        ft_grow((void **)&decoder->bytes, &decoder->capacity, decoder->n_bytes + n, 1);
        memcpy(decoder->bytes + decoder->n_bytes, bytes, n);
    }
    decoder->offset[id] = (uint32_t)decoder->n_bytes;
    decoder->length[id] = (uint32_t)n;
    decoder->n_bytes += n;
}

/* ByteFallback: a run of byte tokens that is not valid UTF-8 decodes to one
 * U+FFFD per byte. */
static void add_byte_run(ft_strbuf *out, const char *run, size_t length)
{
    if (ft_utf8_invalid_offset(run, length) == length) {
        ft_strbuf_add(out, run, length);
        return;
    }
    for (size_t i = 0; i < length; i++)
        ft_strbuf_puts(out, "\xEF\xBF\xBD");
}

/* Strip: up to strip_start spaces off the front of text from `from` on,
 * strip_stop off the end. */
static void strip_spaces(const ft_token_decoder *decoder, ft_strbuf *text, size_t from)
{
    size_t front = 0, back = 0;
    while (front < (size_t)decoder->strip_start && from + front < text->length && text->data[from + front] == ' ')
        front++;
    while (back < (size_t)decoder->strip_stop && from + front + back < text->length &&
           text->data[text->length - 1 - back] == ' ')
        back++;
    if (front + back == 0)
        return;
    memmove(text->data + from, text->data + from + front, text->length - from - front - back);
    text->length -= front + back;
    text->data[text->length] = '\0';
}

/* Bytes that are not UTF-8 as U+FFFD, a replacement per invalid sequence. */
static char *lossless_text(ft_strbuf *bytes)
{
    if (ft_utf8_invalid_offset(bytes->data, bytes->length) == bytes->length)
        return ft_strbuf_take(bytes);
    ft_strbuf lossless;
    ft_strbuf_init(&lossless);
    for (size_t offset = 0; offset < bytes->length;) {
        size_t bad = ft_utf8_invalid_length(bytes->data + offset, bytes->length - offset);
        if (bad) {
            ft_strbuf_puts(&lossless, "\xEF\xBF\xBD"); /* U+FFFD */
            offset += bad;
        } else {
            size_t start = offset;
            ft_utf8_next(bytes->data, bytes->length, &offset);
            ft_strbuf_add(&lossless, bytes->data + start, offset - start);
        }
    }
    ft_strbuf_free(bytes);
    return ft_strbuf_take(&lossless);
}

int ft_token_decoder_decode(const ft_token_decoder *decoder, const uint32_t *ids, size_t count, bool skip_unknown,
                            char **text)
{
    ft_strbuf bytes, run;
    ft_strbuf_init(&bytes);
    ft_strbuf_init(&run);
    bool first = true;
    for (size_t i = 0; i < count; i++) {
        uint32_t id = ids[i];
        if (id >= decoder->size || decoder->offset[id] == ABSENT) {
            if (skip_unknown)
                continue;
            ft_strbuf_free(&bytes);
            ft_strbuf_free(&run);
            return ft_error("token id %u is not in the vocabulary (%zu tokens)", id, decoder->size);
        }
        const char *token = (const char *)decoder->bytes + decoder->offset[id];
        if (decoder->is_byte[id]) {
            ft_strbuf_add(&run, token, 1);
            continue;
        }
        add_byte_run(&bytes, run.data, run.length);
        ft_strbuf_reset(&run);
        size_t start = bytes.length;
        ft_strbuf_add(&bytes, token, decoder->length[id]);
        if (first && decoder->strip_first_token)
            strip_spaces(decoder, &bytes, start);
        first = false;
    }
    add_byte_run(&bytes, run.data, run.length);
    ft_strbuf_free(&run);
    if (!decoder->strip_first_token && (decoder->strip_start || decoder->strip_stop))
        strip_spaces(decoder, &bytes, 0);
    *text = lossless_text(&bytes);
    return 0;
}
