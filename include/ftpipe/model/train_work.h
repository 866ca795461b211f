/* train_work: the arithmetic of a training run, in floating-point operations per
 * token, so that the rate one run measured on a device (operations per second)
 * predicts the time of another shape, batch or fine-tuning type on it.
 *
 * Counted: the matrix products (2 operations per weight per token in a forward
 * pass, lm_head included, the embedding lookup not), attention's scores and
 * weighted sum over the row's causal context, and the LoRA adapter's products.
 * A training step is the forward pass, the gradient of the inputs (as much
 * again) and, for what is trained, the gradient of the weights (as much again);
 * recomputation adds one more forward pass. Norms, activations, softmax and the
 * optimizer are left out: their cost per token is small beside the products,
 * and what they add is part of the measured rate.
 *
 * Products whose inner dimension is the hidden size run below the peak on small
 * shapes: on the cpu backend (OpenBLAS, one thread, hidden sizes 192 to 512) an
 * operation took (1 + FT_SMALL_SHAPE_HIDDEN / hidden_size) times as long as at
 * full speed, within 10 %. The counts below are weighted so, as "ops". */
#ifndef FTPIPE_TRAIN_WORK_H
#define FTPIPE_TRAIN_WORK_H

#include "ftpipe/formats/model_config.h"
#include "ftpipe/model/model.h"

#define FT_SMALL_SHAPE_HIDDEN 256.0

typedef struct {
    double forward;   /* one forward pass (evaluation) */
    double train;     /* one training step: forward, backward and, with recomputation, a second forward */
} ft_train_work;

/* Per token of rows holding mean_row_tokens tokens each. */
int ft_train_work_per_token(const ft_model_config *config, const ft_model_options *options, double mean_row_tokens,
                            ft_train_work *out);

#endif
