/* InfLoRA's statistics: X^T X of every adapted module's input over the
 * real tokens of a batch, from an observing pass whose projections call
 * the hook below. The real rows are gathered on the device, multiplied
 * there (float32) and summed into the caller's double blocks on the host.
 * Modules that read the same input (q/k/v, gate/up) share one product. */
#include "method/inflora_cov.h"

#include <stdlib.h>
#include <string.h>

typedef struct cov_pass {
    peso_inflora_cov *w;
    double *cov;
    int n_real;          /* real tokens of the batch */
    const float *last_x; /* input whose product w->prod and w->host hold */
    int last_layer;
} cov_pass;

size_t peso_inflora_cov_numel(const peso_llama *m)
{
    size_t n = 0;
    for (int i = 0; i < m->lora.n_modules; i++)
        n += (size_t)m->lora.mods[i].in * (size_t)m->lora.mods[i].in;
    return n;
}

void peso_inflora_cov_free(peso_inflora_cov *w, peso_llama *m)
{
    m->be->free(m->be, w->idx);
    m->be->free(m->be, w->rows);
    m->be->free(m->be, w->prod);
    free(w->host);
    free(w->hidx);
    free(w->off);
    memset(w, 0, sizeof *w);
}

/* Grows w's buffers for n_real tokens (the module offsets and product
 * buffers once, on the first call). */
static int reserve(peso_inflora_cov *w, peso_llama *m, int n_real, peso_err *err)
{
    peso_backend *be = m->be;
    if (!w->off) {
        w->off = peso_malloc(((size_t)m->lora.n_modules + 1) * sizeof *w->off);
        size_t at = 0;
        for (int i = 0; i < m->lora.n_modules; i++) {
            int in = m->lora.mods[i].in;
            w->off[i] = at;
            at += (size_t)in * (size_t)in;
            if (in > w->max_in)
                w->max_in = in;
        }
        size_t in = (size_t)(w->max_in ? w->max_in : 1);
        w->host = peso_malloc(in * in * sizeof *w->host);
        if (be->alloc(be, (void **)&w->prod, in * in * sizeof(float), err) < 0)
            return peso_err_prefix(err, "input covariance: product of width %d", w->max_in);
    }
    if (n_real <= w->cap)
        return 0;
    be->free(be, w->idx);
    be->free(be, w->rows);
    w->idx = NULL;
    w->rows = NULL;
    free(w->hidx);
    w->hidx = peso_malloc((size_t)n_real * sizeof *w->hidx);
    w->cap = 0;
    if (be->alloc(be, (void **)&w->idx, (size_t)n_real * sizeof(int32_t), err) < 0 ||
        be->alloc(be, (void **)&w->rows, (size_t)n_real * (size_t)w->max_in * sizeof(float), err) < 0)
        return peso_err_prefix(err, "input covariance: scratch for %d tokens of width %d", n_real, w->max_in);
    w->cap = n_real;
    return 0;
}

static int pass_init(peso_inflora_cov *w, peso_llama *m, const peso_llama_batch *b, double *cov, cov_pass *c,
                     peso_err *err)
{
    memset(c, 0, sizeof *c);
    c->w = w;
    c->cov = cov;
    c->last_layer = -1;
    for (int r = 0; r < b->B; r++) {
        if (b->lens[r] < 0 || b->lens[r] > b->T)
            return peso_errf(err, "input covariance: batch row %d has length %d, expected 0..%d", r, b->lens[r],
                             b->T);
        c->n_real += b->lens[r];
    }
    if (reserve(w, m, c->n_real, err) < 0)
        return -1;
    if (c->n_real == 0 || w->max_in == 0)
        return 0;
    int k = 0;
    for (int r = 0; r < b->B; r++)
        for (int t = 0; t < b->lens[r]; t++)
            w->hidx[k++] = r * b->T + t;
    return m->be->upload(m->be, w->idx, w->hidx, (size_t)c->n_real * sizeof(int32_t), err);
}

/* prod = X^T X of the real rows of s->x [B*T, in], copied to the host. */
static int product(peso_llama *m, cov_pass *c, const peso_llama_site *s, int in, peso_err *err)
{
    peso_backend *be = m->be;
    peso_inflora_cov *w = c->w;
    if (be->gather_rows(be, w->rows, s->x, s->B * s->T, in, w->idx, c->n_real, err) < 0)
        return -1;
    peso_gemm g = {.m = in,
                   .n = in,
                   .k = c->n_real,
                   .trans_a = 1,
                   .trans_b = 0,
                   .alpha = 1.0f,
                   .beta = 0.0f,
                   .b_dtype = PESO_F32,
                   .batch = 1};
    if (be->matmul(be, &g, w->prod, w->rows, w->rows, err) < 0)
        return -1;
    return be->download(be, w->host, w->prod, (size_t)in * in * sizeof(float), err);
}

static int cov_forward(void *ctx, peso_llama *m, const peso_llama_site *s, peso_err *err)
{
    cov_pass *c = ctx;
    if (s->pass != PESO_LLAMA_PASS_OBSERVE || c->n_real == 0)
        return 0;
    /* a forward-only arena reuses buffers across layers: the layer is
     * part of what identifies an input */
    if (c->last_x != s->x || c->last_layer != s->layer) {
        if (product(m, c, s, s->mod->in, err) < 0)
            return peso_err_prefix(err, "input covariance");
        c->last_x = s->x;
        c->last_layer = s->layer;
    }
    /* the product's two triangles come from different summation orders;
     * their mean makes the block exactly symmetric for the eigensolver */
    double *dst = c->cov + c->w->off[s->module];
    const float *host = c->w->host;
    size_t in = (size_t)s->mod->in;
    for (size_t i = 0; i < in; i++)
        for (size_t j = 0; j < in; j++)
            dst[i * in + j] += 0.5 * ((double)host[i * in + j] + host[j * in + i]);
    return 0;
}

int peso_inflora_cov_add(peso_inflora_cov *w, peso_llama *m, const peso_llama_batch *b, double *cov, long *n_tok,
                         peso_err *err)
{
    cov_pass c;
    peso_llama_hook saved = m->hook, h = {.forward = cov_forward, .ctx = &c};
    int rc = pass_init(w, m, b, cov, &c, err);
    if (rc == 0) {
        peso_llama_set_hook(m, &h);
        rc = peso_llama_observe(m, b, err);
        peso_llama_set_hook(m, &saved);
    }
    if (rc == 0)
        *n_tok += c.n_real;
    return rc;
}
