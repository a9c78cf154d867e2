#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "semid/kmeans.h"

static int has_center(const float *c, int k, int d, const float *p)
{
    for (int i = 0; i < k; i++)
        if (memcmp(c + (size_t)i * d, p, (size_t)d * sizeof *p) == 0)
            return 1;
    return 0;
}

static void assert_distinct(const float *c, int k, int d)
{
    for (int i = 0; i < k; i++) {
        for (int j = 0; j < d; j++)
            cr_assert(isfinite(c[(size_t)i * d + j]));
        for (int j = 0; j < i; j++)
            cr_assert(memcmp(c + (size_t)i * d, c + (size_t)j * d, (size_t)d * sizeof *c) != 0,
                      "centers %d and %d are equal", i, j);
    }
}

/* Three tight groups far apart: the centers are the group means. */
Test(kmeans, separated_groups_give_their_means)
{
    const float x[] = {0,   0,  1,   0,  0,  1,          /* mean (1/3, 1/3) */
                       10,  10, 11,  10, 10, 12, 11, 12, /* mean (10.5, 11) */
                       -10, 5,  -12, 5};                 /* mean (-11, 5) */
    const double want[3][2] = {{1.0 / 3, 1.0 / 3}, {10.5, 11.0}, {-11.0, 5.0}};
    for (uint64_t seed = 1; seed <= 5; seed++) {
        peso_rng r;
        peso_rng_seed(&r, seed, 0);
        float c[6];
        peso_kmeans(x, 9, 2, 3, 10, &r, c);
        for (int g = 0; g < 3; g++) {
            int hit = 0;
            for (int i = 0; i < 3; i++)
                hit += fabs(c[2 * i] - want[g][0]) < 1e-5 && fabs(c[2 * i + 1] - want[g][1]) < 1e-5;
            cr_assert_eq(hit, 1, "seed %llu group %d", (unsigned long long)seed, g);
        }
    }
}

Test(kmeans, fewer_distinct_points_than_codes)
{
    const float x[] = {1, 2, 1, 2, 1, 2, 5, -1, 5, -1, 5, -1};
    peso_rng r;
    peso_rng_seed(&r, 7, 0);
    float c[10];
    peso_kmeans(x, 6, 2, 5, 10, &r, c);
    assert_distinct(c, 5, 2);
    cr_assert(has_center(c, 5, 2, x));
    cr_assert(has_center(c, 5, 2, x + 6));
}

Test(kmeans, single_point_and_all_zero)
{
    const float one[] = {3, -4, 0.5f};
    float c[4 * 3];
    peso_rng r;
    peso_rng_seed(&r, 1, 0);
    peso_kmeans(one, 1, 3, 4, 5, &r, c);
    assert_distinct(c, 4, 3);
    cr_assert(has_center(c, 4, 3, one));
    for (int i = 0; i < 12; i++)
        cr_assert(fabsf(c[i] - one[i % 3]) < 0.05f);
    const float zero[9] = {0};
    peso_kmeans(zero, 3, 3, 4, 5, &r, c);
    assert_distinct(c, 4, 3);
}

Test(kmeans, deterministic_for_a_seed)
{
    float x[200 * 4];
    peso_rng g;
    peso_rng_seed(&g, 3, 1);
    for (int i = 0; i < 800; i++)
        x[i] = (float)peso_rng_normal(&g);
    float a[16 * 4], b[16 * 4];
    peso_rng r1, r2;
    peso_rng_seed(&r1, 11, 0);
    peso_rng_seed(&r2, 11, 0);
    peso_kmeans(x, 200, 4, 16, 20, &r1, a);
    peso_kmeans(x, 200, 4, 16, 20, &r2, b);
    cr_assert(memcmp(a, b, sizeof a) == 0);
}

Test(kmeans, assign_matches_brute_force)
{
    enum { N = 700, D = 5, K = 37 };
    float *x = malloc(N * D * sizeof *x), c[K * D];
    peso_rng g;
    peso_rng_seed(&g, 5, 1);
    for (int i = 0; i < N * D; i++)
        x[i] = (float)peso_rng_normal(&g);
    for (int i = 0; i < K * D; i++)
        c[i] = (float)peso_rng_normal(&g);
    int32_t a[N];
    peso_kmeans_assign(x, N, D, c, K, a);
    for (int i = 0; i < N; i++) {
        double best = INFINITY, got = 0;
        for (int k = 0; k < K; k++) {
            double s = 0;
            for (int j = 0; j < D; j++)
                s += ((double)x[i * D + j] - c[k * D + j]) * ((double)x[i * D + j] - c[k * D + j]);
            if (s < best)
                best = s;
            if (k == a[i])
                got = s;
        }
        cr_assert(got <= best + 1e-4, "point %d: assigned distance %g, best %g", i, got, best);
    }
    free(x);
}

Test(kmeans, ties_go_to_the_lowest_index)
{
    const float c[] = {5, 5, 1, 1, 1, 1};
    const float x[] = {1, 1};
    int32_t a;
    peso_kmeans_assign(x, 1, 2, c, 3, &a);
    cr_assert_eq(a, 1);
}
