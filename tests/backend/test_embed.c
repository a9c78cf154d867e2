#include "bt.h"

/* vocabulary 10, rows [7, 10) trainable (new tokens at the end), so the
 * frozen base holds only 7 rows; dim 70 spans two column blocks */
enum { V = 10, LO = 7, C = 70, N = 7 };
static const int32_t ids[N] = {1, 8, 8, 3, 9, 7, 0};

struct ctx {
    peso_backend *be;
    float base[LO * C], train[(V - LO) * C], r[N * C], out[N * C];
    float *base_, *train_, *out_;
    int32_t *ids_;
    peso_table t;
};

static void setup(struct ctx *c)
{
    peso_rng r;
    peso_rng_seed(&r, 51, 0);
    for (int i = 0; i < LO * C; i++)
        c->base[i] = (float)(2 * peso_rng_uniform(&r) - 1);
    for (int i = 0; i < (V - LO) * C; i++)
        c->train[i] = (float)(2 * peso_rng_uniform(&r) - 1);
    for (int i = 0; i < N * C; i++)
        c->r[i] = (float)(2 * peso_rng_uniform(&r) - 1);
    c->be = bt_backend();
    c->base_ = bt_dev(c->be, c->base, sizeof c->base);
    c->train_ = bt_dev(c->be, c->train, sizeof c->train);
    c->out_ = bt_dev(c->be, NULL, sizeof c->out);
    c->ids_ = bt_dev(c->be, ids, sizeof ids);
    c->t = (peso_table){.base = c->base_, .base_dtype = PESO_F32, .train = c->train_,
                        .train_lo = LO, .train_hi = V, .n_rows = V, .dim = C};
}

static void teardown(struct ctx *c)
{
    c->be->free(c->be, c->base_), c->be->free(c->be, c->train_);
    c->be->free(c->be, c->out_), c->be->free(c->be, c->ids_);
    peso_backend_destroy(c->be);
}

static double loss(void *p)
{
    struct ctx *c = p;
    peso_err err = {{0}};
    bt_put(c->be, c->train_, c->train, sizeof c->train);
    cr_assert_eq(c->be->embed(c->be, &c->t, c->out_, c->ids_, N, &err), 0, "%s", err.msg);
    bt_get(c->be, c->out, c->out_, sizeof c->out);
    return bt_dot(c->out, c->r, N * C);
}

Test(embed, gathers_frozen_and_trainable_rows)
{
    struct ctx c;
    setup(&c);
    loss(&c);
    for (int i = 0; i < N; i++) {
        const float *want = ids[i] < LO ? c.base + ids[i] * C : c.train + (ids[i] - LO) * C;
        cr_assert(memcmp(c.out + i * C, want, C * 4) == 0, "row %d (id %d)", i, ids[i]);
    }
    teardown(&c);
}

Test(embed, backward_adds_into_trainable_rows_only)
{
    struct ctx c;
    setup(&c);
    float g[(V - LO) * C];
    for (int i = 0; i < (V - LO) * C; i++)
        g[i] = 1.0f;
    float *dg = bt_dev(c.be, g, sizeof g), *dr = bt_dev(c.be, c.r, sizeof c.r);
    peso_err err = {{0}};
    cr_assert_eq(c.be->embed_backward(c.be, &c.t, dg, dr, c.ids_, N, &err), 0, "%s", err.msg);
    bt_get(c.be, g, dg, sizeof g);
    /* by hand: id 7 <- token 5; id 8 <- tokens 1 and 2; id 9 <- token 4 */
    double want[(V - LO) * C];
    for (int j = 0; j < C; j++) {
        want[0 * C + j] = 1.0 + c.r[5 * C + j];
        want[1 * C + j] = 1.0 + (double)c.r[1 * C + j] + c.r[2 * C + j];
        want[2 * C + j] = 1.0 + c.r[4 * C + j];
    }
    bt_close(g, want, (V - LO) * C, 1e-6, 0, "dtrain");
    for (int i = 0; i < (V - LO) * C; i++)
        g[i] -= 1.0f;
    bt_fd(c.train, (V - LO) * C, g, loss, &c, 1e-2f, "dtrain");
    c.be->free(c.be, dg), c.be->free(c.be, dr);
    teardown(&c);
}

Test(embed, rejects_bad_ids_and_tables)
{
    struct ctx c;
    setup(&c);
    peso_err err = {{0}};
    int32_t bad[2] = {3, 10};
    bt_put(c.be, c.ids_, bad, sizeof bad);
    cr_assert_eq(c.be->embed(c.be, &c.t, c.out_, c.ids_, 2, &err), -1);
    cr_assert(strstr(err.msg, "token id 10 at position 1"), "%s", err.msg);
    peso_table t = c.t;
    t.train = NULL;
    cr_assert_eq(c.be->embed(c.be, &t, c.out_, c.ids_, 1, &err), -1);
    cr_assert(strstr(err.msg, "no trainable table"), "%s", err.msg);
    t = c.t;
    t.train_hi = 11;
    cr_assert_eq(c.be->embed(c.be, &t, c.out_, c.ids_, 1, &err), -1);
    cr_assert(strstr(err.msg, "[7, 11)"), "%s", err.msg);
    if (!peso_backend_supports(c.be, PESO_BF16)) {
        t = c.t;
        t.base_dtype = PESO_BF16;
        cr_assert_eq(c.be->embed(c.be, &t, c.out_, c.ids_, 1, &err), -1);
        cr_assert(strstr(err.msg, "bf16"), "%s", err.msg);
    }
    teardown(&c);
}
