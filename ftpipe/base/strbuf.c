/* strbuf: a growable NUL-terminated string. */
#include "ftpipe/base/strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/mem.h"

static void reserve(ft_strbuf *buffer, size_t extra)
{
    size_t needed = buffer->length + extra + 1;
    if (needed <= buffer->capacity)
        return;
    size_t grown = buffer->capacity ? buffer->capacity * 2 : 64;
    while (grown < needed)
        grown *= 2;
    buffer->data = ft_xrealloc(buffer->data, grown);
    buffer->capacity = grown;
}

void ft_strbuf_init(ft_strbuf *buffer)
{
    buffer->data = NULL;
    buffer->length = 0;
    buffer->capacity = 0;
    reserve(buffer, 0);
    buffer->data[0] = '\0';
}

void ft_strbuf_free(ft_strbuf *buffer)
{
    free(buffer->data);
    buffer->data = NULL;
    buffer->length = buffer->capacity = 0;
}

void ft_strbuf_reset(ft_strbuf *buffer)
{
    buffer->length = 0;
    buffer->data[0] = '\0';
}

void ft_strbuf_add(ft_strbuf *buffer, const void *bytes, size_t length)
{
    reserve(buffer, length);
    memcpy(buffer->data + buffer->length, bytes, length);
    buffer->length += length;
    buffer->data[buffer->length] = '\0';
}

void ft_strbuf_puts(ft_strbuf *buffer, const char *text) { ft_strbuf_add(buffer, text, strlen(text)); }

void ft_strbuf_putc(ft_strbuf *buffer, char c) { ft_strbuf_add(buffer, &c, 1); }

void ft_strbuf_vprintf(ft_strbuf *buffer, const char *fmt, va_list args)
{
    /* Format once into the room left; only a longer text is formatted again. */
    va_list again;
    va_copy(again, args);
    reserve(buffer, 64);
    size_t room = buffer->capacity - buffer->length;
    int length = vsnprintf(buffer->data + buffer->length, room, fmt, args);
    if (length > 0 && (size_t)length >= room) {
        reserve(buffer, (size_t)length);
        vsnprintf(buffer->data + buffer->length, (size_t)length + 1, fmt, again);
    }
    if (length > 0)
        buffer->length += (size_t)length;
    buffer->data[buffer->length] = '\0';
    va_end(again);
}

void ft_strbuf_printf(ft_strbuf *buffer, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    ft_strbuf_vprintf(buffer, fmt, args);
    va_end(args);
}

char *ft_strbuf_take(ft_strbuf *buffer)
{
    char *text = buffer->data;
    buffer->data = NULL;
    buffer->length = buffer->capacity = 0;
    return text;
}
