/* One optimizer step on a train rank: its share of the step's windows
 * through forward and backward, the method's proximal term on its share
 * of the groups, the one all-reduce of the gradients (with the step's
 * statistics riding after them), the update; and the progress line. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
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

int peso_train_stop_signal(void)
{
    return (int)stop_signal;
}

/* Window j of the step goes to train rank j mod N: the global step, and so
 * the result, does not depend on N. */
size_t peso_step_mine(const peso_steps *st, size_t i, int rank, int size, int32_t *out)
{
    size_t lo = st->start[i], n = st->start[i + 1] - lo, k = 0;
    for (size_t j = (size_t)rank; j < n; j += (size_t)size)
        out[k++] = st->win[lo + j];
    return k;
}

static int prox_term(peso_trainer *tr, double *value, peso_err *err)
{
    *value = 0;
    const peso_method *meth = tr->r->meth;
    return tr->s.t >= 2 && meth->prox ? meth->prox(&tr->s.ms, value, err) : 0;
}

enum { TAIL_DATA, TAIL_PROX, TAIL_TOKENS, TAIL_BAD, TAIL_STOP };

void peso_step_tail_pack(const peso_step_tail *t, float out[PESO_STEP_TAIL_N])
{
    out[TAIL_DATA] = (float)t->data;
    out[TAIL_PROX] = (float)t->prox;
    out[TAIL_TOKENS] = (float)t->tokens;
    out[TAIL_BAD] = (float)t->bad;
    out[TAIL_STOP] = (float)t->stop;
}

void peso_step_tail_unpack(const float in[PESO_STEP_TAIL_N], peso_step_tail *t)
{
    t->data = in[TAIL_DATA];
    t->prox = in[TAIL_PROX];
    t->tokens = (long)in[TAIL_TOKENS];
    t->bad = (int)in[TAIL_BAD];
    t->stop = in[TAIL_STOP] > 0;
}

int peso_train_step(peso_trainer *tr, const peso_steps *st, size_t i, int64_t stage_step, peso_step_out *o,
                    peso_err *err)
{
    peso_run *r = tr->r;
    peso_llama *m = r->m;
    const peso_conf *c = r->c;
    const peso_par *par = r->par;
    size_t n = st->start[i + 1] - st->start[i];
    long labels = st->labels[i];
    memset(o, 0, sizeof *o);
    peso_grow((void **)&tr->mine, &tr->cap_mine, n ? n : 1, sizeof *tr->mine);
    size_t k = peso_step_mine(st, i, par->grank, par->gsize, tr->mine);
    if (peso_llama_zero_grads(m, err) < 0)
        return -1;
    if (tr->s.t >= 2 && r->meth->step)
        r->meth->step(&tr->s.ms, st->tokens[i]);
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
        fprintf(stderr,
                "peso-train: rank %d: non-finite loss at stage %d step %lld (data sum %g, proximal %g)\n",
                par->rank, tr->s.t, (long long)stage_step + 1, sum, psum);
    peso_step_tail mine = {sum, psum, tokens, bad, stop_signal != 0}, all;
    float tail[PESO_STEP_TAIL_N];
    peso_step_tail_pack(&mine, tail);
    float *h = tr->host_grads;
    memcpy(h + m->flat.numel, tail, sizeof tail);
    if (peso_par_allreduce_grads(par, m->be, m->grads, m->flat.numel, h, PESO_STEP_TAIL_N, err) < 0)
        return -1;
    memcpy(tail, h + m->flat.numel, sizeof tail);
    peso_step_tail_unpack(tail, &all);
    o->data = all.data / (double)labels;
    o->prox = all.prox;
    o->tokens = all.tokens;
    o->stop = all.stop;
    if (all.bad > 0)
        return peso_errf(err, "stage %d step %lld: non-finite loss on %d train rank(s) (named above)",
                         tr->s.t, (long long)stage_step + 1, all.bad);
    o->lr = peso_schedule_lr(&tr->sched, stage_step);
    if (peso_trainer_zero_frozen(tr, err) < 0 ||
        peso_optim_clip_step(&tr->opt, m->params, m->grads, o->lr, c->train.max_grad_norm, &o->gnorm, err) <
            0)
        return peso_err_prefix(err, "stage %d step %lld", tr->s.t, (long long)stage_step + 1);
    return peso_trainer_unfreeze(tr, err);
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

void peso_train_progress(peso_trainer *tr, int epoch, int64_t step, int64_t first, const peso_step_out *o)
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
