/* The input of every projection of the reference forward (ref_llama.h),
 * in double, for the tests of the statistics and regularizers that are
 * functions of the modules' inputs (input covariance, output-KL). The
 * loop is ref_hidden's, built from the same reference pieces, recording
 * what each projection reads. */
#ifndef PESO_TESTS_MODEL_REF_INPUTS_H
#define PESO_TESTS_MODEL_REF_INPUTS_H

#include "ref_llama.h"

/* Inputs of one sequence of T tokens. */
typedef struct ref_inputs {
    int T;
    double *x[TINY_MAX_LAYERS][TINY_NPROJ]; /* [T, in] */
} ref_inputs;

static inline void ref_inputs_free(ref_inputs *ri)
{
    for (int l = 0; l < TINY_MAX_LAYERS; l++)
        for (int p = 0; p < TINY_NPROJ; p++)
            free(ri->x[l][p]);
    memset(ri, 0, sizeof *ri);
}

static inline double *ref_inputs_keep(const double *x, int T, int n)
{
    double *c = malloc((size_t)T * n * sizeof *c);
    memcpy(c, x, (size_t)T * n * sizeof *c);
    return c;
}

static inline void ref_inputs_run(const ref_model *r, const int32_t *ids, int T, ref_inputs *ri)
{
    const peso_llama_config *c = &r->t->cfg;
    int C = c->hidden_size, F = c->intermediate_size, nh = c->num_attention_heads;
    int nkv = c->num_key_value_heads, hd = c->head_dim, Hq = nh * hd, Hkv = nkv * hd;
    double inv[64], *x = malloc((size_t)T * C * sizeof *x), *xn = malloc((size_t)T * C * sizeof *xn);
    double *q = malloc((size_t)T * Hq * sizeof *q), *k = malloc((size_t)T * Hkv * sizeof *k);
    double *v = malloc((size_t)T * Hkv * sizeof *v), *att = malloc((size_t)T * Hq * sizeof *att);
    double *o = malloc((size_t)T * C * sizeof *o), *g = malloc((size_t)T * F * sizeof *g);
    double *u = malloc((size_t)T * F * sizeof *u);
    memset(ri, 0, sizeof *ri);
    ri->T = T;
    ref_inv_freq(c, inv);
    for (int t = 0; t < T; t++) {
        const float *e = ref_row(r->t->embed, r->embed_new, c->vocab_size, C, ids[t]);
        for (int i = 0; i < C; i++)
            x[t * C + i] = e[i];
    }
    for (int l = 0; l < c->num_hidden_layers; l++) {
        ref_rmsnorm(x, r->t->attn_norm[l], T, C, c->rms_norm_eps, xn);
        for (int p = 0; p < 3; p++)
            ri->x[l][p] = ref_inputs_keep(xn, T, C);
        ref_proj(r, l, 0, xn, T, q);
        ref_proj(r, l, 1, xn, T, k);
        ref_proj(r, l, 2, xn, T, v);
        ref_rope(q, T, nh, hd, inv);
        ref_rope(k, T, nkv, hd, inv);
        ref_attention(q, k, v, T, nh, nkv, hd, att);
        ri->x[l][3] = ref_inputs_keep(att, T, Hq);
        ref_proj(r, l, 3, att, T, o);
        for (int i = 0; i < T * C; i++)
            x[i] += o[i];
        ref_rmsnorm(x, r->t->mlp_norm[l], T, C, c->rms_norm_eps, xn);
        ri->x[l][4] = ref_inputs_keep(xn, T, C);
        ri->x[l][5] = ref_inputs_keep(xn, T, C);
        ref_proj(r, l, 4, xn, T, g);
        ref_proj(r, l, 5, xn, T, u);
        for (int i = 0; i < T * F; i++)
            g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
        ri->x[l][6] = ref_inputs_keep(g, T, F);
        ref_proj(r, l, 6, g, T, o);
        for (int i = 0; i < T * C; i++)
            x[i] += o[i];
    }
    free(x), free(xn), free(q), free(k), free(v), free(att), free(o), free(g), free(u);
}

#endif
