/* Tiny random Llama folders for the model tests: config.json written by
 * peso_llama_config_write and weights by peso_st_write, under tensor names
 * spelled out here (as transformers names them), not taken from the
 * loader. Weights are multiples of 2^-7 below 2 in magnitude, exact in
 * F32, BF16 and F16, so folders in any dtype hold the same model. */
#ifndef PESO_TESTS_MODEL_TINY_LLAMA_H
#define PESO_TESTS_MODEL_TINY_LLAMA_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/rng.h"
#include "hf/config.h"
#include "hf/safetensors.h"

#define TINY_MAX_LAYERS 4
#define TINY_NPROJ 7

/* transformers' submodule names, in the order q k v o gate up down */
static const char *const tiny_proj[TINY_NPROJ] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

typedef struct tiny {
    peso_llama_config cfg;
    float *embed; /* [V, C] */
    float *head;  /* [V, C]; NULL when tied */
    float *norm;  /* [C] */
    float *attn_norm[TINY_MAX_LAYERS], *mlp_norm[TINY_MAX_LAYERS];
    float *w[TINY_MAX_LAYERS][TINY_NPROJ]; /* [out, in] */
} tiny;

/* hidden 32, 2 layers, 4 heads, 2 kv heads, head_dim 8, llama3 rope
 * scaling with constants that put the 4 frequencies in all three of its
 * bands (high kept, medium smoothed, low divided by the factor). */
static inline void tiny_config(peso_llama_config *c, int tied)
{
    peso_llama_config_defaults(c);
    c->vocab_size = 40;
    c->hidden_size = 32;
    c->intermediate_size = 48;
    c->num_hidden_layers = 2;
    c->num_attention_heads = 4;
    c->num_key_value_heads = 2;
    c->head_dim = 8;
    c->rms_norm_eps = 1e-5;
    c->rope_theta = 10000.0;
    c->rope_scaling.llama3 = 1;
    c->rope_scaling.factor = 4.0;
    c->rope_scaling.low_freq_factor = 1.0;
    c->rope_scaling.high_freq_factor = 8.0;
    c->rope_scaling.original_max_position_embeddings = 64;
    c->max_position_embeddings = 256;
    c->tie_word_embeddings = tied;
    c->bos_token_id = 1;
    c->eos_token_ids[0] = 2;
    c->n_eos = 1;
}

static inline void tiny_dims(const peso_llama_config *c, int p, int *in, int *out)
{
    int q = c->num_attention_heads * c->head_dim, kv = c->num_key_value_heads * c->head_dim;
    int C = c->hidden_size, F = c->intermediate_size;
    int ins[TINY_NPROJ] = {C, C, C, q, C, C, F}, outs[TINY_NPROJ] = {q, kv, kv, C, F, F, C};
    *in = ins[p];
    *out = outs[p];
}

/* U(-bound, bound) rounded to a multiple of 2^-7 */
static inline float *tiny_rand(peso_rng *r, size_t n, double center, double bound)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        double v = center + bound * (2.0 * peso_rng_uniform(r) - 1.0);
        x[i] = (float)(round(v * 128.0) / 128.0);
    }
    return x;
}

static inline void tiny_init(tiny *t, const peso_llama_config *c, uint64_t seed)
{
    peso_rng r;
    memset(t, 0, sizeof *t);
    t->cfg = *c;
    peso_rng_seed(&r, seed, 7);
    size_t V = (size_t)c->vocab_size, C = (size_t)c->hidden_size;
    t->embed = tiny_rand(&r, V * C, 0.0, 1.0);
    t->head = c->tie_word_embeddings ? NULL : tiny_rand(&r, V * C, 0.0, 0.5);
    t->norm = tiny_rand(&r, C, 1.0, 0.2);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        t->attn_norm[l] = tiny_rand(&r, C, 1.0, 0.2);
        t->mlp_norm[l] = tiny_rand(&r, C, 1.0, 0.2);
        for (int p = 0; p < TINY_NPROJ; p++) {
            int in, out;
            tiny_dims(c, p, &in, &out);
            t->w[l][p] = tiny_rand(&r, (size_t)in * out, 0.0, 1.5 / sqrt((double)in));
        }
    }
}

static inline void tiny_free(tiny *t)
{
    free(t->embed);
    free(t->head);
    free(t->norm);
    for (int l = 0; l < TINY_MAX_LAYERS; l++) {
        free(t->attn_norm[l]);
        free(t->mlp_norm[l]);
        for (int p = 0; p < TINY_NPROJ; p++)
            free(t->w[l][p]);
    }
}

/* The folder's tensors as writer entries; names live in names[][96].
 * Returns the count. */
static inline size_t tiny_tensors(const tiny *t, peso_st_wtensor *w, char (*names)[96], peso_st_wdtype dt)
{
    const peso_llama_config *c = &t->cfg;
    size_t n = 0;
#define TINY_ADD(nm, nd, d0, d1, ptr)                                                                        \
    do {                                                                                                     \
        snprintf(names[n], 96, "%s", nm);                                                                    \
        w[n] = (peso_st_wtensor){names[n], dt, nd, {d0, d1}, ptr};                                           \
        n++;                                                                                                 \
    } while (0)
    char nm[96];
    TINY_ADD("model.embed_tokens.weight", 2, c->vocab_size, c->hidden_size, t->embed);
    TINY_ADD("model.norm.weight", 1, c->hidden_size, 0, t->norm);
    if (t->head)
        TINY_ADD("lm_head.weight", 2, c->vocab_size, c->hidden_size, t->head);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l);
        TINY_ADD(nm, 1, c->hidden_size, 0, t->attn_norm[l]);
        snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
        TINY_ADD(nm, 1, c->hidden_size, 0, t->mlp_norm[l]);
        for (int p = 0; p < TINY_NPROJ; p++) {
            int in, out;
            tiny_dims(c, p, &in, &out);
            snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, tiny_proj[p]);
            TINY_ADD(nm, 2, out, in, t->w[l][p]);
        }
    }
#undef TINY_ADD
    return n;
}

#define TINY_MAX_TENSORS (3 + TINY_MAX_LAYERS * (2 + TINY_NPROJ))

static inline void tiny_write_config(const tiny *t, const char *dir)
{
    char path[512];
    peso_err err;
    snprintf(path, sizeof path, "%s/config.json", dir);
    cr_assert_eq(peso_llama_config_write(&t->cfg, path, &err), 0, "%s", err.msg);
}

/* config.json + model.safetensors; skip (may be NULL) names a tensor to
 * leave out. */
static inline void tiny_write_skip(const tiny *t, const char *dir, peso_st_wdtype dt, const char *skip)
{
    peso_st_wtensor w[TINY_MAX_TENSORS];
    char names[TINY_MAX_TENSORS][96], path[512];
    peso_err err;
    size_t n = tiny_tensors(t, w, names, dt), k = 0;
    for (size_t i = 0; i < n; i++)
        if (!skip || strcmp(w[i].name, skip) != 0)
            w[k++] = w[i];
    tiny_write_config(t, dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(peso_st_write(path, w, k, NULL, 0, &err), 0, "%s", err.msg);
}

static inline void tiny_write(const tiny *t, const char *dir, peso_st_wdtype dt)
{
    tiny_write_skip(t, dir, dt, NULL);
}

static inline char *tiny_tmpdir(void)
{
    char *d = strdup("/tmp/peso-llama-test-XXXXXX");
    cr_assert(mkdtemp(d), "mkdtemp");
    return d;
}

static inline void tiny_rmdir(char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    free(dir);
}

#endif
