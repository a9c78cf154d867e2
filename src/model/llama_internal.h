/* Shared by the llama_*.c files only: the activation arena's layout and
 * the batch staged on the device. */
#ifndef PESO_MODEL_LLAMA_INTERNAL_H
#define PESO_MODEL_LLAMA_INTERNAL_H

#include "model/llama.h"

/* One decoder layer's activations for N = B*T tokens. In a forward-only
 * layout every layer shares one set, and x, xmid and xout are one
 * residual buffer updated in place. */
typedef struct peso_layer_acts {
    float *x;                   /* residual input [N, C] */
    float *xn1, *rstd1;         /* input_layernorm out [N, C], 1/rms [N] */
    float *q, *k, *v;           /* after RoPE: [N, Hq], [N, Hkv], [N, Hkv] */
    float *att, *lse;           /* attention out [N, Hq], log-sum-exp [B, nh, T] */
    float *xmid;                /* x + o_proj [N, C] */
    float *xn2, *rstd2;         /* post_attention_layernorm */
    float *g, *u, *h;           /* gate, up, silu(gate) * up [N, F] */
    float *lu[PESO_LORA_NPROJ]; /* x A^T [N, r] of each adapted projection */
    /* x Ahat_i^T [n_past][N, r] of each adapted projection, kept for the
     * learnable magnitudes' gradient; NULL when not kept */
    float *plu[PESO_LORA_NPROJ];
    float *xout; /* xmid + down_proj [N, C] = next layer's x */
} peso_layer_acts;

/* Activation gradients of one layer at a time (the backward walks the
 * layers in reverse and reuses them). */
typedef struct peso_grad_acts {
    float *dres; /* dL/d residual [N, C] */
    float *dxn;  /* dL/d normed input [N, C] */
    float *dq, *dk, *dv, *datt;
    float *dg, *du, *dh;
    float *dlu; /* dL/d (x A^T) [N, r] */
} peso_grad_acts;

struct peso_llama_acts {
    /* the batch of the last forward */
    int B, T, keep, n_lab;
    /* the pass the hook is told; hooked = 0: the hook is not called */
    peso_llama_pass pass;
    int hooked;
    /* arena and scratch, device */
    float *mem, *gmem;
    size_t cap, gcap;
    peso_layer_acts *layer; /* [n_layers] */
    float *xf, *rstdf;      /* final norm out [N, C], [N] */
    peso_grad_acts g;
    /* staged batch: device ints, host mirrors; capacity in tokens / rows */
    int cap_tok, cap_b;
    int32_t *ids, *pos, *lens, *xpos, *xtgt;
    float *losses;
    int32_t *h_ids, *h_pos, *h_xpos, *h_xtgt, *h_lens;
    float *h_losses;
};

void peso_llama_acts_free(peso_llama *m);
void peso_llama_scratch_free(peso_llama *m);
/* Device buffer *p of at least n elements of elt bytes: kept when *cap is
 * enough, else replaced (contents not kept). what names it in errors. */
int peso_llama_grow(peso_backend *be, void **p, size_t *cap, size_t n, size_t elt, const char *what,
                    peso_err *err);
/* Lays out the arena for batch b (growing it when needed), stages ids,
 * positions, lengths and label positions on the device. */
int peso_llama_prepare(peso_llama *m, const peso_llama_batch *b, int keep, peso_err *err);
/* The hook's site for projection p of layer l on the staged batch. */
peso_llama_site peso_llama_site_of(const peso_llama *m, int l, peso_lora_proj p, const float *x, const float *lu,
                                   float *y);
/* Forward up to the final norm on the staged batch. */
int peso_llama_run_layers(peso_llama *m, peso_err *err);
/* The head as a peso_table: frozen rows from wmem, new rows from params. */
peso_table peso_llama_head_table(const peso_llama *m);
peso_table peso_llama_embed_table(const peso_llama *m);
/* y (beta 0: =, beta 1: +=) x W^T + the past terms + scaling (x A^T) B^T
 * for projection p of layer l over N rows of x (device); lu [N, rank]
 * receives x A^T (the backward's input), unused when p has no adapter;
 * plu [n_past][N, rank] receives the x Ahat_i^T, or NULL for the model's
 * scratch (nothing kept). */
int peso_llama_proj(peso_llama *m, int l, peso_lora_proj p, int N, float *y, const float *x, float *lu,
                    float *plu, float beta, peso_err *err);

/* ---- past adapters (llama_past.c) ---- */
/* At the start of a pass over N rows: the scratch grown to N rows. */
int peso_llama_past_begin(peso_llama *m, int N, peso_err *err);
/* y += sum_i alpha_i (x Ahat_i^T) Bhat_i^T for module mi; plu as in
 * peso_llama_proj. */
int peso_llama_past_forward(peso_llama *m, int mi, int N, float *y, const float *x, float *plu,
                            peso_err *err);
/* dx += sum_i alpha_i (dy Bhat_i) Ahat_i and, for learnable magnitudes,
 * grads[mag_off + i] += <dy Bhat_i, plu_i>; t [N, rank] is scratch. */
int peso_llama_past_backward(peso_llama *m, int mi, int N, float *dx, const float *dy, const float *plu,
                             float *t, peso_err *err);
/* Past adapters whose x Ahat_i^T a backward pass keeps per module. */
int peso_llama_past_kept(const peso_llama *m);
void peso_llama_past_free(peso_llama *m);

/* The head's two products for n_pos hidden states hs (device, [n_pos,
 * hidden], after the final norm): base [n_pos, base_vocab] from the
 * frozen rows and, when there are new rows, fresh [n_pos, n_new] from
 * the trained ones (device; a row's logits are its base row followed by
 * its fresh row). */
int peso_llama_head_parts(peso_llama *m, const float *hs, int n_pos, float *base, float *fresh,
                          peso_err *err);
/* Logits over the whole vocabulary for n_pos hidden states hs (device,
 * [n_pos, hidden], after the final norm) into out (host [n_pos, V]). */
int peso_llama_head_logits(peso_llama *m, const float *hs, int n_pos, float *out, peso_err *err);
/* Lays out (growing when needed) the backward scratch of the staged batch. */
int peso_llama_prepare_grads(peso_llama *m, peso_err *err);
/* Backward from dL/d(final norm out) in g.dxn down to the embeddings. */
int peso_llama_backward_layers(peso_llama *m, peso_err *err);

#endif
