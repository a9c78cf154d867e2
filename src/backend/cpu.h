/* The cpu backend's operations, one concept per cpu_*.c file, gathered
 * into the table by cpu.c. Internal: the model reaches them through
 * peso_backend_create("cpu") and the table only. */
#ifndef PESO_BACKEND_CPU_H
#define PESO_BACKEND_CPU_H

#include <string.h>

#include "backend/backend.h"

peso_backend *peso_backend_cpu_create(peso_err *err);
/* The same with device memory the host cannot dereference (cpu_guard.c);
 * peso_backend_open("cpu") makes it when PESO_CPU_GUARD=1. */
peso_backend *peso_backend_cpu_guard_create(peso_err *err);

int peso_cpu_matmul(peso_backend *be, const peso_gemm *g, float *c, const float *a, const void *b,
                    peso_err *err);

int peso_cpu_rmsnorm(peso_backend *be, float *y, float *rstd, const float *x, const float *w,
                     int n, int c, float eps, peso_err *err);
int peso_cpu_rmsnorm_backward(peso_backend *be, float *dx, float *dw, const float *dy,
                              const float *x, const float *w, const float *rstd, int n, int c,
                              peso_err *err);

int peso_cpu_rope(peso_backend *be, float *x, const int32_t *pos, const float *inv_freq,
                  int n_tok, int n_head, int head_dim, peso_err *err);
int peso_cpu_rope_backward(peso_backend *be, float *dx, const int32_t *pos,
                           const float *inv_freq, int n_tok, int n_head, int head_dim,
                           peso_err *err);

int peso_cpu_attention(peso_backend *be, const peso_attn_shape *s, float *out, float *lse,
                       const float *q, const float *k, const float *v, const int32_t *seq_len,
                       peso_err *err);
int peso_cpu_attention_backward(peso_backend *be, const peso_attn_shape *s, float *dq, float *dk,
                                float *dv, const float *dout, const float *q, const float *k,
                                const float *v, const float *out, const float *lse,
                                const int32_t *seq_len, peso_err *err);

int peso_cpu_swiglu(peso_backend *be, float *h, const float *g, const float *u, size_t n,
                    peso_err *err);
int peso_cpu_swiglu_backward(peso_backend *be, float *dg, float *du, const float *dh,
                             const float *g, const float *u, size_t n, peso_err *err);

int peso_cpu_embed(peso_backend *be, const peso_table *t, float *out, const int32_t *ids, int n,
                   peso_err *err);
int peso_cpu_embed_backward(peso_backend *be, const peso_table *t, float *dtrain,
                            const float *dout, const int32_t *ids, int n, peso_err *err);

int peso_cpu_xent(peso_backend *be, const peso_table *head, const float *h, int n_tok,
                  const int32_t *pos, const int32_t *target, int n_pos, float scale,
                  float *losses, float *dh, float *dhead, peso_err *err);

int peso_cpu_adamw(peso_backend *be, float *param, const float *grad, float *m, float *v,
                   size_t n, const peso_adamw *hp, peso_err *err);
int peso_cpu_sumsq(peso_backend *be, const float *x, size_t n, double *out, peso_err *err);
int peso_cpu_scale(peso_backend *be, float *x, size_t n, float s, peso_err *err);

int peso_cpu_prox_kl(peso_backend *be, const peso_prox_groups *gs, int lo, int hi, const float *v,
                     const float *v_prev, double lambda, float *grad, double *value,
                     peso_err *err);
int peso_cpu_prox_l2(peso_backend *be, const peso_prox_groups *gs, int lo, int hi, const float *v,
                     const float *v_prev, double lambda, float *grad, double *value,
                     peso_err *err);
int peso_cpu_prox_ortho(peso_backend *be, const peso_prox_groups *gs, int rank, int lo, int hi,
                        const float *v, const float *v_prev, double lambda, float *grad,
                        double *value, peso_err *err);
int peso_cpu_gather_rows(peso_backend *be, float *dst, const float *src, int n_src, int width,
                         const int32_t *idx, int n, peso_err *err);
int peso_cpu_row_kl(peso_backend *be, const float *z, const float *z_prev, const int32_t *lens,
                    int B, int T, int d, double scale, float *dz, double *value, peso_err *err);

int peso_cpu_log_softmax_sel(peso_backend *be, float *out, float *lse, const float *x, int n, int V,
                             const int32_t *sel, int n_sel, peso_err *err);
int peso_cpu_decode_attention(peso_backend *be, const peso_decode_attn_shape *s, float *out, const float *q,
                              const float *pk, const float *pv, const float *ok, const float *ov,
                              peso_err *err);

/* Working memory owned by be, grown on demand and kept until destroy:
 * one slice of at least per_thread floats for each of
 * omp_get_max_threads() threads, *slice floats apart (thread i uses
 * scratch + i * *slice). Valid until the next peso_cpu_scratch call,
 * which may move it: a backend serves one calling thread at a time. */
float *peso_cpu_scratch(peso_backend *be, size_t per_thread, size_t *slice);


/* Work (in elements touched) below which starting threads costs more
 * than it saves: small calls run on the calling thread. */
#define PESO_CPU_PAR_MIN 32768

/* KL(softmax(x) || softmax(y)) over n >= 1 entries in double, softmaxes
 * max-subtracted. x and y are overwritten; with grad set, x holds dKL/dx =
 * p (log p - log q) - p KL on return (prox_kl and row_kl share it). */
double peso_cpu_softmax_kl(double *x, double *y, size_t n, int grad);

/* Row r of a table as float32 (cpu tables are f32 only). */
static inline const float *peso_cpu_table_row(const peso_table *t, int r)
{
    if (r >= t->train_lo && r < t->train_hi)
        return t->train + (size_t)(r - t->train_lo) * (size_t)t->dim;
    return (const float *)t->base + (size_t)r * (size_t)t->dim;
}

/* e^x within 1e-7 relative, in plain arithmetic that loops under
 * `omp simd` vectorise (libm's expf stays scalar): x = n ln2 + r with
 * |r| <= ln2/2, Cephes' polynomial for e^r, 2^n built in the exponent
 * bits. Results below 2^-126 (x < -87) flush to 0, x > 88 gives +inf,
 * NaN stays NaN. The range tests read x's bits as unsigned integers,
 * which order like |x| within each sign, because GCC does not vectorise
 * loops with float comparisons in them (those may trap). */
static inline float peso_cpu_expf(float x)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    uint32_t u, e;
    memcpy(&u, &x, sizeof u);
    uint32_t over = -(uint32_t)(u - 0x42B00001u < 0x7F800000u - 0x42B00000u);  /* (88, +inf] */
    uint32_t under = -(uint32_t)(u - 0xC2AE0001u < 0xFF800000u - 0xC2AE0000u); /* [-inf, -87) */
    float t = x * 1.44269504088896341f + magic, n = t - magic;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    memcpy(&e, &t, sizeof e);
    e = (e - 0x4B400000u + 127u) << 23; /* n's bits in t, moved to the exponent */
    float two_n, y;
    memcpy(&two_n, &e, sizeof two_n);
    y = p * two_n;
    memcpy(&u, &y, sizeof u);
    u = (u & ~(over | under)) | (0x7F800000u & over);
    memcpy(&y, &u, sizeof y);
    return y;
}

#endif
