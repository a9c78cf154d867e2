/* Rotary position embedding, Hugging Face Llama convention (rotate_half:
 * dimension i pairs with i + head_dim/2, not interleaved). The angle is
 * computed as HF does, pos * inv_freq in float32, then cos and sin. */
#include <math.h>

#include "backend/cpu.h"

static int rope_check(const char *op, const int32_t *pos, int n_tok, int n_head, int head_dim,
                      peso_err *err)
{
    if (n_tok < 1 || n_head < 1 || head_dim < 2 || head_dim % 2 != 0)
        return peso_errf(err,
                         "%s: shape n_tok=%d n_head=%d head_dim=%d, expected >= 1 and an even "
                         "head_dim",
                         op, n_tok, n_head, head_dim);
    for (int t = 0; t < n_tok; t++)
        if (pos[t] < 0)
            return peso_errf(err, "%s: position %d of token %d, expected >= 0", op, pos[t], t);
    return 0;
}

/* sign +1 rotates by +angle (forward), -1 by -angle (the transpose) */
static void rotate(float *x, const int32_t *pos, const float *inv_freq, int n_tok, int n_head,
                   int head_dim, float sign)
{
    int half = head_dim / 2;
    size_t work = (size_t)n_tok * n_head * head_dim;
#pragma omp parallel for schedule(static) if (work >= PESO_CPU_PAR_MIN)
    for (int t = 0; t < n_tok; t++) {
        for (int i = 0; i < half; i++) {
            float ang = (float)pos[t] * inv_freq[i];
            float c = cosf(ang), s = sign * sinf(ang);
            for (int h = 0; h < n_head; h++) {
                float *xh = x + ((size_t)t * n_head + h) * head_dim;
                float a = xh[i], b = xh[i + half];
                xh[i] = a * c - b * s;
                xh[i + half] = b * c + a * s;
            }
        }
    }
}

int peso_cpu_rope(peso_backend *be, float *x, const int32_t *pos, const float *inv_freq,
                  int n_tok, int n_head, int head_dim, peso_err *err)
{
    (void)be;
    if (rope_check("rope", pos, n_tok, n_head, head_dim, err) < 0)
        return -1;
    rotate(x, pos, inv_freq, n_tok, n_head, head_dim, 1.0f);
    return 0;
}

int peso_cpu_rope_backward(peso_backend *be, float *dx, const int32_t *pos,
                           const float *inv_freq, int n_tok, int n_head, int head_dim,
                           peso_err *err)
{
    (void)be;
    if (rope_check("rope_backward", pos, n_tok, n_head, head_dim, err) < 0)
        return -1;
    rotate(dx, pos, inv_freq, n_tok, n_head, head_dim, -1.0f);
    return 0;
}
