/* inflora: the cumulative family (cumulative.h) with A_t designed, not
 * trained: the top-rank directions of the stage's module-input covariance
 * after projecting out the input subspace of earlier stages
 * (inflora_subspace.h); only B_t trains. The subspace memory grows after
 * every stage (DualGPM-style) and is kept in the checkpoint as inflora/k
 * (rows per module) and inflora/basis/<module>. */
#include <stdlib.h>
#include <string.h>

#include "method/cumulative.h"
#include "method/inflora_cov.h"
#include "method/inflora_subspace.h"

typedef struct inflora {
    /* per module an orthonormal basis [k[i], in] of the inputs of earlier
     * stages (capacity in - rank rows); basis NULL: none yet */
    float **basis;
    int *k;
    double *cov; /* this stage's module-input covariances */
} inflora;

static inflora *state(peso_method_stage *s)
{
    if (!s->priv)
        s->priv = peso_calloc(1, sizeof(inflora));
    return s->priv;
}

static void alloc_bases(peso_method_stage *s, inflora *f)
{
    const peso_lora *l = &s->m->lora;
    f->basis = peso_calloc((size_t)l->n_modules, sizeof *f->basis);
    f->k = peso_calloc((size_t)l->n_modules, sizeof *f->k);
    for (int i = 0; i < l->n_modules; i++) {
        int cap = l->mods[i].in - l->conf.rank;
        f->basis[i] = peso_calloc((size_t)(cap > 0 ? cap : 1) * l->mods[i].in, sizeof **f->basis);
    }
}

static int load(peso_method_stage *s, const peso_ckpt *ck, peso_err *err)
{
    if (peso_cumulative_load(s, ck, err) < 0)
        return -1;
    const peso_lora *l = &s->m->lora;
    const peso_ckpt_tensor *k = peso_ckpt_find(ck, "inflora/k");
    if (!k)
        return 0;
    if (k->numel != (size_t)l->n_modules)
        return peso_errf(err, "%s: inflora/k has %zu entries, the model has %d modules", ck->path, k->numel,
                         l->n_modules);
    inflora *f = state(s);
    alloc_bases(s, f);
    for (int i = 0; i < l->n_modules; i++) {
        int in = l->mods[i].in, cap = in - l->conf.rank;
        f->k[i] = (int)k->data[i];
        if (!f->k[i])
            continue;
        char path[64];
        snprintf(path, sizeof path, "inflora/basis/%d", i);
        const peso_ckpt_tensor *b = peso_ckpt_find(ck, path);
        if (!b || b->numel != (size_t)f->k[i] * in || f->k[i] > cap)
            return peso_errf(err, "%s: %s is missing or not [%d, %d]", ck->path, path, f->k[i], in);
        memcpy(f->basis[i], b->data, b->numel * sizeof *b->data);
    }
    return 0;
}

static int save(const peso_method_stage *s, peso_ckpt *ck, peso_err *err)
{
    const inflora *f = s->priv;
    if (peso_cumulative_save(s, ck, err) < 0)
        return -1;
    if (!f || !f->basis)
        return 0;
    const peso_lora *l = &s->m->lora;
    float *k = peso_malloc((size_t)l->n_modules * sizeof *k);
    for (int i = 0; i < l->n_modules; i++)
        k[i] = (float)f->k[i];
    int64_t shape[2] = {l->n_modules, 0};
    int rc = peso_ckpt_add(ck, "inflora/k", 1, shape, k, err);
    free(k);
    for (int i = 0; rc == 0 && i < l->n_modules; i++) {
        if (!f->k[i])
            continue;
        char path[64];
        snprintf(path, sizeof path, "inflora/basis/%d", i);
        int64_t sh[2] = {f->k[i], l->mods[i].in};
        rc = peso_ckpt_add(ck, path, 2, sh, f->basis[i], err);
    }
    return rc;
}

typedef struct cov_sum {
    peso_llama *m;
    double *cov;
    long n_tok;
    peso_inflora_cov w;
} cov_sum;

static int add_batch(void *arg, const peso_llama_batch *b, peso_err *err)
{
    cov_sum *c = arg;
    return peso_inflora_cov_add(&c->w, c->m, b, c->cov, &c->n_tok, err);
}

/* The module-input covariance of stage k's training windows under the
 * model as it is. Not shared out over the train ranks: each runs all the
 * windows in the same order, so that A_t does not depend on the number of
 * ranks (eigenvectors of nearly equal eigenvalues turn with the order of
 * the float sums). It is one forward pass per stage. */
static int input_cov(peso_method_stage *s, int k, double *cov, peso_err *err)
{
    cov_sum c = {s->m, cov, 0, {0}};
    memset(cov, 0, peso_inflora_cov_numel(s->m) * sizeof *cov);
    int rc = s->env->each_batch(s->env->ctx, k, add_batch, &c, err);
    peso_inflora_cov_free(&c.w, s->m);
    return rc;
}

/* Adds the inputs of covariance cov to every module's basis; each keeps
 * room for `rank` free directions. */
static int extend_bases(peso_method_stage *s, const double *cov, peso_err *err)
{
    inflora *f = s->priv;
    const peso_lora *l = &s->m->lora;
    size_t at = 0;
    for (int i = 0; i < l->n_modules; i++) {
        int in = l->mods[i].in;
        if (peso_inflora_extend(cov + at, in, f->basis[i], &f->k[i], in - l->conf.rank,
                                s->c->method.inflora_threshold, err) < 0)
            return peso_err_prefix(err, "inflora, module %d", i);
        at += (size_t)in * in;
    }
    return 0;
}

/* A_t of every module: the top-rank directions of this stage's inputs
 * outside the protected subspace, written into params. */
static int design_a(peso_method_stage *s, float *params, peso_err *err)
{
    const inflora *f = s->priv;
    const peso_lora *l = &s->m->lora;
    size_t at = 0;
    for (int i = 0; i < l->n_modules; i++) {
        int in = l->mods[i].in;
        if (peso_inflora_design(f->cov + at, in, f->basis[i], f->k[i], l->conf.rank,
                                params + l->mods[i].a_off, err) < 0)
            return peso_err_prefix(err, "inflora, module %d", i);
        at += (size_t)in * in;
    }
    return 0;
}

static int begin(peso_method_stage *s, float *params, peso_err *err)
{
    peso_llama *m = s->m;
    inflora *f = state(s);
    if (peso_cumulative_begin(s, params, err) < 0)
        return -1;
    f->cov = peso_malloc(peso_inflora_cov_numel(m) * sizeof *f->cov);
    if (!f->basis) {
        /* stage 2: the protected subspace starts with D1's inputs under
         * the stage-1 model (no past adapters yet) */
        alloc_bases(s, f);
        if (s->log)
            fprintf(s->log, "stage %d: inflora: input covariance of D1 under the stage-1 model\n", s->t);
        if (peso_llama_set_past(m, 0, NULL, NULL, err) < 0 || peso_llama_set_params(m, s->prev, err) < 0 ||
            input_cov(s, 1, f->cov, err) < 0 || extend_bases(s, f->cov, err) < 0)
            return -1;
    }
    if (peso_cumulative_install(s, err) < 0 || peso_llama_set_params(m, params, err) < 0 ||
        input_cov(s, s->t, f->cov, err) < 0 || design_a(s, params, err) < 0)
        return -1;
    for (int i = 0; i < m->lora.n_modules; i++)
        s->env->freeze(s->env->ctx, m->lora.mods[i].a_off, (size_t)m->lora.conf.rank * m->lora.mods[i].in);
    return peso_llama_set_freeze_a(m, 1) < 0 ? peso_errf(err, "inflora: freezing A") : 0;
}

/* The stage's inputs join the protected subspace. */
static int end(peso_method_stage *s, peso_err *err)
{
    return extend_bases(s, ((inflora *)s->priv)->cov, err);
}

static void inflora_free(peso_method_stage *s)
{
    inflora *f = s->priv;
    if (!f)
        return;
    if (f->basis)
        for (int i = 0; i < s->m->lora.n_modules; i++)
            free(f->basis[i]);
    free(f->basis);
    free(f->k);
    free(f->cov);
    free(f);
}

const peso_method peso_method_inflora = {
    .name = "inflora",
    .flags = PESO_METHOD_VARIANT,
    .load = load,
    .begin = begin,
    .install = peso_cumulative_install,
    .end = end,
    .save = save,
    .free = inflora_free,
};
