/* mem: allocation that never returns NULL.
 *
 * Small bookkeeping allocations failing is not an error a user can cause or fix
 * mid-run; these abort with a message. Large buffers (model weights, file data)
 * use plain malloc and report failure through ft_error. */
#ifndef FTPIPE_MEM_H
#define FTPIPE_MEM_H

#include <stddef.h>

void *ft_xmalloc(size_t bytes);
void *ft_xcalloc(size_t count, size_t bytes);
void *ft_xrealloc(void *pointer, size_t bytes);
char *ft_xstrdup(const char *text);
char *ft_xstrndup(const char *text, size_t length);
/* printf into a fresh allocation. */
char *ft_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Grows *items (of item_bytes each) so that it holds at least `needed`; doubles. */
void ft_grow(void **items, size_t *capacity, size_t needed, size_t item_bytes);

#endif
