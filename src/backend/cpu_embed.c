/* Token embedding: gather rows by id; the backward adds output gradients
 * into the trainable rows only (new semantic-ID tokens), skipping ids of
 * frozen rows. And the plain gather of rows by index. */
#include <string.h>

#include "backend/cpu.h"

static int ids_check(const char *op, const peso_backend *be, const peso_table *t,
                     const int32_t *ids, int n, peso_err *err)
{
    if (peso_table_check(be, t, op, err) < 0)
        return -1;
    if (n < 0)
        return peso_errf(err, "%s: %d tokens, expected >= 0", op, n);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n_rows)
            return peso_errf(err, "%s: token id %d at position %d outside vocabulary [0, %d)", op,
                             ids[i], i, t->n_rows);
    return 0;
}

int peso_cpu_embed(peso_backend *be, const peso_table *t, float *out, const int32_t *ids, int n,
                   peso_err *err)
{
    if (ids_check("embed", be, t, ids, n, err) < 0)
        return -1;
#pragma omp parallel for schedule(static) if ((size_t)n * t->dim >= PESO_CPU_PAR_MIN)
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * t->dim, peso_cpu_table_row(t, ids[i]),
               (size_t)t->dim * sizeof *out);
    return 0;
}

/* Threads own column blocks and walk the tokens in order: repeated ids
 * never race and the sums do not depend on the thread count. */
int peso_cpu_embed_backward(peso_backend *be, const peso_table *t, float *dtrain,
                            const float *dout, const int32_t *ids, int n, peso_err *err)
{
    if (ids_check("embed_backward", be, t, ids, n, err) < 0)
        return -1;
    enum { BLOCK = 64 };
    int dim = t->dim, nb = (dim + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)n * dim >= PESO_CPU_PAR_MIN)
    for (int b = 0; b < nb; b++) {
        int j0 = b * BLOCK, j1 = j0 + BLOCK < dim ? j0 + BLOCK : dim;
        for (int i = 0; i < n; i++) {
            if (ids[i] < t->train_lo || ids[i] >= t->train_hi)
                continue;
            float *dr = dtrain + (size_t)(ids[i] - t->train_lo) * dim;
            const float *go = dout + (size_t)i * dim;
            for (int j = j0; j < j1; j++)
                dr[j] += go[j];
        }
    }
    return 0;
}

int peso_cpu_gather_rows(peso_backend *be, float *dst, const float *src, int n_src, int width,
                         const int32_t *idx, int n, peso_err *err)
{
    (void)be;
    if (n < 0 || n_src < 0 || width < 1)
        return peso_errf(err, "gather_rows: n=%d n_src=%d width=%d, expected n, n_src >= 0 and width >= 1", n,
                         n_src, width);
    for (int i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= n_src)
            return peso_errf(err, "gather_rows: idx[%d]=%d outside [0, %d)", i, idx[i], n_src);
    size_t w = (size_t)width;
#pragma omp parallel for schedule(static) if ((size_t)n * w >= PESO_CPU_PAR_MIN)
    for (int i = 0; i < n; i++)
        memcpy(dst + (size_t)i * w, src + (size_t)idx[i] * w, w * sizeof *dst);
    return 0;
}
