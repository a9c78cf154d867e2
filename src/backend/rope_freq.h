/* Host-side rotary inverse frequencies, as transformers computes them
 * (modeling_rope_utils: the "default" and "llama3" rope types), step by
 * step in float32 like the PyTorch code, so that angles match HF's. The
 * result [head_dim / 2] is uploaded once and passed to be->rope. */
#ifndef PESO_BACKEND_ROPE_FREQ_H
#define PESO_BACKEND_ROPE_FREQ_H

#include "common/err.h"

typedef enum peso_rope_type {
    PESO_ROPE_DEFAULT = 0, /* inv_freq[i] = theta^(-2i / head_dim) */
    PESO_ROPE_LLAMA3 = 1,  /* Llama 3.1+ long-context scaling */
} peso_rope_type;

/* config.json's rope_theta, head_dim and rope_scaling (hf/config.h
 * parses them; rope_scaling.llama3 selects PESO_ROPE_LLAMA3). */
typedef struct peso_rope_conf {
    peso_rope_type type;
    double theta;
    int head_dim;
    double factor;          /* llama3 only */
    double low_freq_factor; /* llama3 only */
    double high_freq_factor;
    int original_max_pos;   /* original_max_position_embeddings */
} peso_rope_conf;

/* Fills inv_freq[0 .. head_dim/2). */
int peso_rope_inv_freq(const peso_rope_conf *rc, float *inv_freq, peso_err *err);

#endif
