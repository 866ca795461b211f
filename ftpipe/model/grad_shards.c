/* grad_shards: the shard of full fine-tuning's gradients, the window a pass
 * writes into, and the reduce-scatters between them. */
#include "ftpipe/model/grad_shards.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "model_internal.h"

struct ft_grad_shards {
    ft_model *model;
    ft_comm *comm;
    ft_param_shards *params;   /* ZeRO-3: quieted before each collective here */
    ft_param_unit *units;
    size_t n_units;
    float *shard;              /* backend memory, or the backend's host memory (on_host) */
    size_t shard_elements;
    float *window;             /* backend memory, room for the largest unit */
    size_t window_elements;
    bool on_host;              /* offload_optimizer: the shard is host memory, AdamW's input there */
    float *staging;            /* on_host: backend memory for a unit's sums so far on their way up */
    size_t staging_elements;
    bool *summed;              /* on_host: unit u's part of the shard holds sums (else zeros) */
    size_t open;               /* the unit the window holds; SIZE_MAX: none */
    bool failed;
    char message[1024];        /* the failed collective's ft_error */
};

static const ft_grad_shard_calls calls = {ft_grad_shards_window, ft_grad_shards_unit_done, ft_grad_shards_finish,
                                          ft_grad_shards_zero};

static size_t unit_of(const ft_grad_shards *g, size_t offset) { return ft_param_unit_at(g->units, g->n_units, offset); }

/* n sums so far of the shard at `at`, where add_floats can read them: the
 * shard itself in the backend's memory, else copied up into the staging
 * buffer. The host shard's copies, up and down, are queued with the ops and
 * not waited for (the host reads the shard after the pass's check), so that
 * the host keeps issuing the compute while they run. */
static const float *sums_so_far(ft_grad_shards *g, const float *at, size_t n)
{
    if (!g->on_host)
        return at;
    g->model->backend->copy_queued(g->model->backend, g->staging, at, n * sizeof(float));
    return g->staging;
}

/* This micro-batch's gradients of unit u (in `from`, the window) added over
 * the ranks to the sums in this rank's shard. The sums so far enter the
 * collective through this rank's own part of the window (from host memory:
 * not before the unit's first micro-batch, when there are none), so that its
 * result is the new sum: in the shard, or with the shard in host memory in
 * place in the window, and then down. */
static int reduce_unit(ft_grad_shards *g, size_t u, float *from)
{
    ft_backend *b = g->model->backend;
    ft_comm *comm = g->comm;
    const ft_param_unit *unit = &g->units[u];
    float *owned = g->shard + unit->shard_offset, *shared = owned + unit->per_rank;
    float *mine = from + (size_t)comm->rank * unit->per_rank, *window_shared = from + unit->count - unit->shared;
    bool with_sums = !g->on_host || g->summed[u];
    if (g->params)
        ft_param_shards_quiet(g->params);
    if (unit->per_rank > 0) {
        if (with_sums)
            b->add_floats(b, mine, sums_so_far(g, owned, unit->per_rank), unit->per_rank);
        if (comm->reduce_scatter_sum(comm, from, g->on_host ? mine : owned, unit->per_rank, FT_COMM_F32) < 0)
            return -1;
        if (g->on_host)
            b->copy_queued(b, owned, mine, unit->per_rank * sizeof(float));
    }
    if (unit->shared > 0) { /* every rank's sums so far are the same: rank 0 brings them */
        if (with_sums && comm->rank == 0)
            b->add_floats(b, window_shared, sums_so_far(g, shared, unit->shared), unit->shared);
        if (comm->all_reduce_sum(comm, window_shared, unit->shared, FT_COMM_F32) < 0)
            return -1;
        b->copy_queued(b, shared, window_shared, unit->shared * sizeof(float)); /* down, when on_host */
    }
    g->summed[u] = true;
    return 0;
}

/* The open unit reduce-scattered, the window free again. After a failure the
 * pass runs on without collectives (the ranks' orders are lost anyway). */
static void close_window(ft_grad_shards *g)
{
    if (!g->failed && reduce_unit(g, g->open, g->window) < 0) {
        snprintf(g->message, sizeof g->message, "%s", ft_error_message());
        g->failed = true;
    }
    g->open = SIZE_MAX;
}

float *ft_grad_shards_window(ft_grad_shards *g, size_t offset)
{
    size_t u = unit_of(g, offset);
    if (g->open != u) {
        /* the unit open is done for now: the next unit backward reaches, or the
         * tied embeddings after the head, which reopen at the end of backward
         * (their two parts add up in the shard) */
        if (g->open != SIZE_MAX)
            close_window(g);
        g->model->backend->zero(g->model->backend, g->window, g->units[u].count * sizeof(float));
        g->open = u;
    }
    return g->window + (offset - g->units[u].first);
}

void ft_grad_shards_unit_done(ft_grad_shards *g, size_t offset)
{
    if (g->open == unit_of(g, offset))
        close_window(g);
}

int ft_grad_shards_finish(ft_grad_shards *g)
{
    if (g->open != SIZE_MAX)
        close_window(g);
    bool failed = g->failed;
    g->failed = false;
    return failed ? ft_error("%s (reduce-scattering the gradients, ZeRO-%d)", g->message,
                             g->params ? 3 : 2)
                  : 0;
}

void ft_grad_shards_zero(ft_grad_shards *g)
{
    if (g->on_host) { /* a unit's first reduce writes its part whole: the shard, which the step's update
                       * may still read (zero.h), is left as it is */
        memset(g->summed, 0, g->n_units * sizeof *g->summed);
    } else {
        g->model->backend->zero(g->model->backend, g->shard, g->shard_elements * sizeof(float));
    }
}

/* The units: ZeRO-3's own, else planned from the whole weights' places. */
static void plan(ft_grad_shards *g)
{
    ft_model *m = g->model;
    if (g->params) {
        const ft_param_unit *units = ft_param_shards_units(g->params, &g->n_units);
        g->units = ft_xmalloc(g->n_units * sizeof *g->units);
        memcpy(g->units, units, g->n_units * sizeof *g->units);
        const ft_param_unit *last = &g->units[g->n_units - 1];
        g->shard_elements = last->shard_offset + last->per_rank + last->shared;
        return;
    }
    size_t *offsets = ft_xcalloc(m->n_weights ? m->n_weights : 1, sizeof *offsets);
    for (size_t i = 0; i < m->n_weights; i++)
        offsets[i] = (size_t)((char *)m->weights[i].value - (char *)m->params) / m->element_bytes;
    g->units = ft_param_units_plan(m, offsets, g->comm->size, &g->n_units, &g->shard_elements);
    free(offsets);
}

int ft_grad_shards_create(ft_model *model, ft_comm *comm, ft_param_shards *params, bool on_host,
                          ft_grad_shards **out)
{
    if (model->grad_shards)
        return ft_error("the model's gradients are sharded already: free those shards first");
    if (model->options.gradient_shards != comm->size || model->grads)
        return ft_error("the model was loaded with %s (gradient_shards = %d): for ZeRO-2 or 3 over %d ranks load it "
                        "with gradient_shards = %d",
                        model->grads ? "whole gradients" : "its gradients planned for other ranks",
                        model->options.gradient_shards, comm->size, comm->size);
    ft_backend *b = model->backend;
    ft_grad_shards *g = ft_xcalloc(1, sizeof *g);
    *g = (ft_grad_shards){.model = model, .comm = comm, .params = params, .on_host = on_host};
    plan(g);
    g->open = SIZE_MAX;
    g->window_elements = ft_model_largest_unit(model);
    g->summed = ft_xcalloc(g->n_units ? g->n_units : 1, sizeof *g->summed);
    for (size_t u = 0; on_host && u < g->n_units; u++)
        if (g->units[u].per_rank + g->units[u].shared > g->staging_elements)
            g->staging_elements = g->units[u].per_rank + g->units[u].shared;
    size_t shard_bytes = (g->shard_elements ? g->shard_elements : 1) * sizeof(float);
    if (!(g->shard = on_host ? b->alloc_host(b, shard_bytes) : b->alloc(b, shard_bytes)) ||
        !(g->window = b->alloc(b, (g->window_elements ? g->window_elements : 1) * sizeof(float))) ||
        (on_host && !(g->staging = b->alloc(b, (g->staging_elements ? g->staging_elements : 1) * sizeof(float))))) {
        ft_grad_shards_free(g);
        return ft_error_context("sharding the gradients over %d ranks", comm->size);
    }
    if (on_host)
        memset(g->shard, 0, shard_bytes);
    ft_grad_shards_zero(g);
    model->grad_shards = g;
    model->grad_calls = &calls;
    *out = g;
    return 0;
}

void ft_grad_shards_free(ft_grad_shards *g)
{
    if (!g)
        return;
    ft_backend *b = g->model->backend;
    if (g->model->grad_shards == g) {
        g->model->grad_shards = NULL;
        g->model->grad_calls = NULL;
    }
    if (g->shard && g->on_host)
        b->free_host(b, g->shard);
    else if (g->shard)
        b->free(b, g->shard);
    if (g->window)
        b->free(b, g->window);
    if (g->staging)
        b->free(b, g->staging);
    free(g->units);
    free(g->summed);
    free(g);
}

int ft_grad_shards_time_reduce(ft_grad_shards *g, int repeats, ft_all_reduce_timing *out)
{
    ft_backend *b = g->model->backend;
    out->bytes = 0;
    for (size_t u = 0; u < g->n_units; u++)
        out->bytes += g->units[u].count * sizeof(float);
    out->seconds = 0.0;
    for (int r = 0; r < repeats; r++) {
        uint64_t start = ft_now_ns();
        for (size_t u = 0; u < g->n_units; u++) {
            b->zero(b, g->window, g->units[u].count * sizeof(float));
            if (reduce_unit(g, u, g->window) < 0)
                return ft_error_context("the preflight reduce-scatter");
        }
        if (b->check(b) < 0)
            return ft_error_context("the preflight reduce-scatter");
        double seconds = (double)(ft_now_ns() - start) * 1e-9;
        if (r == 0 || seconds < out->seconds)
            out->seconds = seconds;
    }
    double factor = (double)(g->comm->size - 1) / g->comm->size;
    out->bus_bytes_per_s = out->seconds > 0.0 ? (double)out->bytes * factor / out->seconds : 0.0;
    return 0;
}

const ft_param_unit *ft_grad_shards_units(const ft_grad_shards *g, size_t *count)
{
    *count = g->n_units;
    return g->units;
}

float *ft_grad_shards_shard(const ft_grad_shards *g) { return g->shard; }

size_t ft_grad_shards_bytes(const ft_grad_shards *g)
{
    return ((g->on_host ? g->staging_elements : g->shard_elements) + g->window_elements) * sizeof(float);
}

size_t ft_grad_shards_host_bytes(const ft_grad_shards *g) { return g->on_host ? g->shard_elements * sizeof(float) : 0; }

bool ft_grad_shards_on_host(const ft_grad_shards *g) { return g->on_host; }
