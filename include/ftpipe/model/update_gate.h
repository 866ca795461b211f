/* update_gate: an offloaded step's update (AdamW on the host's cores, adamw.h)
 * run beside the next pass, for trained values held whole in the backend's
 * memory (one rank with offload_optimizer; ZeRO-3 gathers its shards as their
 * units are updated instead, param_shards.h).
 *
 * The trained tensors are cut into positions in the order a forward pass
 * first reads them: position 0 holds every tensor outside the decoder layers
 * (the embeddings, a projector, the final norm and the head: read first, or
 * small), position l + 1 decoder layer l's. A step hands its update to the
 * gate's thread (ft_update_gate_start), which updates the positions in order
 * (their values go up on the backend's side queue), and marks each one done
 * with an event. A pass waits at each position before it reads its values
 * (model_pass.c: at its start for position 0, before each layer's forward):
 * the host until the thread is past it, the compute queue for its event; then,
 * with a float master copy (full fine-tuning in bf16), the position's weights
 * are cast from it on the compute queue, once per update. Whatever else reads
 * the values or the optimizer's state waits for the whole update
 * (ft_update_gate_finish). The same updates of the same values as a step done
 * at once: the same bits. */
#ifndef FTPIPE_UPDATE_GATE_H
#define FTPIPE_UPDATE_GATE_H

#include <stddef.h>

#include "ftpipe/model/adamw.h"
#include "ftpipe/model/model.h"

typedef struct ft_update_gate ft_update_gate;

/* A position's part of the update (0 or -1 with ft_error): `update` runs on
 * the gate's thread in position order (AdamW on its tensors, their values
 * up); `take` on the pass's thread when it first waits for the position, in
 * the same order on every rank (ZeRO-1 and 2: the values' all-gather over the
 * ranks, zero.h; so no collective of the update crosses the pass's). */
typedef int (*ft_update_position)(void *context, size_t position, double learning_rate);

/* The position of a trained tensor by its name: 0 outside the decoder layers,
 * l + 1 in layer l. */
size_t ft_update_gate_position_of(const char *name);

/* A gate for the model's trained tensors, each step's update run by `update`
 * and taken in by `take` (NULL: nothing); the model's passes wait at it until
 * ft_update_gate_free. -1 with ft_error when its thread or events cannot be
 * made. _for: one rank's, `optimizer` (offloaded) updating the model's
 * trainable tensors a position at a time. */
int ft_update_gate_create(ft_model *model, ft_update_position update, ft_update_position take, void *context,
                          ft_update_gate **out);
int ft_update_gate_create_for(ft_model *model, ft_adamw *optimizer, ft_update_gate **out);
void ft_update_gate_free(ft_update_gate *gate);

/* After ft_update_gate_finish of the step before, ft_adamw_fetch_grads and
 * ft_adamw_step_begin: the step's update, at this learning rate, runs on the
 * gate's thread from now on. */
void ft_update_gate_start(ft_update_gate *gate, double learning_rate);
/* For model_pass.c: returns once position's values are this update's. */
void ft_update_gate_wait(ft_update_gate *gate, size_t position);
/* Returns once the update is done and every position's values are its own;
 * -1 with ft_error when it failed (a collective): its values are then not
 * whole, and the run must stop. */
int ft_update_gate_finish(ft_update_gate *gate);

/* A test hook, never called by the program: the thread sleeps this long
 * before each position (0: never), so that a pass that did not wait would
 * read the values before their update. */
void ft_update_gate_test_delay(unsigned microseconds);

#endif
