/* Frozen past adapters of the cumulative family (paper eq. 5; DESIGN.md
 * "Continual methods"): each adapted projection adds
 * sum_i alpha_i (x Ahat_i^T) Bhat_i^T, the hats being each module's A_i
 * and B_i divided by their Frobenius norms. The normalised copies live in
 * one device buffer, adapter after adapter, each with the LoRA part of the
 * flat layout, so module mi of adapter i sits at the offsets of its own
 * views. Magnitudes are fixed host numbers (SumLoRA) or the flat's
 * PESO_LLAMA_MAGNITUDES view (SD-LoRA), read once per pass. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/llama_internal.h"

void peso_llama_past_free(peso_llama *m)
{
    peso_llama_past *p = &m->past;
    m->be->free(m->be, p->mem);
    m->be->free(m->be, p->tmp);
    free(p->live);
    free(p->alpha);
    memset(p, 0, sizeof *p);
}

int peso_llama_past_kept(const peso_llama *m)
{
    return m->past.learnable ? m->past.n : 0;
}

static double frob(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return sqrt(s);
}

/* dst = src / ||src||_F (n floats); 0 when src is all zero. */
static int normalise(float *dst, const float *src, size_t n)
{
    double norm = frob(src, n);
    if (norm == 0.0)
        return 0;
    for (size_t i = 0; i < n; i++)
        dst[i] = (float)(src[i] / norm);
    return 1;
}

/* Normalises every module of one past adapter into host (LoRA span) and
 * marks the modules that contribute. */
static void normalise_adapter(const peso_lora *l, const float *src, float *host, unsigned char *live)
{
    int r = l->conf.rank;
    for (int k = 0; k < l->n_modules; k++) {
        const peso_lora_module *md = &l->mods[k];
        size_t na = (size_t)r * md->in, nb = (size_t)md->out * r;
        int a = normalise(host + md->a_off, src + md->a_off, na);
        int b = normalise(host + md->b_off, src + md->b_off, nb);
        live[k] = (unsigned char)(a && b);
    }
}

static int check_past(const peso_llama *m, int n_past, const float *const *past, const float *alpha,
                      peso_err *err)
{
    if (n_past < 0)
        return peso_errf(err, "past adapters: %d, expected >= 0", n_past);
    if (n_past == 0)
        return 0;
    if (m->lora.n_modules == 0)
        return peso_errf(err, "past adapters: %s has no LoRA modules to add them to", m->dir);
    for (int i = 0; i < n_past; i++)
        if (!past[i])
            return peso_errf(err, "past adapter %d: no buffer", i);
    if (alpha) {
        for (int i = 0; i < n_past; i++)
            if (!isfinite(alpha[i]))
                return peso_errf(err, "past adapter %d: magnitude %g, expected a finite number", i,
                                 (double)alpha[i]);
        return 0;
    }
    if (n_past > m->n_magnitudes)
        return peso_errf(err,
                         "past adapters: %d with learnable magnitudes, but the flat view %s holds %d "
                         "(peso_llama_opts.n_magnitudes)",
                         n_past, PESO_LLAMA_MAGNITUDES, m->n_magnitudes);
    return 0;
}

int peso_llama_set_past(peso_llama *m, int n_past, const float *const *past, const float *alpha,
                        peso_err *err)
{
    if (check_past(m, n_past, past, alpha, err) < 0)
        return -1;
    peso_llama_past_free(m);
    if (n_past == 0)
        return 0;
    peso_llama_past *p = &m->past;
    size_t span = m->lora_span, nm = (size_t)m->lora.n_modules;
    float *host = peso_calloc((size_t)n_past * span, sizeof *host);
    p->live = peso_malloc((size_t)n_past * nm);
    p->alpha = peso_malloc((size_t)n_past * sizeof *p->alpha);
    for (int i = 0; i < n_past; i++) {
        normalise_adapter(&m->lora, past[i], host + (size_t)i * span, p->live + (size_t)i * nm);
        p->alpha[i] = alpha ? alpha[i] : 1.0f;
    }
    size_t bytes = (size_t)n_past * span * sizeof(float);
    int rc = m->be->alloc(m->be, (void **)&p->mem, bytes, err);
    if (rc == 0)
        rc = m->be->upload(m->be, p->mem, host, bytes, err);
    free(host);
    if (rc < 0) {
        peso_llama_past_free(m);
        return peso_err_prefix(err, "past adapters (%d x %zu floats)", n_past, span);
    }
    p->n = n_past;
    p->learnable = alpha == NULL;
    return 0;
}

int peso_llama_past_begin(peso_llama *m, int N, peso_err *err)
{
    peso_llama_past *p = &m->past;
    if (p->n == 0)
        return 0;
    if ((size_t)N <= p->tmp_rows)
        return 0;
    m->be->free(m->be, p->tmp);
    p->tmp = NULL;
    p->tmp_rows = 0;
    size_t bytes = (size_t)N * (size_t)m->lora.conf.rank * sizeof(float);
    if (m->be->alloc(m->be, (void **)&p->tmp, bytes, err) < 0)
        return peso_err_prefix(err, "past adapters: scratch for %d rows", N);
    p->tmp_rows = (size_t)N;
    return 0;
}

/* The device magnitude of past adapter i when learnable (its alpha[i]
 * stays 1), else NULL (alpha[i] fixed). */
static const float *alpha_dev(const peso_llama *m, int i)
{
    return m->past.learnable ? m->params + m->mag_off + i : NULL;
}

static const float *past_a(const peso_llama *m, int i, int mi)
{
    return m->past.mem + (size_t)i * m->lora_span + m->lora.mods[mi].a_off;
}

static const float *past_b(const peso_llama *m, int i, int mi)
{
    return m->past.mem + (size_t)i * m->lora_span + m->lora.mods[mi].b_off;
}

static int live(const peso_llama *m, int i, int mi)
{
    return m->past.live[(size_t)i * m->lora.n_modules + mi];
}

int peso_llama_past_forward(peso_llama *m, int mi, int N, float *y, const float *x, float *plu, peso_err *err)
{
    const peso_lora_module *md = &m->lora.mods[mi];
    int r = m->lora.conf.rank;
    for (int i = 0; i < m->past.n; i++) {
        if (!live(m, i, mi))
            continue;
        float *u = plu ? plu + (size_t)i * N * r : m->past.tmp;
        if (peso_linear(m->be, u, x, past_a(m, i, mi), PESO_F32, N, r, md->in, 1.0f, 0.0f, err) < 0 ||
            peso_linear_scaled(m->be, y, u, past_b(m, i, mi), PESO_F32, N, md->out, r, m->past.alpha[i],
                               alpha_dev(m, i), 1.0f, err) < 0)
            return peso_err_prefix(err, "past adapter %d", i);
    }
    return 0;
}

/* *c += <a, b> over n floats, as 1 x 1 products on the backend (chunks
 * keep k within an int), so the sum never leaves the device. */
static int dot_add(peso_backend *be, float *c, const float *a, const float *b, size_t n, peso_err *err)
{
    const size_t chunk = (size_t)1 << 30;
    for (size_t o = 0; o < n; o += chunk) {
        size_t k = n - o < chunk ? n - o : chunk;
        peso_gemm g = {.m = 1,
                       .n = 1,
                       .k = (int)k,
                       .trans_a = 0,
                       .trans_b = 1,
                       .alpha = 1.0f,
                       .beta = 1.0f,
                       .b_dtype = PESO_F32,
                       .batch = 1};
        if (be->matmul(be, &g, c, a + o, b + o, err) < 0)
            return -1;
    }
    return 0;
}

/* dL/dalpha_i = sum_tok <dy, (x Ahat_i^T) Bhat_i^T> = <dy Bhat_i, x Ahat_i^T>;
 * dL/dx gets alpha_i (dy Bhat_i) Ahat_i. */
int peso_llama_past_backward(peso_llama *m, int mi, int N, float *dx, const float *dy, const float *plu,
                             float *t, peso_err *err)
{
    peso_backend *be = m->be;
    const peso_lora_module *md = &m->lora.mods[mi];
    int r = m->lora.conf.rank;
    size_t nr = (size_t)N * r;
    for (int i = 0; i < m->past.n; i++) {
        if (!live(m, i, mi))
            continue;
        if (be->zero(be, t, nr * sizeof(float), err) < 0 ||
            peso_linear_backward(be, t, NULL, dy, NULL, past_b(m, i, mi), PESO_F32, N, md->out, r, 1.0f,
                                 err) < 0 ||
            (m->past.learnable &&
             dot_add(be, m->grads + m->mag_off + i, t, plu + (size_t)i * nr, nr, err) < 0) ||
            peso_linear_backward_scaled(be, dx, NULL, t, NULL, past_a(m, i, mi), PESO_F32, N, r, md->in,
                                        m->past.alpha[i], alpha_dev(m, i), err) < 0)
            return peso_err_prefix(err, "past adapter %d backward", i);
    }
    return 0;
}
