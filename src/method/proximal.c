/* The proximal terms' groups and shares (proximal.h). */
#include "method/proximal.h"

#include <stdlib.h>

int peso_proximal_begin(peso_method_stage *s, peso_prox_grouping how, peso_err *err)
{
    peso_proximal *p = peso_calloc(1, sizeof *p);
    s->priv = p;
    if (peso_prox_groups_build(&p->groups, &s->m->lora, how, err) < 0)
        return -1;
    return peso_prox_shard(&p->groups, s->size, s->rank, &p->lo, &p->hi, err);
}

int peso_proximal_begin_modules(peso_method_stage *s, float *params, peso_err *err)
{
    (void)params;
    return peso_proximal_begin(s, PESO_PROX_MODULE, err);
}

void peso_proximal_free(peso_method_stage *s)
{
    peso_proximal *p = s->priv;
    if (!p)
        return;
    peso_prox_groups_free(&p->groups);
    free(p);
}
