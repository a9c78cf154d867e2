#include "optim/schedule.h"

#include <math.h>
#include <string.h>

/* M_PI is not C11. */
#define PI 3.14159265358979323846

int peso_schedule_check(const peso_schedule *s, const char *where, peso_err *err)
{
    if (s->kind != PESO_SCHED_CONSTANT && s->kind != PESO_SCHED_COSINE)
        return peso_errf(err, "%s: schedule kind %d: expected constant or cosine", where, (int)s->kind);
    if (!(s->lr >= 0) || !isfinite(s->lr))
        return peso_errf(err, "%s: lr=%g, expected a finite rate >= 0", where, s->lr);
    if (s->warmup < 0)
        return peso_errf(err, "%s: warmup=%lld, expected >= 0", where, (long long)s->warmup);
    if (s->kind != PESO_SCHED_COSINE)
        return 0;
    if (s->total < s->warmup)
        return peso_errf(err, "%s: total=%lld steps is less than warmup=%lld", where, (long long)s->total,
                         (long long)s->warmup);
    if (!(s->min_ratio >= 0 && s->min_ratio <= 1))
        return peso_errf(err, "%s: min_ratio=%g, expected in [0, 1]", where, s->min_ratio);
    return 0;
}

/* The multiplier of lr, written as transformers' lr_lambda functions are
 * (max(1, .) guards a zero warmup or a zero-length decay). */
static double factor(const peso_schedule *s, int64_t step)
{
    if (step < s->warmup)
        return (double)step / (double)(s->warmup > 1 ? s->warmup : 1);
    if (s->kind == PESO_SCHED_CONSTANT)
        return 1.0;
    int64_t span = s->total - s->warmup;
    double progress = (double)(step - s->warmup) / (double)(span > 1 ? span : 1);
    if (progress > 1.0)
        progress = 1.0;
    double f = 0.5 * (1.0 + cos(PI * progress));
    f = f * (1.0 - s->min_ratio) + s->min_ratio;
    return f > 0.0 ? f : 0.0;
}

double peso_schedule_lr(const peso_schedule *s, int64_t step)
{
    return s->lr * factor(s, step);
}

int peso_schedule_parse_kind(const char *name, peso_sched_kind *kind, peso_err *err)
{
    if (strcmp(name, "constant") == 0)
        *kind = PESO_SCHED_CONSTANT;
    else if (strcmp(name, "cosine") == 0)
        *kind = PESO_SCHED_COSINE;
    else
        return peso_errf(err, "schedule '%s': expected \"constant\" or \"cosine\"", name);
    return 0;
}

const char *peso_schedule_kind_name(peso_sched_kind kind)
{
    return kind == PESO_SCHED_COSINE ? "cosine" : "constant";
}
