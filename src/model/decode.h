/* Incremental decoding with a shared prefix KV cache, for evaluation.
 *
 * One user's prompt (length P) is run through the model once
 * (peso_decode_prefill), as the training forward runs it (the backend's
 * causal attention over the square block), and every layer's keys (after
 * RoPE) and values are kept in a prefix cache [layers][cap_prefix][kv],
 * kv = n_kv_head * head_dim. Then up to max_beams sequences that share
 * that prefix are extended one token per step (peso_decode_step), at
 * positions P, P + 1, ...: a step computes each beam's new keys and
 * values, appends them to the own cache [layers][max_steps][max_beams][kv]
 * (a step's block of beams is contiguous: one copy per layer), and
 * attends with the backend's decode_attention, one query per beam and
 * head against the prefix plus the beam's own keys. When beams continue
 * other parents than their own slot, one gather_rows for the keys and one
 * for the values, over all layers, move each beam's own rows into a
 * second pair of caches, which then become the live ones.
 *
 * Everything the model computes stays on the backend: caches,
 * activations, logits. The host sends token ids, positions and the
 * reordering index (a few hundred integers a step) and receives only the
 * log-softmax of the selected columns (peso_decode_select): a beam search
 * reads the code tokens' columns, not the whole vocabulary, so only
 * [n, n_cols] floats come back a step. The log-softmax is over the WHOLE
 * vocabulary; only the columns read are fewer.
 *
 * Buffers are sized at init for max_beams x max_steps, and a prefill
 * grows them only for a longer prompt than any before: a step allocates
 * nothing. The math is the training forward's (model/llama_fwd.c: the
 * same backend ops and LoRA projections, past adapters of the cumulative
 * family included). */
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
    /* the selected columns: lp rows are n_cols wide, lp[r, j] the
     * log-probability of token cols[j] */
    int n_cols;

    /* ---- device ---- */
    float *pk, *pv; /* [layers][cap_prefix][kv] */
    int cap_prefix;
    float *ok, *ov;   /* [layers][max_steps][max_beams][kv] */
    float *ok2, *ov2; /* the same shape: the reordering's destination */
    int32_t *reorder; /* [layers * max_steps * max_beams] rows of ok for ok2 */
    /* a run's activations, for cap_tok tokens */
    int cap_tok;
    float *x, *xn, *q, *k, *v, *att, *g, *u, *h, *lu, *lse;
    int32_t *ids, *pos, *len;
    /* the head: logits [max_beams, base_vocab] then [max_beams, n_new]
     * (peso_llama_head_parts), the rows whole [max_beams, vocab_size]
     * (gathered in chunks of chunk floats by the index chunks; rows is
     * logits itself without new rows), the log-softmax at the selected
     * columns [max_beams, cap_cols] */
    float *logits, *rows, *lp;
    int32_t *chunks;
    int chunk;
    int32_t *cols;
    int cap_cols;

    /* ---- host staging ---- */
    int32_t *h_pos;     /* [cap_tok] */
    int32_t *h_reorder; /* like reorder */
} peso_decode;

/* Prepares decoding on m for up to max_beams beams of up to max_steps own
 * tokens each (levels - 1 for a semantic-ID tuple after the prompt), with
 * every column of the vocabulary selected. */
int peso_decode_init(peso_decode *d, peso_llama *m, int max_beams, int max_steps, peso_err *err);
void peso_decode_free(peso_decode *d);

/* Selects the columns that prefill and step return: cols[0..n_cols)
 * (host token ids, each in [0, vocab_size), repeats allowed), uploaded
 * once and kept until the next call; cols NULL selects the whole
 * vocabulary in order (n_cols ignored). Allocates only when n_cols
 * exceeds every earlier selection. */
int peso_decode_select(peso_decode *d, const int32_t *cols, int n_cols, peso_err *err);

/* Runs ids[0..P) (host) at positions 0..P-1, fills the prefix cache and
 * writes the next token's log-softmax at the selected columns into lp
 * (host [d->n_cols]). Afterwards there is one live beam with no own
 * tokens. */
int peso_decode_prefill(peso_decode *d, const int32_t *ids, int P, float *lp, peso_err *err);

/* Beam b (< n <= max_beams) continues live beam parent[b] with token
 * tokens[b] (host arrays) at position P + s; lp (host [n, d->n_cols])
 * receives each beam's next-token log-softmax at the selected columns.
 * The n beams become the live ones, with s + 1 own tokens. */
int peso_decode_step(peso_decode *d, int n, const int32_t *parent, const int32_t *tokens, float *lp,
                     peso_err *err);

#endif
