/* SwiGLU of the Llama MLP: h = silu(g) * u, silu(g) = g * sigmoid(g). */
#include "backend/cpu.h"

static inline float sigmoid(float x)
{
    return 1.0f / (1.0f + peso_cpu_expf(-x));
}

int peso_cpu_swiglu(peso_backend *be, float *h, const float *g, const float *u, size_t n,
                    peso_err *err)
{
    (void)be;
    (void)err;
#pragma omp parallel for simd schedule(static) if (n >= PESO_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        h[i] = g[i] * sigmoid(g[i]) * u[i];
    return 0;
}

/* d silu(g) / dg = sigmoid(g) * (1 + g * (1 - sigmoid(g))). The two
 * gradients are separate branch-free loops so that both vectorise; the
 * second recomputes the sigmoid rather than keep it in memory. */
int peso_cpu_swiglu_backward(peso_backend *be, float *dg, float *du, const float *dh,
                             const float *g, const float *u, size_t n, peso_err *err)
{
    (void)be;
    (void)err;
    if (dg) {
#pragma omp parallel for simd schedule(static) if (n >= PESO_CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float sg = sigmoid(g[i]);
            dg[i] += dh[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
        }
    }
    if (du) {
#pragma omp parallel for simd schedule(static) if (n >= PESO_CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++)
            du[i] += dh[i] * g[i] * sigmoid(g[i]);
    }
    return 0;
}
