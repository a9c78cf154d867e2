#include "eval/metrics.h"

#include <math.h>
#include <string.h>

int peso_metrics_init(peso_metrics *m, const int *k, int n_k, peso_err *err)
{
    memset(m, 0, sizeof *m);
    if (n_k < 1 || n_k > PESO_METRICS_MAX_K)
        return peso_errf(err, "metrics: %d cut-offs, expected 1 to %d", n_k, PESO_METRICS_MAX_K);
    for (int i = 0; i < n_k; i++) {
        if (k[i] < 1)
            return peso_errf(err, "metrics: cut-off %d is k = %d, expected k >= 1", i, k[i]);
        if (i > 0 && k[i] <= k[i - 1])
            return peso_errf(err, "metrics: cut-off %d is k = %d after k = %d, expected strictly ascending",
                             i, k[i], k[i - 1]);
        m->k[i] = k[i];
    }
    m->n_k = n_k;
    return 0;
}

void peso_metrics_init_default(peso_metrics *m)
{
    static const int k[] = {5, 10};
    peso_metrics_init(m, k, 2, NULL);
}

int peso_metrics_rank(const int32_t *ranked, int n, int32_t target)
{
    for (int i = 0; i < n; i++)
        if (ranked[i] == target)
            return i + 1;
    return 0;
}

int peso_metrics_rank_tuples(const int32_t *ranked, int n, int n_levels, const int32_t *target)
{
    size_t bytes = (size_t)n_levels * sizeof *target;
    for (int i = 0; i < n; i++)
        if (memcmp(ranked + (size_t)i * n_levels, target, bytes) == 0)
            return i + 1;
    return 0;
}

void peso_metrics_add(peso_metrics *m, int rank)
{
    m->sum[0] += 1.0;
    if (rank < 1)
        return;
    double gain = 1.0 / log2((double)rank + 1.0);
    for (int i = 0; i < m->n_k; i++)
        if (rank <= m->k[i]) {
            m->sum[1 + i] += 1.0;
            m->sum[1 + m->n_k + i] += gain;
        }
}

static int same_cutoffs(int n_a, const int *a, int n_b, const int *b)
{
    return n_a == n_b && memcmp(a, b, (size_t)n_a * sizeof *a) == 0;
}

int peso_metrics_merge(peso_metrics *into, const peso_metrics *from, peso_err *err)
{
    if (!same_cutoffs(into->n_k, into->k, from->n_k, from->k))
        return peso_errf(err, "metrics: merging sums over %d cut-offs (first k = %d) into %d (first k = %d)",
                         from->n_k, from->k[0], into->n_k, into->k[0]);
    for (int i = 0; i < peso_metrics_n_sums(into); i++)
        into->sum[i] += from->sum[i];
    return 0;
}

int peso_metrics_final(const peso_metrics *m, peso_metrics_mean *out, peso_err *err)
{
    memset(out, 0, sizeof *out);
    if (m->sum[0] < 1.0)
        return peso_errf(err, "metrics: no users were evaluated, the means are undefined");
    out->n_k = m->n_k;
    memcpy(out->k, m->k, sizeof out->k);
    out->users = (int64_t)m->sum[0];
    for (int i = 0; i < m->n_k; i++) {
        out->hit[i] = m->sum[1 + i] / m->sum[0];
        out->ndcg[i] = m->sum[1 + m->n_k + i] / m->sum[0];
    }
    return 0;
}

int peso_metrics_average(const peso_metrics_mean *stage, int n, peso_metrics_mean *out, peso_err *err)
{
    memset(out, 0, sizeof *out);
    if (n < 1)
        return peso_errf(err, "metrics: averaging over %d stages, expected at least 1", n);
    for (int s = 1; s < n; s++)
        if (!same_cutoffs(stage[s].n_k, stage[s].k, stage[0].n_k, stage[0].k))
            return peso_errf(err, "metrics: stage %d of the average has other cut-offs than stage 0", s);
    out->n_k = stage[0].n_k;
    memcpy(out->k, stage[0].k, sizeof out->k);
    for (int s = 0; s < n; s++) {
        out->users += stage[s].users;
        for (int i = 0; i < out->n_k; i++) {
            out->hit[i] += stage[s].hit[i];
            out->ndcg[i] += stage[s].ndcg[i];
        }
    }
    for (int i = 0; i < out->n_k; i++) {
        out->hit[i] /= n;
        out->ndcg[i] /= n;
    }
    return 0;
}

int peso_metrics_k_index(const int *ks, int n_k, int k)
{
    for (int i = 0; i < n_k; i++)
        if (ks[i] == k)
            return i;
    return -1;
}
