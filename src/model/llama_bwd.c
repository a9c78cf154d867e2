/* The backward pass, layer by layer in reverse, beside the forward in
 * llama_fwd.c. Only trainable tensors receive gradients: the LoRA A/B
 * views, the new vocabulary rows and the past adapters' learnable
 * magnitudes in m->grads. Frozen weights (past adapters included) are
 * only read, to carry activation gradients down. */
#include "model/llama_internal.h"

static int zero(peso_llama *m, float *p, size_t n, peso_err *err)
{
    return m->be->zero(m->be, p, n * sizeof(float), err);
}

/* Backward of proj(): the hook's backward sees dy first; dx += dy W +
 * scaling dy B A + sum_i alpha_i dy Bhat_i Ahat_i, dB += scaling dy^T
 * (x A^T), dA += (scaling dy B)^T x (not with freeze_a), and the
 * magnitudes' gradient (llama_past.c). */
static int proj_backward(peso_llama *m, int l, peso_lora_proj p, float *dx, const float *dy, const float *x,
                         peso_err *err)
{
    peso_backend *be = m->be;
    peso_grad_acts *g = &m->acts->g;
    const peso_layer_acts *a = &m->acts->layer[l];
    int N = m->acts->B * m->acts->T, in, out;
    peso_lora_proj_dims(&m->cfg, p, &in, &out);
    const peso_lora_module *md = peso_lora_find(&m->lora, l, p);
    if (md && m->hook.backward) {
        peso_llama_site s = peso_llama_site_of(m, l, p, x, a->lu[p], NULL);
        if (m->hook.backward(m->hook.ctx, m, &s, dy, err) < 0)
            return peso_err_prefix(err, "layer %d %s hook backward", l, peso_lora_proj_name(p));
    }
    if (md) {
        int r = m->lora.conf.rank, mi = m->lora.index[l * PESO_LORA_NPROJ + p];
        float *da = m->freeze_a ? NULL : m->grads + md->a_off;
        if (zero(m, g->dlu, (size_t)N * r, err) < 0 ||
            peso_linear_backward(be, g->dlu, m->grads + md->b_off, dy, a->lu[p], m->params + md->b_off,
                                 PESO_F32, N, out, r, m->lora.scaling, err) < 0 ||
            peso_linear_backward(be, dx, da, g->dlu, x, m->params + md->a_off, PESO_F32, N, r, in, 1.0f,
                                 err) < 0 ||
            peso_llama_past_backward(m, mi, N, dx, dy, a->plu[p], g->dlu, err) < 0)
            return -1;
    }
    return peso_linear_backward(be, dx, NULL, dy, x, m->layers[l].w[p], m->layers[l].wdt[p], N, out, in, 1.0f, err);
}

/* dres: dL/d(layer output) on entry, dL/d(xmid) on return. */
static int mlp_backward(peso_llama *m, int l, peso_err *err)
{
    peso_backend *be = m->be;
    peso_layer_acts *a = &m->acts->layer[l];
    peso_grad_acts *g = &m->acts->g;
    int N = m->acts->B * m->acts->T, C = m->cfg.hidden_size;
    size_t nf = (size_t)N * m->cfg.intermediate_size;
    if (zero(m, g->dh, nf, err) < 0 || proj_backward(m, l, PESO_LORA_DOWN, g->dh, g->dres, a->h, err) < 0 ||
        zero(m, g->dg, nf, err) < 0 || zero(m, g->du, nf, err) < 0 ||
        be->swiglu_backward(be, g->dg, g->du, g->dh, a->g, a->u, nf, err) < 0 ||
        zero(m, g->dxn, (size_t)N * C, err) < 0 ||
        proj_backward(m, l, PESO_LORA_GATE, g->dxn, g->dg, a->xn2, err) < 0 ||
        proj_backward(m, l, PESO_LORA_UP, g->dxn, g->du, a->xn2, err) < 0)
        return -1;
    /* the residual branch already sits in dres; the norm's path adds to it */
    return be->rmsnorm_backward(be, g->dres, NULL, g->dxn, a->xmid, m->layers[l].mlp_norm, a->rstd2, N, C,
                                err);
}

/* dres: dL/d(xmid) on entry, dL/d(layer input) on return. */
static int attention_backward(peso_llama *m, int l, peso_err *err)
{
    peso_backend *be = m->be;
    peso_llama_acts *ac = m->acts;
    peso_layer_acts *a = &ac->layer[l];
    peso_grad_acts *g = &ac->g;
    const peso_llama_config *c = &m->cfg;
    int N = ac->B * ac->T, C = c->hidden_size;
    peso_attn_shape s = {ac->B, ac->T, c->num_attention_heads, c->num_key_value_heads, c->head_dim};
    size_t nq = (size_t)N * s.n_head * s.head_dim, nkv = (size_t)N * s.n_kv_head * s.head_dim;
    if (zero(m, g->datt, nq, err) < 0 ||
        proj_backward(m, l, PESO_LORA_O, g->datt, g->dres, a->att, err) < 0 || zero(m, g->dq, nq, err) < 0 ||
        zero(m, g->dk, nkv, err) < 0 || zero(m, g->dv, nkv, err) < 0 ||
        be->attention_backward(be, &s, g->dq, g->dk, g->dv, g->datt, a->q, a->k, a->v, a->att, a->lse,
                               ac->lens, err) < 0 ||
        be->rope_backward(be, g->dq, ac->pos, m->inv_freq, N, s.n_head, s.head_dim, err) < 0 ||
        be->rope_backward(be, g->dk, ac->pos, m->inv_freq, N, s.n_kv_head, s.head_dim, err) < 0 ||
        zero(m, g->dxn, (size_t)N * C, err) < 0 ||
        proj_backward(m, l, PESO_LORA_Q, g->dxn, g->dq, a->xn1, err) < 0 ||
        proj_backward(m, l, PESO_LORA_K, g->dxn, g->dk, a->xn1, err) < 0 ||
        proj_backward(m, l, PESO_LORA_V, g->dxn, g->dv, a->xn1, err) < 0)
        return -1;
    return be->rmsnorm_backward(be, g->dres, NULL, g->dxn, a->x, m->layers[l].attn_norm, a->rstd1, N, C, err);
}

int peso_llama_backward_layers(peso_llama *m, peso_err *err)
{
    peso_backend *be = m->be;
    peso_llama_acts *ac = m->acts;
    peso_grad_acts *g = &ac->g;
    const peso_llama_config *c = &m->cfg;
    int N = ac->B * ac->T, C = c->hidden_size, L = c->num_hidden_layers;
    if (zero(m, g->dres, (size_t)N * C, err) < 0 ||
        be->rmsnorm_backward(be, g->dres, NULL, g->dxn, ac->layer[L - 1].xout, m->norm, ac->rstdf, N, C,
                             err) < 0)
        return -1;
    for (int l = L - 1; l >= 0; l--)
        if (mlp_backward(m, l, err) < 0 || attention_backward(m, l, err) < 0)
            return peso_err_prefix(err, "layer %d backward", l);
    if (!m->n_new)
        return 0;
    peso_table emb = peso_llama_embed_table(m);
    return be->embed_backward(be, &emb, m->grads + m->embed_new_off, g->dres, ac->ids, N, err);
}

int peso_llama_set_freeze_a(peso_llama *m, int freeze)
{
    m->freeze_a = freeze != 0;
    return 0;
}
