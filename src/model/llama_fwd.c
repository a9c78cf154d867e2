/* The forward pass: embedding, decoder layers (RMSNorm, q/k/v with LoRA,
 * RoPE, causal GQA attention, o_proj, RMSNorm, SwiGLU MLP with LoRA),
 * final norm, and the cross-entropy at label positions only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/llama_internal.h"

static peso_table table(const peso_llama *m, const void *base, peso_dtype dt, size_t new_off)
{
    peso_table t = {
        .base = base,
        .base_dtype = dt,
        .n_rows = m->cfg.vocab_size,
        .dim = m->cfg.hidden_size,
        .train_lo = m->base_vocab,
        .train_hi = m->cfg.vocab_size,
        .train = m->n_new ? m->params + new_off : NULL,
    };
    return t;
}

peso_table peso_llama_embed_table(const peso_llama *m)
{
    return table(m, m->embed, m->embed_dt, m->embed_new_off);
}

peso_table peso_llama_head_table(const peso_llama *m)
{
    return table(m, m->head, m->head_dt, m->head_new_off);
}

int peso_llama_proj(peso_llama *m, int l, peso_lora_proj p, int N, float *y, const float *x, float *lu,
                    float *plu, float beta, peso_err *err)
{
    peso_backend *be = m->be;
    int in, out;
    peso_lora_proj_dims(&m->cfg, p, &in, &out);
    if (peso_linear(be, y, x, m->layers[l].w[p], m->layers[l].wdt[p], N, out, in, 1.0f, beta, err) < 0)
        return -1;
    const peso_lora_module *md = peso_lora_find(&m->lora, l, p);
    if (!md)
        return 0;
    int r = m->lora.conf.rank;
    if (peso_llama_past_forward(m, m->lora.index[l * PESO_LORA_NPROJ + p], N, y, x, plu, err) < 0 ||
        peso_linear(be, lu, x, m->params + md->a_off, PESO_F32, N, r, in, 1.0f, 0.0f, err) < 0)
        return -1;
    return peso_linear(be, y, lu, m->params + md->b_off, PESO_F32, N, out, r, m->lora.scaling, 1.0f, err);
}

peso_llama_site peso_llama_site_of(const peso_llama *m, int l, peso_lora_proj p, const float *x, const float *lu,
                                   float *y)
{
    const peso_llama_acts *ac = m->acts;
    int mi = m->lora.index[l * PESO_LORA_NPROJ + p];
    peso_llama_site s = {
        .pass = ac->pass,
        .layer = l,
        .proj = p,
        .mod = mi >= 0 ? &m->lora.mods[mi] : NULL,
        .module = mi,
        .B = ac->B,
        .T = ac->T,
        .lens = ac->h_lens,
        .dev_lens = ac->lens,
        .x = x,
        .lu = lu,
        .y = y,
    };
    return s;
}

/* The staged batch's N = B*T rows, with the layer's kept products; the
 * hook sees every adapted projection of a hooked pass. */
static int proj(peso_llama *m, int l, peso_lora_proj p, float *y, const float *x, float beta, peso_err *err)
{
    peso_layer_acts *a = &m->acts->layer[l];
    if (peso_llama_proj(m, l, p, m->acts->B * m->acts->T, y, x, a->lu[p], a->plu[p], beta, err) < 0)
        return -1;
    if (!m->acts->hooked || !m->hook.forward || !peso_lora_find(&m->lora, l, p))
        return 0;
    peso_llama_site s = peso_llama_site_of(m, l, p, x, a->lu[p], y);
    if (m->hook.forward(m->hook.ctx, m, &s, err) < 0)
        return peso_err_prefix(err, "layer %d %s hook", l, peso_lora_proj_name(p));
    return 0;
}

static int copy_if(peso_backend *be, float *dst, const float *src, size_t n, peso_err *err)
{
    return dst == src ? 0 : be->copy(be, dst, src, n * sizeof(float), err);
}

static peso_attn_shape attn_shape(const peso_llama *m)
{
    peso_attn_shape s = {m->acts->B, m->acts->T, m->cfg.num_attention_heads, m->cfg.num_key_value_heads,
                         m->cfg.head_dim};
    return s;
}

static int attention_block(peso_llama *m, int l, peso_err *err)
{
    peso_backend *be = m->be;
    peso_llama_acts *ac = m->acts;
    peso_layer_acts *a = &ac->layer[l];
    const peso_llama_config *c = &m->cfg;
    int N = ac->B * ac->T;
    peso_attn_shape s = attn_shape(m);
    if (be->rmsnorm(be, a->xn1, a->rstd1, a->x, m->layers[l].attn_norm, N, c->hidden_size,
                    (float)c->rms_norm_eps, err) < 0 ||
        proj(m, l, PESO_LORA_Q, a->q, a->xn1, 0.0f, err) < 0 ||
        proj(m, l, PESO_LORA_K, a->k, a->xn1, 0.0f, err) < 0 ||
        proj(m, l, PESO_LORA_V, a->v, a->xn1, 0.0f, err) < 0 ||
        be->rope(be, a->q, ac->pos, m->inv_freq, N, s.n_head, s.head_dim, err) < 0 ||
        be->rope(be, a->k, ac->pos, m->inv_freq, N, s.n_kv_head, s.head_dim, err) < 0 ||
        be->attention(be, &s, a->att, a->lse, a->q, a->k, a->v, ac->lens, err) < 0)
        return -1;
    if (copy_if(be, a->xmid, a->x, (size_t)N * c->hidden_size, err) < 0)
        return -1;
    return proj(m, l, PESO_LORA_O, a->xmid, a->att, 1.0f, err);
}

static int mlp_block(peso_llama *m, int l, peso_err *err)
{
    peso_backend *be = m->be;
    peso_layer_acts *a = &m->acts->layer[l];
    const peso_llama_config *c = &m->cfg;
    int N = m->acts->B * m->acts->T;
    if (be->rmsnorm(be, a->xn2, a->rstd2, a->xmid, m->layers[l].mlp_norm, N, c->hidden_size,
                    (float)c->rms_norm_eps, err) < 0 ||
        proj(m, l, PESO_LORA_GATE, a->g, a->xn2, 0.0f, err) < 0 ||
        proj(m, l, PESO_LORA_UP, a->u, a->xn2, 0.0f, err) < 0 ||
        be->swiglu(be, a->h, a->g, a->u, (size_t)N * c->intermediate_size, err) < 0)
        return -1;
    if (copy_if(be, a->xout, a->xmid, (size_t)N * c->hidden_size, err) < 0)
        return -1;
    return proj(m, l, PESO_LORA_DOWN, a->xout, a->h, 1.0f, err);
}

int peso_llama_run_layers(peso_llama *m, peso_err *err)
{
    peso_backend *be = m->be;
    peso_llama_acts *ac = m->acts;
    const peso_llama_config *c = &m->cfg;
    int N = ac->B * ac->T, L = c->num_hidden_layers;
    peso_table emb = peso_llama_embed_table(m);
    if (peso_llama_past_begin(m, N, err) < 0 || be->embed(be, &emb, ac->layer[0].x, ac->ids, N, err) < 0)
        return -1;
    for (int l = 0; l < L; l++)
        if (attention_block(m, l, err) < 0 || mlp_block(m, l, err) < 0)
            return peso_err_prefix(err, "layer %d", l);
    return be->rmsnorm(be, ac->xf, ac->rstdf, ac->layer[L - 1].xout, m->norm, N, c->hidden_size,
                       (float)c->rms_norm_eps, err);
}

/* Cross-entropy at the staged label positions; dxf/dhead NULL for none. */
static int head_loss(peso_llama *m, float scale, float *dxf, float *dhead, peso_llama_loss *loss,
                     peso_err *err)
{
    peso_backend *be = m->be;
    peso_llama_acts *ac = m->acts;
    peso_table head = peso_llama_head_table(m);
    int N = ac->B * ac->T, n = ac->n_lab;
    memset(loss, 0, sizeof *loss);
    if (n == 0)
        return 0;
    if (be->xent(be, &head, ac->xf, N, ac->xpos, ac->xtgt, n, scale, ac->losses, dxf, dhead, err) < 0 ||
        be->download(be, ac->h_losses, ac->losses, (size_t)n * sizeof(float), err) < 0)
        return -1;
    for (int i = 0; i < n; i++)
        loss->sum += ac->h_losses[i];
    loss->count = n;
    loss->mean = loss->sum / n;
    return 0;
}

int peso_llama_forward(peso_llama *m, const peso_llama_batch *b, peso_llama_loss *loss, peso_err *err)
{
    if (!b->labels)
        return peso_errf(err, "loss: the batch has no labels");
    if (peso_llama_prepare(m, b, 0, err) < 0)
        return -1;
    m->acts->pass = PESO_LLAMA_PASS_LOSS;
    m->acts->hooked = 1;
    if (peso_llama_run_layers(m, err) < 0)
        return -1;
    return head_loss(m, 0.0f, NULL, NULL, loss, err);
}

int peso_llama_forward_backward(peso_llama *m, const peso_llama_batch *b, float grad_scale,
                                peso_llama_loss *loss, peso_err *err)
{
    if (!b->labels)
        return peso_errf(err, "loss: the batch has no labels");
    if (peso_llama_prepare(m, b, 1, err) < 0)
        return -1;
    m->acts->pass = PESO_LLAMA_PASS_TRAIN;
    m->acts->hooked = 1;
    if (peso_llama_run_layers(m, err) < 0)
        return -1;
    if (m->acts->n_lab == 0)
        return head_loss(m, 0.0f, NULL, NULL, loss, err);
    if (peso_llama_prepare_grads(m, err) < 0)
        return -1;
    peso_grad_acts *g = &m->acts->g;
    size_t nc = (size_t)b->B * b->T * m->cfg.hidden_size;
    float *dhead = m->n_new ? m->grads + m->head_new_off : NULL;
    if (m->be->zero(m->be, g->dxn, nc * sizeof(float), err) < 0 ||
        head_loss(m, grad_scale, g->dxn, dhead, loss, err) < 0)
        return -1;
    return peso_llama_backward_layers(m, err);
}

void peso_llama_set_hook(peso_llama *m, const peso_llama_hook *h)
{
    if (h)
        m->hook = *h;
    else
        memset(&m->hook, 0, sizeof m->hook);
}

int peso_llama_observe(peso_llama *m, const peso_llama_batch *b, peso_err *err)
{
    peso_llama_batch nolabels = *b;
    nolabels.labels = NULL;
    if (peso_llama_prepare(m, &nolabels, 0, err) < 0)
        return -1;
    m->acts->pass = PESO_LLAMA_PASS_OBSERVE;
    m->acts->hooked = 1;
    int rc = peso_llama_run_layers(m, err);
    m->acts->hooked = 0;
    return rc;
}

/* One product per table segment (frozen rows, new rows): the segments
 * are separate buffers, so each lands in its own [n_pos, rows] block. */
int peso_llama_head_parts(peso_llama *m, const float *hs, int n_pos, float *base, float *fresh, peso_err *err)
{
    peso_backend *be = m->be;
    int C = m->cfg.hidden_size;
    if (peso_linear(be, base, hs, m->head, m->head_dt, n_pos, m->base_vocab, C, 1.0f, 0.0f, err) < 0)
        return -1;
    if (m->n_new == 0)
        return 0;
    return peso_linear(be, fresh, hs, m->params + m->head_new_off, PESO_F32, n_pos, m->n_new, C, 1.0f, 0.0f,
                       err);
}

int peso_llama_head_logits(peso_llama *m, const float *hs, int n_pos, float *out, peso_err *err)
{
    peso_backend *be = m->be;
    peso_llama_scratch *sc = &m->scratch;
    int V = m->cfg.vocab_size, Vb = m->base_vocab;
    size_t n = (size_t)n_pos * V, cap = sc->cap_logits;
    if (peso_llama_grow(be, (void **)&sc->logits, &sc->cap_logits, n, sizeof(float), "logits", err) < 0)
        return peso_err_prefix(err, "logits [%d, %d]", n_pos, V);
    if (sc->cap_logits != cap || !sc->host) {
        free(sc->host);
        sc->host = peso_malloc(sc->cap_logits * sizeof(float));
    }
    float *dev = sc->logits, *host = sc->host;
    int rc = peso_llama_head_parts(m, hs, n_pos, dev, dev + (size_t)n_pos * Vb, err);
    if (rc == 0)
        rc = be->download(be, host, dev, n * sizeof(float), err);
    for (int p = 0; rc == 0 && p < n_pos; p++) {
        memcpy(out + (size_t)p * V, host + (size_t)p * Vb, (size_t)Vb * sizeof(float));
        memcpy(out + (size_t)p * V + Vb, host + (size_t)n_pos * Vb + (size_t)p * m->n_new,
               (size_t)m->n_new * sizeof(float));
    }
    return rc;
}

void peso_llama_scratch_free(peso_llama *m)
{
    peso_llama_scratch *sc = &m->scratch;
    m->be->free(m->be, sc->logits);
    m->be->free(m->be, sc->rows);
    m->be->free(m->be, sc->idx);
    free(sc->host);
    memset(sc, 0, sizeof *sc);
}

int peso_llama_logits(peso_llama *m, const peso_llama_batch *b, const int32_t *pos, int n_pos, float *out,
                      peso_err *err)
{
    peso_llama_batch nolabels = *b;
    nolabels.labels = NULL;
    if (n_pos < 1)
        return peso_errf(err, "logits: %d positions, expected >= 1", n_pos);
    for (int i = 0; i < n_pos; i++)
        if (pos[i] < 0 || (long)pos[i] >= (long)b->B * b->T || pos[i] % b->T >= b->lens[pos[i] / b->T])
            return peso_errf(err, "logits: position %d is not a real token of the [%d, %d] batch", pos[i],
                             b->B, b->T);
    if (peso_llama_prepare(m, &nolabels, 0, err) < 0 || peso_llama_run_layers(m, err) < 0)
        return -1;
    peso_backend *be = m->be;
    peso_llama_scratch *sc = &m->scratch;
    int C = m->cfg.hidden_size;
    size_t n = (size_t)n_pos, have_rows = sc->cap_rows * C, have_idx = sc->cap_rows;
    if (peso_llama_grow(be, (void **)&sc->rows, &have_rows, n * C, sizeof(float), "logits rows", err) < 0 ||
        peso_llama_grow(be, (void **)&sc->idx, &have_idx, n, sizeof(int32_t), "logits positions", err) < 0)
        return -1;
    sc->cap_rows = have_idx;
    if (be->upload(be, sc->idx, pos, n * sizeof(int32_t), err) < 0 ||
        be->gather_rows(be, sc->rows, m->acts->xf, b->B * b->T, C, sc->idx, n_pos, err) < 0)
        return -1;
    return peso_llama_head_logits(m, sc->rows, n_pos, out, err);
}
