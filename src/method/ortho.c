/* ortho: single evolving LoRA plus lambda * sum ||A_t A_{t-1}^T||_F^2
 * (O-LoRA's orthogonality, an ablation of PESO), shared out by module. */
#include "method/proximal.h"

static int prox(peso_method_stage *s, double *value, peso_err *err)
{
    const peso_proximal *p = s->priv;
    return s->m->be->prox_ortho(s->m->be, &p->groups, s->m->lora.conf.rank, p->lo, p->hi, s->m->params,
                                s->prev_dev, s->c->method.lambda, s->m->grads, value, err);
}

const peso_method peso_method_ortho = {
    .name = "ortho",
    .flags = PESO_METHOD_LAMBDA,
    .begin = peso_proximal_begin_modules,
    .prox = prox,
    .free = peso_proximal_free,
};
