/* error: the thread's one message. */
#include "ftpipe/base/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char message[4096];

int ft_error(const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    return -1;
}

int ft_error_errno(const char *fmt, ...)
{
    int saved = errno;
    va_list args;
    va_start(args, fmt);
    int used = vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    if (used >= 0 && (size_t)used < sizeof message)
        snprintf(message + used, sizeof message - (size_t)used, ": %s", strerror(saved));
    errno = saved;
    return -1;
}

int ft_error_context(const char *fmt, ...)
{
    char previous[sizeof message];
    memcpy(previous, message, sizeof message);
    va_list args;
    va_start(args, fmt);
    int used = vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    size_t at = used < 0 ? 0 : (size_t)used;
    size_t previous_length = strlen(previous);
    if (at + 2 < sizeof message) {
        memcpy(message + at, ": ", 2);
        at += 2;
        size_t room = sizeof message - 1 - at;
        size_t n = previous_length < room ? previous_length : room;
        memcpy(message + at, previous, n);
        message[at + n] = '\0';
    }
    return -1;
}

const char *ft_error_message(void) { return message; }

void ft_error_clear(void) { message[0] = '\0'; }

int ft_error_at(const ft_location *where, const char *fmt, ...)
{
    char text[3072];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    if (!where || !where->file)
        return ft_error("%s", text);
    return ft_error("%s:%d:%d: %s", where->file, where->line, where->column, text);
}
