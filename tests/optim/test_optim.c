/* AdamW and gradient clipping against numbers worked out by hand from
 * torch.optim.AdamW's update (decay, lerp m, v, then
 * p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)) and from
 * torch.nn.utils.clip_grad_norm_. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"

static peso_backend *cpu(void)
{
    peso_err err;
    peso_backend *be = peso_backend_create("cpu", &err);
    cr_assert(be, "%s", err.msg);
    return be;
}

static float *dev(peso_backend *be, const float *host, size_t n)
{
    peso_err err;
    void *p;
    cr_assert_eq(be->alloc(be, &p, n * sizeof(float), &err), 0, "%s", err.msg);
    if (host)
        cr_assert_eq(be->upload(be, p, host, n * sizeof(float), &err), 0, "%s", err.msg);
    return p;
}

static void get(peso_backend *be, float *host, const float *d, size_t n)
{
    peso_err err;
    cr_assert_eq(be->download(be, host, d, n * sizeof(float), &err), 0, "%s", err.msg);
}

static void expect_near(const float *got, const double *want, size_t n, double tol, const char *what)
{
    for (size_t i = 0; i < n; i++)
        cr_expect(fabs(got[i] - want[i]) <= tol, "%s[%zu] = %.9g, expected %.9g", what, i, got[i], want[i]);
}

/* lr 0.01, betas (0.9, 0.99), eps 1e-8, weight decay 0.1 (decay factor
 * 1 - lr wd = 0.999):
 * element 0: p = 2, g = 1 then 3
 *   step 1: p = 1.998; m = 0.1, v = 0.01; mhat = 0.1 / 0.1 = 1,
 *           vhat = 0.01 / 0.01 = 1; p = 1.998 - 0.01 = 1.988
 *   step 2: p = 1.988 * 0.999 = 1.986012; m = 0.09 + 0.3 = 0.39,
 *           v = 0.0099 + 0.09 = 0.0999; bc1 = 0.19, bc2 = 0.0199;
 *           mhat = 2.0526316, sqrt(vhat) = sqrt(5.0201005) = 2.2405581;
 *           p = 1.986012 - 0.01 * 2.0526316 / 2.2405581 = 1.9768507
 * element 1: p = -1, g = -0.5 then 0
 *   step 1: p = -0.999 + 0.01 = -0.989; m = -0.05, v = 0.0025
 *   step 2: p = -0.988011; m = -0.045, v = 0.002475;
 *           mhat = -0.2368421, sqrt(vhat) = sqrt(0.1243719) = 0.3526640;
 *           p = -0.988011 + 0.01 * 0.2368421 / 0.3526640 = -0.9812952 */
Test(optim, adamw_two_steps_by_hand)
{
    peso_backend *be = cpu();
    float p0[2] = {2.0f, -1.0f}, g1[2] = {1.0f, -0.5f}, g2[2] = {3.0f, 0.0f}, p[2], m[2], v[2];
    float *dp = dev(be, p0, 2), *dg = dev(be, g1, 2);
    peso_optim_hparams hp = {.beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1};
    peso_optim o;
    peso_err err;
    int64_t step;
    cr_assert_eq(peso_optim_init(&o, be, 2, &hp, &err), 0, "%s", err.msg);
    cr_expect_eq(o.step, 0);
    cr_assert_eq(peso_optim_step(&o, dp, dg, 0.01, 1.0, &err), 0, "%s", err.msg);
    get(be, p, dp, 2);
    cr_assert_eq(peso_optim_export(&o, m, v, &step, &err), 0, "%s", err.msg);
    expect_near(p, (double[]){1.988, -0.989}, 2, 1e-6, "p1");
    expect_near(m, (double[]){0.1, -0.05}, 2, 1e-7, "m1");
    expect_near(v, (double[]){0.01, 0.0025}, 2, 1e-8, "v1");
    cr_expect_eq(step, 1);
    cr_assert_eq(be->upload(be, dg, g2, sizeof g2, &err), 0);
    cr_assert_eq(peso_optim_step(&o, dp, dg, 0.01, 1.0, &err), 0, "%s", err.msg);
    get(be, p, dp, 2);
    cr_assert_eq(peso_optim_export(&o, m, v, &step, &err), 0, "%s", err.msg);
    expect_near(p, (double[]){1.9768507488, -0.9812951989}, 2, 1e-6, "p2");
    expect_near(m, (double[]){0.39, -0.045}, 2, 1e-7, "m2");
    expect_near(v, (double[]){0.0999, 0.002475}, 2, 1e-8, "v2");
    cr_expect_eq(step, 2);
    peso_optim_free(&o);
    be->free(be, dp), be->free(be, dg);
    peso_backend_destroy(be);
}

/* Where torch's AdamW differs from other Adam variants:
 * - eps is added after dividing sqrt(v) by sqrt(bc2): with p = 0, g = 1,
 *   lr 1, eps 0.1, step 1: mhat = vhat = 1, p = -1 / (1 + 0.1) =
 *   -0.9090909 (eps inside the correction would give -0.2402531);
 * - the decay is decoupled: a zero gradient on fresh moments changes p by
 *   the decay alone, p (1 - lr wd) = 4 (1 - 1 * 0.25) = 3 (L2 in the
 *   gradient would move it by a full Adam step instead). */
Test(optim, adamw_is_torch_adamw)
{
    peso_backend *be = cpu();
    float p0[2] = {0.0f, 4.0f}, g[2] = {1.0f, 0.0f}, p[2];
    float *dp = dev(be, p0, 2), *dg = dev(be, g, 2);
    peso_optim_hparams hp = {.beta1 = 0.9, .beta2 = 0.999, .eps = 0.1, .weight_decay = 0.25};
    peso_optim o;
    peso_err err;
    cr_assert_eq(peso_optim_init(&o, be, 2, &hp, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_optim_step(&o, dp, dg, 1.0, 1.0, &err), 0, "%s", err.msg);
    get(be, p, dp, 2);
    expect_near(p, (double[]){-0.9090909091, 3.0}, 2, 1e-6, "p");
    peso_optim_free(&o);
    be->free(be, dp), be->free(be, dg);
    peso_backend_destroy(be);
}

Test(optim, defaults_are_torch_defaults)
{
    peso_optim_hparams hp;
    peso_optim_defaults(&hp);
    cr_expect(hp.beta1 == 0.9 && hp.beta2 == 0.999 && hp.eps == 1e-8 && hp.weight_decay == 0.01);
}

/* ||[1, 2, 2]|| = 3; ||[3, 4]|| = 5; 40000 x 0.5 (several sumsq chunks):
 * 0.5 * sqrt(40000) = 100. */
Test(optim, grad_norm_by_hand)
{
    peso_backend *be = cpu();
    peso_err err;
    double norm;
    float a[3] = {1.0f, -2.0f, 2.0f};
    float *da = dev(be, a, 3);
    cr_assert_eq(peso_grad_norm(be, da, 3, &norm, &err), 0, "%s", err.msg);
    cr_expect_float_eq(norm, 3.0, 1e-12);
    size_t n = 40000;
    float *h = malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = 0.5f;
    float *dh = dev(be, h, n);
    cr_assert_eq(peso_grad_norm(be, dh, n, &norm, &err), 0, "%s", err.msg);
    cr_expect_float_eq(norm, 100.0, 1e-9);
    free(h);
    be->free(be, da), be->free(be, dh);
    peso_backend_destroy(be);
}

Test(optim, clip_coef_as_clip_grad_norm)
{
    cr_expect_float_eq(peso_clip_coef(5.0, 1.0), 1.0 / (5.0 + 1e-6), 1e-15);
    cr_expect_float_eq(peso_clip_coef(100.0, 2.5), 2.5 / (100.0 + 1e-6), 1e-15);
    /* below the threshold the factor is clamped to 1 */
    cr_expect_eq(peso_clip_coef(0.5, 1.0), 1.0);
    cr_expect_eq(peso_clip_coef(0.999998, 1.0), 1.0);
    /* at the threshold the 1e-6 still scales a little, as in torch */
    cr_expect_float_eq(peso_clip_coef(1.0, 1.0), 1.0 / 1.000001, 1e-15);
    /* clipping off */
    cr_expect_eq(peso_clip_coef(1e9, 0.0), 1.0);
}

/* g = [3, 4], ||g|| = 5, max_norm 1: c = 1 / 5.000001; step 1 with betas
 * (0.9, 0.999): m = 0.1 c g = [0.06, 0.08] / 1.0000002, v = 0.001 c^2
 * g^2 = [3.6e-4, 6.4e-4] / 1.0000004, and p = p0 - lr * sign(g) (mhat /
 * sqrt(vhat) = 1 for one step, eps 1e-8 aside). The gradient buffer
 * itself is left as it was. */
Test(optim, clip_step_scales_the_gradient_not_the_buffer)
{
    peso_backend *be = cpu();
    float p0[2] = {1.0f, 1.0f}, g[2] = {3.0f, 4.0f}, p[2], m[2], v[2], gg[2];
    float *dp = dev(be, p0, 2), *dg = dev(be, g, 2);
    peso_optim_hparams hp = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0};
    peso_optim o;
    peso_err err;
    double norm;
    int64_t step;
    cr_assert_eq(peso_optim_init(&o, be, 2, &hp, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_optim_clip_step(&o, dp, dg, 0.1, 1.0, &norm, &err), 0, "%s", err.msg);
    cr_expect_float_eq(norm, 5.0, 1e-12);
    get(be, p, dp, 2);
    get(be, gg, dg, 2);
    cr_assert_eq(peso_optim_export(&o, m, v, &step, &err), 0, "%s", err.msg);
    double c = 1.0 / 5.000001;
    expect_near(m, (double[]){0.3 * c, 0.4 * c}, 2, 1e-8, "m");
    expect_near(v, (double[]){9e-3 * c * c, 16e-3 * c * c}, 2, 1e-10, "v");
    expect_near(p, (double[]){0.9, 0.9}, 2, 1e-6, "p");
    expect_near(gg, (double[]){3.0, 4.0}, 2, 0.0, "grad");
    /* max_norm 10 > 5: no clipping, m = 0.9 m + 0.1 g */
    cr_assert_eq(peso_optim_clip_step(&o, dp, dg, 0.1, 10.0, &norm, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_optim_export(&o, m, v, &step, &err), 0, "%s", err.msg);
    expect_near(m, (double[]){0.27 * c + 0.3, 0.36 * c + 0.4}, 2, 1e-7, "m after unclipped step");
    cr_expect_eq(step, 2);
    peso_optim_free(&o);
    be->free(be, dp), be->free(be, dg);
    peso_backend_destroy(be);
}

Test(optim, non_finite_gradient_norm_is_an_error_and_changes_nothing)
{
    peso_backend *be = cpu();
    float p0[2] = {1.0f, 2.0f}, g[2] = {INFINITY, 1.0f}, p[2];
    float *dp = dev(be, p0, 2), *dg = dev(be, g, 2);
    peso_optim_hparams hp;
    peso_optim_defaults(&hp);
    peso_optim o;
    peso_err err;
    double norm;
    cr_assert_eq(peso_optim_init(&o, be, 2, &hp, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_optim_clip_step(&o, dp, dg, 1e-3, 1.0, &norm, &err), -1);
    cr_expect(strstr(err.msg, "gradient norm is inf") && strstr(err.msg, "step 1"), "%s", err.msg);
    cr_expect(isinf(norm));
    get(be, p, dp, 2);
    cr_expect(p[0] == 1.0f && p[1] == 2.0f);
    cr_expect_eq(o.step, 0);
    peso_optim_free(&o);
    be->free(be, dp), be->free(be, dg);
    peso_backend_destroy(be);
}

/* Resuming from an exported state gives the same parameters, bit for bit,
 * as never stopping. */
Test(optim, export_import_resumes_exactly)
{
    peso_backend *be = cpu();
    enum { N = 37 };
    float p0[N], g[3][N], a[N], b[N], m[N], v[N];
    for (int i = 0; i < N; i++) {
        p0[i] = 0.1f * (float)(i - 18);
        for (int s = 0; s < 3; s++)
            g[s][i] = (float)sin(0.7 * i + s) * (float)(s + 1);
    }
    peso_optim_hparams hp;
    peso_optim_defaults(&hp);
    peso_optim oa, ob;
    peso_err err;
    int64_t step;
    float *pa = dev(be, p0, N), *pb = dev(be, p0, N), *dg = dev(be, NULL, N);
    cr_assert_eq(peso_optim_init(&oa, be, N, &hp, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_optim_init(&ob, be, N, &hp, &err), 0, "%s", err.msg);
    for (int s = 0; s < 3; s++) {
        cr_assert_eq(be->upload(be, dg, g[s], sizeof g[s], &err), 0);
        cr_assert_eq(peso_optim_clip_step(&oa, pa, dg, 1e-2, 1.0, NULL, &err), 0, "%s", err.msg);
        if (s == 2) {
            /* stop b after two steps and resume it in a fresh optimizer */
            cr_assert_eq(peso_optim_export(&ob, m, v, &step, &err), 0, "%s", err.msg);
            peso_optim_free(&ob);
            cr_assert_eq(peso_optim_init(&ob, be, N, &hp, &err), 0, "%s", err.msg);
            cr_assert_eq(peso_optim_import(&ob, m, v, N, step, &err), 0, "%s", err.msg);
            cr_expect_eq(ob.step, 2);
        }
        cr_assert_eq(peso_optim_clip_step(&ob, pb, dg, 1e-2, 1.0, NULL, &err), 0, "%s", err.msg);
    }
    get(be, a, pa, N);
    get(be, b, pb, N);
    cr_expect(memcmp(a, b, sizeof a) == 0, "resumed parameters differ");
    cr_expect(memcmp(a, p0, sizeof a) != 0, "the parameters moved");
    cr_assert_eq(peso_optim_import(&ob, m, v, N - 1, step, &err), -1);
    cr_expect(strstr(err.msg, "36 floats") && strstr(err.msg, "37"), "%s", err.msg);
    cr_assert_eq(peso_optim_import(&ob, m, v, N, -1, &err), -1);
    peso_optim_free(&oa);
    peso_optim_free(&ob);
    be->free(be, pa), be->free(be, pb), be->free(be, dg);
    peso_backend_destroy(be);
}

Test(optim, bad_hyperparameters_are_named)
{
    peso_backend *be = cpu();
    peso_optim o;
    peso_err err;
    peso_optim_hparams hp = {.beta1 = 1.0, .beta2 = 0.999, .eps = 1e-8};
    cr_assert_eq(peso_optim_init(&o, be, 4, &hp, &err), -1);
    cr_expect(strstr(err.msg, "betas (1, 0.999)"), "%s", err.msg);
    hp.beta1 = 0.9;
    hp.eps = 0;
    cr_assert_eq(peso_optim_init(&o, be, 4, &hp, &err), -1);
    cr_expect(strstr(err.msg, "eps=0"), "%s", err.msg);
    hp.eps = 1e-8;
    hp.weight_decay = -0.1;
    cr_assert_eq(peso_optim_init(&o, be, 4, &hp, &err), -1);
    cr_expect(strstr(err.msg, "weight_decay=-0.1"), "%s", err.msg);
    hp.weight_decay = 0;
    cr_assert_eq(peso_optim_init(&o, be, 0, &hp, &err), -1);
    cr_assert_eq(peso_optim_init(&o, be, 4, &hp, &err), 0, "%s", err.msg);
    float *d = dev(be, NULL, 4);
    cr_assert_eq(peso_optim_step(&o, d, d, NAN, 1.0, &err), -1);
    cr_expect(strstr(err.msg, "lr=nan") && strstr(err.msg, "step 1"), "%s", err.msg);
    cr_expect_eq(o.step, 0);
    peso_optim_free(&o);
    be->free(be, d);
    peso_backend_destroy(be);
}
