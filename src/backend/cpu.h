/* The cpu backend's operations, one concept per cpu_*.c file, gathered
 * into the table by cpu.c. Internal: the model reaches them through
 * peso_backend_create("cpu") and the table only. */
#ifndef PESO_BACKEND_CPU_H
#define PESO_BACKEND_CPU_H

#include "backend/backend.h"

peso_backend *peso_backend_cpu_create(peso_err *err);

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

/* Work (in elements touched) below which starting threads costs more
 * than it saves: small calls run on the calling thread. */
#define PESO_CPU_PAR_MIN 32768

/* Row r of a table as float32 (cpu tables are f32 only). */
static inline const float *peso_cpu_table_row(const peso_table *t, int r)
{
    if (r >= t->train_lo && r < t->train_hi)
        return t->train + (size_t)(r - t->train_lo) * (size_t)t->dim;
    return (const float *)t->base + (size_t)r * (size_t)t->dim;
}

#endif
