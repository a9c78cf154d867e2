/* InfLoRA's statistics: X^T X of every adapted module's input over the
 * real tokens of a batch, from a forward-only pass whose projections call
 * back here. The real rows are gathered on the device, multiplied there
 * (float32) and summed into the caller's double blocks on the host.
 * Modules that read the same input (q/k/v, gate/up) share one product. */
#include <stdlib.h>
#include <string.h>

#include "model/llama_internal.h"

struct peso_cov_pass {
    double *cov;
    size_t *off; /* [n_modules]: each module's block in cov */
    int n_real;  /* real tokens of the batch */
    int max_in;
    float *rows;         /* device [n_real, max_in]: the gathered input */
    float *prod;         /* device [max_in, max_in] */
    float *host;         /* host copy of prod */
    const float *last_x; /* input whose product prod and host hold */
    int last_layer;
};

size_t peso_llama_input_cov_numel(const peso_llama *m)
{
    size_t n = 0;
    for (int i = 0; i < m->lora.n_modules; i++)
        n += (size_t)m->lora.mods[i].in * (size_t)m->lora.mods[i].in;
    return n;
}

static void pass_free(peso_llama *m, peso_cov_pass *c)
{
    m->be->free(m->be, c->rows);
    m->be->free(m->be, c->prod);
    free(c->host);
    free(c->off);
}

static int pass_init(peso_llama *m, const peso_llama_batch *b, double *cov, peso_cov_pass *c, peso_err *err)
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
    for (int r = 0; r < b->B; r++)
        c->n_real += b->lens[r];
    if (c->n_real == 0 || c->max_in == 0)
        return 0;
    size_t in = (size_t)c->max_in;
    c->host = peso_malloc(in * in * sizeof *c->host);
    if (m->be->alloc(m->be, (void **)&c->rows, (size_t)c->n_real * in * sizeof(float), err) < 0 ||
        m->be->alloc(m->be, (void **)&c->prod, in * in * sizeof(float), err) < 0)
        return peso_err_prefix(err, "input covariance: scratch for %d tokens of width %d", c->n_real,
                               c->max_in);
    return 0;
}

/* prod = X^T X of the real rows of x [N, in], copied to the host. */
static int product(peso_llama *m, peso_cov_pass *c, const float *x, int in, peso_err *err)
{
    peso_backend *be = m->be;
    const peso_llama_acts *ac = m->acts;
    size_t at = 0;
    for (int b = 0; b < ac->B; b++) {
        size_t len = (size_t)ac->h_lens[b], src = (size_t)b * ac->T * in;
        if (len && be->copy(be, c->rows + at, x + src, len * in * sizeof(float), err) < 0)
            return -1;
        at += len * in;
    }
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

int peso_llama_cov_module(peso_llama *m, int l, peso_lora_proj p, const float *x, peso_err *err)
{
    peso_cov_pass *c = m->acts->cov;
    const peso_lora_module *md = peso_lora_find(&m->lora, l, p);
    if (!c || !md || c->n_real == 0)
        return 0;
    /* a forward-only arena reuses buffers across layers: the layer is
     * part of what identifies an input */
    if (c->last_x != x || c->last_layer != l) {
        if (product(m, c, x, md->in, err) < 0)
            return peso_err_prefix(err, "input covariance, layer %d %s", l, peso_lora_proj_name(p));
        c->last_x = x;
        c->last_layer = l;
    }
    /* the product's two triangles come from different summation orders;
     * their mean makes the block exactly symmetric for the eigensolver */
    double *dst = c->cov + c->off[m->lora.index[l * PESO_LORA_NPROJ + p]];
    size_t in = (size_t)md->in;
    for (size_t i = 0; i < in; i++)
        for (size_t j = 0; j < in; j++)
            dst[i * in + j] += 0.5 * ((double)c->host[i * in + j] + c->host[j * in + i]);
    return 0;
}

int peso_llama_input_cov(peso_llama *m, const peso_llama_batch *b, double *cov, long *n_tok, peso_err *err)
{
    peso_llama_batch nolabels = *b;
    nolabels.labels = NULL;
    peso_cov_pass c;
    if (peso_llama_prepare(m, &nolabels, 0, err) < 0)
        return -1;
    int rc = pass_init(m, b, cov, &c, err);
    if (rc == 0) {
        m->acts->cov = &c;
        rc = peso_llama_run_layers(m, err);
        m->acts->cov = NULL;
    }
    pass_free(m, &c);
    if (rc == 0)
        *n_tok += c.n_real;
    return rc;
}
