/* A stage's set-up: the method starts from the previous stage's final
 * checkpoint (method/method.h), the ranges the stage does not train are
 * planned, and the optimizer and its schedule are made for the stage's
 * steps. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/internal.h"

const peso_pairs *peso_train_pairs(const peso_run *r, int t)
{
    return &r->d.split.b[t - 1].train;
}

/* ---- frozen ranges ---- */

static void add_frozen(void *ctx, size_t off, size_t n)
{
    peso_trainer *tr = ctx;
    tr->fr = peso_realloc(tr->fr, (size_t)(tr->n_fr + 1) * sizeof *tr->fr);
    tr->fr[tr->n_fr++] = (peso_frozen){off, n};
}

static size_t frozen_numel(const peso_trainer *tr)
{
    size_t n = 0;
    for (int i = 0; i < tr->n_fr; i++)
        n += tr->fr[i].n;
    return n;
}

/* back = 0: params -> copy; 1: copy -> params. */
static int frozen_copy(peso_trainer *tr, int back, peso_err *err)
{
    peso_backend *be = tr->r->be;
    size_t at = 0;
    for (int i = 0; i < tr->n_fr; i++) {
        float *p = tr->r->m->params + tr->fr[i].off, *c = tr->fr_copy + at;
        size_t bytes = tr->fr[i].n * sizeof(float);
        if (be->copy(be, back ? p : c, back ? c : p, bytes, err) < 0)
            return -1;
        at += tr->fr[i].n;
    }
    return 0;
}

int peso_trainer_unfreeze(peso_trainer *tr, peso_err *err)
{
    return frozen_copy(tr, 1, err);
}

int peso_trainer_zero_frozen(peso_trainer *tr, peso_err *err)
{
    peso_backend *be = tr->r->be;
    for (int i = 0; i < tr->n_fr; i++)
        if (be->zero(be, tr->r->m->grads + tr->fr[i].off, tr->fr[i].n * sizeof(float), err) < 0)
            return -1;
    return 0;
}

/* What the stage does not train, besides what the method froze: the new
 * rows after stage 1 (which trains them) and the magnitudes beyond the
 * past adapters in use. */
static int plan_frozen(peso_trainer *tr, peso_err *err)
{
    peso_run *r = tr->r;
    peso_llama *m = r->m;
    const peso_flat *f = &m->flat;
    for (size_t i = 0; i < f->n_views && tr->s.t >= 2; i++) {
        const peso_view *v = &f->views[i];
        if (!strcmp(v->name, PESO_LLAMA_EMBED_NEW) || !strcmp(v->name, PESO_LLAMA_HEAD_NEW))
            add_frozen(tr, v->offset, v->numel);
    }
    int n_past = tr->s.ms.n_past;
    if (m->n_magnitudes > n_past)
        add_frozen(tr, m->mag_off + (size_t)n_past, (size_t)(m->n_magnitudes - n_past));
    size_t n = frozen_numel(tr);
    if (n && r->be->alloc(r->be, (void **)&tr->fr_copy, n * sizeof(float), err) < 0)
        return -1;
    return n ? frozen_copy(tr, 0, err) : 0;
}

/* ---- what the method may ask for ---- */

/* fn on every micro-batch of stage k's training windows, epoch 0's order. */
static int each_batch(void *ctx, int k, int (*fn)(void *arg, const peso_llama_batch *b, peso_err *err),
                      void *arg, peso_err *err)
{
    peso_trainer *tr = ctx;
    peso_run *r = tr->r;
    const peso_conf *c = r->c;
    peso_steps st;
    if (peso_steps_plan(&st, peso_train_pairs(r, k), &r->prompt, c->seed, k, 0, (size_t)c->train.max_windows,
                        c->train.batch_tokens, err) < 0)
        return -1;
    size_t n = st.n_win;
    peso_batcher b;
    peso_batcher_init(&b, &r->d, &r->prompt, peso_train_pairs(r, k));
    peso_batcher_begin(&b, st.win, n);
    size_t pos = 0;
    peso_llama_batch batch;
    long real;
    int rc;
    while ((rc = peso_batcher_next(&b, n, &pos, c->train.micro_tokens, &batch, &real, err)) == 1)
        if (fn(arg, &batch, err) < 0) {
            rc = -1;
            break;
        }
    peso_batcher_free(&b);
    peso_steps_free(&st);
    return rc;
}

/* ---- the method's start ---- */

static void prev_path(const peso_run *r, int t, char *out, size_t n)
{
    peso_train_stage_path(out, n, peso_train_stage_dir(r, t - 1), t - 1);
}

/* Stage t >= 2 starts from the previous stage's final checkpoint. */
static int setup_method(peso_trainer *tr, peso_err *err)
{
    peso_run *r = tr->r;
    peso_stage *s = &tr->s;
    peso_llama *m = r->m;
    int t = s->t;
    size_t n = m->flat.numel;
    char path[sizeof r->run_dir + 32];
    prev_path(r, t, path, sizeof path);
    peso_ckpt ck;
    float *params = peso_calloc(n, sizeof *params);
    int rc = peso_llama_get_params(m, params, err); /* keeps magnitudes a stage-1 file lacks */
    if (rc == 0)
        rc = peso_train_ckpt_open(r, path, t == 2, &ck, err);
    if (rc == 0)
        rc = peso_train_ckpt_state(r, &ck, params, s, err);
    peso_ckpt_free(&ck);
    free(s->best); /* the previous stage's file has none; a stage starts without */
    s->best = NULL;
    if (rc < 0) {
        free(params);
        return peso_err_prefix(err, "stage %d needs stage %d's final checkpoint", t, t - 1);
    }
    if (peso_method_stage_set_prev(&s->ms, params, err) < 0) {
        free(params);
        return -1;
    }
    if (r->meth->begin)
        rc = r->meth->begin(&s->ms, params, err);
    if (rc == 0)
        rc = peso_llama_set_params(m, params, err);
    free(params);
    return rc;
}

static int stage_lr(const peso_run *r, int t, double *lr, peso_err *err)
{
    const peso_conf *c = r->c;
    *lr = c->train.lr;
    if (t == 1)
        return 0;
    double scale;
    if (peso_conf_lr_scale(c, (double)peso_train_pairs(r, t)->n, (double)peso_train_pairs(r, 1)->n, &scale,
                           err) < 0)
        return -1;
    *lr *= scale;
    return 0;
}

static int setup_optim(peso_trainer *tr, peso_err *err)
{
    peso_run *r = tr->r;
    const peso_conf *c = r->c;
    int t = tr->s.t;
    tr->epochs = (int)(t == 1 ? c->train.epochs : c->train.epochs_continual);
    tr->total_steps = 0;
    for (int e = 0; e < tr->epochs; e++) {
        peso_steps st;
        if (peso_steps_plan(&st, peso_train_pairs(r, t), &r->prompt, c->seed, t, e,
                            (size_t)c->train.max_windows, c->train.batch_tokens, err) < 0)
            return -1;
        tr->total_steps += (int64_t)st.n_steps;
        peso_steps_free(&st);
    }
    peso_optim_hparams hp;
    peso_optim_defaults(&hp);
    hp.weight_decay = c->train.weight_decay;
    if (peso_optim_init(&tr->opt, r->be, r->m->flat.numel, &hp, err) < 0)
        return -1;
    double lr;
    if (stage_lr(r, t, &lr, err) < 0 || peso_schedule_parse_kind(c->train.schedule, &tr->sched.kind, err) < 0)
        return -1;
    tr->sched.lr = lr;
    tr->sched.warmup = c->train.warmup_steps < tr->total_steps ? c->train.warmup_steps : tr->total_steps;
    tr->sched.total = tr->total_steps;
    tr->sched.min_ratio = c->train.min_lr_ratio;
    return peso_schedule_check(&tr->sched, c->source, err);
}

int peso_trainer_setup(peso_trainer *tr, peso_err *err)
{
    peso_run *r = tr->r;
    peso_method_stage *ms = &tr->s.ms;
    tr->env = (peso_method_env){.ctx = tr, .each_batch = each_batch, .freeze = add_frozen};
    ms->meth = r->meth;
    ms->c = r->c;
    ms->m = r->m;
    ms->t = tr->s.t;
    ms->rank = r->par->grank;
    ms->size = r->par->gsize;
    ms->log = r->log;
    ms->env = &tr->env;
    peso_batcher_init(&tr->batcher, &r->d, &r->prompt, peso_train_pairs(r, tr->s.t));
    if (tr->s.t >= 2 && setup_method(tr, err) < 0)
        return -1;
    if (plan_frozen(tr, err) < 0)
        return -1;
    tr->host_grads = peso_malloc((r->m->flat.numel + PESO_STEP_TAIL_N) * sizeof *tr->host_grads);
    return setup_optim(tr, err);
}

void peso_trainer_free(peso_trainer *tr)
{
    peso_run *r = tr->r;
    if (tr->fr_copy)
        r->be->free(r->be, tr->fr_copy);
    free(tr->fr);
    free(tr->host_grads);
    free(tr->mine);
    peso_optim_free(&tr->opt);
    peso_batcher_free(&tr->batcher);
    peso_stage_free(&tr->s);
    peso_method_model_plain(r->m);
}
