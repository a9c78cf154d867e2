/* Row softmax-KL over a right-padded batch (the output-KL regularizer's
 * math): per real position, KL(softmax(z) || softmax(z_prev)) in double,
 * and its gradient. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu.h"

/* x <- log softmax(x) over n >= 1 entries, max-subtracted so that no
 * exp overflows. */
static void log_softmax(double *x, size_t n)
{
    double mx = -INFINITY;
    for (size_t i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    double z = exp(x[0] - mx);
    for (size_t i = 1; i < n; i++)
        z += exp(x[i] - mx);
    double c = mx + log(z);
    for (size_t i = 0; i < n; i++)
        x[i] -= c;
}

double peso_cpu_softmax_kl(double *x, double *y, size_t n, int grad)
{
    log_softmax(x, n);
    log_softmax(y, n);
    double kl = 0.0;
    for (size_t i = 0; i < n; i++)
        kl += exp(x[i]) * (x[i] - y[i]);
    if (grad)
        for (size_t i = 0; i < n; i++)
            x[i] = exp(x[i]) * (x[i] - y[i] - kl);
    return kl;
}

static int row_kl_check(const int32_t *lens, int B, int T, int d, double scale, size_t *work, peso_err *err)
{
    if (B < 0 || T < 0)
        return peso_errf(err, "row_kl: B=%d T=%d, expected both >= 0", B, T);
    if (d < 1)
        return peso_errf(err, "row_kl: d=%d, expected >= 1", d);
    if (!isfinite(scale))
        return peso_errf(err, "row_kl: scale=%g, expected a finite number", scale);
    *work = 0;
    for (int b = 0; b < B; b++) {
        if (lens[b] < 0 || lens[b] > T)
            return peso_errf(err, "row_kl: lens[%d]=%d outside [0, %d]", b, lens[b], T);
        *work += (size_t)lens[b] * (size_t)d;
    }
    return 0;
}

int peso_cpu_row_kl(peso_backend *be, const float *z, const float *z_prev, const int32_t *lens, int B, int T,
                    int d, double scale, float *dz, double *value, peso_err *err)
{
    (void)be;
    size_t work = 0, n = (size_t)B * (size_t)T, nd = (size_t)d;
    if (row_kl_check(lens, B, T, d, scale, &work, err) < 0)
        return -1;
    /* per-position values, summed after the loop in a fixed order */
    double *kl = peso_malloc((n ? n : 1) * sizeof *kl);
#pragma omp parallel if (work >= PESO_CPU_PAR_MIN)
    {
        double *x = peso_malloc(nd * sizeof *x), *y = peso_malloc(nd * sizeof *y);
#pragma omp for schedule(static)
        for (size_t p = 0; p < n; p++) {
            const float *zr = z + p * nd, *yr = z_prev + p * nd;
            float *g = dz ? dz + p * nd : NULL;
            if ((int)(p % (size_t)T) >= lens[p / (size_t)T]) {
                kl[p] = 0.0;
                if (g)
                    memset(g, 0, nd * sizeof *g);
                continue;
            }
            for (size_t i = 0; i < nd; i++) {
                x[i] = zr[i];
                y[i] = yr[i];
            }
            kl[p] = peso_cpu_softmax_kl(x, y, nd, g != NULL);
            if (g)
                for (size_t i = 0; i < nd; i++)
                    g[i] = (float)(scale * x[i]);
        }
        free(x);
        free(y);
    }
    /* each row's real positions in order, times scale; rows in b order */
    double total = 0.0;
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        for (int t = 0; t < lens[b]; t++)
            s += kl[(size_t)b * (size_t)T + (size_t)t];
        total += scale * s;
    }
    free(kl);
    *value = total;
    return 0;
}
