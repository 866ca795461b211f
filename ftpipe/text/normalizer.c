/* normalizer: the steps of tokenizer.json's "normalizer", applied in order. */
#include "ftpipe/text/normalizer.h"

#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/text/pretokenizer.h"
#include "ftpipe/text/tokenizer_json.h"

typedef enum { STEP_NFC, STEP_PREPEND, STEP_REPLACE } step_kind;

typedef struct {
    step_kind kind;
    char *text;        /* Prepend's text; Replace's pattern */
    char *replacement; /* Replace's content */
} step;

struct ft_normalizer {
    step *steps;
    size_t n_steps, capacity;
};

static void add_step(ft_normalizer *normalizer, step_kind kind, const char *text, const char *replacement)
{
    ft_grow((void **)&normalizer->steps, &normalizer->capacity, normalizer->n_steps + 1, sizeof *normalizer->steps);
    normalizer->steps[normalizer->n_steps++] =
        (step){kind, text ? ft_xstrdup(text) : NULL, replacement ? ft_xstrdup(replacement) : NULL};
}

static int parse_step(ft_normalizer *normalizer, const char *path, const json_t *value)
{
    const char *type = ft_tokenizer_json_type(value);
    if (strcmp(type, "NFC") == 0) {
        add_step(normalizer, STEP_NFC, NULL, NULL);
    } else if (strcmp(type, "Sequence") == 0) {
        size_t i;
        const json_t *item;
        json_array_foreach(json_object_get(value, "normalizers"), i, item) if (parse_step(normalizer, path, item) < 0)
            return -1;
    } else if (strcmp(type, "Prepend") == 0) {
        const char *text = json_string_value(json_object_get(value, "prepend"));
        if (!text)
            return ft_error("%s: normalizer Prepend has no \"prepend\" text", path);
        add_step(normalizer, STEP_PREPEND, text, NULL);
    } else if (strcmp(type, "Replace") == 0) {
        const char *pattern = json_string_value(json_object_get(json_object_get(value, "pattern"), "String"));
        const char *content = json_string_value(json_object_get(value, "content"));
        if (!pattern || !*pattern || !content)
            return ft_error("%s: normalizer Replace is supported with a non-empty \"pattern\": {\"String\": ...} "
                            "and a \"content\" text only (not a Regex)",
                            path);
        add_step(normalizer, STEP_REPLACE, pattern, content);
    } else {
        return ft_error("%s: normalizer type '%s' is not supported; supported: NFC, Prepend, Replace (of a "
                        "String), or a Sequence of them",
                        path, type);
    }
    return 0;
}

int ft_normalizer_parse(const char *path, const json_t *value, ft_normalizer **out)
{
    ft_normalizer *normalizer = ft_xcalloc(1, sizeof *normalizer);
    if (value && !json_is_null(value) && parse_step(normalizer, path, value) < 0) {
        ft_normalizer_free(normalizer);
        return -1;
    }
    *out = normalizer;
    return 0;
}

void ft_normalizer_free(ft_normalizer *normalizer)
{
    if (!normalizer)
        return;
    for (size_t i = 0; i < normalizer->n_steps; i++) {
        free(normalizer->steps[i].text);
        free(normalizer->steps[i].replacement);
    }
    free(normalizer->steps);
    free(normalizer);
}

bool ft_normalizer_is_active(const ft_normalizer *normalizer) { return normalizer->n_steps > 0; }

static void replace_all(const char *text, size_t length, const char *pattern, const char *replacement,
                        ft_strbuf *out)
{
    size_t pattern_length = strlen(pattern), replacement_length = strlen(replacement);
    ft_strbuf_reset(out);
    size_t i = 0;
    while (i < length) {
        const char *found = pattern_length <= length - i ? memmem(text + i, length - i, pattern, pattern_length) : NULL;
        if (!found)
            break;
        ft_strbuf_add(out, text + i, (size_t)(found - (text + i)));
        ft_strbuf_add(out, replacement, replacement_length);
        i = (size_t)(found - text) + pattern_length;
    }
    ft_strbuf_add(out, text + i, length - i);
}

int ft_normalizer_apply(const ft_normalizer *normalizer, const char *text, size_t length, ft_strbuf *out,
                        ft_strbuf *scratch, const char **result, size_t *result_length)
{
    /* each step reads the last result and writes the other buffer */
    ft_strbuf *buffers[2] = {out, scratch};
    int next = 0;
    for (size_t s = 0; s < normalizer->n_steps; s++) {
        const step *st = &normalizer->steps[s];
        ft_strbuf *target = buffers[next];
        if (st->kind == STEP_NFC) {
            if (ft_nfc_is_unchanged(text, length))
                continue;
            ft_strbuf_reset(target);
            if (ft_nfc_append(text, length, target) < 0)
                return -1;
        } else if (st->kind == STEP_PREPEND) {
            if (length == 0)
                continue;
            ft_strbuf_reset(target);
            ft_strbuf_puts(target, st->text);
            ft_strbuf_add(target, text, length);
        } else {
            if (!memmem(text, length, st->text, strlen(st->text)))
                continue;
            replace_all(text, length, st->text, st->replacement, target);
        }
        text = target->data;
        length = target->length;
        next ^= 1;
    }
    if (next == 1) { /* the result is in out already */
        *result = out->data;
        *result_length = out->length;
    } else if (text != out->data && text != scratch->data) {
        *result = text; /* unchanged */
        *result_length = length;
    } else { /* in scratch: move it to out */
        ft_strbuf_reset(out);
        ft_strbuf_add(out, text, length);
        *result = out->data;
        *result_length = out->length;
    }
    return 0;
}
