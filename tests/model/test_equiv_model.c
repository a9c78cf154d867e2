/* The whole model on the candidate backend (cuda) against the cpu backend,
 * in f32 mode: the same folder (peso-model init's tiny and small presets),
 * the same LoRA and new-row parameters (B random, so that A has a
 * gradient), the same right-padded batch; then the loss of the forward,
 * the loss and EVERY trainable gradient of forward_backward (all LoRA A
 * and B, the new embedding and head rows, the learnable magnitudes), the
 * logits at selected positions and the hidden means, on both sides. Cases:
 * plain LoRA; past adapters of the cumulative family with fixed
 * magnitudes (SumLoRA) and learnable ones (SD-LoRA); the output-KL term
 * (method/output_kl.h, whose value is compared too); InfLoRA (the modules'
 * input covariances of an observing pass compared, A designed from the
 * reference's covariance, frozen, and B trained).
 *
 * Criterion (tests/backend/equiv.h): the losses and the output-KL value
 * are relative, EQ_TOL = 1e-5 (sums over many tokens: their rounding
 * differences average out). Everything at the end of a chain through the
 * layers is compared at EQ_MODEL_TOL = 2e-4: the gradients (mixed, rms
 * over each view), the logits and hidden means (mixed) and the input
 * covariances (each element against sqrt(C_ii C_jj), which bounds
 * sum_t |x_ti x_tj|, the product scale). Such a value passes through
 * 2 x layers x ~10 operations, each rounding differently on the two
 * backends, and the backward amplifies those differences by the
 * conditioning of the layers it crosses. The harness's self-check
 * (PESO_EQUIV_CANDIDATE=emu: every operation one ulp off, products
 * summed in another order) measures up to 2e-5 on the small preset's
 * gradients and 6e-6 on its logits and covariances; EQ_MODEL_TOL is 10x
 * the former, still 2.5x below TF32's unit roundoff (2^-11) and far below
 * what bf16 products or a wrong term give.
 * One EQUIV line per kind of gradient gives the worst view's error and
 * names it. A kind whose reference gradient is all zero where it should
 * not be fails, so that a case cannot pass by testing nothing; frozen A
 * gradients must be exactly zero on both. */
#include "../backend/equiv.h"

#include <unistd.h>

#include "method/inflora_cov.h"
#include "method/inflora_subspace.h"
#include "method/output_kl.h"
#include "model/init.h"
#include "model/llama.h"

#define EQ_MODEL_TOL 2e-4
#define N_NEW 8
#define N_PAST 2

typedef struct pair {
    eq e;
    const char *preset;
    char dir[64];
    peso_llama_opts o;
    peso_llama *m[2]; /* reference, candidate */
    size_t numel;
    float *params; /* host [numel], set on both */
} pair;

typedef struct mbatch {
    int B, T;
    int32_t ids[4 * 64], lens[4], labels[4 * 64];
} mbatch;

/* Opens the pair, writes the preset's folder and loads it on both sides
 * with LoRA rank 8 on all seven projections, N_NEW new tokens and
 * n_magnitudes, then gives both the same parameters: the reference's
 * initial ones with every B drawn from N(0, 0.02^2). */
static void pair_open(pair *p, const char *preset, int n_magnitudes, uint64_t seed)
{
    peso_err err = {{0}};
    memset(p, 0, sizeof *p);
    eq_open(&p->e, 1, seed);
    p->preset = preset;
    snprintf(p->dir, sizeof p->dir, "/tmp/peso-equiv-model-XXXXXX");
    cr_assert(mkdtemp(p->dir), "mkdtemp %s", p->dir);
    peso_init_opts io = {.preset = preset, .seed = seed};
    cr_assert_eq(peso_init_write(p->dir, &io, NULL, &err), 0, "%s", err.msg);
    peso_llama_opts_defaults(&p->o);
    p->o.lora.rank = 8;
    p->o.lora.alpha = 16.0;
    p->o.lora.targets = PESO_LORA_ALL;
    p->o.n_new = N_NEW;
    p->o.n_magnitudes = n_magnitudes;
    p->o.seed = seed;
    for (int side = 0; side < 2; side++)
        cr_assert_eq(peso_llama_load(&p->m[side], p->dir, eq_be(&p->e, side), &p->o, &err), 0, "%s: %s",
                     eq_be(&p->e, side)->name, err.msg);
    p->numel = p->m[0]->flat.numel;
    cr_assert_eq(p->m[1]->flat.numel, p->numel, "flat layouts differ");
    p->params = malloc(p->numel * sizeof *p->params);
    cr_assert_eq(peso_llama_get_params(p->m[0], p->params, &err), 0, "%s", err.msg);
    const peso_lora *l = &p->m[0]->lora;
    for (int i = 0; i < l->n_modules; i++)
        for (size_t j = 0; j < (size_t)l->mods[i].out * l->conf.rank; j++)
            p->params[l->mods[i].b_off + j] = (float)(0.02 * peso_rng_normal(&p->e.rng));
    for (int side = 0; side < 2; side++)
        cr_assert_eq(peso_llama_set_params(p->m[side], p->params, &err), 0, "%s", err.msg);
}

static void pair_close(pair *p)
{
    char cmd[128];
    for (int side = 0; side < 2; side++)
        peso_llama_free(p->m[side]);
    free(p->params);
    eq_close(&p->e);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p->dir);
    cr_assert_eq(system(cmd), 0);
}

/* Three rows of T = 47 (lengths 47, 30, 9): random ids, every third one a
 * new token, labels on two positions of three. */
static void batch_make(mbatch *b, const pair *p)
{
    peso_rng r;
    peso_rng_seed(&r, 77, 5);
    int V = p->m[0]->cfg.vocab_size;
    static const int32_t lens[3] = {47, 30, 9};
    b->B = 3;
    b->T = 47;
    for (int i = 0; i < b->B; i++) {
        b->lens[i] = lens[i];
        for (int t = 0; t < b->T; t++) {
            int k = i * b->T + t;
            b->ids[k] = (int32_t)peso_rng_below(&r, (uint64_t)V);
            if (t % 3 == 1)
                b->ids[k] = V - N_NEW + (int32_t)peso_rng_below(&r, N_NEW);
            b->labels[k] = t < lens[i] && k % 3 != 2 ? b->ids[k] : PESO_LABEL_IGNORE;
        }
    }
}

static peso_llama_batch batch_view(const mbatch *b)
{
    peso_llama_batch v = {b->B, b->T, b->ids, b->lens, b->labels};
    return v;
}

static void case_name(char *cs, size_t n, const pair *p, const char *what)
{
    snprintf(cs, n, "%s %s", p->preset, what);
}

/* The forward's loss on both sides. */
static void check_forward(pair *p, const mbatch *b, const char *cs)
{
    peso_err err = {{0}};
    peso_llama_batch v = batch_view(b);
    peso_llama_loss loss[2];
    for (int side = 0; side < 2; side++)
        cr_assert_eq(peso_llama_forward(p->m[side], &v, &loss[side], &err), 0, "%s: %s",
                     eq_be(&p->e, side)->name, err.msg);
    cr_assert_eq(loss[1].count, loss[0].count, "label counts differ");
    eq_check_value(&p->e, "model", cs, "forward loss", loss[1].mean, loss[0].mean, EQ_TOL);
}

/* Which gradients a view holds. */
enum { K_A, K_B, K_EMBED, K_HEAD, K_MAG, K_N };
static const char *const kind_names[K_N] = {"lora_A", "lora_B", "new embedding rows", "new head rows",
                                            "magnitudes"};

static int view_kind(const char *name)
{
    if (strstr(name, "lora_A"))
        return K_A;
    if (strstr(name, "lora_B"))
        return K_B;
    if (strcmp(name, PESO_LLAMA_EMBED_NEW) == 0)
        return K_EMBED;
    if (strcmp(name, PESO_LLAMA_HEAD_NEW) == 0)
        return K_HEAD;
    if (strcmp(name, PESO_LLAMA_MAGNITUDES) == 0)
        return K_MAG;
    return -1;
}

/* Zeroes the gradients, runs forward_backward with grad_scale 1/labels on
 * both sides, compares the losses and every view of the gradients by
 * kind. zero_a: the A gradients must be zero (frozen A). */
static void check_backward(pair *p, const mbatch *b, const char *cs, int zero_a)
{
    peso_err err = {{0}};
    peso_llama_batch v = batch_view(b);
    peso_llama_loss loss[2];
    float *g[2];
    long count = peso_llama_count_labels(&v);
    for (int side = 0; side < 2; side++) {
        peso_llama *m = p->m[side];
        cr_assert_eq(peso_llama_zero_grads(m, &err), 0, "%s", err.msg);
        cr_assert_eq(peso_llama_forward_backward(m, &v, 1.0f / (float)count, &loss[side], &err), 0, "%s: %s",
                     eq_be(&p->e, side)->name, err.msg);
        g[side] = malloc(p->numel * sizeof(float));
        cr_assert_eq(peso_llama_get_grads(m, g[side], &err), 0, "%s", err.msg);
    }
    eq_check_value(&p->e, "model", cs, "forward_backward loss", loss[1].mean, loss[0].mean, EQ_TOL);
    double worst[K_N] = {0}, ss[K_N] = {0};
    int n[K_N] = {0};
    const char *where[K_N] = {0};
    const peso_flat *f = &p->m[0]->flat;
    for (size_t i = 0; i < f->n_views; i++) {
        const peso_view *w = &f->views[i];
        int k = view_kind(w->name);
        cr_assert_geq(k, 0, "unexpected trainable view %s", w->name);
        double err_v = eq_err(g[1] + w->offset, g[0] + w->offset, w->numel, NULL);
        for (size_t j = 0; j < w->numel; j++)
            ss[k] += (double)g[0][w->offset + j] * g[0][w->offset + j];
        if (n[k]++ == 0 || err_v > worst[k] || isnan(err_v)) {
            worst[k] = isnan(err_v) ? INFINITY : err_v;
            where[k] = w->name;
        }
    }
    for (int k = 0; k < K_N; k++) {
        if (!n[k])
            continue;
        const char *short_name =
            strncmp(where[k], "base_model.model.model.", 23) == 0 ? where[k] + 23 : where[k];
        char what[200];
        snprintf(what, sizeof what, "grad %s (%d views, worst %s)", kind_names[k], n[k], short_name);
        if (k == K_A && zero_a)
            cr_expect_eq(ss[k], 0.0, "%s: frozen A has a reference gradient", cs);
        else
            cr_expect_gt(ss[k], 0.0, "%s: the reference gradient of %s is all zero: the case tests nothing",
                         cs, kind_names[k]);
        eq_report(&p->e, "model", cs, what, worst[k], EQ_MODEL_TOL);
    }
    free(g[0]);
    free(g[1]);
}

/* Logits at every real position of row 1 and the hidden means. */
static void check_logits(pair *p, const mbatch *b, const char *cs)
{
    peso_err err = {{0}};
    peso_llama_batch v = batch_view(b);
    int V = p->m[0]->cfg.vocab_size, C = p->m[0]->cfg.hidden_size, n_pos = b->lens[1];
    int32_t pos[64];
    for (int t = 0; t < n_pos; t++)
        pos[t] = b->T + t;
    float *lg[2], *hm[2];
    for (int side = 0; side < 2; side++) {
        lg[side] = malloc((size_t)n_pos * V * sizeof(float));
        hm[side] = malloc((size_t)b->B * C * sizeof(float));
        cr_assert_eq(peso_llama_logits(p->m[side], &v, pos, n_pos, lg[side], &err), 0, "%s", err.msg);
        cr_assert_eq(peso_llama_hidden_mean(p->m[side], &v, hm[side], &err), 0, "%s", err.msg);
    }
    eq_check(&p->e, "model", cs, "logits", lg[1], lg[0], (size_t)n_pos * V, NULL, EQ_MODEL_TOL);
    eq_check(&p->e, "model", cs, "hidden mean", hm[1], hm[0], (size_t)b->B * C, NULL, EQ_MODEL_TOL);
    for (int side = 0; side < 2; side++) {
        free(lg[side]);
        free(hm[side]);
    }
}

static void run_plain(const char *preset, uint64_t seed)
{
    pair p;
    mbatch b;
    char cs[80];
    pair_open(&p, preset, 0, seed);
    batch_make(&b, &p);
    case_name(cs, sizeof cs, &p, "plain LoRA");
    check_forward(&p, &b, cs);
    check_backward(&p, &b, cs, 0);
    check_logits(&p, &b, cs);
    pair_close(&p);
}

/* N_PAST past adapters: uniform(-0.5, 0.5) A and B (host buffers with the
 * flat's layout). */
static float **make_past(pair *p)
{
    float **past = malloc(N_PAST * sizeof *past);
    const peso_lora *l = &p->m[0]->lora;
    for (int j = 0; j < N_PAST; j++) {
        past[j] = calloc(p->numel, sizeof(float));
        for (int i = 0; i < l->n_modules; i++) {
            size_t na = (size_t)l->conf.rank * l->mods[i].in, nb = (size_t)l->mods[i].out * l->conf.rank;
            for (size_t t = 0; t < na; t++)
                past[j][l->mods[i].a_off + t] = (float)(peso_rng_uniform(&p->e.rng) - 0.5);
            for (size_t t = 0; t < nb; t++)
                past[j][l->mods[i].b_off + t] = (float)(peso_rng_uniform(&p->e.rng) - 0.5);
        }
    }
    return past;
}

static void run_past(const char *preset, int learnable, uint64_t seed)
{
    pair p;
    mbatch b;
    char cs[80];
    peso_err err = {{0}};
    pair_open(&p, preset, learnable ? N_PAST : 0, seed);
    batch_make(&b, &p);
    float **past = make_past(&p);
    const float alpha[N_PAST] = {1.0f, 0.75f};
    if (learnable) {
        /* magnitudes away from their initial 1.0 */
        for (int j = 0; j < N_PAST; j++)
            p.params[p.m[0]->mag_off + j] = 0.5f + 0.25f * (float)j;
        for (int side = 0; side < 2; side++)
            cr_assert_eq(peso_llama_set_params(p.m[side], p.params, &err), 0, "%s", err.msg);
    }
    for (int side = 0; side < 2; side++)
        cr_assert_eq(peso_llama_set_past(p.m[side], N_PAST, (const float *const *)past,
                                         learnable ? NULL : alpha, &err),
                     0, "%s", err.msg);
    case_name(cs, sizeof cs, &p,
              learnable ? "past adapters, learnable magnitudes (SD-LoRA)"
                        : "past adapters, fixed magnitudes (SumLoRA)");
    check_forward(&p, &b, cs);
    check_backward(&p, &b, cs, 0);
    check_logits(&p, &b, cs);
    for (int j = 0; j < N_PAST; j++)
        free(past[j]);
    free(past);
    pair_close(&p);
}

static void run_output_kl(const char *preset, uint64_t seed)
{
    pair p;
    mbatch b;
    char cs[80];
    peso_err err = {{0}};
    pair_open(&p, preset, 0, seed);
    batch_make(&b, &p);
    /* the previous adapter: every entry moved by up to 30% */
    float *prev = malloc(p.numel * sizeof *prev);
    for (size_t i = 0; i < p.numel; i++)
        prev[i] = p.params[i] * (float)(1.0 + 0.6 * (peso_rng_uniform(&p.e.rng) - 0.5));
    peso_okl okl[2];
    for (int side = 0; side < 2; side++) {
        cr_assert_eq(peso_okl_init(&okl[side], p.m[side], prev, &err), 0, "%s", err.msg);
        okl[side].scale = 0.5;
    }
    case_name(cs, sizeof cs, &p, "output-KL");
    check_forward(&p, &b, cs);
    double fwd[2] = {peso_okl_take(&okl[0]), peso_okl_take(&okl[1])};
    cr_expect_gt(fwd[0], 0.0, "the reference's output-KL term is 0: the case tests nothing");
    eq_check_value(&p.e, "model", cs, "output-KL value (forward)", fwd[1], fwd[0], EQ_TOL);
    check_backward(&p, &b, cs, 0);
    double fb[2] = {peso_okl_take(&okl[0]), peso_okl_take(&okl[1])};
    eq_check_value(&p.e, "model", cs, "output-KL value (forward_backward)", fb[1], fb[0], EQ_TOL);
    for (int side = 0; side < 2; side++)
        peso_okl_free(&okl[side]);
    free(prev);
    pair_close(&p);
}

static void run_inflora(const char *preset, uint64_t seed)
{
    pair p;
    mbatch b;
    char cs[80];
    peso_err err = {{0}};
    pair_open(&p, preset, 0, seed);
    batch_make(&b, &p);
    case_name(cs, sizeof cs, &p, "InfLoRA (frozen designed A)");
    peso_llama_batch v = batch_view(&b);
    size_t nc = peso_inflora_cov_numel(p.m[0]);
    double *cov[2];
    long n_tok[2] = {0, 0};
    for (int side = 0; side < 2; side++) {
        cov[side] = calloc(nc, sizeof(double));
        peso_inflora_cov w = {0};
        cr_assert_eq(peso_inflora_cov_add(&w, p.m[side], &v, cov[side], &n_tok[side], &err), 0, "%s", err.msg);
        peso_inflora_cov_free(&w, p.m[side]);
    }
    cr_assert_eq(n_tok[1], n_tok[0], "token counts differ");
    /* covariances, each element against sqrt(C_ii C_jj); A designed from
     * the reference's block, the same on both sides */
    const peso_lora *l = &p.m[0]->lora;
    double worst = 0.0;
    size_t at = 0;
    for (int i = 0; i < l->n_modules; i++) {
        int in = l->mods[i].in;
        const double *r = cov[0] + at, *c = cov[1] + at;
        for (int x = 0; x < in; x++)
            for (int y = 0; y < in; y++) {
                double d = fabs(c[(size_t)x * in + y] - r[(size_t)x * in + y]);
                double s = sqrt(r[(size_t)x * in + x] * r[(size_t)y * in + y]);
                double q = !isfinite(c[(size_t)x * in + y]) ? INFINITY
                           : d == 0.0                       ? 0.0
                           : s > 0.0                        ? d / s
                                                            : INFINITY;
                worst = q > worst ? q : worst;
            }
        cr_assert_eq(peso_inflora_design(r, in, NULL, 0, l->conf.rank, p.params + l->mods[i].a_off, &err), 0,
                     "%s", err.msg);
        at += (size_t)in * in;
    }
    eq_report(&p.e, "model", cs, "input covariances", worst, EQ_MODEL_TOL);
    for (int side = 0; side < 2; side++) {
        cr_assert_eq(peso_llama_set_params(p.m[side], p.params, &err), 0, "%s", err.msg);
        peso_llama_set_freeze_a(p.m[side], 1);
    }
    check_forward(&p, &b, cs);
    check_backward(&p, &b, cs, 1);
    free(cov[0]);
    free(cov[1]);
    pair_close(&p);
}

Test(equiv_model, tiny_plain)
{
    run_plain("tiny", 301);
}
Test(equiv_model, tiny_sumlora)
{
    run_past("tiny", 0, 302);
}
Test(equiv_model, tiny_sdlora)
{
    run_past("tiny", 1, 303);
}
Test(equiv_model, tiny_output_kl)
{
    run_output_kl("tiny", 304);
}
Test(equiv_model, tiny_inflora)
{
    run_inflora("tiny", 305);
}
Test(equiv_model, small_plain)
{
    run_plain("small", 311);
}
Test(equiv_model, small_sumlora)
{
    run_past("small", 0, 312);
}
Test(equiv_model, small_sdlora)
{
    run_past("small", 1, 313);
}
Test(equiv_model, small_output_kl)
{
    run_output_kl("small", 314);
}
Test(equiv_model, small_inflora)
{
    run_inflora("small", 315);
}
