/* Prefill and per-beam decode steps over a shared prefix KV cache (see
 * model/decode.h). One routine runs n_seq sequences of n_tok new tokens
 * each: the prefill is one sequence of P tokens with an empty prefix
 * (the backend's causal attention, as in training), a step is n beams of
 * one token each after the P cached ones (attention on the host). The
 * projections are peso_llama_proj's, past adapters of the cumulative
 * family included (their magnitudes read at the start of each run). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/decode.h"
#include "model/llama_internal.h"

/* Where a run's new keys and values go and what its queries see: the
 * shared prefix [0, n_prefix) then the sequence's own tokens [0, s + j]
 * for its j-th new token, sequence b's own tokens at own + b * own_stride
 * (floats) in rows of kv floats. */
typedef struct run_kv {
    const float *pk, *pv; /* this layer's prefix cache */
    int n_prefix;
    float *ok, *ov; /* this layer's own cache of sequence 0 */
    size_t own_stride;
    int s; /* own tokens before this run */
} run_kv;

/* A prefill: one sequence, no prefix, so the square causal block of the
 * backend's attention op is exactly what it needs. */
static int is_prefill(const run_kv *r)
{
    return r->n_prefix == 0 && r->s == 0 && r->own_stride == 0;
}

static void free_dev(peso_decode *d)
{
    peso_backend *be = d->m->be;
    float **bufs[] = {&d->x, &d->xn, &d->q, &d->k, &d->v, &d->att, &d->g, &d->u, &d->h, &d->lu, &d->lse};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        be->free(be, *bufs[i]);
        *bufs[i] = NULL;
    }
    be->free(be, d->ids);
    be->free(be, d->pos);
    be->free(be, d->len);
    be->free(be, d->last);
    d->ids = d->pos = d->len = d->last = NULL;
    free(d->hq);
    free(d->hk);
    free(d->hv);
    free(d->hatt);
    free(d->h_pos);
    free(d->h_last);
    d->hq = d->hk = d->hv = d->hatt = NULL;
    d->h_pos = d->h_last = NULL;
    d->cap_tok = 0;
}

/* Device scratch and host mirrors for n tokens. */
static int reserve_tokens(peso_decode *d, int n, peso_err *err)
{
    if (n <= d->cap_tok)
        return 0;
    free_dev(d);
    const peso_llama_config *c = &d->m->cfg;
    peso_backend *be = d->m->be;
    size_t N = (size_t)n, C = (size_t)c->hidden_size, F = (size_t)c->intermediate_size;
    size_t qd = (size_t)c->num_attention_heads * c->head_dim, kv = (size_t)d->kv;
    size_t r = d->m->lora.conf.rank > 0 ? (size_t)d->m->lora.conf.rank : 1;
    struct {
        float **p;
        size_t n;
    } bufs[] = {{&d->x, C},
                {&d->xn, C},
                {&d->q, qd},
                {&d->k, kv},
                {&d->v, kv},
                {&d->att, qd},
                {&d->g, F},
                {&d->u, F},
                {&d->h, F},
                {&d->lu, r},
                {&d->lse, (size_t)c->num_attention_heads}};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (be->alloc(be, (void **)bufs[i].p, N * bufs[i].n * sizeof(float), err) < 0)
            return peso_err_prefix(err, "decode scratch for %d tokens", n);
    if (be->alloc(be, (void **)&d->ids, N * sizeof(int32_t), err) < 0 ||
        be->alloc(be, (void **)&d->pos, N * sizeof(int32_t), err) < 0 ||
        be->alloc(be, (void **)&d->len, sizeof(int32_t), err) < 0 ||
        be->alloc(be, (void **)&d->last, N * sizeof(int32_t), err) < 0)
        return peso_err_prefix(err, "decode scratch for %d tokens", n);
    d->hq = peso_malloc(N * qd * sizeof(float));
    d->hk = peso_malloc(N * kv * sizeof(float));
    d->hv = peso_malloc(N * kv * sizeof(float));
    d->hatt = peso_malloc(N * qd * sizeof(float));
    d->h_pos = peso_malloc(N * sizeof(int32_t));
    d->h_last = peso_malloc(N * sizeof(int32_t));
    d->cap_tok = n;
    return 0;
}

int peso_decode_init(peso_decode *d, peso_llama *m, int max_beams, int max_steps, peso_err *err)
{
    memset(d, 0, sizeof *d);
    if (max_beams < 1 || max_steps < 0)
        return peso_errf(err, "decode: %d beams, %d steps; expected >= 1 beam and >= 0 steps", max_beams,
                         max_steps);
    const peso_llama_config *c = &m->cfg;
    d->m = m;
    d->max_beams = max_beams;
    d->max_steps = max_steps;
    d->kv = c->num_key_value_heads * c->head_dim;
    size_t n = (size_t)c->num_hidden_layers * max_beams * (max_steps > 0 ? max_steps : 1) * d->kv;
    d->sk = peso_malloc(n * sizeof(float));
    d->sv = peso_malloc(n * sizeof(float));
    d->sk2 = peso_malloc(n * sizeof(float));
    d->sv2 = peso_malloc(n * sizeof(float));
    return reserve_tokens(d, max_beams, err);
}

void peso_decode_free(peso_decode *d)
{
    if (!d->m)
        return;
    free_dev(d);
    free(d->pk);
    free(d->pv);
    free(d->sk);
    free(d->sv);
    free(d->sk2);
    free(d->sv2);
    free(d->sc);
    memset(d, 0, sizeof *d);
}

static float dot(const float *a, const float *b, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* out = softmax(scale q . keys) . values over the prefix then the own
 * keys [0, n_own); sc holds the n_prefix + n_own scores. */
static void attend_one(float *out, float *sc, const float *q, const run_kv *r, const float *ok,
                       const float *ov, int n_own, int kvh, int D, int kv)
{
    float scale = (float)pow((double)D, -0.5), mx = -INFINITY;
    int n = r->n_prefix + n_own;
    for (int t = 0; t < n; t++) {
        const float *k = t < r->n_prefix ? r->pk + (size_t)t * kv : ok + (size_t)(t - r->n_prefix) * kv;
        sc[t] = scale * dot(q, k + kvh * D, D);
        mx = fmaxf(mx, sc[t]);
    }
    double sum = 0.0;
    for (int i = 0; i < D; i++)
        out[i] = 0.0f;
    for (int t = 0; t < n; t++) {
        const float *v = t < r->n_prefix ? r->pv + (size_t)t * kv : ov + (size_t)(t - r->n_prefix) * kv;
        float p = expf(sc[t] - mx);
        sum += p;
        for (int i = 0; i < D; i++)
            out[i] += p * v[kvh * D + i];
    }
    for (int i = 0; i < D; i++)
        out[i] = (float)(out[i] / sum);
}

/* Stores the run's new keys and values (host) in the own caches. */
static void store_kv(peso_decode *d, const run_kv *r, int n_seq, int n_tok)
{
    int kv = d->kv;
    for (int b = 0; b < n_seq; b++)
        for (int j = 0; j < n_tok; j++) {
            size_t src = ((size_t)b * n_tok + j) * kv, dst = b * r->own_stride + (size_t)(r->s + j) * kv;
            memcpy(r->ok + dst, d->hk + src, (size_t)kv * sizeof(float));
            memcpy(r->ov + dst, d->hv + src, (size_t)kv * sizeof(float));
        }
}

/* Every new query (host, after store_kv) against the prefix and its own
 * keys, into d->hatt. */
static void attend(peso_decode *d, const run_kv *r, int n_seq, int n_tok)
{
    const peso_llama_config *c = &d->m->cfg;
    int Hq = c->num_attention_heads, D = c->head_dim, kv = d->kv, group = Hq / c->num_key_value_heads;
    long n = (long)n_seq * n_tok * Hq;
    size_t keys = (size_t)r->n_prefix + r->s + n_tok;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        int h = (int)(i % Hq);
        long row = i / Hq;
        int b = (int)(row / n_tok), j = (int)(row % n_tok);
        size_t qo = (size_t)row * Hq * D + (size_t)h * D, own = b * r->own_stride;
        attend_one(d->hatt + qo, d->sc + i * keys, d->hq + qo, r, r->ok + own, r->ov + own, r->s + j + 1,
                   h / group, D, kv);
    }
}

static int attention_block(peso_decode *d, int l, int n_seq, int n_tok, const run_kv *r, peso_err *err)
{
    peso_llama *m = d->m;
    peso_backend *be = m->be;
    const peso_llama_config *c = &m->cfg;
    int N = n_seq * n_tok, Hq = c->num_attention_heads, D = c->head_dim;
    size_t qb = (size_t)N * Hq * D * sizeof(float), kb = (size_t)N * d->kv * sizeof(float);
    if (be->rmsnorm(be, d->xn, NULL, d->x, m->layers[l].attn_norm, N, c->hidden_size, (float)c->rms_norm_eps,
                    err) < 0 ||
        peso_llama_proj(m, l, PESO_LORA_Q, N, d->q, d->xn, d->lu, NULL, 0.0f, err) < 0 ||
        peso_llama_proj(m, l, PESO_LORA_K, N, d->k, d->xn, d->lu, NULL, 0.0f, err) < 0 ||
        peso_llama_proj(m, l, PESO_LORA_V, N, d->v, d->xn, d->lu, NULL, 0.0f, err) < 0 ||
        be->rope(be, d->q, d->pos, m->inv_freq, N, Hq, D, err) < 0 ||
        be->rope(be, d->k, d->pos, m->inv_freq, N, c->num_key_value_heads, D, err) < 0 ||
        be->download(be, d->hk, d->k, kb, err) < 0 || be->download(be, d->hv, d->v, kb, err) < 0)
        return -1;
    store_kv(d, r, n_seq, n_tok);
    if (is_prefill(r)) {
        peso_attn_shape sh = {1, n_tok, Hq, c->num_key_value_heads, D};
        if (be->attention(be, &sh, d->att, d->lse, d->q, d->k, d->v, d->len, err) < 0)
            return -1;
    } else {
        if (be->download(be, d->hq, d->q, qb, err) < 0)
            return -1;
        attend(d, r, n_seq, n_tok);
        if (be->upload(be, d->att, d->hatt, qb, err) < 0)
            return -1;
    }
    return peso_llama_proj(m, l, PESO_LORA_O, N, d->x, d->att, d->lu, NULL, 1.0f, err);
}

static int mlp_block(peso_decode *d, int l, int N, peso_err *err)
{
    peso_llama *m = d->m;
    peso_backend *be = m->be;
    const peso_llama_config *c = &m->cfg;
    if (be->rmsnorm(be, d->xn, NULL, d->x, m->layers[l].mlp_norm, N, c->hidden_size, (float)c->rms_norm_eps,
                    err) < 0 ||
        peso_llama_proj(m, l, PESO_LORA_GATE, N, d->g, d->xn, d->lu, NULL, 0.0f, err) < 0 ||
        peso_llama_proj(m, l, PESO_LORA_UP, N, d->u, d->xn, d->lu, NULL, 0.0f, err) < 0 ||
        be->swiglu(be, d->h, d->g, d->u, (size_t)N * c->intermediate_size, err) < 0)
        return -1;
    return peso_llama_proj(m, l, PESO_LORA_DOWN, N, d->x, d->h, d->lu, NULL, 1.0f, err);
}

/* In place over the rows of x [n, V]: x - logsumexp(x), in double. */
static void log_softmax(float *x, int n, int V)
{
    for (int i = 0; i < n; i++) {
        float *row = x + (size_t)i * V;
        double mx = row[0];
        for (int v = 1; v < V; v++)
            mx = fmax(mx, row[v]);
        double sum = exp(row[0] - mx);
        for (int v = 1; v < V; v++)
            sum += exp(row[v] - mx);
        double lse = mx + log(sum);
        for (int v = 0; v < V; v++)
            row[v] = (float)(row[v] - lse);
    }
}

/* Runs the staged ids/pos of n_seq x n_tok tokens through every layer
 * (layer l's caches at kv0's plus l layers), then the final norm and head on the
 * last token of each sequence: lp [n_seq, V]. */
static int run(peso_decode *d, int n_seq, int n_tok, run_kv kv0, size_t layer_own, float *lp, peso_err *err)
{
    peso_llama *m = d->m;
    peso_backend *be = m->be;
    const peso_llama_config *c = &m->cfg;
    int N = n_seq * n_tok, L = c->num_hidden_layers, C = c->hidden_size, V = c->vocab_size;
    peso_table emb = peso_llama_embed_table(m);
    if (peso_llama_past_begin(m, N, err) < 0 || be->embed(be, &emb, d->x, d->ids, N, err) < 0)
        return -1;
    for (int l = 0; l < L; l++) {
        run_kv r = kv0;
        r.pk = kv0.pk ? kv0.pk + (size_t)l * d->cap_prefix * d->kv : NULL;
        r.pv = kv0.pv ? kv0.pv + (size_t)l * d->cap_prefix * d->kv : NULL;
        r.ok = kv0.ok + l * layer_own;
        r.ov = kv0.ov + l * layer_own;
        if (attention_block(d, l, n_seq, n_tok, &r, err) < 0 || mlp_block(d, l, N, err) < 0)
            return peso_err_prefix(err, "decode layer %d", l);
    }
    /* the last token of each sequence, gathered into xn's first rows */
    for (int b = 0; b < n_seq; b++)
        d->h_last[b] = b * n_tok + n_tok - 1;
    if (be->upload(be, d->last, d->h_last, (size_t)n_seq * sizeof(int32_t), err) < 0 ||
        be->gather_rows(be, d->xn, d->x, N, C, d->last, n_seq, err) < 0)
        return -1;
    if (be->rmsnorm(be, d->x, NULL, d->xn, m->norm, n_seq, C, (float)c->rms_norm_eps, err) < 0 ||
        peso_llama_head_logits(m, d->x, n_seq, lp, err) < 0)
        return -1;
    log_softmax(lp, n_seq, V);
    return 0;
}

static int check_ids(const peso_decode *d, const int32_t *ids, int n, peso_err *err)
{
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= d->m->cfg.vocab_size)
            return peso_errf(err, "decode: token %d is %d, expected 0..%d", i, ids[i],
                             d->m->cfg.vocab_size - 1);
    return 0;
}

int peso_decode_prefill(peso_decode *d, const int32_t *ids, int P, float *lp, peso_err *err)
{
    if (P < 1)
        return peso_errf(err, "decode prefill: prompt of %d tokens, expected >= 1", P);
    if (check_ids(d, ids, P, err) < 0 || reserve_tokens(d, P, err) < 0)
        return -1;
    if (P > d->cap_prefix) {
        size_t n = (size_t)d->m->cfg.num_hidden_layers * P * d->kv * sizeof(float);
        free(d->pk);
        free(d->pv);
        d->pk = peso_malloc(n);
        d->pv = peso_malloc(n);
        d->cap_prefix = P;
        free(d->sc);
        d->sc = peso_malloc((size_t)d->max_beams * d->m->cfg.num_attention_heads * (P + d->max_steps) *
                            sizeof(float));
    }
    peso_backend *be = d->m->be;
    for (int t = 0; t < P; t++)
        d->h_pos[t] = t;
    if (be->upload(be, d->ids, ids, (size_t)P * sizeof(int32_t), err) < 0 ||
        be->upload(be, d->pos, d->h_pos, (size_t)P * sizeof(int32_t), err) < 0 ||
        be->upload(be, d->len, &P, sizeof(int32_t), err) < 0)
        return -1;
    /* the prompt is its own "own" sequence: causal over itself, no prefix */
    run_kv kv = {.pk = NULL, .pv = NULL, .n_prefix = 0, .ok = d->pk, .ov = d->pv, .own_stride = 0, .s = 0};
    d->P = 0;
    d->n_beams = 0;
    if (run(d, 1, P, kv, (size_t)d->cap_prefix * d->kv, lp, err) < 0)
        return -1;
    d->P = P;
    d->s = 0;
    d->n_beams = 1;
    return 0;
}

/* Own caches of the new beams = their parents', through the scratch. */
static void reorder(peso_decode *d, int n, const int32_t *parent)
{
    size_t beam = (size_t)d->max_steps * d->kv, row = (size_t)d->s * d->kv * sizeof(float);
    size_t layer = (size_t)d->max_beams * beam;
    for (int l = 0; l < d->m->cfg.num_hidden_layers; l++)
        for (int b = 0; b < n; b++) {
            memcpy(d->sk2 + l * layer + b * beam, d->sk + l * layer + parent[b] * beam, row);
            memcpy(d->sv2 + l * layer + b * beam, d->sv + l * layer + parent[b] * beam, row);
        }
    float *t = d->sk;
    d->sk = d->sk2;
    d->sk2 = t;
    t = d->sv;
    d->sv = d->sv2;
    d->sv2 = t;
}

int peso_decode_step(peso_decode *d, int n, const int32_t *parent, const int32_t *tokens, float *lp,
                     peso_err *err)
{
    if (d->n_beams < 1)
        return peso_errf(err, "decode step: no prefill");
    if (n < 1 || n > d->max_beams)
        return peso_errf(err, "decode step: %d beams, expected 1..%d", n, d->max_beams);
    if (d->s >= d->max_steps)
        return peso_errf(err, "decode step: beams already hold %d tokens, the most prepared for", d->s);
    for (int b = 0; b < n; b++)
        if (parent[b] < 0 || parent[b] >= d->n_beams)
            return peso_errf(err, "decode step: beam %d's parent is %d, expected 0..%d", b, parent[b],
                             d->n_beams - 1);
    if (check_ids(d, tokens, n, err) < 0)
        return -1;
    peso_backend *be = d->m->be;
    for (int b = 0; b < n; b++)
        d->h_pos[b] = d->P + d->s;
    if (be->upload(be, d->ids, tokens, (size_t)n * sizeof(int32_t), err) < 0 ||
        be->upload(be, d->pos, d->h_pos, (size_t)n * sizeof(int32_t), err) < 0)
        return -1;
    reorder(d, n, parent);
    size_t beam = (size_t)d->max_steps * d->kv;
    run_kv kv = {
        .pk = d->pk, .pv = d->pv, .n_prefix = d->P, .ok = d->sk, .ov = d->sv, .own_stride = beam, .s = d->s};
    d->n_beams = 0;
    if (run(d, n, 1, kv, (size_t)d->max_beams * beam, lp, err) < 0)
        return -1;
    d->n_beams = n;
    d->s++;
    return 0;
}
