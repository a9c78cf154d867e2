/* Causal grouped-query attention on right-padded batches, as matrix
 * products. Query rows go in blocks of ATTN_BLOCK: a block's rows see
 * only the keys before its end, so the upper triangle of the score matrix
 * is mostly never formed, and a block's scores stay in cache between the
 * products that make and use them. The forward keeps only each row's
 * log-sum-exp; the backward recomputes the probabilities from it (as
 * flash attention does), so memory stays O(batch * heads * seq) instead
 * of O(seq^2). The threads are OpenMP's, one (sequence, head) task at a
 * time each, every product in it on one OpenBLAS thread: a task's result
 * does not depend on which thread ran it, nor on how many there are. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "backend/cpu.h"

/* Query rows per block: large enough for efficient products, small
 * enough that the skipped upper triangle is most of it. */
#define ATTN_BLOCK 64

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
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Head h of a [batch, seq, heads, head_dim] tensor as a [seq, head_dim]
 * matrix with leading dimension heads * head_dim: row t is (b, t, h). */
typedef struct head_view {
    size_t off;
    int ld;
} head_view;

static head_view head(const peso_attn_shape *s, int heads, int b, int h)
{
    head_view v = {((size_t)b * s->seq * heads + h) * s->head_dim, heads * s->head_dim};
    return v;
}

/* The kv head that query head h reads. */
static int kv_of(const peso_attn_shape *s, int h)
{
    return h / (s->n_head / s->n_kv_head);
}

/* sc[i, 0..r1) = scale * q[r0 + i] . k[0..r1) for the block's m rows. */
static void block_scores(const peso_attn_shape *s, const float *q, head_view qv, const float *k,
                         head_view kv, int r0, int m, int r1, float *sc)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, r1, s->head_dim,
                attn_scale(s->head_dim), q + qv.off + (size_t)r0 * qv.ld, qv.ld, k + kv.off,
                kv.ld, 0.0f, sc, r1);
}

/* Row t of a block, n = r1 wide: softmax over keys 0..t in place, zeros
 * for the later keys the block formed; returns the log-sum-exp. */
static float softmax_row(float *p, int t, int n)
{
    float mx = -INFINITY, sum = 0.0f;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j <= t; j++)
        mx = p[j] > mx ? p[j] : mx;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j <= t; j++) {
        p[j] = peso_cpu_expf(p[j] - mx);
        sum += p[j];
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int j = 0; j <= t; j++)
        p[j] *= inv;
    memset(p + t + 1, 0, (size_t)(n - t - 1) * sizeof *p);
    return mx + logf(sum);
}

static void forward_head(const peso_attn_shape *s, float *out, float *lse, const float *q,
                         const float *k, const float *v, int len, int b, int h, float *p)
{
    head_view qv = head(s, s->n_head, b, h), kv = head(s, s->n_kv_head, b, kv_of(s, h));
    float *l = lse + ((size_t)b * s->n_head + h) * s->seq;
    for (int r0 = 0; r0 < len; r0 += ATTN_BLOCK) {
        int r1 = r0 + ATTN_BLOCK < len ? r0 + ATTN_BLOCK : len, m = r1 - r0;
        block_scores(s, q, qv, k, kv, r0, m, r1, p);
        for (int i = 0; i < m; i++)
            l[r0 + i] = softmax_row(p + (size_t)i * r1, r0 + i, r1);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, s->head_dim, r1, 1.0f, p, r1,
                    v + kv.off, kv.ld, 0.0f, out + qv.off + (size_t)r0 * qv.ld, qv.ld);
    }
    for (int t = len; t < s->seq; t++) {
        memset(out + qv.off + (size_t)t * qv.ld, 0, (size_t)s->head_dim * sizeof *out);
        l[t] = 0.0f;
    }
}

int peso_cpu_attention(peso_backend *be, const peso_attn_shape *s, float *out, float *lse,
                       const float *q, const float *k, const float *v, const int32_t *seq_len,
                       peso_err *err)
{
    if (lens_check("attention", s, seq_len, err) < 0)
        return -1;
    size_t slice;
    float *scratch = peso_cpu_scratch(be, (size_t)ATTN_BLOCK * s->seq, &slice);
    int tasks = s->batch * s->n_head;
    size_t work = attn_work(s);
#pragma omp parallel if (work >= PESO_CPU_PAR_MIN)
    {
        float *p = scratch + (size_t)omp_get_thread_num() * slice;
#pragma omp for schedule(dynamic)
        for (int i = 0; i < tasks; i++) {
            int b = i / s->n_head, h = i % s->n_head;
            forward_head(s, out, lse, q, k, v, seq_len[b], b, h, p);
        }
    }
    return 0;
}

/* The gradients' operands for one query head. */
typedef struct bwd_args {
    float *dq, *dk, *dv;
    const float *dout, *q, *k, *v, *out, *lse;
} bwd_args;

/* Probabilities p (recomputed from the scores and lse) and ds = p (dp - D)
 * for one block, where dp = dout v^T is already in ds and D = dout . out
 * per row; zeros past each row's last key. */
static void block_grads(const peso_attn_shape *s, const bwd_args *a, head_view qv,
                        const float *l, int r0, int m, int r1, float *p, float *ds)
{
    for (int i = 0; i < m; i++) {
        int t = r0 + i;
        size_t o = qv.off + (size_t)t * qv.ld;
        float dsum = dot(a->dout + o, a->out + o, s->head_dim), lt = l[t];
        float *pi = p + (size_t)i * r1, *di = ds + (size_t)i * r1;
#pragma omp simd
        for (int j = 0; j <= t; j++) {
            pi[j] = peso_cpu_expf(pi[j] - lt);
            di[j] = pi[j] * (di[j] - dsum);
        }
        memset(pi + t + 1, 0, (size_t)(r1 - t - 1) * sizeof *pi);
        memset(di + t + 1, 0, (size_t)(r1 - t - 1) * sizeof *di);
    }
}

/* Gradients of query head h block by block, with k, v those of its kv
 * head: dq += scale ds k, dk += scale ds^T q, dv += p^T dout. */
static void backward_head(const peso_attn_shape *s, const bwd_args *a, int len, int b, int h,
                          float *p, float *ds)
{
    head_view qv = head(s, s->n_head, b, h), kv = head(s, s->n_kv_head, b, kv_of(s, h));
    const float *l = a->lse + ((size_t)b * s->n_head + h) * s->seq;
    int dim = s->head_dim;
    float scale = attn_scale(dim);
    for (int r0 = 0; r0 < len; r0 += ATTN_BLOCK) {
        int r1 = r0 + ATTN_BLOCK < len ? r0 + ATTN_BLOCK : len, m = r1 - r0;
        size_t qo = qv.off + (size_t)r0 * qv.ld;
        block_scores(s, a->q, qv, a->k, kv, r0, m, r1, p);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, r1, dim, 1.0f, a->dout + qo,
                    qv.ld, a->v + kv.off, kv.ld, 0.0f, ds, r1);
        block_grads(s, a, qv, l, r0, m, r1, p, ds);
        if (a->dq)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, dim, r1, scale, ds, r1,
                        a->k + kv.off, kv.ld, 1.0f, a->dq + qo, qv.ld);
        if (a->dk)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1, dim, m, scale, ds, r1,
                        a->q + qo, qv.ld, 1.0f, a->dk + kv.off, kv.ld);
        if (a->dv)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1, dim, m, 1.0f, p, r1,
                        a->dout + qo, qv.ld, 1.0f, a->dv + kv.off, kv.ld);
    }
}

int peso_cpu_attention_backward(peso_backend *be, const peso_attn_shape *s, float *dq, float *dk,
                                float *dv, const float *dout, const float *q, const float *k,
                                const float *v, const float *out, const float *lse,
                                const int32_t *seq_len, peso_err *err)
{
    if (lens_check("attention_backward", s, seq_len, err) < 0)
        return -1;
    bwd_args a = {dq, dk, dv, dout, q, k, v, out, lse};
    size_t block = (size_t)ATTN_BLOCK * s->seq, slice;
    float *scratch = peso_cpu_scratch(be, 2 * block, &slice);
    /* one task per (sequence, kv head): it alone writes that kv head's dk,
     * dv and its query heads' dq, so there are no races and the sums run
     * in a fixed order */
    int rep = s->n_head / s->n_kv_head, tasks = s->batch * s->n_kv_head;
    size_t work = attn_work(s);
#pragma omp parallel if (work >= PESO_CPU_PAR_MIN)
    {
        float *p = scratch + (size_t)omp_get_thread_num() * slice;
#pragma omp for schedule(dynamic)
        for (int i = 0; i < tasks; i++) {
            int b = i / s->n_kv_head, g = i % s->n_kv_head;
            for (int h = g * rep; h < (g + 1) * rep; h++)
                backward_head(s, &a, seq_len[b], b, h, p, p + block);
        }
    }
    return 0;
}
