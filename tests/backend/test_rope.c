#include "backend/rope_freq.h"
#include "bt.h"

Test(rope_freq, default_is_theta_to_the_minus_2i_over_d)
{
    peso_rope_conf rc = {.type = PESO_ROPE_DEFAULT, .theta = 10000.0, .head_dim = 8};
    float inv[4];
    peso_err err = {{0}};
    cr_assert_eq(peso_rope_inv_freq(&rc, inv, &err), 0, "%s", err.msg);
    double want[4] = {1.0, 0.1, 0.01, 0.001}; /* 10000^(-i/4) */
    bt_close(inv, want, 4, 0, 1e-6, "inv_freq");
}

/* Llama-3.2-1B: theta 500000, head_dim 64, factor 32, low 1, high 4,
 * original 8192. Wavelength 2 pi / f against 8192/4 = 2048 and 8192/1. */
Test(rope_freq, llama3_bands_by_hand)
{
    peso_rope_conf rc = {.type = PESO_ROPE_LLAMA3, .theta = 500000.0, .head_dim = 64,
                         .factor = 32.0, .low_freq_factor = 1.0, .high_freq_factor = 4.0,
                         .original_max_pos = 8192};
    float inv[32];
    peso_err err = {{0}};
    cr_assert_eq(peso_rope_inv_freq(&rc, inv, &err), 0, "%s", err.msg);
    /* i = 0: f = 1, wavelength 2 pi < 2048: unchanged */
    cr_assert_float_eq(inv[0], 1.0f, 1e-7);
    /* i = 14: f = 500000^(-28/64) = 0.0032114460, wavelength 1956.5 < 2048 */
    cr_assert_float_eq(inv[14], 0.0032114460f, 0.0032114460 * 1e-6);
    /* i = 18: f = 500000^(-36/64) = 6.2277242e-4, wavelength 10089 > 8192:
     * divided by 32 */
    cr_assert_float_eq(inv[18], 6.2277242e-4f / 32, 6.2277242e-4 / 32 * 1e-6);
    /* i = 16: f = 1/sqrt(500000) = 0.0014142136, wavelength 4442.883,
     * smooth s = (8192/4442.883 - 1) / 3 = 0.2812826,
     * (1 - s) f / 32 + s f = 4.2955680e-4 */
    cr_assert_float_eq(inv[16], 4.2955680e-4f, 4.2955680e-4 * 1e-6);
    /* every entry by the closed formula in double */
    for (int i = 0; i < 32; i++) {
        double f = pow(500000.0, -2.0 * i / 64), wl = 2 * 3.14159265358979323846 / f, want = f;
        if (wl > 8192)
            want = f / 32;
        else if (wl >= 2048) {
            double s = (8192 / wl - 1) / 3;
            want = (1 - s) * f / 32 + s * f;
        }
        cr_assert(fabs(inv[i] - want) <= 2e-6 * want, "inv_freq[%d] = %.9g, expected %.9g", i,
                  (double)inv[i], want);
    }
}

Test(rope_freq, rejects_bad_configs)
{
    float inv[4];
    peso_err err = {{0}};
    peso_rope_conf rc = {.type = PESO_ROPE_DEFAULT, .theta = 10000.0, .head_dim = 7};
    cr_assert_eq(peso_rope_inv_freq(&rc, inv, &err), -1);
    cr_assert(strstr(err.msg, "head_dim=7"), "%s", err.msg);
    rc = (peso_rope_conf){.type = PESO_ROPE_LLAMA3, .theta = 500000.0, .head_dim = 8,
                          .factor = 8, .low_freq_factor = 4, .high_freq_factor = 1,
                          .original_max_pos = 8192};
    cr_assert_eq(peso_rope_inv_freq(&rc, inv, &err), -1);
    cr_assert(strstr(err.msg, "high_freq_factor"), "%s", err.msg);
}

enum { T = 3, H = 2, D = 8 };
static const int32_t positions[T] = {0, 5, 1000};

struct ctx {
    peso_backend *be;
    float x[T * H * D], r[T * H * D], y[T * H * D], inv[D / 2];
    float *dx_, *dinv_;
    int32_t *dpos_;
};

static void forward(struct ctx *c)
{
    peso_err err = {{0}};
    bt_put(c->be, c->dx_, c->x, sizeof c->x);
    cr_assert_eq(c->be->rope(c->be, c->dx_, c->dpos_, c->dinv_, T, H, D, &err), 0, "%s", err.msg);
    bt_get(c->be, c->y, c->dx_, sizeof c->y);
}

static double loss(void *p)
{
    struct ctx *c = p;
    forward(c);
    return bt_dot(c->y, c->r, T * H * D);
}

static void setup(struct ctx *c)
{
    peso_rng r;
    peso_rng_seed(&r, 31, 0);
    for (int i = 0; i < T * H * D; i++) {
        c->x[i] = (float)(2 * peso_rng_uniform(&r) - 1);
        c->r[i] = (float)(2 * peso_rng_uniform(&r) - 1);
    }
    peso_rope_conf rc = {.type = PESO_ROPE_DEFAULT, .theta = 10000.0, .head_dim = D};
    peso_err err = {{0}};
    cr_assert_eq(peso_rope_inv_freq(&rc, c->inv, &err), 0);
    c->be = bt_backend();
    c->dx_ = bt_dev(c->be, NULL, sizeof c->x);
    c->dinv_ = bt_dev(c->be, c->inv, sizeof c->inv);
    c->dpos_ = bt_dev(c->be, positions, sizeof positions);
}

static void teardown(struct ctx *c)
{
    c->be->free(c->be, c->dx_), c->be->free(c->be, c->dinv_), c->be->free(c->be, c->dpos_);
    peso_backend_destroy(c->be);
}

Test(rope, quarter_turn_by_hand)
{
    /* head_dim 2, inv_freq 1, position 1: x = [1, 0] turns by 1 radian */
    peso_backend *be = bt_backend();
    float x[2] = {1, 0}, inv[1] = {1};
    int32_t pos[1] = {1};
    float *dx = bt_dev(be, x, 8), *di = bt_dev(be, inv, 4);
    int32_t *dp = bt_dev(be, pos, 4);
    peso_err err = {{0}};
    cr_assert_eq(be->rope(be, dx, dp, di, 1, 1, 2, &err), 0, "%s", err.msg);
    bt_get(be, x, dx, 8);
    double want[2] = {cos(1.0), sin(1.0)};
    bt_close(x, want, 2, 1e-7, 0, "x");
    be->free(be, dx), be->free(be, di), be->free(be, dp);
    peso_backend_destroy(be);
}

Test(rope, forward_matches_rotate_half_reference)
{
    struct ctx c;
    setup(&c);
    forward(&c);
    double want[T * H * D];
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < D / 2; i++) {
                /* HF forms the angle as a float32 product */
                double ang = (double)((float)positions[t] * c.inv[i]);
                const float *x = c.x + (t * H + h) * D;
                double *w = want + (t * H + h) * D;
                w[i] = x[i] * cos(ang) - x[i + D / 2] * sin(ang);
                w[i + D / 2] = x[i + D / 2] * cos(ang) + x[i] * sin(ang);
            }
    bt_close(c.y, want, T * H * D, 1e-5, 1e-5, "rope(x)");
    teardown(&c);
}

Test(rope, backward_matches_finite_differences_and_inverts)
{
    struct ctx c;
    setup(&c);
    float g[T * H * D];
    float *dg = bt_dev(c.be, c.r, sizeof c.r);
    peso_err err = {{0}};
    cr_assert_eq(c.be->rope_backward(c.be, dg, c.dpos_, c.dinv_, T, H, D, &err), 0, "%s",
                 err.msg);
    bt_get(c.be, g, dg, sizeof g);
    bt_fd(c.x, T * H * D, g, loss, &c, 1e-2f, "dx");
    /* rotating back recovers the input */
    forward(&c);
    bt_put(c.be, dg, c.y, sizeof c.y);
    cr_assert_eq(c.be->rope_backward(c.be, dg, c.dpos_, c.dinv_, T, H, D, &err), 0);
    bt_get(c.be, g, dg, sizeof g);
    for (int i = 0; i < T * H * D; i++)
        cr_assert_float_eq(g[i], c.x[i], 1e-6);
    int32_t bad[T] = {0, -1, 2};
    bt_put(c.be, c.dpos_, bad, sizeof bad);
    cr_assert_eq(c.be->rope(c.be, dg, c.dpos_, c.dinv_, T, H, D, &err), -1);
    cr_assert(strstr(err.msg, "position -1 of token 1"), "%s", err.msg);
    c.be->free(c.be, dg);
    teardown(&c);
}
