/* What every backend shares: creation by name, dtype facts, nn.Linear
 * forward/backward expressed with the table's matmul, and the argument
 * checks that make one contract for all implementations. */
#include "backend/backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu.h"
#ifdef PESO_HAVE_CUDA
#include "kernels/cuda.h"
#endif

peso_backend *peso_backend_open(const peso_backend_opts *o, peso_err *err)
{
    const char *name = o->name ? o->name : "cpu";
    if (strcmp(name, "cpu") == 0) {
        const char *guard = getenv("PESO_CPU_GUARD");
        if (guard && strcmp(guard, "") && strcmp(guard, "0"))
            return peso_backend_cpu_guard_create(err);
        return peso_backend_cpu_create(err);
    }
    if (strcmp(name, "cuda") == 0) {
#ifdef PESO_HAVE_CUDA
        return peso_backend_cuda_create(o, err);
#else
        peso_errf(err, "backend 'cuda' is not in this build: nvcc was not found when it was "
                       "configured (cmake -DPESO_CUDA=ON with the CUDA Toolkit on PATH or in "
                       "/usr/local/cuda); this build has: cpu");
        return NULL;
#endif
    }
    peso_errf(err, "backend '%s' is unknown (expected cpu or cuda; this build has: cpu%s)", name,
#ifdef PESO_HAVE_CUDA
              ", cuda"
#else
              ""
#endif
    );
    return NULL;
}

peso_backend *peso_backend_create(const char *name, peso_err *err)
{
    peso_backend_opts o = {.name = name, .device = -1};
    return peso_backend_open(&o, err);
}

void peso_backend_destroy(peso_backend *be)
{
    if (be)
        be->destroy(be);
}

const char *peso_dtype_name(peso_dtype dt)
{
    switch (dt) {
    case PESO_F32:
        return "f32";
    case PESO_BF16:
        return "bf16";
    }
    return "unknown";
}

size_t peso_dtype_size(peso_dtype dt)
{
    return dt == PESO_BF16 ? 2 : 4;
}

int peso_backend_supports(const peso_backend *be, peso_dtype dt)
{
    return (dt == PESO_F32 || dt == PESO_BF16) && (be->weight_dtypes & (1u << dt)) != 0;
}

static peso_gemm gemm_one(int m, int n, int k, int ta, int tb, float alpha, const float *alpha_dev, float beta,
                          peso_dtype bdt)
{
    peso_gemm g = {.m = m, .n = n, .k = k, .trans_a = ta, .trans_b = tb, .alpha = alpha,
                   .beta = beta, .b_dtype = bdt, .batch = 1, .alpha_dev = alpha_dev};
    return g;
}

int peso_linear_scaled(peso_backend *be, float *y, const float *x, const void *w, peso_dtype wdt, int m, int n,
                       int k, float alpha, const float *alpha_dev, float beta, peso_err *err)
{
    peso_gemm g = gemm_one(m, n, k, 0, 1, alpha, alpha_dev, beta, wdt);
    return be->matmul(be, &g, y, x, w, err);
}

int peso_linear(peso_backend *be, float *y, const float *x, const void *w, peso_dtype wdt, int m,
                int n, int k, float alpha, float beta, peso_err *err)
{
    return peso_linear_scaled(be, y, x, w, wdt, m, n, k, alpha, NULL, beta, err);
}

int peso_linear_backward_scaled(peso_backend *be, float *dx, float *dw, const float *dy, const float *x,
                                const void *w, peso_dtype wdt, int m, int n, int k, float alpha,
                                const float *alpha_dev, peso_err *err)
{
    if (dx) {
        /* dx[m,k] += dy[m,n] W[n,k] */
        peso_gemm g = gemm_one(m, k, n, 0, 0, alpha, alpha_dev, 1.0f, wdt);
        if (be->matmul(be, &g, dx, dy, w, err) < 0)
            return -1;
    }
    if (dw) {
        /* dW[n,k] += dy^T[n,m] x[m,k]; dy is stored [m,n], hence trans_a */
        peso_gemm g = gemm_one(n, k, m, 1, 0, alpha, alpha_dev, 1.0f, PESO_F32);
        if (be->matmul(be, &g, dw, dy, x, err) < 0)
            return -1;
    }
    return 0;
}

int peso_linear_backward(peso_backend *be, float *dx, float *dw, const float *dy, const float *x,
                         const void *w, peso_dtype wdt, int m, int n, int k, float alpha,
                         peso_err *err)
{
    return peso_linear_backward_scaled(be, dx, dw, dy, x, w, wdt, m, n, k, alpha, NULL, err);
}

static int dtype_check(const peso_backend *be, peso_dtype dt, const char *what, peso_err *err)
{
    if (peso_backend_supports(be, dt))
        return 0;
    char list[32] = "";
    size_t len = 0;
    for (int d = PESO_F32; d <= PESO_BF16; d++)
        if (peso_backend_supports(be, (peso_dtype)d))
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "",
                                    peso_dtype_name((peso_dtype)d));
    return peso_errf(err, "%s: backend '%s' does not store %s weights (it stores: %s)", what,
                     be->name, peso_dtype_name(dt), list);
}

int peso_gemm_check(const peso_backend *be, const peso_gemm *g, peso_err *err)
{
    if (g->m < 1 || g->n < 1 || g->k < 1)
        return peso_errf(err, "matmul: shape m=%d n=%d k=%d, expected all >= 1", g->m, g->n, g->k);
    if ((g->trans_a != 0 && g->trans_a != 1) || (g->trans_b != 0 && g->trans_b != 1))
        return peso_errf(err, "matmul: trans_a=%d trans_b=%d, expected 0 or 1", g->trans_a,
                         g->trans_b);
    if (g->batch < 1)
        return peso_errf(err, "matmul: batch=%d, expected >= 1", g->batch);
    /* products writing overlapping outputs would race */
    if (g->batch > 1 && g->stride_c < (size_t)g->m * (size_t)g->n)
        return peso_errf(err, "matmul: stride_c=%zu is below m*n=%zu for batch %d", g->stride_c,
                         (size_t)g->m * (size_t)g->n, g->batch);
    return dtype_check(be, g->b_dtype, "matmul B operand", err);
}

int peso_table_check(const peso_backend *be, const peso_table *t, const char *op, peso_err *err)
{
    if (t->n_rows < 1 || t->dim < 1)
        return peso_errf(err, "%s: table shape [%d, %d], expected both >= 1", op, t->n_rows,
                         t->dim);
    if (t->train_lo < 0 || t->train_lo > t->train_hi || t->train_hi > t->n_rows)
        return peso_errf(err, "%s: trainable rows [%d, %d) outside table rows [0, %d)", op,
                         t->train_lo, t->train_hi, t->n_rows);
    if (t->train_hi > t->train_lo && !t->train)
        return peso_errf(err, "%s: trainable rows [%d, %d) but no trainable table", op,
                         t->train_lo, t->train_hi);
    if (t->train_hi - t->train_lo < t->n_rows) {
        if (!t->base)
            return peso_errf(err, "%s: rows outside [%d, %d) are frozen but there is no base table",
                             op, t->train_lo, t->train_hi);
        return dtype_check(be, t->base_dtype, op, err);
    }
    return 0;
}

int peso_attn_check(const peso_attn_shape *s, peso_err *err)
{
    if (s->batch < 1 || s->seq < 1 || s->n_head < 1 || s->n_kv_head < 1 || s->head_dim < 1)
        return peso_errf(err,
                         "attention: shape batch=%d seq=%d n_head=%d n_kv_head=%d head_dim=%d, "
                         "expected all >= 1",
                         s->batch, s->seq, s->n_head, s->n_kv_head, s->head_dim);
    if (s->n_head % s->n_kv_head != 0)
        return peso_errf(err, "attention: n_head=%d is not a multiple of n_kv_head=%d", s->n_head,
                         s->n_kv_head);
    return 0;
}

int peso_decode_attn_check(const peso_decode_attn_shape *s, peso_err *err)
{
    if (s->n_beam < 1 || s->n_head < 1 || s->n_kv_head < 1 || s->head_dim < 1)
        return peso_errf(err,
                         "decode_attention: shape n_beam=%d n_head=%d n_kv_head=%d head_dim=%d, "
                         "expected all >= 1",
                         s->n_beam, s->n_head, s->n_kv_head, s->head_dim);
    if (s->n_head % s->n_kv_head != 0)
        return peso_errf(err, "decode_attention: n_head=%d is not a multiple of n_kv_head=%d",
                         s->n_head, s->n_kv_head);
    if (s->n_prefix < 0 || s->n_own < 1)
        return peso_errf(err, "decode_attention: n_prefix=%d n_own=%d, expected >= 0 and >= 1",
                         s->n_prefix, s->n_own);
    if (s->own_stride < s->n_beam)
        return peso_errf(err, "decode_attention: own_stride=%d is below n_beam=%d", s->own_stride,
                         s->n_beam);
    return 0;
}

/* The range, lambda and groups [lo, hi) of a call: nothing is computed
 * (or written) unless every group of the range is well formed. */
int peso_prox_check(const char *what, const peso_prox_groups *gs, int lo, int hi, double lambda,
                      const double *value, peso_err *err)
{
    if (!gs)
        return peso_errf(err, "%s: gs is NULL, expected the groups", what);
    if (!value)
        return peso_errf(err, "%s: value is NULL, expected a host double", what);
    if (lo < 0 || lo > hi || hi > gs->n)
        return peso_errf(err, "%s: range [%d, %d), expected 0 <= lo <= hi <= %d", what, lo, hi, gs->n);
    if (!isfinite(lambda))
        return peso_errf(err, "%s: lambda=%g, expected a finite number", what, lambda);
    for (int i = lo; i < hi; i++) {
        const peso_prox_group *g = &gs->g[i];
        if (g->n_seg < 1 || g->n_seg > 2)
            return peso_errf(err, "%s: group %d has n_seg=%d, expected 1 or 2", what, i, g->n_seg);
        size_t n = g->seg[0].n + (g->n_seg > 1 ? g->seg[1].n : 0);
        if (n != g->numel)
            return peso_errf(err, "%s: group %d has numel=%zu, expected %zu (its segments)", what, i,
                             g->numel, n);
    }
    return 0;
}
