/* l2: single evolving LoRA plus lambda/2 ||v_t - v_{t-1}||^2 (an
 * ablation of PESO's divergence), shared out by module. */
#include "method/proximal.h"

static int begin(peso_method_stage *s, float *params, peso_err *err)
{
    (void)params;
    return peso_proximal_begin(s, PESO_PROX_MODULE, err);
}

static int prox(peso_method_stage *s, double *value, peso_err *err)
{
    const peso_proximal *p = s->priv;
    return s->m->be->prox_l2(s->m->be, &p->groups, p->lo, p->hi, s->m->params, s->prev, s->c->method.lambda,
                             s->m->grads, value, err);
}

const peso_method peso_method_l2 = {
    .name = "l2",
    .flags = PESO_METHOD_LAMBDA,
    .begin = begin,
    .prox = prox,
    .free = peso_proximal_free,
};
