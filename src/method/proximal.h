/* The stage side of the parameter-space proximal terms (peso, l2,
 * ortho; the math is the backend's prox_kl, prox_l2 and prox_ortho, the
 * groups are prox.h's): the groups of the term and this train rank's
 * share of them, kept as the method's state. */
#ifndef PESO_METHOD_PROXIMAL_H
#define PESO_METHOD_PROXIMAL_H

#include "method/method.h"
#include "method/prox.h"

typedef struct peso_proximal {
    peso_prox_groups groups;
    int lo, hi; /* this rank's groups */
} peso_proximal;

/* The groups under how and this rank's share into s->priv. */
int peso_proximal_begin(peso_method_stage *s, peso_prox_grouping how, peso_err *err);
/* A method's begin for a term shared out by module (l2, ortho): the
 * PESO_PROX_MODULE groups; params is left as it is (v_{t-1} inherited). */
int peso_proximal_begin_modules(peso_method_stage *s, float *params, peso_err *err);
void peso_proximal_free(peso_method_stage *s);

#endif
