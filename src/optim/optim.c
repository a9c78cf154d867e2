#include "optim/optim.h"

#include <math.h>
#include <string.h>

void peso_optim_defaults(peso_optim_hparams *hp)
{
    hp->beta1 = 0.9;
    hp->beta2 = 0.999;
    hp->eps = 1e-8;
    hp->weight_decay = 0.01;
}

static int check_hparams(const peso_optim_hparams *hp, peso_err *err)
{
    if (!(hp->beta1 >= 0 && hp->beta1 < 1) || !(hp->beta2 >= 0 && hp->beta2 < 1))
        return peso_errf(err, "optim: betas (%g, %g), expected both in [0, 1)", hp->beta1, hp->beta2);
    if (!(hp->eps > 0))
        return peso_errf(err, "optim: eps=%g, expected > 0", hp->eps);
    if (!(hp->weight_decay >= 0))
        return peso_errf(err, "optim: weight_decay=%g, expected >= 0", hp->weight_decay);
    return 0;
}

int peso_optim_init(peso_optim *o, peso_backend *be, size_t n, const peso_optim_hparams *hp, peso_err *err)
{
    memset(o, 0, sizeof *o);
    if (check_hparams(hp, err) != 0)
        return -1;
    if (n == 0)
        return peso_errf(err, "optim: no parameters to optimize");
    size_t bytes = n * sizeof(float);
    if (be->alloc(be, (void **)&o->m, bytes, err) != 0)
        return peso_err_prefix(err, "optim: first moment of %zu floats", n);
    if (be->alloc(be, (void **)&o->v, bytes, err) != 0) {
        be->free(be, o->m);
        o->m = NULL;
        return peso_err_prefix(err, "optim: second moment of %zu floats", n);
    }
    o->be = be;
    o->hp = *hp;
    o->n = n;
    return 0;
}

void peso_optim_free(peso_optim *o)
{
    if (o->be) {
        o->be->free(o->be, o->m);
        o->be->free(o->be, o->v);
    }
    memset(o, 0, sizeof *o);
}

int peso_optim_step(peso_optim *o, float *param, const float *grad, double lr, double grad_scale,
                    peso_err *err)
{
    if (!(lr >= 0) || !isfinite(lr))
        return peso_errf(err, "optim: lr=%g at step %lld, expected a finite rate >= 0", lr,
                         (long long)o->step + 1);
    peso_adamw a = {
        .lr = lr,
        .beta1 = o->hp.beta1,
        .beta2 = o->hp.beta2,
        .eps = o->hp.eps,
        .weight_decay = o->hp.weight_decay,
        .grad_scale = grad_scale,
        .step = (long)(o->step + 1),
    };
    if (o->be->adamw(o->be, param, grad, o->m, o->v, o->n, &a, err) != 0)
        return peso_err_prefix(err, "optim: step %lld", (long long)a.step);
    o->step++;
    return 0;
}

int peso_grad_norm(peso_backend *be, const float *grad, size_t n, double *norm, peso_err *err)
{
    double ss = 0.0;
    if (be->sumsq(be, grad, n, &ss, err) != 0)
        return peso_err_prefix(err, "gradient norm");
    *norm = sqrt(ss);
    return 0;
}

double peso_clip_coef(double norm, double max_norm)
{
    if (max_norm <= 0)
        return 1.0;
    double c = max_norm / (norm + 1e-6);
    return c < 1.0 ? c : 1.0;
}

int peso_optim_clip_step(peso_optim *o, float *param, const float *grad, double lr, double max_norm,
                         double *norm, peso_err *err)
{
    double g = 0.0;
    if (peso_grad_norm(o->be, grad, o->n, &g, err) != 0)
        return -1;
    if (norm)
        *norm = g;
    if (!isfinite(g))
        return peso_errf(err, "optim: gradient norm is %g at step %lld: the loss diverged", g,
                         (long long)o->step + 1);
    return peso_optim_step(o, param, grad, lr, peso_clip_coef(g, max_norm), err);
}

int peso_optim_export(const peso_optim *o, float *m, float *v, int64_t *step, peso_err *err)
{
    size_t bytes = o->n * sizeof(float);
    if (o->be->download(o->be, m, o->m, bytes, err) != 0 || o->be->download(o->be, v, o->v, bytes, err) != 0)
        return peso_err_prefix(err, "optim: exporting the moments");
    *step = o->step;
    return 0;
}

int peso_optim_import(peso_optim *o, const float *m, const float *v, size_t n, int64_t step, peso_err *err)
{
    if (n != o->n)
        return peso_errf(err, "optim: imported moments have %zu floats, the optimizer has %zu", n, o->n);
    if (step < 0)
        return peso_errf(err, "optim: imported step %lld, expected >= 0", (long long)step);
    size_t bytes = o->n * sizeof(float);
    if (o->be->upload(o->be, o->m, m, bytes, err) != 0 || o->be->upload(o->be, o->v, v, bytes, err) != 0)
        return peso_err_prefix(err, "optim: importing the moments");
    o->step = step;
    return 0;
}
