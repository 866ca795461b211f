/* cpu_memory: the cpu backend's allocations and its scratch, counted so that the
 * backend can report its peak as the cuda backend does. */
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

typedef struct {
    float *scratch;
    size_t scratch_floats;
    size_t allocated_bytes;  /* held by alloc now */
    size_t peak_bytes;
} cpu_context;

/* Each allocation starts one alignment unit early, where its size is kept (for
 * the peak). */
static const size_t alignment_bytes = 64;

static void note_held(cpu_context *context, size_t more, size_t less)
{
    context->allocated_bytes = context->allocated_bytes + more - less;
    size_t held = context->allocated_bytes + context->scratch_floats * sizeof(float);
    if (held > context->peak_bytes)
        context->peak_bytes = held;
}

void *ft_cpu_memory_new(void) { return ft_xcalloc(1, sizeof(cpu_context)); }

void ft_cpu_memory_free(void *context)
{
    if (!context)
        return;
    free(((cpu_context *)context)->scratch);
    free(context);
}

float *ft_cpu_scratch(ft_backend *self, size_t floats)
{
    cpu_context *context = self->context;
    if (floats > context->scratch_floats) {
        free(context->scratch);
        context->scratch = ft_xmalloc(floats * sizeof(float));
        context->scratch_floats = floats;
        note_held(context, 0, 0);
    }
    return context->scratch;
}

int ft_cpu_scratch_reserve(ft_backend *self, size_t floats)
{
    cpu_context *context = self->context;
    if (floats <= context->scratch_floats)
        return 0;
    float *scratch = malloc(floats * sizeof(float));
    if (!scratch) {
        char size[32];
        ft_format_bytes(floats * sizeof(float), size, sizeof size);
        return ft_error("out of host memory reserving the cpu backend's %s of scratch (reduce the batch size or "
                        "sequence length)",
                        size);
    }
    free(context->scratch);
    context->scratch = scratch;
    context->scratch_floats = floats;
    note_held(context, 0, 0);
    return 0;
}

void *ft_cpu_alloc(ft_backend *self, size_t bytes)
{
    size_t rounded = (bytes + alignment_bytes - 1) / alignment_bytes * alignment_bytes;
    char *block = aligned_alloc(alignment_bytes, alignment_bytes + rounded);
    if (!block) {
        char size[32];
        ft_format_bytes(bytes, size, sizeof size);
        ft_error("out of host memory: cannot allocate %s (reduce the batch size or sequence length)", size);
        return NULL;
    }
    memcpy(block, &rounded, sizeof rounded);
    note_held(self->context, rounded, 0);
    return block + alignment_bytes;
}

void ft_cpu_free(ft_backend *self, void *pointer)
{
    if (!pointer)
        return;
    char *block = (char *)pointer - alignment_bytes;
    size_t rounded;
    memcpy(&rounded, block, sizeof rounded);
    note_held(self->context, 0, rounded);
    free(block);
}

size_t ft_cpu_reserved_bytes(const ft_backend *self)
{
    return ((const cpu_context *)self->context)->scratch_floats * sizeof(float);
}

size_t ft_cpu_peak_bytes(const ft_backend *self) { return ((const cpu_context *)self->context)->peak_bytes; }
