/* The beam-search step's entries: log_softmax_sel and decode_attention
 * against naive double-precision loops, on odd sizes, grouped-query heads,
 * no prefix, a cache wider than the live beams (its other beams' rows
 * are NaN, so reading one fails), one selected column and all of them.
 * Outputs are poisoned with NaN before each call (every element must be
 * written, nothing past the end), and bad arguments are refused with a
 * message naming them, writing nothing. */
#include <stdio.h>

#include "bt.h"

/* ---- log_softmax_sel ---- */

/* out[r, j] = x[r, sel[j]] - log sum_v exp(x[r, v]), in double. */
static void ref_log_softmax_sel(const float *x, int n, int V, const int32_t *sel, int n_sel, double *out,
                                double *lse)
{
    for (int r = 0; r < n; r++) {
        const float *row = x + (size_t)r * V;
        double mx = -INFINITY, sum = 0.0;
        for (int v = 0; v < V; v++)
            mx = fmax(mx, row[v]);
        for (int v = 0; v < V; v++)
            sum += exp((double)row[v] - mx);
        lse[r] = mx + log(sum);
        for (int j = 0; j < n_sel; j++)
            out[(size_t)r * n_sel + j] = row[sel[j]] - lse[r];
    }
}

static void lsm_case(int n, int V, const int32_t *sel, int n_sel, double spread, uint64_t seed)
{
    peso_backend *be = bt_backend();
    peso_rng r;
    peso_rng_seed(&r, seed, (uint64_t)V);
    float *x = bt_rand(&r, (size_t)n * V, -spread, spread);
    size_t out_n = ((size_t)n + 1) * n_sel; /* one row past n stays poisoned */
    float *out = malloc(out_n * sizeof *out), *lse = malloc(((size_t)n + 1) * sizeof *lse);
    for (size_t i = 0; i < out_n; i++)
        out[i] = NAN;
    for (int i = 0; i <= n; i++)
        lse[i] = NAN;
    float *x_ = bt_dev(be, x, (size_t)n * V * sizeof *x), *out_ = bt_dev(be, out, out_n * sizeof *out);
    float *lse_ = bt_dev(be, lse, ((size_t)n + 1) * sizeof *lse);
    int32_t *sel_ = bt_dev(be, sel, (size_t)n_sel * sizeof *sel);
    peso_err err;
    cr_assert_eq(be->log_softmax_sel(be, out_, lse_, x_, n, V, sel_, n_sel, &err), 0, "%s", err.msg);
    bt_get(be, out, out_, out_n * sizeof *out);
    bt_get(be, lse, lse_, ((size_t)n + 1) * sizeof *lse);
    double *want = malloc((size_t)n * n_sel * sizeof *want), *want_lse = malloc((size_t)n * sizeof *want_lse);
    ref_log_softmax_sel(x, n, V, sel, n_sel, want, want_lse);
    char what[64];
    snprintf(what, sizeof what, "log_softmax_sel n=%d V=%d n_sel=%d", n, V, n_sel);
    bt_close(out, want, (size_t)n * n_sel, 1e-5, 1e-6, what);
    bt_close(lse, want_lse, (size_t)n, 1e-5, 1e-6, what);
    for (int j = 0; j < n_sel; j++)
        cr_assert(isnan(out[(size_t)n * n_sel + j]), "%s: written past row %d", what, n);
    cr_assert(isnan(lse[n]), "%s: lse written past row %d", what, n);
    /* without lse: the same values */
    float *again = malloc(out_n * sizeof *again);
    cr_assert_eq(be->log_softmax_sel(be, out_, NULL, x_, n, V, sel_, n_sel, &err), 0, "%s", err.msg);
    bt_get(be, again, out_, out_n * sizeof *again);
    cr_assert(memcmp(again, out, (size_t)n * n_sel * sizeof *out) == 0, "%s: lse NULL changes the values",
              what);
    be->free(be, x_), be->free(be, out_), be->free(be, lse_), be->free(be, sel_);
    free(x), free(out), free(lse), free(want), free(want_lse), free(again);
    peso_backend_destroy(be);
}

static int32_t *iota(int n)
{
    int32_t *s = malloc((size_t)n * sizeof *s);
    for (int i = 0; i < n; i++)
        s[i] = i;
    return s;
}

Test(log_softmax_sel, matches_naive_double)
{
    const int32_t zero[1] = {0}, some[6] = {36, 0, 5, 5, 17, 1}, last[1] = {4999};
    lsm_case(1, 1, zero, 1, 1, 1);
    lsm_case(3, 37, some, 6, 3, 2);
    lsm_case(2, 37, some + 4, 1, 3, 3);
    lsm_case(10, 5000, last, 1, 5, 4); /* over the threading threshold */
    /* large logits: only the subtracted maximum keeps exp finite */
    lsm_case(4, 37, some, 6, 200, 5);
    int32_t *all = iota(1001);
    lsm_case(5, 1001, all, 1001, 4, 6);
    lsm_case(1, 1001, all, 1001, 4, 7);
    free(all);
}

Test(log_softmax_sel, checks_its_arguments_and_writes_nothing)
{
    peso_backend *be = bt_backend();
    float x[2 * 5] = {0}, out[4], lse[2];
    for (int i = 0; i < 4; i++)
        out[i] = 7.0f;
    lse[0] = lse[1] = 7.0f;
    float *x_ = bt_dev(be, x, sizeof x), *out_ = bt_dev(be, out, sizeof out),
          *lse_ = bt_dev(be, lse, sizeof lse);
    const int32_t bad[3][2] = {{0, 5}, {-1, 0}, {4, 1000}};
    const char *msg[3] = {"sel[1]=5 outside [0, 5)", "sel[0]=-1", "sel[1]=1000"};
    peso_err err;
    for (int k = 0; k < 3; k++) {
        int32_t *sel_ = bt_dev(be, bad[k], sizeof bad[k]);
        cr_assert_eq(be->log_softmax_sel(be, out_, lse_, x_, 2, 5, sel_, 2, &err), -1);
        cr_assert(strstr(err.msg, "log_softmax_sel: ") && strstr(err.msg, msg[k]), "%s", err.msg);
        be->free(be, sel_);
    }
    const int32_t ok[2] = {0, 4};
    int32_t *sel_ = bt_dev(be, ok, sizeof ok);
    cr_assert_eq(be->log_softmax_sel(be, out_, lse_, x_, 2, 0, sel_, 2, &err), -1);
    cr_assert(strstr(err.msg, "log_softmax_sel: ") && strstr(err.msg, "V=0"), "%s", err.msg);
    cr_assert_eq(be->log_softmax_sel(be, out_, lse_, x_, -1, 5, sel_, 2, &err), -1);
    cr_assert(strstr(err.msg, "n=-1"), "%s", err.msg);
    cr_assert_eq(be->log_softmax_sel(be, out_, lse_, x_, 2, 5, sel_, -2, &err), -1);
    cr_assert(strstr(err.msg, "n_sel=-2"), "%s", err.msg);
    bt_get(be, out, out_, sizeof out);
    bt_get(be, lse, lse_, sizeof lse);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(out[i], 7.0f, "out written on an error at %d", i);
    cr_assert(lse[0] == 7.0f && lse[1] == 7.0f, "lse written on an error");
    be->free(be, sel_), be->free(be, x_), be->free(be, out_), be->free(be, lse_);
    peso_backend_destroy(be);
}

/* ---- decode_attention ---- */

/* Beam b, head h in double: softmax over the prefix keys then the own
 * keys j * own_stride + b, scale 1/sqrt(head_dim). */
static void ref_decode_attention(const peso_decode_attn_shape *s, const float *q, const float *pk,
                                 const float *pv, const float *ok, const float *ov, double *out)
{
    int D = s->head_dim, kv = s->n_kv_head * D, n = s->n_prefix + s->n_own;
    double *sc = malloc((size_t)n * sizeof *sc);
    for (int b = 0; b < s->n_beam; b++)
        for (int h = 0; h < s->n_head; h++) {
            int g = h / (s->n_head / s->n_kv_head);
            const float *qh = q + ((size_t)b * s->n_head + h) * D;
            double mx = -INFINITY, sum = 0.0;
            for (int t = 0; t < n; t++) {
                const float *k = t < s->n_prefix ? pk + (size_t)t * kv
                                                 : ok + ((size_t)(t - s->n_prefix) * s->own_stride + b) * kv;
                double d = 0.0;
                for (int i = 0; i < D; i++)
                    d += (double)qh[i] * k[g * D + i];
                sc[t] = d / sqrt((double)D);
                mx = fmax(mx, sc[t]);
            }
            for (int t = 0; t < n; t++)
                sum += exp(sc[t] - mx);
            double *o = out + ((size_t)b * s->n_head + h) * D;
            for (int i = 0; i < D; i++)
                o[i] = 0.0;
            for (int t = 0; t < n; t++) {
                const float *v = t < s->n_prefix ? pv + (size_t)t * kv
                                                 : ov + ((size_t)(t - s->n_prefix) * s->own_stride + b) * kv;
                double p = exp(sc[t] - mx) / sum;
                for (int i = 0; i < D; i++)
                    o[i] += p * v[g * D + i];
            }
        }
    free(sc);
}

/* Own cache rows [n_own * own_stride, kv], the rows of beams >= n_beam
 * NaN: the entry must never read them. */
static float *own_cache(peso_rng *r, const peso_decode_attn_shape *s, size_t kv)
{
    size_t rows = (size_t)s->n_own * s->own_stride;
    float *c = bt_rand(r, rows * kv, -1, 1);
    for (size_t row = 0; row < rows; row++)
        if ((int)(row % (size_t)s->own_stride) >= s->n_beam)
            for (size_t i = 0; i < kv; i++)
                c[row * kv + i] = NAN;
    return c;
}

static void attn_case(peso_decode_attn_shape s, double q_scale, uint64_t seed)
{
    peso_backend *be = bt_backend();
    peso_rng r;
    peso_rng_seed(&r, seed, 5);
    size_t kv = (size_t)s.n_kv_head * s.head_dim, qn = (size_t)s.n_beam * s.n_head * s.head_dim;
    size_t hd = (size_t)s.n_head * s.head_dim, own_rows = (size_t)s.n_own * s.own_stride;
    float *q = bt_rand(&r, qn, -q_scale, q_scale);
    float *pk = bt_rand(&r, (size_t)s.n_prefix * kv, -1, 1),
          *pv = bt_rand(&r, (size_t)s.n_prefix * kv, -1, 1);
    float *ok = own_cache(&r, &s, kv), *ov = own_cache(&r, &s, kv);
    float *out = malloc((qn + hd) * sizeof *out); /* one beam's row past the end stays poisoned */
    for (size_t i = 0; i < qn + hd; i++)
        out[i] = NAN;
    float *q_ = bt_dev(be, q, qn * sizeof *q), *out_ = bt_dev(be, out, (qn + hd) * sizeof *out);
    float *pk_ = s.n_prefix ? bt_dev(be, pk, (size_t)s.n_prefix * kv * sizeof *pk) : NULL;
    float *pv_ = s.n_prefix ? bt_dev(be, pv, (size_t)s.n_prefix * kv * sizeof *pv) : NULL;
    float *ok_ = bt_dev(be, ok, own_rows * kv * sizeof *ok),
          *ov_ = bt_dev(be, ov, own_rows * kv * sizeof *ov);
    peso_err err;
    cr_assert_eq(be->decode_attention(be, &s, out_, q_, pk_, pv_, ok_, ov_, &err), 0, "%s", err.msg);
    bt_get(be, out, out_, (qn + hd) * sizeof *out);
    double *want = malloc(qn * sizeof *want);
    ref_decode_attention(&s, q, pk, pv, ok, ov, want);
    char what[160];
    snprintf(what, sizeof what,
             "decode_attention beams=%d heads=%d kv_heads=%d dim=%d prefix=%d own=%d stride=%d", s.n_beam,
             s.n_head, s.n_kv_head, s.head_dim, s.n_prefix, s.n_own, s.own_stride);
    bt_close(out, want, qn, 1e-5, 1e-4, what);
    for (size_t i = qn; i < qn + hd; i++)
        cr_assert(isnan(out[i]), "%s: written past the last beam", what);
    be->free(be, q_), be->free(be, out_), be->free(be, pk_), be->free(be, pv_), be->free(be, ok_),
        be->free(be, ov_);
    free(q), free(pk), free(pv), free(ok), free(ov), free(out), free(want);
    peso_backend_destroy(be);
}

Test(decode_attention, matches_naive_double)
{
    /* n_beam, n_head, n_kv_head, head_dim, n_prefix, n_own, own_stride */
    attn_case((peso_decode_attn_shape){3, 4, 2, 8, 5, 2, 3}, 1, 1);
    attn_case((peso_decode_attn_shape){2, 4, 4, 7, 0, 3, 5}, 1, 2);      /* no prefix, odd dim, wide cache */
    attn_case((peso_decode_attn_shape){1, 6, 2, 16, 11, 1, 1}, 1, 3);    /* the first step's single own key */
    attn_case((peso_decode_attn_shape){3, 3, 1, 5, 9, 4, 7}, 1, 4);      /* one kv head for all */
    attn_case((peso_decode_attn_shape){5, 6, 3, 9, 0, 1, 5}, 1, 5);      /* one key in all */
    attn_case((peso_decode_attn_shape){10, 8, 2, 64, 200, 4, 12}, 1, 6); /* over the threading threshold */
    /* scores in the hundreds: only the subtracted maximum keeps exp finite */
    attn_case((peso_decode_attn_shape){2, 4, 2, 32, 13, 3, 4}, 40, 7);
}

Test(decode_attention, checks_its_arguments_and_writes_nothing)
{
    peso_backend *be = bt_backend();
    enum { N = 256 };
    float buf[N], out[N];
    for (int i = 0; i < N; i++) {
        buf[i] = 0.5f;
        out[i] = 7.0f;
    }
    float *b_ = bt_dev(be, buf, sizeof buf), *out_ = bt_dev(be, out, sizeof out);
    struct {
        peso_decode_attn_shape s;
        const char *msg;
    } bad[] = {
        {{0, 4, 2, 4, 2, 1, 1}, "n_beam=0"},
        {{1, 4, 2, 0, 2, 1, 1}, "head_dim=0"},
        {{1, 4, 3, 4, 2, 1, 1}, "n_head=4 is not a multiple of n_kv_head=3"},
        {{1, 4, 2, 4, -1, 1, 1}, "n_prefix=-1"},
        {{1, 4, 2, 4, 2, 0, 1}, "n_own=0"},
        {{3, 4, 2, 4, 2, 1, 2}, "own_stride=2 is below n_beam=3"},
    };
    peso_err err;
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        cr_assert_eq(be->decode_attention(be, &bad[k].s, out_, b_, b_, b_, b_, b_, &err), -1, "%s",
                     bad[k].msg);
        cr_assert(strstr(err.msg, "decode_attention: ") && strstr(err.msg, bad[k].msg), "%s: %s", bad[k].msg,
                  err.msg);
    }
    peso_decode_attn_shape s = {1, 4, 2, 4, 2, 1, 1};
    cr_assert_eq(be->decode_attention(be, &s, out_, b_, NULL, NULL, b_, b_, &err), -1);
    cr_assert(strstr(err.msg, "decode_attention: n_prefix=2"), "%s", err.msg);
    bt_get(be, out, out_, sizeof out);
    for (int i = 0; i < N; i++)
        cr_assert_eq(out[i], 7.0f, "written on an error at %d", i);
    be->free(be, b_), be->free(be, out_);
    peso_backend_destroy(be);
}
