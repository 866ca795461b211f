/* pipeline_lexer: Ftpipe text to logical lines, each byte keeping its file:line:column. */
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/mem.h"
#include "pipeline_internal.h"

static void reserve(ft_located_text *text, size_t extra)
{
    size_t needed = text->length + extra + 1;
    if (needed <= text->capacity)
        return;
    size_t grown = text->capacity ? text->capacity * 2 : 64;
    while (grown < needed)
        grown *= 2;
    text->chars = ft_xrealloc(text->chars, grown);
    text->where = ft_xrealloc(text->where, grown * sizeof *text->where);
    text->capacity = grown;
}

static ft_location next_column(ft_location where)
{
    where.column++;
    return where;
}

void ft_located_init(ft_located_text *text)
{
    text->chars = NULL;
    text->where = NULL;
    text->length = 0;
    text->capacity = 0;
    reserve(text, 0);
    ft_located_reset(text, (ft_location){0});
}

void ft_located_free(ft_located_text *text)
{
    free(text->chars);
    free(text->where);
    text->chars = NULL;
    text->where = NULL;
    text->length = text->capacity = 0;
}

void ft_located_reset(ft_located_text *text, ft_location start)
{
    text->length = 0;
    text->chars[0] = '\0';
    text->where[0] = start;
}

void ft_located_push(ft_located_text *text, char c, ft_location where)
{
    reserve(text, 1);
    text->chars[text->length] = c;
    text->where[text->length] = where;
    text->length++;
    text->chars[text->length] = '\0';
    text->where[text->length] = next_column(where);
}

void ft_located_fill(ft_located_text *text, const char *chars, size_t n, ft_location where)
{
    reserve(text, n);
    memcpy(text->chars + text->length, chars, n);
    for (size_t i = 0; i < n; i++)
        text->where[text->length + i] = where;
    text->length += n;
    text->chars[text->length] = '\0';
    text->where[text->length] = next_column(where);
}

void ft_located_truncate(ft_located_text *text, size_t length)
{
    if (length >= text->length)
        return;
    text->length = length;
    text->chars[length] = '\0';
    if (length > 0)
        text->where[length] = next_column(text->where[length - 1]);
}

void ft_located_append(ft_located_text *text, const ft_located_text *source, size_t from, size_t to)
{
    if (to <= from)
        return;
    size_t n = to - from;
    reserve(text, n);
    memcpy(text->chars + text->length, source->chars + from, n);
    memcpy(text->where + text->length, source->where + from, n * sizeof *text->where);
    text->length += n;
    text->chars[text->length] = '\0';
    text->where[text->length] = next_column(text->where[text->length - 1]);
}

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

void ft_lexer_init(ft_lexer *lexer, const char *file, const char *text)
{
    lexer->file = file;
    lexer->text = text;
    lexer->offset = 0;
    lexer->line = 1;
    ft_located_init(&lexer->raw);
}

void ft_lexer_free(ft_lexer *lexer) { ft_located_free(&lexer->raw); }

/* Appends one physical line (without its newline, a CR before it, and, when
 * `continuing`, its leading blanks) to lexer->raw. Returns whether it ended in a
 * backslash, which is dropped; *backslash receives its position. */
static bool read_physical_line(ft_lexer *lexer, bool continuing, ft_location *backslash)
{
    const char *text = lexer->text;
    size_t start = lexer->offset;
    size_t end = start;
    while (text[end] && text[end] != '\n')
        end++;
    lexer->offset = text[end] ? end + 1 : end;
    size_t stop = end;
    if (stop > start && text[stop - 1] == '\r')
        stop--;
    bool continued = stop > start && text[stop - 1] == '\\';
    if (continued) {
        stop--;
        *backslash = (ft_location){lexer->file, lexer->line, (int)(stop - start) + 1};
    }
    size_t first = start;
    while (continuing && first < stop && is_blank(text[first]))
        first++;
    ft_located_text *raw = &lexer->raw;
    reserve(raw, stop - first);
    for (size_t i = first; i < stop; i++) {
        raw->chars[raw->length] = text[i];
        raw->where[raw->length++] = (ft_location){lexer->file, lexer->line, (int)(i - start) + 1};
    }
    raw->chars[raw->length] = '\0';
    raw->where[raw->length] = (ft_location){lexer->file, lexer->line, (int)(stop - start) + 1};
    lexer->line++;
    return continued;
}

bool ft_lexer_next(ft_lexer *lexer, ft_located_text *line, bool *indented)
{
    if (!lexer->text[lexer->offset])
        return false;
    *indented = is_blank(lexer->text[lexer->offset]);
    ft_location start = {lexer->file, lexer->line, 1};
    ft_located_reset(&lexer->raw, start);
    ft_location backslash;
    bool continuing = false;
    /* make's rule: a backslash-newline and the blanks around it become one space. */
    while (read_physical_line(lexer, continuing, &backslash) && lexer->text[lexer->offset]) {
        size_t kept = lexer->raw.length;
        while (kept > 0 && is_blank(lexer->raw.chars[kept - 1]))
            kept--;
        ft_located_truncate(&lexer->raw, kept);
        ft_located_push(&lexer->raw, ' ', backslash);
        continuing = true;
    }

    const ft_located_text *raw = &lexer->raw;
    ft_located_reset(line, start);
    /* Runs without `#` are copied whole. */
    size_t copied = 0;
    for (size_t i = 0; i < raw->length; i++) {
        char c = raw->chars[i];
        if (c != '#')
            continue;
        bool escaped = i > 0 && raw->chars[i - 1] == '\\';
        /* A `#` glued to a word (url#fragment) is text, not a comment. */
        bool comment = !escaped && (i == 0 || is_blank(raw->chars[i - 1]));
        if (!escaped && !comment)
            continue;
        ft_located_append(line, raw, copied, escaped ? i - 1 : i);
        if (comment) {
            copied = raw->length + 1; /* nothing after it */
            break;
        }
        ft_located_push(line, '#', raw->where[i - 1]);
        copied = i + 1;
    }
    if (copied < raw->length)
        ft_located_append(line, raw, copied, raw->length);
    size_t kept = line->length;
    while (kept > 0 && is_blank(line->chars[kept - 1]))
        kept--;
    ft_located_truncate(line, kept);
    return true;
}
