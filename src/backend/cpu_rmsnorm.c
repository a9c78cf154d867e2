/* RMSNorm as LlamaRMSNorm in float32: y = x * rstd * w with
 * rstd = 1 / sqrt(mean(x^2) + eps), and its backward. */
#include <math.h>

#include "backend/cpu.h"

static int shape_check(const char *op, int n, int c, peso_err *err)
{
    if (n < 1 || c < 1)
        return peso_errf(err, "%s: shape [%d, %d], expected both >= 1", op, n, c);
    return 0;
}

int peso_cpu_rmsnorm(peso_backend *be, float *y, float *rstd, const float *x, const float *w,
                     int n, int c, float eps, peso_err *err)
{
    (void)be;
    if (shape_check("rmsnorm", n, c, err) < 0)
        return -1;
    if (!(eps > 0.0f))
        return peso_errf(err, "rmsnorm: eps=%g, expected > 0", (double)eps);
#pragma omp parallel for schedule(static) if ((size_t)n * c >= PESO_CPU_PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * c;
        float *yi = y + (size_t)i * c;
        float ss = 0.0f;
        for (int j = 0; j < c; j++)
            ss += xi[j] * xi[j];
        float r = 1.0f / sqrtf(ss / (float)c + eps);
        for (int j = 0; j < c; j++)
            yi[j] = xi[j] * r * w[j];
        if (rstd)
            rstd[i] = r;
    }
    return 0;
}

/* dx_j = r w_j dy_j - r^3 / c * x_j * sum_k w_k dy_k x_k */
static void rows_dx(float *dx, const float *dy, const float *x, const float *w, const float *rstd,
                    int n, int c)
{
#pragma omp parallel for schedule(static) if ((size_t)n * c >= PESO_CPU_PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * c, *dyi = dy + (size_t)i * c;
        float *dxi = dx + (size_t)i * c;
        float r = rstd[i];
        float dot = 0.0f;
        for (int j = 0; j < c; j++)
            dot += w[j] * dyi[j] * xi[j];
        float coef = r * r * r * dot / (float)c;
        for (int j = 0; j < c; j++)
            dxi[j] += r * w[j] * dyi[j] - coef * xi[j];
    }
}

/* dw_j = sum_i dy_ij x_ij r_i. Threads own column blocks and sum rows in
 * order, so the result does not depend on the thread count. */
static void cols_dw(float *dw, const float *dy, const float *x, const float *rstd, int n, int c)
{
    enum { BLOCK = 64 };
    int nb = (c + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)n * c >= PESO_CPU_PAR_MIN)
    for (int b = 0; b < nb; b++) {
        int j0 = b * BLOCK, j1 = j0 + BLOCK < c ? j0 + BLOCK : c;
        float acc[BLOCK] = {0};
        for (int i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * c, *dyi = dy + (size_t)i * c;
            for (int j = j0; j < j1; j++)
                acc[j - j0] += dyi[j] * xi[j] * rstd[i];
        }
        for (int j = j0; j < j1; j++)
            dw[j] += acc[j - j0];
    }
}

int peso_cpu_rmsnorm_backward(peso_backend *be, float *dx, float *dw, const float *dy,
                              const float *x, const float *w, const float *rstd, int n, int c,
                              peso_err *err)
{
    (void)be;
    if (shape_check("rmsnorm_backward", n, c, err) < 0)
        return -1;
    if (!rstd)
        return peso_errf(err, "rmsnorm_backward: rstd is NULL, expected the forward's rstd");
    if (dx)
        rows_dx(dx, dy, x, w, rstd, n, c);
    if (dw)
        cols_dw(dw, dy, x, rstd, n, c);
    return 0;
}
