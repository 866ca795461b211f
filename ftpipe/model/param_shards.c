/* param_shards: units, this rank's shard of each (and of a float master copy),
 * and the gathered window a pass reads. */
#include "ftpipe/model/param_shards.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/backend/host_floats.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/model/collective_thread.h"
#include "model_internal.h"

#define WINDOW_UNITS 2

static const ft_param_shard_calls shard_calls = {ft_param_shards_weight, ft_param_shards_prefetch,
                                                 ft_param_shards_end_pass, ft_param_shards_refresh,
                                                 ft_param_shards_free};

typedef struct {
    size_t unit;            /* SIZE_MAX: empty */
    void *buffer;           /* room for the largest unit's whole weights, backend memory */
    unsigned long last_use;
    unsigned long ticket;   /* its gather's place in the gather thread's order */
    unsigned long issued_at_reads; /* the reads made when that gather was issued */
    bool first_read_done;
} slot;

struct ft_param_shards {
    ft_model *model;
    ft_comm *comm;
    bool offload;
    size_t element_bytes;
    ft_param_unit *units;
    size_t n_units;
    size_t *weight_offsets;    /* every weight's first element in the whole layout */
    void *shard;               /* backend memory, or host memory when offloaded */
    size_t shard_elements;
    void *staging;             /* offloaded: the owned part of one unit, uploaded for the all-gather */
    float *master;             /* the float master copy's shard, the shard's layout (NULL without one) */
    bool master_on_host;       /* offload_optimizer: master is the backend's host memory (alloc_host) */
    slot window[WINDOW_UNITS];
    size_t window_bytes;       /* each slot's buffer: the largest unit's weights */
    unsigned long uses;        /* the clock of the slots' last_use */
    unsigned long reads;       /* through ft_param_shards_weight */
    size_t gathered_bytes;     /* the window and the staging buffer, allocated once */
    ft_param_shards_stats stats;
    /* the gather thread: it runs the slots' gathers in ticket order, the only
     * user of comm while a pass runs, so that a gather overlaps the compute;
     * on a backend with a side queue (cuda) it gathers there, each slot's
     * gather waiting for `freed` (the compute that read the slot before) and
     * the compute for `ready` (the gather) */
    ft_collective_thread worker;
    ft_backend_event *freed[WINDOW_UNITS], *ready[WINDOW_UNITS];
    size_t units_updated;        /* the units a step's update has refreshed (ft_param_shards_begin_updates):
                                  * a gather waits for its unit; n_units between steps */
    bool refreshed_by_units;     /* the step's update refreshes each unit itself: refresh has nothing to do */
    size_t queue[WINDOW_UNITS];  /* slot indices by ticket % WINDOW_UNITS */
    unsigned long issued, done;  /* tickets */
    bool failed;
    char message[1024];          /* the failed gather's ft_error, which is the thread's own */
    ft_param_shards_rider rider; /* what rides with each unit's gather (place NULL: nothing) */
};

ft_param_unit *ft_param_units_plan(const ft_model *m, const size_t *weight_offsets, int ranks, size_t *n_units,
                                   size_t *shard_elements)
{
    *n_units = ft_model_n_units(m);
    ft_param_unit *units = ft_xcalloc(*n_units, sizeof *units);
    size_t size = (size_t)ranks, w = 0, shard = 0, first = 0;
    for (size_t u = 0; u < *n_units; u++) {
        size_t end = ft_model_unit_end(m, u);
        ft_param_unit *unit = &units[u];
        unit->first_weight = w;
        unit->first = first;
        while (w < m->n_weights && weight_offsets[w] < end)
            w++;
        unit->n_weights = w - unit->first_weight;
        unit->count = end - first;
        unit->per_rank = unit->count / size;
        unit->shared = unit->count - size * unit->per_rank;
        unit->shard_offset = shard;
        shard += unit->per_rank + unit->shared;
        first = end;
    }
    *shard_elements = shard;
    return units;
}

static void plan_units(ft_param_shards *s)
{
    s->units = ft_param_units_plan(s->model, s->weight_offsets, s->comm->size, &s->n_units, &s->shard_elements);
}

size_t ft_param_unit_at(const ft_param_unit *units, size_t n_units, size_t offset)
{
    size_t low = 0, high = n_units;
    while (high - low > 1) {
        size_t middle = (low + high) / 2;
        if (units[middle].first <= offset)
            low = middle;
        else
            high = middle;
    }
    return low;
}

static size_t unit_of(const ft_param_shards *s, size_t offset)
{
    return ft_param_unit_at(s->units, s->n_units, offset);
}

static void *shard_at(const ft_param_shards *s, size_t element)
{
    return (char *)s->shard + element * s->element_bytes;
}

static void *whole_at(const ft_param_shards *s, size_t element)
{
    return (char *)s->model->params + element * s->element_bytes;
}

/* bytes from one place of the shard's kind of memory to a backend buffer, or back */
static void shard_to_backend(ft_param_shards *s, void *to, const void *from, size_t bytes, void *host)
{
    ft_backend *b = s->model->backend;
    if (s->offload) {
        b->upload(b, to, from, bytes);
    } else if (bytes > 0) {
        b->download(b, host, from, bytes);
        b->upload(b, to, host, bytes);
    }
}

/* This rank's parts of unit u from `source` (backend memory holding the
 * unit's whole weights) into the shard; host: room for the largest part. */
static void take_unit(ft_param_shards *s, size_t u, const void *source, void *host)
{
    ft_backend *b = s->model->backend;
    const ft_param_unit *unit = &s->units[u];
    size_t owned = unit->per_rank * s->element_bytes, shared = unit->shared * s->element_bytes;
    b->download(b, host, (const char *)source + (size_t)s->comm->rank * owned, owned);
    b->download(b, (char *)host + owned, (const char *)source + (unit->count - unit->shared) * s->element_bytes,
                shared);
    if (s->offload)
        memcpy(shard_at(s, unit->shard_offset), host, owned + shared);
    else
        b->upload(b, shard_at(s, unit->shard_offset), host, owned + shared);
}

/* Host room for the largest unit's part of a shard, of element_bytes each. */
static void *part_buffer(const ft_param_shards *s, size_t element_bytes)
{
    size_t largest = 1;
    for (size_t u = 0; u < s->n_units; u++)
        if (s->units[u].per_rank + s->units[u].shared > largest)
            largest = s->units[u].per_rank + s->units[u].shared;
    return ft_xmalloc(largest * element_bytes);
}

/* This rank's parts of every unit from the whole weights into the shard. */
static void take_shard(ft_param_shards *s)
{
    void *host = part_buffer(s, s->element_bytes);
    for (size_t u = 0; u < s->n_units; u++)
        take_unit(s, u, whole_at(s, s->units[u].first), host);
    free(host);
}

/* The weights' values point into the whole buffers, or nowhere without them. */
static void point_weights(ft_param_shards *s)
{
    ft_model *m = s->model;
    for (size_t i = 0; i < m->n_weights; i++) {
        m->weights[i].value = m->params ? (float *)whole_at(s, s->weight_offsets[i]) : NULL;
        if (m->trainable && ft_model_trains_weights(m)) /* the trained list's copy (a projector's follow) */
            m->trainable[i].value = m->weights[i].value;
        if (m->master_weights)
            m->master_weights[i].value = m->master ? m->master + s->weight_offsets[i] : NULL;
    }
}

/* The whole buffers freed: the backend's, or the host memory a gather kept them in. */
static void free_whole(ft_param_shards *s)
{
    ft_model *m = s->model;
    if (m->whole_on_host) {
        free(m->params);
        free(m->master);
    } else {
        if (m->params)
            m->backend->free(m->backend, m->params);
        if (m->master)
            m->backend->free(m->backend, m->master);
    }
    m->params = NULL;
    m->master = NULL;
    m->whole_on_host = false;
    point_weights(s);
}

/* Unit u's whole weights into `to` (backend memory): the owned parts
 * all-gathered, the shared part from this rank's shard. */
static int gather_unit(ft_param_shards *s, size_t u, void *to)
{
    const ft_param_unit *unit = &s->units[u];
    size_t owned = unit->per_rank * s->element_bytes, shared = unit->shared * s->element_bytes;
    const void *mine = shard_at(s, unit->shard_offset);
    if (s->offload && s->comm->size == 1) { /* nothing to gather, nothing shared: straight into the window */
        s->model->backend->upload(s->model->backend, to, mine, owned);
        return 0;
    }
    if (s->offload && owned > 0) {
        s->model->backend->upload(s->model->backend, s->staging, mine, owned);
        mine = s->staging;
    }
    if (owned > 0 && s->comm->all_gather(s->comm, mine, to, owned) < 0)
        return ft_error_context("all-gathering the weights of unit %zu over the ranks (ZeRO-3)", u);
    char host[64 * sizeof(double)]; /* shared < ranks elements */
    void *bounce = shared <= sizeof host ? host : ft_xmalloc(shared);
    shard_to_backend(s, (char *)to + (size_t)s->comm->size * owned, shard_at(s, unit->shard_offset + unit->per_rank),
                     shared, bounce);
    if (bounce != host)
        free(bounce);
    return 0;
}

/* --- the gather thread --- */

/* The side queue's events: NULL on a backend without one (its calls are done on return). */
static bool queued(const ft_param_shards *s) { return s->ready[0] != NULL; }

static void event_record(ft_param_shards *s, ft_backend_event *event)
{
    if (event)
        s->model->backend->event_record(s->model->backend, event);
}

static void event_wait(ft_param_shards *s, ft_backend_event *event)
{
    if (event)
        s->model->backend->event_wait(s->model->backend, event);
}

static void *gather_thread(void *argument)
{
    ft_param_shards *s = argument;
    ft_backend *b = s->model->backend;
    if (queued(s))
        b->use_side_queue(b, true);
    pthread_mutex_lock(&s->worker.lock);
    for (;;) {
        while (!s->worker.stopping && s->done == s->issued)
            pthread_cond_wait(&s->worker.changed, &s->worker.lock);
        if (s->worker.stopping)
            break;
        size_t index = s->queue[s->done % WINDOW_UNITS];
        const slot *to = &s->window[index];
        size_t unit = to->unit;
        void *buffer = to->buffer;
        while (!s->worker.stopping && s->units_updated <= unit) /* the step's update reaches it first */
            pthread_cond_wait(&s->worker.changed, &s->worker.lock);
        if (s->worker.stopping)
            break;
        bool skip = s->failed; /* after a failure the pass's values are garbage anyway */
        pthread_mutex_unlock(&s->worker.lock);
        event_wait(s, s->freed[index]);
        int status = skip ? 0 : gather_unit(s, unit, buffer);
        if (status == 0 && !skip && s->rider.gather)
            status = s->rider.gather(s->rider.context, unit, (int)index);
        event_record(s, s->ready[index]);
        pthread_mutex_lock(&s->worker.lock);
        if (status < 0) {
            snprintf(s->message, sizeof s->message, "%s", ft_error_message());
            s->failed = true;
        }
        s->done++;
        pthread_cond_broadcast(&s->worker.changed);
    }
    pthread_mutex_unlock(&s->worker.lock);
    return NULL;
}

/* Unit u's gather into slot `to`, queued behind those issued before it (and
 * behind the compute issued so far, which may still read the slot). */
static void issue_gather(ft_param_shards *s, slot *to, size_t u)
{
    event_record(s, s->freed[to - s->window]);
    if (s->rider.place)
        s->rider.place(s->rider.context, u, (int)(to - s->window));
    pthread_mutex_lock(&s->worker.lock);
    to->unit = u;
    to->ticket = s->issued;
    to->issued_at_reads = s->reads;
    to->first_read_done = false;
    s->queue[s->issued % WINDOW_UNITS] = (size_t)(to - s->window);
    s->issued++;
    s->stats.gathers++;
    pthread_cond_broadcast(&s->worker.changed);
    pthread_mutex_unlock(&s->worker.lock);
}

/* Returns once the slot's last gather is done (at once for an empty slot). */
static void wait_slot(ft_param_shards *s, const slot *which)
{
    pthread_mutex_lock(&s->worker.lock);
    while (which->unit != SIZE_MAX && s->done <= which->ticket)
        pthread_cond_wait(&s->worker.changed, &s->worker.lock);
    pthread_mutex_unlock(&s->worker.lock);
}

/* Returns once every issued gather is done: comm and the window are free for
 * the caller, whose work is queued behind them. */
static void drain(ft_param_shards *s)
{
    pthread_mutex_lock(&s->worker.lock);
    while (s->done < s->issued || s->units_updated < s->n_units)
        pthread_cond_wait(&s->worker.changed, &s->worker.lock);
    pthread_mutex_unlock(&s->worker.lock);
    for (int i = 0; i < WINDOW_UNITS; i++)
        event_wait(s, s->ready[i]);
}

/* drain, and the host waits for the gathers too: they read the shard's host
 * memory (offloaded) until they are done. */
static void settle(ft_param_shards *s)
{
    drain(s);
    for (int i = 0; i < WINDOW_UNITS && queued(s); i++)
        s->model->backend->event_sync(s->model->backend, s->ready[i]);
}

void ft_param_shards_quiet(ft_param_shards *s) { drain(s); }

/* A pass that failed mid-way: its gather may wait for good. */
static bool gather_blocked(void *argument)
{
    const ft_param_shards *s = argument;
    return s->done < s->issued && !s->failed;
}

static void stop_thread(ft_param_shards *s) { ft_collective_thread_stop(&s->worker, s->comm, gather_blocked, s); }

/* --- the float master copy's shard (full fine-tuning in mixed precision) --- */

/* This rank's parts of unit u from `source` (backend memory holding the
 * unit's whole float values) into the master shard; host: room for the
 * largest part. */
static void take_master_unit(ft_param_shards *s, size_t u, const float *source, float *host)
{
    ft_backend *b = s->model->backend;
    const ft_param_unit *unit = &s->units[u];
    size_t n = unit->per_rank + unit->shared;
    b->download(b, host, source + (size_t)s->comm->rank * unit->per_rank, unit->per_rank * sizeof(float));
    b->download(b, host + unit->per_rank, source + unit->count - unit->shared, unit->shared * sizeof(float));
    if (s->master_on_host)
        memcpy(s->master + unit->shard_offset, host, n * sizeof(float));
    else
        b->upload(b, s->master + unit->shard_offset, host, n * sizeof(float));
}

/* The master shard from the model's whole master copy. */
static void take_master_shard(ft_param_shards *s)
{
    float *host = part_buffer(s, sizeof(float));
    for (size_t u = 0; u < s->n_units; u++)
        take_master_unit(s, u, s->model->master + s->units[u].first, host);
    free(host);
}

/* --- the whole trained values gathered into host memory, unit by unit --- */

/* Where the shard keeps the values a checkpoint and the result hold: the
 * master copy's floats, else the weights themselves (float: full fine-tuning
 * without a master copy runs on a float backend). */
typedef struct {
    char *shard;
    bool on_host;
    size_t element_bytes;
} trained_values;

static size_t test_piece_elements; /* ft_param_shards_test_pieces; 0: as large as the buffer allows */

void ft_param_shards_test_pieces(size_t elements) { test_piece_elements = elements; }

static trained_values values_of(const ft_param_shards *s)
{
    if (s->master)
        return (trained_values){(char *)s->master, s->master_on_host, sizeof(float)};
    return (trained_values){s->shard, s->offload, s->element_bytes};
}

/* Unit u's whole values into host memory at `to` (NULL: this rank keeps
 * nothing, but joins the all-gathers). The owned parts come in pieces that
 * fill the first gather buffer: each all-gather brings the same piece of
 * every rank's part, sent from the shard or (in host memory) the second
 * buffer, so no more backend memory than a pass's is needed; the buffers
 * hold no unit afterwards. */
static int gather_unit_to_host(ft_param_shards *s, size_t u, char *to)
{
    for (int i = 0; i < WINDOW_UNITS; i++)
        s->window[i].unit = SIZE_MAX;
    ft_backend *b = s->model->backend;
    const ft_param_unit *unit = &s->units[u];
    trained_values v = values_of(s);
    size_t e = v.element_bytes, ranks = (size_t)s->comm->size;
    size_t piece = s->window_bytes / (ranks * e);
    if (test_piece_elements && test_piece_elements < piece)
        piece = test_piece_elements;
    const char *mine = v.shard + unit->shard_offset * e;
    if (piece == 0 && unit->per_rank > 0)
        return ft_error("ZeRO-3's gather buffers of %zu bytes are too small to gather %zu ranks' values",
                        s->window_bytes, ranks);
    for (size_t at = 0; at < unit->per_rank; at += piece) {
        size_t n = unit->per_rank - at < piece ? unit->per_rank - at : piece;
        const void *send = mine + at * e;
        if (v.on_host) {
            b->upload(b, s->window[1].buffer, send, n * e);
            send = s->window[1].buffer;
        }
        if (s->comm->all_gather(s->comm, send, s->window[0].buffer, n * e) < 0)
            return ft_error_context("all-gathering the %s of unit %zu over the ranks (ZeRO-3)",
                                    s->master ? "float master weights" : "weights", u);
        for (size_t r = 0; to && r < ranks; r++)
            b->download(b, to + (r * unit->per_rank + at) * e, (char *)s->window[0].buffer + r * n * e, n * e);
    }
    char *shared = to ? to + (unit->count - unit->shared) * e : NULL;
    if (shared && v.on_host)
        memcpy(shared, mine + unit->per_rank * e, unit->shared * e);
    else if (shared)
        b->download(b, shared, mine + unit->per_rank * e, unit->shared * e);
    return 0;
}

/* Elements [first, first + n) of the whole layout from `pieces` (one per
 * weight, float) into the shard's values at `to`. */
static void take_from_pieces(ft_param_shards *s, const ft_param_unit *unit, const float *const *pieces,
                             size_t first, size_t n, char *to)
{
    ft_backend *b = s->model->backend;
    trained_values v = values_of(s);
    size_t e = v.element_bytes;
    for (size_t i = unit->first_weight; i < unit->first_weight + unit->n_weights && n > 0; i++) {
        size_t start = s->weight_offsets[i], count = s->model->weights[i].count;
        if (first >= start + count)
            continue;
        size_t at = first - start, run = count - at < n ? count - at : n;
        if (v.on_host)
            memcpy(to, pieces[i] + at, run * e);
        else
            b->upload(b, to, pieces[i] + at, run * e);
        to += run * e;
        first += run;
        n -= run;
    }
}

/* Unit u's part of the shard cast from the master shard, where both are host
 * memory or the shard is (offload_param). */
static void refresh_unit(ft_param_shards *s, size_t u)
{
    ft_backend *b = s->model->backend;
    const ft_param_unit *unit = &s->units[u];
    size_t n = unit->per_rank + unit->shared;
    const float *from = s->master + unit->shard_offset;
    void *to = shard_at(s, unit->shard_offset);
    if (!s->master_on_host) { /* only the shard is in host memory: cast in a gather buffer, then down */
        b->cast_from_float(b, s->window[0].buffer, from, n);
        b->download(b, to, s->window[0].buffer, n * s->element_bytes);
    } else if (s->offload) {
        ft_backend_convert_floats(b, to, from, n);
    } else {
        ft_backend_upload_floats(b, to, from, n);
    }
}

void ft_param_shards_refresh(ft_param_shards *s)
{
    if (!s->master)
        return;
    if (s->refreshed_by_units) { /* the step's update did it, unit by unit */
        s->refreshed_by_units = false;
        return;
    }
    settle(s); /* it writes the shard */
    ft_backend *b = s->model->backend;
    if (!s->master_on_host && !s->offload) {
        b->cast_from_float(b, s->shard, s->master, s->shard_elements);
        return;
    }
    for (size_t u = 0; u < s->n_units; u++)
        refresh_unit(s, u);
}

void ft_param_shards_begin_updates(ft_param_shards *s)
{
    settle(s); /* no upload reads the shard's host memory while it changes */
    pthread_mutex_lock(&s->worker.lock);
    s->units_updated = 0;
    s->refreshed_by_units = s->master != NULL;
    pthread_mutex_unlock(&s->worker.lock);
}

void ft_param_shards_unit_updated(ft_param_shards *s, size_t u)
{
    if (s->master)
        refresh_unit(s, u);
    pthread_mutex_lock(&s->worker.lock);
    s->units_updated = u + 1;
    pthread_cond_broadcast(&s->worker.changed);
    pthread_mutex_unlock(&s->worker.lock);
}

void ft_param_shards_free(ft_param_shards *s)
{
    if (!s)
        return;
    stop_thread(s);
    s->model->shards = NULL;
    s->model->shard_calls = NULL;
    ft_backend *b = s->model->backend;
    for (int i = 0; i < WINDOW_UNITS; i++) {
        if (s->ready[i]) { /* a gather may still read the shard or write the window */
            b->event_sync(b, s->ready[i]);
            b->event_free(b, s->ready[i]);
        }
        if (s->freed[i])
            b->event_free(b, s->freed[i]);
    }
    for (int i = 0; i < WINDOW_UNITS; i++)
        if (s->window[i].buffer)
            b->free(b, s->window[i].buffer);
    if (s->staging)
        b->free(b, s->staging);
    if (s->shard && s->offload)
        b->free_host(b, s->shard);
    else if (s->shard)
        b->free(b, s->shard);
    if (s->master && s->master_on_host)
        b->free_host(b, s->master);
    else if (s->master)
        b->free(b, s->master);
    free(s->units);
    free(s->weight_offsets);
    free(s);
}

/* The units of the model's weights (first elements at `offsets`) over comm's
 * ranks, with the shard, the master shard (when the model keeps a master
 * copy), the window and the staging buffer allocated. */
static int make_shards(ft_model *model, const size_t *offsets, ft_comm *comm, bool offload, bool master_on_host,
                       ft_param_shards **out)
{
    ft_backend *b = model->backend;
    ft_param_shards *s = ft_xcalloc(1, sizeof *s);
    *s = (ft_param_shards){.model = model, .comm = comm, .offload = offload, .element_bytes = model->element_bytes,
                           .master_on_host = master_on_host};
    s->weight_offsets = ft_xcalloc(model->n_weights ? model->n_weights : 1, sizeof *s->weight_offsets);
    memcpy(s->weight_offsets, offsets, model->n_weights * sizeof *offsets);
    plan_units(s);
    s->units_updated = s->n_units;
    size_t largest = 0, largest_owned = 0;
    for (size_t u = 0; u < s->n_units; u++) {
        largest = s->units[u].count > largest ? s->units[u].count : largest;
        largest_owned = s->units[u].per_rank > largest_owned ? s->units[u].per_rank : largest_owned;
    }
    size_t shard_bytes = (s->shard_elements ? s->shard_elements : 1) * s->element_bytes;
    /* offloaded: page-locked, so that a unit's upload overlaps the compute */
    bool ok = (s->shard = offload ? b->alloc_host(b, shard_bytes) : b->alloc(b, shard_bytes)) != NULL;
    if (!ok && offload)
        ft_error_context("a ZeRO-3 shard of %zu bytes in host memory (offload_param)", shard_bytes);
    if (ok && ft_model_keeps_master(model)) {
        size_t master_bytes = (s->shard_elements ? s->shard_elements : 1) * sizeof(float);
        ok = (s->master = master_on_host ? b->alloc_host(b, master_bytes) : b->alloc(b, master_bytes)) != NULL;
        if (!ok)
            ft_error("out of %s memory for the float master weights' ZeRO-3 shard of %zu bytes",
                     master_on_host ? "host" : "backend", master_bytes);
    }
    s->window_bytes = largest * s->element_bytes;
    for (int i = 0; i < WINDOW_UNITS && ok; i++) {
        s->window[i].unit = SIZE_MAX;
        ok = (s->window[i].buffer = b->alloc(b, s->window_bytes)) != NULL;
        s->gathered_bytes += largest * s->element_bytes;
    }
    if (ok && offload && largest_owned > 0 && comm->size > 1) { /* one rank uploads into the window */
        ok = (s->staging = b->alloc(b, largest_owned * s->element_bytes)) != NULL;
        s->gathered_bytes += largest_owned * s->element_bytes;
    }
    for (int i = 0; i < WINDOW_UNITS && ok && b->event_new; i++) /* a side queue: gathers beside the compute */
        ok = (s->freed[i] = b->event_new(b)) != NULL && (s->ready[i] = b->event_new(b)) != NULL;
    if (!ok) {
        ft_param_shards_free(s);
        return ft_error_context("sharding the weights over %d ranks (ZeRO-3)", comm->size);
    }
    if (ft_collective_thread_start(&s->worker, gather_thread, s, "the ZeRO-3 gather thread") < 0) {
        ft_param_shards_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

int ft_param_shards_create(ft_model *model, ft_comm *comm, bool offload_param, bool offload_optimizer,
                           ft_param_shards **out)
{
    size_t *offsets = ft_xcalloc(model->n_weights ? model->n_weights : 1, sizeof *offsets);
    for (size_t i = 0; i < model->n_weights; i++)
        offsets[i] = (size_t)((char *)model->weights[i].value - (char *)model->params) / model->element_bytes;
    ft_param_shards *s = NULL;
    int status = make_shards(model, offsets, comm, offload_param, offload_optimizer, &s);
    free(offsets);
    if (status < 0)
        return -1;
    take_shard(s);
    if (s->master)
        take_master_shard(s);
    free_whole(s);
    model->shards = s;
    model->shard_calls = &shard_calls;
    *out = s;
    return 0;
}

/* The shards' part of the model's plan over `ranks`: the shard (unless
 * offloaded), the two gather buffers and the staging buffer; the master
 * copy's shard unless in host memory. */
static ft_sharded_bytes planned_bytes(const ft_model *model, const size_t *offsets, int ranks, bool offload,
                                      bool master_on_host)
{
    size_t n_units, shard_elements;
    ft_param_unit *units = ft_param_units_plan(model, offsets, ranks, &n_units, &shard_elements);
    size_t largest = 0, largest_owned = 0;
    for (size_t u = 0; u < n_units; u++) {
        largest = units[u].count > largest ? units[u].count : largest;
        largest_owned = units[u].per_rank > largest_owned ? units[u].per_rank : largest_owned;
    }
    free(units);
    size_t elements = WINDOW_UNITS * largest + (offload ? (ranks > 1 ? largest_owned : 0) : shard_elements);
    bool master = ft_model_keeps_master(model) && !master_on_host;
    return (ft_sharded_bytes){elements * model->element_bytes, master ? shard_elements * sizeof(float) : 0};
}

/* Every unit read into a gather buffer, this rank keeping its part. With a
 * master copy a unit is read in float into a buffer of its own, this rank
 * keeps its part of that, and the shard is cast from the master shard. */
static int load_shards(ft_model *model, const size_t *offsets, const char *model_dir, ft_comm *comm, bool offload,
                       bool master_on_host)
{
    ft_param_shards *s = NULL;
    ft_safetensors *set = NULL;
    if (ft_safetensors_open(model_dir, &set) < 0)
        return -1;
    int status = make_shards(model, offsets, comm, offload, master_on_host, &s);
    void *host = status == 0 ? part_buffer(s, s->master ? sizeof(float) : s->element_bytes) : NULL;
    float *floats = NULL;
    if (status == 0 && s->master) {
        size_t largest = 1;
        for (size_t u = 0; u < s->n_units; u++)
            largest = s->units[u].count > largest ? s->units[u].count : largest;
        if (!(floats = model->backend->alloc(model->backend, largest * sizeof(float))))
            status = ft_error_context("loading the float master weights unit by unit (ZeRO-3)");
    }
    ft_param_tensor *loaded = s && s->master ? model->master_weights : model->weights;
    for (size_t u = 0; status == 0 && u < s->n_units; u++) { /* each unit read whole into a buffer */
        const ft_param_unit *unit = &s->units[u];
        char *buffer = s->master ? (char *)floats : s->window[0].buffer;
        size_t element_bytes = s->master ? sizeof(float) : s->element_bytes;
        for (size_t i = unit->first_weight; i < unit->first_weight + unit->n_weights; i++)
            loaded[i].value = (float *)(buffer + (offsets[i] - unit->first) * element_bytes);
        status = ft_model_load_weight_range(model, model_dir, set, unit->first_weight, unit->n_weights);
        if (status == 0 && s->master)
            take_master_unit(s, u, floats, host);
        else if (status == 0)
            take_unit(s, u, buffer, host);
        for (size_t i = unit->first_weight; i < unit->first_weight + unit->n_weights; i++)
            loaded[i].value = NULL;
    }
    if (floats)
        model->backend->free(model->backend, floats);
    free(host);
    ft_safetensors_close(set);
    if (status < 0) {
        ft_param_shards_free(s);
        return -1;
    }
    ft_param_shards_refresh(s);
    model->shards = s;
    model->shard_calls = &shard_calls;
    return 0;
}

int ft_model_load_sharded(const char *model_dir, ft_backend *backend, const ft_model_options *options,
                          ft_comm *comm, bool offload_param, bool offload_optimizer, ft_model **out)
{
    if (comm->size < 2 && !offload_param) /* one rank shards nothing unless the weights stay in host memory */
        return ft_model_load(model_dir, backend, options, out);
    size_t *offsets = NULL;
    ft_model *model = ft_model_open(model_dir, backend, options, &offsets);
    if (!model)
        return -1;
    ft_sharded_bytes sharded = planned_bytes(model, offsets, comm->size, offload_param, offload_optimizer);
    int status = ft_model_allocate(model, offsets, &sharded);
    if (status == 0)
        status = load_shards(model, offsets, model_dir, comm, offload_param, offload_optimizer);
    if (status == 0) /* small and frozen: whole on every rank, read by no unit */
        status = ft_model_load_vision(model, model_dir);
    free(offsets);
    if (status < 0) {
        ft_model_free(model);
        return -1;
    }
    ft_model_finish(model, &sharded);
    *out = model;
    return 0;
}

int ft_param_shards_gather_whole(ft_param_shards *s, bool keep)
{
    drain(s);
    ft_model *m = s->model;
    trained_values v = values_of(s);
    char *whole = keep ? malloc((m->n_params ? m->n_params : 1) * v.element_bytes) : NULL;
    int status = 0;
    for (size_t u = 0; u < s->n_units && status == 0; u++) /* without room, joined all the same */
        status = gather_unit_to_host(s, u, whole ? whole + s->units[u].first * v.element_bytes : NULL);
    if (status == 0 && keep && !whole)
        status = ft_error("out of host memory gathering the whole %s, %zu bytes, for a checkpoint or the result "
                          "(ZeRO-3); free host memory or train with fewer ranks per machine",
                          s->master ? "float master weights" : "weights", m->n_params * v.element_bytes);
    if (status < 0) {
        free(whole);
        return -1;
    }
    if (s->master)
        m->master = (float *)whole;
    else
        m->params = whole;
    m->whole_on_host = whole != NULL;
    point_weights(s);
    return 0;
}

void ft_param_shards_release_whole(ft_param_shards *s) { free_whole(s); }

struct ft_param_values {
    ft_param_shards *shards;
    float *unit_values;        /* the keeping rank's: the unit gathered last; NULL elsewhere */
    size_t largest;            /* the room it needs */
    size_t unit;               /* SIZE_MAX: none */
    size_t next_unit;          /* one past the highest unit gathered so far */
};

int ft_param_values_open(ft_param_shards *s, bool keep, ft_param_values **out)
{
    if (values_of(s).element_bytes != sizeof(float))
        return ft_error("ZeRO-3 writes float values into a checkpoint, and this backend's weights are not float");
    size_t largest = 1;
    for (size_t u = 0; u < s->n_units; u++)
        largest = s->units[u].count > largest ? s->units[u].count : largest;
    ft_param_values *v = ft_xcalloc(1, sizeof *v);
    *v = (ft_param_values){.shards = s, .largest = largest, .unit = SIZE_MAX};
    if (keep) /* without room the gathers are joined all the same, and the read fails */
        v->unit_values = malloc(largest * sizeof(float));
    drain(s);
    *out = v;
    return 0;
}

int ft_param_values_read(ft_param_values *v, size_t weight, float *to)
{
    ft_param_shards *s = v->shards;
    size_t u = unit_of(s, s->weight_offsets[weight]);
    if (u != v->unit) {
        v->unit = SIZE_MAX;
        if (gather_unit_to_host(s, u, (char *)v->unit_values) < 0)
            return -1;
        v->unit = u;
        v->next_unit = u + 1 > v->next_unit ? u + 1 : v->next_unit;
    }
    if (to && !v->unit_values)
        return ft_error("out of host memory gathering a unit of %zu values for a checkpoint (ZeRO-3)", v->largest);
    if (to)
        memcpy(to, v->unit_values + (s->weight_offsets[weight] - s->units[u].first),
               s->model->weights[weight].count * sizeof(float));
    return 0;
}

int ft_param_values_finish(ft_param_values *v)
{
    ft_param_shards *s = v->shards;
    for (size_t u = v->next_unit; u < s->n_units; u++) /* keeping nothing */
        if (gather_unit_to_host(s, u, NULL) < 0)
            return -1;
    v->next_unit = s->n_units;
    return 0;
}

void ft_param_shards_save_through(ft_param_shards *s, ft_param_values *v) { s->model->save_values = v; }

void ft_param_values_close(ft_param_values *v)
{
    if (!v)
        return;
    free(v->unit_values);
    free(v);
}

int ft_param_shards_take_values(ft_param_shards *s, const float *const *values)
{
    trained_values v = values_of(s);
    if (v.element_bytes != sizeof(float))
        return ft_error("ZeRO-3 takes float values into its shard, and this backend's weights are not float");
    settle(s);
    for (size_t u = 0; u < s->n_units; u++) {
        const ft_param_unit *unit = &s->units[u];
        char *owned = v.shard + unit->shard_offset * sizeof(float);
        take_from_pieces(s, unit, values, unit->first + (size_t)s->comm->rank * unit->per_rank, unit->per_rank, owned);
        take_from_pieces(s, unit, values, unit->first + unit->count - unit->shared, unit->shared,
                         owned + unit->per_rank * sizeof(float));
    }
    ft_param_shards_refresh(s);
    return 0;
}

int ft_param_shards_unshard(ft_param_shards *s, bool keep)
{
    int status = ft_param_shards_gather_whole(s, keep);
    ft_param_shards_free(s);
    return status;
}

const ft_param_unit *ft_param_shards_units(const ft_param_shards *s, size_t *count)
{
    *count = s->n_units;
    return s->units;
}

void *ft_param_shards_values(const ft_param_shards *s) { return s->shard; }
float *ft_param_shards_master(const ft_param_shards *s) { return s->master; }
bool ft_param_shards_master_on_host(const ft_param_shards *s) { return s->master_on_host; }
size_t ft_param_shards_master_bytes(const ft_param_shards *s)
{
    return s->master ? s->shard_elements * sizeof(float) : 0;
}
bool ft_param_shards_offloaded(const ft_param_shards *s) { return s->offload; }
size_t ft_param_shards_shard_bytes(const ft_param_shards *s) { return s->shard_elements * s->element_bytes; }
size_t ft_param_shards_gathered_bytes(const ft_param_shards *s) { return s->gathered_bytes; }

ft_comm *ft_param_shards_comm(const ft_param_shards *s) { return s->comm; }

/* Unit u's slot: the one holding it, else (gathering it) an empty one, else
 * the least recently used other than `keep`. */
static slot *slot_for(ft_param_shards *s, size_t u, const slot *keep)
{
    slot *chosen = NULL;
    for (int i = 0; i < WINDOW_UNITS; i++)
        if (s->window[i].unit == u)
            return &s->window[i];
    for (int i = 0; i < WINDOW_UNITS; i++) {
        slot *candidate = &s->window[i];
        if (candidate == keep)
            continue;
        if (!chosen || (chosen->unit != SIZE_MAX &&
                        (candidate->unit == SIZE_MAX || candidate->last_use < chosen->last_use)))
            chosen = candidate;
    }
    wait_slot(s, chosen); /* a gather still writing into it */
    issue_gather(s, chosen, u);
    return chosen;
}

const void *ft_param_shards_weight(ft_param_shards *s, size_t offset)
{
    size_t u = unit_of(s, offset);
    slot *held = slot_for(s, u, NULL);
    wait_slot(s, held);
    if (!held->first_read_done) {
        held->first_read_done = true;
        event_wait(s, s->ready[held - s->window]); /* the compute, behind the gather */
        if (held->issued_at_reads < s->reads) /* other weights were read while it was gathered */
            s->stats.gathered_ahead++;
    }
    s->reads++;
    held->last_use = ++s->uses;
    return (const char *)held->buffer + (offset - s->units[u].first) * s->element_bytes;
}

void ft_param_shards_prefetch(ft_param_shards *s, size_t current, size_t next)
{
    size_t u = unit_of(s, current);
    slot *held = slot_for(s, u, NULL);
    held->last_use = ++s->uses; /* it is in use from now on, so the other slot takes the next unit */
    if (next != SIZE_MAX && unit_of(s, next) != u)
        slot_for(s, unit_of(s, next), held);
}

ft_param_shards_stats ft_param_shards_get_stats(const ft_param_shards *s) { return s->stats; }

void ft_param_shards_set_rider(ft_param_shards *s, const ft_param_shards_rider *rider)
{
    drain(s);
    s->rider = rider ? *rider : (ft_param_shards_rider){0};
    for (int i = 0; i < WINDOW_UNITS; i++) /* what the slots hold was gathered without it */
        s->window[i].unit = SIZE_MAX;
}

int ft_param_shards_end_pass(ft_param_shards *s)
{
    drain(s);
    pthread_mutex_lock(&s->worker.lock);
    for (int i = 0; i < WINDOW_UNITS; i++)
        s->window[i].unit = SIZE_MAX;
    bool failed = s->failed;
    s->failed = false;
    pthread_mutex_unlock(&s->worker.lock);
    return failed ? ft_error("%s (in a ZeRO-3 pass)", s->message) : 0;
}
