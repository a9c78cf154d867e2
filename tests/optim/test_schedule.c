/* Learning-rate schedules against values worked out by hand from
 * transformers' lr_lambda formulas. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "optim/schedule.h"

static void expect_lr(const peso_schedule *s, int64_t step, double want)
{
    double got = peso_schedule_lr(s, step);
    cr_expect(fabs(got - want) <= 1e-12 + 1e-9 * fabs(want), "step %lld: lr %.12g, expected %.12g",
              (long long)step, got, want);
}

/* lr 1e-3, warmup 10, total 110 (100 decay steps):
 *   warmup: lr * step / 10: 0, 5e-4 at 5, 9e-4 at 9;
 *   decay: progress = (step - 10) / 100, f = 0.5 (1 + cos(pi progress)):
 *   step 10: f = 1; 35: 0.5 (1 + cos(pi/4)) = 0.8535533906; 60: 0.5;
 *   85: 0.5 (1 + cos(3 pi/4)) = 0.1464466094; 110: 0; beyond: the floor. */
Test(schedule, cosine_with_warmup_by_hand)
{
    peso_schedule s = {.kind = PESO_SCHED_COSINE, .lr = 1e-3, .warmup = 10, .total = 110};
    peso_err err;
    cr_assert_eq(peso_schedule_check(&s, "test", &err), 0, "%s", err.msg);
    expect_lr(&s, 0, 0.0);
    expect_lr(&s, 1, 1e-4);
    expect_lr(&s, 5, 5e-4);
    expect_lr(&s, 9, 9e-4);
    expect_lr(&s, 10, 1e-3);
    expect_lr(&s, 35, 0.8535533905932737e-3);
    expect_lr(&s, 60, 0.5e-3);
    expect_lr(&s, 85, 0.14644660940672627e-3);
    expect_lr(&s, 109, 1e-3 * 0.5 * (1 + cos(3.14159265358979323846 * 0.99)));
    expect_lr(&s, 110, 0.0);
    expect_lr(&s, 111, 0.0);
    expect_lr(&s, 100000, 0.0);
}

/* With min ratio r = 0.1: f' = 0.1 + 0.9 f: 1 at step 10, 0.55 at 60, 0.1
 * at 110 and after; the warmup is unchanged. */
Test(schedule, cosine_min_ratio_by_hand)
{
    peso_schedule s = {.kind = PESO_SCHED_COSINE, .lr = 2e-4, .warmup = 10, .total = 110, .min_ratio = 0.1};
    expect_lr(&s, 5, 1e-4);
    expect_lr(&s, 10, 2e-4);
    expect_lr(&s, 35, 2e-4 * (0.1 + 0.9 * 0.8535533905932737));
    expect_lr(&s, 60, 2e-4 * 0.55);
    expect_lr(&s, 110, 2e-5);
    expect_lr(&s, 500, 2e-5);
}

/* warmup 0: the first update already has the full rate; total == warmup:
 * the decay has one step of length max(1, 0) = 1, so the next step is the
 * floor. */
Test(schedule, cosine_boundaries)
{
    peso_schedule s = {.kind = PESO_SCHED_COSINE, .lr = 1.0, .warmup = 0, .total = 4};
    expect_lr(&s, 0, 1.0);
    expect_lr(&s, 1, 0.5 * (1 + cos(3.14159265358979323846 / 4)));
    expect_lr(&s, 2, 0.5);
    expect_lr(&s, 4, 0.0);
    peso_schedule t = {.kind = PESO_SCHED_COSINE, .lr = 1.0, .warmup = 3, .total = 3};
    expect_lr(&t, 2, 2.0 / 3.0);
    expect_lr(&t, 3, 1.0);
    expect_lr(&t, 4, 0.0);
}

Test(schedule, constant_with_and_without_warmup)
{
    peso_schedule s = {.kind = PESO_SCHED_CONSTANT, .lr = 3e-4};
    expect_lr(&s, 0, 3e-4);
    expect_lr(&s, 12345, 3e-4);
    s.warmup = 4;
    expect_lr(&s, 0, 0.0);
    expect_lr(&s, 1, 0.75e-4);
    expect_lr(&s, 2, 1.5e-4);
    expect_lr(&s, 4, 3e-4);
    expect_lr(&s, 1000000, 3e-4);
}

Test(schedule, check_and_parse_name_what_is_wrong)
{
    peso_err err;
    peso_schedule s = {.kind = PESO_SCHED_COSINE, .lr = 1e-3, .warmup = 20, .total = 10};
    cr_assert_eq(peso_schedule_check(&s, "train.schedule", &err), -1);
    cr_expect(strstr(err.msg, "train.schedule") && strstr(err.msg, "total=10"), "%s", err.msg);
    s.total = 30;
    s.min_ratio = 1.5;
    cr_assert_eq(peso_schedule_check(&s, "x", &err), -1);
    cr_expect(strstr(err.msg, "min_ratio=1.5"), "%s", err.msg);
    s.min_ratio = 0;
    s.lr = -1;
    cr_assert_eq(peso_schedule_check(&s, "x", &err), -1);
    cr_expect(strstr(err.msg, "lr=-1"), "%s", err.msg);
    s.lr = 1e-3;
    s.warmup = -1;
    cr_assert_eq(peso_schedule_check(&s, "x", &err), -1);
    cr_expect(strstr(err.msg, "warmup=-1"), "%s", err.msg);
    /* a constant schedule has no total to check */
    peso_schedule c = {.kind = PESO_SCHED_CONSTANT, .lr = 1e-3, .warmup = 5};
    cr_expect_eq(peso_schedule_check(&c, "x", &err), 0, "%s", err.msg);

    peso_sched_kind k;
    cr_assert_eq(peso_schedule_parse_kind("cosine", &k, &err), 0);
    cr_expect_eq(k, PESO_SCHED_COSINE);
    cr_expect_str_eq(peso_schedule_kind_name(k), "cosine");
    cr_assert_eq(peso_schedule_parse_kind("constant", &k, &err), 0);
    cr_expect_eq(k, PESO_SCHED_CONSTANT);
    cr_expect_str_eq(peso_schedule_kind_name(k), "constant");
    cr_assert_eq(peso_schedule_parse_kind("linear", &k, &err), -1);
    cr_expect(strstr(err.msg, "'linear'"), "%s", err.msg);
}
