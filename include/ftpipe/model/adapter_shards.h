/* adapter_shards: ZeRO-3's LoRA adapter. Each rank keeps its part of every
 * decoder layer's adapter values, split as a unit of the weights is (rank r
 * owns elements [r x per, (r + 1) x per) of the layer's n, per = n / ranks,
 * and every rank the last n - ranks x per), in the backend's memory. A
 * layer's adapter rides with its unit's gather (param_shards.h's rider): it
 * is all-gathered into a buffer of the unit's gather buffer, where the
 * adapter reads it (ft_lora_place_layer) while the pass holds the unit. The
 * gradients stay whole on every rank during backward, as at stage 2 (zero.h
 * reduce-scatters them after it), and AdamW updates this rank's part in place
 * (ft_adapter_shards_part).
 *
 * The backend never holds the adapter whole again: a checkpoint and the
 * result read it layer by layer through a gather buffer into the host memory
 * of the rank that writes (ft_adapter_shards_gather_to_host), and a resumed
 * checkpoint's values go straight into the parts (ft_adapter_shards_take).
 * The model keeps the shards from the first run that makes them to
 * ft_model_free, so that another run over the same ranks trains on. An
 * adapter with a projector's adapters (ft_lora_layer_values 0) is left whole,
 * and so is one rank's. */
#ifndef FTPIPE_ADAPTER_SHARDS_H
#define FTPIPE_ADAPTER_SHARDS_H

#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/model/model.h"
#include "ftpipe/model/param_shards.h"

typedef struct ft_adapter_shards ft_adapter_shards;

/* This rank's parts of the model's adapter, over the ranks of its ZeRO-3
 * shards (params), taken from the adapter's whole values, which stay until
 * ft_adapter_shards_start. *out NULL (and 0) when nothing is sharded: one
 * rank, no adapter, or a projector's adapters. -1 with ft_error. */
int ft_adapter_shards_create(ft_model *model, ft_param_shards *params, ft_adapter_shards **out);
/* The whole values freed: from now on the passes gather the layers, and the
 * model owns the shards (ft_model_free frees them). */
void ft_adapter_shards_start(ft_adapter_shards *shards);
/* The shards the model owns (after ft_adapter_shards_start); NULL: none. */
ft_adapter_shards *ft_model_adapter_shards(const ft_model *model);
/* Frees the shards: before ft_adapter_shards_start the adapter stays whole;
 * after it (a failed run) it is left without values, fit for ft_model_free. */
void ft_adapter_shards_free(ft_adapter_shards *shards);

/* The whole adapter in the values' layout (the order of ft_lora_tensors),
 * every rank joining each layer's gather: into `to` on the rank that keeps it,
 * nowhere with NULL. No pass may be under way. -1 with ft_error. */
int ft_adapter_shards_gather_to_host(ft_adapter_shards *shards, float *to);
/* A resumed checkpoint's values (values[i]: the adapter's tensor i's floats,
 * in host memory): this rank's parts of them. */
void ft_adapter_shards_take(ft_adapter_shards *shards, const float *const *values);
/* For ZeRO's update (zero.h): layer l's part, its owned then shared values. */
float *ft_adapter_shards_part(const ft_adapter_shards *shards, int layer);
/* A layer's adapter values (n above), and the backend memory held: the parts
 * and the two gather buffers. */
size_t ft_adapter_shards_layer_values(const ft_adapter_shards *shards);
size_t ft_adapter_shards_bytes(const ft_adapter_shards *shards);

#endif
