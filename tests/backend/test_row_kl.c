/* The row softmax-KL entry (the output-KL regularizer's math): values
 * against naive double loops, gradients against finite differences, a
 * closed form, right padding (excluded from the value, dz 0 there, every
 * output written) and the argument checks. */
#include "bt.h"

static double naive_rows_kl(const float *z, const float *zp, int n_tok, int d)
{
    double *x = malloc(d * sizeof *x), *y = malloc(d * sizeof *y), s = 0;
    for (int t = 0; t < n_tok; t++) {
        for (int j = 0; j < d; j++) {
            x[j] = z[t * d + j];
            y[j] = zp[t * d + j];
        }
        s += bt_naive_kl(x, y, d);
    }
    free(x);
    free(y);
    return s;
}

static double rel(double a, double b)
{
    return fabs(a - b) / fmax(fabs(b), 1e-300);
}

/* A device copy of bytes of host (never an empty allocation). */
static void *dev_copy(peso_backend *be, const void *host, size_t bytes)
{
    void *p = bt_dev(be, NULL, bytes ? bytes : 4);
    if (bytes)
        bt_put(be, p, host, bytes);
    return p;
}

/* One call through the table on device copies of host z, zp and lens
 * [B] (rows of T positions, width d); with g, dz comes back into g (the
 * device dz starts as g's contents). Returns the entry's status. */
static int row_kl(peso_backend *be, const float *z, const float *zp, const int32_t *lens, int B, int T, int d,
                  double scale, float *g, double *val, peso_err *err)
{
    size_t bytes = (size_t)B * T * (d > 0 ? d : 0) * sizeof(float);
    float *z_ = dev_copy(be, z, bytes), *zp_ = dev_copy(be, zp, bytes);
    float *g_ = g ? dev_copy(be, g, bytes) : NULL;
    int32_t *lens_ = dev_copy(be, lens, (size_t)B * sizeof *lens);
    int rc = be->row_kl(be, z_, zp_, lens_, B, T, d, scale, g_, val, err);
    if (rc == 0 && g)
        bt_get(be, g, g_, bytes);
    be->free(be, z_), be->free(be, zp_), be->free(be, g_), be->free(be, lens_);
    return rc;
}

static void output_kl_case(int n_tok, int d, uint64_t seed, int fd)
{
    peso_backend *be = bt_backend();
    peso_rng rng;
    peso_rng_seed(&rng, seed, 1);
    size_t n = (size_t)n_tok * d;
    int32_t lens[1] = {n_tok};
    float *z = malloc(n * sizeof *z), *zp = malloc(n * sizeof *zp), *g = calloc(n, sizeof *g);
    for (size_t i = 0; i < n; i++) {
        zp[i] = (float)(2.0 * peso_rng_normal(&rng));
        z[i] = zp[i] + (float)(0.5 * peso_rng_normal(&rng));
    }
    double val;
    peso_err err = {{0}};
    cr_assert_eq(row_kl(be, z, zp, lens, 1, n_tok, d, 0.4, g, &val, &err), 0, "%s", err.msg);
    double want = 0.4 * naive_rows_kl(z, zp, n_tok, d);
    cr_assert(rel(val, want) < 1e-10, "%d x %d: %.15g vs %.15g", n_tok, d, val, want);
    for (int t = 0; t < n_tok && fd; t++)
        for (int j = 0; j < d; j++) {
            float *e = &z[(size_t)t * d + j], x = *e, xp = (float)(x + 1e-3), xm = (float)(x - 1e-3);
            double fp, fm;
            *e = xp;
            cr_assert_eq(row_kl(be, z, zp, lens, 1, n_tok, d, 0.4, NULL, &fp, &err), 0);
            *e = xm;
            cr_assert_eq(row_kl(be, z, zp, lens, 1, n_tok, d, 0.4, NULL, &fm, &err), 0);
            *e = x;
            double fdv = (fp - fm) / ((double)xp - (double)xm), got = g[(size_t)t * d + j];
            cr_assert(fabs(got - fdv) <= 1e-6 * (1 + fabs(fdv)), "token %d entry %d: %g, FD %g", t, j, got,
                      fdv);
        }
    /* every row's gradient sums to zero */
    for (int t = 0; t < n_tok; t++) {
        double s = 0, mag = 0;
        for (int j = 0; j < d; j++) {
            s += g[(size_t)t * d + j];
            mag += fabs(g[(size_t)t * d + j]);
        }
        cr_assert(fabs(s) <= 1e-6 * mag, "token %d: sum %g", t, s);
    }
    free(z);
    free(zp);
    free(g);
    peso_backend_destroy(be);
}

Test(row_kl, matches_naive_and_finite_differences)
{
    output_kl_case(5, 7, 21, 1);
    output_kl_case(1, 1, 22, 1); /* a single logit: KL 0, gradient 0 */
    output_kl_case(300, 256, 23, 0);
}

Test(row_kl, zero_when_equal_and_overwrites_dz)
{
    peso_backend *be = bt_backend();
    float z[6] = {0.5f, -1, 2, 3, 3, 3}, g[6] = {1, 2, 3, 4, 5, 6};
    int32_t two[1] = {2}, none[1] = {0};
    double val;
    peso_err err = {{0}};
    cr_assert_eq(row_kl(be, z, z, two, 1, 2, 3, 1.0, g, &val, &err), 0, "%s", err.msg);
    cr_assert_eq(val, 0.0);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(g[i], 0.0f, "dz[%d] = %g: not overwritten", i, (double)g[i]);
    for (int i = 0; i < 6; i++)
        g[i] = NAN;
    cr_assert_eq(row_kl(be, z, z, none, 1, 2, 3, 1.0, g, &val, &err), 0, "%s", err.msg);
    cr_assert_eq(val, 0.0);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(g[i], 0.0f, "dz[%d] = %g on padding", i, (double)g[i]);
    cr_assert_eq(be->row_kl(be, NULL, NULL, NULL, 0, 0, 3, 1.0, NULL, &val, &err), 0, "%s", err.msg);
    cr_assert_eq(val, 0.0);
    /* [0, 0] vs [log 3, 0]: p = (1/2, 1/2), q = (3/4, 1/4); KL = 1/2 log(2/3) + 1/2 log 2 = 1/2 log(4/3);
     * dKL/dz = p (log p - log q) - p KL = (1/2 log(2/3) - 1/4 log(4/3), 1/2 log 2 - 1/4 log(4/3)),
     * times the scale 2: (-1/2 log 3, 1/2 log 3) */
    float a[2] = {0, 0}, b[2] = {(float)log(3.0), 0}, ga[2] = {NAN, NAN};
    int32_t one[1] = {1};
    cr_assert_eq(row_kl(be, a, b, one, 1, 1, 2, 2.0, ga, &val, &err), 0, "%s", err.msg);
    double q0 = (double)b[0];
    double kl = 0.5 * log(0.5 / (exp(q0) / (exp(q0) + 1))) + 0.5 * log(0.5 / (1 / (exp(q0) + 1)));
    cr_assert(fabs(kl - 0.5 * log(4.0 / 3.0)) < 1e-7);
    cr_assert(fabs(val - 2 * kl) < 1e-14, "%.17g", val);
    cr_assert(fabs(ga[0] + 0.5 * log(3.0)) < 1e-6, "%g", (double)ga[0]);
    cr_assert(fabs(ga[1] - 0.5 * log(3.0)) < 1e-6, "%g", (double)ga[1]);
    peso_backend_destroy(be);
}

/* B rows of T positions with lengths lens, padding of z and z_prev NaN
 * (never read), dz poisoned with NaN before the call (fully written).
 * The value is the sum in b order of each row's value alone, bit for bit
 * (the order the output-KL term has always used); dz matches each row's
 * own call on real positions and is 0 on padding; dz over z in place
 * gives the same bits. */
static void padded_case(int B, int T, int d, const int32_t *lens, uint64_t seed)
{
    peso_backend *be = bt_backend();
    peso_rng r;
    peso_rng_seed(&r, seed, 0);
    size_t n = (size_t)B * T * d, row = (size_t)T * d;
    float *z = bt_rand(&r, n, -3, 3), *zp = bt_rand(&r, n, -3, 3), *g = malloc(n * sizeof *g);
    for (int b = 0; b < B; b++)
        for (size_t i = (size_t)lens[b] * d; i < row; i++)
            z[b * row + i] = zp[b * row + i] = NAN;
    for (size_t i = 0; i < n; i++)
        g[i] = NAN;
    double val, sum = 0.0, naive = 0.0;
    peso_err err = {{0}};
    cr_assert_eq(row_kl(be, z, zp, lens, B, T, d, 0.3, g, &val, &err), 0, "%s", err.msg);
    float *gb = malloc((row ? row : 1) * sizeof *gb);
    for (int b = 0; b < B; b++) {
        double vb;
        size_t real = (size_t)lens[b] * d;
        cr_assert_eq(row_kl(be, z + b * row, zp + b * row, &lens[b], 1, lens[b], d, 0.3, gb, &vb, &err), 0,
                     "%s", err.msg);
        sum += vb;
        naive += 0.3 * naive_rows_kl(z + b * row, zp + b * row, lens[b], d);
        cr_assert(memcmp(g + b * row, gb, real * sizeof *gb) == 0, "row %d: dz differs from its own call", b);
        for (size_t i = real; i < row; i++)
            cr_assert_eq(g[b * row + i], 0.0f, "row %d dz[%zu] = %g on padding", b, i,
                         (double)g[b * row + i]);
    }
    cr_assert(val == sum, "%.17g, rows in order %.17g", val, sum);
    cr_assert(rel(val, naive) < 1e-10, "%.15g vs %.15g", val, naive);
    /* dz over z in place */
    float *z_ = dev_copy(be, z, n * sizeof *z), *zp_ = dev_copy(be, zp, n * sizeof *zp);
    int32_t *lens_ = dev_copy(be, lens, (size_t)B * sizeof *lens);
    float *gi = malloc(n * sizeof *gi);
    double vi;
    cr_assert_eq(be->row_kl(be, z_, zp_, lens_, B, T, d, 0.3, z_, &vi, &err), 0, "%s", err.msg);
    bt_get(be, gi, z_, n * sizeof *gi);
    cr_assert(vi == val && memcmp(gi, g, n * sizeof *gi) == 0, "dz in place differs");
    be->free(be, z_), be->free(be, zp_), be->free(be, lens_);
    free(z), free(zp), free(g), free(gb), free(gi);
    peso_backend_destroy(be);
}

Test(row_kl, padding_is_excluded_and_zero)
{
    int32_t small[3] = {4, 2, 0};
    padded_case(3, 4, 5, small, 31);
    /* over the cpu backend's threading threshold */
    int32_t wide[4] = {64, 10, 0, 33};
    padded_case(4, 64, 512, wide, 32);
}

Test(row_kl, bad_arguments_are_errors)
{
    peso_backend *be = bt_backend();
    float z[8] = {0}, zp[8] = {0};
    int32_t ok[2] = {2, 1}, over[2] = {2, 5}, neg[2] = {-1, 2};
    double val;
    peso_err err = {{0}};
    cr_assert_eq(row_kl(be, z, zp, ok, 2, 2, 0, 1.0, NULL, &val, &err), -1);
    cr_assert(strstr(err.msg, "row_kl") && strstr(err.msg, "d=0"), "%s", err.msg);
    cr_assert_eq(row_kl(be, z, zp, ok, 2, 2, 2, INFINITY, NULL, &val, &err), -1);
    cr_assert(strstr(err.msg, "row_kl") && strstr(err.msg, "scale"), "%s", err.msg);
    cr_assert_eq(row_kl(be, z, zp, ok, 2, 2, 2, NAN, NULL, &val, &err), -1);
    cr_assert(strstr(err.msg, "scale"), "%s", err.msg);
    cr_assert_eq(row_kl(be, z, zp, over, 2, 2, 2, 1.0, NULL, &val, &err), -1);
    cr_assert(strstr(err.msg, "row_kl") && strstr(err.msg, "lens[1]=5"), "%s", err.msg);
    cr_assert_eq(row_kl(be, z, zp, neg, 2, 2, 2, 1.0, NULL, &val, &err), -1);
    cr_assert(strstr(err.msg, "lens[0]=-1"), "%s", err.msg);
    cr_assert_eq(be->row_kl(be, z, zp, ok, -1, 2, 2, 1.0, NULL, &val, &err), -1);
    cr_assert(strstr(err.msg, "row_kl") && strstr(err.msg, "B=-1"), "%s", err.msg);
    cr_assert_eq(be->row_kl(be, z, zp, ok, 1, -2, 2, 1.0, NULL, &val, &err), -1);
    cr_assert(strstr(err.msg, "T=-2"), "%s", err.msg);
    peso_backend_destroy(be);
}
