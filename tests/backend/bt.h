/* Helpers shared by the backend tests. Every test reaches the backend only
 * through the table (alloc, upload, download, ops), so the same tests run
 * against any implementation: PESO_TEST_BACKEND=<name> picks it (default
 * cpu). References are computed independently in double with naive loops;
 * backward passes are checked against central finite differences of the
 * float32 forward on a loss L = sum(out * r) with fixed random r. */
#ifndef PESO_TESTS_BACKEND_BT_H
#define PESO_TESTS_BACKEND_BT_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "common/rng.h"

static inline peso_backend *bt_backend(void)
{
    const char *name = getenv("PESO_TEST_BACKEND");
    peso_err err = {{0}};
    peso_backend *be = peso_backend_create(name && name[0] ? name : "cpu", &err);
    cr_assert(be, "backend: %s", err.msg);
    return be;
}

/* Device copy of host data (host NULL: zeroed). */
static inline void *bt_dev(peso_backend *be, const void *host, size_t bytes)
{
    peso_err err = {{0}};
    void *p = NULL;
    cr_assert_eq(be->alloc(be, &p, bytes, &err), 0, "alloc: %s", err.msg);
    if (host)
        cr_assert_eq(be->upload(be, p, host, bytes, &err), 0, "upload: %s", err.msg);
    return p;
}

static inline void bt_put(peso_backend *be, void *dev, const void *host, size_t bytes)
{
    peso_err err = {{0}};
    cr_assert_eq(be->upload(be, dev, host, bytes, &err), 0, "upload: %s", err.msg);
}

static inline void bt_get(peso_backend *be, void *host, const void *dev, size_t bytes)
{
    peso_err err = {{0}};
    cr_assert_eq(be->download(be, host, dev, bytes, &err), 0, "download: %s", err.msg);
}

static inline float *bt_rand(peso_rng *r, size_t n, double lo, double hi)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(lo + (hi - lo) * peso_rng_uniform(r));
    return x;
}

static inline double bt_dot(const float *a, const float *r, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * r[i];
    return s;
}

/* |got - want| <= atol + rtol * |want| element by element. */
static inline void bt_close(const float *got, const double *want, size_t n, double atol,
                            double rtol, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        cr_assert(isfinite(got[i]) && d <= atol + rtol * fabs(want[i]),
                  "%s[%zu]: got %.9g, expected %.9g (diff %.3g)", what, i, (double)got[i],
                  want[i], d);
    }
}

typedef double (*bt_loss_fn)(void *ctx);

/* Central differences of loss() in every element of x (a host array the
 * loss reads), compared with the analytic gradient g. */
static inline void bt_fd(float *x, size_t n, const float *g, bt_loss_fn loss, void *ctx, float h,
                         const char *what)
{
    for (size_t i = 0; i < n; i++) {
        float x0 = x[i];
        float xp = x0 + h, xm = x0 - h;
        x[i] = xp;
        double lp = loss(ctx);
        x[i] = xm;
        double lm = loss(ctx);
        x[i] = x0;
        double fd = (lp - lm) / ((double)xp - (double)xm);
        double d = fabs(fd - g[i]);
        cr_assert(d <= 1e-3 + 5e-3 * fabs(fd), "%s[%zu]: analytic %.7g, finite difference %.7g",
                  what, i, (double)g[i], fd);
    }
}

/* KL(softmax(x) || softmax(y)) as written on paper, the references of
 * the softmax-KL entries: no max subtraction (inputs are small),
 * sum p_i log(p_i / q_i). */
static inline double bt_naive_kl(const double *x, const double *y, size_t n)
{
    double zx = 0, zy = 0, kl = 0;
    for (size_t i = 0; i < n; i++) {
        zx += exp(x[i]);
        zy += exp(y[i]);
    }
    for (size_t i = 0; i < n; i++) {
        double p = exp(x[i]) / zx, q = exp(y[i]) / zy;
        kl += p * log(p / q);
    }
    return kl;
}

#endif
