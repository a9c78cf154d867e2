/* InfLoRA's subspace math: closed forms (diagonal covariances, whose
 * eigenvectors are the coordinate axes; covariances built here from a
 * known rotated eigenbasis), hand-computed thresholds of the basis
 * extension, random cases against a power iteration with deflation
 * written here on the projected matrix, and the input errors. The helpers
 * below use plain loops in double, none of the library's BLAS/LAPACK
 * path. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "method/inflora_subspace.h"

#define N_MAX 16

static double dot(const double *x, const double *y, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += x[i] * y[i];
    return s;
}

/* rows orthonormal rows of width n from normal draws, classical
 * Gram-Schmidt applied twice. */
static void random_orthonormal(double *q, int rows, int n, uint64_t seed)
{
    peso_rng rng;
    peso_rng_seed(&rng, seed, 1);
    for (int i = 0; i < rows; i++) {
        double *v = q + i * n;
        for (int c = 0; c < n; c++)
            v[c] = peso_rng_normal(&rng);
        for (int pass = 0; pass < 2; pass++)
            for (int j = 0; j < i; j++) {
                double p = dot(v, q + j * n, n);
                for (int c = 0; c < n; c++)
                    v[c] -= p * q[j * n + c];
            }
        double norm = sqrt(dot(v, v, n));
        for (int c = 0; c < n; c++)
            v[c] /= norm;
    }
}

/* c = sum_i lam[i] q_i^T q_i over the n rows of q. */
static void spectral_cov(const double *q, const double *lam, int n, double *c)
{
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            double s = 0.0;
            for (int i = 0; i < n; i++)
                s += lam[i] * q[i * n + a] * q[i * n + b];
            c[a * n + b] = s;
        }
}

static void diag_cov(const double *d, int n, double *c)
{
    memset(c, 0, sizeof(double) * n * n);
    for (int i = 0; i < n; i++)
        c[i * n + i] = d[i];
}

/* v scaled by +-1 so that its largest-magnitude entry is positive. */
static void sign_fixed(const double *v, int n, double *out)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (fabs(v[i]) > fabs(v[best]))
            best = i;
    double s = v[best] < 0.0 ? -1.0 : 1.0;
    for (int i = 0; i < n; i++)
        out[i] = s * v[i];
}

static void to_float(const double *x, int n, float *out)
{
    for (int i = 0; i < n; i++)
        out[i] = (float)x[i];
}

/* Row i of a equals sign_fixed(e) entry by entry. */
static void assert_row(const float *a, int i, const double *e, int n, double tol)
{
    double want[N_MAX];
    sign_fixed(e, n, want);
    for (int c = 0; c < n; c++)
        cr_assert(fabs(a[i * n + c] - want[c]) <= tol, "row %d entry %d: %.9f, expected %.9f", i, c,
                  a[i * n + c], want[c]);
}

static void assert_axis(const float *a, int i, int axis, int n)
{
    double e[N_MAX] = {0};
    e[axis] = 1.0;
    assert_row(a, i, e, n, 1e-6);
}

static void assert_orthonormal(const float *a, int r, int n, double tol)
{
    for (int i = 0; i < r; i++)
        for (int j = 0; j <= i; j++) {
            double s = 0.0;
            for (int c = 0; c < n; c++)
                s += (double)a[i * n + c] * a[j * n + c];
            cr_assert(fabs(s - (i == j)) <= tol, "rows %d, %d: dot %.3g", i, j, s);
        }
}

static void assert_orthogonal_to(const float *a, int r, const float *m, int k, int n, double tol)
{
    for (int i = 0; i < r; i++)
        for (int j = 0; j < k; j++) {
            double s = 0.0;
            for (int c = 0; c < n; c++)
                s += (double)a[i * n + c] * m[j * n + c];
            cr_assert(fabs(s) <= tol, "row %d vs basis row %d: dot %.3g", i, j, s);
        }
}

/* x^T c x for a float row x. */
static double rayleigh(const double *c, const float *x, int n)
{
    double s = 0.0;
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++)
            s += (double)x[a] * c[a * n + b] * x[b];
    return s;
}

/* p c p with p = I - m^T m, m the k float rows. */
static void project(const double *c, const float *m, int k, int n, double *out)
{
    double p[N_MAX * N_MAX], t[N_MAX * N_MAX];
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            double s = a == b;
            for (int j = 0; j < k; j++)
                s -= (double)m[j * n + a] * m[j * n + b];
            p[a * n + b] = s;
        }
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            double s = 0.0;
            for (int e = 0; e < n; e++)
                s += p[a * n + e] * c[e * n + b];
            t[a * n + b] = s;
        }
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            double s = 0.0;
            for (int e = 0; e < n; e++)
                s += t[a * n + e] * p[e * n + b];
            out[a * n + b] = s;
        }
}

/* The top r eigenpairs of the symmetric PSD s by power iteration, each
 * found pair deflated (s -= lam v v^T) before the next. */
static void power_top(const double *s0, int n, int r, double *vecs, double *vals)
{
    double s[N_MAX * N_MAX], v[N_MAX], w[N_MAX];
    memcpy(s, s0, sizeof(double) * n * n);
    for (int i = 0; i < r; i++) {
        for (int c = 0; c < n; c++)
            v[c] = 1.0 + 0.1 * c;
        double lam = 0.0;
        for (int it = 0; it < 200000; it++) {
            for (int a = 0; a < n; a++)
                w[a] = dot(s + a * n, v, n);
            double norm = sqrt(dot(w, w, n)), diff = 0.0;
            for (int c = 0; c < n; c++) {
                diff = fmax(diff, fabs(w[c] / norm - v[c]));
                v[c] = w[c] / norm;
            }
            lam = norm;
            if (diff < 1e-15)
                break;
        }
        memcpy(vecs + i * n, v, sizeof(double) * n);
        vals[i] = lam;
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++)
                s[a * n + b] -= lam * v[a] * v[b];
    }
}

static void random_spd(double *c, int n, uint64_t seed)
{
    peso_rng rng;
    peso_rng_seed(&rng, seed, 2);
    int rows = 2 * n;
    double g[2 * N_MAX * N_MAX];
    for (int i = 0; i < rows * n; i++)
        g[i] = peso_rng_normal(&rng);
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            double s = 0.0;
            for (int i = 0; i < rows; i++)
                s += g[i * n + a] * g[i * n + b];
            c[a * n + b] = s;
        }
}

Test(inflora, diagonal_gives_axes_by_descending_variance)
{
    double d[5] = {1, 5, 3, 0.5, 4}, c[25];
    float a[15];
    peso_err err;
    diag_cov(d, 5, c);
    cr_assert_eq(peso_inflora_design(c, 5, NULL, 0, 3, a, &err), 0, "%s", err.msg);
    assert_axis(a, 0, 1, 5);
    assert_axis(a, 1, 4, 5);
    assert_axis(a, 2, 2, 5);
}

Test(inflora, rotated_eigenbasis)
{
    enum { N = 8, R = 4 };
    double q[N * N], c[N * N], lam[N] = {10, 7, 5, 3, 2, 1.5, 1, 0.5};
    float a[R * N];
    peso_err err;
    random_orthonormal(q, N, N, 11);
    spectral_cov(q, lam, N, c);
    cr_assert_eq(peso_inflora_design(c, N, NULL, 0, R, a, &err), 0, "%s", err.msg);
    for (int i = 0; i < R; i++) {
        assert_row(a, i, q + i * N, N, 1e-6);
        cr_assert_float_eq(rayleigh(c, a + i * N, N), lam[i], 1e-5);
    }
    assert_orthonormal(a, R, N, 1e-6);
}

Test(inflora, basis_axes_are_avoided)
{
    double d[6] = {9, 8, 7, 6, 5, 4}, c[36];
    float m[12] = {0}, a[18];
    peso_err err;
    diag_cov(d, 6, c);
    m[0] = 1.0f;     /* e0 */
    m[6 + 2] = 1.0f; /* e2 */
    cr_assert_eq(peso_inflora_design(c, 6, m, 2, 3, a, &err), 0, "%s", err.msg);
    assert_axis(a, 0, 1, 6);
    assert_axis(a, 1, 3, 6);
    assert_axis(a, 2, 4, 6);
    assert_orthogonal_to(a, 3, m, 2, 6, 1e-6);
}

/* With eigenvectors 0 and 2 as the basis, the design is eigenvectors 1, 3
 * and 4 of the unprojected covariance. */
Test(inflora, rotated_basis_skips_its_eigenvectors)
{
    enum { N = 8, R = 3 };
    double q[N * N], c[N * N], lam[N] = {10, 7, 5, 3, 2, 1.5, 1, 0.5};
    float m[2 * N], a[R * N];
    peso_err err;
    random_orthonormal(q, N, N, 12);
    spectral_cov(q, lam, N, c);
    to_float(q, N, m);
    to_float(q + 2 * N, N, m + N);
    cr_assert_eq(peso_inflora_design(c, N, m, 2, R, a, &err), 0, "%s", err.msg);
    assert_row(a, 0, q + 1 * N, N, 1e-5);
    assert_row(a, 1, q + 3 * N, N, 1e-5);
    assert_row(a, 2, q + 4 * N, N, 1e-5);
    assert_orthonormal(a, R, N, 1e-6);
    assert_orthogonal_to(a, R, m, 2, N, 1e-6);
}

/* One excited direction: the rows past it come from the null space of
 * P C P and must still avoid the basis. */
Test(inflora, rank_deficient_rows_stay_off_the_basis)
{
    double d[5] = {0, 0, 5, 0, 0}, c[25];
    float m[5] = {1, 0, 0, 0, 0}, a[15];
    peso_err err;
    diag_cov(d, 5, c);
    cr_assert_eq(peso_inflora_design(c, 5, m, 1, 3, a, &err), 0, "%s", err.msg);
    assert_axis(a, 0, 2, 5);
    assert_orthonormal(a, 3, 5, 1e-6);
    for (int i = 1; i < 3; i++) {
        cr_assert(fabs(a[i * 5 + 0]) <= 1e-6, "row %d on the basis axis: %g", i, a[i * 5]);
        cr_assert(fabs(a[i * 5 + 2]) <= 1e-6, "row %d on the excited axis: %g", i, a[i * 5 + 2]);
    }
}

/* Rank-2 covariance on a rotated eigenbasis q, basis q2, q3 and every
 * free direction asked for: the two null directions of P C P that are
 * returned must be the complement's (span q4, q5), not the basis'. */
Test(inflora, null_space_rows_stay_off_rotated_basis)
{
    enum { N = 6, K = 2, R = N - K };
    double q[N * N], c[N * N], lam[N] = {5, 3, 0, 0, 0, 0};
    float m[K * N], a[R * N], qf[N * N];
    peso_err err;
    random_orthonormal(q, N, N, 13);
    spectral_cov(q, lam, N, c);
    to_float(q + 2 * N, K * N, m);
    to_float(q, N * N, qf);
    cr_assert_eq(peso_inflora_design(c, N, m, K, R, a, &err), 0, "%s", err.msg);
    assert_row(a, 0, q, N, 1e-5);
    assert_row(a, 1, q + N, N, 1e-5);
    assert_orthonormal(a, R, N, 1e-6);
    assert_orthogonal_to(a, R, m, K, N, 1e-6);
    assert_orthogonal_to(a + 2 * N, 2, qf, 2, N, 1e-6);
}

/* Random SPD covariance and random basis: the design against power
 * iteration on the explicitly projected matrix. */
static void check_random(int n, int k, int r, uint64_t seed)
{
    double c[N_MAX * N_MAX], s[N_MAX * N_MAX], qb[N_MAX * N_MAX], vecs[N_MAX * N_MAX], vals[N_MAX];
    float m[N_MAX * N_MAX], a[N_MAX * N_MAX], again[N_MAX * N_MAX];
    peso_err err;
    random_spd(c, n, seed);
    random_orthonormal(qb, k, n, seed + 100);
    to_float(qb, k * n, m);
    project(c, m, k, n, s);
    power_top(s, n, r + 1, vecs, vals);
    for (int i = 0; i < r; i++)
        cr_assert(vals[i] - vals[i + 1] > 1e-2 * vals[0], "seed %llu: eigenvalues %d, %d too close",
                  (unsigned long long)seed, i, i + 1);
    cr_assert_eq(peso_inflora_design(c, n, m, k, r, a, &err), 0, "%s", err.msg);
    for (int i = 0; i < r; i++) {
        assert_row(a, i, vecs + i * n, n, 1e-5);
        cr_assert(fabs(rayleigh(s, a + i * n, n) - vals[i]) <= 1e-5 * vals[0], "row %d eigenvalue", i);
    }
    assert_orthonormal(a, r, n, 1e-6);
    assert_orthogonal_to(a, r, m, k, n, 1e-6);
    cr_assert_eq(peso_inflora_design(c, n, m, k, r, again, &err), 0, "%s", err.msg);
    cr_assert_eq(memcmp(a, again, sizeof(float) * r * n), 0, "two runs differ");
}

Test(inflora, random_spd_matches_power_iteration)
{
    check_random(12, 0, 4, 21);
    check_random(12, 3, 4, 22);
    check_random(16, 9, 5, 23);
}

Test(inflora, sign_convention_largest_entry_positive)
{
    enum { N = 10, R = 6 };
    double c[N * N];
    float a[R * N];
    peso_err err;
    random_spd(c, N, 31);
    cr_assert_eq(peso_inflora_design(c, N, NULL, 0, R, a, &err), 0, "%s", err.msg);
    for (int i = 0; i < R; i++) {
        int best = 0;
        for (int j = 1; j < N; j++)
            if (fabsf(a[i * N + j]) > fabsf(a[i * N + best]))
                best = j;
        cr_assert_gt(a[i * N + best], 0.0f, "row %d", i);
    }
}

/* Spectrum 8, 4, 2, 1, 1 (trace 16) on a rotated eigenbasis. */
static void spectrum_84211(double *q, double *c)
{
    double lam[5] = {8, 4, 2, 1, 1};
    random_orthonormal(q, 5, 5, 41);
    spectral_cov(q, lam, 5, c);
}

static int extend_count(const double *c, int k0, const float *start, int max_k, double threshold,
                        float *basis)
{
    peso_err err;
    int k = k0;
    memset(basis, 0, sizeof(float) * 25);
    if (k0 > 0)
        memcpy(basis, start, sizeof(float) * 5 * k0);
    cr_assert_eq(peso_inflora_extend(c, 5, basis, &k, max_k, threshold, &err), 0, "%s", err.msg);
    return k;
}

Test(inflora, extend_stops_at_threshold)
{
    double q[25], c[25];
    float b[25];
    spectrum_84211(q, c);
    /* 8/16 < 0.7 <= 12/16 */
    cr_assert_eq(extend_count(c, 0, NULL, 5, 0.7, b), 2);
    assert_row(b, 0, q, 5, 1e-5);
    assert_row(b, 1, q + 5, 5, 1e-5);
    assert_orthonormal(b, 2, 5, 1e-6);
    /* boundaries are "at least": 8/16 = 0.5, 12/16 = 0.75 */
    cr_assert_eq(extend_count(c, 0, NULL, 5, 0.5, b), 1);
    cr_assert_eq(extend_count(c, 0, NULL, 5, 0.49, b), 1);
    cr_assert_eq(extend_count(c, 0, NULL, 5, 0.75, b), 2);
    cr_assert_eq(extend_count(c, 0, NULL, 5, 0.76, b), 3);
    cr_assert_eq(extend_count(c, 0, NULL, 5, 0.9, b), 4);
    cr_assert_eq(extend_count(c, 0, NULL, 5, 1.0, b), 5);
    assert_orthonormal(b, 5, 5, 1e-6);
}

/* Exact boundaries 8/16, 12/16, 14/16, 15/16 and 16/16 on several
 * rotations, whose eigenvalues and trace carry different rounding: "at
 * least" must hold at double precision. */
Test(inflora, extend_boundaries_survive_rounding)
{
    double lam[5] = {8, 4, 2, 1, 1}, q[25], c[25];
    double th[5] = {0.5, 0.75, 0.875, 0.9375, 1.0};
    float b[25];
    for (uint64_t seed = 60; seed < 76; seed++) {
        random_orthonormal(q, 5, 5, seed);
        spectral_cov(q, lam, 5, c);
        for (int i = 0; i < 5; i++)
            cr_assert_eq(extend_count(c, 0, NULL, 5, th[i], b), i + 1, "seed %llu threshold %g",
                         (unsigned long long)seed, th[i]);
    }
}

/* Rank 2 on rotated axes: threshold 1 memorises exactly the two excited
 * directions, whatever the rounding of the zero eigenvalues. */
Test(inflora, extend_rank_deficient_rotated)
{
    double lam[5] = {3, 1, 0, 0, 0}, q[25], c[25];
    float b[25];
    for (uint64_t seed = 80; seed < 96; seed++) {
        random_orthonormal(q, 5, 5, seed);
        spectral_cov(q, lam, 5, c);
        cr_assert_eq(extend_count(c, 0, NULL, 5, 1.0, b), 2, "seed %llu", (unsigned long long)seed);
        assert_row(b, 0, q, 5, 1e-5);
        assert_row(b, 1, q + 5, 5, 1e-5);
    }
}

Test(inflora, extend_respects_capacity)
{
    double q[25], c[25];
    float b[25];
    spectrum_84211(q, c);
    cr_assert_eq(extend_count(c, 0, NULL, 1, 0.7, b), 1);
    assert_row(b, 0, q, 5, 1e-5);
    cr_assert_eq(extend_count(c, 0, NULL, 3, 1.0, b), 3);
    for (int e = 15; e < 25; e++)
        cr_assert_eq(b[e], 0.0f, "row past capacity written at %d", e);
}

/* From the top eigenvector as the basis, P C P has spectrum 4, 2, 1, 1
 * (trace 8). */
Test(inflora, extend_from_existing_basis)
{
    double q[25], c[25], top[5];
    float start[5], b[25];
    spectrum_84211(q, c);
    sign_fixed(q, 5, top);
    to_float(top, 5, start);
    /* 4/8 < 0.6 <= 6/8 */
    cr_assert_eq(extend_count(c, 1, start, 5, 0.6, b), 3);
    cr_assert_eq(memcmp(b, start, sizeof start), 0, "existing row changed");
    assert_row(b, 1, q + 5, 5, 1e-5);
    assert_row(b, 2, q + 10, 5, 1e-5);
    assert_orthonormal(b, 3, 5, 1e-6);
    /* 4/8 = 0.5 exactly */
    cr_assert_eq(extend_count(c, 1, start, 5, 0.5, b), 2);
    /* full: nothing to do, nothing touched */
    int k = 5;
    peso_err err;
    float before[25];
    for (int e = 0; e < 25; e++)
        b[e] = before[e] = (float)e;
    cr_assert_eq(peso_inflora_extend(c, 5, b, &k, 5, 0.9, &err), 0, "%s", err.msg);
    cr_assert_eq(k, 5);
    cr_assert_eq(memcmp(b, before, sizeof before), 0);
}

/* Directions that carry none of C's energy are not memorised. */
Test(inflora, extend_skips_zero_energy)
{
    double d[5] = {3, 1, 0, 0, 0}, c[25];
    float b[25];
    diag_cov(d, 5, c);
    cr_assert_eq(extend_count(c, 0, NULL, 5, 1.0, b), 2);
    assert_axis(b, 0, 0, 5);
    assert_axis(b, 1, 1, 5);
}

/* Two stages as the trainer runs them: extend after stage 1 with
 * max_k = in - r, then design stage 2 against the grown basis. */
Test(inflora, extend_then_design)
{
    enum { N = 10, R = 3 };
    double c1[N * N], c2[N * N], s[N * N], vecs[(R + 1) * N], vals[R + 1];
    float b[N * N] = {0}, a[R * N];
    peso_err err;
    int k = 0;
    random_spd(c1, N, 51);
    random_spd(c2, N, 52);
    cr_assert_eq(peso_inflora_extend(c1, N, b, &k, N - R, 0.6, &err), 0, "%s", err.msg);
    cr_assert(k >= 1 && k <= N - R, "k = %d", k);
    assert_orthonormal(b, k, N, 1e-6);
    cr_assert_eq(peso_inflora_extend(c2, N, b, &k, N - R, 0.999, &err), 0, "%s", err.msg);
    cr_assert_eq(k, N - R);
    assert_orthonormal(b, k, N, 1e-6);
    cr_assert_eq(peso_inflora_design(c2, N, b, k, R, a, &err), 0, "%s", err.msg);
    assert_orthogonal_to(a, R, b, k, N, 1e-6);
    assert_orthonormal(a, R, N, 1e-6);
    project(c2, b, k, N, s);
    power_top(s, N, R, vecs, vals);
    for (int i = 0; i < R; i++)
        cr_assert(fabs(rayleigh(s, a + i * N, N) - vals[i]) <= 1e-5 * vals[0], "row %d eigenvalue", i);
}

Test(inflora, design_errors)
{
    double d[5] = {1, 2, 3, 4, 5}, c[25];
    float m[30] = {0}, a[25];
    peso_err err;
    diag_cov(d, 5, c);
    m[0] = 1.0f;
    m[6] = 1.0f;
    cr_assert_eq(peso_inflora_design(c, 5, m, 2, 4, a, &err), -1);
    cr_assert(strstr(err.msg, "rank 4") && strstr(err.msg, "width 5") && strstr(err.msg, "leaves 3"), "%s",
              err.msg);
    cr_assert_eq(peso_inflora_design(c, 5, m, 6, 1, a, &err), -1);
    cr_assert(strstr(err.msg, "6 rows") && strstr(err.msg, "0..5"), "%s", err.msg);
    cr_assert_eq(peso_inflora_design(c, 5, m, 2, 0, a, &err), -1);
    cr_assert_eq(peso_inflora_design(c, 0, m, 0, 1, a, &err), -1);
    cr_assert(strstr(err.msg, "width 0"), "%s", err.msg);

    m[6] = 2.0f; /* row 1 = 2 e1 */
    cr_assert_eq(peso_inflora_design(c, 5, m, 2, 1, a, &err), -1);
    cr_assert(strstr(err.msg, "row 1 has norm 2"), "%s", err.msg);
    m[5] = m[6] = 0.70710678f; /* row 1 = (e0 + e1) / sqrt 2 */
    cr_assert_eq(peso_inflora_design(c, 5, m, 2, 1, a, &err), -1);
    cr_assert(strstr(err.msg, "rows 0 and 1"), "%s", err.msg);

    c[1] = 0.5; /* (0,1) without (1,0) */
    cr_assert_eq(peso_inflora_design(c, 5, NULL, 0, 1, a, &err), -1);
    cr_assert(strstr(err.msg, "(0,1)") && strstr(err.msg, "symmetric"), "%s", err.msg);
    c[1] = 0.0;
    c[2 * 5 + 2] = -1.0;
    cr_assert_eq(peso_inflora_design(c, 5, NULL, 0, 1, a, &err), -1);
    cr_assert(strstr(err.msg, "(2,2)"), "%s", err.msg);
    c[2 * 5 + 2] = NAN;
    cr_assert_eq(peso_inflora_design(c, 5, NULL, 0, 1, a, &err), -1);
    cr_assert(strstr(err.msg, "(2,2)"), "%s", err.msg);
}

Test(inflora, extend_errors)
{
    double d[5] = {1, 2, 3, 4, 5}, c[25];
    float b[25] = {0};
    peso_err err;
    int k = 0;
    diag_cov(d, 5, c);
    cr_assert_eq(peso_inflora_extend(c, 5, b, &k, 5, 0.0, &err), -1);
    cr_assert(strstr(err.msg, "threshold 0"), "%s", err.msg);
    cr_assert_eq(peso_inflora_extend(c, 5, b, &k, 5, 1.5, &err), -1);
    cr_assert_eq(peso_inflora_extend(c, 5, b, &k, 5, NAN, &err), -1);
    cr_assert_eq(peso_inflora_extend(c, 5, b, &k, 6, 0.5, &err), -1);
    cr_assert(strstr(err.msg, "capacity 6"), "%s", err.msg);
    k = 3;
    cr_assert_eq(peso_inflora_extend(c, 5, b, &k, 2, 0.5, &err), -1);
    cr_assert(strstr(err.msg, "current 3"), "%s", err.msg);
    k = 6;
    cr_assert_eq(peso_inflora_extend(c, 5, b, &k, 5, 0.5, &err), -1);
    /* a zero row is not a basis: refused, and nothing written */
    k = 1;
    cr_assert_eq(peso_inflora_extend(c, 5, b, &k, 5, 0.5, &err), -1);
    cr_assert(strstr(err.msg, "row 0 has norm 0"), "%s", err.msg);
    cr_assert_eq(k, 1);
    for (int e = 0; e < 25; e++)
        cr_assert_eq(b[e], 0.0f);
}
