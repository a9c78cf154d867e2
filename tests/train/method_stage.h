/* A continual method at one stage as the trainer drives it (method/method.h),
 * for the method tests: a tiny untied Llama with new rows (and
 * magnitudes for a method that learns them) on the cpu backend, a config
 * for the method, a random v_{t-1}, an environment whose each_batch feeds
 * two small batches per stage and whose freeze records the ranges, and
 * the steps of a stage: load, begin, free. */
#ifndef PESO_TESTS_TRAIN_METHOD_STAGE_H
#define PESO_TESTS_TRAIN_METHOD_STAGE_H

#include "../model/llama_setup.h"
#include "method/method.h"

#define T_MAX_FR 64
#define T_MAX_CALLS 8
#define N_MAG 2 /* magnitudes of a 3-block run: one per later stage */
#define N_NEW 4

/* method.variant and method.group, every value the schema allows */
static const char *const variants[] = {"all", "latest", "all+inherit", "latest+inherit"};
static const char *const groups[] = {"module", "matrix", "rank"};

typedef struct mfx {
    setup s;
    peso_conf c;
    peso_method_env env;
    size_t fr_off[T_MAX_FR], fr_n[T_MAX_FR];
    int n_fr;
    int calls[T_MAX_CALLS]; /* stages each_batch was asked for */
    int n_calls;
    float *v1; /* v_{t-1} of the first stage set up */
} mfx;

/* Micro-batches of stage k: two, their tokens depending on k. */
static inline void stage_batch(const mfx *f, int k, int i, tbatch *b)
{
    static const int lens[2][3] = {{10, 7, 4}, {9, 9, 2}};
    tbatch_make(b, 3, 10, lens[i], f->s.m->cfg.vocab_size, N_NEW, 1000 + 10 * (uint64_t)k + (uint64_t)i);
}

static inline int each_batch(void *ctx, int k, int (*fn)(void *arg, const peso_llama_batch *b, peso_err *err),
                             void *arg, peso_err *err)
{
    mfx *f = ctx;
    cr_assert_lt(f->n_calls, T_MAX_CALLS);
    f->calls[f->n_calls++] = k;
    for (int i = 0; i < 2; i++) {
        tbatch b;
        stage_batch(f, k, i, &b);
        peso_llama_batch v = tbatch_view(&b);
        if (fn(arg, &v, err) < 0)
            return -1;
    }
    return 0;
}

static inline void freeze(void *ctx, size_t off, size_t n)
{
    mfx *f = ctx;
    cr_assert_lt(f->n_fr, T_MAX_FR);
    f->fr_off[f->n_fr] = off;
    f->fr_n[f->n_fr++] = n;
}

/* Uniform(-0.5, 0.5) over the whole flat, magnitudes 0.6, 0.9, ... */
static inline float *random_flat(const peso_llama *m, uint64_t seed)
{
    peso_rng r;
    peso_rng_seed(&r, seed, 41);
    float *v = malloc(m->flat.numel * sizeof *v);
    for (size_t i = 0; i < m->flat.numel; i++)
        v[i] = (float)(peso_rng_uniform(&r) - 0.5);
    for (int i = 0; i < m->n_magnitudes; i++)
        v[m->mag_off + (size_t)i] = 0.6f + 0.3f * (float)i;
    return v;
}

static inline float *copy_flat(const peso_llama *m, const float *v)
{
    float *c = malloc(m->flat.numel * sizeof *c);
    memcpy(c, v, m->flat.numel * sizeof *c);
    return c;
}

/* A tiny untied model with new rows (and magnitudes for a method that
 * learns them), a config for method meth, v1 = a random v_{t-1}. */
static inline void mfx_open(mfx *f, const peso_method *meth, const char *variant, const char *group,
                            double lambda, uint64_t seed)
{
    memset(f, 0, sizeof *f);
    peso_llama_config cfg;
    tiny_config(&cfg, 0);
    setup_prepare(&f->s, &cfg, N_NEW, PESO_LORA_ALL, seed);
    f->s.o.n_magnitudes = meth->flags & PESO_METHOD_MAGNITUDES ? N_MAG : 0;
    setup_load(&f->s);
    peso_conf_defaults(&f->c);
    snprintf(f->c.method.name, sizeof f->c.method.name, "%s", meth->name);
    snprintf(f->c.method.variant, sizeof f->c.method.variant, "%s", variant);
    snprintf(f->c.method.group, sizeof f->c.method.group, "%s", group);
    f->c.method.lambda = lambda;
    f->c.seed = seed;
    f->env = (peso_method_env){.ctx = f, .each_batch = each_batch, .freeze = freeze};
    f->v1 = random_flat(f->s.m, seed + 1);
}

static inline void mfx_close(mfx *f)
{
    peso_method_model_plain(f->s.m);
    free(f->v1);
    setup_close(&f->s);
}

static inline void stage_init(mfx *f, peso_method_stage *ms, const peso_method *meth, int t, int rank,
                              int size)
{
    *ms = (peso_method_stage){
        .meth = meth, .c = &f->c, .m = f->s.m, .t = t, .rank = rank, .size = size, .env = &f->env};
}

/* load(ck) (NULL: an empty checkpoint, as stage 1's file is to a method),
 * prev = a copy of v, begin(params = another copy), which is returned;
 * the params go on the model as the trainer puts them. */
static inline float *stage_begin(mfx *f, peso_method_stage *ms, const peso_ckpt *ck, const float *v)
{
    peso_err err;
    peso_ckpt empty;
    peso_ckpt_init(&empty);
    if (ms->meth->load)
        cr_assert_eq(ms->meth->load(ms, ck ? ck : &empty, &err), 0, "%s load: %s", ms->meth->name, err.msg);
    peso_ckpt_free(&empty);
    cr_assert_eq(peso_method_stage_set_prev(ms, v, &err), 0, "%s", err.msg);
    float *params = copy_flat(f->s.m, v);
    if (ms->meth->begin)
        cr_assert_eq(ms->meth->begin(ms, params, &err), 0, "%s %s begin: %s", ms->meth->name,
                     f->c.method.variant, err.msg);
    cr_assert_eq(peso_llama_set_params(f->s.m, params, &err), 0, "%s", err.msg);
    return params;
}

static inline void stage_end(mfx *f, peso_method_stage *ms)
{
    peso_method_stage_free(ms);
    peso_method_model_plain(f->s.m);
}

#endif
