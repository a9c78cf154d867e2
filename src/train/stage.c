/* The stage loop: set a stage up from the previous stage's checkpoint as
 * the method says, train it step by step (checkpoints, signals, progress
 * lines), write its final checkpoint and evaluate it. */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/atomic.h"
#include "common/file.h"
#include "common/clock.h"
#include "eval/evaluate.h"
#include "method/inflora.h"
#include "optim/schedule.h"
#include "train/batch.h"
#include "train/internal.h"

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

void peso_train_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

/* A range of the flat that a stage does not train: its gradients are
 * zeroed before the update and its values put back after it (AdamW's
 * weight decay would move them otherwise). */
typedef struct frozen {
    size_t off, n;
} frozen;

typedef struct trainer {
    peso_run *r;
    peso_stage s;
    peso_optim opt;
    peso_schedule sched;
    peso_prox_groups groups;
    frozen *fr;
    int n_fr;
    float *fr_copy; /* device, the frozen values in range order */
    peso_batcher batcher;
    int32_t *mine; /* this rank's windows of a step */
    size_t cap_mine;
    int prox_lo, prox_hi; /* this rank's share of the proximal term's groups */
    int epochs;
    int64_t total_steps;
    double t0;
    long tokens_done;
} trainer;

static const peso_pairs *train_pairs(const peso_run *r, int t)
{
    return &r->d.split.b[t - 1].train;
}

static void add_frozen(trainer *tr, size_t off, size_t n)
{
    tr->fr = peso_realloc(tr->fr, (size_t)(tr->n_fr + 1) * sizeof *tr->fr);
    tr->fr[tr->n_fr++] = (frozen){off, n};
}

static size_t frozen_numel(const trainer *tr)
{
    size_t n = 0;
    for (int i = 0; i < tr->n_fr; i++)
        n += tr->fr[i].n;
    return n;
}

/* back = 0: params -> copy; 1: copy -> params. */
static int frozen_copy(trainer *tr, int back, peso_err *err)
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

static int frozen_zero_grads(trainer *tr, peso_err *err)
{
    peso_backend *be = tr->r->be;
    for (int i = 0; i < tr->n_fr; i++)
        if (be->zero(be, tr->r->m->grads + tr->fr[i].off, tr->fr[i].n * sizeof(float), err) < 0)
            return -1;
    return 0;
}

/* What stage t >= 2 does not train: the new rows (stage 1's), InfLoRA's
 * A, and magnitudes beyond the past adapters in use. */
static int plan_frozen(trainer *tr, peso_err *err)
{
    peso_run *r = tr->r;
    peso_llama *m = r->m;
    const peso_flat *f = &m->flat;
    for (size_t i = 0; i < f->n_views; i++) {
        const peso_view *v = &f->views[i];
        if (!strcmp(v->name, PESO_LLAMA_EMBED_NEW) || !strcmp(v->name, PESO_LLAMA_HEAD_NEW))
            add_frozen(tr, v->offset, v->numel);
    }
    if (r->meth.name == PESO_M_INFLORA)
        for (int i = 0; i < m->lora.n_modules; i++)
            add_frozen(tr, m->lora.mods[i].a_off, (size_t)m->lora.conf.rank * m->lora.mods[i].in);
    if (r->n_mag > (size_t)tr->s.n_past)
        add_frozen(tr, r->mag_off + (size_t)tr->s.n_past, r->n_mag - (size_t)tr->s.n_past);
    size_t n = frozen_numel(tr);
    if (n && r->be->alloc(r->be, (void **)&tr->fr_copy, n * sizeof(float), err) < 0)
        return -1;
    return n ? frozen_copy(tr, 0, err) : 0;
}

/* ---- InfLoRA ---- */

static int input_cov(peso_run *r, int t, double *cov, long *n_tok, peso_err *err)
{
    const peso_conf *c = r->c;
    size_t ncov = peso_llama_input_cov_numel(r->m);
    memset(cov, 0, ncov * sizeof *cov);
    *n_tok = 0;
    peso_steps st;
    if (peso_steps_plan(&st, train_pairs(r, t), &r->prompt, c->seed, t, 0, (size_t)c->train.max_windows,
                        c->train.batch_tokens, err) < 0)
        return -1;
    /* Not shared out over the train ranks: each runs all the windows in
     * the same order, so that A_t does not depend on the number of ranks
     * (eigenvectors of nearly equal eigenvalues turn with the order of
     * the float sums). It is one forward pass per stage. */
    size_t k = st.n_win;
    peso_batcher b;
    peso_batcher_init(&b, &r->d, &r->prompt, train_pairs(r, t));
    peso_batcher_begin(&b, st.win, k);
    size_t pos = 0;
    peso_llama_batch batch;
    long real;
    int rc;
    while ((rc = peso_batcher_next(&b, k, &pos, c->train.micro_tokens, &batch, &real, err)) == 1)
        if (peso_llama_input_cov(r->m, &batch, cov, n_tok, err) < 0) {
            rc = -1;
            break;
        }
    peso_batcher_free(&b);
    peso_steps_free(&st);
    return rc;
}

static void alloc_bases(peso_run *r, peso_stage *s)
{
    const peso_lora *l = &r->m->lora;
    s->basis = peso_calloc((size_t)l->n_modules, sizeof *s->basis);
    s->basis_k = peso_calloc((size_t)l->n_modules, sizeof *s->basis_k);
    for (int i = 0; i < l->n_modules; i++) {
        int cap = l->mods[i].in - l->conf.rank;
        s->basis[i] = peso_calloc((size_t)(cap > 0 ? cap : 1) * l->mods[i].in, sizeof **s->basis);
    }
}

/* Adds stage t's input directions (covariance cov) to every module's
 * basis; each keeps room for `rank` free directions. */
static int extend_bases(peso_run *r, peso_stage *s, const double *cov, peso_err *err)
{
    const peso_lora *l = &r->m->lora;
    size_t at = 0;
    for (int i = 0; i < l->n_modules; i++) {
        int in = l->mods[i].in;
        if (peso_inflora_extend(cov + at, in, s->basis[i], &s->basis_k[i], in - l->conf.rank,
                                r->c->method.inflora_threshold, err) < 0)
            return peso_err_prefix(err, "inflora, module %d", i);
        at += (size_t)in * in;
    }
    return 0;
}

/* A_t of every module: the top-rank directions of this stage's inputs
 * outside the protected subspace, written into params. */
static int design_a(peso_run *r, peso_stage *s, float *params, peso_err *err)
{
    const peso_lora *l = &r->m->lora;
    size_t at = 0;
    for (int i = 0; i < l->n_modules; i++) {
        int in = l->mods[i].in;
        if (peso_inflora_design(s->cov + at, in, s->basis[i], s->basis_k[i], l->conf.rank,
                                params + l->mods[i].a_off, err) < 0)
            return peso_err_prefix(err, "inflora, module %d", i);
        at += (size_t)in * in;
    }
    return 0;
}

/* ---- stage set-up ---- */

static void prev_path(const peso_run *r, int t, char *out, size_t n)
{
    peso_train_stage_path(out, n, t == 2 ? r->c->out_dir : r->run_dir, t - 1);
}

/* The past adapters of stage t from the previous stage's: all of them
 * and its trained one, or only that one (latest). */
static void set_past_list(peso_run *r, peso_stage *s, peso_stage *prev, const float *prev_params)
{
    size_t n = r->m->flat.numel;
    int keep = r->meth.latest ? 0 : prev->n_past;
    s->n_past = keep + 1;
    s->past = peso_calloc((size_t)s->n_past, sizeof *s->past);
    for (int i = 0; i < keep; i++) {
        s->past[i] = prev->past[i];
        prev->past[i] = NULL;
    }
    s->past[keep] = peso_malloc(n * sizeof **s->past);
    memcpy(s->past[keep], prev_params, n * sizeof *prev_params);
    if (r->meth.name != PESO_M_SDLORA) {
        s->alpha = peso_malloc((size_t)s->n_past * sizeof *s->alpha);
        for (int i = 0; i < s->n_past; i++)
            s->alpha[i] = 1.0f;
    }
}

static int setup_inflora(trainer *tr, peso_stage *prev, float *params, peso_err *err)
{
    peso_run *r = tr->r;
    peso_stage *s = &tr->s;
    size_t ncov = peso_llama_input_cov_numel(r->m);
    long n_tok;
    s->cov = peso_malloc(ncov * sizeof *s->cov);
    if (prev->basis) {
        s->basis = prev->basis;
        s->basis_k = prev->basis_k;
        prev->basis = NULL;
        prev->basis_k = NULL;
    } else {
        /* stage 2: the protected subspace starts with D1's inputs under
         * the stage-1 model (no past adapters yet) */
        alloc_bases(r, s);
        if (r->log)
            fprintf(r->log, "stage %d: inflora: input covariance of D1 under the stage-1 model\n", s->t);
        if (peso_llama_set_past(r->m, 0, NULL, NULL, err) < 0 ||
            peso_llama_set_params(r->m, s->prev, err) < 0 || input_cov(r, 1, s->cov, &n_tok, err) < 0 ||
            extend_bases(r, s, s->cov, err) < 0)
            return -1;
    }
    if (peso_llama_set_past(r->m, s->n_past, (const float *const *)s->past, s->alpha, err) < 0 ||
        peso_llama_set_params(r->m, params, err) < 0 || input_cov(r, s->t, s->cov, &n_tok, err) < 0 ||
        design_a(r, s, params, err) < 0)
        return -1;
    return peso_llama_set_freeze_a(r->m, 1) < 0 ? peso_errf(err, "inflora: freezing A") : 0;
}

/* Stage t >= 2 starts from the previous stage's final checkpoint. */
static int setup_continual(trainer *tr, peso_err *err)
{
    peso_run *r = tr->r;
    peso_stage *s = &tr->s;
    peso_llama *m = r->m;
    const peso_conf *c = r->c;
    int t = s->t;
    size_t n = m->flat.numel;
    char path[sizeof r->run_dir + 32];
    prev_path(r, t, path, sizeof path);
    peso_ckpt ck;
    peso_stage prev = {.t = t - 1};
    float *params = peso_calloc(n, sizeof *params);
    int rc = peso_llama_get_params(m, params, err); /* keeps magnitudes a stage-1 file lacks */
    if (rc == 0)
        rc = peso_train_ckpt_open(r, path, t == 2, &ck, err);
    if (rc == 0)
        rc = peso_train_ckpt_state(r, &ck, params, &prev, err);
    peso_ckpt_free(&ck);
    if (rc < 0) {
        peso_stage_free(&prev, m->lora.n_modules);
        free(params);
        return peso_err_prefix(err, "stage %d needs stage %d's final checkpoint", t, t - 1);
    }
    s->prev = peso_malloc(n * sizeof *s->prev);
    memcpy(s->prev, params, n * sizeof *params);
    if (r->meth.cumulative) {
        set_past_list(r, s, &prev, params);
        if (r->meth.name == PESO_M_SDLORA) {
            int kept = s->n_past - 1; /* learned magnitudes of the kept ones stay */
            for (size_t i = r->meth.latest ? 0 : (size_t)kept; i < r->n_mag; i++)
                params[r->mag_off + i] = 1.0f;
        }
    }
    if (!r->meth.inherit)
        peso_lora_init(&m->lora, params, c->seed ^ ((uint64_t)t * 0x9E3779B97F4A7C15ull));
    if (r->meth.name == PESO_M_INFLORA)
        rc = setup_inflora(tr, &prev, params, err);
    else if (r->meth.cumulative)
        rc = peso_llama_set_past(m, s->n_past, (const float *const *)s->past, s->alpha, err);
    if (rc == 0)
        rc = peso_llama_set_params(m, params, err);
    if (rc == 0 && (r->meth.name == PESO_M_PESO || r->meth.name == PESO_M_L2 || r->meth.name == PESO_M_ORTHO)) {
        /* l2 and ortho are sharded by module: the groups of "module" */
        peso_prox_grouping how = PESO_PROX_MODULE;
        if (r->meth.name == PESO_M_PESO)
            rc = peso_prox_grouping_parse(c->method.group, &how, err);
        if (rc == 0)
            rc = peso_prox_groups_build(&tr->groups, &m->lora, how, err);
        if (rc == 0)
            rc = peso_prox_shard(&tr->groups, r->par->gsize, r->par->grank, &tr->prox_lo, &tr->prox_hi, err);
    }
    if (rc == 0 && r->meth.name == PESO_M_OUTPUT_KL)
        rc = peso_llama_set_output_kl(m, s->prev, err);
    peso_stage_free(&prev, m->lora.n_modules);
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
    if (peso_conf_lr_scale(c, (double)train_pairs(r, t)->n, (double)train_pairs(r, 1)->n, &scale, err) < 0)
        return -1;
    *lr *= scale;
    return 0;
}

static int setup_optim(trainer *tr, peso_err *err)
{
    peso_run *r = tr->r;
    const peso_conf *c = r->c;
    int t = tr->s.t;
    tr->epochs = (int)(t == 1 ? c->train.epochs : c->train.epochs_continual);
    tr->total_steps = 0;
    for (int e = 0; e < tr->epochs; e++) {
        peso_steps st;
        if (peso_steps_plan(&st, train_pairs(r, t), &r->prompt, c->seed, t, e, (size_t)c->train.max_windows,
                            c->train.batch_tokens, err) < 0)
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

static void trainer_free(trainer *tr)
{
    peso_run *r = tr->r;
    if (tr->fr_copy)
        r->be->free(r->be, tr->fr_copy);
    free(tr->fr);
    free(tr->mine);
    peso_optim_free(&tr->opt);
    peso_prox_groups_free(&tr->groups);
    peso_batcher_free(&tr->batcher);
    peso_stage_free(&tr->s, r->m->lora.n_modules);
    peso_err e;
    peso_llama_set_past(r->m, 0, NULL, NULL, &e);
    peso_llama_set_output_kl(r->m, NULL, &e);
    peso_llama_set_freeze_a(r->m, 0);
}

/* ---- one optimizer step ---- */

static int prox_term(trainer *tr, double *value, peso_err *err)
{
    peso_run *r = tr->r;
    peso_llama *m = r->m;
    double lambda = r->c->method.lambda;
    int lo = tr->prox_lo, hi = tr->prox_hi;
    *value = 0;
    switch (r->meth.name) {
    case PESO_M_PESO: return peso_prox_kl(&tr->groups, lo, hi, m->params, tr->s.prev, lambda, m->grads, value, err);
    case PESO_M_L2: return peso_prox_l2(&m->lora, lo, hi, m->params, tr->s.prev, lambda, m->grads, value, err);
    case PESO_M_ORTHO:
        return peso_prox_ortho(&m->lora, lo, hi, m->params, tr->s.prev, lambda, m->grads, value, err);
    default: return 0;
    }
}

typedef struct step_out {
    double data, prox, gnorm, lr;
    long tokens;
    int stop; /* some train rank got SIGTERM/SIGUSR1 */
} step_out;

/* The statistics that ride in the gradient all-reduce, after the flat. */
enum { TAIL_DATA, TAIL_PROX, TAIL_TOKENS, TAIL_BAD, TAIL_STOP, TAIL_N };

static int train_step(trainer *tr, const peso_steps *st, size_t i, int64_t stage_step, step_out *o,
                      peso_err *err)
{
    peso_run *r = tr->r;
    peso_llama *m = r->m;
    const peso_conf *c = r->c;
    const peso_par *par = r->par;
    size_t lo = st->start[i], n = st->start[i + 1] - lo, k = 0;
    long labels = st->labels[i];
    memset(o, 0, sizeof *o);
    /* window j of the step goes to train rank j mod N: the global step,
     * and so the result, does not depend on N */
    peso_grow((void **)&tr->mine, &tr->cap_mine, n ? n : 1, sizeof *tr->mine);
    for (size_t j = (size_t)par->grank; j < n; j += (size_t)par->gsize)
        tr->mine[k++] = st->win[lo + j];
    if (peso_llama_zero_grads(m, err) < 0)
        return -1;
    if (r->meth.name == PESO_M_OUTPUT_KL)
        peso_llama_output_kl_scale(m, c->method.lambda / (double)st->tokens[i]);
    peso_batcher_begin(&tr->batcher, tr->mine, k);
    size_t pos = 0;
    peso_llama_batch b;
    long real, tokens = 0;
    double sum = 0, psum = 0;
    int rc;
    while ((rc = peso_batcher_next(&tr->batcher, k, &pos, c->train.micro_tokens, &b, &real, err)) == 1) {
        peso_llama_loss L;
        if (peso_llama_forward_backward(m, &b, 1.0f / (float)labels, &L, err) < 0)
            return -1;
        sum += L.sum;
        psum += L.prox;
        tokens += real;
    }
    double pv;
    if (rc < 0 || prox_term(tr, &pv, err) < 0)
        return -1;
    psum += pv;
    if (c->debug.nan_step && stage_step + 1 == c->debug.nan_step && par->grank == c->debug.nan_rank)
        sum = NAN;
    int bad = !isfinite(sum) || !isfinite(psum);
    if (bad)
        fprintf(stderr, "peso-train: rank %d: non-finite loss at stage %d step %lld (data sum %g, proximal %g)\n",
                par->rank, tr->s.t, (long long)stage_step + 1, sum, psum);
    float tail[TAIL_N] = {(float)sum, (float)psum, (float)tokens, (float)bad, (float)(stop_signal != 0)};
    if (m->be->upload(m->be, m->grads + m->flat.numel, tail, sizeof tail, err) < 0 ||
        peso_par_allreduce_f(par, m->grads, m->flat.numel + TAIL_N, err) < 0 ||
        m->be->download(m->be, tail, m->grads + m->flat.numel, sizeof tail, err) < 0)
        return -1;
    o->data = tail[TAIL_DATA] / (double)labels;
    o->prox = tail[TAIL_PROX];
    o->tokens = (long)tail[TAIL_TOKENS];
    o->stop = tail[TAIL_STOP] > 0;
    if (tail[TAIL_BAD] > 0)
        return peso_errf(err, "stage %d step %lld: non-finite loss on %d train rank(s) (named above)", tr->s.t,
                         (long long)stage_step + 1, (int)tail[TAIL_BAD]);
    o->lr = peso_schedule_lr(&tr->sched, stage_step);
    if (frozen_zero_grads(tr, err) < 0 ||
        peso_optim_clip_step(&tr->opt, m->params, m->grads, o->lr, c->train.max_grad_norm, &o->gnorm, err) < 0)
        return peso_err_prefix(err, "stage %d step %lld", tr->s.t, (long long)stage_step + 1);
    return frozen_copy(tr, 1, err);
}

static void fmt_secs(char *buf, size_t n, double s)
{
    if (s < 120)
        snprintf(buf, n, "%.1fs", s);
    else if (s < 7200)
        snprintf(buf, n, "%.1fm", s / 60);
    else
        snprintf(buf, n, "%.1fh", s / 3600);
}

static void progress(trainer *tr, int epoch, int64_t step, int64_t first, const step_out *o)
{
    FILE *log = tr->r->log;
    if (!log)
        return;
    double el = peso_now() - tr->t0;
    double rate = el > 0 ? (double)tr->tokens_done / el : 0;
    double eta = step > first ? el / (double)(step - first) * (double)(tr->total_steps - step) : 0;
    char e1[16], e2[16];
    fmt_secs(e1, sizeof e1, el);
    fmt_secs(e2, sizeof e2, eta);
    fprintf(log,
            "stage %d epoch %d/%d step %lld/%lld loss %.4f (data %.4f prox %.4g) lr %.3g gnorm %.3g "
            "tok/s %.0f elapsed %s eta %s\n",
            tr->s.t, epoch + 1, tr->epochs, (long long)step, (long long)tr->total_steps, o->data + o->prox,
            o->data, o->prox, o->lr, o->gnorm, rate, e1, e2);
    fflush(log);
}

/* ---- checkpoints ---- */

static const char *stage_dir(const peso_run *r, int t)
{
    return t == 1 ? r->c->out_dir : r->run_dir;
}

static int write_partial(trainer *tr, int64_t step, int epoch, peso_err *err)
{
    char path[sizeof tr->r->run_dir + 64];
    snprintf(path, sizeof path, "%s/stage-%d-step-%lld.h5", stage_dir(tr->r, tr->s.t), tr->s.t, (long long)step);
    if (peso_train_ckpt_write(tr->r, &tr->s, &tr->opt, path, PESO_CKPT_PARTIAL, step, epoch, tr->opt.step, err) < 0)
        return -1;
    if (tr->r->log)
        fprintf(tr->r->log, "stage %d: checkpoint %s\n", tr->s.t, path);
    return 0;
}

/* Removes stage t's partial checkpoints once its final one exists. */
static void remove_partials(const peso_run *r, int t)
{
    const char *dir = stage_dir(r, t);
    DIR *d = opendir(dir);
    if (!d)
        return;
    char prefix[32];
    snprintf(prefix, sizeof prefix, "stage-%d-step-", t);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, prefix, strlen(prefix)) || n < 3 || strcmp(e->d_name + n - 3, ".h5"))
            continue;
        char path[PESO_CONF_PATH + 300];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

/* Overlays a partial checkpoint of this stage: parameters and optimizer. */
static int resume_from(trainer *tr, const char *path, int64_t *step, peso_err *err)
{
    peso_run *r = tr->r;
    peso_ckpt ck;
    int rc = peso_train_ckpt_open(r, path, tr->s.t == 1, &ck, err);
    float *params = peso_malloc(r->m->flat.numel * sizeof *params);
    if (rc == 0)
        rc = peso_llama_get_params(r->m, params, err);
    peso_flat own = tr->s.t == 1 ? peso_train_base_flat(r) : r->m->flat;
    if (rc == 0)
        rc = peso_ckpt_get_flat(&ck, "", &own, params, err);
    if (rc == 0)
        rc = peso_llama_set_params(r->m, params, err);
    if (rc == 0 && ck.optim_n != r->m->flat.numel)
        rc = peso_errf(err, "%s: optimizer state of %zu floats, the model has %zu", path, ck.optim_n,
                       r->m->flat.numel);
    if (rc == 0)
        rc = peso_optim_import(&tr->opt, ck.optim_m, ck.optim_v, ck.optim_n, ck.optim_step, err);
    if (rc == 0)
        rc = peso_train_ckpt_best(r, &ck, &tr->s, err);
    *step = ck.step;
    peso_ckpt_free(&ck);
    free(params);
    if (rc == 0 && r->log)
        fprintf(r->log, "stage %d: resuming from %s (step %lld)\n", tr->s.t, path, (long long)*step);
    return rc;
}

/* ---- eval.select_epoch ---- */

/* At the end of epoch e: decodes the stage's validation pairs and keeps
 * the parameters if their NDCG@10 beats every earlier epoch's (scores
 * compared as float32, the precision a checkpoint keeps them in, so a
 * resumed run decides the same). */
static int select_epoch(trainer *tr, int e, peso_err *err)
{
    peso_run *r = tr->r;
    const peso_conf *c = r->c;
    if (!c->eval.select_epoch || tr->epochs < 2)
        return 0;
    peso_metrics sums;
    peso_metrics_mean mean;
    if (peso_train_eval_sums(r, tr->s.t, PESO_EVAL_VALID, 1, &sums, err) < 0 ||
        peso_metrics_final(&sums, &mean, err) < 0)
        return peso_err_prefix(err, "stage %d epoch %d: validation", tr->s.t, e + 1);
    double score = (float)mean.ndcg[peso_metrics_k_index(mean.k, mean.n_k, 10)];
    int better = !tr->s.best || score > tr->s.best_score;
    if (r->log)
        fprintf(r->log, "stage %d epoch %d: valid ndcg@10 %.4f over %lld users%s\n", tr->s.t, e + 1, score,
                (long long)mean.users, better ? " (best so far)" : "");
    if (!better)
        return 0;
    if (!tr->s.best)
        tr->s.best = peso_malloc(r->m->flat.numel * sizeof *tr->s.best);
    tr->s.best_score = score;
    tr->s.best_epoch = e;
    return peso_llama_get_params(r->m, tr->s.best, err);
}

/* The best epoch's parameters become the stage's result. */
static int keep_best(trainer *tr, peso_err *err)
{
    peso_run *r = tr->r;
    int rc = 0;
    if (tr->s.best && tr->s.best_epoch != tr->epochs - 1) {
        if (r->log)
            fprintf(r->log, "stage %d: keeping epoch %d (valid ndcg@10 %.4f)\n", tr->s.t, tr->s.best_epoch + 1,
                    tr->s.best_score);
        rc = peso_llama_set_params(r->m, tr->s.best, err);
    }
    free(tr->s.best); /* not part of the stage's final checkpoint */
    tr->s.best = NULL;
    return rc;
}

/* ---- a whole stage ---- */

static int run_steps(trainer *tr, int64_t start, peso_err *err)
{
    peso_run *r = tr->r;
    const peso_conf *c = r->c;
    int t = tr->s.t;
    int64_t step = 0;
    tr->t0 = peso_now();
    for (int e = 0; e < tr->epochs; e++) {
        peso_steps st;
        if (peso_steps_plan(&st, train_pairs(r, t), &r->prompt, c->seed, t, e, (size_t)c->train.max_windows,
                            c->train.batch_tokens, err) < 0)
            return -1;
        for (size_t i = 0; i < st.n_steps; i++, step++) {
            if (step < start)
                continue;
            step_out o;
            if (train_step(tr, &st, i, step, &o, err) < 0) {
                peso_steps_free(&st);
                return -1;
            }
            tr->tokens_done += o.tokens;
            int64_t done = step + 1;
            if (i + 1 == st.n_steps && select_epoch(tr, e, err) < 0) {
                peso_steps_free(&st);
                return -1;
            }
            if (done % c->train.log_every == 0 || done == tr->total_steps || done == start + 1)
                progress(tr, e, done, start, &o);
            int stop = o.stop && done < tr->total_steps;
            int ck = c->ckpt.every_steps > 0 && done % c->ckpt.every_steps == 0 && done < tr->total_steps;
            if ((ck || stop) && r->par->grank == 0 && write_partial(tr, done, e, err) < 0) {
                peso_steps_free(&st);
                return -1;
            }
            if (stop) {
                if (r->log)
                    fprintf(r->log, "stage %d: stopped by signal %d after step %lld; rerun with --resume\n", t,
                            stop_signal ? (int)stop_signal : SIGTERM, (long long)done);
                peso_steps_free(&st);
                return PESO_TRAIN_EXIT_REQUEUE;
            }
        }
        peso_steps_free(&st);
    }
    return 0;
}

static int run_stage(peso_run *r, int t, const char *partial, peso_err *err)
{
    trainer tr;
    memset(&tr, 0, sizeof tr);
    tr.r = r;
    tr.s.t = t;
    peso_batcher_init(&tr.batcher, &r->d, &r->prompt, train_pairs(r, t));
    int64_t start = 0;
    int rc = t >= 2 ? setup_continual(&tr, err) : 0;
    if (rc == 0)
        rc = plan_frozen(&tr, err);
    if (rc == 0)
        rc = setup_optim(&tr, err);
    if (rc == 0 && partial)
        rc = resume_from(&tr, partial, &start, err);
    if (rc == 0 && r->log)
        fprintf(r->log, "stage %d (%s): %zu training windows, %d epoch(s), %lld steps, lr %.3g\n", t,
                t == 1 ? PESO_STAGE1_METHOD : r->meth.label, train_pairs(r, t)->n, tr.epochs,
                (long long)tr.total_steps, tr.sched.lr);
    if (rc == 0)
        rc = run_steps(&tr, start, err);
    if (rc == 0)
        rc = keep_best(&tr, err);
    if (rc == 0 && r->meth.name == PESO_M_INFLORA && t >= 2)
        rc = extend_bases(r, &tr.s, tr.s.cov, err);
    char path[sizeof r->run_dir + 32];
    peso_train_stage_path(path, sizeof path, stage_dir(r, t), t);
    if (rc == 0 && r->par->grank == 0)
        rc = peso_train_ckpt_write(r, &tr.s, &tr.opt, path, PESO_CKPT_FINAL, tr.total_steps, tr.epochs - 1,
                                   tr.opt.step, err);
    /* the next stage's set-up reads this file on every train rank */
    if (rc == 0)
        rc = peso_par_barrier(r->par, err);
    if (rc == 0 && r->par->grank == 0) {
        remove_partials(r, t);
        if (r->log)
            fprintf(r->log, "stage %d: done in %.1fs, checkpoint %s\n", t, peso_now() - tr.t0, path);
    }
    trainer_free(&tr);
    return rc;
}

/* ---- evaluation ---- */

static int listed(const int64_t *v, int n, int x)
{
    for (int i = 0; i < n; i++)
        if (v[i] == x)
            return 1;
    return 0;
}

/* Evaluates stage t from its final checkpoint: the evaluation group
 * does it, while this group goes on (train rank 0 sends the request), or
 * without one the train group itself. */
static int evaluate_file(peso_run *r, int t, const char *ckpt, const char *run, const char *label, peso_err *err)
{
    if (r->par->n_eval)
        return r->par->grank == 0 ? peso_par_send_eval(r->par, t, ckpt, err) : 0;
    if (peso_train_load_checkpoint(r, ckpt, err) < 0)
        return -1;
    int rc = peso_train_evaluate(r, t, run, label, err);
    peso_err e;
    peso_llama_set_past(r->m, 0, NULL, NULL, &e);
    return rc;
}

/* ---- the stages of a run ---- */

static int stage_one(peso_run *r, const peso_train_opts *o, peso_err *err)
{
    const peso_conf *c = r->c;
    char path[PESO_CONF_PATH + 32];
    peso_train_stage_path(path, sizeof path, c->out_dir, 1);
    if (peso_file_exists(path)) {
        peso_ckpt ck;
        int rc = peso_train_ckpt_open(r, path, 1, &ck, err);
        peso_ckpt_free(&ck);
        if (rc < 0)
            return -1;
        if (r->log)
            fprintf(r->log, "stage 1: reusing %s\n", path);
    } else {
        int st;
        int64_t step;
        char partial[PESO_CONF_PATH + 64];
        if (peso_ckpt_newest(c->out_dir, &st, &step, partial, sizeof partial, NULL, err) < 0)
            return -1;
        if (st == 1 && !o->resume)
            return peso_errf(err, "%s exists: pass --resume to continue stage 1, or remove it", partial);
        int rc = run_stage(r, 1, st == 1 ? partial : NULL, err);
        if (rc)
            return rc;
    }
    if (c->eval.after_stage && listed(c->eval.stages, c->eval.n_stages, 1))
        return evaluate_file(r, 1, path, PESO_STAGE1_METHOD, PESO_STAGE1_METHOD, err);
    return 0;
}

static int train_stages(peso_run *r, const peso_train_opts *o, peso_err *err);

int peso_train(peso_run *r, const peso_train_opts *o, peso_err *err)
{
    int rc = train_stages(r, o, err);
    if (rc == 0 && !r->par->n_eval)
        peso_train_eval_summary(r);
    /* the evaluation group finishes what it was sent, then stops */
    if (rc >= 0 && r->par->n_eval && r->par->grank == 0 && peso_par_send_eval(r->par, 0, "", err) < 0)
        return -1;
    return rc;
}

static int train_stages(peso_run *r, const peso_train_opts *o, peso_err *err)
{
    const peso_conf *c = r->c;
    int T = r->n_blocks;
    int lo = o->stage_lo ? o->stage_lo : 1, hi = o->stage_hi ? o->stage_hi : T;
    if (lo < 1 || hi > T || lo > hi)
        return peso_errf(err, "--stages %d-%d: the dataset has stages 1-%d", lo, hi, T);
    if (lo == 1) {
        int rc = stage_one(r, o, err);
        if (rc)
            return rc;
    }
    if (hi < 2)
        return 0;
    char s1[PESO_CONF_PATH + 32];
    peso_train_stage_path(s1, sizeof s1, c->out_dir, 1);
    if (r->meth.name == PESO_M_PRETRAIN) {
        for (int t = lo > 2 ? lo : 2; t <= hi && c->eval.after_stage; t++)
            if (evaluate_file(r, t, s1, r->meth.run, r->meth.label, err) < 0)
                return -1;
        return 0;
    }
    if (peso_mkdir_p(r->run_dir, err) < 0)
        return -1;
    int k;
    int64_t step;
    char newest[sizeof r->run_dir + 64];
    if (peso_ckpt_newest(r->run_dir, &k, &step, newest, sizeof newest, NULL, err) < 0)
        return -1;
    if (k >= (lo > 2 ? lo : 2) && !o->resume)
        return peso_errf(err, "%s already holds %s: pass --resume to continue the run, or remove it", r->run_dir,
                         newest);
    for (int t = lo > 2 ? lo : 2; t <= hi; t++) {
        char path[sizeof r->run_dir + 32];
        peso_train_stage_path(path, sizeof path, r->run_dir, t);
        if (o->resume && (t < k || (t == k && step < 0))) {
            if (t == k && c->eval.after_stage && evaluate_file(r, t, path, r->meth.run, r->meth.label, err) < 0)
                return -1;
            continue;
        }
        int rc = run_stage(r, t, o->resume && t == k && step >= 0 ? newest : NULL, err);
        if (rc)
            return rc;
        if (c->eval.after_stage && evaluate_file(r, t, path, r->meth.run, r->meth.label, err) < 0)
            return -1;
    }
    return 0;
}
