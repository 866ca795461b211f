/* strbuf: a growable, always NUL-terminated byte string. */
#ifndef FTPIPE_STRBUF_H
#define FTPIPE_STRBUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct {
    char *data; /* NUL-terminated; never NULL after ft_strbuf_init */
    size_t length;
    size_t capacity;
} ft_strbuf;

void ft_strbuf_init(ft_strbuf *buffer);
void ft_strbuf_free(ft_strbuf *buffer);
void ft_strbuf_reset(ft_strbuf *buffer);
void ft_strbuf_add(ft_strbuf *buffer, const void *bytes, size_t length);
void ft_strbuf_puts(ft_strbuf *buffer, const char *text);
void ft_strbuf_putc(ft_strbuf *buffer, char c);
void ft_strbuf_printf(ft_strbuf *buffer, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ft_strbuf_vprintf(ft_strbuf *buffer, const char *fmt, va_list args);
/* Hands the string to the caller (who frees it); the buffer needs
 * ft_strbuf_init again before it is reused. */
char *ft_strbuf_take(ft_strbuf *buffer);

#endif
