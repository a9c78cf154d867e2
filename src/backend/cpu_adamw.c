/* AdamW over one flat float32 buffer, and the reductions that go with it
 * (sum of squares for clipping and group norms, scaling). */
#include <math.h>
#include <stdlib.h>

#include "backend/cpu.h"

int peso_cpu_adamw(peso_backend *be, float *param, const float *grad, float *m, float *v,
                   size_t n, const peso_adamw *hp, peso_err *err)
{
    (void)be;
    if (hp->step < 1)
        return peso_errf(err, "adamw: step=%ld, expected >= 1", hp->step);
    if (!(hp->beta1 >= 0.0 && hp->beta1 < 1.0 && hp->beta2 >= 0.0 && hp->beta2 < 1.0))
        return peso_errf(err, "adamw: beta1=%g beta2=%g, expected both in [0, 1)", hp->beta1,
                         hp->beta2);
    /* the order of torch.optim.AdamW (single-tensor path): decay, lerp the
     * first moment, then p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps) */
    float step_size = (float)(hp->lr / (1.0 - pow(hp->beta1, (double)hp->step)));
    float bc2_sqrt = (float)sqrt(1.0 - pow(hp->beta2, (double)hp->step));
    float decay = (float)(1.0 - hp->lr * hp->weight_decay);
    float b2 = (float)hp->beta2, w1 = (float)(1.0 - hp->beta1), w2 = (float)(1.0 - hp->beta2);
    float eps = (float)hp->eps, gs = (float)hp->grad_scale;
#pragma omp parallel for schedule(static) if (n >= PESO_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * gs;
        m[i] += w1 * (g - m[i]);
        v[i] = b2 * v[i] + w2 * g * g;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        param[i] = param[i] * decay - step_size * m[i] / denom;
    }
    return 0;
}

/* Fixed chunks summed in double and combined in chunk order: the same
 * bits for any thread count. */
int peso_cpu_sumsq(peso_backend *be, const float *x, size_t n, double *out, peso_err *err)
{
    (void)be;
    (void)err;
    enum { CHUNK = 1 << 14 };
    size_t nc = (n + CHUNK - 1) / CHUNK;
    double *part = peso_malloc((nc ? nc : 1) * sizeof *part);
#pragma omp parallel for schedule(static) if (nc > 1)
    for (size_t c = 0; c < nc; c++) {
        size_t i0 = c * CHUNK, i1 = i0 + CHUNK < n ? i0 + CHUNK : n;
        double s = 0.0;
        for (size_t i = i0; i < i1; i++)
            s += (double)x[i] * x[i];
        part[c] = s;
    }
    double s = 0.0;
    for (size_t c = 0; c < nc; c++)
        s += part[c];
    free(part);
    *out = s;
    return 0;
}

int peso_cpu_scale(peso_backend *be, float *x, size_t n, float s, peso_err *err)
{
    (void)be;
    (void)err;
#pragma omp parallel for schedule(static) if (n >= PESO_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        x[i] *= s;
    return 0;
}
