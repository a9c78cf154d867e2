#include "semid/kmeans.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

/* Rows per matrix product in peso_kmeans_assign: bounds the distance
 * buffer at KMEANS_CHUNK x k floats. */
#define KMEANS_CHUNK 512

static double sqdist(const float *a, const float *b, int d)
{
    double s = 0.0;
    for (int j = 0; j < d; j++) {
        double t = (double)a[j] - (double)b[j];
        s += t * t;
    }
    return s;
}

void peso_kmeans_assign(const float *x, size_t n, int d, const float *centers, int k, int32_t *assign)
{
    float *cn = peso_malloc((size_t)k * sizeof *cn);
    float *dot = peso_malloc((size_t)KMEANS_CHUNK * (size_t)k * sizeof *dot);
    for (int c = 0; c < k; c++) {
        double s = 0.0;
        for (int j = 0; j < d; j++)
            s += (double)centers[(size_t)c * d + j] * centers[(size_t)c * d + j];
        cn[c] = (float)s;
    }
    for (size_t i0 = 0; i0 < n; i0 += KMEANS_CHUNK) {
        size_t m = n - i0 < KMEANS_CHUNK ? n - i0 : KMEANS_CHUNK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, k, d, 1.0f, x + i0 * (size_t)d, d,
                    centers, d, 0.0f, dot, k);
        for (size_t i = 0; i < m; i++) {
            const float *row = dot + i * (size_t)k;
            int best = 0;
            float bd = cn[0] - 2.0f * row[0];
            for (int c = 1; c < k; c++) {
                float v = cn[c] - 2.0f * row[c];
                if (v < bd) {
                    bd = v;
                    best = c;
                }
            }
            assign[i0 + i] = best;
        }
    }
    free(dot);
    free(cn);
}

static double rms(const float *x, size_t n, int d)
{
    double s = 0.0;
    for (size_t i = 0; i < n * (size_t)d; i++)
        s += (double)x[i] * x[i];
    return sqrt(s / (double)(n * (size_t)d));
}

/* Point index drawn with probability proportional to d2 (total > 0). */
static size_t draw_weighted(const double *d2, size_t n, double total, peso_rng *rng)
{
    double u = peso_rng_uniform(rng) * total, cum = 0.0;
    size_t last = 0;
    for (size_t i = 0; i < n; i++) {
        if (d2[i] <= 0.0)
            continue;
        cum += d2[i];
        last = i;
        if (cum > u)
            return i;
    }
    return last; /* rounding left u at the very end */
}

/* Potential sum_i min(d2[i], |x_i - c|^2) if c became a center; with
 * keep, d2 is updated to it. */
static double potential_with(const float *x, size_t n, int d, const float *c, double *d2, int keep)
{
    double total = 0.0;
    for (size_t i = 0; i < n; i++) {
        double v = sqdist(x + i * (size_t)d, c, d);
        if (v > d2[i])
            v = d2[i];
        if (keep)
            d2[i] = v;
        total += v;
    }
    return total;
}

/* Greedy k-means++ (as scikit-learn): each new center is the best of
 * 2 + ln k candidates drawn proportionally to the squared distance, which
 * avoids most of plain k-means++'s seedings with two centers in one
 * cluster and one center for two. */
static void seed_plusplus(const float *x, size_t n, int d, int k, peso_rng *rng, float *centers)
{
    double *d2 = peso_malloc(n * sizeof *d2);
    double jitter = 1e-3 * (rms(x, n, d) > 0.0 ? rms(x, n, d) : 1.0);
    int trials = 2 + (int)log((double)k);
    size_t first = (size_t)peso_rng_below(rng, n);
    memcpy(centers, x + first * (size_t)d, (size_t)d * sizeof *centers);
    double total = 0.0;
    for (size_t i = 0; i < n; i++) {
        d2[i] = sqdist(x + i * (size_t)d, centers, d);
        total += d2[i];
    }
    for (int c = 1; c < k; c++) {
        float *cc = centers + (size_t)c * d;
        if (total > 0.0) {
            size_t best = 0;
            double best_pot = INFINITY;
            for (int t = 0; t < trials; t++) {
                size_t cand = draw_weighted(d2, n, total, rng);
                double pot = potential_with(x, n, d, x + cand * (size_t)d, d2, 0);
                if (pot < best_pot) {
                    best_pot = pot;
                    best = cand;
                }
            }
            memcpy(cc, x + best * (size_t)d, (size_t)d * sizeof *cc);
        } else {
            /* Every point is already a center: fewer distinct points than
             * codes. A jittered copy keeps the codes distinct. */
            const float *p = x + (size_t)peso_rng_below(rng, n) * (size_t)d;
            for (int j = 0; j < d; j++)
                cc[j] = (float)(p[j] + jitter * peso_rng_normal(rng));
        }
        total = potential_with(x, n, d, cc, d2, 1);
    }
    free(d2);
}

/* Moves every non-empty cluster's center to its mean (summed in point
 * order, so the result does not depend on anything but the input). */
static void update_means(const float *x, size_t n, int d, int k, const int32_t *assign, float *centers)
{
    double *sum = peso_calloc((size_t)k * (size_t)d, sizeof *sum);
    size_t *cnt = peso_calloc((size_t)k, sizeof *cnt);
    for (size_t i = 0; i < n; i++) {
        double *s = sum + (size_t)assign[i] * d;
        for (int j = 0; j < d; j++)
            s[j] += x[i * (size_t)d + j];
        cnt[assign[i]]++;
    }
    for (int c = 0; c < k; c++) {
        if (cnt[c] == 0)
            continue;
        for (int j = 0; j < d; j++)
            centers[(size_t)c * d + j] = (float)(sum[(size_t)c * d + j] / (double)cnt[c]);
    }
    free(cnt);
    free(sum);
}

void peso_kmeans(const float *x, size_t n, int d, int k, int iters, peso_rng *rng, float *centers)
{
    seed_plusplus(x, n, d, k, rng, centers);
    int32_t *assign = peso_malloc(n * sizeof *assign);
    int32_t *prev = peso_malloc(n * sizeof *prev);
    for (int it = 0; it < iters; it++) {
        peso_kmeans_assign(x, n, d, centers, k, assign);
        if (it > 0 && memcmp(assign, prev, n * sizeof *assign) == 0)
            break;
        update_means(x, n, d, k, assign, centers);
        memcpy(prev, assign, n * sizeof *prev);
    }
    free(prev);
    free(assign);
}
