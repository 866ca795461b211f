/* The learning-rate schedules against values worked out by hand from
 * transformers' formulas (optimization.py): warmup k / max(1, W); linear
 * (T - k) / max(1, T - W); cosine 0.5 (1 + cos(pi * progress)). */
#include <math.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/model/lr_schedule.h"

#define CHECK_NEAR(actual, expected)                                                                     \
    do {                                                                                                 \
        double near_a = (actual), near_e = (expected);                                                   \
        if (fabs(near_a - near_e) > 1e-12 * (1.0 + fabs(near_e))) {                                      \
            fprintf(stderr, "  %s:%d: %s is %.17g, expected %.17g\n", __FILE__, __LINE__, #actual, near_a, \
                    near_e);                                                                             \
            check_case_failed = 1;                                                                       \
        }                                                                                                \
    } while (0)

TEST(linear_warms_up_then_falls_to_zero)
{
    ft_lr_schedule s = {FT_LR_LINEAR, 1e-3, 10, 2};
    CHECK_NEAR(ft_lr_at(&s, 0), 0.0);
    CHECK_NEAR(ft_lr_at(&s, 1), 0.5e-3);
    CHECK_NEAR(ft_lr_at(&s, 2), 1e-3);    /* (10 - 2) / 8 */
    CHECK_NEAR(ft_lr_at(&s, 6), 0.5e-3);  /* (10 - 6) / 8 */
    CHECK_NEAR(ft_lr_at(&s, 9), 0.125e-3);
    CHECK_NEAR(ft_lr_at(&s, 10), 0.0);
    CHECK_NEAR(ft_lr_at(&s, 12), 0.0);    /* max(0, ...) */
    ft_lr_schedule no_warmup = {FT_LR_LINEAR, 2.0, 4, 0};
    CHECK_NEAR(ft_lr_at(&no_warmup, 0), 2.0);
    CHECK_NEAR(ft_lr_at(&no_warmup, 3), 0.5);
}

TEST(cosine_follows_half_a_cosine_after_warmup)
{
    ft_lr_schedule s = {FT_LR_COSINE, 1.0, 10, 0};
    CHECK_NEAR(ft_lr_at(&s, 0), 1.0);
    CHECK_NEAR(ft_lr_at(&s, 5), 0.5);
    CHECK_NEAR(ft_lr_at(&s, 10), 0.0);
    ft_lr_schedule warm = {FT_LR_COSINE, 1e-4, 10, 2};
    CHECK_NEAR(ft_lr_at(&warm, 1), 0.5e-4);
    CHECK_NEAR(ft_lr_at(&warm, 2), 1e-4);
    CHECK_NEAR(ft_lr_at(&warm, 4), 1e-4 * 0.5 * (1.0 + sqrt(0.5))); /* progress 2/8: cos(pi/4) */
    CHECK_NEAR(ft_lr_at(&warm, 6), 0.5e-4);
    CHECK_NEAR(ft_lr_at(&warm, 8), 1e-4 * 0.5 * (1.0 - sqrt(0.5)));
}

TEST(constant_schedules)
{
    ft_lr_schedule warm = {FT_LR_CONSTANT_WITH_WARMUP, 1.0, 100, 4};
    CHECK_NEAR(ft_lr_at(&warm, 0), 0.0);
    CHECK_NEAR(ft_lr_at(&warm, 1), 0.25);
    CHECK_NEAR(ft_lr_at(&warm, 4), 1.0);
    CHECK_NEAR(ft_lr_at(&warm, 99), 1.0);
    ft_lr_schedule flat = {FT_LR_CONSTANT, 3e-5, 100, 4}; /* get_constant_schedule has no warmup */
    CHECK_NEAR(ft_lr_at(&flat, 0), 3e-5);
    CHECK_NEAR(ft_lr_at(&flat, 99), 3e-5);
}

TEST(warmup_steps_win_over_the_ratio_which_rounds_up)
{
    CHECK_INT(ft_lr_warmup_steps(25, 0.1, 0), 3);  /* ceil(2.5) */
    CHECK_INT(ft_lr_warmup_steps(100, 0.07, 0), 8); /* 100 * 0.07 is 7.000000000000001 in doubles, as in Python */
    CHECK_INT(ft_lr_warmup_steps(30, 0.0, 0), 0);
    CHECK_INT(ft_lr_warmup_steps(30, 0.5, 7), 7);
}

TEST(parses_the_names)
{
    ft_lr_schedule_type type;
    CHECK_INT(ft_lr_schedule_parse("constant_with_warmup", &type), 0);
    CHECK_INT(type, FT_LR_CONSTANT_WITH_WARMUP);
    CHECK_INT(ft_lr_schedule_parse("cosine", &type), 0);
    CHECK_STR(ft_lr_schedule_name(type), "cosine");
    CHECK_INT(ft_lr_schedule_parse("polynomial", &type), -1);
    CHECK_STR(ft_error_message(),
              "lr_scheduler_type = polynomial: expected linear, cosine, constant or constant_with_warmup");
}

int main(void)
{
    RUN(linear_warms_up_then_falls_to_zero);
    RUN(cosine_follows_half_a_cosine_after_warmup);
    RUN(constant_schedules);
    RUN(warmup_steps_win_over_the_ratio_which_rounds_up);
    RUN(parses_the_names);
    return check_done();
}
