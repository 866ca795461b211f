/* adapter_shards: this rank's parts of a LoRA adapter's layers, gathered with
 * the units of ZeRO-3's weights. */
#include "ftpipe/model/adapter_shards.h"

#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/model/lora.h"
#include "model_internal.h"

struct ft_adapter_shards {
    ft_model *model;
    ft_backend *backend;
    ft_comm *comm;
    ft_param_shards *params;
    ft_lora *lora;
    int layers;
    size_t n;                 /* a layer's values */
    size_t per_rank, shared;  /* a layer's part: per_rank owned, then the shared rest */
    float *parts;             /* backend memory: layer l's part at l x (per_rank + shared) */
    float *buffers[2];        /* the layer held in each gather buffer, whole */
};

static size_t part_size(const ft_adapter_shards *a) { return a->per_rank + a->shared; }

float *ft_adapter_shards_part(const ft_adapter_shards *a, int layer)
{
    return a->parts + (size_t)layer * part_size(a);
}

/* The layer's adapter from every rank's part into `to` (backend memory), a layer's whole values. */
static int gather_layer(ft_adapter_shards *a, int layer, float *to)
{
    const float *mine = ft_adapter_shards_part(a, layer);
    if (a->per_rank > 0 && a->comm->all_gather(a->comm, mine, to, a->per_rank * sizeof(float)) < 0)
        return ft_error_context("all-gathering layer %d's LoRA adapter over the ranks (ZeRO-3)", layer);
    a->backend->copy(a->backend, to + (size_t)a->comm->size * a->per_rank, mine + a->per_rank,
                     a->shared * sizeof(float));
    return 0;
}

/* Unit u is layer u - 1's (units: the embeddings, each layer, the final unit). */
static bool is_layer(const ft_adapter_shards *a, size_t unit) { return unit >= 1 && unit <= (size_t)a->layers; }

static void place(void *context, size_t unit, int slot)
{
    ft_adapter_shards *a = context;
    if (is_layer(a, unit))
        ft_lora_place_layer(a->lora, (int)unit - 1, a->buffers[slot]);
}

static int gather(void *context, size_t unit, int slot)
{
    ft_adapter_shards *a = context;
    return is_layer(a, unit) ? gather_layer(a, (int)unit - 1, a->buffers[slot]) : 0;
}

static void free_shards(void *shards) { ft_adapter_shards_free(shards); }

int ft_adapter_shards_create(ft_model *model, ft_param_shards *params, ft_adapter_shards **out)
{
    *out = NULL;
    ft_lora *lora = ft_model_lora(model);
    ft_comm *comm = ft_param_shards_comm(params);
    size_t n = lora ? ft_lora_layer_values(lora) : 0;
    if (n == 0 || comm->size < 2)
        return 0;
    ft_backend *b = model->backend;
    ft_adapter_shards *a = ft_xcalloc(1, sizeof *a);
    size_t ranks = (size_t)comm->size, per_rank = n / ranks;
    *a = (ft_adapter_shards){.model = model, .backend = b, .comm = comm, .params = params, .lora = lora,
                             .layers = model->config.num_hidden_layers, .n = n, .per_rank = per_rank,
                             .shared = n - ranks * per_rank};
    bool ok = (a->parts = b->alloc(b, (size_t)a->layers * part_size(a) * sizeof(float))) != NULL;
    for (int i = 0; i < 2 && ok; i++)
        ok = (a->buffers[i] = b->alloc(b, n * sizeof(float))) != NULL;
    if (!ok) {
        ft_adapter_shards_free(a);
        return ft_error_context("sharding the LoRA adapter over %d ranks (ZeRO-3)", comm->size);
    }
    const float *whole = ft_lora_tensors(lora, &(size_t){0})[0].value; /* layer 0's first, the layout's start */
    for (int l = 0; l < a->layers; l++) {
        const float *layer = whole + (size_t)l * n;
        float *part = ft_adapter_shards_part(a, l);
        b->copy(b, part, layer + (size_t)comm->rank * per_rank, per_rank * sizeof(float));
        b->copy(b, part + per_rank, layer + n - a->shared, a->shared * sizeof(float));
    }
    *out = a;
    return 0;
}

void ft_adapter_shards_start(ft_adapter_shards *a)
{
    ft_lora_release_values(a->lora);
    ft_param_shards_set_rider(a->params, &(ft_param_shards_rider){a, place, gather});
    a->model->adapter_shards = a;
    a->model->adapter_shards_free = free_shards;
}

ft_adapter_shards *ft_model_adapter_shards(const ft_model *model) { return model->adapter_shards; }

void ft_adapter_shards_free(ft_adapter_shards *a)
{
    if (!a)
        return;
    if (a->model->adapter_shards == a) { /* the layers read the buffers freed here: they read nothing now */
        ft_param_shards_set_rider(a->params, NULL);
        ft_lora_release_values(a->lora);
        a->model->adapter_shards = NULL;
    }
    if (a->parts)
        a->backend->free(a->backend, a->parts);
    for (int i = 0; i < 2; i++)
        if (a->buffers[i])
            a->backend->free(a->backend, a->buffers[i]);
    free(a);
}

int ft_adapter_shards_gather_to_host(ft_adapter_shards *a, float *to)
{
    ft_param_shards_quiet(a->params); /* comm is this thread's */
    int status = 0;
    for (int l = 0; l < a->layers && status == 0; l++) {
        status = gather_layer(a, l, a->buffers[0]);
        if (status == 0 && to)
            a->backend->download(a->backend, to + (size_t)l * a->n, a->buffers[0], a->n * sizeof(float));
    }
    /* the buffer held a layer a pass may think gathered: every unit is gathered anew */
    ft_param_shards_set_rider(a->params, &(ft_param_shards_rider){a, place, gather});
    return status;
}

void ft_adapter_shards_take(ft_adapter_shards *a, const float *const *values)
{
    size_t n_tensors;
    const ft_param_tensor *tensors = ft_lora_tensors(a->lora, &n_tensors);
    size_t per_layer = n_tensors / (size_t)a->layers, mine = (size_t)a->comm->rank * a->per_rank;
    size_t shared_from = a->n - a->shared;
    float *part = ft_xmalloc((part_size(a) ? part_size(a) : 1) * sizeof(float));
    for (int l = 0; l < a->layers; l++) {
        size_t at = 0; /* tensor j's first element within the layer */
        for (size_t j = (size_t)l * per_layer; j < (size_t)(l + 1) * per_layer; at += tensors[j].count, j++) {
            size_t end = at + tensors[j].count;
            /* the owned range [mine, mine + per_rank) and the shared one [shared_from, n) of the layer */
            size_t ranges[2][2] = {{mine, mine + a->per_rank}, {shared_from, a->n}};
            size_t into[2] = {0, a->per_rank};
            for (int r = 0; r < 2; r++) {
                size_t from = ranges[r][0] > at ? ranges[r][0] : at, to = ranges[r][1] < end ? ranges[r][1] : end;
                if (from < to)
                    memcpy(part + into[r] + (from - ranges[r][0]), values[j] + (from - at), (to - from) * sizeof(float));
            }
        }
        a->backend->upload(a->backend, ft_adapter_shards_part(a, l), part, part_size(a) * sizeof(float));
    }
    free(part);
}

size_t ft_adapter_shards_layer_values(const ft_adapter_shards *a) { return a->n; }

size_t ft_adapter_shards_bytes(const ft_adapter_shards *a)
{
    return ((size_t)a->layers * part_size(a) + 2 * a->n) * sizeof(float);
}
