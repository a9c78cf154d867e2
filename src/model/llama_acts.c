/* The activation arena: one device allocation laid out by one function
 * that both sizes it (base NULL) and hands out the pointers, so the size a
 * reader computes from B, T and the config is the size the code uses. */
#include <stdlib.h>
#include <string.h>

#include "model/llama_internal.h"

/* every buffer starts on a 64-byte boundary, like the flat's views */
static size_t up16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

static float *bump(float *base, size_t *off, size_t n)
{
    float *p = base ? base + *off : NULL;
    *off += up16(n);
    return p;
}

/* Sizes the arena (base NULL) or hands out its pointers into ac (when not
 * NULL); n_past_kept past adapters keep their x Ahat_i^T per module. */
static size_t layout(const peso_llama_config *c, const peso_lora_conf *l, size_t N, int keep, int n_past_kept,
                     float *base, peso_llama_acts *ac)
{
    size_t C = (size_t)c->hidden_size, F = (size_t)c->intermediate_size;
    size_t Hq = (size_t)c->num_attention_heads * (size_t)c->head_dim;
    size_t Hkv = (size_t)c->num_key_value_heads * (size_t)c->head_dim;
    size_t r = (size_t)l->rank;
    int L = c->num_hidden_layers;
    size_t off = 0;
    peso_layer_acts one = {0}, *la = ac ? ac->layer : NULL;
    float *resid = keep ? NULL : bump(base, &off, N * C);
    float *x = keep ? bump(base, &off, N * C) : resid;
    for (int i = 0; i < L; i++) {
        peso_layer_acts *a = la ? &la[i] : &one;
        if (keep || i == 0) {
            memset(a, 0, sizeof *a);
            a->xn1 = bump(base, &off, N * C);
            a->rstd1 = bump(base, &off, N);
            a->q = bump(base, &off, N * Hq);
            a->k = bump(base, &off, N * Hkv);
            a->v = bump(base, &off, N * Hkv);
            a->att = bump(base, &off, N * Hq);
            a->lse = bump(base, &off, N * (size_t)c->num_attention_heads);
            a->xmid = keep ? bump(base, &off, N * C) : resid;
            a->xn2 = bump(base, &off, N * C);
            a->rstd2 = bump(base, &off, N);
            a->g = bump(base, &off, N * F);
            a->u = bump(base, &off, N * F);
            a->h = bump(base, &off, N * F);
            for (int p = 0; p < PESO_LORA_NPROJ; p++)
                if (l->targets & (1u << p))
                    a->lu[p] = bump(base, &off, N * r);
            for (int p = 0; p < PESO_LORA_NPROJ && keep && n_past_kept; p++)
                if (l->targets & (1u << p))
                    a->plu[p] = bump(base, &off, (size_t)n_past_kept * N * r);
        } else if (la) {
            *a = la[0];
        }
        a->x = x;
        a->xout = keep ? bump(base, &off, N * C) : resid;
        x = a->xout;
    }
    float *f = bump(base, &off, N * C), *rs = bump(base, &off, N);
    if (ac) {
        ac->xf = f;
        ac->rstdf = rs;
    }
    return off;
}

size_t peso_llama_acts_numel(const peso_llama_config *c, const peso_lora_conf *l, int B, int T, int keep)
{
    return layout(c, l, (size_t)B * (size_t)T, keep, 0, NULL, NULL);
}

size_t peso_llama_past_acts_numel(const peso_llama_config *c, const peso_lora_conf *l, int B, int T, int keep,
                                  int n_past_kept)
{
    size_t N = (size_t)B * (size_t)T;
    return layout(c, l, N, keep, l->targets ? n_past_kept : 0, NULL, NULL) - peso_llama_acts_numel(c, l, B, T, keep);
}

static size_t grad_layout(const peso_llama_config *c, const peso_lora_conf *l, size_t N, float *base,
                          peso_grad_acts *g)
{
    size_t C = (size_t)c->hidden_size, F = (size_t)c->intermediate_size;
    size_t Hq = (size_t)c->num_attention_heads * (size_t)c->head_dim;
    size_t Hkv = (size_t)c->num_key_value_heads * (size_t)c->head_dim;
    size_t off = 0;
    peso_grad_acts none;
    if (!g)
        g = &none;
    g->dres = bump(base, &off, N * C);
    g->dxn = bump(base, &off, N * C);
    g->dq = bump(base, &off, N * Hq);
    g->dk = bump(base, &off, N * Hkv);
    g->dv = bump(base, &off, N * Hkv);
    g->datt = bump(base, &off, N * Hq);
    g->dg = bump(base, &off, N * F);
    g->du = bump(base, &off, N * F);
    g->dh = bump(base, &off, N * F);
    g->dlu = l->targets ? bump(base, &off, N * (size_t)l->rank) : NULL;
    return off;
}

size_t peso_llama_grad_acts_numel(const peso_llama_config *c, const peso_lora_conf *l, int B, int T)
{
    return grad_layout(c, l, (size_t)B * (size_t)T, NULL, NULL);
}

/* Frees *p and allocates n floats (zeroed) when n exceeds *cap. */
int peso_llama_grow(peso_backend *be, void **p, size_t *cap, size_t n, size_t elt, const char *what,
                    peso_err *err)
{
    if (n <= *cap && *p)
        return 0;
    be->free(be, *p);
    *p = NULL;
    *cap = 0;
    if (be->alloc(be, p, (n ? n : 1) * elt, err) < 0)
        return peso_err_prefix(err, "%s (%zu elements)", what, n);
    *cap = n;
    return 0;
}

static int grow_dev(peso_backend *be, void **p, size_t *cap, size_t n, size_t elt, peso_err *err)
{
    return peso_llama_grow(be, p, cap, n, elt, "activation arena", err);
}

static void free_staging(peso_llama *m)
{
    peso_llama_acts *a = m->acts;
    peso_backend *be = m->be;
    be->free(be, a->ids);
    be->free(be, a->pos);
    be->free(be, a->lens);
    be->free(be, a->xpos);
    be->free(be, a->xtgt);
    be->free(be, a->losses);
    free(a->h_ids);
    free(a->h_pos);
    free(a->h_xpos);
    free(a->h_xtgt);
    free(a->h_lens);
    free(a->h_losses);
    a->ids = a->pos = a->lens = a->xpos = a->xtgt = NULL;
    a->losses = NULL;
    a->h_ids = a->h_pos = a->h_xpos = a->h_xtgt = a->h_lens = NULL;
    a->h_losses = NULL;
    a->cap_tok = a->cap_b = 0;
}

void peso_llama_acts_free(peso_llama *m)
{
    peso_llama_acts *a = m->acts;
    if (!a)
        return;
    m->be->free(m->be, a->mem);
    m->be->free(m->be, a->gmem);
    free_staging(m);
    free(a->layer);
    free(a);
    m->acts = NULL;
}

static int grow_staging(peso_llama *m, int n_tok, int n_b, peso_err *err)
{
    peso_llama_acts *a = m->acts;
    if (n_tok <= a->cap_tok && n_b <= a->cap_b)
        return 0;
    free_staging(m);
    peso_backend *be = m->be;
    size_t ti = (size_t)n_tok * sizeof(int32_t);
    if (be->alloc(be, (void **)&a->ids, ti, err) < 0 || be->alloc(be, (void **)&a->pos, ti, err) < 0 ||
        be->alloc(be, (void **)&a->xpos, ti, err) < 0 || be->alloc(be, (void **)&a->xtgt, ti, err) < 0 ||
        be->alloc(be, (void **)&a->losses, (size_t)n_tok * sizeof(float), err) < 0 ||
        be->alloc(be, (void **)&a->lens, (size_t)n_b * sizeof(int32_t), err) < 0) {
        free_staging(m);
        return peso_err_prefix(err, "batch staging");
    }
    a->h_ids = peso_malloc(ti);
    a->h_pos = peso_malloc(ti);
    a->h_xpos = peso_malloc(ti);
    a->h_xtgt = peso_malloc(ti);
    a->h_losses = peso_malloc((size_t)n_tok * sizeof(float));
    a->h_lens = peso_malloc((size_t)n_b * sizeof(int32_t));
    a->cap_tok = n_tok;
    a->cap_b = n_b;
    return 0;
}

/* Checks one row's ids and labels and appends its label positions (the
 * hidden state at t-1 predicts labels[t]). */
static int stage_row(peso_llama *m, const peso_llama_batch *b, int r, int *n_lab, peso_err *err)
{
    peso_llama_acts *a = m->acts;
    int T = b->T, len = b->lens[r], V = m->cfg.vocab_size;
    for (int t = 0; t < T; t++) {
        size_t i = (size_t)r * T + t;
        a->h_pos[i] = t;
        a->h_ids[i] = t < len ? b->ids[i] : 0;
        if (t < len && (b->ids[i] < 0 || b->ids[i] >= V))
            return peso_errf(err, "input_ids[%d][%d] = %d outside the vocabulary [0, %d)", r, t, b->ids[i],
                             V);
        if (!b->labels || t == 0 || b->labels[i] == PESO_LABEL_IGNORE)
            continue;
        if (t > len)
            return peso_errf(err,
                             "labels[%d][%d] = %d after the row's %d real tokens (predicted from "
                             "padding), expected %d",
                             r, t, b->labels[i], len, PESO_LABEL_IGNORE);
        if (b->labels[i] < 0 || b->labels[i] >= V)
            return peso_errf(err, "labels[%d][%d] = %d outside the vocabulary [0, %d) and not %d", r, t,
                             b->labels[i], V, PESO_LABEL_IGNORE);
        a->h_xpos[*n_lab] = (int32_t)(i - 1);
        a->h_xtgt[*n_lab] = b->labels[i];
        (*n_lab)++;
    }
    return 0;
}

static int stage_batch(peso_llama *m, const peso_llama_batch *b, peso_err *err)
{
    peso_llama_acts *a = m->acts;
    peso_backend *be = m->be;
    int N = b->B * b->T, n_lab = 0;
    for (int r = 0; r < b->B; r++) {
        if (b->lens[r] < 0 || b->lens[r] > b->T)
            return peso_errf(err, "batch row %d: length %d outside [0, %d]", r, b->lens[r], b->T);
        if (stage_row(m, b, r, &n_lab, err) < 0)
            return -1;
    }
    size_t ti = (size_t)N * sizeof(int32_t);
    if (be->upload(be, a->ids, a->h_ids, ti, err) < 0 || be->upload(be, a->pos, a->h_pos, ti, err) < 0 ||
        be->upload(be, a->lens, b->lens, (size_t)b->B * sizeof(int32_t), err) < 0 ||
        be->upload(be, a->xpos, a->h_xpos, (size_t)n_lab * sizeof(int32_t), err) < 0 ||
        be->upload(be, a->xtgt, a->h_xtgt, (size_t)n_lab * sizeof(int32_t), err) < 0)
        return -1;
    memcpy(a->h_lens, b->lens, (size_t)b->B * sizeof(int32_t));
    a->n_lab = n_lab;
    return 0;
}

int peso_llama_prepare(peso_llama *m, const peso_llama_batch *b, int keep, peso_err *err)
{
    if (b->B < 1 || b->T < 1 || (size_t)b->B * (size_t)b->T > (size_t)INT32_MAX / 2)
        return peso_errf(err, "batch shape [%d, %d], expected both >= 1", b->B, b->T);
    if (!m->acts) {
        m->acts = peso_calloc(1, sizeof *m->acts);
        m->acts->layer = peso_calloc((size_t)m->cfg.num_hidden_layers, sizeof *m->acts->layer);
    }
    peso_llama_acts *a = m->acts;
    int N = b->B * b->T;
    if (grow_staging(m, N, b->B, err) < 0 || stage_batch(m, b, err) < 0)
        return -1;
    int kept = keep ? peso_llama_past_kept(m) : 0;
    size_t need = layout(&m->cfg, &m->lora.conf, (size_t)N, keep, kept, NULL, NULL);
    if (grow_dev(m->be, (void **)&a->mem, &a->cap, need, sizeof(float), err) < 0)
        return -1;
    layout(&m->cfg, &m->lora.conf, (size_t)N, keep, kept, a->mem, a);
    a->B = b->B;
    a->T = b->T;
    a->keep = keep;
    /* the hook is off until the pass's entry point turns it on */
    a->hooked = 0;
    return 0;
}

int peso_llama_prepare_grads(peso_llama *m, peso_err *err)
{
    peso_llama_acts *a = m->acts;
    size_t N = (size_t)a->B * (size_t)a->T;
    size_t need = grad_layout(&m->cfg, &m->lora.conf, N, NULL, NULL);
    if (grow_dev(m->be, (void **)&a->gmem, &a->gcap, need, sizeof(float), err) < 0)
        return -1;
    grad_layout(&m->cfg, &m->lora.conf, N, a->gmem, &a->g);
    return 0;
}
