/* An independent Llama + LoRA forward in double precision for the model
 * tests: plain loops over one sequence at a time, written from the
 * transformers formulas (LlamaRMSNorm, rotate_half RoPE with the llama3
 * inv_freq rule, repeat_kv attention, SiLU-gated MLP, PEFT LoRA), sharing
 * no code with src/model. It reads float weights and LoRA matrices from
 * host arrays, so finite differences over them run in double. */
#ifndef PESO_TESTS_MODEL_REF_LLAMA_H
#define PESO_TESTS_MODEL_REF_LLAMA_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/flat.h"
#include "tiny_llama.h"

typedef struct ref_model {
    const tiny *t;
    double scaling;
    int rank;
    const float *A[TINY_MAX_LAYERS][TINY_NPROJ]; /* [rank, in] or NULL */
    const float *B[TINY_MAX_LAYERS][TINY_NPROJ]; /* [out, rank] */
    int n_new;                                   /* rows appended to the vocabulary */
    const float *embed_new, *head_new;           /* [n_new, C]; head_new = embed_new when tied */
} ref_model;

static inline void ref_inv_freq(const peso_llama_config *c, double *f)
{
    int half = c->head_dim / 2;
    const peso_rope_scaling *s = &c->rope_scaling;
    for (int i = 0; i < half; i++) {
        double inv = 1.0 / pow(c->rope_theta, (2.0 * i) / c->head_dim);
        if (s->llama3) {
            double wavelen = 2.0 * 3.14159265358979323846 / inv;
            double lo_wl = s->original_max_position_embeddings / s->low_freq_factor;
            double hi_wl = s->original_max_position_embeddings / s->high_freq_factor;
            if (wavelen > lo_wl) {
                inv = inv / s->factor;
            } else if (wavelen >= hi_wl) {
                double sm = (s->original_max_position_embeddings / wavelen - s->low_freq_factor) /
                            (s->high_freq_factor - s->low_freq_factor);
                inv = (1.0 - sm) * inv / s->factor + sm * inv;
            }
        }
        f[i] = inv;
    }
}

static inline void ref_rmsnorm(const double *x, const float *w, int T, int C, double eps, double *y)
{
    for (int t = 0; t < T; t++) {
        double ss = 0.0;
        for (int i = 0; i < C; i++)
            ss += x[t * C + i] * x[t * C + i];
        double r = 1.0 / sqrt(ss / C + eps);
        for (int i = 0; i < C; i++)
            y[t * C + i] = w[i] * (x[t * C + i] * r);
    }
}

/* y [T, out] = x W^T + scaling (x A^T) B^T */
static inline void ref_proj(const ref_model *r, int l, int p, const double *x, int T, double *y)
{
    int in, out;
    tiny_dims(&r->t->cfg, p, &in, &out);
    const float *W = r->t->w[l][p], *A = r->A[l][p], *B = r->B[l][p];
    size_t nt = T > 0 ? (size_t)T : 1, nr = r->rank > 0 ? (size_t)r->rank : 1;
    double *u = calloc(nt * nr, sizeof *u);
    for (int t = 0; t < T; t++) {
        for (int k = 0; A && k < r->rank; k++) {
            double s = 0.0;
            for (int i = 0; i < in; i++)
                s += x[t * in + i] * A[k * in + i];
            u[t * r->rank + k] = s;
        }
        for (int o = 0; o < out; o++) {
            double s = 0.0, d = 0.0;
            for (int i = 0; i < in; i++)
                s += x[t * in + i] * W[(size_t)o * in + i];
            for (int k = 0; A && k < r->rank; k++)
                d += u[t * r->rank + k] * B[o * r->rank + k];
            y[t * out + o] = s + r->scaling * d;
        }
    }
    free(u);
}

static inline void ref_rope(double *x, int T, int n_head, int hd, const double *inv)
{
    for (int t = 0; t < T; t++)
        for (int h = 0; h < n_head; h++) {
            double *v = x + ((size_t)t * n_head + h) * hd;
            for (int i = 0; i < hd / 2; i++) {
                double a = t * inv[i], c = cos(a), s = sin(a);
                double x1 = v[i], x2 = v[i + hd / 2];
                v[i] = x1 * c - x2 * s;
                v[i + hd / 2] = x2 * c + x1 * s;
            }
        }
}

static inline void ref_attention(const double *q, const double *k, const double *v, int T, int nh, int nkv,
                                 int hd, double *out)
{
    double *p = malloc((size_t)T * sizeof *p);
    for (int h = 0; h < nh; h++) {
        int g = h / (nh / nkv);
        for (int t = 0; t < T; t++) {
            double mx = -INFINITY, sum = 0.0;
            for (int j = 0; j <= t; j++) {
                double s = 0.0;
                for (int d = 0; d < hd; d++)
                    s += q[((size_t)t * nh + h) * hd + d] * k[((size_t)j * nkv + g) * hd + d];
                p[j] = s / sqrt((double)hd);
                mx = p[j] > mx ? p[j] : mx;
            }
            for (int j = 0; j <= t; j++)
                sum += (p[j] = exp(p[j] - mx));
            for (int d = 0; d < hd; d++) {
                double o = 0.0;
                for (int j = 0; j <= t; j++)
                    o += p[j] / sum * v[((size_t)j * nkv + g) * hd + d];
                out[((size_t)t * nh + h) * hd + d] = o;
            }
        }
    }
    free(p);
}

static inline const float *ref_row(const float *base, const float *extra, int vb, int C, int id)
{
    return id < vb ? base + (size_t)id * C : extra + (size_t)(id - vb) * C;
}

/* Final hidden states [T, C] of one sequence. */
static inline void ref_hidden(const ref_model *r, const int32_t *ids, int T, double *xf)
{
    const peso_llama_config *c = &r->t->cfg;
    int C = c->hidden_size, F = c->intermediate_size, nh = c->num_attention_heads;
    int nkv = c->num_key_value_heads, hd = c->head_dim, Hq = nh * hd, Hkv = nkv * hd;
    double inv[64], *x = malloc((size_t)T * C * sizeof *x), *xn = malloc((size_t)T * C * sizeof *xn);
    double *q = malloc((size_t)T * Hq * sizeof *q), *k = malloc((size_t)T * Hkv * sizeof *k);
    double *v = malloc((size_t)T * Hkv * sizeof *v), *att = malloc((size_t)T * Hq * sizeof *att);
    double *o = malloc((size_t)T * C * sizeof *o), *g = malloc((size_t)T * F * sizeof *g);
    double *u = malloc((size_t)T * F * sizeof *u);
    ref_inv_freq(c, inv);
    for (int t = 0; t < T; t++) {
        const float *e = ref_row(r->t->embed, r->embed_new, c->vocab_size, C, ids[t]);
        for (int i = 0; i < C; i++)
            x[t * C + i] = e[i];
    }
    for (int l = 0; l < c->num_hidden_layers; l++) {
        ref_rmsnorm(x, r->t->attn_norm[l], T, C, c->rms_norm_eps, xn);
        ref_proj(r, l, 0, xn, T, q);
        ref_proj(r, l, 1, xn, T, k);
        ref_proj(r, l, 2, xn, T, v);
        ref_rope(q, T, nh, hd, inv);
        ref_rope(k, T, nkv, hd, inv);
        ref_attention(q, k, v, T, nh, nkv, hd, att);
        ref_proj(r, l, 3, att, T, o);
        for (int i = 0; i < T * C; i++)
            x[i] += o[i];
        ref_rmsnorm(x, r->t->mlp_norm[l], T, C, c->rms_norm_eps, xn);
        ref_proj(r, l, 4, xn, T, g);
        ref_proj(r, l, 5, xn, T, u);
        for (int i = 0; i < T * F; i++)
            g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
        ref_proj(r, l, 6, g, T, o);
        for (int i = 0; i < T * C; i++)
            x[i] += o[i];
    }
    ref_rmsnorm(x, r->t->norm, T, C, c->rms_norm_eps, xf);
    free(x), free(xn), free(q), free(k), free(v), free(att), free(o), free(g), free(u);
}

/* logits [T, V + n_new] of one sequence */
static inline void ref_logits(const ref_model *r, const int32_t *ids, int T, double *out)
{
    const peso_llama_config *c = &r->t->cfg;
    int C = c->hidden_size, V = c->vocab_size + r->n_new;
    const float *head = r->t->head ? r->t->head : r->t->embed;
    double *xf = malloc((size_t)T * C * sizeof *xf);
    ref_hidden(r, ids, T, xf);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < V; j++) {
            const float *w = ref_row(head, r->head_new, c->vocab_size, C, j);
            double s = 0.0;
            for (int i = 0; i < C; i++)
                s += xf[t * C + i] * w[i];
            out[(size_t)t * V + j] = s;
        }
    free(xf);
}

/* Sum of cross-entropies over a right-padded batch (labels shifted as in
 * transformers: logits at t-1 predict labels[t]); *count label tokens. */
static inline double ref_loss_sum(const ref_model *r, const int32_t *ids, const int32_t *lens,
                                  const int32_t *labels, int B, int T, long *count)
{
    int V = r->t->cfg.vocab_size + r->n_new;
    double sum = 0.0;
    double *lg = malloc((size_t)T * V * sizeof *lg);
    *count = 0;
    for (int b = 0; b < B; b++) {
        int len = lens[b];
        if (len == 0)
            continue;
        ref_logits(r, ids + (size_t)b * T, len, lg);
        for (int t = 1; t <= len && t < T; t++) {
            int y = labels[(size_t)b * T + t];
            if (y == -100)
                continue;
            const double *z = lg + (size_t)(t - 1) * V;
            double mx = -INFINITY, s = 0.0;
            for (int j = 0; j < V; j++)
                mx = z[j] > mx ? z[j] : mx;
            for (int j = 0; j < V; j++)
                s += exp(z[j] - mx);
            sum += mx + log(s) - z[y];
            (*count)++;
        }
    }
    free(lg);
    return sum;
}

/* Points r's LoRA matrices and new rows into params (a host copy of a
 * model's flat), looked up by the PEFT key names spelled out here. */
static inline void ref_bind(ref_model *r, const tiny *t, const peso_flat *f, const float *params, int rank,
                            double alpha, unsigned targets, int n_new)
{
    char key[128];
    memset(r, 0, sizeof *r);
    r->t = t;
    r->rank = rank;
    r->scaling = (float)(alpha / rank);
    r->n_new = n_new;
    for (int l = 0; l < t->cfg.num_hidden_layers; l++)
        for (int p = 0; p < TINY_NPROJ; p++) {
            if (!(targets & (1u << p)))
                continue;
            int in, out;
            tiny_dims(&t->cfg, p, &in, &out);
            snprintf(key, sizeof key, "base_model.model.model.layers.%d.%s.lora_A.weight", l, tiny_proj[p]);
            const peso_view *a = peso_flat_find(f, key);
            cr_assert(a && a->ndim == 2 && a->shape[0] == rank && a->shape[1] == in, "view %s", key);
            snprintf(key, sizeof key, "base_model.model.model.layers.%d.%s.lora_B.weight", l, tiny_proj[p]);
            const peso_view *b = peso_flat_find(f, key);
            cr_assert(b && b->ndim == 2 && b->shape[0] == out && b->shape[1] == rank, "view %s", key);
            r->A[l][p] = params + a->offset;
            r->B[l][p] = params + b->offset;
        }
    if (n_new) {
        const peso_view *e = peso_flat_find(f, "model.embed_tokens.weight.new_rows");
        cr_assert(e && e->shape[0] == n_new && e->shape[1] == t->cfg.hidden_size);
        r->embed_new = params + e->offset;
        if (t->cfg.tie_word_embeddings) {
            r->head_new = r->embed_new;
        } else {
            const peso_view *h = peso_flat_find(f, "lm_head.weight.new_rows");
            cr_assert(h && h->shape[0] == n_new && h->shape[1] == t->cfg.hidden_size);
            r->head_new = params + h->offset;
        }
    }
}

#endif
