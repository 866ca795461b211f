/* param_shards: ZeRO-3's parameters. Each rank keeps only its shard of every
 * base weight (frozen ones included), and a pass reads a layer's weights from
 * a buffer the ranks all-gather just before its first use and free after it.
 *
 * The weights are cut into units: the embeddings, each decoder layer, and the
 * final norm with an untied lm_head. Every unit is split as zero.h splits a
 * span: rank r owns elements [r x per, (r + 1) x per) with per = count /
 * ranks, and the last count - ranks x per (fewer than the ranks) are kept by
 * every rank alike. A shard is the owned part then the shared part of every
 * unit, back to back, in the backend's memory or (offload_param) in
 * page-locked host memory, from where the owned part is uploaded to a staging
 * buffer for the all-gather: the path cuda streams parameters through. Over
 * one rank (comm_solo.h) the shard is every weight, and offload_param uploads
 * a unit straight into its buffer: one GPU streams its weights.
 *
 * A pass holds at most two units at once, in two buffers of the largest
 * unit's size allocated with the shards (so no step allocates): the one in
 * use and the next. The pass says which unit it computes with next
 * (ft_param_shards_prefetch): the next unit's all-gather is issued then, into
 * the other buffer, and runs on the shards' gather thread while the current
 * unit computes, in forward order (embeddings, layer 0, 1, ..., final norm)
 * and in backward's (final norm, the last layer down to layer 0, each
 * layer's recomputation and backward reading one unit). The gather thread is
 * the only user of comm while a pass runs, and runs the gathers in the order
 * they were issued, so every rank's collectives match. On a backend with a
 * side queue (cuda: a second stream, backend.h) the gather thread works there:
 * a buffer's gather waits for the compute issued before it (which may still
 * read the buffer), and the first op to read a unit waits for its gather,
 * through the backend's events, so the copies run beside the compute. A unit read but not
 * held is gathered at once and waited for (the first, and a tied lm_head's
 * embeddings); the least recently used buffer takes it. The buffers are
 * released when the pass ends: forward, the recomputation and backward each
 * gather a unit again.
 *
 * Every rank runs the same ops in the same order, so the gathers match.
 *
 * Full fine-tuning in mixed precision (bf16 weights, model.h's float master
 * copy) shards the master copy alike: each rank keeps the float values of its
 * shard's elements only, in the shard's layout, in the backend's memory or,
 * with offload_optimizer, in its host memory (alloc_host), where AdamW
 * updates them in place (adamw.h). After each step ft_param_shards_refresh
 * casts the master shard into the shard the passes gather. A checkpoint
 * (ft_param_values), the result and kept outputs (the same, a unit at a time)
 * gather the master copy (the values that are trained and saved), not the
 * rounded weights.
 *
 * Those whole values are gathered into host memory, unit by unit, through the
 * gather buffers a pass uses: the backend never holds more of the model than
 * while training, and a rank that writes nothing keeps nothing. A checkpoint
 * holds one unit at a time (ft_param_values), and so do the result and kept
 * outputs (ft_param_shards_save_through); only unshard gathers them whole. */
#ifndef FTPIPE_PARAM_SHARDS_H
#define FTPIPE_PARAM_SHARDS_H

#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/backend/comm.h"
#include "ftpipe/model/model.h"

typedef struct {
    size_t first_weight, n_weights;  /* in ft_model_weights' order */
    size_t first, count;             /* elements of the whole weight layout */
    size_t per_rank, shared;
    size_t shard_offset;             /* the owned part in a shard; the shared part follows */
} ft_param_unit;

typedef struct ft_param_shards ft_param_shards;

/* The units of a model's weights (weight i's first element at
 * weight_offsets[i]) over `ranks`, each with its place in a shard; *n_units of
 * them (ft_xcalloc'd), and the shard's elements. grad_shards.h cuts the
 * gradients of full fine-tuning the same way. */
ft_param_unit *ft_param_units_plan(const ft_model *model, const size_t *weight_offsets, int ranks, size_t *n_units,
                                   size_t *shard_elements);
/* The unit holding element `offset` of the whole layout. */
size_t ft_param_unit_at(const ft_param_unit *units, size_t n_units, size_t offset);

/* Loads a model as ft_model_load does, but with ZeRO-3's shards over comm's
 * ranks from the start: each unit is read into a gathered unit's buffer (in
 * float with a master copy), and this rank keeps its part, so no rank ever
 * holds the whole weights. offload_param: the shard in host memory;
 * offload_optimizer: the master copy's shard in host memory. With one rank:
 * ft_model_load, unless offload_param keeps the weights in host memory. */
int ft_model_load_sharded(const char *model_dir, ft_backend *backend, const ft_model_options *options,
                          ft_comm *comm, bool offload_param, bool offload_optimizer, ft_model **out);

/* The model's shards while ZeRO-3 holds them (the model frees them); NULL: whole. */
ft_param_shards *ft_model_param_shards(const ft_model *model);

/* Cuts the loaded model's weights (and master copy) into this rank's shards
 * and frees the whole buffers; from then on the model's passes read through
 * the shards, and the weights' values are NULL until
 * ft_param_shards_gather_whole. The offloads as ft_model_load_sharded's. */
int ft_param_shards_create(ft_model *model, ft_comm *comm, bool offload_param, bool offload_optimizer,
                           ft_param_shards **out);

/* The end of a run whose trainer has no on_result (trainer.h; the train
 * stage's writes through the shards): every rank joins in gathering the whole trained
 * values (gather_whole's), those that keep them hold them in host memory
 * (ft_model_weights_on_host: to be saved, not run), and the shards are freed.
 * -1 with ft_error (the model then holds no usable weights). */
int ft_param_shards_unshard(ft_param_shards *shards, bool keep);
/* Frees the shards without gathering (after a failure): the model is left
 * without weights, fit only for ft_model_free. */
void ft_param_shards_free(ft_param_shards *shards);

/* The whole trained values in the model, every rank calling (unshard's first
 * half; the program writes its results through ft_param_values instead, a
 * unit at a time): the master copy's floats with one, else the weights
 * (float), in host memory (ft_model_weights_on_host), ft_model_weights'
 * values pointing into them on the ranks that keep them; the others' values
 * stay NULL. release frees them again (for the tests, which gather more than
 * once). */
int ft_param_shards_gather_whole(ft_param_shards *shards, bool keep);
void ft_param_shards_release_whole(ft_param_shards *shards);

/* The whole trained values read for a checkpoint, unit by unit, in the order
 * its file asks for them (checkpoint.h's ft_checkpoint_order), as zero.h's
 * ft_zero_moments reads the moments: every rank reads the same weights in the
 * same order; the unit holding a weight is all-gathered when it is not the
 * one gathered last, into the host memory of the rank that keeps it (keep: it
 * writes the checkpoint) and nowhere else. read puts weight i's floats (the
 * master copy's with one) into `to` (NULL on a rank that keeps nothing). -1
 * with ft_error. */
typedef struct ft_param_values ft_param_values;
int ft_param_values_open(ft_param_shards *shards, bool keep, ft_param_values **out);
int ft_param_values_read(ft_param_values *values, size_t weight, float *to);
/* Read in weight order (a result or a kept output): every rank gathers the
 * units after the last one gathered, keeping nothing, so that a rank that
 * wrote nothing, or stopped writing, joins the gathers of the rest. */
int ft_param_values_finish(ft_param_values *values);
void ft_param_values_close(ft_param_values *values);

/* While a result or kept output is written (model_save.h's ft_model_save, on
 * the rank that keeps the values): the model's weights read through `values`
 * in weight order, a unit at a time, not gathered whole; NULL ends it. */
void ft_param_shards_save_through(ft_param_shards *shards, ft_param_values *values);

/* A resumed checkpoint's values (values[i]: weight i's floats, in host memory,
 * as ft_checkpoint_map_latest gives them): this rank takes its shard's parts,
 * into the master shard with one (and casts the weights' shard from it), else
 * into the shard of float weights. Nothing else is read or held. -1 with
 * ft_error when the shard is not float. */
int ft_param_shards_take_values(ft_param_shards *shards, const float *const *values);

/* A test hook, never called by the program: gathers into host memory move at
 * most `elements` of each rank's part at a time (0: as many as a gather
 * buffer holds), so that the cpu backend's tests cut a unit into several
 * pieces, as bf16 weights with a float master copy do on a GPU. */
void ft_param_shards_test_pieces(size_t elements);

const ft_param_unit *ft_param_shards_units(const ft_param_shards *shards, size_t *count);
/* This rank's shard: every unit's owned then shared elements (f32 when the
 * backend computes in f32), in host memory when offloaded. */
void *ft_param_shards_values(const ft_param_shards *shards);
bool ft_param_shards_offloaded(const ft_param_shards *shards);
/* The float master copy's shard, the shard's layout (NULL: the model keeps no
 * master copy); in host memory when master_on_host says so; its bytes. */
float *ft_param_shards_master(const ft_param_shards *shards);
bool ft_param_shards_master_on_host(const ft_param_shards *shards);
size_t ft_param_shards_master_bytes(const ft_param_shards *shards);
/* After the master shard changed (a step): the shard cast from it, in the
 * backend's dtype. Nothing to do without a master copy, or after a step whose
 * update refreshed each unit itself (below). */
void ft_param_shards_refresh(ft_param_shards *shards);
/* A step's update that runs unit by unit on a thread of its own (zero.h, with
 * the master shard in host memory, or no master copy): begin before it
 * changes the shards, then unit_updated as each unit's values are done, in
 * unit order; it refreshes that unit's shard from the master shard, and a
 * gather of the unit, held back until then, may run. Everything else that
 * reads the shards (a checkpoint, the result, a refresh) waits for the last
 * unit. */
void ft_param_shards_begin_updates(ft_param_shards *shards);
void ft_param_shards_unit_updated(ft_param_shards *shards, size_t unit);

/* The counters: the shard's bytes (host memory when offloaded), and the
 * backend memory of the two gathered units' buffers and the staging buffer. */
size_t ft_param_shards_shard_bytes(const ft_param_shards *shards);
size_t ft_param_shards_gathered_bytes(const ft_param_shards *shards);
/* The ranks the shards are over. */
ft_comm *ft_param_shards_comm(const ft_param_shards *shards);

/* Returns once the gathers issued so far are done: until the next is issued,
 * another user of comm (grad_shards.h, on this thread) may run collectives
 * without the ranks' orders crossing. */
void ft_param_shards_quiet(ft_param_shards *shards);

/* For model_pass: the weight at `offset` of the whole layout, its unit
 * gathered (and waited for) if it is not held. A failed gather is kept for
 * end_pass. */
const void *ft_param_shards_weight(ft_param_shards *shards, size_t offset);
/* For model_pass, before it computes with the unit holding `current`: that
 * unit is the one in use, and the all-gather of the unit holding `next`
 * (SIZE_MAX: none) is issued now into the other buffer, to overlap the
 * compute. Every rank calls it at the same points. */
void ft_param_shards_prefetch(ft_param_shards *shards, size_t current, size_t next);
/* Waits for the pass's gathers and frees the held units; -1 with ft_error
 * when a gather of the pass failed. */
int ft_param_shards_end_pass(ft_param_shards *shards);

/* What the passes gathered, since the shards were made: the units gathered,
 * and of them those gathered ahead: issued before other weights were read,
 * so their all-gather had compute to overlap. */
typedef struct {
    unsigned long gathers;
    unsigned long gathered_ahead;
} ft_param_shards_stats;
ft_param_shards_stats ft_param_shards_get_stats(const ft_param_shards *shards);

/* Something sharded the way the units are that a unit's gather brings along
 * (ZeRO-3's LoRA adapter, adapter_shards.h). place runs on the pass's thread
 * as unit u's gather into gather buffer `slot` (0 or 1) is issued; gather on
 * the gather thread right after the unit's weights, with comm and the side
 * queue to itself (-1 with ft_error fails the pass as a gather does). NULL
 * (or a rider of NULL calls) takes it off; the buffers are emptied either
 * way, so that every unit is gathered anew with it. */
typedef struct {
    void *context;
    void (*place)(void *context, size_t unit, int slot);
    int (*gather)(void *context, size_t unit, int slot);
} ft_param_shards_rider;
void ft_param_shards_set_rider(ft_param_shards *shards, const ft_param_shards_rider *rider);

#endif
