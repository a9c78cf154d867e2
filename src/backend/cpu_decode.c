/* The two operations of a beam-search step (model/decode.h): the
 * log-softmax of the head's rows read at selected columns only, and one
 * new query per beam and head attending to a shared prefix plus the
 * beam's own keys. Their arithmetic is the one the host decoder used
 * before they existed (double sums for the log-softmax; float scores and
 * accumulation, a double softmax denominator for the attention), kept so
 * that beam-search results did not move by a bit. Threads take whole
 * rows, or whole (beam, head) pairs, so results do not depend on their
 * number. */
#include <math.h>
#include <omp.h>

#include "backend/cpu.h"

static int sel_check(int n, int V, const int32_t *sel, int n_sel, peso_err *err)
{
    if (n < 0 || V < 1 || n_sel < 0)
        return peso_errf(err, "log_softmax_sel: n=%d V=%d n_sel=%d, expected n >= 0, V >= 1, n_sel >= 0", n,
                         V, n_sel);
    for (int j = 0; j < n_sel; j++)
        if (sel[j] < 0 || sel[j] >= V)
            return peso_errf(err, "log_softmax_sel: sel[%d]=%d outside [0, %d)", j, sel[j], V);
    return 0;
}

/* log-sum-exp of row[0..V) in double, the maximum subtracted, summed in
 * column order. */
static double row_lse(const float *row, int V)
{
    double mx = row[0];
    for (int v = 1; v < V; v++)
        mx = fmax(mx, row[v]);
    double sum = exp(row[0] - mx);
    for (int v = 1; v < V; v++)
        sum += exp(row[v] - mx);
    return mx + log(sum);
}

int peso_cpu_log_softmax_sel(peso_backend *be, float *out, float *lse, const float *x, int n, int V,
                             const int32_t *sel, int n_sel, peso_err *err)
{
    (void)be;
    if (sel_check(n, V, sel, n_sel, err) < 0)
        return -1;
#pragma omp parallel for schedule(static) if ((size_t)n * (size_t)V >= PESO_CPU_PAR_MIN)
    for (int r = 0; r < n; r++) {
        const float *row = x + (size_t)r * V;
        double l = row_lse(row, V);
        float *o = out + (size_t)r * n_sel;
        for (int j = 0; j < n_sel; j++)
            o[j] = (float)(row[sel[j]] - l);
        if (lse)
            lse[r] = (float)l;
    }
    return 0;
}

/* In index order, in float: no `omp simd` here, whose reordered sum would
 * change the scores' last bits. */
static float dot(const float *a, const float *b, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Key (or value) row t of beam b: the prefix's rows, then the beam's own
 * rows of the cache, one block of own_stride beams per own token. */
static const float *kv_row(const peso_decode_attn_shape *s, const float *prefix, const float *own, int b,
                           int t)
{
    size_t kv = (size_t)s->n_kv_head * s->head_dim;
    if (t < s->n_prefix)
        return prefix + (size_t)t * kv;
    return own + ((size_t)(t - s->n_prefix) * s->own_stride + b) * kv;
}

/* Beam b, query head h: out = softmax(scale q . keys) . values over its
 * n_prefix + n_own keys, whose scores go to sc. */
static void attend_one(const peso_decode_attn_shape *s, float *out, float *sc, const float *q,
                       const float *pk, const float *pv, const float *ok, const float *ov, int b, int h)
{
    int D = s->head_dim, n = s->n_prefix + s->n_own;
    int off = h / (s->n_head / s->n_kv_head) * D;
    size_t qo = ((size_t)b * s->n_head + h) * D;
    float scale = (float)pow((double)D, -0.5), mx = -INFINITY;
    for (int t = 0; t < n; t++) {
        sc[t] = scale * dot(q + qo, kv_row(s, pk, ok, b, t) + off, D);
        mx = fmaxf(mx, sc[t]);
    }
    float *o = out + qo;
    double sum = 0.0;
    for (int i = 0; i < D; i++)
        o[i] = 0.0f;
    for (int t = 0; t < n; t++) {
        const float *v = kv_row(s, pv, ov, b, t) + off;
        float p = expf(sc[t] - mx);
        sum += p;
        for (int i = 0; i < D; i++)
            o[i] += p * v[i];
    }
    for (int i = 0; i < D; i++)
        o[i] = (float)(o[i] / sum);
}

int peso_cpu_decode_attention(peso_backend *be, const peso_decode_attn_shape *s, float *out, const float *q,
                              const float *pk, const float *pv, const float *ok, const float *ov,
                              peso_err *err)
{
    if (peso_decode_attn_check(s, err) < 0)
        return -1;
    if (s->n_prefix > 0 && (!pk || !pv))
        return peso_errf(err, "decode_attention: n_prefix=%d but the prefix keys or values are NULL",
                         s->n_prefix);
    int keys = s->n_prefix + s->n_own, tasks = s->n_beam * s->n_head;
    size_t slice, work = (size_t)tasks * (size_t)keys * (size_t)s->head_dim;
    float *scratch = peso_cpu_scratch(be, (size_t)keys, &slice);
#pragma omp parallel if (work >= PESO_CPU_PAR_MIN)
    {
        float *sc = scratch + (size_t)omp_get_thread_num() * slice;
#pragma omp for schedule(static)
        for (int i = 0; i < tasks; i++)
            attend_one(s, out, sc, q, pk, pv, ok, ov, i / s->n_head, i % s->n_head);
    }
    return 0;
}
