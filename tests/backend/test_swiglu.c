#include "bt.h"

enum { N = 40 };

struct ctx {
    peso_backend *be;
    float g[N], u[N], r[N], h[N];
    float *dg_, *du_, *dh_;
};

static double loss(void *p)
{
    struct ctx *c = p;
    peso_err err = {{0}};
    bt_put(c->be, c->dg_, c->g, sizeof c->g);
    bt_put(c->be, c->du_, c->u, sizeof c->u);
    cr_assert_eq(c->be->swiglu(c->be, c->dh_, c->dg_, c->du_, N, &err), 0, "%s", err.msg);
    bt_get(c->be, c->h, c->dh_, sizeof c->h);
    return bt_dot(c->h, c->r, N);
}

Test(swiglu, forward_and_backward)
{
    struct ctx c;
    peso_rng r;
    peso_rng_seed(&r, 21, 0);
    for (int i = 0; i < N; i++) {
        c.g[i] = (float)(12 * peso_rng_uniform(&r) - 6);
        c.u[i] = (float)(4 * peso_rng_uniform(&r) - 2);
        c.r[i] = (float)(2 * peso_rng_uniform(&r) - 1);
    }
    c.g[0] = 0.0f; /* silu(0) = 0, silu'(0) = 1/2 */
    c.be = bt_backend();
    c.dg_ = bt_dev(c.be, NULL, sizeof c.g);
    c.du_ = bt_dev(c.be, NULL, sizeof c.u);
    c.dh_ = bt_dev(c.be, NULL, sizeof c.h);
    loss(&c);
    double want[N];
    for (int i = 0; i < N; i++)
        want[i] = (double)c.g[i] / (1.0 + exp(-(double)c.g[i])) * c.u[i];
    bt_close(c.h, want, N, 1e-6, 1e-5, "h");

    float *dgg = bt_dev(c.be, NULL, N * 4), *dgu = bt_dev(c.be, NULL, N * 4);
    float *dr = bt_dev(c.be, c.r, N * 4);
    peso_err err = {{0}};
    cr_assert_eq(c.be->swiglu_backward(c.be, dgg, dgu, dr, c.dg_, c.du_, N, &err), 0, "%s",
                 err.msg);
    float gg[N], gu[N];
    bt_get(c.be, gg, dgg, sizeof gg);
    bt_get(c.be, gu, dgu, sizeof gu);
    cr_assert_float_eq(gg[0], 0.5f * c.u[0] * c.r[0], 1e-6, "silu'(0) = 1/2");
    bt_fd(c.g, N, gg, loss, &c, 1e-2f, "dg");
    bt_fd(c.u, N, gu, loss, &c, 1e-2f, "du");
    /* a second backward adds the same again (loss() restores the inputs) */
    loss(&c);
    cr_assert_eq(c.be->swiglu_backward(c.be, dgg, NULL, dr, c.dg_, c.du_, N, &err), 0);
    float gg2[N], gu2[N];
    bt_get(c.be, gg2, dgg, sizeof gg2);
    bt_get(c.be, gu2, dgu, sizeof gu2);
    for (int i = 0; i < N; i++) {
        cr_assert_float_eq(gg2[i], 2 * gg[i], 1e-6, "%d: %g vs %g", i, gg2[i], gg[i]);
        cr_assert_eq(gu2[i], gu[i], "du NULL: du untouched");
    }
    c.be->free(c.be, dgg), c.be->free(c.be, dgu), c.be->free(c.be, dr);
    c.be->free(c.be, c.dg_), c.be->free(c.be, c.du_), c.be->free(c.be, c.dh_);
    peso_backend_destroy(c.be);
}
