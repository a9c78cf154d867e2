#include "method/prox.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const grouping_names[PESO_PROX_NGROUPING] = {"module", "matrix", "rank"};

const char *peso_prox_grouping_name(peso_prox_grouping how)
{
    return (unsigned)how < PESO_PROX_NGROUPING ? grouping_names[how] : "?";
}

int peso_prox_grouping_parse(const char *s, peso_prox_grouping *how, peso_err *err)
{
    for (int i = 0; i < PESO_PROX_NGROUPING; i++)
        if (strcmp(s, grouping_names[i]) == 0) {
            *how = (peso_prox_grouping)i;
            return 0;
        }
    return peso_errf(err, "proximal group '%s', expected module, matrix or rank", s);
}

/* A and B of module mi as one group. */
static peso_prox_group module_group(const peso_lora *l, int mi)
{
    const peso_lora_module *m = &l->mods[mi];
    size_t r = (size_t)l->conf.rank, na = r * (size_t)m->in, nb = (size_t)m->out * r;
    return (peso_prox_group){mi, 2, {{m->a_off, na, 1}, {m->b_off, nb, 1}}, na + nb};
}

static int groups_per_module(peso_prox_grouping how, int rank)
{
    return how == PESO_PROX_MODULE ? 1 : how == PESO_PROX_MATRIX ? 2 : rank;
}

/* Writes the groups_per_module() groups of module mi to out. */
static void module_groups(const peso_lora *l, int mi, peso_prox_grouping how, peso_prox_group *out)
{
    const peso_lora_module *m = &l->mods[mi];
    size_t r = (size_t)l->conf.rank, in = (size_t)m->in, nout = (size_t)m->out;
    peso_prox_group whole = module_group(l, mi);
    switch (how) {
    case PESO_PROX_MODULE: out[0] = whole; break;
    case PESO_PROX_MATRIX:
        out[0] = (peso_prox_group){mi, 1, {whole.seg[0]}, whole.seg[0].n};
        out[1] = (peso_prox_group){mi, 1, {whole.seg[1]}, whole.seg[1].n};
        break;
    default:
        /* row k of A [r, in] is contiguous; column k of B [out, r] has stride r */
        for (size_t k = 0; k < r; k++)
            out[k] =
                (peso_prox_group){mi, 2, {{m->a_off + k * in, in, 1}, {m->b_off + k, nout, r}}, in + nout};
        break;
    }
}

int peso_prox_groups_build(peso_prox_groups *gs, const peso_lora *l, peso_prox_grouping how, peso_err *err)
{
    memset(gs, 0, sizeof *gs);
    if ((unsigned)how >= PESO_PROX_NGROUPING)
        return peso_errf(err, "proximal groups: grouping %d, expected module, matrix or rank", (int)how);
    if (l->n_modules > 0 && l->conf.rank < 1)
        return peso_errf(err, "proximal groups: LoRA rank %d, expected >= 1", l->conf.rank);
    int per = groups_per_module(how, l->conf.rank);
    gs->how = how;
    gs->n = l->n_modules * per;
    gs->g = peso_malloc((size_t)gs->n * sizeof *gs->g);
    for (int mi = 0; mi < l->n_modules; mi++)
        module_groups(l, mi, how, gs->g + (size_t)mi * per);
    return 0;
}

void peso_prox_groups_free(peso_prox_groups *gs)
{
    free(gs->g);
    memset(gs, 0, sizeof *gs);
}

/* The rank whose share [rank, rank + 1) * total / world holds the midpoint
 * before + size / 2, in integers (exact on every rank): sizes stay far
 * below 2^64 / (2 world). */
static int owner(uint64_t before, uint64_t size, uint64_t total, int world)
{
    if (total == 0)
        return 0;
    return (int)((uint64_t)world * (2 * before + size) / (2 * total));
}

int peso_prox_shard(const peso_prox_groups *gs, int world, int rank, int *lo, int *hi, peso_err *err)
{
    if (world < 1 || rank < 0 || rank >= world)
        return peso_errf(err, "proximal shard: rank %d of world %d, expected 0 <= rank < world", rank, world);
    uint64_t total = 0, before = 0;
    for (int i = 0; i < gs->n; i++)
        total += gs->g[i].numel;
    /* owner() is non-decreasing in i, so counting gives the range */
    int n_below = 0, n_upto = 0;
    for (int i = 0; i < gs->n; i++) {
        int o = owner(before, gs->g[i].numel, total, world);
        n_below += o < rank;
        n_upto += o <= rank;
        before += gs->g[i].numel;
    }
    *lo = n_below;
    *hi = n_upto;
    return 0;
}
