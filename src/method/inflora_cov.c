/* InfLoRA's statistics: X^T X of every adapted module's input over the
 * real tokens of a batch, from an observing pass whose projections call
 * the hook below. The real rows are gathered on the device, multiplied
 * there (float32) and summed into the caller's double blocks on the host.
 * Modules that read the same input (q/k/v, gate/up) share one product. */
#include "method/inflora_cov.h"

#include <stdlib.h>
#include <string.h>

typedef struct cov_pass {
    double *cov;
    size_t *off; /* [n_modules]: each module's block in cov */
    int n_real;  /* real tokens of the batch */
    int max_in;
    int32_t *idx;        /* device [n_real]: the rows of the real tokens */
    float *rows;         /* device [n_real, max_in]: the gathered input */
    float *prod;         /* device [max_in, max_in] */
    float *host;         /* host copy of prod */
    const float *last_x; /* input whose product prod and host hold */
    int last_layer;
} cov_pass;

size_t peso_inflora_cov_numel(const peso_llama *m)
{
    size_t n = 0;
    for (int i = 0; i < m->lora.n_modules; i++)
        n += (size_t)m->lora.mods[i].in * (size_t)m->lora.mods[i].in;
    return n;
}

static void pass_free(peso_llama *m, cov_pass *c)
{
    m->be->free(m->be, c->idx);
    m->be->free(m->be, c->rows);
    m->be->free(m->be, c->prod);
    free(c->host);
    free(c->off);
}

static int pass_init(peso_llama *m, const peso_llama_batch *b, double *cov, cov_pass *c, peso_err *err)
{
    memset(c, 0, sizeof *c);
    c->cov = cov;
    c->last_layer = -1;
    c->off = peso_malloc(((size_t)m->lora.n_modules + 1) * sizeof *c->off);
    size_t at = 0;
    for (int i = 0; i < m->lora.n_modules; i++) {
        int in = m->lora.mods[i].in;
        c->off[i] = at;
        at += (size_t)in * (size_t)in;
        if (in > c->max_in)
            c->max_in = in;
    }
    for (int r = 0; r < b->B; r++) {
        if (b->lens[r] < 0 || b->lens[r] > b->T)
            return peso_errf(err, "input covariance: batch row %d has length %d, expected 0..%d", r, b->lens[r],
                             b->T);
        c->n_real += b->lens[r];
    }
    if (c->n_real == 0 || c->max_in == 0)
        return 0;
    size_t in = (size_t)c->max_in;
    c->host = peso_malloc(in * in * sizeof *c->host);
    if (m->be->alloc(m->be, (void **)&c->idx, (size_t)c->n_real * sizeof(int32_t), err) < 0 ||
        m->be->alloc(m->be, (void **)&c->rows, (size_t)c->n_real * in * sizeof(float), err) < 0 ||
        m->be->alloc(m->be, (void **)&c->prod, in * in * sizeof(float), err) < 0)
        return peso_err_prefix(err, "input covariance: scratch for %d tokens of width %d", c->n_real,
                               c->max_in);
    int32_t *idx = peso_malloc((size_t)c->n_real * sizeof *idx);
    int k = 0;
    for (int r = 0; r < b->B; r++)
        for (int t = 0; t < b->lens[r]; t++)
            idx[k++] = r * b->T + t;
    int rc = m->be->upload(m->be, c->idx, idx, (size_t)c->n_real * sizeof *idx, err);
    free(idx);
    return rc;
}

/* prod = X^T X of the real rows of s->x [B*T, in], copied to the host. */
static int product(peso_llama *m, cov_pass *c, const peso_llama_site *s, int in, peso_err *err)
{
    peso_backend *be = m->be;
    if (be->gather_rows(be, c->rows, s->x, s->B * s->T, in, c->idx, c->n_real, err) < 0)
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
    if (be->matmul(be, &g, c->prod, c->rows, c->rows, err) < 0)
        return -1;
    return be->download(be, c->host, c->prod, (size_t)in * in * sizeof(float), err);
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
    double *dst = c->cov + c->off[s->module];
    size_t in = (size_t)s->mod->in;
    for (size_t i = 0; i < in; i++)
        for (size_t j = 0; j < in; j++)
            dst[i * in + j] += 0.5 * ((double)c->host[i * in + j] + c->host[j * in + i]);
    return 0;
}

int peso_inflora_cov_add(peso_llama *m, const peso_llama_batch *b, double *cov, long *n_tok, peso_err *err)
{
    cov_pass c;
    peso_llama_hook saved = m->hook, h = {.forward = cov_forward, .ctx = &c};
    int rc = pass_init(m, b, cov, &c, err);
    if (rc == 0) {
        peso_llama_set_hook(m, &h);
        rc = peso_llama_observe(m, b, err);
        peso_llama_set_hook(m, &saved);
    }
    pass_free(m, &c);
    if (rc == 0)
        *n_tok += c.n_real;
    return rc;
}
