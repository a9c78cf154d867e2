#include <omp.h>

#include "bt.h"

struct ctx {
    peso_backend *be;
    peso_attn_shape s;
    int32_t len[4];
    size_t nq, nk, nl;
    float *q, *k, *v, *r, *out, *lse;
    float *q_, *k_, *v_, *out_, *lse_;
    int32_t *len_;
};

static void setup(struct ctx *c, peso_attn_shape s, const int32_t *len, uint64_t seed)
{
    peso_rng r;
    peso_rng_seed(&r, seed, 0);
    cr_assert(s.batch <= 4, "ctx holds 4 lengths");
    c->be = bt_backend();
    c->s = s;
    memcpy(c->len, len, (size_t)s.batch * sizeof *len);
    c->nq = (size_t)s.batch * s.seq * s.n_head * s.head_dim;
    c->nk = (size_t)s.batch * s.seq * s.n_kv_head * s.head_dim;
    c->nl = (size_t)s.batch * s.n_head * s.seq;
    c->q = bt_rand(&r, c->nq, -1, 1);
    c->k = bt_rand(&r, c->nk, -1, 1);
    c->v = bt_rand(&r, c->nk, -1, 1);
    c->r = bt_rand(&r, c->nq, -1, 1);
    c->out = malloc(c->nq * 4);
    c->lse = malloc(c->nl * 4);
    c->q_ = bt_dev(c->be, NULL, c->nq * 4);
    c->k_ = bt_dev(c->be, NULL, c->nk * 4);
    c->v_ = bt_dev(c->be, NULL, c->nk * 4);
    c->out_ = bt_dev(c->be, NULL, c->nq * 4);
    c->lse_ = bt_dev(c->be, NULL, c->nl * 4);
    c->len_ = bt_dev(c->be, len, (size_t)s.batch * sizeof *len);
}

static void teardown(struct ctx *c)
{
    peso_backend *be = c->be;
    be->free(be, c->q_), be->free(be, c->k_), be->free(be, c->v_);
    be->free(be, c->out_), be->free(be, c->lse_), be->free(be, c->len_);
    free(c->q), free(c->k), free(c->v), free(c->r), free(c->out), free(c->lse);
    peso_backend_destroy(be);
}

static void forward(struct ctx *c)
{
    peso_err err = {{0}};
    bt_put(c->be, c->q_, c->q, c->nq * 4);
    bt_put(c->be, c->k_, c->k, c->nk * 4);
    bt_put(c->be, c->v_, c->v, c->nk * 4);
    cr_assert_eq(c->be->attention(c->be, &c->s, c->out_, c->lse_, c->q_, c->k_, c->v_, c->len_,
                                  &err),
                 0, "%s", err.msg);
    bt_get(c->be, c->out, c->out_, c->nq * 4);
    bt_get(c->be, c->lse, c->lse_, c->nl * 4);
}

static double loss(void *p)
{
    struct ctx *c = p;
    forward(c);
    return bt_dot(c->out, c->r, c->nq);
}

/* Naive softmax attention in double, straight from the definition:
 * query t of head h sees keys j <= t of kv head h / (Hq / Hkv). */
static size_t kv_row(const peso_attn_shape *s, int b, int j, int g)
{
    return (((size_t)b * s->seq + j) * s->n_kv_head + g) * s->head_dim;
}

static void naive(const struct ctx *c, double *out, double *lse)
{
    const peso_attn_shape *s = &c->s;
    int D = s->head_dim, rep = s->n_head / s->n_kv_head;
    double *p = malloc((size_t)s->seq * sizeof *p);
    for (int b = 0; b < s->batch; b++)
        for (int h = 0; h < s->n_head; h++)
            for (int t = 0; t < s->seq; t++) {
                double *o = out + (((size_t)b * s->seq + t) * s->n_head + h) * D;
                for (int d = 0; d < D; d++)
                    o[d] = 0;
                if (t >= c->len[b])
                    continue;
                const float *qt = c->q + (((size_t)b * s->seq + t) * s->n_head + h) * D;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= t; j++) {
                    const float *kj = c->k + kv_row(s, b, j, h / rep);
                    double dot = 0;
                    for (int d = 0; d < D; d++)
                        dot += (double)qt[d] * kj[d];
                    p[j] = dot / sqrt((double)D);
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j <= t; j++)
                    sum += exp(p[j] - mx);
                for (int j = 0; j <= t; j++) {
                    const float *vj = c->v + kv_row(s, b, j, h / rep);
                    for (int d = 0; d < D; d++)
                        o[d] += exp(p[j] - mx) / sum * vj[d];
                }
                lse[((size_t)b * s->n_head + h) * s->seq + t] = mx + log(sum);
            }
    free(p);
}

static const peso_attn_shape small = {.batch = 2, .seq = 5, .n_head = 4, .n_kv_head = 2,
                                      .head_dim = 4};
static const int32_t small_len[2] = {5, 3};

Test(attention, gqa_with_padding_matches_naive_softmax)
{
    struct ctx c;
    setup(&c, small, small_len, 41);
    /* huge keys and values at the padded positions of sequence 1 must not
     * reach its real rows */
    for (int t = 3; t < 5; t++)
        for (int i = 0; i < 2 * 4; i++) {
            c.k[((size_t)1 * 5 + t) * 8 + i] = 1e4f;
            c.v[((size_t)1 * 5 + t) * 8 + i] = -1e4f;
        }
    forward(&c);
    double *want = malloc(c.nq * sizeof *want), *want_lse = calloc(c.nl, sizeof *want_lse);
    naive(&c, want, want_lse);
    bt_close(c.out, want, c.nq, 1e-6, 1e-5, "out");
    for (int b = 0; b < 2; b++)
        for (int h = 0; h < 4; h++)
            for (int t = 0; t < small_len[b]; t++) {
                size_t i = ((size_t)b * 4 + h) * 5 + t;
                cr_assert_float_eq(c.lse[i], want_lse[i], 1e-5, "lse b=%d h=%d t=%d", b, h, t);
            }
    free(want), free(want_lse);
    teardown(&c);
}

Test(attention, one_key_returns_its_value)
{
    /* the first query of a sequence sees only key 0: out = v_0 exactly,
     * lse = q0.k0 / sqrt(D) */
    struct ctx c;
    setup(&c, small, small_len, 42);
    forward(&c);
    for (int h = 0; h < 4; h++)
        for (int d = 0; d < 4; d++)
            cr_assert_float_eq(c.out[h * 4 + d], c.v[(h / 2) * 4 + d], 1e-6);
    double dot = 0;
    for (int d = 0; d < 4; d++)
        dot += (double)c.q[d] * c.k[d];
    cr_assert_float_eq(c.lse[0], dot / 2, 1e-6);
    teardown(&c);
}

Test(attention, backward_matches_finite_differences)
{
    struct ctx c;
    setup(&c, small, small_len, 43);
    forward(&c);
    float *dq = bt_dev(c.be, NULL, c.nq * 4), *dk = bt_dev(c.be, NULL, c.nk * 4);
    float *dv = bt_dev(c.be, NULL, c.nk * 4), *dout = bt_dev(c.be, c.r, c.nq * 4);
    peso_err err = {{0}};
    cr_assert_eq(c.be->attention_backward(c.be, &c.s, dq, dk, dv, dout, c.q_, c.k_, c.v_, c.out_,
                                          c.lse_, c.len_, &err),
                 0, "%s", err.msg);
    float *gq = malloc(c.nq * 4), *gk = malloc(c.nk * 4), *gv = malloc(c.nk * 4);
    bt_get(c.be, gq, dq, c.nq * 4);
    bt_get(c.be, gk, dk, c.nk * 4);
    bt_get(c.be, gv, dv, c.nk * 4);
    bt_fd(c.q, c.nq, gq, loss, &c, 1e-2f, "dq");
    bt_fd(c.k, c.nk, gk, loss, &c, 1e-2f, "dk");
    bt_fd(c.v, c.nk, gv, loss, &c, 1e-2f, "dv");
    /* padded positions of sequence 1 (t = 3, 4) get exactly no gradient */
    for (int t = 3; t < 5; t++) {
        for (int i = 0; i < 4 * 4; i++)
            cr_assert_eq(gq[((size_t)5 + t) * 16 + i], 0.0f);
        for (int i = 0; i < 2 * 4; i++)
            cr_assert(gk[((size_t)5 + t) * 8 + i] == 0.0f && gv[((size_t)5 + t) * 8 + i] == 0.0f);
    }
    c.be->free(c.be, dq), c.be->free(c.be, dk), c.be->free(c.be, dv), c.be->free(c.be, dout);
    free(gq), free(gk), free(gv);
    teardown(&c);
}

/* A shape large enough for the threaded path: forward against the naive
 * reference, backward bit-identical for 1 and 2 threads (no races). */
Test(attention, threaded_shape_is_exact_and_race_free)
{
    peso_attn_shape s = {.batch = 2, .seq = 48, .n_head = 8, .n_kv_head = 2, .head_dim = 16};
    int32_t len[2] = {48, 29};
    struct ctx c;
    setup(&c, s, len, 44);
    forward(&c);
    double *want = malloc(c.nq * sizeof *want), *want_lse = calloc(c.nl, sizeof *want_lse);
    naive(&c, want, want_lse);
    bt_close(c.out, want, c.nq, 1e-6, 1e-5, "out");
    float *g[2][3];
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run + 1);
        float *dq = bt_dev(c.be, NULL, c.nq * 4), *dk = bt_dev(c.be, NULL, c.nk * 4);
        float *dv = bt_dev(c.be, NULL, c.nk * 4), *dout = bt_dev(c.be, c.r, c.nq * 4);
        peso_err err = {{0}};
        cr_assert_eq(c.be->attention_backward(c.be, &c.s, dq, dk, dv, dout, c.q_, c.k_, c.v_,
                                              c.out_, c.lse_, c.len_, &err),
                     0, "%s", err.msg);
        g[run][0] = malloc(c.nq * 4), g[run][1] = malloc(c.nk * 4), g[run][2] = malloc(c.nk * 4);
        bt_get(c.be, g[run][0], dq, c.nq * 4);
        bt_get(c.be, g[run][1], dk, c.nk * 4);
        bt_get(c.be, g[run][2], dv, c.nk * 4);
        c.be->free(c.be, dq), c.be->free(c.be, dk), c.be->free(c.be, dv), c.be->free(c.be, dout);
    }
    cr_assert(memcmp(g[0][0], g[1][0], c.nq * 4) == 0, "dq differs between thread counts");
    cr_assert(memcmp(g[0][1], g[1][1], c.nk * 4) == 0, "dk differs between thread counts");
    cr_assert(memcmp(g[0][2], g[1][2], c.nk * 4) == 0, "dv differs between thread counts");
    for (int run = 0; run < 2; run++)
        for (int i = 0; i < 3; i++)
            free(g[run][i]);
    free(want), free(want_lse);
    teardown(&c);
}

/* Gradients in double straight from the definitions, for dout = c->r:
 * with p the softmax row of query t, dp_j = dout_t . v_j and
 * ds_j = p_j (dp_j - sum_i p_i dp_i): dq_t = scale sum_j ds_j k_j,
 * dk_j += scale ds_j q_t, dv_j += p_j dout_t. Adds into dq, dk, dv. */
static void naive_backward(const struct ctx *c, double *dq, double *dk, double *dv)
{
    const peso_attn_shape *s = &c->s;
    int D = s->head_dim, rep = s->n_head / s->n_kv_head;
    double scale = 1.0 / sqrt((double)D);
    double *p = malloc((size_t)s->seq * sizeof *p), *dp = malloc((size_t)s->seq * sizeof *dp);
    for (int b = 0; b < s->batch; b++)
        for (int h = 0; h < s->n_head; h++)
            for (int t = 0; t < c->len[b]; t++) {
                size_t qr = (((size_t)b * s->seq + t) * s->n_head + h) * D;
                double mx = -INFINITY, sum = 0, pdp = 0;
                for (int j = 0; j <= t; j++) {
                    const float *kj = c->k + kv_row(s, b, j, h / rep);
                    const float *vj = c->v + kv_row(s, b, j, h / rep);
                    p[j] = dp[j] = 0;
                    for (int d = 0; d < D; d++) {
                        p[j] += (double)c->q[qr + d] * kj[d] * scale;
                        dp[j] += (double)c->r[qr + d] * vj[d];
                    }
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j <= t; j++)
                    sum += exp(p[j] - mx);
                for (int j = 0; j <= t; j++) {
                    p[j] = exp(p[j] - mx) / sum;
                    pdp += p[j] * dp[j];
                }
                for (int j = 0; j <= t; j++) {
                    size_t kr = kv_row(s, b, j, h / rep);
                    double ds = p[j] * (dp[j] - pdp);
                    for (int d = 0; d < D; d++) {
                        dq[qr + d] += scale * ds * c->k[kr + d];
                        dk[kr + d] += scale * ds * c->q[qr + d];
                        dv[kr + d] += p[j] * c->r[qr + d];
                    }
                }
            }
    free(p), free(dp);
}

/* Backward on the device with gradients that start at g0 (the op adds);
 * NULL in want_* skips that gradient. Results into host arrays g. */
static void run_backward(struct ctx *c, const float *g0[3], float *g[3], int which)
{
    size_t n[3] = {c->nq, c->nk, c->nk};
    float *d[3] = {NULL, NULL, NULL}, *dout = bt_dev(c->be, c->r, c->nq * 4);
    for (int i = 0; i < 3; i++)
        if (which & (1 << i))
            d[i] = bt_dev(c->be, g0[i], n[i] * 4);
    peso_err err = {{0}};
    cr_assert_eq(c->be->attention_backward(c->be, &c->s, d[0], d[1], d[2], dout, c->q_, c->k_,
                                           c->v_, c->out_, c->lse_, c->len_, &err),
                 0, "%s", err.msg);
    for (int i = 0; i < 3; i++)
        if (d[i]) {
            bt_get(c->be, g[i], d[i], n[i] * 4);
            c->be->free(c->be, d[i]);
        }
    c->be->free(c->be, dout);
}

/* Sequences longer than one block of query rows (the cpu backend's
 * blocks are 64 rows): lengths that end mid-block, on a block edge, one
 * row into a block, and an empty sequence. Forward and backward against
 * the double references, gradients added onto nonzero starting values,
 * padded rows untouched, NULL gradients skipped without changing the
 * others, and the same bits on 1, 2 and 3 threads. */
Test(attention, long_sequences_match_naive_forward_and_backward)
{
    peso_attn_shape s = {.batch = 4, .seq = 150, .n_head = 4, .n_kv_head = 2, .head_dim = 8};
    int32_t len[4] = {150, 129, 64, 0};
    struct ctx c;
    setup(&c, s, len, 46);
    /* keys and values of padded positions are huge: none may leak in */
    for (int b = 1; b < 4; b++)
        for (int t = len[b]; t < s.seq; t++)
            for (int i = 0; i < 2 * 8; i++) {
                c.k[((size_t)b * s.seq + t) * 16 + i] = 1e4f;
                c.v[((size_t)b * s.seq + t) * 16 + i] = -1e4f;
            }
    forward(&c);
    double *want = malloc(c.nq * sizeof *want), *want_lse = calloc(c.nl, sizeof *want_lse);
    naive(&c, want, want_lse);
    bt_close(c.out, want, c.nq, 1e-6, 1e-5, "out");
    for (int b = 0; b < 4; b++)
        for (int h = 0; h < 4; h++)
            for (int t = 0; t < len[b]; t++) {
                size_t i = ((size_t)b * 4 + h) * s.seq + t;
                cr_assert_float_eq(c.lse[i], want_lse[i], 1e-5, "lse b=%d h=%d t=%d", b, h, t);
            }

    peso_rng r;
    peso_rng_seed(&r, 47, 0);
    size_t n[3] = {c.nq, c.nk, c.nk};
    const float *g0[3];
    float *g[3];
    double *ref[3];
    for (int i = 0; i < 3; i++) {
        float *init = bt_rand(&r, n[i], -1, 1);
        g0[i] = init;
        g[i] = malloc(n[i] * 4);
        ref[i] = malloc(n[i] * sizeof *ref[i]);
        for (size_t j = 0; j < n[i]; j++)
            ref[i][j] = init[j];
    }
    naive_backward(&c, ref[0], ref[1], ref[2]);
    run_backward(&c, g0, g, 7);
    const char *what[3] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; i++)
        bt_close(g[i], ref[i], n[i], 1e-5, 1e-4, what[i]);
    /* padded rows keep their starting values exactly */
    for (int b = 1; b < 4; b++)
        for (int t = len[b]; t < s.seq; t++) {
            size_t q0 = ((size_t)b * s.seq + t) * 32, k0 = ((size_t)b * s.seq + t) * 16;
            cr_assert(memcmp(g[0] + q0, g0[0] + q0, 32 * 4) == 0, "dq b=%d t=%d", b, t);
            cr_assert(memcmp(g[1] + k0, g0[1] + k0, 16 * 4) == 0, "dk b=%d t=%d", b, t);
            cr_assert(memcmp(g[2] + k0, g0[2] + k0, 16 * 4) == 0, "dv b=%d t=%d", b, t);
        }

    /* each gradient alone, and every thread count, gives the same bits */
    float *alone[3] = {malloc(c.nq * 4), malloc(c.nk * 4), malloc(c.nk * 4)};
    for (int i = 0; i < 3; i++) {
        run_backward(&c, g0, alone, 1 << i);
        cr_assert(memcmp(alone[i], g[i], n[i] * 4) == 0, "%s alone differs", what[i]);
    }
    float *out1 = malloc(c.nq * 4);
    memcpy(out1, c.out, c.nq * 4);
    for (int threads = 1; threads <= 3; threads++) {
        omp_set_num_threads(threads);
        forward(&c);
        cr_assert(memcmp(c.out, out1, c.nq * 4) == 0, "out differs on %d threads", threads);
        run_backward(&c, g0, alone, 7);
        for (int i = 0; i < 3; i++)
            cr_assert(memcmp(alone[i], g[i], n[i] * 4) == 0, "%s differs on %d threads",
                      what[i], threads);
    }
    for (int i = 0; i < 3; i++)
        free((void *)g0[i]), free(g[i]), free(ref[i]), free(alone[i]);
    free(out1), free(want), free(want_lse);
    teardown(&c);
}

Test(attention, rejects_bad_shapes_and_lengths)
{
    struct ctx c;
    setup(&c, small, small_len, 45);
    peso_err err = {{0}};
    peso_attn_shape s = small;
    s.n_kv_head = 3;
    cr_assert_eq(c.be->attention(c.be, &s, c.out_, c.lse_, c.q_, c.k_, c.v_, c.len_, &err), -1);
    cr_assert(strstr(err.msg, "n_head=4 is not a multiple of n_kv_head=3"), "%s", err.msg);
    int32_t bad[2] = {5, 6};
    bt_put(c.be, c.len_, bad, sizeof bad);
    cr_assert_eq(c.be->attention(c.be, &c.s, c.out_, c.lse_, c.q_, c.k_, c.v_, c.len_, &err), -1);
    cr_assert(strstr(err.msg, "seq_len[1]=6"), "%s", err.msg);
    teardown(&c);
}
