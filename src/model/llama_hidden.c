/* Mean-pooled final hidden states: the item features of the semantic IDs
 * (semid.features: model). The forward is the training one up to the
 * final RMSNorm; no head, no labels. */
#include <stdlib.h>
#include <string.h>

#include "model/llama_internal.h"

int peso_llama_hidden_mean(peso_llama *m, const peso_llama_batch *b, float *out, peso_err *err)
{
    peso_llama_batch nolabels = *b;
    nolabels.labels = NULL;
    for (int r = 0; r < b->B; r++)
        if (b->lens[r] < 1 || b->lens[r] > b->T)
            return peso_errf(err, "hidden mean: row %d has %d tokens, expected 1..%d", r, b->lens[r], b->T);
    if (peso_llama_prepare(m, &nolabels, 0, err) < 0 || peso_llama_run_layers(m, err) < 0)
        return -1;
    size_t C = (size_t)m->cfg.hidden_size, T = (size_t)b->T;
    float *h = peso_malloc(T * C * sizeof *h);
    double *acc = peso_malloc(C * sizeof *acc);
    int rc = 0;
    /* One row at a time from the device: only its real tokens are read,
     * so padding never enters the mean. */
    for (int r = 0; r < b->B && rc == 0; r++) {
        size_t len = (size_t)b->lens[r];
        rc = m->be->download(m->be, h, m->acts->xf + (size_t)r * T * C, len * C * sizeof *h, err);
        memset(acc, 0, C * sizeof *acc);
        for (size_t t = 0; t < len && rc == 0; t++)
            for (size_t i = 0; i < C; i++)
                acc[i] += h[t * C + i];
        for (size_t i = 0; i < C && rc == 0; i++)
            out[(size_t)r * C + i] = (float)(acc[i] / (double)len);
    }
    free(h);
    free(acc);
    return rc;
}
