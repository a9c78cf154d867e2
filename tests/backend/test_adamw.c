#include <omp.h>

#include "bt.h"

/* Two AdamW steps by hand, lr 0.1, betas (0.9, 0.999), eps 1e-8, weight
 * decay 0.01 (p <- p (1 - lr wd) - lr mhat / (sqrt(vhat) + eps)):
 * element 0: p = 1, g = 0.5 then -0.25
 *   step 1: m = 0.05, v = 0.00025, mhat = 0.5, vhat = 0.25,
 *           p = 0.999 - 0.1 * 0.5 / 0.50000001 = 0.899000002
 *   step 2: m = 0.02, v = 0.00031225, mhat = 0.02 / 0.19 = 0.1052632,
 *           vhat = 0.00031225 / 0.001999 = 0.1562031,
 *           p = 0.899000002 * 0.999 - 0.1 * 0.1052632 / 0.3952253 = 0.8714673
 * element 1: p = -0.5, g = 0 then 0.1
 *   step 1: m = v = 0: only the decay, p = -0.4995
 *   step 2: m = 0.01, v = 1e-5, mhat = 0.0526316, vhat = 0.0050025,
 *           p = -0.4995 * 0.999 - 0.1 * 0.0526316 / 0.0707284 = -0.5734142 */
Test(adamw, two_steps_by_hand)
{
    peso_backend *be = bt_backend();
    float p[2] = {1.0f, -0.5f}, g1[2] = {0.5f, 0.0f}, g2[2] = {-0.25f, 0.1f}, m[2], v[2];
    float *dp = bt_dev(be, p, 8), *dg = bt_dev(be, g1, 8);
    float *dm = bt_dev(be, NULL, 8), *dv = bt_dev(be, NULL, 8);
    peso_adamw hp = {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                     .weight_decay = 0.01, .grad_scale = 1.0, .step = 1};
    peso_err err = {{0}};
    cr_assert_eq(be->adamw(be, dp, dg, dm, dv, 2, &hp, &err), 0, "%s", err.msg);
    bt_get(be, p, dp, 8), bt_get(be, m, dm, 8), bt_get(be, v, dv, 8);
    double p1[2] = {0.899000002, -0.4995}, m1[2] = {0.05, 0}, v1[2] = {0.00025, 0};
    bt_close(p, p1, 2, 0, 1e-6, "p after step 1");
    bt_close(m, m1, 2, 0, 1e-6, "m after step 1");
    bt_close(v, v1, 2, 0, 1e-6, "v after step 1");
    bt_put(be, dg, g2, 8);
    hp.step = 2;
    cr_assert_eq(be->adamw(be, dp, dg, dm, dv, 2, &hp, &err), 0, "%s", err.msg);
    bt_get(be, p, dp, 8), bt_get(be, m, dm, 8), bt_get(be, v, dv, 8);
    double p2[2] = {0.8714672987, -0.5734141718}, m2[2] = {0.02, 0.01}, v2[2] = {0.00031225, 1e-5};
    bt_close(p, p2, 2, 0, 1e-6, "p after step 2");
    bt_close(m, m2, 2, 0, 1e-6, "m after step 2");
    bt_close(v, v2, 2, 0, 1e-6, "v after step 2");
    hp.step = 0;
    cr_assert_eq(be->adamw(be, dp, dg, dm, dv, 2, &hp, &err), -1);
    cr_assert(strstr(err.msg, "step=0"), "%s", err.msg);
    be->free(be, dp), be->free(be, dg), be->free(be, dm), be->free(be, dv);
    peso_backend_destroy(be);
}

Test(adamw, grad_scale_scales_the_gradient)
{
    /* step 1 without decay: p -= lr * g / (|g| + eps) = lr * sign(g) for any
     * scale, but m and v see the scaled gradient: g = 4 * 0.5 = 2 gives
     * m = 0.2, v = 0.004 */
    peso_backend *be = bt_backend();
    float p = 1.0f, g = 4.0f, m, v;
    float *dp = bt_dev(be, &p, 4), *dg = bt_dev(be, &g, 4);
    float *dm = bt_dev(be, NULL, 4), *dv = bt_dev(be, NULL, 4);
    peso_adamw hp = {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                     .weight_decay = 0.0, .grad_scale = 0.5, .step = 1};
    peso_err err = {{0}};
    cr_assert_eq(be->adamw(be, dp, dg, dm, dv, 1, &hp, &err), 0, "%s", err.msg);
    bt_get(be, &p, dp, 4), bt_get(be, &m, dm, 4), bt_get(be, &v, dv, 4);
    cr_assert_float_eq(p, 0.9f, 1e-6);
    cr_assert_float_eq(m, 0.2f, 1e-7);
    cr_assert_float_eq(v, 0.004f, 1e-9);
    be->free(be, dp), be->free(be, dg), be->free(be, dm), be->free(be, dv);
    peso_backend_destroy(be);
}

Test(adamw, sumsq_and_scale)
{
    peso_backend *be = bt_backend();
    /* three chunks and a remainder: 3 * 2^14 + 5 elements, x[i] = (i % 7) - 3 */
    size_t n = 3 * (1u << 14) + 5;
    float *x = malloc(n * 4);
    double want = 0;
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)((int)(i % 7) - 3);
        want += (double)x[i] * x[i];
    }
    float *dx = bt_dev(be, x, n * 4);
    peso_err err = {{0}};
    double got[2];
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        cr_assert_eq(be->sumsq(be, dx, n, &got[t], &err), 0, "%s", err.msg);
    }
    cr_assert_eq(got[0], want, "sum of squares of small integers is exact");
    cr_assert(memcmp(&got[0], &got[1], sizeof got[0]) == 0, "thread count changed the bits");
    cr_assert_eq(be->scale(be, dx, n, -0.5f, &err), 0);
    bt_get(be, x, dx, n * 4);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(x[i], -0.5f * (float)((int)(i % 7) - 3));
    cr_assert_eq(be->sumsq(be, dx, 0, &got[0], &err), 0);
    cr_assert_eq(got[0], 0.0);
    be->free(be, dx);
    free(x);
    peso_backend_destroy(be);
}
