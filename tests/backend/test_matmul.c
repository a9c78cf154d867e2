#include <omp.h>

#include "bt.h"

/* op(A)[i][l] and op(B)[l][j] read from the stored row-major matrices */
static double a_at(const float *a, int ta, int m, int k, int i, int l)
{
    return ta ? a[(size_t)l * m + i] : a[(size_t)i * k + l];
}

static double b_at(const float *b, int tb, int k, int n, int l, int j)
{
    return tb ? b[(size_t)j * k + l] : b[(size_t)l * n + j];
}

static double *naive_gemm(const peso_gemm *g, const float *a, const float *b, const float *c0)
{
    double *c = malloc((size_t)g->m * g->n * sizeof *c);
    for (int i = 0; i < g->m; i++)
        for (int j = 0; j < g->n; j++) {
            double s = 0.0;
            for (int l = 0; l < g->k; l++)
                s += a_at(a, g->trans_a, g->m, g->k, i, l) * b_at(b, g->trans_b, g->k, g->n, l, j);
            c[(size_t)i * g->n + j] = g->alpha * s + g->beta * c0[(size_t)i * g->n + j];
        }
    return c;
}

Test(matmul, every_transpose_with_alpha_and_beta)
{
    peso_backend *be = bt_backend();
    peso_rng r;
    peso_rng_seed(&r, 1, 0);
    int m = 5, n = 7, k = 3;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            float *a = bt_rand(&r, (size_t)m * k, -1, 1), *b = bt_rand(&r, (size_t)k * n, -1, 1);
            float *c = bt_rand(&r, (size_t)m * n, -1, 1);
            peso_gemm g = {.m = m, .n = n, .k = k, .trans_a = ta, .trans_b = tb, .alpha = 0.5f,
                           .beta = 1.0f, .b_dtype = PESO_F32, .batch = 1};
            double *want = naive_gemm(&g, a, b, c);
            float *da = bt_dev(be, a, (size_t)m * k * 4), *db = bt_dev(be, b, (size_t)k * n * 4);
            float *dc = bt_dev(be, c, (size_t)m * n * 4);
            peso_err err = {{0}};
            cr_assert_eq(be->matmul(be, &g, dc, da, db, &err), 0, "%s", err.msg);
            bt_get(be, c, dc, (size_t)m * n * 4);
            const char *what[2][2] = {{"NN", "NT"}, {"TN", "TT"}};
            bt_close(c, want, (size_t)m * n, 1e-6, 1e-5, what[ta][tb]);
            be->free(be, da);
            be->free(be, db);
            be->free(be, dc);
            free(a), free(b), free(c), free(want);
        }
    peso_backend_destroy(be);
}

/* alpha_dev: a device float multiplies alpha, in every product of a
 * batch and in the linear helpers (SD-LoRA's magnitudes scale this way). */
Test(matmul, device_scale_multiplies_alpha)
{
    peso_backend *be = bt_backend();
    peso_rng r;
    peso_rng_seed(&r, 3, 0);
    int m = 4, n = 6, k = 5, batch = 3;
    float *a = bt_rand(&r, (size_t)batch * m * k, -1, 1), *b = bt_rand(&r, (size_t)k * n, -1, 1);
    float *c = bt_rand(&r, (size_t)batch * m * n, -1, 1), s = -1.75f;
    float *da = bt_dev(be, a, (size_t)batch * m * k * 4), *db = bt_dev(be, b, (size_t)k * n * 4);
    float *dc = bt_dev(be, c, (size_t)batch * m * n * 4), *ds = bt_dev(be, &s, sizeof s);
    peso_gemm g = {.m = m, .n = n, .k = k, .alpha = 0.5f, .beta = 1.0f, .b_dtype = PESO_F32, .batch = batch,
                   .stride_a = (size_t)m * k, .stride_c = (size_t)m * n, .alpha_dev = ds};
    peso_err err = {{0}};
    cr_assert_eq(be->matmul(be, &g, dc, da, db, &err), 0, "%s", err.msg);
    float *got = malloc((size_t)batch * m * n * sizeof *got);
    bt_get(be, got, dc, (size_t)batch * m * n * 4);
    peso_gemm one = g;
    one.alpha = 0.5f * s;
    one.batch = 1;
    for (int i = 0; i < batch; i++) {
        double *want = naive_gemm(&one, a + (size_t)i * m * k, b, c + (size_t)i * m * n);
        bt_close(got + (size_t)i * m * n, want, (size_t)m * n, 1e-6, 1e-5, "alpha_dev");
        free(want);
    }
    /* the linear helpers: y = 0.5 s x W^T and dx += 0.5 s dy W */
    float y[4 * 6], dx[4 * 5] = {0};
    float *dy_ = bt_dev(be, NULL, sizeof y), *dx_ = bt_dev(be, dx, sizeof dx);
    float *w = bt_rand(&r, (size_t)n * k, -1, 1), *dw_ = bt_dev(be, w, (size_t)n * k * 4);
    cr_assert_eq(peso_linear_scaled(be, dy_, da, dw_, PESO_F32, m, n, k, 0.5f, ds, 0.0f, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_linear_backward_scaled(be, dx_, NULL, dy_, NULL, dw_, PESO_F32, m, n, k, 0.5f, ds, &err), 0,
                 "%s", err.msg);
    bt_get(be, y, dy_, sizeof y);
    bt_get(be, dx, dx_, sizeof dx);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double t = 0;
            for (int l = 0; l < k; l++)
                t += (double)a[i * k + l] * w[j * k + l];
            cr_assert(fabs(y[i * n + j] - 0.5 * s * t) < 1e-5, "y[%d][%d] %g, want %g", i, j, y[i * n + j],
                      0.5 * s * t);
        }
    for (int i = 0; i < m; i++)
        for (int l = 0; l < k; l++) {
            double t = 0;
            for (int j = 0; j < n; j++)
                t += (double)y[i * n + j] * w[j * k + l];
            cr_assert(fabs(dx[i * k + l] - 0.5 * s * t) < 1e-5, "dx[%d][%d] %g, want %g", i, l, dx[i * k + l],
                      0.5 * s * t);
        }
    be->free(be, da), be->free(be, db), be->free(be, dc), be->free(be, ds);
    be->free(be, dy_), be->free(be, dx_), be->free(be, dw_);
    free(a), free(b), free(c), free(got), free(w);
    peso_backend_destroy(be);
}

Test(matmul, beta_zero_ignores_old_output)
{
    peso_backend *be = bt_backend();
    float a[2 * 2] = {1, 2, 3, 4}, b[2 * 2] = {5, 6, 7, 8}, c[4];
    for (int i = 0; i < 4; i++)
        c[i] = NAN;
    float *da = bt_dev(be, a, sizeof a), *db = bt_dev(be, b, sizeof b);
    float *dc = bt_dev(be, c, sizeof c);
    peso_gemm g = {.m = 2, .n = 2, .k = 2, .alpha = 1.0f, .beta = 0.0f, .batch = 1};
    peso_err err = {{0}};
    cr_assert_eq(be->matmul(be, &g, dc, da, db, &err), 0, "%s", err.msg);
    bt_get(be, c, dc, sizeof c);
    /* [1 2; 3 4] [5 6; 7 8] = [19 22; 43 50] by hand */
    double want[4] = {19, 22, 43, 50};
    bt_close(c, want, 4, 0, 0, "C");
    be->free(be, da), be->free(be, db), be->free(be, dc);
    peso_backend_destroy(be);
}

Test(matmul, batched_with_shared_weight)
{
    peso_backend *be = bt_backend();
    peso_rng r;
    peso_rng_seed(&r, 2, 0);
    int m = 3, n = 4, k = 5, batch = 3;
    float *a = bt_rand(&r, (size_t)batch * m * k, -1, 1), *b = bt_rand(&r, (size_t)n * k, -1, 1);
    float *c = calloc((size_t)batch * m * n, sizeof *c);
    peso_gemm g = {.m = m, .n = n, .k = k, .trans_b = 1, .alpha = 1.0f, .beta = 0.0f,
                   .batch = batch, .stride_a = (size_t)m * k, .stride_b = 0,
                   .stride_c = (size_t)m * n};
    float *da = bt_dev(be, a, (size_t)batch * m * k * 4), *db = bt_dev(be, b, (size_t)n * k * 4);
    float *dc = bt_dev(be, NULL, (size_t)batch * m * n * 4);
    peso_err err = {{0}};
    cr_assert_eq(be->matmul(be, &g, dc, da, db, &err), 0, "%s", err.msg);
    bt_get(be, c, dc, (size_t)batch * m * n * 4);
    peso_gemm one = g;
    one.batch = 1;
    for (int i = 0; i < batch; i++) {
        double *want = naive_gemm(&one, a + (size_t)i * m * k, b, c + (size_t)i * m * n);
        bt_close(c + (size_t)i * m * n, want, (size_t)m * n, 1e-6, 1e-5, "batch item");
        free(want);
    }
    be->free(be, da), be->free(be, db), be->free(be, dc);
    free(a), free(b), free(c);
    peso_backend_destroy(be);
}

/* One product of every transpose in a batch (beta = 1) against the naive
 * reference. */
static void check_batch(peso_backend *be, peso_rng *r, int m, int n, int k, int batch)
{
    size_t na = (size_t)m * k, nb = (size_t)k * n, nc = (size_t)m * n;
    for (int t = 0; t < 4; t++) {
        float *a = bt_rand(r, batch * na, -1, 1), *b = bt_rand(r, batch * nb, -1, 1);
        float *c = bt_rand(r, batch * nc, -1, 1), *got = malloc(batch * nc * 4);
        peso_gemm g = {.m = m, .n = n, .k = k, .trans_a = t / 2, .trans_b = t % 2,
                       .alpha = 0.75f, .beta = 1.0f, .b_dtype = PESO_F32, .batch = batch,
                       .stride_a = na, .stride_b = nb, .stride_c = nc};
        float *da = bt_dev(be, a, batch * na * 4), *db = bt_dev(be, b, batch * nb * 4);
        float *dc = bt_dev(be, c, batch * nc * 4);
        peso_err err = {{0}};
        cr_assert_eq(be->matmul(be, &g, dc, da, db, &err), 0, "%s", err.msg);
        bt_get(be, got, dc, batch * nc * 4);
        peso_gemm one = g;
        one.batch = 1;
        for (int i = 0; i < batch; i++) {
            double *want = naive_gemm(&one, a + i * na, b + i * nb, c + i * nc);
            bt_close(got + i * nc, want, nc, 1e-5, 1e-5, "threaded product");
            free(want);
        }
        be->free(be, da), be->free(be, db), be->free(be, dc);
        free(a), free(b), free(c), free(got);
    }
}

/* Products big enough to be cut into slices for threads: the tall one is
 * cut by rows, the wide one by columns; alone and in a batch of two, on
 * 1, 2 and 3 threads (3 leaves a short last slice). */
Test(matmul, threaded_slices_match_naive)
{
    peso_backend *be = bt_backend();
    peso_rng r;
    peso_rng_seed(&r, 3, 0);
    for (int threads = 1; threads <= 3; threads++) {
        omp_set_num_threads(threads);
        for (int batch = 1; batch <= 2; batch++) {
            check_batch(be, &r, 301, 21, 64, batch);
            check_batch(be, &r, 19, 333, 64, batch);
        }
    }
    peso_backend_destroy(be);
}

Test(matmul, rejects_bad_arguments_and_unsupported_weight_dtype)
{
    peso_backend *be = bt_backend();
    float *d = bt_dev(be, NULL, 64 * 4);
    peso_err err = {{0}};
    peso_gemm g = {.m = 2, .n = 0, .k = 2, .alpha = 1.0f, .batch = 1};
    cr_assert_eq(be->matmul(be, &g, d, d, d, &err), -1);
    cr_assert(strstr(err.msg, "n=0"), "%s", err.msg);
    g.n = 2;
    g.batch = 2;
    g.stride_c = 1;
    cr_assert_eq(be->matmul(be, &g, d, d, d, &err), -1);
    cr_assert(strstr(err.msg, "stride_c"), "%s", err.msg);
    if (!peso_backend_supports(be, PESO_BF16)) {
        g.batch = 1;
        g.b_dtype = PESO_BF16;
        cr_assert_eq(be->matmul(be, &g, d, d, d, &err), -1);
        cr_assert(strstr(err.msg, "bf16") && strstr(err.msg, "f32"), "%s", err.msg);
    }
    be->free(be, d);
    peso_backend_destroy(be);
}

/* nn.Linear through peso_linear, and its backward against finite
 * differences of L = sum(y * r). */
struct lin {
    peso_backend *be;
    int m, n, k;
    float alpha;
    float *x, *w, *r, *y;
    float *dx_, *dw_, *dy_;
};

static double lin_loss(void *p)
{
    struct lin *c = p;
    peso_err err = {{0}};
    bt_put(c->be, c->dx_, c->x, (size_t)c->m * c->k * 4);
    bt_put(c->be, c->dw_, c->w, (size_t)c->n * c->k * 4);
    cr_assert_eq(peso_linear(c->be, c->dy_, c->dx_, c->dw_, PESO_F32, c->m, c->n, c->k, c->alpha,
                             0.0f, &err),
                 0, "%s", err.msg);
    bt_get(c->be, c->y, c->dy_, (size_t)c->m * c->n * 4);
    return bt_dot(c->y, c->r, (size_t)c->m * c->n);
}

Test(matmul, linear_forward_and_backward)
{
    peso_backend *be = bt_backend();
    peso_rng r;
    peso_rng_seed(&r, 3, 0);
    struct lin c = {.be = be, .m = 4, .n = 3, .k = 5, .alpha = 0.7f};
    size_t nx = (size_t)c.m * c.k, nw = (size_t)c.n * c.k, ny = (size_t)c.m * c.n;
    c.x = bt_rand(&r, nx, -1, 1);
    c.w = bt_rand(&r, nw, -1, 1);
    c.r = bt_rand(&r, ny, -1, 1);
    c.y = malloc(ny * 4);
    c.dx_ = bt_dev(be, NULL, nx * 4);
    c.dw_ = bt_dev(be, NULL, nw * 4);
    c.dy_ = bt_dev(be, NULL, ny * 4);
    lin_loss(&c);
    double *want = malloc(ny * sizeof *want);
    for (int i = 0; i < c.m; i++)
        for (int j = 0; j < c.n; j++) {
            double s = 0;
            for (int l = 0; l < c.k; l++)
                s += (double)c.x[i * c.k + l] * c.w[j * c.k + l];
            want[i * c.n + j] = c.alpha * s;
        }
    bt_close(c.y, want, ny, 1e-6, 1e-5, "y");

    /* gradients start at 1 to prove that the backward adds */
    float *gx = malloc(nx * 4), *gw = malloc(nw * 4);
    for (size_t i = 0; i < nx; i++)
        gx[i] = 1.0f;
    for (size_t i = 0; i < nw; i++)
        gw[i] = 1.0f;
    float *dgx = bt_dev(be, gx, nx * 4), *dgw = bt_dev(be, gw, nw * 4);
    float *dr = bt_dev(be, c.r, ny * 4);
    peso_err err = {{0}};
    cr_assert_eq(peso_linear_backward(be, dgx, dgw, dr, c.dx_, c.dw_, PESO_F32, c.m, c.n, c.k,
                                      c.alpha, &err),
                 0, "%s", err.msg);
    bt_get(be, gx, dgx, nx * 4);
    bt_get(be, gw, dgw, nw * 4);
    for (size_t i = 0; i < nx; i++)
        gx[i] -= 1.0f;
    for (size_t i = 0; i < nw; i++)
        gw[i] -= 1.0f;
    bt_fd(c.x, nx, gx, lin_loss, &c, 1e-2f, "dx");
    bt_fd(c.w, nw, gw, lin_loss, &c, 1e-2f, "dw");
    be->free(be, dgx), be->free(be, dgw), be->free(be, dr);
    be->free(be, c.dx_), be->free(be, c.dw_), be->free(be, c.dy_);
    free(c.x), free(c.w), free(c.r), free(c.y), free(want), free(gx), free(gw);
    peso_backend_destroy(be);
}
