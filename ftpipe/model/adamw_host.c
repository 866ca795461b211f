/* adamw_host: a step's spans cut into chunks over the thread pool. */
#include "ftpipe/model/adamw_host.h"

#include <stdlib.h>

#include "ftpipe/backend/host_adamw.h"
#include "ftpipe/base/mem.h"

#define CHUNK_ELEMENTS ((size_t)64 << 10)

typedef struct {
    const ft_adamw_host_span *span;
    size_t first, count;
} chunk;

static void run_chunk(void *context, size_t item, size_t worker)
{
    (void)worker;
    const chunk *c = (const chunk *)context + item;
    const ft_adamw_host_span *s = c->span;
    ft_host_adamw_update(s->param + c->first, s->grad + c->first, s->exp_avg + c->first, s->exp_avg_sq + c->first,
                         c->count, &s->hyper);
}

void ft_adamw_host_run(ft_thread_pool *pool, const ft_adamw_host_span *spans, size_t n_spans)
{
    size_t n_chunks = 0;
    for (size_t s = 0; s < n_spans; s++)
        n_chunks += (spans[s].count + CHUNK_ELEMENTS - 1) / CHUNK_ELEMENTS;
    chunk *chunks = ft_xmalloc((n_chunks ? n_chunks : 1) * sizeof *chunks);
    size_t at = 0;
    for (size_t s = 0; s < n_spans; s++)
        for (size_t first = 0; first < spans[s].count; first += CHUNK_ELEMENTS)
            chunks[at++] = (chunk){&spans[s], first,
                                   spans[s].count - first < CHUNK_ELEMENTS ? spans[s].count - first : CHUNK_ELEMENTS};
    ft_thread_pool_run(pool, n_chunks, run_chunk, chunks, NULL);
    free(chunks);
}
