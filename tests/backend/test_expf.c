/* peso_cpu_expf, the cpu backend's vectorisable e^x (softmax, sigmoid),
 * against libm's exp in double. A cpu-internal helper, so this test
 * includes backend/cpu.h and runs whatever PESO_TEST_BACKEND says. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "backend/cpu.h"

enum { SWEEP = 1 << 20 };

/* Through a loop that vectorises, as the backend's loops do. */
static void expf_all(float *y, const float *x, int n)
{
#pragma omp simd
    for (int i = 0; i < n; i++)
        y[i] = peso_cpu_expf(x[i]);
}

Test(expf, within_2e7_relative_over_the_normal_range)
{
    float *x = malloc(SWEEP * sizeof *x), *y = malloc(SWEEP * sizeof *y);
    for (int i = 0; i < SWEEP; i++)
        x[i] = -87.0f + 175.0f * (float)i / (float)(SWEEP - 1);
    expf_all(y, x, SWEEP);
    for (int i = 0; i < SWEEP; i++) {
        double want = exp((double)x[i]);
        cr_assert(fabs(y[i] - want) <= 2e-7 * want, "e^%.9g: got %.9g, expected %.9g", x[i],
                  (double)y[i], want);
        /* the scalar call and the vector loop compute the same bits */
        cr_assert(peso_cpu_expf(x[i]) == y[i], "e^%.9g scalar vs vector", x[i]);
    }
    free(x), free(y);
}

Test(expf, edges_flush_overflow_and_keep_nan)
{
    float x[] = {0.0f, -0.0f, -INFINITY, -87.5f, -1e30f, INFINITY, 89.0f, 1e30f, NAN, -NAN};
    float want[] = {1.0f, 1.0f, 0.0f, 0.0f, 0.0f, INFINITY, INFINITY, INFINITY, NAN, NAN};
    int n = sizeof x / sizeof x[0];
    float y[sizeof x / sizeof x[0]];
    expf_all(y, x, n);
    for (int i = 0; i < n; i++) {
        if (isnan(want[i]))
            cr_assert(isnan(y[i]) && isnan(peso_cpu_expf(x[i])), "e^%g: got %g", x[i], y[i]);
        else
            cr_assert(y[i] == want[i] && peso_cpu_expf(x[i]) == want[i], "e^%g: got %g", x[i],
                      y[i]);
    }
}
