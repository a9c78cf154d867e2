/* The list of continual methods and what every method shares: its names
 * from the config and the end of a stage. */
#include "method/method.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const peso_method peso_method_pretrain, peso_method_single, peso_method_peso, peso_method_l2,
    peso_method_ortho, peso_method_output_kl, peso_method_sumlora, peso_method_sdlora, peso_method_inflora;

const peso_method *const peso_methods[] = {
    &peso_method_pretrain, &peso_method_single, &peso_method_peso,
    &peso_method_l2,       &peso_method_ortho,  &peso_method_output_kl,
    &peso_method_sumlora,  &peso_method_sdlora, &peso_method_inflora,
};
const int peso_n_methods = (int)(sizeof peso_methods / sizeof peso_methods[0]);

const peso_method *peso_method_find(const char *name)
{
    for (int i = 0; i < peso_n_methods; i++)
        if (strcmp(peso_methods[i]->name, name) == 0)
            return peso_methods[i];
    return NULL;
}

int peso_method_of_conf(const peso_conf *c, const peso_method **meth, char *label, size_t label_n, char *run,
                        size_t run_n, peso_err *err)
{
    const peso_method *m = peso_method_find(c->method.name);
    if (!m) {
        char names[256] = "";
        for (int i = 0; i < peso_n_methods; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                     peso_methods[i]->name);
        return peso_errf(err, "%s: key 'method.name': unknown method '%s' (methods: %s)", c->source,
                         c->method.name, names);
    }
    *meth = m;
    if (m->flags & PESO_METHOD_VARIANT) {
        snprintf(label, label_n, "%s %s", m->name, c->method.variant);
        snprintf(run, run_n, "%s-%s", m->name, c->method.variant);
    } else {
        if ((m->flags & PESO_METHOD_GROUP) && strcmp(c->method.group, "module") != 0)
            snprintf(label, label_n, "%s group=%s", m->name, c->method.group);
        else
            snprintf(label, label_n, "%s", m->name);
        if (m->flags & PESO_METHOD_LAMBDA)
            snprintf(run, run_n, "%s-lambda%g", label, c->method.lambda);
        else
            snprintf(run, run_n, "%s", label);
    }
    for (char *p = run; *p; p++)
        if (*p == ' ' || *p == '=')
            *p = '-';
    return 0;
}

int peso_method_stage_set_prev(peso_method_stage *s, const float *v, peso_err *err)
{
    peso_backend *be = s->m->be;
    size_t n = s->m->flat.numel;
    free(s->prev);
    if (s->prev_dev)
        be->free(be, s->prev_dev);
    s->prev_dev = NULL;
    s->prev = peso_malloc((n ? n : 1) * sizeof *s->prev);
    memcpy(s->prev, v, n * sizeof *v);
    if (be->alloc(be, (void **)&s->prev_dev, (n ? n : 1) * sizeof(float), err) < 0 ||
        be->upload(be, s->prev_dev, v, n * sizeof *v, err) < 0)
        return peso_err_prefix(err, "stage %d: v_%d on the backend", s->t, s->t - 1);
    return 0;
}

void peso_method_stage_free(peso_method_stage *s)
{
    if (s->meth && s->meth->free)
        s->meth->free(s);
    free(s->prev);
    if (s->prev_dev)
        s->m->be->free(s->m->be, s->prev_dev);
    for (int i = 0; i < s->n_past; i++)
        free(s->past[i]);
    free(s->past);
    free(s->alpha);
    s->prev = NULL;
    s->prev_dev = NULL;
    s->past = NULL;
    s->alpha = NULL;
    s->n_past = 0;
    s->priv = NULL;
}

peso_flat peso_method_lora_flat(const peso_llama *m)
{
    peso_flat f = m->flat;
    f.n_views = 2 * (size_t)m->lora.n_modules;
    f.numel = m->lora_span;
    return f;
}

void peso_method_model_plain(peso_llama *m)
{
    peso_err e;
    peso_llama_set_past(m, 0, NULL, NULL, &e);
    peso_llama_set_hook(m, NULL);
    peso_llama_set_freeze_a(m, 0);
}
