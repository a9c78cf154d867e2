/* Prefill and per-beam decode steps over a shared prefix KV cache (see
 * model/decode.h). One routine runs the layers for both: the prefill is
 * one sequence of P tokens (the backend's causal attention; its keys and
 * values copied into the prefix cache), a step is n beams of one token
 * each (decode_attention over the prefix and the own cache). The
 * projections are peso_llama_proj's, past adapters of the cumulative
 * family included (their magnitudes read at the start of each run). */
#include <stdlib.h>
#include <string.h>

#include "model/decode.h"
#include "model/llama_internal.h"

/* Floats of one layer's own cache, and rows of kv floats in all layers'. */
static size_t own_layer(const peso_decode *d)
{
    return (size_t)d->max_steps * d->max_beams * d->kv;
}

static int own_rows(const peso_decode *d)
{
    return d->m->cfg.num_hidden_layers * d->max_steps * d->max_beams;
}

/* be->alloc of at least one byte: an empty cache (max_steps 0) is still a
 * valid pointer. */
static int dev_alloc(peso_backend *be, void **p, size_t bytes, peso_err *err)
{
    return be->alloc(be, p, bytes ? bytes : 1, err);
}

static void free_tokens(peso_decode *d)
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
    d->ids = d->pos = d->len = NULL;
    free(d->h_pos);
    d->h_pos = NULL;
    d->cap_tok = 0;
}

/* A run's activations for n tokens. */
static int reserve_tokens(peso_decode *d, int n, peso_err *err)
{
    if (n <= d->cap_tok)
        return 0;
    free_tokens(d);
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
        be->alloc(be, (void **)&d->len, sizeof(int32_t), err) < 0)
        return peso_err_prefix(err, "decode scratch for %d tokens", n);
    d->h_pos = peso_malloc(N * sizeof(int32_t));
    d->cap_tok = n;
    return 0;
}

static int gcd(int a, int b)
{
    while (b) {
        int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* The head's buffers. With new rows, the two products leave a row's
 * logits in two places; the largest chunk width that divides both parts
 * lets one gather_rows put each row together, by an index built here
 * once: row p is the chunks of its base logits, then those of its new
 * ones, and the first n rows' chunks are the index's first entries,
 * whatever n. */
static int head_init(peso_decode *d, peso_err *err)
{
    peso_llama *m = d->m;
    peso_backend *be = m->be;
    int V = m->cfg.vocab_size, Vb = m->base_vocab, nn = m->n_new, B = d->max_beams;
    size_t logits = (size_t)B * V * sizeof(float);
    if (be->alloc(be, (void **)&d->logits, logits, err) < 0)
        return peso_err_prefix(err, "decode logits [%d, %d]", B, V);
    if (nn == 0) {
        d->rows = d->logits;
        return 0;
    }
    d->chunk = gcd(Vb, nn);
    /* in chunks: a row is base + fresh of them, the new logits start at B * base */
    int base = Vb / d->chunk, fresh = nn / d->chunk, per_row = base + fresh;
    size_t n = (size_t)B * per_row;
    int32_t *idx = peso_malloc(n * sizeof *idx);
    for (int p = 0; p < B; p++)
        for (int j = 0; j < per_row; j++)
            idx[(size_t)p * per_row + j] = j < base ? p * base + j : B * base + p * fresh + (j - base);
    int rc = be->alloc(be, (void **)&d->rows, logits, err);
    if (rc == 0)
        rc = be->alloc(be, (void **)&d->chunks, n * sizeof *idx, err);
    if (rc == 0)
        rc = be->upload(be, d->chunks, idx, n * sizeof *idx, err);
    free(idx);
    return rc < 0 ? peso_err_prefix(err, "decode logits [%d, %d]", B, V) : 0;
}

void peso_decode_free(peso_decode *d)
{
    if (!d->m)
        return;
    peso_backend *be = d->m->be;
    free_tokens(d);
    float *bufs[] = {d->pk, d->pv, d->ok, d->ov, d->ok2, d->ov2, d->logits, d->lp};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        be->free(be, bufs[i]);
    if (d->rows != d->logits)
        be->free(be, d->rows);
    be->free(be, d->reorder);
    be->free(be, d->chunks);
    be->free(be, d->cols);
    free(d->h_reorder);
    memset(d, 0, sizeof *d);
}

int peso_decode_init(peso_decode *d, peso_llama *m, int max_beams, int max_steps, peso_err *err)
{
    memset(d, 0, sizeof *d);
    if (max_beams < 1 || max_steps < 0)
        return peso_errf(err, "decode: %d beams, %d steps; expected >= 1 beam and >= 0 steps", max_beams,
                         max_steps);
    const peso_llama_config *c = &m->cfg;
    peso_backend *be = m->be;
    d->m = m;
    d->max_beams = max_beams;
    d->max_steps = max_steps;
    d->kv = c->num_key_value_heads * c->head_dim;
    size_t own = (size_t)c->num_hidden_layers * own_layer(d) * sizeof(float);
    size_t idx = (size_t)own_rows(d) * sizeof(int32_t);
    if (dev_alloc(be, (void **)&d->ok, own, err) < 0 || dev_alloc(be, (void **)&d->ov, own, err) < 0 ||
        dev_alloc(be, (void **)&d->ok2, own, err) < 0 || dev_alloc(be, (void **)&d->ov2, own, err) < 0 ||
        dev_alloc(be, (void **)&d->reorder, idx, err) < 0) {
        peso_decode_free(d);
        return peso_err_prefix(err, "decode caches for %d beams x %d steps", max_beams, max_steps);
    }
    d->h_reorder = peso_malloc(idx ? idx : 1);
    if (head_init(d, err) < 0 || reserve_tokens(d, max_beams, err) < 0 ||
        peso_decode_select(d, NULL, 0, err) < 0) {
        peso_decode_free(d);
        return -1;
    }
    return 0;
}

int peso_decode_select(peso_decode *d, const int32_t *cols, int n_cols, peso_err *err)
{
    peso_backend *be = d->m->be;
    int V = d->m->cfg.vocab_size;
    if (!cols)
        n_cols = V;
    if (n_cols < 1)
        return peso_errf(err, "decode select: %d columns, expected >= 1", n_cols);
    for (int j = 0; cols && j < n_cols; j++)
        if (cols[j] < 0 || cols[j] >= V)
            return peso_errf(err, "decode select: column %d is token %d, expected 0..%d", j, cols[j], V - 1);
    size_t bytes = (size_t)n_cols * sizeof(int32_t);
    if (n_cols > d->cap_cols) {
        be->free(be, d->cols);
        be->free(be, d->lp);
        d->cols = NULL;
        d->lp = NULL;
        d->cap_cols = d->n_cols = 0;
        if (be->alloc(be, (void **)&d->cols, bytes, err) < 0 ||
            be->alloc(be, (void **)&d->lp, (size_t)d->max_beams * n_cols * sizeof(float), err) < 0)
            return peso_err_prefix(err, "decode select: %d columns", n_cols);
        d->cap_cols = n_cols;
    }
    int rc;
    if (cols) {
        rc = be->upload(be, d->cols, cols, bytes, err);
    } else {
        int32_t *all = peso_malloc(bytes);
        for (int j = 0; j < n_cols; j++)
            all[j] = j;
        rc = be->upload(be, d->cols, all, bytes, err);
        free(all);
    }
    d->n_cols = rc == 0 ? n_cols : 0;
    return rc;
}

/* Layer l's attention over the run's N tokens: the prefill's causal
 * block, its keys and values kept in the prefix cache, or a step's N
 * beams, whose keys and values join the own cache as step s's block
 * before they attend to the prefix and their own keys. */
static int attention_block(peso_decode *d, int l, int N, int prefill, peso_err *err)
{
    peso_llama *m = d->m;
    peso_backend *be = m->be;
    const peso_llama_config *c = &m->cfg;
    int Hq = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    size_t kb = (size_t)N * d->kv * sizeof(float);
    float *pk = d->pk + (size_t)l * d->cap_prefix * d->kv, *pv = d->pv + (size_t)l * d->cap_prefix * d->kv;
    if (be->rmsnorm(be, d->xn, NULL, d->x, m->layers[l].attn_norm, N, c->hidden_size, (float)c->rms_norm_eps,
                    err) < 0 ||
        peso_llama_proj(m, l, PESO_LORA_Q, N, d->q, d->xn, d->lu, NULL, 0.0f, err) < 0 ||
        peso_llama_proj(m, l, PESO_LORA_K, N, d->k, d->xn, d->lu, NULL, 0.0f, err) < 0 ||
        peso_llama_proj(m, l, PESO_LORA_V, N, d->v, d->xn, d->lu, NULL, 0.0f, err) < 0 ||
        be->rope(be, d->q, d->pos, m->inv_freq, N, Hq, D, err) < 0 ||
        be->rope(be, d->k, d->pos, m->inv_freq, N, Hkv, D, err) < 0)
        return -1;
    if (prefill) {
        peso_attn_shape sh = {1, N, Hq, Hkv, D};
        if (be->copy(be, pk, d->k, kb, err) < 0 || be->copy(be, pv, d->v, kb, err) < 0 ||
            be->attention(be, &sh, d->att, d->lse, d->q, d->k, d->v, d->len, err) < 0)
            return -1;
    } else {
        float *ok = d->ok + l * own_layer(d), *ov = d->ov + l * own_layer(d);
        size_t at = (size_t)d->s * d->max_beams * d->kv;
        peso_decode_attn_shape sh = {N, Hq, Hkv, D, d->P, d->s + 1, d->max_beams};
        if (be->copy(be, ok + at, d->k, kb, err) < 0 || be->copy(be, ov + at, d->v, kb, err) < 0 ||
            be->decode_attention(be, &sh, d->att, d->q, pk, pv, ok, ov, err) < 0)
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

/* The head on the n normed hidden states in xn: whole-vocabulary logits,
 * their log-softmax at the selected columns, and only those downloaded
 * into lp (host [n, n_cols]). */
static int head(peso_decode *d, int n, float *lp, peso_err *err)
{
    peso_llama *m = d->m;
    peso_backend *be = m->be;
    int V = m->cfg.vocab_size;
    if (peso_llama_head_parts(m, d->xn, n, d->logits, d->logits + (size_t)d->max_beams * m->base_vocab, err) <
        0)
        return -1;
    if (m->n_new && be->gather_rows(be, d->rows, d->logits, d->max_beams * (V / d->chunk), d->chunk,
                                    d->chunks, n * (V / d->chunk), err) < 0)
        return -1;
    if (be->log_softmax_sel(be, d->lp, NULL, d->rows, n, V, d->cols, d->n_cols, err) < 0)
        return -1;
    return be->download(be, lp, d->lp, (size_t)n * d->n_cols * sizeof(float), err);
}

/* Runs the N staged tokens (ids, pos) through every layer, then the final
 * norm and the head on the last n_out of them (the prompt's last token,
 * or every beam's): lp [n_out, n_cols]. */
static int run(peso_decode *d, int N, int n_out, int prefill, float *lp, peso_err *err)
{
    peso_llama *m = d->m;
    peso_backend *be = m->be;
    const peso_llama_config *c = &m->cfg;
    int C = c->hidden_size;
    if (d->n_cols < 1)
        return peso_errf(err, "decode: no columns selected (an earlier peso_decode_select failed)");
    peso_table emb = peso_llama_embed_table(m);
    if (peso_llama_past_begin(m, N, err) < 0 || be->embed(be, &emb, d->x, d->ids, N, err) < 0)
        return -1;
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (attention_block(d, l, N, prefill, err) < 0 || mlp_block(d, l, N, err) < 0)
            return peso_err_prefix(err, "decode layer %d", l);
    if (be->rmsnorm(be, d->xn, NULL, d->x + (size_t)(N - n_out) * C, m->norm, n_out, C,
                    (float)c->rms_norm_eps, err) < 0)
        return -1;
    return head(d, n_out, lp, err);
}

static int check_ids(const peso_decode *d, const int32_t *ids, int n, peso_err *err)
{
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= d->m->cfg.vocab_size)
            return peso_errf(err, "decode: token %d is %d, expected 0..%d", i, ids[i],
                             d->m->cfg.vocab_size - 1);
    return 0;
}

/* The prefix cache for P tokens, grown (contents dropped) when P exceeds
 * every earlier prompt. */
static int reserve_prefix(peso_decode *d, int P, peso_err *err)
{
    if (P <= d->cap_prefix)
        return 0;
    peso_backend *be = d->m->be;
    size_t n = (size_t)d->m->cfg.num_hidden_layers * P * d->kv * sizeof(float);
    be->free(be, d->pk);
    be->free(be, d->pv);
    d->pk = d->pv = NULL;
    d->cap_prefix = 0;
    if (be->alloc(be, (void **)&d->pk, n, err) < 0 || be->alloc(be, (void **)&d->pv, n, err) < 0)
        return peso_err_prefix(err, "decode prefix cache for %d tokens", P);
    d->cap_prefix = P;
    return 0;
}

int peso_decode_prefill(peso_decode *d, const int32_t *ids, int P, float *lp, peso_err *err)
{
    if (P < 1)
        return peso_errf(err, "decode prefill: prompt of %d tokens, expected >= 1", P);
    if (check_ids(d, ids, P, err) < 0)
        return -1;
    d->n_beams = 0;
    if (reserve_tokens(d, P, err) < 0 || reserve_prefix(d, P, err) < 0)
        return -1;
    peso_backend *be = d->m->be;
    for (int t = 0; t < P; t++)
        d->h_pos[t] = t;
    if (be->upload(be, d->ids, ids, (size_t)P * sizeof(int32_t), err) < 0 ||
        be->upload(be, d->pos, d->h_pos, (size_t)P * sizeof(int32_t), err) < 0 ||
        be->upload(be, d->len, &P, sizeof(int32_t), err) < 0 || run(d, P, 1, 1, lp, err) < 0)
        return -1;
    d->P = P;
    d->s = 0;
    d->n_beams = 1;
    return 0;
}

/* The own caches of the new beams = their parents': one gather for the
 * keys and one for the values over all layers' rows (rows of steps not
 * yet taken, and of beams past n, stay where they are), into the second
 * pair of caches, which become the live ones. */
static int reorder(peso_decode *d, int n, const int32_t *parent, peso_err *err)
{
    peso_backend *be = d->m->be;
    int rows = own_rows(d), B = d->max_beams;
    for (int r = 0; r < rows; r++) {
        int b = r % B, j = r / B % d->max_steps;
        d->h_reorder[r] = r - b + (j < d->s && b < n ? parent[b] : b);
    }
    if (be->upload(be, d->reorder, d->h_reorder, (size_t)rows * sizeof(int32_t), err) < 0 ||
        be->gather_rows(be, d->ok2, d->ok, rows, d->kv, d->reorder, rows, err) < 0 ||
        be->gather_rows(be, d->ov2, d->ov, rows, d->kv, d->reorder, rows, err) < 0)
        return -1;
    float *t = d->ok;
    d->ok = d->ok2;
    d->ok2 = t;
    t = d->ov;
    d->ov = d->ov2;
    d->ov2 = t;
    return 0;
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
    d->n_beams = 0;
    if (be->upload(be, d->ids, tokens, (size_t)n * sizeof(int32_t), err) < 0 ||
        be->upload(be, d->pos, d->h_pos, (size_t)n * sizeof(int32_t), err) < 0 ||
        (d->s > 0 && reorder(d, n, parent, err) < 0) || run(d, n, n, 0, lp, err) < 0)
        return -1;
    d->n_beams = n;
    d->s++;
    return 0;
}
