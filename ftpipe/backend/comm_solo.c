/* comm_solo: one rank's collectives, as copies or nothing. */
#include "ftpipe/backend/comm_solo.h"

#include <stdlib.h>

#include "ftpipe/base/mem.h"

static size_t dtype_bytes(ft_comm_dtype dtype) { return dtype == FT_COMM_F64 ? sizeof(double) : sizeof(float); }

static int all_reduce_sum(ft_comm *self, void *data, size_t count, ft_comm_dtype dtype)
{
    (void)self, (void)data, (void)count, (void)dtype;
    return 0;
}

static int broadcast(ft_comm *self, void *data, size_t bytes, int root)
{
    (void)self, (void)data, (void)bytes, (void)root;
    return 0;
}

static int all_gather(ft_comm *self, const void *in, void *out, size_t bytes)
{
    ft_backend *backend = self->context;
    backend->copy(backend, out, in, bytes);
    return 0;
}

static int reduce_scatter_sum(ft_comm *self, const void *in, void *out, size_t count, ft_comm_dtype dtype)
{
    ft_backend *backend = self->context;
    backend->copy(backend, out, in, count * dtype_bytes(dtype));
    return 0;
}

static void abort_comm(ft_comm *self) { (void)self; }

static void destroy(ft_comm *self) { free(self); }

ft_comm *ft_comm_solo_create(ft_backend *backend)
{
    ft_comm *comm = ft_xcalloc(1, sizeof *comm);
    *comm = (ft_comm){.name = "one rank", .rank = 0, .size = 1, .lost_rank = -1, .context = backend,
                      .all_reduce_sum = all_reduce_sum, .broadcast = broadcast, .all_gather = all_gather,
                      .reduce_scatter_sum = reduce_scatter_sum, .abort = abort_comm, .destroy = destroy};
    return comm;
}
