/* Causal grouped-query attention on right-padded batches. The forward
 * keeps only each row's log-sum-exp; the backward recomputes the
 * probabilities from it (as flash attention does), so memory stays
 * O(batch * heads * seq) instead of O(seq^2). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu.h"

static int lens_check(const char *op, const peso_attn_shape *s, const int32_t *seq_len,
                      peso_err *err)
{
    if (peso_attn_check(s, err) < 0)
        return peso_err_prefix(err, "%s", op);
    for (int b = 0; b < s->batch; b++)
        if (seq_len[b] < 0 || seq_len[b] > s->seq)
            return peso_errf(err, "%s: seq_len[%d]=%d outside [0, %d]", op, b, seq_len[b],
                             s->seq);
    return 0;
}

/* Multiply-adds of the score and value products if every row saw every
 * key: an upper bound (causal rows see half), enough to pick threading. */
static size_t attn_work(const peso_attn_shape *s)
{
    return (size_t)s->batch * s->n_head * s->seq * s->seq * s->head_dim;
}

/* head_dim ** -0.5 formed in double and rounded once, as HF's scaling */
static float attn_scale(int dim)
{
    return (float)pow((double)dim, -0.5);
}

static float dot(const float *a, const float *b, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Row t of head h of a [batch, seq, heads, head_dim] tensor. */
static size_t row(const peso_attn_shape *s, int heads, int b, int t, int h)
{
    return (((size_t)b * s->seq + t) * heads + h) * s->head_dim;
}

/* One query row: scaled scores against keys 0..t into sc, returns max. */
static float scores(const peso_attn_shape *s, const float *q, const float *k, int b, int t, int h,
                    float scale, float *sc)
{
    int g = h / (s->n_head / s->n_kv_head);
    const float *qi = q + row(s, s->n_head, b, t, h);
    float mx = -INFINITY;
    for (int j = 0; j <= t; j++) {
        sc[j] = scale * dot(qi, k + row(s, s->n_kv_head, b, j, g), s->head_dim);
        if (sc[j] > mx)
            mx = sc[j];
    }
    return mx;
}

static void forward_head(const peso_attn_shape *s, float *out, float *lse, const float *q,
                         const float *k, const float *v, int len, int b, int h, float *sc)
{
    int g = h / (s->n_head / s->n_kv_head), dim = s->head_dim;
    float scale = attn_scale(dim);
    for (int t = 0; t < s->seq; t++) {
        float *o = out + row(s, s->n_head, b, t, h);
        float *l = lse + ((size_t)b * s->n_head + h) * s->seq + t;
        memset(o, 0, (size_t)dim * sizeof *o);
        if (t >= len) {
            *l = 0.0f;
            continue;
        }
        float mx = scores(s, q, k, b, t, h, scale, sc);
        float sum = 0.0f;
        for (int j = 0; j <= t; j++) {
            float p = expf(sc[j] - mx);
            sum += p;
            const float *vj = v + row(s, s->n_kv_head, b, j, g);
            for (int d = 0; d < dim; d++)
                o[d] += p * vj[d];
        }
        for (int d = 0; d < dim; d++)
            o[d] /= sum;
        *l = mx + logf(sum);
    }
}

int peso_cpu_attention(peso_backend *be, const peso_attn_shape *s, float *out, float *lse,
                       const float *q, const float *k, const float *v, const int32_t *seq_len,
                       peso_err *err)
{
    (void)be;
    if (lens_check("attention", s, seq_len, err) < 0)
        return -1;
    int tasks = s->batch * s->n_head;
    size_t work = attn_work(s);
#pragma omp parallel if (work >= PESO_CPU_PAR_MIN)
    {
        float *sc = peso_malloc((size_t)s->seq * sizeof *sc);
#pragma omp for schedule(dynamic)
        for (int i = 0; i < tasks; i++) {
            int b = i / s->n_head, h = i % s->n_head;
            forward_head(s, out, lse, q, k, v, seq_len[b], b, h, sc);
        }
        free(sc);
    }
    return 0;
}

/* Gradients of one query head h, which reads kv head g. With p the
 * softmax row and D = dout . out: ds_j = p_j (dout . v_j - D),
 * dq += scale sum_j ds_j k_j, dk_j += scale ds_j q, dv_j += p_j dout. */
static void backward_head(const peso_attn_shape *s, float *dq, float *dk, float *dv,
                          const float *dout, const float *q, const float *k, const float *v,
                          const float *out, const float *lse, int len, int b, int h, float *sc)
{
    int g = h / (s->n_head / s->n_kv_head), dim = s->head_dim;
    float scale = attn_scale(dim);
    for (int t = 0; t < len; t++) {
        size_t qr = row(s, s->n_head, b, t, h);
        const float *qi = q + qr, *doi = dout + qr;
        float l = lse[((size_t)b * s->n_head + h) * s->seq + t];
        float dsum = dot(doi, out + qr, dim);
        scores(s, q, k, b, t, h, scale, sc);
        for (int j = 0; j <= t; j++) {
            size_t kr = row(s, s->n_kv_head, b, j, g);
            float p = expf(sc[j] - l);
            float ds = p * (dot(doi, v + kr, dim) - dsum) * scale;
            if (dq)
                for (int d = 0; d < dim; d++)
                    dq[qr + d] += ds * k[kr + d];
            if (dk)
                for (int d = 0; d < dim; d++)
                    dk[kr + d] += ds * qi[d];
            if (dv)
                for (int d = 0; d < dim; d++)
                    dv[kr + d] += p * doi[d];
        }
    }
}

int peso_cpu_attention_backward(peso_backend *be, const peso_attn_shape *s, float *dq, float *dk,
                                float *dv, const float *dout, const float *q, const float *k,
                                const float *v, const float *out, const float *lse,
                                const int32_t *seq_len, peso_err *err)
{
    (void)be;
    if (lens_check("attention_backward", s, seq_len, err) < 0)
        return -1;
    /* one task per (sequence, kv head): it alone writes that kv head's dk,
     * dv and its query heads' dq, so there are no races and the sums run
     * in a fixed order */
    int rep = s->n_head / s->n_kv_head, tasks = s->batch * s->n_kv_head;
    size_t work = attn_work(s);
#pragma omp parallel if (work >= PESO_CPU_PAR_MIN)
    {
        float *sc = peso_malloc((size_t)s->seq * sizeof *sc);
#pragma omp for schedule(dynamic)
        for (int i = 0; i < tasks; i++) {
            int b = i / s->n_kv_head, g = i % s->n_kv_head;
            for (int h = g * rep; h < (g + 1) * rep; h++)
                backward_head(s, dq, dk, dv, dout, q, k, v, out, lse, seq_len[b], b, h, sc);
        }
        free(sc);
    }
    return 0;
}
