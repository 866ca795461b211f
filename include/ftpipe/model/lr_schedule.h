/* lr_schedule: the learning rate at each optimizer step, exactly as transformers'
 * get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup (half a
 * cosine), get_constant_schedule_with_warmup and get_constant_schedule compute
 * it. As in the HF Trainer, optimizer step k (0-based) uses the rate at k, so a
 * run with warmup starts at 0. */
#ifndef FTPIPE_LR_SCHEDULE_H
#define FTPIPE_LR_SCHEDULE_H

#include <stdint.h>

typedef enum {
    FT_LR_LINEAR,                 /* HF's default */
    FT_LR_COSINE,
    FT_LR_CONSTANT,               /* no warmup, whatever warmup_* say */
    FT_LR_CONSTANT_WITH_WARMUP,
} ft_lr_schedule_type;

typedef struct {
    ft_lr_schedule_type type;
    double learning_rate;         /* the peak */
    int64_t total_steps;
    int64_t warmup_steps;         /* from ft_lr_warmup_steps */
} ft_lr_schedule;

/* "linear", "cosine", "constant", "constant_with_warmup"; an unknown name is an error listing them. */
int ft_lr_schedule_parse(const char *name, ft_lr_schedule_type *out);
const char *ft_lr_schedule_name(ft_lr_schedule_type type);

/* HF's get_warmup_steps: warmup_steps when > 0, else ceil(warmup_ratio * total_steps). */
int64_t ft_lr_warmup_steps(int64_t total_steps, double warmup_ratio, int64_t warmup_steps);

/* The learning rate of optimizer step `step` (0-based). */
double ft_lr_at(const ft_lr_schedule *schedule, int64_t step);

#endif
