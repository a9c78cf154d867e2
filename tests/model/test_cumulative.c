/* The cumulative family's model: frozen past adapters added as
 * sum_i alpha_i Bhat_i Ahat_i to every adapted projection.
 *
 * The independent side is the double-precision reference (ref_llama.h)
 * run on one concatenated adapter per module: with scaling 1,
 *   A_cat = [A; Ahat_1; Ahat_2],  B_cat = [scaling B, alpha_1 Bhat_1, alpha_2 Bhat_2],
 * (x A_cat^T) B_cat^T = scaling (x A^T) B^T + sum_i alpha_i (x Ahat_i^T) Bhat_i^T,
 * the hats normalised here in double from the raw past buffers. Against
 * it: logits and hidden means, the gradient of every trainable kind
 * (current A and B, learnable magnitudes) by central differences, and
 * the decode path against full forwards. */
#include <criterion/criterion.h>

#include "llama_setup.h"
#include "model/decode.h"

#define N_PAST 2

typedef struct cat {
    ref_model ref;
    float *A[TINY_MAX_LAYERS][TINY_NPROJ]; /* [R, in] */
    float *B[TINY_MAX_LAYERS][TINY_NPROJ]; /* [out, R] */
} cat;

static double frob(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return sqrt(s);
}

/* Fills c from the current adapter in s->params and the past buffers
 * (same layout), magnitudes alpha. */
static void cat_fill(cat *c, const setup *s, float *const *past, const float *alpha)
{
    const peso_llama_config *cf = &s->t.cfg;
    int r = s->o.lora.rank, R = r * (1 + N_PAST);
    c->ref = s->ref;
    c->ref.rank = R;
    c->ref.scaling = 1.0;
    for (int l = 0; l < cf->num_hidden_layers; l++)
        for (int p = 0; p < TINY_NPROJ; p++) {
            if (!s->ref.A[l][p])
                continue;
            int in, out;
            tiny_dims(cf, p, &in, &out);
            if (!c->A[l][p]) {
                c->A[l][p] = calloc((size_t)R * in, sizeof(float));
                c->B[l][p] = calloc((size_t)out * R, sizeof(float));
            }
            size_t ao = (size_t)(s->ref.A[l][p] - s->params), bo = (size_t)(s->ref.B[l][p] - s->params);
            for (int k = 0; k < r; k++)
                for (int i = 0; i < in; i++)
                    c->A[l][p][k * in + i] = s->ref.A[l][p][k * in + i];
            for (int o = 0; o < out; o++)
                for (int k = 0; k < r; k++)
                    c->B[l][p][o * R + k] = (float)(s->ref.scaling * s->ref.B[l][p][o * r + k]);
            for (int j = 0; j < N_PAST; j++) {
                const float *pa = past[j] + ao, *pb = past[j] + bo;
                double na = frob(pa, (size_t)r * in), nb = frob(pb, (size_t)out * r);
                int live = na > 0.0 && nb > 0.0;
                for (int k = 0; k < r; k++)
                    for (int i = 0; i < in; i++)
                        c->A[l][p][(r * (1 + j) + k) * in + i] = live ? (float)(pa[k * in + i] / na) : 0.0f;
                for (int o = 0; o < out; o++)
                    for (int k = 0; k < r; k++)
                        c->B[l][p][o * R + r * (1 + j) + k] =
                            live ? (float)((double)alpha[j] * pb[o * r + k] / nb) : 0.0f;
            }
            c->ref.A[l][p] = c->A[l][p];
            c->ref.B[l][p] = c->B[l][p];
        }
}

static void cat_free(cat *c)
{
    for (int l = 0; l < TINY_MAX_LAYERS; l++)
        for (int p = 0; p < TINY_NPROJ; p++) {
            free(c->A[l][p]);
            free(c->B[l][p]);
        }
}

/* Past adapters with random A and B; past 1 has one module with B = 0
 * and one with A = 0 (those contribute nothing). */
static void make_past(const setup *s, float **past, uint64_t seed)
{
    peso_rng r;
    peso_rng_seed(&r, seed, 17);
    size_t n = s->m->flat.numel;
    for (int j = 0; j < N_PAST; j++) {
        past[j] = calloc(n, sizeof(float));
        for (size_t vi = 0; vi < s->m->flat.n_views; vi++) {
            const peso_view *v = &s->m->flat.views[vi];
            if (!strstr(v->name, "lora_"))
                continue;
            int zero = j == 1 && ((strstr(v->name, "layers.0.self_attn.k_proj.lora_B")) ||
                                  strstr(v->name, "layers.1.mlp.up_proj.lora_A"));
            for (size_t i = 0; i < v->numel; i++)
                past[j][v->offset + i] = zero ? 0.0f : (float)(peso_rng_uniform(&r) - 0.5);
        }
    }
}

static void free_past(float **past)
{
    for (int j = 0; j < N_PAST; j++)
        free(past[j]);
}

static void expect_logits(setup *s, const ref_model *ref, const tbatch *b)
{
    peso_err err;
    peso_llama_batch v = tbatch_view(b);
    int V = s->m->cfg.vocab_size;
    for (int row = 0; row < b->B; row++) {
        int len = b->lens[row];
        int32_t pos[32];
        for (int t = 0; t < len; t++)
            pos[t] = row * b->T + t;
        float *got = malloc((size_t)len * V * sizeof *got);
        double *want = malloc((size_t)len * V * sizeof *want);
        cr_assert_eq(peso_llama_logits(s->m, &v, pos, len, got, &err), 0, "%s", err.msg);
        ref_logits(ref, b->ids + row * b->T, len, want);
        for (int i = 0; i < len * V; i++)
            cr_assert(fabs(got[i] - want[i]) <= 1e-5 * (1.0 + fabs(want[i])),
                      "row %d, position %d, token %d: logit %.7g, dense reference %.7g", row, i / V, i % V,
                      (double)got[i], want[i]);
        free(got);
        free(want);
    }
}

static void expect_hidden_mean(setup *s, const ref_model *ref, const tbatch *b)
{
    peso_err err;
    peso_llama_batch v = tbatch_view(b);
    int C = s->m->cfg.hidden_size;
    float *got = malloc((size_t)b->B * C * sizeof *got);
    double *xf = malloc((size_t)b->T * C * sizeof *xf);
    cr_assert_eq(peso_llama_hidden_mean(s->m, &v, got, &err), 0, "%s", err.msg);
    for (int row = 0; row < b->B; row++) {
        int len = b->lens[row];
        ref_hidden(ref, b->ids + row * b->T, len, xf);
        for (int i = 0; i < C; i++) {
            double w = 0.0;
            for (int t = 0; t < len; t++)
                w += xf[t * C + i];
            w /= len;
            cr_assert(fabs(got[row * C + i] - w) <= 1e-5 * (1.0 + fabs(w)), "row %d, dim %d: %.7g vs %.7g",
                      row, i, (double)got[row * C + i], w);
        }
    }
    free(got);
    free(xf);
}

/* SumLoRA-style fixed magnitudes, new tokens, two past adapters with dead
 * modules; removing them gives back the plain model. */
Test(cumulative, logits_match_dense_reference)
{
    setup s;
    setup_open(&s, 0, 2, PESO_LORA_ALL, 101);
    setup_randomize_b(&s, 102);
    float *past[N_PAST];
    make_past(&s, past, 103);
    const float alpha[N_PAST] = {0.75f, 1.25f};
    peso_err err;
    cr_assert_eq(peso_llama_set_past(s.m, N_PAST, (const float *const *)past, alpha, &err), 0, "%s", err.msg);
    cat c = {0};
    cat_fill(&c, &s, past, alpha);
    tbatch b;
    int lens[2] = {8, 5};
    tbatch_make(&b, 2, 8, lens, s.m->cfg.vocab_size, 2, 104);
    expect_logits(&s, &c.ref, &b);
    expect_hidden_mean(&s, &c.ref, &b);
    cr_assert_eq(peso_llama_set_past(s.m, 0, NULL, NULL, &err), 0, "%s", err.msg);
    expect_logits(&s, &s.ref, &b);
    cat_free(&c);
    free_past(past);
    setup_close(&s);
}

/* Central difference of the concatenated reference's mean loss in x[i]
 * (a current parameter or a magnitude), rebuilding the adapter. */
static double fd_at(setup *s, cat *c, float *const *past, const float *alpha, float *x, float h,
                    const tbatch *b)
{
    float x0 = *x, xp = x0 + h, xm = x0 - h;
    long n;
    double lp, lm;
    *x = xp;
    cat_fill(c, s, past, alpha);
    lp = ref_loss_sum(&c->ref, b->ids, b->lens, b->labels, b->B, b->T, &n) / n;
    *x = xm;
    cat_fill(c, s, past, alpha);
    lm = ref_loss_sum(&c->ref, b->ids, b->lens, b->labels, b->B, b->T, &n) / n;
    *x = x0;
    cat_fill(c, s, past, alpha);
    return (lp - lm) / ((double)xp - (double)xm);
}

static void expect_close(double got, double fd, const char *what, size_t i)
{
    cr_assert(fabs(fd - got) <= 1e-3 * fabs(fd) + 1e-6, "%s[%zu]: analytic %.9g, finite difference %.9g",
              what, i, got, fd);
}

/* Gradients of the mean loss with past adapters set: k entries of every
 * LoRA view, and with learnable magnitudes every used magnitude (the
 * unused third one stays at zero). */
static void grads_case(int learnable)
{
    setup s;
    peso_llama_config cf;
    peso_err err;
    tiny_config(&cf, 1);
    setup_prepare(&s, &cf, 0, PESO_LORA_ALL, 111);
    s.o.n_magnitudes = learnable ? 3 : 0;
    setup_load(&s);
    setup_randomize_b(&s, 112);
    float *past[N_PAST];
    make_past(&s, past, 113);
    float alpha[N_PAST] = {0.8f, 1.25f};
    if (learnable) {
        for (int j = 0; j < N_PAST; j++)
            s.params[s.m->mag_off + j] = alpha[j];
        cr_assert_eq(peso_llama_set_params(s.m, s.params, &err), 0, "%s", err.msg);
    }
    cr_assert_eq(peso_llama_set_past(s.m, N_PAST, (const float *const *)past, learnable ? NULL : alpha, &err),
                 0, "%s", err.msg);
    tbatch b;
    int lens[2] = {7, 5};
    tbatch_make(&b, 2, 7, lens, s.m->cfg.vocab_size, 0, 114);
    peso_llama_batch v = tbatch_view(&b);
    long n = peso_llama_count_labels(&v);
    size_t numel = s.m->flat.numel;
    float *g = malloc(numel * sizeof *g);
    peso_llama_loss loss;
    cr_assert_eq(peso_llama_zero_grads(s.m, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_forward_backward(s.m, &v, 1.0f / (float)n, &loss, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_get_grads(s.m, g, &err), 0, "%s", err.msg);
    cat c = {0};
    cat_fill(&c, &s, past, alpha);
    long cnt;
    double want = ref_loss_sum(&c.ref, b.ids, b.lens, b.labels, b.B, b.T, &cnt);
    cr_assert(fabs(loss.sum - want) <= 2e-6 * fabs(want), "loss %.9g, reference %.9g", loss.sum, want);
    peso_rng r;
    peso_rng_seed(&r, 115, 1);
    int checked = 0;
    for (size_t vi = 0; vi < s.m->flat.n_views; vi++) {
        const peso_view *view = &s.m->flat.views[vi];
        if (!strstr(view->name, "lora_"))
            continue;
        float h = (float)(1e-3 * frob(s.params + view->offset, view->numel) / sqrt((double)view->numel));
        for (int j = 0; j < 2; j++) {
            size_t i = view->offset + peso_rng_below(&r, view->numel);
            expect_close(g[i], fd_at(&s, &c, past, alpha, &s.params[i], h, &b), view->name, i - view->offset);
            checked++;
        }
    }
    cr_assert_eq(checked, 2 * 2 * 7 * 2);
    if (learnable) {
        /* the reference reads the magnitudes from alpha: perturb that */
        for (int j = 0; j < N_PAST; j++) {
            double fd = fd_at(&s, &c, past, alpha, &alpha[j], 1e-3f, &b);
            cr_assert(fabs(fd) > 1e-4, "magnitude %d: the loss hardly depends on it (%g)", j, fd);
            expect_close(g[s.m->mag_off + j], fd, PESO_LLAMA_MAGNITUDES, (size_t)j);
        }
        cr_assert_eq(g[s.m->mag_off + 2], 0.0f, "unused magnitude got gradient %g",
                     (double)g[s.m->mag_off + 2]);
    }
    free(g);
    cat_free(&c);
    free_past(past);
    setup_close(&s);
}

Test(cumulative, grads_match_finite_differences_fixed_alpha)
{
    grads_case(0);
}

Test(cumulative, grads_match_finite_differences_learnable_magnitudes)
{
    grads_case(1);
}

/* The past lives outside the flat: the layout is the same with and
 * without it, and an optimizer step over the whole flat leaves the
 * normalised copies as they were. */
Test(cumulative, past_adapters_are_frozen)
{
    setup s;
    setup_open(&s, 1, 0, PESO_LORA_ALL, 121);
    setup_randomize_b(&s, 122);
    float *past[N_PAST];
    make_past(&s, past, 123);
    size_t numel = s.m->flat.numel, n_views = s.m->flat.n_views;
    const float alpha[N_PAST] = {1.0f, 1.0f};
    peso_err err;
    cr_assert_eq(peso_llama_set_past(s.m, N_PAST, (const float *const *)past, alpha, &err), 0, "%s", err.msg);
    cr_assert_eq(s.m->flat.numel, numel);
    cr_assert_eq(s.m->flat.n_views, n_views);
    size_t bytes = N_PAST * s.m->lora_span * sizeof(float);
    float *before = malloc(bytes), *after = malloc(bytes), *p1 = malloc(numel * sizeof(float));
    cr_assert_eq(s.be->download(s.be, before, s.m->past.mem, bytes, &err), 0, "%s", err.msg);
    tbatch b;
    int lens[2] = {6, 4};
    tbatch_make(&b, 2, 6, lens, s.m->cfg.vocab_size, 0, 124);
    peso_llama_batch v = tbatch_view(&b);
    peso_llama_loss loss;
    cr_assert_eq(peso_llama_zero_grads(s.m, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_forward_backward(s.m, &v, 0.1f, &loss, &err), 0, "%s", err.msg);
    float *mo, *vo;
    cr_assert_eq(s.be->alloc(s.be, (void **)&mo, numel * sizeof(float), &err), 0, "%s", err.msg);
    cr_assert_eq(s.be->alloc(s.be, (void **)&vo, numel * sizeof(float), &err), 0, "%s", err.msg);
    peso_adamw hp = {1e-2, 0.9, 0.999, 1e-8, 0.01, 1.0, 1};
    cr_assert_eq(s.be->adamw(s.be, s.m->params, s.m->grads, mo, vo, numel, &hp, &err), 0, "%s", err.msg);
    cr_assert_eq(s.be->download(s.be, after, s.m->past.mem, bytes, &err), 0, "%s", err.msg);
    cr_assert_eq(memcmp(before, after, bytes), 0, "a past adapter changed in an optimizer step");
    cr_assert_eq(peso_llama_get_params(s.m, p1, &err), 0, "%s", err.msg);
    cr_assert_neq(memcmp(p1, s.params, numel * sizeof(float)), 0, "the step changed nothing");
    /* the copies are the normalised inputs: module 0's Ahat of past 0 */
    const peso_lora_module *md = &s.m->lora.mods[0];
    size_t na = (size_t)md->in * s.o.lora.rank;
    double nrm = frob(past[0] + md->a_off, na);
    for (size_t i = 0; i < na; i++)
        cr_assert(fabs(before[md->a_off + i] - past[0][md->a_off + i] / nrm) < 1e-7);
    s.be->free(s.be, mo);
    s.be->free(s.be, vo);
    free(before);
    free(after);
    free(p1);
    free_past(past);
    setup_close(&s);
}

static void log_softmax_ref(const float *x, int V, double *out)
{
    double mx = -INFINITY, sum = 0.0;
    for (int v = 0; v < V; v++)
        mx = fmax(mx, x[v]);
    for (int v = 0; v < V; v++)
        sum += exp(x[v] - mx);
    for (int v = 0; v < V; v++)
        out[v] = x[v] - mx - log(sum);
}

static void expect_lp(setup *s, const float *lp, const int32_t *ids, int n, const char *what)
{
    peso_err err;
    int V = s->m->cfg.vocab_size;
    int32_t len = n, pos = n - 1;
    peso_llama_batch b = {1, n, ids, &len, NULL};
    float *logits = malloc((size_t)V * sizeof *logits);
    double *ref = malloc((size_t)V * sizeof *ref);
    cr_assert_eq(peso_llama_logits(s->m, &b, &pos, 1, logits, &err), 0, "%s", err.msg);
    log_softmax_ref(logits, V, ref);
    for (int v = 0; v < V; v++)
        cr_assert(fabs(lp[v] - ref[v]) < 1e-5, "%s, token %d: decode %.7f, full forward %.7f", what, v,
                  (double)lp[v], ref[v]);
    free(logits);
    free(ref);
}

/* Prefill and two steps of forking beams with learnable magnitudes away
 * from 1: each beam's log-probabilities equal a full forward of its
 * sequence (which the tests above tie to the dense reference). */
Test(cumulative, decode_matches_full_forward)
{
    setup s;
    peso_llama_config cf;
    peso_err err;
    tiny_config(&cf, 0);
    setup_prepare(&s, &cf, 4, PESO_LORA_ALL, 131);
    s.o.n_magnitudes = N_PAST;
    setup_load(&s);
    setup_randomize_b(&s, 132);
    s.params[s.m->mag_off] = 1.5f;
    s.params[s.m->mag_off + 1] = 0.5f;
    cr_assert_eq(peso_llama_set_params(s.m, s.params, &err), 0, "%s", err.msg);
    float *past[N_PAST];
    make_past(&s, past, 133);
    cr_assert_eq(peso_llama_set_past(s.m, N_PAST, (const float *const *)past, NULL, &err), 0, "%s", err.msg);
    int V = s.m->cfg.vocab_size;
    int32_t prompt[9] = {3, 7, 41, 12, 0, 43, 19, 5, 40};
    peso_decode d;
    cr_assert_eq(peso_decode_init(&d, s.m, 2, 2, &err), 0, "%s", err.msg);
    float *lp = malloc((size_t)2 * V * sizeof *lp);
    cr_assert_eq(peso_decode_prefill(&d, prompt, 9, lp, &err), 0, "%s", err.msg);
    expect_lp(&s, lp, prompt, 9, "prefill");
    const int32_t par1[2] = {0, 0}, tok1[2] = {40, 42}, par2[2] = {1, 0}, tok2[2] = {41, 43};
    int32_t seq[2][11];
    cr_assert_eq(peso_decode_step(&d, 2, par1, tok1, lp, &err), 0, "%s", err.msg);
    for (int k = 0; k < 2; k++) {
        memcpy(seq[k], prompt, sizeof prompt);
        seq[k][9] = tok1[k];
        expect_lp(&s, lp + (size_t)k * V, seq[k], 10, "step 1");
    }
    cr_assert_eq(peso_decode_step(&d, 2, par2, tok2, lp, &err), 0, "%s", err.msg);
    for (int k = 0; k < 2; k++) {
        int32_t full[11];
        memcpy(full, seq[par2[k]], 10 * sizeof(int32_t));
        full[10] = tok2[k];
        expect_lp(&s, lp + (size_t)k * V, full, 11, "step 2");
    }
    peso_decode_free(&d);
    free(lp);
    free_past(past);
    setup_close(&s);
}

/* The magnitudes view comes after the LoRA views and the new rows, which
 * keep their offsets, and starts at 1.0. */
Test(cumulative, magnitudes_view_layout)
{
    setup a, m;
    setup_open(&a, 0, 3, PESO_LORA_ALL, 141);
    memset(&m, 0, sizeof m);
    peso_llama_config cf;
    tiny_config(&cf, 0);
    tiny_init(&m.t, &cf, 141);
    m.dir = tiny_tmpdir();
    tiny_write(&m.t, m.dir, PESO_ST_WRITE_F32);
    peso_err err;
    m.be = peso_backend_create("cpu", &err);
    m.o = a.o;
    m.o.n_magnitudes = 4;
    setup_load(&m);
    cr_assert_eq(m.m->flat.n_views, a.m->flat.n_views + 1);
    for (size_t i = 0; i < a.m->flat.n_views; i++) {
        cr_assert_str_eq(m.m->flat.views[i].name, a.m->flat.views[i].name);
        cr_assert_eq(m.m->flat.views[i].offset, a.m->flat.views[i].offset);
    }
    const peso_view *v = &m.m->flat.views[a.m->flat.n_views];
    cr_assert_str_eq(v->name, PESO_LLAMA_MAGNITUDES);
    cr_assert_eq(v->numel, 4u);
    cr_assert_eq(v->offset, m.m->mag_off);
    cr_assert(v->offset >= a.m->flat.numel);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(m.params[v->offset + i], 1.0f);
    setup_close(&a);
    setup_close(&m);
}

Test(cumulative, refuses_magnitudes_it_does_not_have)
{
    setup s;
    setup_open(&s, 1, 0, PESO_LORA_ALL, 151);
    float *past[N_PAST];
    make_past(&s, past, 152);
    peso_err err;
    cr_assert_eq(peso_llama_set_past(s.m, N_PAST, (const float *const *)past, NULL, &err), -1);
    cr_assert(strstr(err.msg, PESO_LLAMA_MAGNITUDES) && strstr(err.msg, "holds 0"), "%s", err.msg);
    const float bad[N_PAST] = {1.0f, NAN};
    cr_assert_eq(peso_llama_set_past(s.m, N_PAST, (const float *const *)past, bad, &err), -1);
    cr_assert(strstr(err.msg, "past adapter 1"), "%s", err.msg);
    cr_assert_eq(s.m->past.n, 0);
    free_past(past);
    setup_close(&s);
    setup_open(&s, 1, 0, 0, 153);
    float one = 1.0f;
    const float *none[1] = {s.params};
    cr_assert_eq(peso_llama_set_past(s.m, 1, none, &one, &err), -1);
    cr_assert(strstr(err.msg, "no LoRA modules"), "%s", err.msg);
    setup_close(&s);
}

/* The past adapters' share of the arena, by hand for the tiny config
 * (rank 4, all seven projections, [2, 8] = 16 tokens; every buffer here
 * is a multiple of 16 floats, so no alignment padding): kept x Ahat_i^T
 * of 2 past adapters is 2 x 16 x 4 floats per module and layer, and only
 * a pass kept for a backward keeps them. */
Test(cumulative, past_arena_by_hand)
{
    peso_llama_config c;
    tiny_config(&c, 1);
    peso_lora_conf l = {4, 8.0, PESO_LORA_ALL};
    size_t plu = 2u * 7 * (2 * 16 * 4);
    cr_assert_eq(peso_llama_past_acts_numel(&c, &l, 2, 8, 1, 2), plu);
    cr_assert_eq(peso_llama_past_acts_numel(&c, &l, 2, 8, 0, 2), 0u);
    cr_assert_eq(peso_llama_past_acts_numel(&c, &l, 2, 8, 1, 0), 0u);
    l.targets = 1u << PESO_LORA_K;
    cr_assert_eq(peso_llama_past_acts_numel(&c, &l, 2, 8, 1, 1), 2u * 16 * 4);
}
