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
    float *windows[2];         /* backend memory: the largest unit's room, then the largest layer's */
    size_t window_elements[2];
    size_t n_windows;          /* 2: the pass goes on in one beside the other's reduce */
    int open_window;           /* the window the open unit is written in */
    /* the side queue (cuda's second stream), where each unit's collectives and
     * copies down run beside the pass when there are two windows: `written`
     * marks the pass's writes into a window, reduced[w] the last work of
     * window w's reduce, which the pass waits for before writing it again;
     * NULL without (the cpu backend's calls are done on return) */
    ft_backend_event *written, *reduced[2];
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

static bool beside(const ft_grad_shards *g) { return g->written != NULL; }

/* The pass's queue waits for every reduce issued so far (the side queue runs
 * them in order: the last one of each window covers those before it). */
static void wait_reduces(ft_grad_shards *g)
{
    for (size_t w = 0; beside(g) && w < g->n_windows; w++)
        g->model->backend->event_wait(g->model->backend, g->reduced[w]);
}

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

/* The collectives of unit u's window `from` (its sums so far added), and the
 * copies of the new sums down to a shard in host memory. */
static int reduce_and_store(ft_grad_shards *g, const ft_param_unit *unit, float *from)
{
    ft_backend *b = g->model->backend;
    ft_comm *comm = g->comm;
    float *owned = g->shard + unit->shard_offset, *shared = owned + unit->per_rank;
    float *mine = from + (size_t)comm->rank * unit->per_rank, *window_shared = from + unit->count - unit->shared;
    if (unit->per_rank > 0) {
        if (comm->reduce_scatter_sum(comm, from, g->on_host ? mine : owned, unit->per_rank, FT_COMM_F32) < 0)
            return -1;
        if (g->on_host)
            b->copy_queued(b, owned, mine, unit->per_rank * sizeof(float));
    }
    if (unit->shared > 0) {
        if (comm->all_reduce_sum(comm, window_shared, unit->shared, FT_COMM_F32) < 0)
            return -1;
        b->copy_queued(b, shared, window_shared, unit->shared * sizeof(float)); /* down, when on_host */
    }
    return 0;
}

/* This micro-batch's gradients of unit u (in window w) added over the ranks
 * to the sums in this rank's shard. The sums so far enter the collective
 * through this rank's own part of the window (from host memory: not before
 * the unit's first micro-batch, when there are none), so that its result is
 * the new sum: in the shard, or with the shard in host memory in place in the
 * window, and then down. The additions are ops, on the pass's queue; the
 * collectives and copies go to the side queue when there is one. */
static int reduce_unit(ft_grad_shards *g, size_t u, int w)
{
    ft_backend *b = g->model->backend;
    const ft_param_unit *unit = &g->units[u];
    float *from = g->windows[w];
    float *owned = g->shard + unit->shard_offset, *shared = owned + unit->per_rank;
    float *mine = from + (size_t)g->comm->rank * unit->per_rank, *window_shared = from + unit->count - unit->shared;
    bool with_sums = !g->on_host || g->summed[u];
    if (g->params)
        ft_param_shards_quiet(g->params);
    if (with_sums && unit->per_rank > 0)
        b->add_floats(b, mine, sums_so_far(g, owned, unit->per_rank), unit->per_rank);
    if (with_sums && unit->shared > 0 && g->comm->rank == 0) /* every rank's are the same: rank 0 brings them */
        b->add_floats(b, window_shared, sums_so_far(g, shared, unit->shared), unit->shared);
    g->summed[u] = true;
    if (!beside(g))
        return reduce_and_store(g, unit, from);
    b->event_record(b, g->written);
    b->use_side_queue(b, true);
    b->event_wait(b, g->written);
    int status = reduce_and_store(g, unit, from);
    b->event_record(b, g->reduced[w]);
    b->use_side_queue(b, false);
    return status;
}

/* The open unit reduce-scattered; the pass goes on in the other window. After
 * a failure the pass runs on without collectives (the ranks' orders are lost
 * anyway). */
static void close_window(ft_grad_shards *g)
{
    if (!g->failed && reduce_unit(g, g->open, g->open_window) < 0) {
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
        g->open_window = (g->open_window + 1) % (int)g->n_windows;
        if (g->units[u].count > g->window_elements[g->open_window])
            g->open_window = 0; /* the embeddings or the head: the first is the largest unit's */
        /* the window's last reduce done, and so (in the side queue's order) every one before it: tied
         * embeddings reopened at the end of backward find their first part's sums in the shard */
        if (beside(g))
            g->model->backend->event_wait(g->model->backend, g->reduced[g->open_window]);
        g->model->backend->zero(g->model->backend, g->windows[g->open_window], g->units[u].count * sizeof(float));
        g->open = u;
    }
    return g->windows[g->open_window] + (offset - g->units[u].first);
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
    wait_reduces(g); /* the pass's check covers them, and the host may read a shard in host memory after it */
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
    g->window_elements[0] = ft_model_largest_unit(model);
    g->window_elements[1] = ft_model_gradient_window_elements(model, comm->size, on_host) - g->window_elements[0];
    g->n_windows = g->window_elements[1] > 0 ? 2 : 1;
    g->summed = ft_xcalloc(g->n_units ? g->n_units : 1, sizeof *g->summed);
    for (size_t u = 0; on_host && u < g->n_units; u++)
        if (g->units[u].per_rank + g->units[u].shared > g->staging_elements)
            g->staging_elements = g->units[u].per_rank + g->units[u].shared;
    size_t shard_bytes = (g->shard_elements ? g->shard_elements : 1) * sizeof(float);
    bool ok = (g->shard = on_host ? b->alloc_host(b, shard_bytes) : b->alloc(b, shard_bytes)) != NULL &&
              (!on_host || (g->staging = b->alloc(b, (g->staging_elements ? g->staging_elements : 1) * sizeof(float))));
    for (size_t w = 0; ok && w < g->n_windows; w++)
        ok = (g->windows[w] = b->alloc(b, (g->window_elements[w] ? g->window_elements[w] : 1) * sizeof(float)));
    if (ok && g->n_windows > 1 && b->use_side_queue) /* the reduces beside the pass */
        ok = (g->written = b->event_new(b)) && (g->reduced[0] = b->event_new(b)) && (g->reduced[1] = b->event_new(b));
    if (!ok) {
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
    for (size_t w = 0; w < g->n_windows; w++)
        if (g->windows[w])
            b->free(b, g->windows[w]);
    if (g->staging)
        b->free(b, g->staging);
    if (g->written)
        b->event_free(b, g->written);
    for (int w = 0; w < 2; w++)
        if (g->reduced[w])
            b->event_free(b, g->reduced[w]);
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
            wait_reduces(g);
            b->zero(b, g->windows[0], g->units[u].count * sizeof(float));
            if (reduce_unit(g, u, 0) < 0)
                return ft_error_context("the preflight reduce-scatter");
        }
        wait_reduces(g);
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
    return ((g->on_host ? g->staging_elements : g->shard_elements) + g->window_elements[0] + g->window_elements[1]) *
           sizeof(float);
}

size_t ft_grad_shards_host_bytes(const ft_grad_shards *g) { return g->on_host ? g->shard_elements * sizeof(float) : 0; }

bool ft_grad_shards_on_host(const ft_grad_shards *g) { return g->on_host; }
