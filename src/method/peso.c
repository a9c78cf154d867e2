/* peso: single evolving LoRA plus lambda * sum_g KL(softmax(v_t^(g)) ||
 * softmax(v_{t-1}^(g))), v_{t-1} frozen (the paper's method). The groups
 * follow method.group: one adapted module (default), A and B apart
 * (matrix) or per rank (rank). */
#include "method/proximal.h"

static int begin(peso_method_stage *s, float *params, peso_err *err)
{
    peso_prox_grouping how;
    (void)params;
    if (peso_prox_grouping_parse(s->c->method.group, &how, err) < 0)
        return -1;
    return peso_proximal_begin(s, how, err);
}

static int prox(peso_method_stage *s, double *value, peso_err *err)
{
    const peso_proximal *p = s->priv;
    return s->m->be->prox_kl(s->m->be, &p->groups, p->lo, p->hi, s->m->params, s->prev_dev, s->c->method.lambda,
                             s->m->grads, value, err);
}

const peso_method peso_method_peso = {
    .name = "peso",
    .flags = PESO_METHOD_LAMBDA | PESO_METHOD_GROUP,
    .begin = begin,
    .prox = prox,
    .free = peso_proximal_free,
};
