/* Learning-rate schedules, as transformers defines them:
 * - constant: lr (after an optional linear warmup, as
 *   get_constant_schedule_with_warmup);
 * - cosine: lr * step / warmup while step < warmup, then
 *   lr * (r + (1 - r) * 0.5 * (1 + cos(pi * progress))), progress =
 *   (step - warmup) / (total - warmup) and r = min_ratio, as
 *   get_cosine_schedule_with_warmup (r = 0) and
 *   get_cosine_with_min_lr_schedule_with_warmup (min_lr_rate = r).
 *
 * `step` is the number of optimizer updates already taken, as LambdaLR
 * counts: the first update uses step 0, so with warmup it has lr 0, as in
 * the HF Trainer. One deviation: past `total` the cosine stays at its
 * floor, where transformers would climb back up the cosine. */
#ifndef PESO_OPTIM_SCHEDULE_H
#define PESO_OPTIM_SCHEDULE_H

#include <stdint.h>

#include "common/err.h"

typedef enum peso_sched_kind {
    PESO_SCHED_CONSTANT = 0,
    PESO_SCHED_COSINE = 1,
} peso_sched_kind;

typedef struct peso_schedule {
    peso_sched_kind kind;
    double lr;        /* peak rate */
    int64_t warmup;   /* warmup steps, >= 0 */
    int64_t total;    /* cosine: total steps, >= warmup */
    double min_ratio; /* cosine: floor as a fraction of lr, in [0, 1] */
} peso_schedule;

/* Checks the fields; `where` names the source in messages. */
int peso_schedule_check(const peso_schedule *s, const char *where, peso_err *err);
/* The rate for the update after `step` updates (step >= 0). */
double peso_schedule_lr(const peso_schedule *s, int64_t step);

/* "constant" or "cosine". */
int peso_schedule_parse_kind(const char *name, peso_sched_kind *kind, peso_err *err);
const char *peso_schedule_kind_name(peso_sched_kind kind);

#endif
