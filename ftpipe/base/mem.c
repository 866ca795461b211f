/* mem: allocation that aborts with a message instead of returning NULL. */
#include "ftpipe/base/mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void out_of_memory(size_t bytes)
{
    fprintf(stderr, "ftpipe: out of memory allocating %zu bytes\n", bytes);
    abort();
}

void *ft_xmalloc(size_t bytes)
{
    void *pointer = malloc(bytes ? bytes : 1);
    if (!pointer)
        out_of_memory(bytes);
    return pointer;
}

void *ft_xcalloc(size_t count, size_t bytes)
{
    void *pointer = calloc(count ? count : 1, bytes ? bytes : 1);
    if (!pointer)
        out_of_memory(count * bytes);
    return pointer;
}

void *ft_xrealloc(void *pointer, size_t bytes)
{
    void *grown = realloc(pointer, bytes ? bytes : 1);
    if (!grown)
        out_of_memory(bytes);
    return grown;
}

char *ft_xstrdup(const char *text) { return ft_xstrndup(text, strlen(text)); }

char *ft_xstrndup(const char *text, size_t length)
{
    size_t n = strnlen(text, length);
    char *copy = ft_xmalloc(n + 1);
    memcpy(copy, text, n);
    copy[n] = '\0';
    return copy;
}

char *ft_xasprintf(const char *fmt, ...)
{
    /* Most texts fit the first try: format once, and again only when longer. */
    char first[256];
    va_list args;
    va_start(args, fmt);
    int length = vsnprintf(first, sizeof first, fmt, args);
    va_end(args);
    if (length < 0)
        out_of_memory(0);
    char *text = ft_xmalloc((size_t)length + 1);
    if ((size_t)length < sizeof first) {
        memcpy(text, first, (size_t)length + 1);
        return text;
    }
    va_start(args, fmt);
    vsnprintf(text, (size_t)length + 1, fmt, args);
    va_end(args);
    return text;
}

void ft_grow(void **items, size_t *capacity, size_t needed, size_t item_bytes)
{
    if (needed <= *capacity)
        return;
    size_t grown = *capacity ? *capacity * 2 : 8;
    while (grown < needed)
        grown *= 2;
    *items = ft_xrealloc(*items, grown * item_bytes);
    *capacity = grown;
}
