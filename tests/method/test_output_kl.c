/* The output-KL regularizer against an independent host computation:
 * every module's input from the double-precision reference
 * (ref_inputs.h), z = scaling (x A^T) B^T and z_prev likewise in double,
 * the softmax-KL per real token written out here. The gradient is the
 * stop-gradient one: with grad_scale = 0 the model's gradient is the
 * term's alone, compared with central differences of the host term at
 * FIXED inputs (the inputs held at their values for the current
 * parameters, which is what stop-gradient means), for every LoRA view of
 * both layers; the new embedding rows, which only reach the term through
 * the inputs, get none. */
#include <criterion/criterion.h>

#include "../model/llama_setup.h"
#include "../model/ref_inputs.h"
#include "method/output_kl.h"

/* KL(softmax(z) || softmax(zp)) of one row of n, in double. */
static double row_kl(const double *z, const double *zp, int n)
{
    double mz = -INFINITY, mp = -INFINITY, sz = 0.0, sp = 0.0, kl = 0.0;
    for (int i = 0; i < n; i++) {
        mz = fmax(mz, z[i]);
        mp = fmax(mp, zp[i]);
    }
    for (int i = 0; i < n; i++) {
        sz += exp(z[i] - mz);
        sp += exp(zp[i] - mp);
    }
    for (int i = 0; i < n; i++) {
        double lp = z[i] - mz - log(sz), lq = zp[i] - mp - log(sp);
        kl += exp(lp) * (lp - lq);
    }
    return kl;
}

/* rows [T, out] = scaling (x A^T) B^T, x [T, in] */
static void lora_out(const double *x, const float *A, const float *B, int T, int in, int out, int r,
                     double sc, double *z)
{
    for (int t = 0; t < T; t++)
        for (int o = 0; o < out; o++) {
            double s = 0.0;
            for (int k = 0; k < r; k++) {
                double u = 0.0;
                for (int i = 0; i < in; i++)
                    u += x[t * in + i] * A[k * in + i];
                s += u * B[o * r + k];
            }
            z[t * out + o] = sc * s;
        }
}

typedef struct okl_ref {
    int B;
    ref_inputs in[4]; /* one per batch row */
} okl_ref;

static void okl_inputs(okl_ref *o, const setup *s, const tbatch *b)
{
    o->B = b->B;
    for (int r = 0; r < b->B; r++)
        ref_inputs_run(&s->ref, b->ids + r * b->T, b->lens[r], &o->in[r]);
}

static void okl_free(okl_ref *o)
{
    for (int r = 0; r < o->B; r++)
        ref_inputs_free(&o->in[r]);
}

/* scale * sum over modules and real tokens, at the inputs in o, current
 * A and B from s->params, previous ones from prev (same layout). */
static double okl_term(const okl_ref *o, const setup *s, const float *prev, double scale)
{
    const peso_llama_config *c = &s->t.cfg;
    double sum = 0.0;
    for (int r = 0; r < o->B; r++) {
        int T = o->in[r].T;
        for (int l = 0; l < c->num_hidden_layers; l++)
            for (int p = 0; p < TINY_NPROJ; p++) {
                const float *A = s->ref.A[l][p], *B = s->ref.B[l][p];
                if (!A || T == 0)
                    continue;
                int in, out;
                tiny_dims(c, p, &in, &out);
                const float *Ap = prev + (A - s->params), *Bp = prev + (B - s->params);
                double *z = malloc((size_t)T * out * sizeof *z), *zp = malloc((size_t)T * out * sizeof *zp);
                lora_out(o->in[r].x[l][p], A, B, T, in, out, s->ref.rank, s->ref.scaling, z);
                lora_out(o->in[r].x[l][p], Ap, Bp, T, in, out, s->ref.rank, s->ref.scaling, zp);
                for (int t = 0; t < T; t++)
                    sum += row_kl(z + t * out, zp + t * out, out);
                free(z);
                free(zp);
            }
    }
    return scale * sum;
}

/* A previous adapter near the current one: every entry moved by up to
 * 30%, so the KLs are neither 0 nor huge. */
static float *make_prev(const setup *s, uint64_t seed)
{
    peso_rng r;
    peso_rng_seed(&r, seed, 23);
    size_t n = s->m->flat.numel;
    float *prev = malloc(n * sizeof *prev);
    for (size_t i = 0; i < n; i++)
        prev[i] = s->params[i] * (float)(1.0 + 0.6 * (peso_rng_uniform(&r) - 0.5));
    return prev;
}

Test(output_kl, value_matches_host_computation)
{
    setup s;
    setup_open(&s, 0, 0, PESO_LORA_ALL, 201);
    setup_randomize_b(&s, 202);
    float *prev = make_prev(&s, 203);
    tbatch b;
    int lens[3] = {7, 3, 5};
    tbatch_make(&b, 3, 7, lens, s.m->cfg.vocab_size, 0, 204);
    peso_llama_batch v = tbatch_view(&b);
    peso_err err;
    peso_llama_loss plain, with, fb;
    peso_okl term;
    cr_assert_eq(peso_llama_forward(s.m, &v, &plain, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_okl_init(&term, s.m, prev, &err), 0, "%s", err.msg);
    term.scale = 0.25;
    cr_assert_eq(peso_llama_forward(s.m, &v, &with, &err), 0, "%s", err.msg);
    double value = peso_okl_take(&term);
    okl_ref o;
    okl_inputs(&o, &s, &b);
    double want = okl_term(&o, &s, prev, 0.25);
    cr_assert(want > 1e-3, "reference term %g is too small to test", want);
    cr_assert(fabs(value - want) <= 1e-5 * want, "term %.9g, host %.9g", value, want);
    cr_assert_eq(with.sum, plain.sum, "the term changed the cross-entropy");
    cr_assert_eq(peso_llama_forward_backward(s.m, &v, 1.0f, &fb, &err), 0, "%s", err.msg);
    double fbv = peso_okl_take(&term);
    cr_assert(fabs(fbv - value) <= 1e-12 * want, "forward_backward %.12g, forward %.12g", fbv, value);
    /* an observing pass (InfLoRA's statistics) leaves the term out */
    cr_assert_eq(peso_llama_observe(s.m, &v, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_okl_take(&term), 0.0);
    /* off again: the model is plain */
    peso_okl_free(&term);
    cr_assert_null(s.m->hook.forward);
    cr_assert_eq(peso_llama_forward(s.m, &v, &with, &err), 0, "%s", err.msg);
    cr_assert_eq(with.sum, plain.sum);
    okl_free(&o);
    free(prev);
    setup_close(&s);
}

Test(output_kl, same_adapter_gives_zero)
{
    setup s;
    setup_open(&s, 1, 0, PESO_LORA_ALL, 211);
    setup_randomize_b(&s, 212);
    tbatch b;
    int lens[2] = {6, 4};
    tbatch_make(&b, 2, 6, lens, s.m->cfg.vocab_size, 0, 213);
    peso_llama_batch v = tbatch_view(&b);
    peso_err err;
    peso_llama_loss loss;
    peso_okl term;
    cr_assert_eq(peso_okl_init(&term, s.m, s.params, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_zero_grads(s.m, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_forward_backward(s.m, &v, 0.0f, &loss, &err), 0, "%s", err.msg);
    double value = peso_okl_take(&term);
    cr_assert(fabs(value) < 1e-12, "term %g with prev = current", value);
    float *g = malloc(s.m->flat.numel * sizeof *g);
    cr_assert_eq(peso_llama_get_grads(s.m, g, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < s.m->flat.numel; i++)
        cr_assert_eq(g[i], 0.0f, "gradient %g at %zu with prev = current", (double)g[i], i);
    free(g);
    peso_okl_free(&term);
    setup_close(&s);
}

static void expect_close(double got, double fd, const char *what, size_t i)
{
    cr_assert(fabs(fd - got) <= 1e-3 * fabs(fd) + 1e-7, "%s[%zu]: analytic %.9g, finite difference %.9g",
              what, i, got, fd);
}

Test(output_kl, stop_gradient_matches_finite_differences)
{
    setup s;
    setup_open(&s, 0, 2, PESO_LORA_ALL, 221);
    setup_randomize_b(&s, 222);
    float *prev = make_prev(&s, 223);
    tbatch b;
    int lens[2] = {7, 5};
    tbatch_make(&b, 2, 7, lens, s.m->cfg.vocab_size, 2, 224);
    peso_llama_batch v = tbatch_view(&b);
    peso_err err;
    peso_llama_loss loss;
    const double scale = 0.5;
    peso_okl term;
    cr_assert_eq(peso_okl_init(&term, s.m, prev, &err), 0, "%s", err.msg);
    term.scale = scale;
    size_t numel = s.m->flat.numel;
    float *g = malloc(numel * sizeof *g);
    cr_assert_eq(peso_llama_zero_grads(s.m, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_forward_backward(s.m, &v, 0.0f, &loss, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_get_grads(s.m, g, &err), 0, "%s", err.msg);
    okl_ref o;
    okl_inputs(&o, &s, &b);
    peso_rng r;
    peso_rng_seed(&r, 225, 1);
    int checked = 0;
    for (size_t vi = 0; vi < s.m->flat.n_views; vi++) {
        const peso_view *view = &s.m->flat.views[vi];
        if (!strstr(view->name, "lora_")) {
            for (size_t i = 0; i < view->numel; i++)
                cr_assert_eq(g[view->offset + i], 0.0f, "%s[%zu]: gradient through the inputs", view->name,
                             i);
            continue;
        }
        double ss = 0.0;
        for (size_t j = 0; j < view->numel; j++)
            ss += (double)s.params[view->offset + j] * s.params[view->offset + j];
        float h = (float)(1e-3 * sqrt(ss / view->numel));
        for (int k = 0; k < 2; k++) {
            size_t i = view->offset + peso_rng_below(&r, view->numel);
            float x0 = s.params[i], xp = x0 + h, xm = x0 - h;
            s.params[i] = xp;
            double tp = okl_term(&o, &s, prev, scale);
            s.params[i] = xm;
            double tm = okl_term(&o, &s, prev, scale);
            s.params[i] = x0;
            expect_close(g[i], (tp - tm) / ((double)xp - (double)xm), view->name, i - view->offset);
            checked++;
        }
    }
    cr_assert_eq(checked, 2 * 2 * 7 * 2);
    okl_free(&o);
    peso_okl_free(&term);
    free(g);
    free(prev);
    setup_close(&s);
}

/* With both terms: grads = grad_scale * d(CE)/dv (the term off) + the
 * term's gradient (grad_scale 0), and the term's gradient is not scaled
 * by grad_scale. */
Test(output_kl, adds_to_the_cross_entropy_gradient)
{
    setup s;
    setup_open(&s, 1, 0, PESO_LORA_ALL, 231);
    setup_randomize_b(&s, 232);
    float *prev = make_prev(&s, 233);
    tbatch b;
    int lens[2] = {6, 6};
    tbatch_make(&b, 2, 6, lens, s.m->cfg.vocab_size, 0, 234);
    peso_llama_batch v = tbatch_view(&b);
    peso_err err;
    peso_llama_loss loss;
    size_t n = s.m->flat.numel;
    float *ce = malloc(n * sizeof *ce), *term = malloc(n * sizeof *term), *both = malloc(n * sizeof *both);
    float *bufs[3] = {ce, term, both};
    const float gs[3] = {0.125f, 0.0f, 0.125f};
    peso_okl okl = {0};
    for (int k = 0; k < 3; k++) {
        if (k == 1)
            cr_assert_eq(peso_okl_init(&okl, s.m, prev, &err), 0, "%s", err.msg);
        cr_assert_eq(peso_llama_zero_grads(s.m, &err), 0, "%s", err.msg);
        cr_assert_eq(peso_llama_forward_backward(s.m, &v, gs[k], &loss, &err), 0, "%s", err.msg);
        cr_assert_eq(peso_llama_get_grads(s.m, bufs[k], &err), 0, "%s", err.msg);
    }
    peso_okl_free(&okl);
    double mx = 0.0, mt = 0.0;
    for (size_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs(both[i]));
        mt = fmax(mt, fabs(term[i]));
    }
    cr_assert(mt > 1e-3 * mx, "the term's gradient (%g) is too small to see next to %g", mt, mx);
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs(both[i] - (ce[i] + term[i])) <= 1e-6 * mx, "[%zu]: both %.9g, ce + term %.9g", i,
                  (double)both[i], (double)(ce[i] + term[i]));
    free(ce);
    free(term);
    free(both);
    free(prev);
    setup_close(&s);
}

Test(output_kl, needs_lora_modules)
{
    setup s;
    setup_open(&s, 1, 0, 0, 241);
    peso_err err;
    peso_okl term;
    cr_assert_eq(peso_okl_init(&term, s.m, s.params, &err), -1);
    cr_assert(strstr(err.msg, "no LoRA modules"), "%s", err.msg);
    setup_close(&s);
}
