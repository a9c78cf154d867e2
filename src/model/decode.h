/* Incremental decoding with a shared prefix KV cache, for evaluation.
 *
 * One user's prompt (length P) is run through the model once
 * (peso_decode_prefill) and every layer's keys (after RoPE) and values are
 * kept in a prefix cache [layers][P][n_kv_head][head_dim]. Then up to
 * max_beams sequences that share that prefix are extended one token per
 * step (peso_decode_step): each step computes, for each beam, the last
 * token's keys and values (kept in the beam's own suffix cache) and the
 * next-token log-softmax over the FULL vocabulary, attending to the
 * shared prefix plus the beam's own earlier tokens. Positions continue
 * from P. The math is the training forward's (model/llama_fwd.c: the
 * same backend ops and LoRA projections, the prefill's attention too);
 * only a step's attention is computed here, on the host, one query per
 * beam and head against P + s keys, because the backend's attention op
 * is for square causal blocks (a decode-attention op is the one a CUDA
 * backend would add).
 *
 * The caches live on the host: every layer's new k and v are downloaded
 * into them, and a step's q and attention output cross with download and
 * upload (a memcpy on the cpu backend). */
#ifndef PESO_MODEL_DECODE_H
#define PESO_MODEL_DECODE_H

#include <stdint.h>

#include "common/err.h"
#include "model/llama.h"

typedef struct peso_decode {
    peso_llama *m; /* not owned */
    int max_beams, max_steps;
    int P;       /* prefix length of the current prefill */
    int s;       /* own tokens of every live beam */
    int n_beams; /* live beams (1 after a prefill: the prompt itself) */
    int kv;      /* n_kv_head * head_dim */
    /* host caches */
    float *pk, *pv;   /* [layers][cap_prefix][kv] */
    float *sk, *sv;   /* [layers][max_beams][max_steps][kv] */
    float *sk2, *sv2; /* the same shape: gather scratch for reordering */
    int cap_prefix;
    float *sc; /* a step's attention scores [max_beams * n_head][cap_prefix + max_steps] */
    /* device scratch for cap_tok tokens */
    int cap_tok;
    float *x, *xn, *q, *k, *v, *att, *g, *u, *h, *lu, *lse;
    int32_t *ids, *pos, *len;
    int32_t *last; /* each sequence's last token row, for gather_rows */
    /* host mirrors */
    float *hq, *hk, *hv, *hatt;
    int32_t *h_pos, *h_last;
} peso_decode;

/* Prepares decoding on m for up to max_beams beams of up to max_steps own
 * tokens each (levels - 1 for a semantic-ID tuple after the prompt). */
int peso_decode_init(peso_decode *d, peso_llama *m, int max_beams, int max_steps, peso_err *err);
void peso_decode_free(peso_decode *d);

/* Runs ids[0..P) (host) at positions 0..P-1, fills the prefix cache and
 * writes the next token's log-softmax over the vocabulary into lp (host
 * [cfg.vocab_size]). Afterwards there is one live beam with no own
 * tokens. */
int peso_decode_prefill(peso_decode *d, const int32_t *ids, int P, float *lp, peso_err *err);

/* Beam b (< n <= max_beams) continues live beam parent[b] with token
 * tokens[b] (host arrays) at position P + s; lp (host [n, vocab_size])
 * receives each beam's next-token log-softmax. The n beams become the
 * live ones, with s + 1 own tokens. */
int peso_decode_step(peso_decode *d, int n, const int32_t *parent, const int32_t *tokens, float *lp,
                     peso_err *err);

#endif
