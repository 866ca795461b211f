/* deepspeed_config: a DeepSpeed JSON config as LLaMA-Factory passes it
 * (`deepspeed: examples/deepspeed/ds_z3_config.json`), read for what ftpipe
 * does with it: the ZeRO stage and where optimizer state and parameters live.
 *
 * "auto" values are the HF Trainer's: filled from the training parameters, so
 * they say nothing here. A number given for the batch sizes, the accumulation
 * or gradient_clipping is kept, for the train stage to check against its own
 * parameters, as the HF Trainer refuses a config that disagrees with them.
 * Keys that tune DeepSpeed's own machinery (bucket sizes, fp16 loss scaling,
 * monitors) have no meaning here: they are listed in `ignored`, for a note.
 * Any other key, a value of the wrong type and offloading to nvme are errors
 * naming the file and the key. */
#ifndef FTPIPE_DEEPSPEED_CONFIG_H
#define FTPIPE_DEEPSPEED_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int zero_stage;                         /* zero_optimization.stage; 0 when absent */
    bool offload_optimizer;                 /* zero_optimization.offload_optimizer.device is "cpu" */
    bool offload_param;                     /* zero_optimization.offload_param.device is "cpu" */
    /* numbers given instead of "auto"; -1: "auto" or absent */
    int64_t train_batch_size;
    int64_t train_micro_batch_size_per_gpu;
    int64_t gradient_accumulation_steps;
    double gradient_clipping;
    char *ignored;                          /* "fp16.loss_scale, zero_optimization.overlap_comm, ..."; "" when none */
} ft_deepspeed_config;

/* Reads path; -1 with ft_error naming the file and the key. Free with
 * ft_deepspeed_config_free (also after a failure). */
int ft_deepspeed_config_read(const char *path, ft_deepspeed_config *out);
void ft_deepspeed_config_free(ft_deepspeed_config *config);

#endif
