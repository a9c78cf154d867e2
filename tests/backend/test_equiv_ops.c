/* Every entry of the backend table on the candidate backend (cuda) against
 * the cpu backend, on fresh random inputs of several shapes, odd ones
 * included (1, 7, 33, 127 rows; widths that are not multiples of 32;
 * head_dim 64 and 40; grouped-query heads), in both precision modes: f32
 * (products in float32, the mode that must match the cpu backend) and
 * bf16 (bf16 product operands, float32 accumulation). The harness, the
 * poisoning of outputs and the error measure are in equiv.h; each test
 * prints one EQUIV line per output compared.
 *
 * Tolerances (equiv.h defines err, the scales and EQ_TOL = 1e-5):
 * - matmul: product scale |alpha| sum_k |op(A)_ik op(B)_kj| + |beta C_ij|;
 *   f32 mode EQ_TOL; bf16 mode 2u + EQ_TOL, u = 2^-8 (A and B rounded to
 *   bf16, each term off by <= 2u of its size). bf16 B operands hold
 *   bf16-exact values: the reference reads them widened to float32.
 * - xent: f32 mode: mixed scale, EQ_TOL. bf16 mode: the head product's
 *   logits are off by at most e_p = 2u S_p, S_p = max_v sum_j
 *   |head_vj h_pj| (the product bound), so
 *     loss_p = logsumexp - logit_target is off by <= 2 e_p: scale 2 S_p,
 *       tolerance 2u;
 *     softmax_v is off by a factor within exp(+-2 e_p), so d_v = scale
 *       (softmax_v - onehot_v) by <= scale softmax_v (exp(2 e_p) - 1),
 *       and dh_j = sum_v d_v head_vj, dhead_vj = sum_p d_pv h_pj, computed
 *       from bf16 d, head and h, are off by <= (exp(2 e) - 1 + 2u) times
 *       scale sum (softmax + onehot) |head| (resp. |h|): that sum is the
 *       scale, max_p exp(2 e_p) - 1 + 2u the tolerance.
 *   Each scale adds |r_i| EQ_TOL / tolerance, so that err <= tolerance
 *   means |c - r| <= tolerance * bound + EQ_TOL |r|: the bound plus the
 *   float32 rounding of the stored sum (dh and dhead accumulate).
 * - embed and embed_backward read bf16 tables exactly: EQ_TOL, mixed.
 * - every other entry is float32 in both modes (backend.h): mixed scale,
 *   EQ_TOL; host values (sumsq, prox_*, row_kl) relative, EQ_TOL.
 * - memory entries (alloc, zero, upload, download, copy): bytes equal.
 * Outputs compared only where the table defines them: attention's lse on
 * real rows (padded rows' lse is not specified), matmul's C inside the
 * products (the gaps between strided products are not written). */
#include "equiv.h"

#include "backend/rope_freq.h"
#include "lora/lora.h"
#include "method/prox.h"

#define EQ_TEST(fn, seed)                                                                                    \
    Test(equiv_ops, fn##_f32)                                                                                \
    {                                                                                                        \
        eq e;                                                                                                \
        eq_open(&e, 1, seed);                                                                                \
        fn(&e);                                                                                              \
        eq_close(&e);                                                                                        \
    }                                                                                                        \
    Test(equiv_ops, fn##_bf16)                                                                               \
    {                                                                                                        \
        eq e;                                                                                                \
        eq_open(&e, 0, seed);                                                                                \
        fn(&e);                                                                                              \
        eq_close(&e);                                                                                        \
    }

/* ================= matmul ================= */

typedef struct mm_args {
    peso_gemm g;
    eq_buf c, a, b, alpha;
} mm_args;

static int mm_call(eq *e, int cand, void *p, peso_err *err)
{
    mm_args *m = p;
    peso_backend *be = eq_be(e, cand);
    peso_gemm g = m->g;
    if (!cand)
        g.b_dtype = PESO_F32; /* the reference reads the widened copy */
    g.alpha_dev = EQ_F(m->alpha, cand);
    return be->matmul(be, &g, EQ_F(m->c, cand), EQ_F(m->a, cand), EQ_P(m->b, cand), err);
}

typedef struct mm_case {
    int m, n, k, ta, tb;
    peso_dtype bdt;
    float alpha, beta;
    int dev; /* alpha_dev = 1.75 */
    int batch;
    size_t pad_a, pad_b, pad_c; /* stride = numel + pad */
    int shared_b;               /* stride_b = 0 */
} mm_case;

/* element (r, j) of op(X) for X stored row-major [rows of X] */
static double mm_at(const float *x, int trans, int rows, int cols, int r, int j)
{
    return trans ? x[(size_t)j * rows + r] : x[(size_t)r * cols + j];
}

static void mm_run(eq *e, const mm_case *q)
{
    int m = q->m, n = q->n, k = q->k, batch = q->batch;
    size_t na = (size_t)m * k, nb = (size_t)k * n, nc = (size_t)m * n;
    size_t sa = batch > 1 ? na + q->pad_a : 0, sb = batch > 1 && !q->shared_b ? nb + q->pad_b : 0,
           sc = batch > 1 ? nc + q->pad_c : 0;
    size_t la = sa * (batch - 1) + na, lb = sb * (batch - 1) + nb, lc = sc * (batch - 1) + nc;
    float *A = eq_rand(e, la, -1, 1, 0), *B = eq_rand(e, lb, -1, 1, q->bdt == PESO_BF16);
    float *C0 = eq_rand(e, lc, -1, 1, 0), dev = 1.75f;
    mm_args a = {.g = {m, n, k, q->ta, q->tb, q->alpha, q->beta, q->bdt, batch, sa, sb, sc, NULL}};
    a.a = eq_in(e, A, la * 4);
    a.b = eq_weights(e, B, lb, q->bdt);
    a.c = q->beta == 0.0f ? eq_out(e, lc * 4) : eq_in(e, C0, lc * 4);
    if (q->dev)
        a.alpha = eq_in(e, &dev, 4);
    char cs[200];
    snprintf(cs, sizeof cs, "m=%d n=%d k=%d ta=%d tb=%d b=%s alpha=%g%s beta=%g batch=%d%s", m, n, k, q->ta,
             q->tb, peso_dtype_name(q->bdt), (double)q->alpha, q->dev ? "*dev" : "", (double)q->beta, batch,
             batch == 1             ? ""
             : q->shared_b          ? " stride_b=0"
             : q->pad_a || q->pad_c ? " padded"
                                    : " tight");
    eq_run(e, "matmul", cs, mm_call, &a);
    float *r, *c;
    eq_fetch(e, a.c, lc, &r, &c);
    /* the products' elements only, with their scales */
    size_t total = (size_t)batch * nc;
    float *rr = malloc(total * 4), *cc = malloc(total * 4);
    double *s = malloc(total * sizeof *s), al = fabs((double)q->alpha * (q->dev ? dev : 1.0f));
    for (int i = 0; i < batch; i++) {
        const float *Ai = A + i * sa, *Bi = B + i * sb;
        for (int row = 0; row < m; row++)
            for (int j = 0; j < n; j++) {
                size_t at = (size_t)i * nc + (size_t)row * n + j, src = i * sc + (size_t)row * n + j;
                double sum = 0.0;
                for (int t = 0; t < k; t++)
                    sum += fabs(mm_at(Ai, q->ta, m, k, row, t) * mm_at(Bi, q->tb, k, n, t, j));
                s[at] = al * sum + fabs((double)q->beta * C0[src]);
                rr[at] = r[src];
                cc[at] = c[src];
            }
    }
    eq_check(e, "matmul", cs, "C", cc, rr, total, s, e->f32 ? EQ_TOL : EQ_TOL_BF16_PRODUCT);
    free(rr), free(cc), free(s), free(r), free(c), free(A), free(B), free(C0);
    eq_free_all(e);
}

static void matmul(eq *e)
{
    static const int shapes[][3] = {{1, 1, 1},      {1, 64, 40},   {7, 33, 127},   {33, 7, 64},
                                    {127, 129, 33}, {64, 40, 256}, {100, 96, 1408}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++)
            for (int d = 0; d < 2; d++)
                for (int beta = 0; beta < 2; beta++) {
                    mm_case q = {shapes[s][0],
                                 shapes[s][1],
                                 shapes[s][2],
                                 t & 1,
                                 t >> 1,
                                 (peso_dtype)d,
                                 beta ? 0.5f : 1.0f,
                                 (float)beta,
                                 0,
                                 1,
                                 0,
                                 0,
                                 0,
                                 0};
                    mm_run(e, &q);
                }
    /* batches at strides, a shared weight, device scales */
    const mm_case extra[] = {
        {7, 33, 40, 1, 1, PESO_BF16, 1.0f, 1.0f, 0, 3, 5, 0, 3, 1},
        {33, 1, 127, 0, 0, PESO_F32, 0.5f, 0.0f, 1, 4, 0, 0, 0, 0},
        {16, 16, 64, 0, 1, PESO_F32, 0.125f, 0.0f, 0, 6, 0, 64, 0, 0},
        {33, 40, 7, 0, 1, PESO_BF16, 2.0f, 1.0f, 1, 1, 0, 0, 0, 0},
        {40, 7, 33, 1, 0, PESO_F32, 1.0f, 1.0f, 1, 2, 1, 1, 1, 0},
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        mm_run(e, &extra[i]);
}
EQ_TEST(matmul, 101)

/* ================= rmsnorm ================= */

typedef struct rn_args {
    int n, c;
    eq_buf y, rstd, x, w, dx, dw, dy, rs;
} rn_args;

static int rn_fwd(eq *e, int cand, void *p, peso_err *err)
{
    rn_args *a = p;
    peso_backend *be = eq_be(e, cand);
    return be->rmsnorm(be, EQ_F(a->y, cand), EQ_F(a->rstd, cand), EQ_F(a->x, cand), EQ_F(a->w, cand), a->n,
                       a->c, 1e-5f, err);
}

static int rn_bwd(eq *e, int cand, void *p, peso_err *err)
{
    rn_args *a = p;
    peso_backend *be = eq_be(e, cand);
    return be->rmsnorm_backward(be, EQ_F(a->dx, cand), EQ_F(a->dw, cand), EQ_F(a->dy, cand), EQ_F(a->x, cand),
                                EQ_F(a->w, cand), EQ_F(a->rs, cand), a->n, a->c, err);
}

static void rmsnorm(eq *e)
{
    static const int shapes[][2] = {{1, 64}, {7, 40}, {33, 512}, {127, 1408}, {3, 2048}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int n = shapes[s][0], c = shapes[s][1];
        size_t nx = (size_t)n * c;
        float *x = eq_rand(e, nx, -2, 2, 0), *w = eq_rand(e, (size_t)c, 0.5, 1.5, 0);
        float *dy = eq_rand(e, nx, -1, 1, 0);
        char cs[80];
        for (int with_rstd = 0; with_rstd < 2; with_rstd++) {
            rn_args a = {.n = n, .c = c};
            a.x = eq_in(e, x, nx * 4);
            a.w = eq_in(e, w, (size_t)c * 4);
            a.y = eq_out(e, nx * 4);
            if (with_rstd)
                a.rstd = eq_out(e, (size_t)n * 4);
            snprintf(cs, sizeof cs, "n=%d c=%d rstd=%s", n, c, with_rstd ? "yes" : "NULL");
            eq_run(e, "rmsnorm", cs, rn_fwd, &a);
            eq_check_buf(e, "rmsnorm", cs, "y", a.y, nx, NULL, EQ_TOL);
            if (with_rstd)
                eq_check_buf(e, "rmsnorm", cs, "rstd", a.rstd, (size_t)n, NULL, EQ_TOL);
            eq_free_all(e);
        }
        /* the backward, with the reference forward's rstd on both sides */
        float *rs = malloc((size_t)n * 4);
        {
            rn_args a = {.n = n, .c = c};
            a.x = eq_in(e, x, nx * 4);
            a.w = eq_in(e, w, (size_t)c * 4);
            a.y = eq_out(e, nx * 4);
            a.rstd = eq_out(e, (size_t)n * 4);
            peso_err err = {{0}};
            cr_assert_eq(rn_fwd(e, 0, &a, &err), 0, "%s", err.msg);
            eq_get(e->ref, rs, a.rstd.r, (size_t)n * 4);
            eq_free_all(e);
        }
        static const char *variants[] = {"dx dw", "dx, dw NULL", "dx NULL, dw"};
        for (int v = 0; v < 3; v++) {
            rn_args a = {.n = n, .c = c};
            a.x = eq_in(e, x, nx * 4);
            a.w = eq_in(e, w, (size_t)c * 4);
            a.dy = eq_in(e, dy, nx * 4);
            a.rs = eq_in(e, rs, (size_t)n * 4);
            if (v != 2)
                a.dx = eq_in(e, dy, nx * 4);
            if (v != 1)
                a.dw = eq_in(e, w, (size_t)c * 4);
            eq_buf acc[2] = {a.dx, a.dw};
            size_t len[2] = {nx, (size_t)c};
            eq_acc_probe(e, "rmsnorm_backward", rn_bwd, &a, acc, len, 2);
            snprintf(cs, sizeof cs, "n=%d c=%d %s", n, c, variants[v]);
            eq_run(e, "rmsnorm_backward", cs, rn_bwd, &a);
            if (a.dx.r)
                eq_check_buf(e, "rmsnorm_backward", cs, "dx", a.dx, nx, NULL, EQ_TOL);
            if (a.dw.r)
                eq_check_buf(e, "rmsnorm_backward", cs, "dw", a.dw, (size_t)c, NULL, EQ_TOL);
            eq_free_all(e);
        }
        free(rs), free(x), free(w), free(dy);
    }
}
EQ_TEST(rmsnorm, 102)

/* ================= rope ================= */

typedef struct rope_args {
    int n_tok, n_head, head_dim, backward;
    eq_buf x, pos, inv;
} rope_args;

static int rope_call(eq *e, int cand, void *p, peso_err *err)
{
    rope_args *a = p;
    peso_backend *be = eq_be(e, cand);
    return (a->backward ? be->rope_backward : be->rope)(
        be, EQ_F(a->x, cand), EQ_I(a->pos, cand), EQ_F(a->inv, cand), a->n_tok, a->n_head, a->head_dim, err);
}

static void rope(eq *e)
{
    /* n_tok, n_head, head_dim, llama3 scaling */
    static const int shapes[][4] = {
        {1, 1, 64, 1}, {7, 4, 40, 1}, {33, 8, 64, 1}, {127, 2, 128, 0}, {5, 3, 2, 0}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int n_tok = shapes[s][0], n_head = shapes[s][1], hd = shapes[s][2];
        peso_rope_conf rc = {.type = shapes[s][3] ? PESO_ROPE_LLAMA3 : PESO_ROPE_DEFAULT,
                             .theta = shapes[s][3] ? 500000.0 : 10000.0,
                             .head_dim = hd,
                             .factor = 32.0,
                             .low_freq_factor = 1.0,
                             .high_freq_factor = 4.0,
                             .original_max_pos = 8192};
        float *inv = malloc((size_t)hd / 2 * 4);
        peso_err err = {{0}};
        cr_assert_eq(peso_rope_inv_freq(&rc, inv, &err), 0, "%s", err.msg);
        size_t nx = (size_t)n_tok * n_head * hd;
        float *x = eq_rand(e, nx, -2, 2, 0);
        int32_t *pos = eq_rand_int(e, (size_t)n_tok, 8192);
        for (int b = 0; b < 2; b++) {
            rope_args a = {.n_tok = n_tok, .n_head = n_head, .head_dim = hd, .backward = b};
            a.x = eq_in(e, x, nx * 4);
            a.pos = eq_in(e, pos, (size_t)n_tok * 4);
            a.inv = eq_in(e, inv, (size_t)hd / 2 * 4);
            char cs[80];
            snprintf(cs, sizeof cs, "n_tok=%d n_head=%d head_dim=%d %s", n_tok, n_head, hd,
                     shapes[s][3] ? "llama3" : "default");
            const char *op = b ? "rope_backward" : "rope";
            eq_run(e, op, cs, rope_call, &a);
            eq_check_buf(e, op, cs, "x (in place)", a.x, nx, NULL, EQ_TOL);
            eq_free_all(e);
        }
        free(inv), free(x), free(pos);
    }
}
EQ_TEST(rope, 103)

/* ================= attention ================= */

typedef struct at_args {
    peso_attn_shape s;
    eq_buf out, lse, q, k, v, len, dq, dk, dv, dout, o_in, l_in;
} at_args;

static int at_fwd(eq *e, int cand, void *p, peso_err *err)
{
    at_args *a = p;
    peso_backend *be = eq_be(e, cand);
    return be->attention(be, &a->s, EQ_F(a->out, cand), EQ_F(a->lse, cand), EQ_F(a->q, cand),
                         EQ_F(a->k, cand), EQ_F(a->v, cand), EQ_I(a->len, cand), err);
}

static int at_bwd(eq *e, int cand, void *p, peso_err *err)
{
    at_args *a = p;
    peso_backend *be = eq_be(e, cand);
    return be->attention_backward(be, &a->s, EQ_F(a->dq, cand), EQ_F(a->dk, cand), EQ_F(a->dv, cand),
                                  EQ_F(a->dout, cand), EQ_F(a->q, cand), EQ_F(a->k, cand), EQ_F(a->v, cand),
                                  EQ_F(a->o_in, cand), EQ_F(a->l_in, cand), EQ_I(a->len, cand), err);
}

static void attention(eq *e)
{
    /* batch, seq, n_head, n_kv_head, head_dim */
    static const peso_attn_shape shapes[] = {
        {1, 1, 1, 1, 64}, {2, 7, 4, 4, 40}, {3, 33, 8, 2, 64}, {1, 127, 4, 1, 64}, {2, 64, 6, 3, 40},
    };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        peso_attn_shape s = shapes[si];
        size_t nq = (size_t)s.batch * s.seq * s.n_head * s.head_dim;
        size_t nk = (size_t)s.batch * s.seq * s.n_kv_head * s.head_dim;
        size_t nl = (size_t)s.batch * s.n_head * s.seq;
        /* lengths: full, empty (from 3 rows), the rest random */
        int32_t len[4];
        for (int b = 0; b < s.batch; b++)
            len[b] = b == 0 ? s.seq : b == 2 ? 0 : 1 + (int32_t)peso_rng_below(&e->rng, (uint64_t)s.seq);
        float *q = eq_rand(e, nq, -1, 1, 0), *k = eq_rand(e, nk, -1, 1, 0), *v = eq_rand(e, nk, -1, 1, 0);
        float *dout = eq_rand(e, nq, -1, 1, 0);
        char cs[120], lens[40] = "";
        for (int b = 0, at = 0; b < s.batch; b++)
            at += snprintf(lens + at, sizeof lens - (size_t)at, "%s%d", b ? "," : "", (int)len[b]);
        snprintf(cs, sizeof cs, "batch=%d seq=%d heads=%d/%d head_dim=%d lens=%s", s.batch, s.seq, s.n_head,
                 s.n_kv_head, s.head_dim, lens);
        at_args a = {.s = s};
        a.q = eq_in(e, q, nq * 4);
        a.k = eq_in(e, k, nk * 4);
        a.v = eq_in(e, v, nk * 4);
        a.len = eq_in(e, len, (size_t)s.batch * 4);
        a.out = eq_out(e, nq * 4);
        a.lse = eq_out(e, nl * 4);
        eq_run(e, "attention", cs, at_fwd, &a);
        eq_check_buf(e, "attention", cs, "out", a.out, nq, NULL, EQ_TOL);
        float *lr, *lc, *o_ref = malloc(nq * 4);
        eq_fetch(e, a.lse, nl, &lr, &lc);
        eq_get(e->ref, o_ref, a.out.r, nq * 4);
        /* lse on real rows only */
        size_t nreal = 0;
        float *rr = malloc(nl * 4), *cc = malloc(nl * 4);
        for (int b = 0; b < s.batch; b++)
            for (int h = 0; h < s.n_head; h++)
                for (int t = 0; t < len[b]; t++) {
                    size_t at = ((size_t)b * s.n_head + h) * s.seq + t;
                    rr[nreal] = lr[at];
                    cc[nreal++] = lc[at];
                }
        eq_check(e, "attention", cs, "lse (real rows)", cc, rr, nreal, NULL, EQ_TOL);
        eq_free_all(e);
        /* the backward from the reference's out and lse */
        static const char *variants[] = {"dq dk dv", "dq, dk dv NULL", "dq NULL, dk dv"};
        for (int vi = 0; vi < 3; vi++) {
            at_args b = {.s = s};
            b.q = eq_in(e, q, nq * 4);
            b.k = eq_in(e, k, nk * 4);
            b.v = eq_in(e, v, nk * 4);
            b.len = eq_in(e, len, (size_t)s.batch * 4);
            b.dout = eq_in(e, dout, nq * 4);
            b.o_in = eq_in(e, o_ref, nq * 4);
            b.l_in = eq_in(e, lr, nl * 4);
            if (vi != 2)
                b.dq = eq_in(e, q, nq * 4);
            if (vi != 1) {
                b.dk = eq_in(e, k, nk * 4);
                b.dv = eq_in(e, v, nk * 4);
            }
            eq_buf acc[3] = {b.dq, b.dk, b.dv};
            size_t n[3] = {nq, nk, nk};
            eq_acc_probe(e, "attention_backward", at_bwd, &b, acc, n, 3);
            char cb[160];
            snprintf(cb, sizeof cb, "%s %s", cs, variants[vi]);
            eq_run(e, "attention_backward", cb, at_bwd, &b);
            if (b.dq.r)
                eq_check_buf(e, "attention_backward", cb, "dq", b.dq, nq, NULL, EQ_TOL);
            if (b.dk.r) {
                eq_check_buf(e, "attention_backward", cb, "dk", b.dk, nk, NULL, EQ_TOL);
                eq_check_buf(e, "attention_backward", cb, "dv", b.dv, nk, NULL, EQ_TOL);
            }
            eq_free_all(e);
        }
        free(q), free(k), free(v), free(dout), free(lr), free(lc), free(rr), free(cc), free(o_ref);
    }
}
EQ_TEST(attention, 104)

/* ================= swiglu ================= */

typedef struct sw_args {
    size_t n;
    eq_buf h, g, u, dg, du, dh;
} sw_args;

static int sw_fwd(eq *e, int cand, void *p, peso_err *err)
{
    sw_args *a = p;
    peso_backend *be = eq_be(e, cand);
    return be->swiglu(be, EQ_F(a->h, cand), EQ_F(a->g, cand), EQ_F(a->u, cand), a->n, err);
}

static int sw_bwd(eq *e, int cand, void *p, peso_err *err)
{
    sw_args *a = p;
    peso_backend *be = eq_be(e, cand);
    return be->swiglu_backward(be, EQ_F(a->dg, cand), EQ_F(a->du, cand), EQ_F(a->dh, cand), EQ_F(a->g, cand),
                               EQ_F(a->u, cand), a->n, err);
}

static void swiglu(eq *e)
{
    static const size_t sizes[] = {1, 7, 33, 127 * 1408 + 1, (size_t)1 << 20};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        float *g = eq_rand(e, n, -6, 6, 0), *u = eq_rand(e, n, -2, 2, 0), *dh = eq_rand(e, n, -1, 1, 0);
        char cs[80];
        snprintf(cs, sizeof cs, "n=%zu", n);
        sw_args a = {.n = n};
        a.g = eq_in(e, g, n * 4);
        a.u = eq_in(e, u, n * 4);
        a.h = eq_out(e, n * 4);
        eq_run(e, "swiglu", cs, sw_fwd, &a);
        eq_check_buf(e, "swiglu", cs, "h", a.h, n, NULL, EQ_TOL);
        eq_free_all(e);
        static const char *variants[] = {"dg du", "dg, du NULL", "dg NULL, du"};
        for (int v = 0; v < 3; v++) {
            sw_args b = {.n = n};
            b.g = eq_in(e, g, n * 4);
            b.u = eq_in(e, u, n * 4);
            b.dh = eq_in(e, dh, n * 4);
            if (v != 2)
                b.dg = eq_in(e, g, n * 4);
            if (v != 1)
                b.du = eq_in(e, u, n * 4);
            eq_buf acc[2] = {b.dg, b.du};
            size_t len[2] = {n, n};
            eq_acc_probe(e, "swiglu_backward", sw_bwd, &b, acc, len, 2);
            char cb[120];
            snprintf(cb, sizeof cb, "%s %s", cs, variants[v]);
            eq_run(e, "swiglu_backward", cb, sw_bwd, &b);
            if (b.dg.r)
                eq_check_buf(e, "swiglu_backward", cb, "dg", b.dg, n, NULL, EQ_TOL);
            if (b.du.r)
                eq_check_buf(e, "swiglu_backward", cb, "du", b.du, n, NULL, EQ_TOL);
            eq_free_all(e);
        }
        free(g), free(u), free(dh);
    }
}
EQ_TEST(swiglu, 105)

/* ================= tables: embed, xent ================= */

/* A table of `rows` rows of `dim`, trainable [lo, hi); base: "full" (all
 * rows, NaN in the trainable ones, which must never be read), "short"
 * (only the rows before lo: trainable rows last) or "none" (all rows
 * trainable). */
typedef struct tab_case {
    int rows, dim, lo, hi;
    const char *base;
} tab_case;

static const tab_case tables[] = {
    {40, 64, 40, 40, "full"},
    {1000, 40, 990, 1000, "short"},
    {4099, 40, 100, 164, "full"},
    {33, 7, 0, 33, "none"},
};

typedef struct tab {
    peso_table t; /* shape; pointers set per side */
    eq_buf base, train;
    float *hbase, *htrain; /* host values (as the reference reads them) */
    size_t base_rows;
} tab;

static void tab_make(eq *e, tab *tb, const tab_case *tc, peso_dtype dt, double amp)
{
    memset(tb, 0, sizeof *tb);
    tb->t = (peso_table){
        .base_dtype = dt, .train_lo = tc->lo, .train_hi = tc->hi, .n_rows = tc->rows, .dim = tc->dim};
    tb->base_rows = strcmp(tc->base, "full") == 0    ? (size_t)tc->rows
                    : strcmp(tc->base, "short") == 0 ? (size_t)tc->lo
                                                     : 0;
    size_t ntr = (size_t)(tc->hi - tc->lo) * tc->dim;
    if (tb->base_rows) {
        tb->hbase = eq_rand(e, tb->base_rows * tc->dim, -amp, amp, dt == PESO_BF16);
        if (tb->base_rows == (size_t)tc->rows)
            for (size_t i = (size_t)tc->lo * tc->dim; i < (size_t)tc->hi * tc->dim; i++)
                tb->hbase[i] = NAN;
        tb->base = eq_weights(e, tb->hbase, tb->base_rows * tc->dim, dt);
    }
    if (ntr) {
        tb->htrain = eq_rand(e, ntr, -amp, amp, 0);
        tb->train = eq_in(e, tb->htrain, ntr * 4);
    }
}

static peso_table tab_side(const tab *tb, int cand)
{
    peso_table t = tb->t;
    t.base = EQ_P(tb->base, cand);
    t.train = EQ_F(tb->train, cand);
    if (!cand)
        t.base_dtype = PESO_F32;
    return t;
}

/* Row v as the reference reads it. */
static const float *tab_row(const tab *tb, int v)
{
    if (v >= tb->t.train_lo && v < tb->t.train_hi)
        return tb->htrain + (size_t)(v - tb->t.train_lo) * tb->t.dim;
    return tb->hbase + (size_t)v * tb->t.dim;
}

static void tab_free(tab *tb)
{
    free(tb->hbase);
    free(tb->htrain);
}

/* ids in [0, rows), every third one trainable when there are such rows */
static int32_t *tab_ids(eq *e, const tab_case *tc, int n)
{
    int32_t *ids = eq_rand_int(e, (size_t)n, tc->rows);
    for (int i = 0; i < n; i += 3)
        if (tc->hi > tc->lo)
            ids[i] = tc->lo + (int32_t)peso_rng_below(&e->rng, (uint64_t)(tc->hi - tc->lo));
    return ids;
}

typedef struct em_args {
    tab *tb;
    int n;
    eq_buf out, ids, dtrain, dout;
} em_args;

static int em_fwd(eq *e, int cand, void *p, peso_err *err)
{
    em_args *a = p;
    peso_backend *be = eq_be(e, cand);
    peso_table t = tab_side(a->tb, cand);
    return be->embed(be, &t, EQ_F(a->out, cand), EQ_I(a->ids, cand), a->n, err);
}

static int em_bwd(eq *e, int cand, void *p, peso_err *err)
{
    em_args *a = p;
    peso_backend *be = eq_be(e, cand);
    peso_table t = tab_side(a->tb, cand);
    return be->embed_backward(be, &t, EQ_F(a->dtrain, cand), EQ_F(a->dout, cand), EQ_I(a->ids, cand), a->n,
                              err);
}

static void embed(eq *e)
{
    static const int counts[] = {1, 7, 127};
    for (size_t ti = 0; ti < sizeof tables / sizeof tables[0]; ti++)
        for (int d = 0; d < 2; d++)
            for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
                const tab_case *tc = &tables[ti];
                int n = counts[ci];
                size_t no = (size_t)n * tc->dim, ntr = (size_t)(tc->hi - tc->lo) * tc->dim;
                tab tb;
                tab_make(e, &tb, tc, (peso_dtype)d, 1.0);
                int32_t *ids = tab_ids(e, tc, n);
                float *dout = eq_rand(e, no, -1, 1, 0);
                char cs[120];
                snprintf(cs, sizeof cs, "rows=%d dim=%d train=[%d,%d) base=%s/%s n=%d", tc->rows, tc->dim,
                         tc->lo, tc->hi, tc->base, peso_dtype_name((peso_dtype)d), n);
                em_args a = {.tb = &tb, .n = n};
                a.ids = eq_in(e, ids, (size_t)n * 4);
                a.out = eq_out(e, no * 4);
                eq_run(e, "embed", cs, em_fwd, &a);
                eq_check_buf(e, "embed", cs, "out", a.out, no, NULL, EQ_TOL);
                if (ntr) {
                    a.dout = eq_in(e, dout, no * 4);
                    a.dtrain = eq_in(e, tb.htrain, ntr * 4);
                    size_t len = ntr;
                    eq_acc_probe(e, "embed_backward", em_bwd, &a, &a.dtrain, &len, 1);
                    eq_run(e, "embed_backward", cs, em_bwd, &a);
                    eq_check_buf(e, "embed_backward", cs, "dtrain", a.dtrain, ntr, NULL, EQ_TOL);
                }
                eq_free_all(e);
                tab_free(&tb);
                free(ids), free(dout);
            }
}
EQ_TEST(embed, 106)

typedef struct xe_args {
    tab *tb;
    int n_tok, n_pos;
    float scale;
    eq_buf h, pos, target, losses, dh, dhead;
} xe_args;

static int xe_call(eq *e, int cand, void *p, peso_err *err)
{
    xe_args *a = p;
    peso_backend *be = eq_be(e, cand);
    peso_table t = tab_side(a->tb, cand);
    return be->xent(be, &t, EQ_F(a->h, cand), a->n_tok, EQ_I(a->pos, cand), EQ_I(a->target, cand), a->n_pos,
                    a->scale, EQ_F(a->losses, cand), EQ_F(a->dh, cand), EQ_F(a->dhead, cand), err);
}

/* The bf16-mode bounds of the file's header: scales of the losses, of dh
 * and of dhead, and the gradients' tolerance. */
typedef struct xe_bound {
    double *s_loss, *s_dh, *s_dhead;
    double tol_grad;
} xe_bound;

static void xe_bound_make(xe_bound *b, const tab *tb, const float *h, const int32_t *pos,
                          const int32_t *target, int n_tok, int n_pos, float scale)
{
    int V = tb->t.n_rows, dim = tb->t.dim, lo = tb->t.train_lo, hi = tb->t.train_hi;
    double u = EQ_BF16_U, *S = malloc((size_t)V * sizeof *S), *l = malloc((size_t)V * sizeof *l);
    b->s_loss = calloc((size_t)n_pos, sizeof(double));
    b->s_dh = calloc((size_t)n_tok * dim, sizeof(double));
    b->s_dhead = calloc((size_t)(hi - lo) * dim + 1, sizeof(double));
    double worst = 0.0;
    for (int p = 0; p < n_pos; p++) {
        const float *hp = h + (size_t)pos[p] * dim;
        double smax = 0.0, mx = -INFINITY, z = 0.0;
        for (int v = 0; v < V; v++) {
            const float *row = tab_row(tb, v);
            double s = 0.0, dot = 0.0;
            for (int j = 0; j < dim; j++) {
                s += fabs((double)row[j] * hp[j]);
                dot += (double)row[j] * hp[j];
            }
            S[v] = s;
            l[v] = dot;
            smax = fmax(smax, s);
            mx = fmax(mx, dot);
        }
        for (int v = 0; v < V; v++)
            z += exp(l[v] - mx);
        b->s_loss[p] = 2.0 * smax;
        worst = fmax(worst, expm1(2.0 * 2.0 * u * smax));
        for (int v = 0; v < V; v++) {
            double w = scale * (exp(l[v] - mx) / z + (v == target[p]));
            const float *row = tab_row(tb, v);
            for (int j = 0; j < dim; j++)
                b->s_dh[(size_t)pos[p] * dim + j] += w * fabs((double)row[j]);
            if (v >= lo && v < hi)
                for (int j = 0; j < dim; j++)
                    b->s_dhead[(size_t)(v - lo) * dim + j] += w * fabs((double)hp[j]);
        }
    }
    b->tol_grad = worst + 2.0 * u;
    free(S);
    free(l);
}

/* Adds |r_i| EQ_TOL / tol to each scale (the header's float32 slack). */
static void xe_slack(double *s, const float *r, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++)
        s[i] += fabs((double)r[i]) * EQ_TOL / tol;
}

static void xe_check(eq *e, const char *cs, const char *what, eq_buf b, size_t n, double *s, double tol)
{
    float *r, *c;
    eq_fetch(e, b, n, &r, &c);
    if (s)
        xe_slack(s, r, n, tol);
    eq_check(e, "xent", cs, what, c, r, n, s, tol);
    free(r);
    free(c);
}

static void xent(eq *e)
{
    static const int sizes[][2] = {{1, 1}, {33, 17}, {127, 64}};
    static const char *variants[] = {"dh dhead", "dh, dhead NULL", "dh NULL, dhead", "no gradients"};
    int vi = 0;
    for (size_t ti = 0; ti < sizeof tables / sizeof tables[0]; ti++)
        for (int d = 0; d < 2; d++)
            for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++, vi++) {
                const tab_case *tc = &tables[ti];
                int n_tok = sizes[si][0], n_pos = sizes[si][1], var = vi % 4;
                size_t nh = (size_t)n_tok * tc->dim, ntr = (size_t)(tc->hi - tc->lo) * tc->dim;
                if (!ntr && (var == 0 || var == 2))
                    var = 1; /* no trainable rows: no dhead */
                tab tb;
                tab_make(e, &tb, tc, (peso_dtype)d, 0.5);
                float *h = eq_rand(e, nh, -1, 1, 0);
                int32_t *pos = eq_rand_int(e, (size_t)n_pos, n_tok), *target = tab_ids(e, tc, n_pos);
                xe_args a = {.tb = &tb, .n_tok = n_tok, .n_pos = n_pos, .scale = 1.0f / (float)n_pos};
                a.h = eq_in(e, h, nh * 4);
                a.pos = eq_in(e, pos, (size_t)n_pos * 4);
                a.target = eq_in(e, target, (size_t)n_pos * 4);
                a.losses = eq_out(e, (size_t)n_pos * 4);
                if (var == 0 || var == 1)
                    a.dh = eq_in(e, h, nh * 4);
                if (var == 0 || var == 2)
                    a.dhead = eq_in(e, tb.htrain, ntr * 4);
                eq_buf acc[2] = {a.dh, a.dhead};
                size_t len[2] = {nh, ntr};
                eq_acc_probe(e, "xent", xe_call, &a, acc, len, 2);
                eq_poison(e, a.losses, (size_t)n_pos * 4);
                char cs[160];
                snprintf(cs, sizeof cs, "V=%d dim=%d train=[%d,%d) base=%s/%s n_tok=%d n_pos=%d %s", tc->rows,
                         tc->dim, tc->lo, tc->hi, tc->base, peso_dtype_name((peso_dtype)d), n_tok, n_pos,
                         variants[var]);
                eq_run(e, "xent", cs, xe_call, &a);
                xe_bound b = {0};
                if (!e->f32)
                    xe_bound_make(&b, &tb, h, pos, target, n_tok, n_pos, a.scale);
                double tl = e->f32 ? EQ_TOL : 2.0 * EQ_BF16_U, tg = e->f32 ? EQ_TOL : b.tol_grad;
                xe_check(e, cs, "losses", a.losses, (size_t)n_pos, b.s_loss, tl);
                if (a.dh.r)
                    xe_check(e, cs, "dh", a.dh, nh, b.s_dh, tg);
                if (a.dhead.r)
                    xe_check(e, cs, "dhead", a.dhead, ntr, b.s_dhead, tg);
                free(b.s_loss), free(b.s_dh), free(b.s_dhead);
                eq_free_all(e);
                tab_free(&tb);
                free(h), free(pos), free(target);
            }
}
EQ_TEST(xent, 107)

/* ================= optimizer and flat reductions ================= */

typedef struct ad_args {
    size_t n;
    peso_adamw hp;
    eq_buf param, grad, m, v;
} ad_args;

static int ad_call(eq *e, int cand, void *p, peso_err *err)
{
    ad_args *a = p;
    peso_backend *be = eq_be(e, cand);
    return be->adamw(be, EQ_F(a->param, cand), EQ_F(a->grad, cand), EQ_F(a->m, cand), EQ_F(a->v, cand), a->n,
                     &a->hp, err);
}

static void adamw(eq *e)
{
    static const size_t sizes[] = {1, 7, 1000, ((size_t)1 << 20) + 3};
    static const peso_adamw hps[] = {
        {1e-3, 0.9, 0.999, 1e-8, 0.01, 1.0, 1},
        {0.05, 0.9, 0.95, 1e-6, 0.0, 0.37, 7},
        {2e-4, 0.8, 0.999, 1e-8, 0.1, 1.0, 1000},
    };
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
        for (size_t hi = 0; hi < sizeof hps / sizeof hps[0]; hi++) {
            size_t n = sizes[si];
            float *p = eq_rand(e, n, -1, 1, 0), *g = eq_rand(e, n, -1, 1, 0);
            float *m = eq_rand(e, n, -0.1, 0.1, 0), *v = eq_rand(e, n, 0, 0.01, 0);
            ad_args a = {.n = n, .hp = hps[hi]};
            a.param = eq_in(e, p, n * 4);
            a.grad = eq_in(e, g, n * 4);
            a.m = eq_in(e, m, n * 4);
            a.v = eq_in(e, v, n * 4);
            char cs[120];
            snprintf(cs, sizeof cs, "n=%zu lr=%g wd=%g grad_scale=%g step=%ld", n, hps[hi].lr,
                     hps[hi].weight_decay, hps[hi].grad_scale, hps[hi].step);
            eq_run(e, "adamw", cs, ad_call, &a);
            eq_check_buf(e, "adamw", cs, "param", a.param, n, NULL, EQ_TOL);
            eq_check_buf(e, "adamw", cs, "m", a.m, n, NULL, EQ_TOL);
            eq_check_buf(e, "adamw", cs, "v", a.v, n, NULL, EQ_TOL);
            eq_free_all(e);
            free(p), free(g), free(m), free(v);
        }
}
EQ_TEST(adamw, 108)

typedef struct ss_args {
    size_t n;
    float s;
    eq_buf x;
    double value[2];
} ss_args;

static int ss_call(eq *e, int cand, void *p, peso_err *err)
{
    ss_args *a = p;
    peso_backend *be = eq_be(e, cand);
    return be->sumsq(be, EQ_F(a->x, cand), a->n, &a->value[cand], err);
}

static int sc_call(eq *e, int cand, void *p, peso_err *err)
{
    ss_args *a = p;
    peso_backend *be = eq_be(e, cand);
    return be->scale(be, EQ_F(a->x, cand), a->n, a->s, err);
}

static void sumsq_scale(eq *e)
{
    static const size_t sizes[] = {1, 7, 1000, ((size_t)1 << 22) + 5};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        float *x = eq_rand(e, n, -1, 1, 0);
        char cs[80];
        snprintf(cs, sizeof cs, "n=%zu", n);
        ss_args a = {.n = n};
        a.x = eq_in(e, x, n * 4);
        eq_run(e, "sumsq", cs, ss_call, &a);
        eq_check_value(e, "sumsq", cs, "value", a.value[1], a.value[0], EQ_TOL);
        for (int k = 0; k < 2; k++) {
            a.s = k ? -3.0f : 0.37f;
            snprintf(cs, sizeof cs, "n=%zu s=%g", n, (double)a.s);
            eq_run(e, "scale", cs, sc_call, &a);
            eq_check_buf(e, "scale", cs, "x (in place)", a.x, n, NULL, EQ_TOL);
        }
        eq_free_all(e);
        free(x);
    }
}
EQ_TEST(sumsq_scale, 109)

/* ================= proximal terms ================= */

typedef struct px_args {
    int op; /* 0 kl, 1 l2, 2 ortho */
    const peso_prox_groups *gs;
    int rank, lo, hi;
    double lambda;
    eq_buf v, vp, grad;
    double value[2];
} px_args;

static const char *const px_names[] = {"prox_kl", "prox_l2", "prox_ortho"};

static int px_call(eq *e, int cand, void *p, peso_err *err)
{
    px_args *a = p;
    peso_backend *be = eq_be(e, cand);
    const float *v = EQ_F(a->v, cand), *vp = EQ_F(a->vp, cand);
    float *g = EQ_F(a->grad, cand);
    double *val = &a->value[cand];
    switch (a->op) {
    case 0: return be->prox_kl(be, a->gs, a->lo, a->hi, v, vp, a->lambda, g, val, err);
    case 1: return be->prox_l2(be, a->gs, a->lo, a->hi, v, vp, a->lambda, g, val, err);
    default: return be->prox_ortho(be, a->gs, a->rank, a->lo, a->hi, v, vp, a->lambda, g, val, err);
    }
}

static void px_run(eq *e, const char *model, const peso_lora *l, size_t numel, int op, peso_prox_grouping how)
{
    peso_err err = {{0}};
    peso_prox_groups gs;
    cr_assert_eq(peso_prox_groups_build(&gs, l, how, &err), 0, "%s", err.msg);
    float *vp = eq_rand(e, numel, -1, 1, 0), *v = malloc(numel * 4);
    for (size_t i = 0; i < numel; i++)
        v[i] = vp[i] + (float)(0.25 * peso_rng_normal(&e->rng));
    for (int shard = 0; shard < 2; shard++)
        for (int with_grad = 0; with_grad < 2; with_grad++) {
            px_args a = {.op = op, .gs = &gs, .rank = l->conf.rank, .lo = 0, .hi = gs.n, .lambda = 0.7};
            if (shard)
                cr_assert_eq(peso_prox_shard(&gs, 3, 1, &a.lo, &a.hi, &err), 0, "%s", err.msg);
            a.v = eq_in(e, v, numel * 4);
            a.vp = eq_in(e, vp, numel * 4);
            if (with_grad)
                a.grad = eq_in(e, v, numel * 4);
            eq_acc_probe(e, px_names[op], px_call, &a, &a.grad, &numel, 1);
            char cs[160];
            snprintf(cs, sizeof cs, "%s %s groups [%d,%d) of %d%s", model, peso_prox_grouping_name(how), a.lo,
                     a.hi, gs.n, with_grad ? "" : " grad NULL");
            eq_run(e, px_names[op], cs, px_call, &a);
            eq_check_value(e, px_names[op], cs, "value", a.value[1], a.value[0], EQ_TOL);
            if (with_grad)
                eq_check_buf(e, px_names[op], cs, "grad", a.grad, numel, NULL, EQ_TOL);
            eq_free_all(e);
        }
    free(v);
    free(vp);
    peso_prox_groups_free(&gs);
}

static void prox(eq *e)
{
    /* hidden 8 (two layers, rank 2, q v down); hidden 128 (three layers,
     * rank 8, all seven: over the cpu backend's threading threshold) */
    for (int wide = 0; wide < 2; wide++) {
        peso_llama_config mc;
        peso_llama_config_defaults(&mc);
        mc.hidden_size = wide ? 128 : 8;
        mc.intermediate_size = wide ? 256 : 12;
        mc.num_hidden_layers = wide ? 3 : 2;
        mc.num_attention_heads = wide ? 4 : 2;
        mc.num_key_value_heads = wide ? 2 : 1;
        mc.head_dim = wide ? 32 : 4;
        peso_lora_conf lc = {wide ? 8 : 2, wide ? 16.0 : 4.0,
                             wide ? PESO_LORA_ALL
                                  : (1u << PESO_LORA_Q) | (1u << PESO_LORA_V) | (1u << PESO_LORA_DOWN)};
        peso_flat f;
        peso_lora l;
        peso_err err = {{0}};
        peso_flat_init(&f);
        cr_assert_eq(peso_lora_layout(&l, &lc, &mc, &f, &err), 0, "%s", err.msg);
        const char *model = wide ? "hidden=128 rank=8 all" : "hidden=8 rank=2 q,v,down";
        for (int how = 0; how < PESO_PROX_NGROUPING; how++)
            px_run(e, model, &l, f.numel, 0, (peso_prox_grouping)how);
        px_run(e, model, &l, f.numel, 1, PESO_PROX_MODULE);
        px_run(e, model, &l, f.numel, 2, PESO_PROX_MODULE);
        peso_lora_free(&l);
        peso_flat_free(&f);
    }
}
EQ_TEST(prox, 110)

/* ================= row softmax-KL ================= */

typedef struct rk_args {
    int B, T, d, in_place;
    double scale;
    eq_buf z, zp, lens, dz;
    double value[2];
} rk_args;

static int rk_call(eq *e, int cand, void *p, peso_err *err)
{
    rk_args *a = p;
    peso_backend *be = eq_be(e, cand);
    float *dz = a->in_place ? EQ_F(a->z, cand) : EQ_F(a->dz, cand);
    return be->row_kl(be, EQ_F(a->z, cand), EQ_F(a->zp, cand), EQ_I(a->lens, cand), a->B, a->T, a->d,
                      a->scale, dz, &a->value[cand], err);
}

static void row_kl(eq *e)
{
    static const struct {
        int B, T, d;
        int32_t lens[4];
    } cases[] = {
        {1, 1, 7, {1}},
        {3, 33, 64, {33, 0, 17}},
        {2, 17, 1408, {5, 17}},
        {4, 8, 40, {8, 1, 0, 3}},
    };
    static const char *variants[] = {"dz", "dz NULL", "dz = z"};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (int v = 0; v < 3; v++) {
            int B = cases[ci].B, T = cases[ci].T, d = cases[ci].d;
            size_t nz = (size_t)B * T * d;
            float *z = eq_rand(e, nz, -3, 3, 0), *zp = eq_rand(e, nz, -3, 3, 0);
            rk_args a = {.B = B, .T = T, .d = d, .in_place = v == 2, .scale = 0.5};
            a.z = eq_in(e, z, nz * 4);
            a.zp = eq_in(e, zp, nz * 4);
            a.lens = eq_in(e, cases[ci].lens, (size_t)B * 4);
            if (v == 0)
                a.dz = eq_out(e, nz * 4);
            char cs[120], lens[40] = "";
            for (int b = 0, at = 0; b < B; b++)
                at += snprintf(lens + at, sizeof lens - (size_t)at, "%s%d", b ? "," : "",
                               (int)cases[ci].lens[b]);
            snprintf(cs, sizeof cs, "B=%d T=%d d=%d lens=%s %s", B, T, d, lens, variants[v]);
            eq_run(e, "row_kl", cs, rk_call, &a);
            eq_check_value(e, "row_kl", cs, "value", a.value[1], a.value[0], EQ_TOL);
            if (v == 0)
                eq_check_buf(e, "row_kl", cs, "dz", a.dz, nz, NULL, EQ_TOL);
            if (v == 2)
                eq_check_buf(e, "row_kl", cs, "dz (over z)", a.z, nz, NULL, EQ_TOL);
            eq_free_all(e);
            free(z), free(zp);
        }
}
EQ_TEST(row_kl, 111)

/* ================= rows by index ================= */

typedef struct gr_args {
    int n_src, width, n;
    eq_buf dst, src, idx;
} gr_args;

static int gr_call(eq *e, int cand, void *p, peso_err *err)
{
    gr_args *a = p;
    peso_backend *be = eq_be(e, cand);
    return be->gather_rows(be, EQ_F(a->dst, cand), EQ_F(a->src, cand), a->n_src, a->width, EQ_I(a->idx, cand),
                           a->n, err);
}

static void gather_rows(eq *e)
{
    static const int cases[][3] = {{1, 1, 1}, {40, 64, 7}, {1000, 40, 127}, {33, 1408, 33}, {5, 7, 1000}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int n_src = cases[ci][0], width = cases[ci][1], n = cases[ci][2];
        size_t ns = (size_t)n_src * width, nd = (size_t)n * width;
        float *src = eq_rand(e, ns, -1, 1, 0);
        int32_t *idx = eq_rand_int(e, (size_t)n, n_src);
        gr_args a = {.n_src = n_src, .width = width, .n = n};
        a.src = eq_in(e, src, ns * 4);
        a.idx = eq_in(e, idx, (size_t)n * 4);
        a.dst = eq_out(e, nd * 4);
        char cs[80];
        snprintf(cs, sizeof cs, "n_src=%d width=%d n=%d", n_src, width, n);
        eq_run(e, "gather_rows", cs, gr_call, &a);
        eq_check_buf(e, "gather_rows", cs, "dst", a.dst, nd, NULL, EQ_TOL);
        eq_free_all(e);
        free(src), free(idx);
    }
}
EQ_TEST(gather_rows, 112)

/* ================= decoding ================= */

typedef struct ls_args {
    int n, V, n_sel;
    eq_buf out, lse, x, sel;
} ls_args;

static int ls_call(eq *e, int cand, void *p, peso_err *err)
{
    ls_args *a = p;
    peso_backend *be = eq_be(e, cand);
    return be->log_softmax_sel(be, EQ_F(a->out, cand), EQ_F(a->lse, cand), EQ_F(a->x, cand), a->n, a->V,
                               EQ_I(a->sel, cand), a->n_sel, err);
}

static void log_softmax_sel(eq *e)
{
    if (!eq_has(e, "log_softmax_sel", e->ref->log_softmax_sel != NULL, e->cand->log_softmax_sel != NULL))
        return;
    static const int cases[][3] = {{1, 40, 40}, {7, 1000, 33}, {4, 128259, 1024}, {3, 5, 1}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (int with_lse = 0; with_lse < 2; with_lse++) {
            int n = cases[ci][0], V = cases[ci][1], n_sel = cases[ci][2];
            size_t nx = (size_t)n * V, no = (size_t)n * n_sel;
            float *x = eq_rand(e, nx, -10, 10, 0);
            int32_t *sel = eq_rand_int(e, (size_t)n_sel, V);
            ls_args a = {.n = n, .V = V, .n_sel = n_sel};
            a.x = eq_in(e, x, nx * 4);
            a.sel = eq_in(e, sel, (size_t)n_sel * 4);
            a.out = eq_out(e, no * 4);
            if (with_lse)
                a.lse = eq_out(e, (size_t)n * 4);
            char cs[80];
            snprintf(cs, sizeof cs, "n=%d V=%d n_sel=%d lse=%s", n, V, n_sel, with_lse ? "yes" : "NULL");
            eq_run(e, "log_softmax_sel", cs, ls_call, &a);
            eq_check_buf(e, "log_softmax_sel", cs, "out", a.out, no, NULL, EQ_TOL);
            if (with_lse)
                eq_check_buf(e, "log_softmax_sel", cs, "lse", a.lse, (size_t)n, NULL, EQ_TOL);
            eq_free_all(e);
            free(x), free(sel);
        }
}
EQ_TEST(log_softmax_sel, 113)

typedef struct da_args {
    peso_decode_attn_shape s;
    eq_buf out, q, pk, pv, ok, ov;
} da_args;

static int da_call(eq *e, int cand, void *p, peso_err *err)
{
    da_args *a = p;
    peso_backend *be = eq_be(e, cand);
    return be->decode_attention(be, &a->s, EQ_F(a->out, cand), EQ_F(a->q, cand), EQ_F(a->pk, cand),
                                EQ_F(a->pv, cand), EQ_F(a->ok, cand), EQ_F(a->ov, cand), err);
}

static void decode_attention(eq *e)
{
    if (!eq_has(e, "decode_attention", e->ref->decode_attention != NULL, e->cand->decode_attention != NULL))
        return;
    /* n_beam, n_head, n_kv_head, head_dim, n_prefix, n_own, own_stride */
    static const peso_decode_attn_shape shapes[] = {
        {1, 1, 1, 64, 0, 1, 1},   {4, 8, 2, 64, 33, 3, 4}, {3, 6, 3, 40, 127, 5, 7},
        {8, 4, 1, 64, 100, 4, 8}, {2, 32, 8, 64, 0, 7, 2}, {5, 4, 4, 40, 1, 1, 5},
    };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        peso_decode_attn_shape s = shapes[si];
        size_t kv = (size_t)s.n_kv_head * s.head_dim, nq = (size_t)s.n_beam * s.n_head * s.head_dim;
        size_t np = (size_t)s.n_prefix * kv, no = (size_t)s.n_own * s.own_stride * kv;
        float *q = eq_rand(e, nq, -1, 1, 0), *pk = eq_rand(e, np, -1, 1, 0), *pv = eq_rand(e, np, -1, 1, 0);
        float *ok = eq_rand(e, no, -1, 1, 0), *ov = eq_rand(e, no, -1, 1, 0);
        da_args a = {.s = s};
        a.q = eq_in(e, q, nq * 4);
        if (np) {
            a.pk = eq_in(e, pk, np * 4);
            a.pv = eq_in(e, pv, np * 4);
        }
        a.ok = eq_in(e, ok, no * 4);
        a.ov = eq_in(e, ov, no * 4);
        a.out = eq_out(e, nq * 4);
        char cs[120];
        snprintf(cs, sizeof cs, "beams=%d heads=%d/%d head_dim=%d prefix=%d own=%d stride=%d", s.n_beam,
                 s.n_head, s.n_kv_head, s.head_dim, s.n_prefix, s.n_own, s.own_stride);
        eq_run(e, "decode_attention", cs, da_call, &a);
        eq_check_buf(e, "decode_attention", cs, "out", a.out, nq, NULL, EQ_TOL);
        eq_free_all(e);
        free(q), free(pk), free(pv), free(ok), free(ov);
    }
}
EQ_TEST(decode_attention, 114)

/* ================= memory ================= */

/* Byte equality of the two sides of b: err 0 or infinite. */
static void mem_check(eq *e, const char *cs, const char *what, eq_buf b, size_t bytes)
{
    unsigned char *r = malloc(bytes), *c = malloc(bytes);
    eq_get(e->ref, r, b.r, bytes);
    eq_get(e->cand, c, b.c, bytes);
    eq_report(e, "memory", cs, what, memcmp(r, c, bytes) == 0 ? 0.0 : INFINITY, 0.0);
    free(r);
    free(c);
}

static void memory(eq *e)
{
    static const size_t sizes[] = {1, 3, 4097, ((size_t)1 << 20) + 1};
    peso_err err = {{0}};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        char cs[80];
        snprintf(cs, sizeof cs, "bytes=%zu", n);
        eq_buf a = {eq_alloc_on(e, e->ref, n), eq_alloc_on(e, e->cand, n)};
        eq_buf b = {eq_alloc_on(e, e->ref, n), eq_alloc_on(e, e->cand, n)};
        /* alloc returns zeroed memory (the reference's is zero) */
        mem_check(e, cs, "alloc zeroed", a, n);
        unsigned char *host = malloc(n);
        for (size_t i = 0; i < n; i++)
            host[i] = (unsigned char)peso_rng_below(&e->rng, 256);
        eq_set(e, a, host, n);
        eq_set(e, b, host, n);
        mem_check(e, cs, "upload, download", a, n);
        /* an odd range: zero, upload at an offset, copy between buffers */
        size_t off = n / 3, len = n - off - (n > 2 ? 1 : 0);
        for (int cand = 0; cand < 2; cand++) {
            peso_backend *be = eq_be(e, cand);
            unsigned char *pa = EQ_P(a, cand), *pb = EQ_P(b, cand);
            cr_assert_eq(be->zero(be, pa + off, len, &err), 0, "%s zero: %s", be->name, err.msg);
            cr_assert_eq(be->upload(be, pb + off, host, len, &err), 0, "%s upload: %s", be->name, err.msg);
            cr_assert_eq(be->copy(be, pa, pb + off, len / 2, &err), 0, "%s copy: %s", be->name, err.msg);
            if (be->sync)
                cr_assert_eq(be->sync(be, &err), 0, "%s sync: %s", be->name, err.msg);
        }
        mem_check(e, cs, "zero, copy", a, n);
        mem_check(e, cs, "upload at an offset", b, n);
        unsigned char *part = malloc(len ? len : 1);
        memset(part, 0, len);
        eq_get(e->cand, part, (unsigned char *)b.c + off, len);
        eq_report(e, "memory", cs, "download at an offset", memcmp(part, host, len) == 0 ? 0.0 : INFINITY,
                  0.0);
        free(part);
        free(host);
        eq_free_all(e);
    }
}
EQ_TEST(memory, 115)
