/* Cross-entropy of the output head at selected positions only. The logits
 * of a block of positions exist only inside this call: computed with
 * OpenBLAS, turned into losses and (when gradients are asked for) into
 * d = scale * (softmax - onehot) in place, then multiplied back. For a
 * 128k vocabulary this avoids both the head at every position and a
 * stored [positions, vocab] tensor. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu.h"

/* positions per block: 32 x 128k floats = 16 MiB of logits */
enum { ROWS = 32 };

static int xent_check(const peso_backend *be, const peso_table *head, int n_tok,
                      const int32_t *pos, const int32_t *target, int n_pos, float scale,
                      peso_err *err)
{
    if (peso_table_check(be, head, "xent", err) < 0)
        return -1;
    if (n_pos < 0 || (n_pos > 0 && n_tok < 1))
        return peso_errf(err, "xent: n_pos=%d n_tok=%d, expected n_pos >= 0 and n_tok >= 1",
                         n_pos, n_tok);
    if (!isfinite(scale))
        return peso_errf(err, "xent: scale=%g, expected a finite number", (double)scale);
    for (int p = 0; p < n_pos; p++) {
        if (pos[p] < 0 || pos[p] >= n_tok)
            return peso_errf(err, "xent: pos[%d]=%d outside [0, %d)", p, pos[p], n_tok);
        if (target[p] < 0 || target[p] >= head->n_rows)
            return peso_errf(err, "xent: target[%d]=%d outside vocabulary [0, %d)", p, target[p],
                             head->n_rows);
    }
    return 0;
}

/* The head as up to three row segments: frozen below, trainable, frozen
 * above. Returns the count; seg rows [lo, hi) start at ptr. */
struct segment {
    int lo, hi;
    const float *ptr;
};

static int segments(const peso_table *t, struct segment seg[3])
{
    int n = 0;
    const float *base = t->base;
    if (t->train_lo > 0)
        seg[n++] = (struct segment){0, t->train_lo, base};
    if (t->train_hi > t->train_lo)
        seg[n++] = (struct segment){t->train_lo, t->train_hi, t->train};
    if (t->train_hi < t->n_rows)
        seg[n++] = (struct segment){t->train_hi, t->n_rows,
                                    base + (size_t)t->train_hi * t->dim};
    return n;
}

/* Turns one logits row into its loss and, if grad, into d in place. */
static float row_softmax(float *lg, int vocab, int target, float scale, int grad)
{
    float mx = -INFINITY;
    for (int j = 0; j < vocab; j++)
        mx = lg[j] > mx ? lg[j] : mx;
    double sum = 0.0;
    for (int j = 0; j < vocab; j++)
        sum += expf(lg[j] - mx);
    float lse = mx + (float)log(sum);
    float loss = lse - lg[target];
    if (grad) {
        for (int j = 0; j < vocab; j++)
            lg[j] = scale * expf(lg[j] - lse);
        lg[target] -= scale;
    }
    return loss;
}

struct xent_buf {
    float *hb, *lg, *dhb;
};

static void xent_block(const peso_table *head, const float *h, const int32_t *pos,
                       const int32_t *target, int rows, float scale, float *losses, float *dh,
                       float *dhead, struct xent_buf *buf)
{
    int dim = head->dim, vocab = head->n_rows, grad = dh || dhead;
    struct segment seg[3];
    int ns = segments(head, seg);
    for (int i = 0; i < rows; i++)
        memcpy(buf->hb + (size_t)i * dim, h + (size_t)pos[i] * dim, (size_t)dim * sizeof(float));
    for (int s = 0; s < ns; s++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, seg[s].hi - seg[s].lo, dim,
                    1.0f, buf->hb, dim, seg[s].ptr, dim, 0.0f, buf->lg + seg[s].lo, vocab);
#pragma omp parallel for schedule(static) if ((size_t)rows * vocab >= PESO_CPU_PAR_MIN)
    for (int i = 0; i < rows; i++)
        losses[i] = row_softmax(buf->lg + (size_t)i * vocab, vocab, target[i], scale, grad);
    if (dh) {
        for (int s = 0; s < ns; s++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, dim,
                        seg[s].hi - seg[s].lo, 1.0f, buf->lg + seg[s].lo, vocab, seg[s].ptr, dim,
                        s == 0 ? 0.0f : 1.0f, buf->dhb, dim);
        /* in order: a position selected twice gets both contributions */
        for (int i = 0; i < rows; i++) {
            float *d = dh + (size_t)pos[i] * dim;
            const float *src = buf->dhb + (size_t)i * dim;
            for (int j = 0; j < dim; j++)
                d[j] += src[j];
        }
    }
    if (dhead && head->train_hi > head->train_lo)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, head->train_hi - head->train_lo, dim,
                    rows, 1.0f, buf->lg + head->train_lo, vocab, buf->hb, dim, 1.0f, dhead, dim);
}

int peso_cpu_xent(peso_backend *be, const peso_table *head, const float *h, int n_tok,
                  const int32_t *pos, const int32_t *target, int n_pos, float scale,
                  float *losses, float *dh, float *dhead, peso_err *err)
{
    if (xent_check(be, head, n_tok, pos, target, n_pos, scale, err) < 0)
        return -1;
    if (n_pos == 0)
        return 0;
    size_t dim = (size_t)head->dim;
    struct xent_buf buf = {
        .hb = peso_malloc(ROWS * dim * sizeof(float)),
        .lg = peso_malloc(ROWS * (size_t)head->n_rows * sizeof(float)),
        .dhb = peso_malloc(ROWS * dim * sizeof(float)),
    };
    for (int p0 = 0; p0 < n_pos; p0 += ROWS) {
        int rows = n_pos - p0 < ROWS ? n_pos - p0 : ROWS;
        xent_block(head, h, pos + p0, target + p0, rows, scale, losses + p0, dh, dhead, &buf);
    }
    free(buf.hb);
    free(buf.lg);
    free(buf.dhb);
    return 0;
}
