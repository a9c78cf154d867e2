/* The backend-equivalence harness, after ggml's test-backend-ops: a
 * candidate backend (cuda) and the cpu backend, the reference, are called
 * on the same fresh random inputs and their outputs are compared element
 * by element. Shared by tests/backend/test_equiv_ops.c (every table entry)
 * and tests/model/test_equiv_model.c (the whole model).
 *
 * Candidate. PESO_EQUIV_CANDIDATE names it ("cuda" when unset), opened on
 * device -1 in the test's mode: "f32" (peso_backend_opts.f32 = 1, products
 * in float32) or "bf16" (bf16 product operands, float32 accumulation).
 * When it cannot be opened (no GPU visible, or a build without CUDA) every
 * test skips, PESO_TEST_STRICT or not: that is tests/skip.sh's skip_no_gpu
 * rule (CI has every set-up but a GPU), so it does not go through
 * peso_test_missing, which fails under strict mode. PESO_EQUIV_REQUIRE=1
 * (tools/gpu-check.sh sets it on the GPU machine) makes that a failure, so
 * a run meant to compare can never pass by skipping.
 * PESO_EQUIV_CANDIDATE=emu checks this harness on a machine without a GPU
 * (see eq_emu below); it says nothing about the GPU.
 *
 * Outputs. An output the entry overwrites is filled with 0xff bytes (NaN
 * in every float) on the candidate before the call, so an element it does
 * not write fails; on the reference it is zeroed. An output the entry adds
 * into (+=) starts from the same contents on both: random multiples of the
 * size of the reference's own increment (eq_acc_probe), so that neither
 * dwarfs the other. In-place tensors (rope, scale, adamw) start equal.
 *
 * Criterion. For each output tensor one line goes to stdout,
 *   EQUIV|op|mode|case|output|max err|tolerance|PASS or FAIL
 * (tools/gpu-check.sh makes its table from them), with
 *   err = max_i |c_i - r_i| / s_i      (c candidate, r reference),
 * a NaN or infinity in c counting as an infinite error, and s_i the scale
 * of element i:
 * - "mixed" (the default): s_i = max(|r_i|, rms(r)), rms over the whole
 *   output tensor. Elements at least as large as the typical one are
 *   compared relatively; smaller ones, which come from cancellation in
 *   sums whose terms have the typical size, are compared absolutely at
 *   that size. (Relative alone fails correct float32 code on every element
 *   that cancels to near 0; absolute alone is blind in small tensors.)
 * - products (matmul): s_ij = |alpha| sum_k |op(A)_ik| |op(B)_kj|
 *   + |beta| |C_ij|, the quantity that bounds the rounding error of any
 *   order of summation. In bf16 mode the candidate rounds A and B to bf16
 *   (relative error <= u = 2^-8 each), so each term of the sum is off by
 *   at most (1 + u)^2 - 1 ~= 2u of its size: |c - r| <= 2u s_ij plus
 *   float32 accumulation.
 * - host scalars (sumsq, the prox_* and row_kl values, model losses):
 *   |c - r| / |r|.
 * Tolerances: EQ_TOL = 1e-5 for every output in f32 mode, and in bf16
 * mode for every entry that is float32 whatever the mode (backend.h: all
 * but the products); EQ_TOL_BF16_PRODUCT = 2u + EQ_TOL with the product
 * scale for matmul in bf16 mode; xent's head product in bf16 mode has the
 * bound derived in test_equiv_ops.c. 1e-5 is about 170 float32 unit
 * roundoffs (2^-24): room for another order of summation over thousands
 * of terms and for libm functions a few ulps apart, but far below TF32
 * (2^-11) or bf16 (2^-8) rounding, a missing term or a wrong index. */
#ifndef PESO_TESTS_BACKEND_EQUIV_H
#define PESO_TESTS_BACKEND_EQUIV_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "common/rng.h"

#define EQ_TOL 1e-5
#define EQ_BF16_U (1.0 / 256.0)
#define EQ_TOL_BF16_PRODUCT (2.0 * EQ_BF16_U + EQ_TOL)

/* ---- bf16 on the host (round to nearest even; inputs are finite) ---- */

static inline uint16_t eq_bf16_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) /* inf and NaN keep their top half */
        return (uint16_t)(u >> 16 | ((u & 0xffffu) ? 0x40u : 0u));
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float eq_bf16_float(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static inline float eq_bf16_round(float x)
{
    return eq_bf16_float(eq_bf16_bits(x));
}

/* ---- the self-check candidate ----
 * "emu": the cpu backend wrapped so that it rounds differently from
 * itself, as another correct float32 implementation would. Products are
 * summed in two halves of k (another order of summation), every float an
 * entry writes is moved by one ulp up or down at random (zeros stay
 * zero), bf16 weights are widened to float32, and in bf16 mode the
 * operands of the products (matmul's A and B, xent's h and head) are
 * rounded to bf16 first. The suite must pass it: that shows every case
 * runs and the tolerances admit float32 code that rounds differently.
 * Entries the cpu backend lacks are NULL here too. */

typedef struct eq_emu {
    peso_backend be; /* first: the table the tests call */
    peso_backend *cpu;
    int f32;
    peso_rng noise;
} eq_emu;

static inline eq_emu *eq_emu_of(peso_backend *be)
{
    return (eq_emu *)be;
}

static inline void eq_emu_ulp(peso_backend *be, float *x, size_t n)
{
    eq_emu *u = eq_emu_of(be);
    for (size_t i = 0; i < n; i++)
        if (x[i] != 0.0f && isfinite(x[i]))
            x[i] = nextafterf(x[i], peso_rng_below(&u->noise, 2) ? INFINITY : -INFINITY);
}

static inline float *eq_emu_widen(const void *src, peso_dtype dt, size_t n, int round)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        x[i] = dt == PESO_BF16 ? eq_bf16_float(((const uint16_t *)src)[i]) : ((const float *)src)[i];
        if (round)
            x[i] = eq_bf16_round(x[i]);
    }
    return x;
}

static inline int eq_emu_alloc(peso_backend *be, void **p, size_t bytes, peso_err *err)
{
    peso_backend *c = eq_emu_of(be)->cpu;
    return c->alloc(c, p, bytes, err);
}
static inline void eq_emu_free(peso_backend *be, void *p)
{
    peso_backend *c = eq_emu_of(be)->cpu;
    c->free(c, p);
}
static inline int eq_emu_zero(peso_backend *be, void *p, size_t bytes, peso_err *err)
{
    peso_backend *c = eq_emu_of(be)->cpu;
    return c->zero(c, p, bytes, err);
}
static inline int eq_emu_copy(peso_backend *be, void *dst, const void *src, size_t bytes, peso_err *err)
{
    peso_backend *c = eq_emu_of(be)->cpu;
    return c->copy(c, dst, src, bytes, err);
}
static inline int eq_emu_sync(peso_backend *be, peso_err *err)
{
    (void)be;
    (void)err;
    return 0;
}

/* op(X) of one product as a dense row-major [rows, cols] float matrix. */
static inline void eq_emu_op(float *dst, const void *src, peso_dtype dt, int trans, int rows, int cols,
                             int round)
{
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            size_t at = trans ? (size_t)j * rows + r : (size_t)r * cols + j;
            float x = dt == PESO_BF16 ? eq_bf16_float(((const uint16_t *)src)[at]) : ((const float *)src)[at];
            dst[(size_t)r * cols + j] = round ? eq_bf16_round(x) : x;
        }
}

static inline int eq_emu_matmul(peso_backend *be, const peso_gemm *g, float *c, const float *a, const void *b,
                                peso_err *err)
{
    eq_emu *u = eq_emu_of(be);
    if (peso_gemm_check(be, g, err) < 0)
        return -1;
    int m = g->m, n = g->n, k = g->k, round = !u->f32;
    int k1 = k >= 2 ? k / 2 : k;
    size_t esz = peso_dtype_size(g->b_dtype);
    float *oa = malloc((size_t)m * k * sizeof *oa), *ob = malloc((size_t)k * n * sizeof *ob);
    float *ha = malloc((size_t)m * k * sizeof *ha);
    int rc = 0;
    for (int i = 0; i < g->batch && rc == 0; i++) {
        eq_emu_op(oa, a + (size_t)i * g->stride_a, PESO_F32, g->trans_a, m, k, round);
        eq_emu_op(ob, (const char *)b + (size_t)i * g->stride_b * esz, g->b_dtype, g->trans_b, k, n, round);
        float *ci = c + (size_t)i * g->stride_c;
        for (int half = 0; half < 2 && rc == 0; half++) {
            int k0 = half ? k1 : 0, kh = half ? k - k1 : k1;
            if (kh == 0)
                continue;
            for (int r = 0; r < m; r++)
                memcpy(ha + (size_t)r * kh, oa + (size_t)r * k + k0, (size_t)kh * sizeof *ha);
            peso_gemm h = {.m = m,
                           .n = n,
                           .k = kh,
                           .alpha = g->alpha,
                           .beta = half ? 1.0f : g->beta,
                           .b_dtype = PESO_F32,
                           .batch = 1,
                           .alpha_dev = g->alpha_dev};
            rc = u->cpu->matmul(u->cpu, &h, ci, ha, ob + (size_t)k0 * n, err);
        }
        if (rc == 0)
            eq_emu_ulp(be, ci, (size_t)m * n);
    }
    free(oa);
    free(ob);
    free(ha);
    return rc;
}

static inline int eq_emu_rmsnorm(peso_backend *be, float *y, float *rstd, const float *x, const float *w,
                                 int n, int c, float eps, peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->rmsnorm(p, y, rstd, x, w, n, c, eps, err) < 0)
        return -1;
    eq_emu_ulp(be, y, (size_t)n * c);
    if (rstd)
        eq_emu_ulp(be, rstd, (size_t)n);
    return 0;
}

static inline int eq_emu_rmsnorm_backward(peso_backend *be, float *dx, float *dw, const float *dy,
                                          const float *x, const float *w, const float *rstd, int n, int c,
                                          peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->rmsnorm_backward(p, dx, dw, dy, x, w, rstd, n, c, err) < 0)
        return -1;
    if (dx)
        eq_emu_ulp(be, dx, (size_t)n * c);
    if (dw)
        eq_emu_ulp(be, dw, (size_t)c);
    return 0;
}

static inline int eq_emu_rope(peso_backend *be, float *x, const int32_t *pos, const float *inv_freq,
                              int n_tok, int n_head, int head_dim, peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->rope(p, x, pos, inv_freq, n_tok, n_head, head_dim, err) < 0)
        return -1;
    eq_emu_ulp(be, x, (size_t)n_tok * n_head * head_dim);
    return 0;
}

static inline int eq_emu_rope_backward(peso_backend *be, float *dx, const int32_t *pos, const float *inv_freq,
                                       int n_tok, int n_head, int head_dim, peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->rope_backward(p, dx, pos, inv_freq, n_tok, n_head, head_dim, err) < 0)
        return -1;
    eq_emu_ulp(be, dx, (size_t)n_tok * n_head * head_dim);
    return 0;
}

static inline int eq_emu_attention(peso_backend *be, const peso_attn_shape *s, float *out, float *lse,
                                   const float *q, const float *k, const float *v, const int32_t *seq_len,
                                   peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->attention(p, s, out, lse, q, k, v, seq_len, err) < 0)
        return -1;
    eq_emu_ulp(be, out, (size_t)s->batch * s->seq * s->n_head * s->head_dim);
    eq_emu_ulp(be, lse, (size_t)s->batch * s->n_head * s->seq);
    return 0;
}

static inline int eq_emu_attention_backward(peso_backend *be, const peso_attn_shape *s, float *dq, float *dk,
                                            float *dv, const float *dout, const float *q, const float *k,
                                            const float *v, const float *out, const float *lse,
                                            const int32_t *seq_len, peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->attention_backward(p, s, dq, dk, dv, dout, q, k, v, out, lse, seq_len, err) < 0)
        return -1;
    size_t nq = (size_t)s->batch * s->seq * s->n_head * s->head_dim;
    size_t nk = (size_t)s->batch * s->seq * s->n_kv_head * s->head_dim;
    if (dq)
        eq_emu_ulp(be, dq, nq);
    if (dk)
        eq_emu_ulp(be, dk, nk);
    if (dv)
        eq_emu_ulp(be, dv, nk);
    return 0;
}

static inline int eq_emu_swiglu(peso_backend *be, float *h, const float *g, const float *u, size_t n,
                                peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->swiglu(p, h, g, u, n, err) < 0)
        return -1;
    eq_emu_ulp(be, h, n);
    return 0;
}

static inline int eq_emu_swiglu_backward(peso_backend *be, float *dg, float *du, const float *dh,
                                         const float *g, const float *u, size_t n, peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->swiglu_backward(p, dg, du, dh, g, u, n, err) < 0)
        return -1;
    if (dg)
        eq_emu_ulp(be, dg, n);
    if (du)
        eq_emu_ulp(be, du, n);
    return 0;
}

/* Rows of a table's base that exist: all of them, or the ones before the
 * trainable rows when those are the last (base may be shorter then). */
static inline size_t eq_base_rows(const peso_table *t)
{
    return t->train_hi == t->n_rows ? (size_t)t->train_lo : (size_t)t->n_rows;
}

/* A float32 copy of t (bf16 base widened; round: every row rounded to
 * bf16) whose buffers the caller frees. */
static inline peso_table eq_emu_table(const peso_table *t, int round, float **base, float **train)
{
    peso_table f = *t;
    *base = NULL;
    *train = NULL;
    if (t->base) {
        *base = eq_emu_widen(t->base, t->base_dtype, eq_base_rows(t) * t->dim, round);
        f.base = *base;
        f.base_dtype = PESO_F32;
    }
    if (t->train && round) {
        *train = eq_emu_widen(t->train, PESO_F32, (size_t)(t->train_hi - t->train_lo) * t->dim, 1);
        f.train = *train;
    }
    return f;
}

static inline int eq_emu_embed(peso_backend *be, const peso_table *t, float *out, const int32_t *ids, int n,
                               peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    float *base, *train;
    peso_table f = eq_emu_table(t, 0, &base, &train);
    int rc = p->embed(p, &f, out, ids, n, err);
    free(base);
    free(train);
    if (rc == 0)
        eq_emu_ulp(be, out, (size_t)n * t->dim);
    return rc;
}

static inline int eq_emu_embed_backward(peso_backend *be, const peso_table *t, float *dtrain,
                                        const float *dout, const int32_t *ids, int n, peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    float *base, *train;
    peso_table f = eq_emu_table(t, 0, &base, &train);
    int rc = p->embed_backward(p, &f, dtrain, dout, ids, n, err);
    free(base);
    free(train);
    if (rc == 0)
        eq_emu_ulp(be, dtrain, (size_t)(t->train_hi - t->train_lo) * t->dim);
    return rc;
}

static inline int eq_emu_xent(peso_backend *be, const peso_table *head, const float *h, int n_tok,
                              const int32_t *pos, const int32_t *target, int n_pos, float scale,
                              float *losses, float *dh, float *dhead, peso_err *err)
{
    eq_emu *u = eq_emu_of(be);
    float *base, *train, *hr = NULL;
    peso_table f = eq_emu_table(head, !u->f32, &base, &train);
    if (!u->f32) {
        hr = eq_emu_widen(h, PESO_F32, (size_t)n_tok * head->dim, 1);
        h = hr;
    }
    int rc = u->cpu->xent(u->cpu, &f, h, n_tok, pos, target, n_pos, scale, losses, dh, dhead, err);
    free(base);
    free(train);
    free(hr);
    if (rc == 0) {
        eq_emu_ulp(be, losses, (size_t)n_pos);
        if (dh)
            eq_emu_ulp(be, dh, (size_t)n_tok * head->dim);
        if (dhead)
            eq_emu_ulp(be, dhead, (size_t)(head->train_hi - head->train_lo) * head->dim);
    }
    return rc;
}

static inline int eq_emu_adamw(peso_backend *be, float *param, const float *grad, float *m, float *v,
                               size_t n, const peso_adamw *hp, peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->adamw(p, param, grad, m, v, n, hp, err) < 0)
        return -1;
    eq_emu_ulp(be, param, n);
    eq_emu_ulp(be, m, n);
    eq_emu_ulp(be, v, n);
    return 0;
}

static inline int eq_emu_sumsq(peso_backend *be, const float *x, size_t n, double *out, peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    return p->sumsq(p, x, n, out, err);
}

static inline int eq_emu_scale(peso_backend *be, float *x, size_t n, float s, peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->scale(p, x, n, s, err) < 0)
        return -1;
    eq_emu_ulp(be, x, n);
    return 0;
}

/* The flat length a groups descriptor reaches (prox_* gradients). */
static inline size_t eq_groups_span(const peso_prox_groups *gs)
{
    size_t end = 0;
    for (int i = 0; i < gs->n; i++)
        for (int s = 0; s < gs->g[i].n_seg; s++) {
            const peso_prox_seg *sg = &gs->g[i].seg[s];
            size_t e = sg->n ? sg->off + (sg->n - 1) * sg->stride + 1 : 0;
            end = e > end ? e : end;
        }
    return end;
}

static inline int eq_emu_prox_kl(peso_backend *be, const peso_prox_groups *gs, int lo, int hi, const float *v,
                                 const float *v_prev, double lambda, float *grad, double *value,
                                 peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->prox_kl(p, gs, lo, hi, v, v_prev, lambda, grad, value, err) < 0)
        return -1;
    if (grad)
        eq_emu_ulp(be, grad, eq_groups_span(gs));
    return 0;
}

static inline int eq_emu_prox_l2(peso_backend *be, const peso_prox_groups *gs, int lo, int hi, const float *v,
                                 const float *v_prev, double lambda, float *grad, double *value,
                                 peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->prox_l2(p, gs, lo, hi, v, v_prev, lambda, grad, value, err) < 0)
        return -1;
    if (grad)
        eq_emu_ulp(be, grad, eq_groups_span(gs));
    return 0;
}

static inline int eq_emu_prox_ortho(peso_backend *be, const peso_prox_groups *gs, int rank, int lo, int hi,
                                    const float *v, const float *v_prev, double lambda, float *grad,
                                    double *value, peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->prox_ortho(p, gs, rank, lo, hi, v, v_prev, lambda, grad, value, err) < 0)
        return -1;
    if (grad)
        eq_emu_ulp(be, grad, eq_groups_span(gs));
    return 0;
}

static inline int eq_emu_row_kl(peso_backend *be, const float *z, const float *z_prev, const int32_t *lens,
                                int B, int T, int d, double scale, float *dz, double *value, peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->row_kl(p, z, z_prev, lens, B, T, d, scale, dz, value, err) < 0)
        return -1;
    if (dz)
        eq_emu_ulp(be, dz, (size_t)B * T * d);
    return 0;
}

static inline int eq_emu_gather_rows(peso_backend *be, float *dst, const float *src, int n_src, int width,
                                     const int32_t *idx, int n, peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->gather_rows(p, dst, src, n_src, width, idx, n, err) < 0)
        return -1;
    eq_emu_ulp(be, dst, (size_t)n * width);
    return 0;
}

static inline int eq_emu_log_softmax_sel(peso_backend *be, float *out, float *lse, const float *x, int n,
                                         int V, const int32_t *sel, int n_sel, peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->log_softmax_sel(p, out, lse, x, n, V, sel, n_sel, err) < 0)
        return -1;
    eq_emu_ulp(be, out, (size_t)n * n_sel);
    if (lse)
        eq_emu_ulp(be, lse, (size_t)n);
    return 0;
}

static inline int eq_emu_decode_attention(peso_backend *be, const peso_decode_attn_shape *s, float *out,
                                          const float *q, const float *pk, const float *pv, const float *ok,
                                          const float *ov, peso_err *err)
{
    peso_backend *p = eq_emu_of(be)->cpu;
    if (p->decode_attention(p, s, out, q, pk, pv, ok, ov, err) < 0)
        return -1;
    eq_emu_ulp(be, out, (size_t)s->n_beam * s->n_head * s->head_dim);
    return 0;
}

static inline void eq_emu_destroy(peso_backend *be)
{
    eq_emu *u = eq_emu_of(be);
    peso_backend_destroy(u->cpu);
    free(u);
}

static inline peso_backend *eq_emu_open(int f32, peso_err *err)
{
    peso_backend *cpu = peso_backend_create("cpu", err);
    if (!cpu)
        return NULL;
    eq_emu *u = calloc(1, sizeof *u);
    peso_backend *be = &u->be;
    u->cpu = cpu;
    u->f32 = f32;
    peso_rng_seed(&u->noise, 0x656d75u, 1);
    be->name = "emu";
    be->weight_dtypes = (1u << PESO_F32) | (1u << PESO_BF16);
    be->ctx = u;
    be->destroy = eq_emu_destroy;
    be->sync = eq_emu_sync;
    be->alloc = eq_emu_alloc;
    be->free = eq_emu_free;
    be->zero = eq_emu_zero;
    be->upload = eq_emu_copy;
    be->download = eq_emu_copy;
    be->copy = eq_emu_copy;
    be->matmul = eq_emu_matmul;
    be->rmsnorm = eq_emu_rmsnorm;
    be->rmsnorm_backward = eq_emu_rmsnorm_backward;
    be->rope = eq_emu_rope;
    be->rope_backward = eq_emu_rope_backward;
    be->attention = eq_emu_attention;
    be->attention_backward = eq_emu_attention_backward;
    be->swiglu = eq_emu_swiglu;
    be->swiglu_backward = eq_emu_swiglu_backward;
    be->embed = eq_emu_embed;
    be->embed_backward = eq_emu_embed_backward;
    be->xent = eq_emu_xent;
    be->adamw = eq_emu_adamw;
    be->sumsq = eq_emu_sumsq;
    be->scale = eq_emu_scale;
    be->prox_kl = eq_emu_prox_kl;
    be->prox_l2 = eq_emu_prox_l2;
    be->prox_ortho = eq_emu_prox_ortho;
    be->row_kl = eq_emu_row_kl;
    be->gather_rows = eq_emu_gather_rows;
    be->log_softmax_sel = cpu->log_softmax_sel ? eq_emu_log_softmax_sel : NULL;
    be->decode_attention = cpu->decode_attention ? eq_emu_decode_attention : NULL;
    return be;
}

/* ---- the pair of backends ---- */

#define EQ_MAX_ALLOCS 256

typedef struct eq {
    peso_backend *ref, *cand;
    int f32;
    const char *mode; /* "f32" or "bf16" */
    peso_rng rng;
    int n_alloc;
    peso_backend *alloc_be[EQ_MAX_ALLOCS];
    void *alloc_p[EQ_MAX_ALLOCS];
} eq;

static inline const char *eq_candidate_name(void)
{
    const char *c = getenv("PESO_EQUIV_CANDIDATE");
    return c && *c ? c : "cuda";
}

static inline int eq_required(void)
{
    const char *s = getenv("PESO_EQUIV_REQUIRE");
    return s && *s && strcmp(s, "0") != 0;
}

/* Opens the candidate in mode f32 (1) or bf16 (0), then the reference;
 * skips the test when there is no candidate (see the header). */
static inline void eq_open(eq *e, int f32, uint64_t seed)
{
    peso_err err = {{0}};
    const char *name = eq_candidate_name();
    memset(e, 0, sizeof *e);
    e->f32 = f32;
    e->mode = f32 ? "f32" : "bf16";
    if (strcmp(name, "emu") == 0) {
        e->cand = eq_emu_open(f32, &err);
    } else {
        peso_backend_opts o = {.name = name, .device = -1, .f32 = f32};
        e->cand = peso_backend_open(&o, &err);
    }
    if (!e->cand) {
        if (eq_required()) {
            /* a line for tools/gpu-check.sh's table, with no '|' in it */
            for (char *c = err.msg; *c; c++)
                *c = *c == '|' ? '/' : *c;
            printf("EQUIV|open %s|%s|%s|%s|inf|-|FAIL\n", name, e->mode, criterion_current_test->name,
                   err.msg);
            fflush(stdout);
            cr_assert_fail("backend '%s' (%s mode) could not be opened and PESO_EQUIV_REQUIRE is set: %s",
                           name, e->mode, err.msg);
        }
        criterion_skip_test("no backend '%s' to compare with cpu (a GPU is needed): %s", name, err.msg);
    }
    e->ref = peso_backend_create("cpu", &err);
    cr_assert(e->ref, "cpu backend: %s", err.msg);
    peso_rng_seed(&e->rng, seed, 0x657175u);
}

static inline void eq_close(eq *e)
{
    for (int i = e->n_alloc - 1; i >= 0; i--)
        e->alloc_be[i]->free(e->alloc_be[i], e->alloc_p[i]);
    e->n_alloc = 0;
    peso_backend_destroy(e->cand);
    peso_backend_destroy(e->ref);
}

/* Frees every buffer of the pair (between cases). */
static inline void eq_free_all(eq *e)
{
    for (int i = e->n_alloc - 1; i >= 0; i--)
        e->alloc_be[i]->free(e->alloc_be[i], e->alloc_p[i]);
    e->n_alloc = 0;
}

static inline peso_backend *eq_be(const eq *e, int cand)
{
    return cand ? e->cand : e->ref;
}

/* One buffer on each side; NULL on both for an absent (NULL) argument. */
typedef struct eq_buf {
    void *r, *c;
} eq_buf;

#define EQ_P(b, cand) ((cand) ? (b).c : (b).r)
#define EQ_F(b, cand) ((float *)EQ_P(b, cand))
#define EQ_I(b, cand) ((int32_t *)EQ_P(b, cand))

static inline void *eq_alloc_on(eq *e, peso_backend *be, size_t bytes)
{
    peso_err err = {{0}};
    void *p = NULL;
    cr_assert_lt(e->n_alloc, EQ_MAX_ALLOCS, "too many buffers in one case");
    cr_assert_eq(be->alloc(be, &p, bytes ? bytes : 4, &err), 0, "%s alloc of %zu bytes: %s", be->name, bytes,
                 err.msg);
    e->alloc_be[e->n_alloc] = be;
    e->alloc_p[e->n_alloc++] = p;
    return p;
}

static inline void eq_put(peso_backend *be, void *dev, const void *host, size_t bytes)
{
    peso_err err = {{0}};
    if (bytes)
        cr_assert_eq(be->upload(be, dev, host, bytes, &err), 0, "%s upload: %s", be->name, err.msg);
}

static inline void eq_get(peso_backend *be, void *host, const void *dev, size_t bytes)
{
    peso_err err = {{0}};
    if (bytes)
        cr_assert_eq(be->download(be, host, dev, bytes, &err), 0, "%s download: %s", be->name, err.msg);
}

/* The same bytes on both sides: an input, an accumulated output or an
 * in-place tensor. */
static inline eq_buf eq_in(eq *e, const void *host, size_t bytes)
{
    eq_buf b = {eq_alloc_on(e, e->ref, bytes), eq_alloc_on(e, e->cand, bytes)};
    eq_put(e->ref, b.r, host, bytes);
    eq_put(e->cand, b.c, host, bytes);
    return b;
}

static inline void eq_set(eq *e, eq_buf b, const void *host, size_t bytes)
{
    eq_put(e->ref, b.r, host, bytes);
    eq_put(e->cand, b.c, host, bytes);
}

/* Poisons the candidate's side of an overwritten output (0xff bytes: NaN
 * floats) and zeroes the reference's. */
static inline void eq_poison(eq *e, eq_buf b, size_t bytes)
{
    peso_err err = {{0}};
    unsigned char *p = malloc(bytes ? bytes : 1);
    memset(p, 0xff, bytes);
    eq_put(e->cand, b.c, p, bytes);
    free(p);
    if (bytes)
        cr_assert_eq(e->ref->zero(e->ref, b.r, bytes, &err), 0, "cpu zero: %s", err.msg);
}

static inline eq_buf eq_out(eq *e, size_t bytes)
{
    eq_buf b = {eq_alloc_on(e, e->ref, bytes), eq_alloc_on(e, e->cand, bytes)};
    eq_poison(e, b, bytes);
    return b;
}

/* A frozen weight table of n floats (bf16-exact when dt is PESO_BF16):
 * float32 on the reference, dt on the candidate. */
static inline eq_buf eq_weights(eq *e, const float *host, size_t n, peso_dtype dt)
{
    if (dt == PESO_F32)
        return eq_in(e, host, n * sizeof(float));
    uint16_t *bits = malloc((n ? n : 1) * sizeof *bits);
    for (size_t i = 0; i < n; i++)
        bits[i] = eq_bf16_bits(host[i]);
    eq_buf b = {eq_alloc_on(e, e->ref, n * sizeof(float)), eq_alloc_on(e, e->cand, n * sizeof *bits)};
    eq_put(e->ref, b.r, host, n * sizeof(float));
    eq_put(e->cand, b.c, bits, n * sizeof *bits);
    free(bits);
    return b;
}

/* n floats uniform in [lo, hi) (bf16: rounded to bf16), malloc'd. */
static inline float *eq_rand(eq *e, size_t n, double lo, double hi, int bf16)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(lo + (hi - lo) * peso_rng_uniform(&e->rng));
        if (bf16)
            x[i] = eq_bf16_round(x[i]);
    }
    return x;
}

static inline int32_t *eq_rand_int(eq *e, size_t n, int below)
{
    int32_t *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = (int32_t)peso_rng_below(&e->rng, (uint64_t)below);
    return x;
}

/* Host copies of both sides of n floats (malloc'd). */
static inline void eq_fetch(eq *e, eq_buf b, size_t n, float **r, float **c)
{
    *r = malloc((n ? n : 1) * sizeof **r);
    *c = malloc((n ? n : 1) * sizeof **c);
    eq_get(e->ref, *r, b.r, n * sizeof(float));
    eq_get(e->cand, *c, b.c, n * sizeof(float));
}

/* ---- calls ---- */

/* One call of an entry on both sides: call(e, cand, args, err). */
typedef int (*eq_call_fn)(eq *e, int cand, void *args, peso_err *err);

static inline void eq_report(const eq *e, const char *op, const char *cs, const char *what, double err,
                             double tol)
{
    int pass = err <= tol; /* false for NaN */
    printf("EQUIV|%s|%s|%s|%s|%.3e|%.3e|%s\n", op, e->mode, cs, what, err, tol, pass ? "PASS" : "FAIL");
    fflush(stdout);
    cr_expect(pass, "%s (%s mode) %s, %s: max error %.3e above tolerance %.3e", op, e->mode, cs, what, err,
              tol);
}

/* Fails (after its table line) when an entry is missing on either side. */
static inline int eq_has(const eq *e, const char *op, int on_ref, int on_cand)
{
    if (on_ref && on_cand)
        return 1;
    printf("EQUIV|%s|%s|-|entry missing on %s|inf|-|FAIL\n", op, e->mode, on_ref ? e->cand->name : "cpu");
    fflush(stdout);
    cr_expect(0, "%s: the entry is NULL on the %s backend", op, on_ref ? e->cand->name : "cpu");
    return 0;
}

/* Calls the reference, then the candidate (and its sync, which reports
 * an asynchronous fault against this entry). */
static inline void eq_run(eq *e, const char *op, const char *cs, eq_call_fn call, void *args)
{
    peso_err err = {{0}};
    int rc = call(e, 0, args, &err);
    cr_assert_eq(rc, 0, "%s %s on cpu: %s", op, cs, err.msg);
    rc = call(e, 1, args, &err);
    if (rc == 0 && e->cand->sync)
        rc = e->cand->sync(e->cand, &err);
    if (rc != 0) {
        printf("EQUIV|%s|%s|%s|call failed|inf|-|FAIL\n", op, e->mode, cs);
        fflush(stdout);
    }
    cr_assert_eq(rc, 0, "%s (%s mode) %s on %s: %s", op, e->mode, cs, e->cand->name, err.msg);
}

/* Sets the accumulated outputs acc[i] (n[i] floats) to the same random
 * contents on both sides, multiples in [-1, 1] of the rms of the
 * reference's own increment into a zeroed buffer (a probe call on the
 * reference), so that the starting values neither vanish next to the
 * increment nor bury it. */
static inline void eq_acc_probe(eq *e, const char *op, eq_call_fn call, void *args, const eq_buf *acc,
                                const size_t *n, int n_acc)
{
    peso_err err = {{0}};
    for (int i = 0; i < n_acc; i++)
        if (acc[i].r)
            cr_assert_eq(e->ref->zero(e->ref, acc[i].r, n[i] * sizeof(float), &err), 0, "%s", err.msg);
    cr_assert_eq(call(e, 0, args, &err), 0, "%s probe on cpu: %s", op, err.msg);
    for (int i = 0; i < n_acc; i++) {
        if (!acc[i].r)
            continue;
        float *x = malloc((n[i] ? n[i] : 1) * sizeof *x);
        eq_get(e->ref, x, acc[i].r, n[i] * sizeof(float));
        double ss = 0.0;
        for (size_t j = 0; j < n[i]; j++)
            ss += (double)x[j] * x[j];
        double rms = n[i] ? sqrt(ss / (double)n[i]) : 0.0;
        if (!(rms > 0.0))
            rms = 1.0;
        for (size_t j = 0; j < n[i]; j++)
            x[j] = (float)(rms * (2.0 * peso_rng_uniform(&e->rng) - 1.0));
        eq_set(e, acc[i], x, n[i] * sizeof(float));
        free(x);
    }
}

/* ---- comparisons ---- */

/* err of c against r (n floats) with scales s (NULL: mixed). */
static inline double eq_err(const float *c, const float *r, size_t n, const double *s)
{
    double rms = 0.0, worst = 0.0;
    if (!s) {
        for (size_t i = 0; i < n; i++)
            rms += (double)r[i] * r[i];
        rms = n ? sqrt(rms / (double)n) : 0.0;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(c[i]) || !isfinite(r[i]))
            return INFINITY;
        double d = fabs((double)c[i] - (double)r[i]);
        if (d == 0.0)
            continue;
        double si = s ? s[i] : fmax(fabs((double)r[i]), rms);
        double q = si > 0.0 ? d / si : INFINITY;
        worst = q > worst ? q : worst;
    }
    return worst;
}

static inline void eq_check(eq *e, const char *op, const char *cs, const char *what, const float *c,
                            const float *r, size_t n, const double *s, double tol)
{
    eq_report(e, op, cs, what, eq_err(c, r, n, s), tol);
}

/* Downloads n floats of b from both sides and compares them. */
static inline void eq_check_buf(eq *e, const char *op, const char *cs, const char *what, eq_buf b, size_t n,
                                const double *s, double tol)
{
    float *r, *c;
    eq_fetch(e, b, n, &r, &c);
    eq_check(e, op, cs, what, c, r, n, s, tol);
    free(r);
    free(c);
}

static inline void eq_check_value(eq *e, const char *op, const char *cs, const char *what, double c, double r,
                                  double tol)
{
    double err = !isfinite(c) || !isfinite(r) ? INFINITY : c == r ? 0.0 : fabs(c - r) / fmax(fabs(r), 1e-300);
    eq_report(e, op, cs, what, err, tol);
}

#endif
