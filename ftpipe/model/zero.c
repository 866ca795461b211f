/* zero: spans, shards and the collectives of ZeRO stages 1, 2 and 3. */
#include "ftpipe/model/zero.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/model/collective_thread.h"
#include "ftpipe/model/data_parallel.h"
#include "ftpipe/model/grad_shards.h"

typedef struct {
    size_t first_tensor, n_tensors;
    float *values, *grads;     /* the span's first element, whole; values NULL when the weights are sharded
                                * (ZeRO-3), grads NULL when the gradients are (grad_shards.h) */
    float *owned_values;       /* this rank's owned part's values: in the whole tensors, or in its ZeRO-3 shard */
    float *shared_values;      /* the shared part's */
    float *owned_grads, *shared_grads; /* likewise, in the whole gradients or in the gradients' shard */
    size_t count;
    size_t per_rank;           /* the owned part of every rank */
    size_t shared;             /* count - ranks x per_rank, updated by every rank */
    size_t whole_offset;       /* the span's first element in a whole optimizer's moments */
    size_t shard_offset;       /* its owned part in this rank's moments; the shared part follows */
    size_t first_piece, n_pieces; /* its pieces, this rank's parts of its tensors */
} span;

struct ft_zero {
    ft_backend *backend;
    ft_comm *comm;
    int stage;
    ft_param_shards *params;   /* ZeRO-3 of full fine-tuning: the values are the weights' shards */
    ft_adapter_shards *adapter; /* ZeRO-3 of LoRA: a layer's adapter values are its part there */
    ft_grad_shards *grad_shards; /* ZeRO-2 and 3 of full fine-tuning: the weights' gradients' shard */
    const ft_param_tensor *tensors;
    size_t n_tensors;
    ft_adamw_config config;
    span *spans;
    size_t n_spans, spans_capacity;
    ft_param_tensor *pieces;   /* this rank's parts of the tensors, for the shard's optimizer */
    size_t n_pieces, pieces_capacity, flags_capacity;
    bool *piece_shared;        /* piece i is of a span's shared part (for the norm) */
    ft_adamw *optimizer;
    const float **whole_grads; /* every tensor's gradient, for stage 1's whole norm */
    size_t *counts;
    /* ZeRO-3 of full fine-tuning with offload_optimizer: the step runs unit by
     * unit (a span is a unit) on this thread, while the next pass gathers the
     * units already updated (param_shards.h): AdamW on the host overlaps the
     * GPU's next work */
    ft_collective_thread updater;
    bool updating;             /* a step's update is under way (under updater.lock) */
    double update_rate;
    bool offload;              /* offload_optimizer: AdamW on the host */
    ft_update_gate *gate;      /* ZeRO-1 and 2 with offload_optimizer: the update beside the next pass */
    size_t *span_position;     /* with it: span s's position (update_gate.h) */
};

static span *add_span(ft_zero *z, span s)
{
    ft_grow((void **)&z->spans, &z->spans_capacity, z->n_spans + 1, sizeof *z->spans);
    z->spans[z->n_spans] = s;
    return &z->spans[z->n_spans++];
}

/* Tensors [first, n_tensors) in runs of one decoder layer (or of none) whose
 * values and gradients are both back to back: a checkpoint gathers a span's
 * moments at a time, so no span is larger than a layer or the embeddings. */
static void plan_spans(ft_zero *z, size_t first)
{
    size_t whole = 0, ranks = (size_t)z->comm->size, from = z->n_spans;
    for (size_t i = 0; i < first; i++)
        whole += z->tensors[i].count;
    for (size_t i = first; i < z->n_tensors; i++) {
        const ft_param_tensor *t = &z->tensors[i];
        span *last = z->n_spans > from ? &z->spans[z->n_spans - 1] : NULL;
        /* with the adapter's parts the whole values are gone: a layer's tensors join by their gradients */
        bool values_follow = last && (z->adapter || last->values + last->count == t->value);
        if (last && values_follow && last->grads + last->count == t->grad &&
            ft_param_layer(z->tensors[last->first_tensor].name) == ft_param_layer(t->name)) {
            last->n_tensors++;
            last->count += t->count;
        } else {
            add_span(z, (span){.first_tensor = i, .n_tensors = 1, .values = t->value, .grads = t->grad,
                               .count = t->count, .whole_offset = whole});
        }
        whole += t->count;
    }
    for (size_t s = from; s < z->n_spans; s++) {
        span *sp = &z->spans[s];
        size_t mine = (size_t)z->comm->rank * (sp->count / ranks);
        sp->per_rank = sp->count / ranks;
        sp->shared = sp->count - ranks * sp->per_rank;
        sp->owned_values = sp->values + mine;
        sp->shared_values = sp->values + sp->count - sp->shared;
        sp->owned_grads = sp->grads + mine;
        sp->shared_grads = sp->grads + sp->count - sp->shared;
        int layer = z->adapter ? ft_param_layer(z->tensors[sp->first_tensor].name) : -1;
        if (layer >= 0 && sp->count == ft_adapter_shards_layer_values(z->adapter)) { /* no whole values to gather */
            sp->values = NULL;
            sp->owned_values = ft_adapter_shards_part(z->adapter, layer);
            sp->shared_values = sp->owned_values + sp->per_rank;
        }
    }
}

/* Full fine-tuning at stage 2 or 3: one span per unit of the weights (the
 * trained tensors' first ones), whose gradients are the gradients' shard. The
 * values updated are the whole weights' (stage 2), or at stage 3 their shard,
 * or their float master copy's shard when there is one. Returns the tensors
 * the units cover. */
static size_t plan_unit_spans(ft_zero *z)
{
    size_t n_units, covered = 0;
    const ft_param_unit *units = ft_grad_shards_units(z->grad_shards, &n_units);
    float *grads = ft_grad_shards_shard(z->grad_shards), *shard = NULL;
    if (z->params)
        shard = ft_param_shards_master(z->params) ? ft_param_shards_master(z->params)
                                                  : ft_param_shards_values(z->params);
    for (size_t u = 0; u < n_units; u++) {
        const ft_param_unit *unit = &units[u];
        span *sp = add_span(z, (span){.first_tensor = unit->first_weight, .n_tensors = unit->n_weights,
                                      .count = unit->count, .per_rank = unit->per_rank, .shared = unit->shared,
                                      .whole_offset = unit->first,
                                      .owned_grads = grads + unit->shard_offset,
                                      .shared_grads = grads + unit->shard_offset + unit->per_rank});
        if (shard) {
            sp->owned_values = shard + unit->shard_offset;
            sp->shared_values = sp->owned_values + unit->per_rank;
        } else {
            sp->values = z->tensors[unit->first_weight].value;
            sp->owned_values = sp->values + (size_t)z->comm->rank * unit->per_rank;
            sp->shared_values = sp->values + unit->count - unit->shared;
        }
        covered = unit->first_weight + unit->n_weights;
    }
    return covered;
}

/* Adds the parts of span s's tensors within [from, to) of the span, whose
 * values and gradients start at `values` and `grads`. */
static void add_pieces(ft_zero *z, const span *s, size_t from, size_t to, float *values, float *grads, bool shared)
{
    size_t at = 0;
    for (size_t i = s->first_tensor; i < s->first_tensor + s->n_tensors; i++) {
        const ft_param_tensor *t = &z->tensors[i];
        size_t start = from > at ? from : at, end = to < at + t->count ? to : at + t->count;
        if (start < end) {
            ft_grow((void **)&z->pieces, &z->pieces_capacity, z->n_pieces + 1, sizeof *z->pieces);
            ft_grow((void **)&z->piece_shared, &z->flags_capacity, z->n_pieces + 1, sizeof *z->piece_shared);
            z->pieces[z->n_pieces] = (ft_param_tensor){t->name, values + (start - from), grads + (start - from),
                                                       end - start, t->weight_decay, 1, {(int64_t)(end - start), 0}};
            z->piece_shared[z->n_pieces++] = shared;
        }
        at += t->count;
    }
}

/* The update thread: each step's update, a span (a unit) at a time in unit
 * order, each unit's shard refreshed as soon as its values are done. */
static void *update_units(void *argument)
{
    ft_zero *z = argument;
    if (z->backend->use_side_queue) /* its copies (a refreshed shard going up) beside the compute */
        z->backend->use_side_queue(z->backend, true);
    pthread_mutex_lock(&z->updater.lock);
    for (;;) {
        while (!z->updater.stopping && !z->updating)
            pthread_cond_wait(&z->updater.changed, &z->updater.lock);
        if (z->updater.stopping)
            break;
        double learning_rate = z->update_rate;
        pthread_mutex_unlock(&z->updater.lock);
        for (size_t s = 0; s < z->n_spans; s++) {
            ft_adamw_step_tensors(z->optimizer, learning_rate, z->spans[s].first_piece, z->spans[s].n_pieces);
            ft_param_shards_unit_updated(z->params, s);
        }
        pthread_mutex_lock(&z->updater.lock);
        z->updating = false;
        pthread_cond_broadcast(&z->updater.changed);
    }
    pthread_mutex_unlock(&z->updater.lock);
    return NULL;
}

void ft_zero_wait(ft_zero *z)
{
    ft_update_gate_finish(z->gate); /* a failure is the trainer's to report, at its own finish */
    if (!z->updater.started)
        return;
    pthread_mutex_lock(&z->updater.lock);
    while (z->updating)
        pthread_cond_wait(&z->updater.changed, &z->updater.lock);
    pthread_mutex_unlock(&z->updater.lock);
}

int ft_zero_create(ft_backend *backend, ft_comm *comm, int stage, ft_param_shards *params,
                   ft_grad_shards *grad_shards, ft_adapter_shards *adapter, const ft_param_tensor *tensors,
                   size_t count, const ft_adamw_config *config, bool offload, ft_zero **out)
{
    if (stage < 1 || stage > 3)
        return ft_error("ZeRO stage %d: the trainer shards stages 1, 2 and 3", stage);
    if ((params && !grad_shards) || (grad_shards && stage < 2))
        return ft_error("ZeRO-%d: sharded weights come with sharded gradients, and those with stage 2 or 3", stage);
    ft_zero *z = ft_xcalloc(1, sizeof *z);
    *z = (ft_zero){.backend = backend, .comm = comm, .stage = stage, .params = params, .grad_shards = grad_shards,
                   .adapter = adapter, .tensors = tensors, .n_tensors = count, .config = *config, .offload = offload};
    plan_spans(z, grad_shards ? plan_unit_spans(z) : 0); /* a trained projector's tensors follow the weights */
    size_t shard = 0;
    for (size_t s = 0; s < z->n_spans; s++) {
        span *sp = &z->spans[s];
        size_t mine = (size_t)comm->rank * sp->per_rank;
        sp->shard_offset = shard;
        sp->first_piece = z->n_pieces;
        add_pieces(z, sp, mine, mine + sp->per_rank, sp->owned_values, sp->owned_grads, false);
        add_pieces(z, sp, sp->count - sp->shared, sp->count, sp->shared_values, sp->shared_grads, true);
        sp->n_pieces = z->n_pieces - sp->first_piece;
        shard += sp->per_rank + sp->shared;
    }
    z->whole_grads = ft_xcalloc(count ? count : 1, sizeof *z->whole_grads);
    z->counts = ft_xcalloc(count ? count : 1, sizeof *z->counts);
    for (size_t i = 0; i < count; i++) {
        z->whole_grads[i] = tensors[i].grad;
        z->counts[i] = tensors[i].count;
    }
    /* a master shard in host memory is AdamW's host copy itself */
    bool values_on_host = params && ft_param_shards_master(params) && ft_param_shards_master_on_host(params);
    bool grads_on_host = grad_shards && ft_grad_shards_on_host(grad_shards); /* AdamW reads them in place */
    int made = values_on_host ? ft_adamw_create_on_host(backend, z->pieces, z->n_pieces, config, grads_on_host,
                                                        &z->optimizer)
               : offload      ? ft_adamw_create_offloaded(backend, z->pieces, z->n_pieces, config, grads_on_host,
                                                          &z->optimizer)
                              : ft_adamw_create(backend, z->pieces, z->n_pieces, config, &z->optimizer);
    if (made < 0) {
        ft_zero_free(z);
        return ft_error_context("ZeRO-%d's shard of the optimizer", stage);
    }
    /* the units updated one by one as the next pass needs them; without a thread, all at once */
    size_t n_units = 0;
    if (params && offload && (!ft_param_shards_master(params) || values_on_host)) {
        ft_param_shards_units(params, &n_units);
        if (n_units == z->n_spans &&
            ft_collective_thread_start(&z->updater, update_units, z, "the ZeRO-3 update thread") < 0)
            ft_error_clear();
    }
    *out = z;
    return 0;
}

void ft_zero_free(ft_zero *z)
{
    if (!z)
        return;
    ft_zero_wait(z);
    ft_collective_thread_stop(&z->updater, z->comm, ft_collective_thread_never_blocked, NULL);
    ft_update_gate_free(z->gate);
    free(z->span_position);
    ft_adamw_free(z->optimizer);
    free(z->spans);
    free(z->pieces);
    free(z->piece_shared);
    free(z->whole_grads);
    free(z->counts);
    free(z);
}

const ft_adamw *ft_zero_shard_optimizer(const ft_zero *z) { return z->optimizer; }

int ft_zero_reduce_gradients(ft_zero *z)
{
    if (z->stage < 2)
        return 0;
    for (size_t s = 0; s < z->n_spans; s++) {
        span *sp = &z->spans[s];
        if (!sp->grads) /* reduce-scattered during backward (grad_shards.h) */
            continue;
        if ((sp->per_rank > 0 &&
             z->comm->reduce_scatter_sum(z->comm, sp->grads, sp->owned_grads, sp->per_rank, FT_COMM_F32) < 0) ||
            (sp->shared > 0 && z->comm->all_reduce_sum(z->comm, sp->shared_grads, sp->shared, FT_COMM_F32) < 0))
            return ft_error_context("reduce-scattering the gradients over the ranks (ZeRO-2)");
    }
    return 0;
}

/* The sum of squares of the pieces that are (or are not) shared. */
static double piece_squares(ft_zero *z, bool shared)
{
    const float **grads = ft_xcalloc(z->n_pieces ? z->n_pieces : 1, sizeof *grads);
    size_t *counts = ft_xcalloc(z->n_pieces ? z->n_pieces : 1, sizeof *counts), n = 0;
    for (size_t i = 0; i < z->n_pieces; i++)
        if (z->piece_shared[i] == shared) {
            grads[n] = z->pieces[i].grad;
            counts[n++] = z->pieces[i].count;
        }
    double sum = n ? ft_adamw_grad_squares(z->optimizer, grads, counts, n) : 0.0; /* where the gradients are */
    free(grads);
    free(counts);
    return sum;
}

int ft_zero_clip_grad_norm(ft_zero *z, double max_norm, double *norm)
{
    ft_zero_wait(z);
    ft_backend *backend = z->backend;
    if (z->stage < 2) { /* every rank holds the whole sum: the norm of one rank */
        *norm = sqrt(backend->sum_squares(backend, z->whole_grads, z->counts, z->n_tensors));
    } else {
        double owned = piece_squares(z, false);
        if (z->comm->all_reduce_sum(z->comm, &owned, 1, FT_COMM_F64) < 0)
            return ft_error_context("adding the gradient norm over the ranks (ZeRO-2)");
        *norm = sqrt(owned + piece_squares(z, true));
    }
    double coefficient = max_norm / (*norm + 1e-6);
    if (max_norm > 0.0 && coefficient < 1.0)
        for (size_t i = 0; i < z->n_pieces; i++)
            ft_adamw_scale_grad(z->optimizer, z->pieces[i].grad, z->pieces[i].count, (float)coefficient);
    return 0;
}

/* ZeRO-1 and 2 beside the next pass: position p's spans updated on the
 * gate's thread, then all-gathered over the ranks on the pass's. */
static int update_position(void *context, size_t position, double learning_rate)
{
    ft_zero *z = context;
    for (size_t s = 0; s < z->n_spans; s++)
        if (z->span_position[s] == position)
            ft_adamw_step_tensors(z->optimizer, learning_rate, z->spans[s].first_piece, z->spans[s].n_pieces);
    return 0;
}

static int gather_position(void *context, size_t position, double learning_rate)
{
    ft_zero *z = context;
    (void)learning_rate;
    for (size_t s = 0; s < z->n_spans; s++) {
        span *sp = &z->spans[s];
        if (z->span_position[s] != position || !sp->values || sp->per_rank == 0)
            continue;
        if (z->comm->all_gather(z->comm, sp->owned_values, sp->values, sp->per_rank * sizeof(float)) < 0)
            return ft_error_context("all-gathering the updated values over the ranks (ZeRO-%d)", z->stage);
    }
    return 0;
}

int ft_zero_update_beside_passes(ft_zero *z, ft_model *model, ft_update_gate **gate)
{
    *gate = NULL;
    /* ZeRO-3 has its own thread (or, with LoRA, gathers parts the pass could reach before their update: the
     * adapter's update is small); in place, the GPU updates in no time */
    if (z->params || z->adapter || !z->offload)
        return 0;
    z->span_position = ft_xcalloc(z->n_spans ? z->n_spans : 1, sizeof *z->span_position);
    for (size_t s = 0; s < z->n_spans; s++)
        z->span_position[s] = ft_update_gate_position_of(z->tensors[z->spans[s].first_tensor].name);
    if (ft_update_gate_create(model, update_position, gather_position, z, &z->gate) < 0)
        return -1;
    *gate = z->gate;
    return 0;
}

int ft_zero_step(ft_zero *z, double learning_rate)
{
    if (z->gate) { /* the gradients down now, the update beside the next pass */
        if (ft_update_gate_finish(z->gate) < 0)
            return -1;
        ft_adamw_fetch_grads(z->optimizer);
        ft_adamw_step_begin(z->optimizer);
        ft_update_gate_start(z->gate, learning_rate);
        return 0;
    }
    if (z->updater.started) { /* the update thread takes it, unit by unit */
        ft_zero_wait(z);
        ft_adamw_step_begin(z->optimizer);
        ft_param_shards_begin_updates(z->params);
        pthread_mutex_lock(&z->updater.lock);
        z->update_rate = learning_rate;
        z->updating = true;
        pthread_cond_broadcast(&z->updater.changed);
        pthread_mutex_unlock(&z->updater.lock);
        return 0;
    }
    ft_adamw_step(z->optimizer, learning_rate);
    for (size_t s = 0; s < z->n_spans; s++) {
        span *sp = &z->spans[s];
        /* ZeRO-3's shards are the values (no whole ones here): the next pass gathers them */
        if (sp->values && sp->per_rank > 0 &&
            z->comm->all_gather(z->comm, sp->owned_values, sp->values, sp->per_rank * sizeof(float)) < 0)
            return ft_error_context("all-gathering the updated values over the ranks (ZeRO-%d)", z->stage);
    }
    return 0;
}

/* Staging for gathering moments: at most this many elements of each rank at once. */
#define GATHER_CHUNK ((size_t)1 << 20)

/* count floats from the shard's memory (host memory when offloaded) to host. */
static void to_host(ft_zero *z, bool on_host, float *to, const float *from, size_t count)
{
    if (on_host)
        memcpy(to, from, count * sizeof(float));
    else if (count > 0)
        z->backend->download(z->backend, to, from, count * sizeof(float));
}

static void from_host(ft_zero *z, bool on_host, float *to, const float *from, size_t count)
{
    if (on_host)
        memcpy(to, from, count * sizeof(float));
    else if (count > 0)
        z->backend->upload(z->backend, to, from, count * sizeof(float));
}

struct ft_zero_moments {
    ft_zero *z;
    bool on_host;              /* offloaded: the shard's moments are host memory */
    float *staging;            /* ranks x GATHER_CHUNK at most, in the shard's kind of memory */
    float *halves;             /* the writing rank's: the span's exp_avg, then its exp_avg_sq; NULL elsewhere */
    size_t halves_floats;      /* what the writing rank asked for (0: it keeps nothing) */
    size_t span;               /* the span gathered last; SIZE_MAX: none */
};

int ft_zero_moments_open(ft_zero *z, bool keep, ft_zero_moments **out)
{
    ft_zero_wait(z);
    size_t ranks = (size_t)z->comm->size, chunk = 0, largest = 0;
    for (size_t s = 0; s < z->n_spans; s++) {
        chunk = z->spans[s].per_rank > chunk ? z->spans[s].per_rank : chunk;
        largest = z->spans[s].count > largest ? z->spans[s].count : largest;
    }
    chunk = chunk < GATHER_CHUNK ? chunk : GATHER_CHUNK;
    ft_zero_moments *m = ft_xcalloc(1, sizeof *m);
    *m = (ft_zero_moments){.z = z, .on_host = ft_adamw_host_moments(z->optimizer) != NULL, .span = SIZE_MAX};
    size_t staging = (chunk ? chunk : 1) * ranks * sizeof(float);
    m->staging = m->on_host ? malloc(staging) : z->backend->alloc(z->backend, staging);
    if (keep) { /* without room the gathers are joined all the same, and the read fails */
        m->halves_floats = largest ? 2 * largest : 1;
        m->halves = malloc(m->halves_floats * sizeof(float));
    }
    if (!m->staging) {
        ft_zero_moments_close(m);
        return ft_error_context("gathering ZeRO-%d's optimizer for a checkpoint", z->stage);
    }
    *out = m;
    return 0;
}

void ft_zero_moments_close(ft_zero_moments *m)
{
    if (!m)
        return;
    if (m->staging && m->on_host)
        free(m->staging);
    else if (m->staging)
        m->z->backend->free(m->z->backend, m->staging);
    free(m->halves);
    free(m);
}

/* Span s's two halves gathered into m->halves (nothing kept without them). */
static int gather_span(ft_zero_moments *m, size_t s)
{
    ft_zero *z = m->z;
    const span *sp = &z->spans[s];
    size_t ranks = (size_t)z->comm->size, chunk = sp->per_rank < GATHER_CHUNK ? sp->per_rank : GATHER_CHUNK;
    float *shard_halves[2];
    ft_adamw_moments(z->optimizer, 0, &shard_halves[0], &shard_halves[1]);
    for (int h = 0; h < 2; h++) {
        float *to = m->halves ? m->halves + (size_t)h * sp->count : NULL, *from = shard_halves[h] + sp->shard_offset;
        for (size_t first = 0; first < sp->per_rank; first += chunk) {
            size_t n = sp->per_rank - first < chunk ? sp->per_rank - first : chunk;
            if (z->comm->all_gather(z->comm, from + first, m->staging, n * sizeof(float)) < 0)
                return ft_error_context("gathering ZeRO-%d's optimizer for a checkpoint", z->stage);
            for (size_t r = 0; to && r < ranks; r++)
                to_host(z, m->on_host, to + r * sp->per_rank + first, m->staging + r * n, n);
        }
        if (to)
            to_host(z, m->on_host, to + sp->count - sp->shared, from + sp->per_rank, sp->shared);
    }
    return 0;
}

int ft_zero_moments_read(ft_zero_moments *m, size_t tensor, int half, float *to)
{
    ft_zero *z = m->z;
    size_t s = 0;
    while (s + 1 < z->n_spans && z->spans[s + 1].first_tensor <= tensor)
        s++;
    if (s != m->span) {
        m->span = SIZE_MAX;
        if (gather_span(m, s) < 0)
            return -1;
        m->span = s;
    }
    if (!to)
        return 0;
    if (!m->halves)
        return ft_error("out of host memory gathering a span of ZeRO-%d's optimizer for a checkpoint (%zu floats)",
                        z->stage, m->halves_floats);
    size_t at = 0;
    for (size_t i = z->spans[s].first_tensor; i < tensor; i++)
        at += z->tensors[i].count;
    memcpy(to, m->halves + (size_t)half * z->spans[s].count + at, z->tensors[tensor].count * sizeof(float));
    return 0;
}

/* Elements [first, first + n) of the trained tensors' flat order (the
 * moments' host form) from `pieces`, one per tensor, into the shard's `to`. */
static void take_flat(ft_zero *z, bool on_host, float *to, const float *const *pieces, size_t first, size_t n)
{
    for (size_t i = 0, start = 0; i < z->n_tensors && n > 0; start += z->tensors[i].count, i++) {
        size_t count = z->tensors[i].count;
        if (first >= start + count)
            continue;
        size_t at = first - start, run = count - at < n ? count - at : n;
        from_host(z, on_host, to, pieces[i] + at, run);
        to += run;
        first += run;
        n -= run;
    }
}

void ft_zero_take_moments(ft_zero *z, const float *const *exp_avg, const float *const *exp_avg_sq, int64_t steps)
{
    ft_zero_wait(z);
    ft_adamw_set_step_count(z->optimizer, steps);
    bool on_host = ft_adamw_host_moments(z->optimizer) != NULL;
    float *shard_halves[2];
    ft_adamw_moments(z->optimizer, 0, &shard_halves[0], &shard_halves[1]);
    const float *const *pieces[2] = {exp_avg, exp_avg_sq};
    for (size_t s = 0; s < z->n_spans; s++) {
        const span *sp = &z->spans[s];
        for (int h = 0; h < 2; h++) {
            float *to = shard_halves[h] + sp->shard_offset;
            take_flat(z, on_host, to, pieces[h], sp->whole_offset + (size_t)z->comm->rank * sp->per_rank,
                      sp->per_rank);
            take_flat(z, on_host, to + sp->per_rank, pieces[h], sp->whole_offset + sp->count - sp->shared,
                      sp->shared);
        }
    }
    ft_adamw_reload_values(z->optimizer); /* the resumed values, into an offloaded master copy */
}
