/* Hit@k and NDCG@k against hand-computed values, merging of partial sums,
 * averaging over stages. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "common/rng.h"
#include "eval/metrics.h"

static peso_metrics_mean one_user(int rank)
{
    peso_metrics m;
    peso_metrics_mean r;
    peso_err err;
    peso_metrics_init_default(&m);
    peso_metrics_add(&m, rank);
    cr_assert_eq(peso_metrics_final(&m, &r, &err), 0, "%s", err.msg);
    cr_assert_eq(r.users, 1);
    cr_assert_eq(r.n_k, 2);
    cr_assert_eq(r.k[0], 5);
    cr_assert_eq(r.k[1], 10);
    return r;
}

Test(metrics, hand_cases)
{
    peso_metrics_mean r = one_user(1);
    cr_assert_float_eq(r.hit[0], 1.0, 0);
    cr_assert_float_eq(r.ndcg[0], 1.0, 1e-15);
    cr_assert_float_eq(r.ndcg[1], 1.0, 1e-15);

    r = one_user(3); /* 1 / log2(4) */
    cr_assert_float_eq(r.hit[0], 1.0, 0);
    cr_assert_float_eq(r.ndcg[0], 0.5, 1e-15);
    cr_assert_float_eq(r.ndcg[1], 0.5, 1e-15);

    r = one_user(6); /* outside the top 5, inside the top 10 */
    cr_assert_float_eq(r.hit[0], 0.0, 0);
    cr_assert_float_eq(r.ndcg[0], 0.0, 0);
    cr_assert_float_eq(r.hit[1], 1.0, 0);
    cr_assert_float_eq(r.ndcg[1], 0.35620718710802218, 1e-15); /* 1 / log2(7) */

    r = one_user(5); /* the last position that counts for k = 5: 1 / log2(6) */
    cr_assert_float_eq(r.hit[0], 1.0, 0);
    cr_assert_float_eq(r.ndcg[0], 0.38685280723454163, 1e-15);

    r = one_user(0); /* a miss */
    for (int i = 0; i < 2; i++) {
        cr_assert_float_eq(r.hit[i], 0.0, 0);
        cr_assert_float_eq(r.ndcg[i], 0.0, 0);
    }
    r = one_user(11); /* past every cut-off */
    cr_assert_float_eq(r.hit[1], 0.0, 0);
    cr_assert_float_eq(r.ndcg[1], 0.0, 0);
}

Test(metrics, several_users_average)
{
    /* ranks 1, 3, 6, miss: Hit@5 = 2/4, Hit@10 = 3/4,
     * NDCG@5 = (1 + 0.5) / 4, NDCG@10 = (1 + 0.5 + 1/log2(7)) / 4 */
    peso_metrics m;
    peso_metrics_mean r;
    peso_err err;
    peso_metrics_init_default(&m);
    const int ranks[] = {1, 3, 6, 0};
    for (int i = 0; i < 4; i++)
        peso_metrics_add(&m, ranks[i]);
    cr_assert_eq(peso_metrics_final(&m, &r, &err), 0, "%s", err.msg);
    cr_assert_eq(r.users, 4);
    cr_assert_float_eq(r.hit[0], 0.5, 0);
    cr_assert_float_eq(r.hit[1], 0.75, 0);
    cr_assert_float_eq(r.ndcg[0], 0.375, 1e-15);
    cr_assert_float_eq(r.ndcg[1], 0.46405179677700555, 1e-15);
}

Test(metrics, ranks_of_ids_and_tuples)
{
    const int32_t leaves[] = {40, 7, 13, 7};
    cr_assert_eq(peso_metrics_rank(leaves, 4, 40), 1);
    cr_assert_eq(peso_metrics_rank(leaves, 4, 7), 2); /* a repeat: the first position counts */
    cr_assert_eq(peso_metrics_rank(leaves, 4, 13), 3);
    cr_assert_eq(peso_metrics_rank(leaves, 4, 8), 0);
    cr_assert_eq(peso_metrics_rank(leaves, 2, 13), 0); /* beyond the list */
    const int32_t tuples[] = {1, 2, 3, 4, 1, 2, 3, 5, 9, 9, 9, 9};
    const int32_t t5[] = {1, 2, 3, 5}, t9[] = {9, 9, 9, 9}, other[] = {1, 2, 4, 5};
    cr_assert_eq(peso_metrics_rank_tuples(tuples, 3, 4, t5), 2);
    cr_assert_eq(peso_metrics_rank_tuples(tuples, 3, 4, t9), 3);
    cr_assert_eq(peso_metrics_rank_tuples(tuples, 3, 4, other), 0);
}

Test(metrics, configurable_cutoffs)
{
    const int k[] = {1, 3, 20};
    peso_metrics m;
    peso_metrics_mean r;
    peso_err err;
    cr_assert_eq(peso_metrics_init(&m, k, 3, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_metrics_n_sums(&m), 7);
    peso_metrics_add(&m, 2);  /* 1 / log2(3) for k >= 3 */
    peso_metrics_add(&m, 20); /* 1 / log2(21) for k = 20 */
    cr_assert_eq(peso_metrics_final(&m, &r, &err), 0, "%s", err.msg);
    cr_assert_float_eq(r.hit[0], 0.0, 0);
    cr_assert_float_eq(r.hit[1], 0.5, 0);
    cr_assert_float_eq(r.hit[2], 1.0, 0);
    cr_assert_float_eq(r.ndcg[1], 0.63092975357145743 / 2, 1e-15);
    cr_assert_float_eq(r.ndcg[2], (0.63092975357145743 + 0.22767024869695298) / 2, 1e-15);
    cr_assert_eq(peso_metrics_k_index(r.k, r.n_k, 20), 2);
    cr_assert_eq(peso_metrics_k_index(r.k, r.n_k, 10), -1);
}

Test(metrics, bad_cutoffs_and_no_users)
{
    peso_metrics m;
    peso_metrics_mean r;
    peso_err err = {{0}};
    const int down[] = {10, 5}, zero[] = {0};
    cr_assert_eq(peso_metrics_init(&m, down, 2, &err), -1);
    cr_assert(strstr(err.msg, "cut-off 1 is k = 5 after k = 10, expected strictly ascending"), "%s", err.msg);
    cr_assert_eq(peso_metrics_init(&m, zero, 1, &err), -1);
    cr_assert(strstr(err.msg, "k = 0, expected k >= 1"), "%s", err.msg);
    cr_assert_eq(peso_metrics_init(&m, down, 0, &err), -1);
    cr_assert_eq(peso_metrics_init(&m, down, PESO_METRICS_MAX_K + 1, &err), -1);
    peso_metrics_init_default(&m);
    cr_assert_eq(peso_metrics_final(&m, &r, &err), -1);
    cr_assert(strstr(err.msg, "no users"), "%s", err.msg);
    const int k5[] = {5};
    peso_metrics other;
    cr_assert_eq(peso_metrics_init(&other, k5, 1, &err), 0);
    cr_assert_eq(peso_metrics_merge(&m, &other, &err), -1);
    cr_assert(strstr(err.msg, "cut-offs"), "%s", err.msg);
}

/* Users split over 3 "ranks": merged sums (also as one flat reduction of
 * peso_metrics_sums) equal the sums over all users. */
Test(metrics, merged_partial_sums_equal_the_whole)
{
    enum { USERS = 1000, PARTS = 3 };
    peso_rng r;
    peso_rng_seed(&r, 5, 1);
    peso_metrics whole, part[PARTS], merged, flat;
    peso_err err;
    peso_metrics_init_default(&whole);
    for (int p = 0; p < PARTS; p++)
        peso_metrics_init_default(&part[p]);
    int hits5 = 0, hits10 = 0;
    for (int u = 0; u < USERS; u++) {
        int rank = (int)peso_rng_below(&r, 14); /* 0 (miss) .. 13 */
        hits5 += rank >= 1 && rank <= 5;
        hits10 += rank >= 1 && rank <= 10;
        peso_metrics_add(&whole, rank);
        peso_metrics_add(&part[u % PARTS], rank);
    }
    peso_metrics_init_default(&merged);
    peso_metrics_init_default(&flat);
    for (int p = 0; p < PARTS; p++) {
        cr_assert_eq(peso_metrics_merge(&merged, &part[p], &err), 0, "%s", err.msg);
        double *dst = peso_metrics_sums(&flat), *src = peso_metrics_sums(&part[p]);
        for (int i = 0; i < peso_metrics_n_sums(&flat); i++)
            dst[i] += src[i];
    }
    peso_metrics_mean a, b, c;
    cr_assert_eq(peso_metrics_final(&whole, &a, &err), 0);
    cr_assert_eq(peso_metrics_final(&merged, &b, &err), 0);
    cr_assert_eq(peso_metrics_final(&flat, &c, &err), 0);
    cr_assert_eq(b.users, USERS);
    cr_assert_eq(c.users, USERS);
    cr_assert_float_eq(a.hit[0], (double)hits5 / USERS, 0);
    cr_assert_float_eq(a.hit[1], (double)hits10 / USERS, 0);
    for (int i = 0; i < 2; i++) {
        cr_assert_float_eq(b.hit[i], a.hit[i], 0); /* integer sums: exact */
        cr_assert_float_eq(b.ndcg[i], a.ndcg[i], 1e-13);
        cr_assert_float_eq(c.ndcg[i], b.ndcg[i], 0);
    }
}

Test(metrics, average_over_stages)
{
    /* stage A: ranks 1, 0 -> Hit@5 0.5, NDCG@5 0.5; stage B: rank 3 ->
     * 1, 0.5; stage C: 3 misses -> 0. Unweighted: Hit@5 = 1.5 / 3,
     * NDCG@5 = 1 / 3. Users are summed: 2 + 1 + 3. */
    peso_metrics m[3];
    peso_metrics_mean s[3], avg;
    peso_err err;
    const int ranks[3][3] = {{1, 0, -1}, {3, -1, -1}, {0, 0, 0}};
    const int n[3] = {2, 1, 3};
    for (int st = 0; st < 3; st++) {
        peso_metrics_init_default(&m[st]);
        for (int u = 0; u < n[st]; u++)
            peso_metrics_add(&m[st], ranks[st][u]);
        cr_assert_eq(peso_metrics_final(&m[st], &s[st], &err), 0, "%s", err.msg);
    }
    cr_assert_eq(peso_metrics_average(s, 3, &avg, &err), 0, "%s", err.msg);
    cr_assert_eq(avg.users, 6);
    cr_assert_float_eq(avg.hit[0], 0.5, 1e-15);
    cr_assert_float_eq(avg.ndcg[0], 1.0 / 3, 1e-15);
    cr_assert_float_eq(avg.hit[1], 0.5, 1e-15);
    cr_assert_float_eq(avg.ndcg[1], 1.0 / 3, 1e-15);
    /* one stage averages to itself */
    cr_assert_eq(peso_metrics_average(s + 1, 1, &avg, &err), 0);
    cr_assert_float_eq(avg.ndcg[0], 0.5, 0);
    cr_assert_eq(peso_metrics_average(s, 0, &avg, &err), -1);
    s[2].k[1] = 20;
    cr_assert_eq(peso_metrics_average(s, 3, &avg, &err), -1);
    cr_assert(strstr(err.msg, "stage 2"), "%s", err.msg);
}
