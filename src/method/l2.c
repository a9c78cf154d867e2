/* l2: single evolving LoRA plus lambda/2 ||v_t - v_{t-1}||^2 (an
 * ablation of PESO's divergence), shared out by module. */
#include "method/proximal.h"

static int prox(peso_method_stage *s, double *value, peso_err *err)
{
    const peso_proximal *p = s->priv;
    return s->m->be->prox_l2(s->m->be, &p->groups, p->lo, p->hi, s->m->params, s->prev_dev, s->c->method.lambda,
                             s->m->grads, value, err);
}

const peso_method peso_method_l2 = {
    .name = "l2",
    .flags = PESO_METHOD_LAMBDA,
    .begin = peso_proximal_begin_modules,
    .prox = prox,
    .free = peso_proximal_free,
};
