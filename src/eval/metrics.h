/* Ranking metrics of the evaluation (paper, Appendix C.1): for a user
 * whose target item sits at 1-based rank r of the generated list,
 *   Hit@k  = 1 if r <= k, else 0;
 *   NDCG@k = 1 / log2(r + 1) if r <= k, else 0
 * (one relevant item, so the ideal DCG is 1), averaged over users.
 *
 * What is ranked is code tuples, not items. The generated list holds
 * distinct tuples (trie leaves); a tuple stands for the set of valid items
 * that carry it, and the target is at rank r when its tuple is the r-th
 * generated tuple. So when items share a tuple (the real LETTER index has
 * 25 such items), generating that tuple is a hit for any of them, and the
 * tuple takes one list position however many items it stands for. This is
 * what the TIGER / LC-Rec / LETTER evaluations do: they compare the
 * generated token string with the target's. If a list repeats a tuple, its
 * first position counts.
 *
 * Sums, not means, are accumulated, in one flat buffer of doubles, so that
 * evaluation ranks reduce it with one element-wise sum and divide once. */
#ifndef PESO_EVAL_METRICS_H
#define PESO_EVAL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define PESO_METRICS_MAX_K 8

typedef struct peso_metrics {
    int n_k;
    int k[PESO_METRICS_MAX_K]; /* cut-offs, strictly ascending */
    /* [0] users; [1 + i] sum of Hit@k[i]; [1 + n_k + i] sum of NDCG@k[i].
     * Exact integers up to 2^53 users, except the NDCG sums. */
    double sum[1 + 2 * PESO_METRICS_MAX_K];
} peso_metrics;

/* The means, per stage or averaged over stages. */
typedef struct peso_metrics_mean {
    int n_k;
    int k[PESO_METRICS_MAX_K];
    double hit[PESO_METRICS_MAX_K];
    double ndcg[PESO_METRICS_MAX_K];
    int64_t users; /* users averaged over (over stages: their total) */
} peso_metrics_mean;

/* Zero sums for the cut-offs k[0 .. n_k): 1 to PESO_METRICS_MAX_K of
 * them, each >= 1, strictly ascending. */
int peso_metrics_init(peso_metrics *m, const int *k, int n_k, peso_err *err);
/* The paper's cut-offs, k = 5 and 10. */
void peso_metrics_init_default(peso_metrics *m);

/* 1-based position of target in ranked[0 .. n), 0 when absent: ids (trie
 * leaves) or tuples of n_levels codes each. */
int peso_metrics_rank(const int32_t *ranked, int n, int32_t target);
int peso_metrics_rank_tuples(const int32_t *ranked, int n, int n_levels, const int32_t *target);

/* Adds one user whose target is at rank (1-based; 0 or anything past the
 * largest k is a miss). */
void peso_metrics_add(peso_metrics *m, int rank);
/* Adds from's sums into into (same cut-offs, else an error). */
int peso_metrics_merge(peso_metrics *into, const peso_metrics *from, peso_err *err);
/* The flat sums buffer and its length, for a reduction across ranks. */
static inline double *peso_metrics_sums(peso_metrics *m)
{
    return m->sum;
}
static inline int peso_metrics_n_sums(const peso_metrics *m)
{
    return 1 + 2 * m->n_k;
}

/* Divides the sums by the users; an error when there are none. */
int peso_metrics_final(const peso_metrics *m, peso_metrics_mean *out, peso_err *err);
/* Unweighted mean of n >= 1 stages' means (each stage counts once, as the
 * paper averages over D2..D4); they must share the cut-offs. */
int peso_metrics_average(const peso_metrics_mean *stage, int n, peso_metrics_mean *out, peso_err *err);
/* Index of cut-off k in the list, or -1. */
int peso_metrics_k_index(const int *ks, int n_k, int k);

#endif
