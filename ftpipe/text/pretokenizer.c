/* pretokenizer: NFC, the Split regex and the byte-level alphabet (UTF-8 itself
 * is base/utf8). */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "ftpipe/text/pretokenizer.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/utf8.h"

/* ---- byte-level alphabet ----
 * Bytes 33-126, 161-172 and 174-255 stand for themselves; the 68 others are
 * numbered from U+0100 in byte order: 0-32, then 127-160, then 173. */
int ft_byte_level_byte(uint32_t codepoint)
{
    if (codepoint >= 256 && codepoint <= 288)
        return (int)(codepoint - 256);
    if (codepoint >= 289 && codepoint <= 322)
        return (int)(codepoint - 289 + 127);
    if (codepoint == 323)
        return 173;
    if ((codepoint >= 33 && codepoint <= 126) || (codepoint >= 161 && codepoint <= 255 && codepoint != 173))
        return (int)codepoint;
    return -1;
}

bool ft_byte_level_to_raw(const char *text, size_t length, ft_strbuf *raw)
{
    ft_strbuf_reset(raw);
    size_t offset = 0;
    while (offset < length) {
        int32_t codepoint = ft_utf8_next(text, length, &offset);
        int byte = codepoint < 0 ? -1 : ft_byte_level_byte((uint32_t)codepoint);
        if (byte < 0)
            return false;
        ft_strbuf_putc(raw, (char)byte);
    }
    return true;
}

/* ---- NFC ----
 * A code point is "stable" when no string made of stable code points changes
 * under NFC: canonical combining class 0, NFC maps it to itself, and it never
 * composes with a code point before it. One bit per code point, built once. */
#define FT_CODEPOINT_COUNT 0x110000
static uint8_t nfc_unstable_bits[FT_CODEPOINT_COUNT / 8];
static pthread_once_t nfc_bits_once = PTHREAD_ONCE_INIT;

static bool composes_with_previous(uint32_t codepoint, const utf8proc_property_t *property)
{
    /* utf8proc marks second elements of compositions with comb_index >= 0x8000;
     * Hangul vowel and trailing jamo compose by rule instead. */
    if (property->comb_index != UINT16_MAX && property->comb_index >= 0x8000)
        return true;
    return (codepoint >= 0x1161 && codepoint <= 0x1175) || (codepoint >= 0x11A8 && codepoint <= 0x11C2);
}

static bool nfc_maps_to_itself(uint32_t codepoint)
{
    utf8proc_uint8_t encoded[4];
    utf8proc_ssize_t n = utf8proc_encode_char((utf8proc_int32_t)codepoint, encoded);
    utf8proc_uint8_t *normalized = NULL;
    utf8proc_ssize_t m = utf8proc_map(encoded, n, &normalized, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    bool same = m == n && memcmp(normalized, encoded, (size_t)n) == 0;
    free(normalized);
    return same;
}

static void build_nfc_bits(void)
{
    for (uint32_t codepoint = 0x80; codepoint < FT_CODEPOINT_COUNT; codepoint++) {
        const utf8proc_property_t *property = utf8proc_get_property((utf8proc_int32_t)codepoint);
        bool canonical_decomposition = property->decomp_seqindex != UINT16_MAX && property->decomp_type == 0;
        bool unstable = property->combining_class != 0 || composes_with_previous(codepoint, property) ||
                        (canonical_decomposition && !nfc_maps_to_itself(codepoint));
        if (unstable)
            nfc_unstable_bits[codepoint >> 3] |= (uint8_t)(1u << (codepoint & 7));
    }
}

static inline bool is_stable(int32_t codepoint)
{
    return codepoint >= 0 && !(nfc_unstable_bits[codepoint >> 3] & (1u << (codepoint & 7)));
}

static inline int32_t next_codepoint(const char *text, size_t length, size_t *offset)
{
    unsigned char byte = (unsigned char)text[*offset];
    if (byte < 0x80) {
        *offset += 1;
        return byte;
    }
    return ft_utf8_next(text, length, offset);
}

bool ft_nfc_is_unchanged(const char *text, size_t length)
{
    pthread_once(&nfc_bits_once, build_nfc_bits);
    for (size_t offset = 0; offset < length;)
        if (!is_stable(next_codepoint(text, length, &offset)))
            return false;
    return true;
}

static int nfc_append_stretch(const char *text, size_t length, ft_strbuf *out)
{
    utf8proc_uint8_t *normalized = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)length, &normalized,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0)
        return ft_error("NFC normalization failed: %s", utf8proc_errmsg(n));
    ft_strbuf_add(out, normalized, (size_t)n);
    free(normalized);
    return 0;
}

/* NFC never looks across a stable code point: only each stretch from the last
 * stable code point before an unstable one to the next stable one after it
 * goes through utf8proc; the rest is copied. */
int ft_nfc_append(const char *text, size_t length, ft_strbuf *out)
{
    pthread_once(&nfc_bits_once, build_nfc_bits);
    size_t copied = 0, last_stable = 0, offset = 0;
    while (offset < length) {
        size_t at = offset;
        if (is_stable(next_codepoint(text, length, &offset))) {
            last_stable = at;
            continue;
        }
        size_t end = offset;
        while (end < length) {
            size_t here = end;
            if (is_stable(next_codepoint(text, length, &end))) {
                end = here;
                break;
            }
        }
        ft_strbuf_add(out, text + copied, last_stable - copied);
        if (nfc_append_stretch(text + last_stable, end - last_stable, out) < 0)
            return -1;
        copied = last_stable = offset = end;
    }
    ft_strbuf_add(out, text + copied, length - copied);
    return 0;
}

/* ---- words ---- */
struct ft_word_splitter {
    pcre2_general_context *memory;
    pcre2_code *code;
    bool jit;
};

/* PCRE2's bookkeeping allocations follow mem.h: they never fail quietly. */
static void *pcre2_allocate(PCRE2_SIZE bytes, void *unused) { return ft_xmalloc(bytes); }
static void pcre2_release(void *pointer, void *unused) { free(pointer); }

struct ft_word_matcher {
    const ft_word_splitter *splitter;
    pcre2_match_data *match_data;
    pcre2_match_context *context;
    pcre2_jit_stack *jit_stack;
    const char *text;
    size_t length;
    size_t offset;
    bool has_pending; /* a match found after a stretch that was returned first */
    size_t pending_start, pending_end;
};

/* Oniguruma's \s (which tokenizers uses) is Unicode's White_Space; PCRE2's
 * differs at the edges (U+180E), so \s is spelled out. */
#define WHITE_SPACE_SET "\\x{09}-\\x{0D}\\x{85}\\p{Z}"

static char *pattern_for_pcre2(const char *pattern)
{
    ft_strbuf out;
    ft_strbuf_init(&out);
    bool in_class = false;
    for (const char *p = pattern; *p; p++) {
        if (*p == '\\' && p[1]) {
            if (p[1] == 's')
                ft_strbuf_puts(&out, in_class ? WHITE_SPACE_SET : "[" WHITE_SPACE_SET "]");
            else if (p[1] == 'S' && !in_class)
                ft_strbuf_puts(&out, "[^" WHITE_SPACE_SET "]");
            else
                ft_strbuf_add(&out, p, 2);
            p++;
            continue;
        }
        if (!in_class && *p == '[') {
            in_class = true;
            ft_strbuf_putc(&out, '[');
            if (p[1] == '^')
                ft_strbuf_putc(&out, *++p);
            if (p[1] == ']') /* a leading ']' is a literal */
                ft_strbuf_putc(&out, *++p);
            continue;
        }
        if (in_class && p[0] == '[' && p[1] == ':') { /* POSIX class: copy through ":]" */
            const char *close = strstr(p + 2, ":]");
            if (close) {
                ft_strbuf_add(&out, p, (size_t)(close + 2 - p));
                p = close + 1;
                continue;
            }
        }
        if (in_class && *p == ']')
            in_class = false;
        ft_strbuf_putc(&out, *p);
    }
    return ft_strbuf_take(&out);
}

int ft_word_splitter_new(const char *pattern, bool literal, ft_word_splitter **out)
{
    char *translated = literal ? ft_xstrdup(pattern) : pattern_for_pcre2(pattern);
    int error_code;
    PCRE2_SIZE error_offset;
    uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_general_context *memory = pcre2_general_context_create(pcre2_allocate, pcre2_release, NULL);
    pcre2_compile_context *compile_context = pcre2_compile_context_create(memory);
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)translated, PCRE2_ZERO_TERMINATED, options, &error_code,
                                     &error_offset, compile_context);
    pcre2_compile_context_free(compile_context);
    free(translated);
    if (!code) {
        pcre2_general_context_free(memory);
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(error_code, message, sizeof message);
        return ft_error("the pre-tokenizer regex /%s/ does not compile: %s (near character %zu)", pattern,
                        (const char *)message, (size_t)error_offset);
    }
    ft_word_splitter *splitter = ft_xcalloc(1, sizeof *splitter);
    splitter->memory = memory;
    splitter->code = code;
    splitter->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    *out = splitter;
    return 0;
}

void ft_word_splitter_free(ft_word_splitter *splitter)
{
    if (!splitter)
        return;
    pcre2_code_free(splitter->code);
    pcre2_general_context_free(splitter->memory);
    free(splitter);
}

ft_word_matcher *ft_word_matcher_new(const ft_word_splitter *splitter)
{
    ft_word_matcher *matcher = ft_xcalloc(1, sizeof *matcher);
    matcher->splitter = splitter;
    matcher->match_data = pcre2_match_data_create_from_pattern(splitter->code, splitter->memory);
    matcher->context = pcre2_match_context_create(splitter->memory);
    if (splitter->jit) {
        /* Long runs of white space backtrack deeply; 8 MiB covers megabytes of them. */
        matcher->jit_stack = pcre2_jit_stack_create(64 << 10, 8 << 20, splitter->memory);
        pcre2_jit_stack_assign(matcher->context, NULL, matcher->jit_stack);
    }
    return matcher;
}

void ft_word_matcher_free(ft_word_matcher *matcher)
{
    if (!matcher)
        return;
    pcre2_match_data_free(matcher->match_data);
    pcre2_match_context_free(matcher->context);
    pcre2_jit_stack_free(matcher->jit_stack);
    free(matcher);
}

void ft_word_matcher_start(ft_word_matcher *matcher, const char *text, size_t length)
{
    matcher->text = text;
    matcher->length = length;
    matcher->offset = 0;
    matcher->has_pending = false;
}

static int find_match(ft_word_matcher *matcher, size_t *start, size_t *end)
{
    const ft_word_splitter *splitter = matcher->splitter;
    PCRE2_SPTR subject = (PCRE2_SPTR)matcher->text;
    int rc = PCRE2_ERROR_JIT_STACKLIMIT;
    /* Empty matches split nothing: PCRE2_NOTEMPTY looks for the next real one. */
    if (splitter->jit)
        rc = pcre2_jit_match(splitter->code, subject, matcher->length, matcher->offset, PCRE2_NOTEMPTY,
                             matcher->match_data, matcher->context);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* no JIT here, or a pathological word: interpret */
        rc = pcre2_match(splitter->code, subject, matcher->length, matcher->offset,
                         PCRE2_NOTEMPTY | PCRE2_NO_UTF_CHECK, matcher->match_data, matcher->context);
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    if (rc < 0) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(rc, message, sizeof message);
        return ft_error("the pre-tokenizer regex failed at byte %zu: %s", matcher->offset, (const char *)message);
    }
    PCRE2_SIZE *ovector = pcre2_get_ovector_pointer(matcher->match_data);
    *start = ovector[0];
    *end = ovector[1];
    return 1;
}

int ft_word_matcher_next(ft_word_matcher *matcher, size_t *start, size_t *end)
{
    if (matcher->has_pending) {
        matcher->has_pending = false;
        *start = matcher->pending_start;
        *end = matcher->offset = matcher->pending_end;
        return 1;
    }
    if (matcher->offset >= matcher->length)
        return 0;
    size_t match_start, match_end;
    int found = find_match(matcher, &match_start, &match_end);
    if (found < 0)
        return -1;
    if (found == 0) { /* the rest is one stretch */
        *start = matcher->offset;
        *end = matcher->offset = matcher->length;
        return 1;
    }
    if (match_start > matcher->offset) {
        matcher->has_pending = true;
        matcher->pending_start = match_start;
        matcher->pending_end = match_end;
        *start = matcher->offset;
        *end = matcher->offset = match_start;
        return 1;
    }
    *start = match_start;
    *end = matcher->offset = match_end;
    return 1;
}
