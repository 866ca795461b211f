/* lr_schedule: transformers' schedules, each a multiplier of the peak rate. */
#include "ftpipe/model/lr_schedule.h"

#include <math.h>
#include <string.h>

#include "ftpipe/base/error.h"

static const char *const names[] = {
    [FT_LR_LINEAR] = "linear",
    [FT_LR_COSINE] = "cosine",
    [FT_LR_CONSTANT] = "constant",
    [FT_LR_CONSTANT_WITH_WARMUP] = "constant_with_warmup",
};

int ft_lr_schedule_parse(const char *name, ft_lr_schedule_type *out)
{
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (strcmp(name, names[i]) == 0) {
            *out = (ft_lr_schedule_type)i;
            return 0;
        }
    return ft_error("lr_scheduler_type = %s: expected linear, cosine, constant or constant_with_warmup", name);
}

const char *ft_lr_schedule_name(ft_lr_schedule_type type) { return names[type]; }

int64_t ft_lr_warmup_steps(int64_t total_steps, double warmup_ratio, int64_t warmup_steps)
{
    if (warmup_steps > 0)
        return warmup_steps;
    return (int64_t)ceil((double)total_steps * warmup_ratio);
}

static double larger(double a, double b) { return a > b ? a : b; }

static double multiplier(const ft_lr_schedule *s, int64_t step)
{
    double current = (double)step, warmup = (double)s->warmup_steps, total = (double)s->total_steps;
    if (s->type == FT_LR_CONSTANT)
        return 1.0;
    if (step < s->warmup_steps)
        return current / larger(1.0, warmup);
    switch (s->type) {
    case FT_LR_LINEAR:
        return larger(0.0, (total - current) / larger(1.0, total - warmup));
    case FT_LR_COSINE: {
        double progress = (current - warmup) / larger(1.0, total - warmup);
        return larger(0.0, 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress)));
    }
    default:
        return 1.0;
    }
}

double ft_lr_at(const ft_lr_schedule *schedule, int64_t step)
{
    return schedule->learning_rate * multiplier(schedule, step);
}
