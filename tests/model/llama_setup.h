/* A tiny model folder loaded on the cpu backend with a host copy of its
 * trainable flat, and right-padded batches for it, shared by the model
 * tests. */
#ifndef PESO_TESTS_MODEL_LLAMA_SETUP_H
#define PESO_TESTS_MODEL_LLAMA_SETUP_H

#include "model/llama.h"
#include "ref_llama.h"

typedef struct setup {
    tiny t;
    char *dir;
    peso_backend *be;
    peso_llama *m;
    peso_llama_opts o;
    float *params; /* host copy of m->params */
    ref_model ref;
} setup;

static inline void setup_load(setup *s)
{
    peso_err err;
    cr_assert_eq(peso_llama_load(&s->m, s->dir, s->be, &s->o, &err), 0, "%s", err.msg);
    s->params = malloc((s->m->flat.numel + 1) * sizeof(float));
    cr_assert_eq(peso_llama_get_params(s->m, s->params, &err), 0, "%s", err.msg);
    ref_bind(&s->ref, &s->t, &s->m->flat, s->params, s->o.lora.rank, s->o.lora.alpha, s->o.lora.targets,
             s->o.n_new);
}

/* The folder, backend and options (rank 4, alpha 8: scaling 2) of
 * setup_open_cfg without the load, for a test that sets more options in
 * s->o before setup_load. */
static inline void setup_prepare(setup *s, const peso_llama_config *c, int n_new, unsigned targets,
                                 uint64_t seed)
{
    peso_err err;
    memset(s, 0, sizeof *s);
    tiny_init(&s->t, c, seed);
    s->dir = tiny_tmpdir();
    tiny_write(&s->t, s->dir, PESO_ST_WRITE_F32);
    s->be = peso_backend_create("cpu", &err);
    cr_assert(s->be, "%s", err.msg);
    peso_llama_opts_defaults(&s->o);
    s->o.lora.rank = 4;
    s->o.lora.alpha = 8.0;
    s->o.lora.targets = targets;
    s->o.n_new = n_new;
    s->o.seed = seed;
}

static inline void setup_open_cfg(setup *s, const peso_llama_config *c, int n_new, unsigned targets,
                                  uint64_t seed)
{
    setup_prepare(s, c, n_new, targets, seed);
    setup_load(s);
}

static inline void setup_open(setup *s, int tied, int n_new, unsigned targets, uint64_t seed)
{
    peso_llama_config c;
    tiny_config(&c, tied);
    setup_open_cfg(s, &c, n_new, targets, seed);
}

/* B matrices from U(-0.3, 0.3) instead of PEFT's zeros, so that A gets
 * a gradient too. */
static inline void setup_randomize_b(setup *s, uint64_t seed)
{
    peso_rng r;
    peso_err err;
    peso_rng_seed(&r, seed, 99);
    for (size_t i = 0; i < s->m->flat.n_views; i++) {
        const peso_view *v = &s->m->flat.views[i];
        if (strstr(v->name, "lora_B"))
            for (size_t j = 0; j < v->numel; j++)
                s->params[v->offset + j] = (float)(0.6 * peso_rng_uniform(&r) - 0.3);
    }
    cr_assert_eq(peso_llama_set_params(s->m, s->params, &err), 0, "%s", err.msg);
}

static inline void setup_close(setup *s)
{
    peso_llama_free(s->m);
    peso_backend_destroy(s->be);
    tiny_rmdir(s->dir);
    tiny_free(&s->t);
    free(s->params);
}

/* A right-padded [B, T] batch: random ids (new tokens included when the
 * vocabulary has them), labels = ids with every third label -100 and
 * -100 on padding; padding ids are random too. */
typedef struct tbatch {
    int B, T;
    int32_t ids[8 * 32], lens[8], labels[8 * 32];
} tbatch;

static inline void tbatch_make(tbatch *b, int B, int T, const int *lens, int V, int n_new, uint64_t seed)
{
    peso_rng r;
    peso_rng_seed(&r, seed, 5);
    b->B = B;
    b->T = T;
    for (int i = 0; i < B; i++) {
        b->lens[i] = lens[i];
        for (int t = 0; t < T; t++) {
            int k = i * T + t;
            b->ids[k] = (int32_t)peso_rng_below(&r, (uint64_t)V);
            /* make sure new tokens appear as inputs and as targets */
            if (n_new && t % 3 == 1)
                b->ids[k] = V - n_new + (int32_t)peso_rng_below(&r, (uint64_t)n_new);
            b->labels[k] = t < lens[i] && (k % 3) != 2 ? b->ids[k] : -100;
        }
    }
}

static inline peso_llama_batch tbatch_view(const tbatch *b)
{
    peso_llama_batch v = {b->B, b->T, b->ids, b->lens, b->labels};
    return v;
}

static inline double ref_mean(const setup *s, const tbatch *b)
{
    long n;
    double sum = ref_loss_sum(&s->ref, b->ids, b->lens, b->labels, b->B, b->T, &n);
    return sum / n;
}

#endif
