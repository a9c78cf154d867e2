#include "bt.h"

enum { N = 3, C = 8 };
static const float eps = 1e-5f;

struct ctx {
    peso_backend *be;
    float x[N * C], w[C], r[N * C], y[N * C];
    float *dx_, *dw_, *dy_, *drstd_;
};

static void forward(struct ctx *c)
{
    peso_err err = {{0}};
    bt_put(c->be, c->dx_, c->x, sizeof c->x);
    bt_put(c->be, c->dw_, c->w, sizeof c->w);
    cr_assert_eq(c->be->rmsnorm(c->be, c->dy_, c->drstd_, c->dx_, c->dw_, N, C, eps, &err), 0,
                 "%s", err.msg);
    bt_get(c->be, c->y, c->dy_, sizeof c->y);
}

static double loss(void *p)
{
    struct ctx *c = p;
    forward(c);
    return bt_dot(c->y, c->r, N * C);
}

static void setup(struct ctx *c, uint64_t seed)
{
    peso_rng r;
    peso_rng_seed(&r, seed, 0);
    for (int i = 0; i < N * C; i++) {
        c->x[i] = (float)(4 * peso_rng_uniform(&r) - 2);
        c->r[i] = (float)(2 * peso_rng_uniform(&r) - 1);
    }
    for (int j = 0; j < C; j++)
        c->w[j] = (float)(0.5 + peso_rng_uniform(&r));
    c->be = bt_backend();
    c->dx_ = bt_dev(c->be, NULL, sizeof c->x);
    c->dw_ = bt_dev(c->be, NULL, sizeof c->w);
    c->dy_ = bt_dev(c->be, NULL, sizeof c->y);
    c->drstd_ = bt_dev(c->be, NULL, N * 4);
}

static void teardown(struct ctx *c)
{
    c->be->free(c->be, c->dx_), c->be->free(c->be, c->dw_);
    c->be->free(c->be, c->dy_), c->be->free(c->be, c->drstd_);
    peso_backend_destroy(c->be);
}

Test(rmsnorm, forward_matches_double_reference)
{
    struct ctx c;
    setup(&c, 11);
    forward(&c);
    double want[N * C], want_rstd[N];
    for (int i = 0; i < N; i++) {
        double ss = 0;
        for (int j = 0; j < C; j++)
            ss += (double)c.x[i * C + j] * c.x[i * C + j];
        want_rstd[i] = 1.0 / sqrt(ss / C + eps);
        for (int j = 0; j < C; j++)
            want[i * C + j] = c.x[i * C + j] * want_rstd[i] * c.w[j];
    }
    bt_close(c.y, want, N * C, 1e-6, 1e-5, "y");
    float rstd[N];
    bt_get(c.be, rstd, c.drstd_, sizeof rstd);
    bt_close(rstd, want_rstd, N, 0, 1e-5, "rstd");
    teardown(&c);
}

Test(rmsnorm, hand_computed_row)
{
    /* x = [3, 4]: mean(x^2) = 12.5, eps 0 in the limit: y = x / sqrt(12.5) * w */
    peso_backend *be = bt_backend();
    float x[2] = {3, 4}, w[2] = {1, 2}, y[2];
    float *dx = bt_dev(be, x, 8), *dw = bt_dev(be, w, 8), *dy = bt_dev(be, NULL, 8);
    peso_err err = {{0}};
    cr_assert_eq(be->rmsnorm(be, dy, NULL, dx, dw, 1, 2, 1e-12f, &err), 0, "%s", err.msg);
    bt_get(be, y, dy, 8);
    double want[2] = {3 / sqrt(12.5), 8 / sqrt(12.5)};
    bt_close(y, want, 2, 0, 1e-6, "y");
    cr_assert_eq(be->rmsnorm(be, dy, NULL, dx, dw, 1, 2, 0.0f, &err), -1);
    cr_assert(strstr(err.msg, "eps"), "%s", err.msg);
    be->free(be, dx), be->free(be, dw), be->free(be, dy);
    peso_backend_destroy(be);
}

Test(rmsnorm, backward_matches_finite_differences)
{
    struct ctx c;
    setup(&c, 12);
    forward(&c);
    float gx[N * C], gw[C];
    for (int i = 0; i < N * C; i++)
        gx[i] = 0.5f;
    for (int j = 0; j < C; j++)
        gw[j] = 0.5f;
    float *dgx = bt_dev(c.be, gx, sizeof gx), *dgw = bt_dev(c.be, gw, sizeof gw);
    float *dr = bt_dev(c.be, c.r, sizeof c.r);
    peso_err err = {{0}};
    cr_assert_eq(c.be->rmsnorm_backward(c.be, dgx, dgw, dr, c.dx_, c.dw_, c.drstd_, N, C, &err),
                 0, "%s", err.msg);
    bt_get(c.be, gx, dgx, sizeof gx);
    bt_get(c.be, gw, dgw, sizeof gw);
    for (int i = 0; i < N * C; i++)
        gx[i] -= 0.5f;
    for (int j = 0; j < C; j++)
        gw[j] -= 0.5f;
    bt_fd(c.x, N * C, gx, loss, &c, 1e-2f, "dx");
    bt_fd(c.w, C, gw, loss, &c, 1e-2f, "dw");

    /* dw NULL (frozen weight) leaves dx the same */
    float gx2[N * C];
    c.be->zero(c.be, dgx, sizeof gx2, &err);
    forward(&c);
    cr_assert_eq(c.be->rmsnorm_backward(c.be, dgx, NULL, dr, c.dx_, c.dw_, c.drstd_, N, C, &err),
                 0, "%s", err.msg);
    bt_get(c.be, gx2, dgx, sizeof gx2);
    for (int i = 0; i < N * C; i++)
        cr_assert_float_eq(gx2[i], gx[i], 1e-6);
    c.be->free(c.be, dgx), c.be->free(c.be, dgw), c.be->free(c.be, dr);
    teardown(&c);
}
