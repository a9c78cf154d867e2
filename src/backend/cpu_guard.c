/* The cpu backend with device memory the host cannot touch
 * (PESO_CPU_GUARD=1): a check, on machines without a GPU, that model,
 * method, training and evaluation code reach backend memory only through
 * the table, as they must for the cuda backend.
 *
 * Memory comes from two address ranges of the same size reserved at
 * start: the real one (readable, writable) and its mirror (PROT_NONE),
 * which alloc hands out. A host dereference of a "device" pointer, or of
 * one offset from it, faults. Every entry translates its pointer
 * arguments from the mirror to the real range by one constant offset and
 * calls the cpu implementation; pointers outside the mirror (the host
 * side of upload and download) pass unchanged. Memory is never reused:
 * free releases the pages (MADV_DONTNEED) and the next alloc bumps on,
 * so fresh memory is zero and a use after free faults too. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE, madvise */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backend/cpu.h"

#define GUARD_SPAN ((size_t)1 << 38) /* 256 GiB of addresses each, never touched unless used */
#define GUARD_ALIGN ((size_t)64)

typedef struct guard {
    peso_backend *in; /* the cpu backend doing the work */
    char *real, *mirror;
    size_t used;
} guard;

static guard *G(peso_backend *be)
{
    return be->ctx;
}

/* p in the mirror -> the same offset in the real range */
static void *T(peso_backend *be, const void *p)
{
    guard *g = G(be);
    const char *c = p;
    if (c && c >= g->mirror && c < g->mirror + GUARD_SPAN)
        return g->real + (c - g->mirror);
    return (void *)p;
}
#define TF(p) ((float *)T(be, (p)))
#define TI(p) ((int32_t *)T(be, (p)))

static int g_alloc(peso_backend *be, void **p, size_t bytes, peso_err *err)
{
    guard *g = G(be);
    /* a header before each block keeps its size for free */
    size_t need = GUARD_ALIGN + ((bytes ? bytes : 1) + GUARD_ALIGN - 1) / GUARD_ALIGN * GUARD_ALIGN;
    if (need > GUARD_SPAN - g->used)
        return peso_errf(err, "cpu guard alloc: %zu bytes after %zu used exceed the %zu reserved", bytes, g->used,
                         (size_t)GUARD_SPAN);
    size_t at = g->used + GUARD_ALIGN;
    memcpy(g->real + g->used, &need, sizeof need);
    g->used += need;
    *p = g->mirror + at;
    return 0;
}

static void g_free(peso_backend *be, void *p)
{
    guard *g = G(be);
    if (!p)
        return;
    char *real = T(be, p);
    size_t need;
    memcpy(&need, real - GUARD_ALIGN, sizeof need);
    /* whole pages inside the block only: neighbours share the edges */
    uintptr_t lo = ((uintptr_t)real + 4095) & ~(uintptr_t)4095;
    uintptr_t hi = ((uintptr_t)real - GUARD_ALIGN + need) & ~(uintptr_t)4095;
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED);
    (void)g;
}

static int g_zero(peso_backend *be, void *p, size_t bytes, peso_err *err)
{
    return G(be)->in->zero(G(be)->in, T(be, p), bytes, err);
}

static int g_copy(peso_backend *be, void *dst, const void *src, size_t bytes, peso_err *err)
{
    return G(be)->in->copy(G(be)->in, T(be, dst), T(be, src), bytes, err);
}

static int g_sync(peso_backend *be, peso_err *err)
{
    peso_backend *in = G(be)->in;
    return in->sync ? in->sync(in, err) : 0;
}

static int g_matmul(peso_backend *be, const peso_gemm *g, float *c, const float *a, const void *b, peso_err *err)
{
    peso_gemm t = *g;
    t.alpha_dev = TF(g->alpha_dev);
    return G(be)->in->matmul(G(be)->in, &t, TF(c), TF(a), T(be, b), err);
}

static int g_rmsnorm(peso_backend *be, float *y, float *rstd, const float *x, const float *w, int n, int c, float eps,
                     peso_err *err)
{
    return G(be)->in->rmsnorm(G(be)->in, TF(y), TF(rstd), TF(x), TF(w), n, c, eps, err);
}

static int g_rmsnorm_backward(peso_backend *be, float *dx, float *dw, const float *dy, const float *x, const float *w,
                              const float *rstd, int n, int c, peso_err *err)
{
    return G(be)->in->rmsnorm_backward(G(be)->in, TF(dx), TF(dw), TF(dy), TF(x), TF(w), TF(rstd), n, c, err);
}

static int g_rope(peso_backend *be, float *x, const int32_t *pos, const float *inv_freq, int n_tok, int n_head,
                  int head_dim, peso_err *err)
{
    return G(be)->in->rope(G(be)->in, TF(x), TI(pos), TF(inv_freq), n_tok, n_head, head_dim, err);
}

static int g_rope_backward(peso_backend *be, float *dx, const int32_t *pos, const float *inv_freq, int n_tok,
                           int n_head, int head_dim, peso_err *err)
{
    return G(be)->in->rope_backward(G(be)->in, TF(dx), TI(pos), TF(inv_freq), n_tok, n_head, head_dim, err);
}

static int g_attention(peso_backend *be, const peso_attn_shape *s, float *out, float *lse, const float *q,
                       const float *k, const float *v, const int32_t *seq_len, peso_err *err)
{
    return G(be)->in->attention(G(be)->in, s, TF(out), TF(lse), TF(q), TF(k), TF(v), TI(seq_len), err);
}

static int g_attention_backward(peso_backend *be, const peso_attn_shape *s, float *dq, float *dk, float *dv,
                                const float *dout, const float *q, const float *k, const float *v, const float *out,
                                const float *lse, const int32_t *seq_len, peso_err *err)
{
    return G(be)->in->attention_backward(G(be)->in, s, TF(dq), TF(dk), TF(dv), TF(dout), TF(q), TF(k), TF(v),
                                         TF(out), TF(lse), TI(seq_len), err);
}

static int g_swiglu(peso_backend *be, float *h, const float *g, const float *u, size_t n, peso_err *err)
{
    return G(be)->in->swiglu(G(be)->in, TF(h), TF(g), TF(u), n, err);
}

static int g_swiglu_backward(peso_backend *be, float *dg, float *du, const float *dh, const float *g, const float *u,
                             size_t n, peso_err *err)
{
    return G(be)->in->swiglu_backward(G(be)->in, TF(dg), TF(du), TF(dh), TF(g), TF(u), n, err);
}

static peso_table table(peso_backend *be, const peso_table *t)
{
    peso_table r = *t;
    r.base = T(be, t->base);
    r.train = TF(t->train);
    return r;
}

static int g_embed(peso_backend *be, const peso_table *t, float *out, const int32_t *ids, int n, peso_err *err)
{
    peso_table r = table(be, t);
    return G(be)->in->embed(G(be)->in, &r, TF(out), TI(ids), n, err);
}

static int g_embed_backward(peso_backend *be, const peso_table *t, float *dtrain, const float *dout,
                            const int32_t *ids, int n, peso_err *err)
{
    peso_table r = table(be, t);
    return G(be)->in->embed_backward(G(be)->in, &r, TF(dtrain), TF(dout), TI(ids), n, err);
}

static int g_xent(peso_backend *be, const peso_table *head, const float *h, int n_tok, const int32_t *pos,
                  const int32_t *target, int n_pos, float scale, float *losses, float *dh, float *dhead,
                  peso_err *err)
{
    peso_table r = table(be, head);
    return G(be)->in->xent(G(be)->in, &r, TF(h), n_tok, TI(pos), TI(target), n_pos, scale, TF(losses), TF(dh),
                           TF(dhead), err);
}

static int g_adamw(peso_backend *be, float *param, const float *grad, float *m, float *v, size_t n,
                   const peso_adamw *hp, peso_err *err)
{
    return G(be)->in->adamw(G(be)->in, TF(param), TF(grad), TF(m), TF(v), n, hp, err);
}

static int g_sumsq(peso_backend *be, const float *x, size_t n, double *out, peso_err *err)
{
    return G(be)->in->sumsq(G(be)->in, TF(x), n, out, err);
}

static int g_scale(peso_backend *be, float *x, size_t n, float s, peso_err *err)
{
    return G(be)->in->scale(G(be)->in, TF(x), n, s, err);
}

static int g_prox_kl(peso_backend *be, const peso_prox_groups *gs, int lo, int hi, const float *v,
                     const float *v_prev, double lambda, float *grad, double *value, peso_err *err)
{
    return G(be)->in->prox_kl(G(be)->in, gs, lo, hi, TF(v), TF(v_prev), lambda, TF(grad), value, err);
}

static int g_prox_l2(peso_backend *be, const peso_prox_groups *gs, int lo, int hi, const float *v,
                     const float *v_prev, double lambda, float *grad, double *value, peso_err *err)
{
    return G(be)->in->prox_l2(G(be)->in, gs, lo, hi, TF(v), TF(v_prev), lambda, TF(grad), value, err);
}

static int g_prox_ortho(peso_backend *be, const peso_prox_groups *gs, int rank, int lo, int hi, const float *v,
                        const float *v_prev, double lambda, float *grad, double *value, peso_err *err)
{
    return G(be)->in->prox_ortho(G(be)->in, gs, rank, lo, hi, TF(v), TF(v_prev), lambda, TF(grad), value, err);
}

static int g_row_kl(peso_backend *be, const float *z, const float *z_prev, const int32_t *lens, int B, int Tn, int d,
                    double scale, float *dz, double *value, peso_err *err)
{
    return G(be)->in->row_kl(G(be)->in, TF(z), TF(z_prev), TI(lens), B, Tn, d, scale, TF(dz), value, err);
}

static int g_gather_rows(peso_backend *be, float *dst, const float *src, int n_src, int width, const int32_t *idx,
                         int n, peso_err *err)
{
    return G(be)->in->gather_rows(G(be)->in, TF(dst), TF(src), n_src, width, TI(idx), n, err);
}

static int g_log_softmax_sel(peso_backend *be, float *out, float *lse, const float *x, int n, int V,
                             const int32_t *sel, int n_sel, peso_err *err)
{
    return G(be)->in->log_softmax_sel(G(be)->in, TF(out), TF(lse), TF(x), n, V, TI(sel), n_sel, err);
}

static int g_decode_attention(peso_backend *be, const peso_decode_attn_shape *s, float *out, const float *q,
                              const float *pk, const float *pv, const float *ok, const float *ov, peso_err *err)
{
    return G(be)->in->decode_attention(G(be)->in, s, TF(out), TF(q), TF(pk), TF(pv), TF(ok), TF(ov), err);
}

static void g_destroy(peso_backend *be)
{
    guard *g = G(be);
    munmap(g->real, GUARD_SPAN);
    munmap(g->mirror, GUARD_SPAN);
    peso_backend_destroy(g->in);
    free(g);
    free(be);
}

peso_backend *peso_backend_cpu_guard_create(peso_err *err)
{
    peso_backend *in = peso_backend_cpu_create(err);
    if (!in)
        return NULL;
    guard *g = peso_calloc(1, sizeof *g);
    g->in = in;
    g->real = mmap(NULL, GUARD_SPAN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    g->mirror = mmap(NULL, GUARD_SPAN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (g->real == MAP_FAILED || g->mirror == MAP_FAILED) {
        if (g->real != MAP_FAILED)
            munmap(g->real, GUARD_SPAN);
        if (g->mirror != MAP_FAILED)
            munmap(g->mirror, GUARD_SPAN);
        peso_backend_destroy(in);
        free(g);
        peso_errf(err, "cpu guard: cannot reserve 2 x %zu bytes of addresses", (size_t)GUARD_SPAN);
        return NULL;
    }
    peso_backend *be = peso_calloc(1, sizeof *be);
    *be = *in; /* name, dtypes; every entry is replaced below */
    be->name = "cpu";
    be->ctx = g;
    be->destroy = g_destroy;
    be->alloc = g_alloc;
    be->free = g_free;
    be->zero = g_zero;
    be->upload = g_copy;
    be->download = g_copy;
    be->copy = g_copy;
    be->sync = g_sync;
#define WRAP(f) be->f = in->f ? g_##f : NULL
    WRAP(matmul);
    WRAP(rmsnorm);
    WRAP(rmsnorm_backward);
    WRAP(rope);
    WRAP(rope_backward);
    WRAP(attention);
    WRAP(attention_backward);
    WRAP(swiglu);
    WRAP(swiglu_backward);
    WRAP(embed);
    WRAP(embed_backward);
    WRAP(xent);
    WRAP(adamw);
    WRAP(sumsq);
    WRAP(scale);
    WRAP(prox_kl);
    WRAP(prox_l2);
    WRAP(prox_ortho);
    WRAP(row_kl);
    WRAP(gather_rows);
    WRAP(log_softmax_sel);
    WRAP(decode_attention);
#undef WRAP
    return be;
}
