/* InfLoRA support: the modules' input covariance against inputs computed
 * independently (layer 0's q/k/v input by hand from the folder's
 * weights; every module's input from the double-precision reference),
 * and the frozen-A backward. */
#include <criterion/criterion.h>

#include "../model/llama_setup.h"
#include "../model/ref_inputs.h"
#include "method/inflora_cov.h"
#include "method/output_kl.h"

/* X^T X [in, in] of rows [0, T) of x [T, in], added into out. */
static void xtx_add(const double *x, int T, int in, double *out)
{
    for (int t = 0; t < T; t++)
        for (int i = 0; i < in; i++)
            for (int j = 0; j < in; j++)
                out[(size_t)i * in + j] += x[(size_t)t * in + i] * x[(size_t)t * in + j];
}

static void expect_block(const double *got, const double *want, int in, const char *what)
{
    double mx = 0.0;
    for (int i = 0; i < in * in; i++)
        mx = fmax(mx, fabs(want[i]));
    cr_assert(mx > 0.0, "%s: empty reference block", what);
    for (int i = 0; i < in; i++)
        for (int j = 0; j < in; j++) {
            double g = got[(size_t)i * in + j], w = want[(size_t)i * in + j];
            cr_assert(fabs(g - w) <= 1e-5 * mx, "%s[%d][%d]: %.9g, expected %.9g", what, i, j, g, w);
            cr_assert_eq(g, got[(size_t)j * in + i], "%s not symmetric at [%d][%d]", what, i, j);
        }
}

/* Offsets of the modules' blocks, from their in features. */
static size_t block_at(const peso_llama *m, int mi)
{
    size_t at = 0;
    for (int i = 0; i < mi; i++)
        at += (size_t)m->lora.mods[i].in * m->lora.mods[i].in;
    return at;
}

Test(input_cov, numel_is_the_sum_of_squared_inputs)
{
    setup s;
    setup_open(&s, 1, 0, PESO_LORA_ALL, 5);
    /* per layer: q, k, v, gate, up read hidden = 32, o reads 4 x 8 = 32,
     * down reads intermediate = 48 */
    cr_assert_eq(peso_inflora_cov_numel(s.m), 2u * (6u * 32 * 32 + 48 * 48));
    setup_close(&s);
    setup_open(&s, 1, 0, (1u << PESO_LORA_V) | (1u << PESO_LORA_DOWN), 5);
    cr_assert_eq(peso_inflora_cov_numel(s.m), 2u * (32 * 32 + 48 * 48));
    setup_close(&s);
}

/* Layer 0's q, k and v read RMSNorm(embedding) * input_layernorm, which
 * the folder's weights give directly. Padding rows (random ids) and an
 * empty row must not count. */
Test(input_cov, layer0_qkv_by_hand)
{
    peso_inflora_cov w = {0};
    setup s;
    setup_open(&s, 0, 0, PESO_LORA_ALL, 7);
    setup_randomize_b(&s, 8);
    tbatch b;
    int lens[3] = {6, 0, 3};
    tbatch_make(&b, 3, 6, lens, s.m->cfg.vocab_size, 0, 9);
    peso_llama_batch v = tbatch_view(&b);
    size_t n = peso_inflora_cov_numel(s.m);
    double *cov = calloc(n, sizeof *cov);
    long n_tok = 5;
    peso_err err;
    cr_assert_eq(peso_inflora_cov_add(&w, s.m, &v, cov, &n_tok, &err), 0, "%s", err.msg);
    cr_assert_eq(n_tok, 5 + 9);
    int C = s.m->cfg.hidden_size;
    double *want = calloc((size_t)C * C, sizeof *want), *x = malloc((size_t)C * sizeof *x);
    for (int r = 0; r < b.B; r++)
        for (int t = 0; t < lens[r]; t++) {
            const float *e = s.t.embed + (size_t)b.ids[r * b.T + t] * C;
            double ss = 0.0;
            for (int i = 0; i < C; i++)
                ss += (double)e[i] * e[i];
            double rs = 1.0 / sqrt(ss / C + s.t.cfg.rms_norm_eps);
            for (int i = 0; i < C; i++)
                x[i] = e[i] * rs * s.t.attn_norm[0][i];
            xtx_add(x, 1, C, want);
        }
    for (int p = 0; p < 3; p++)
        expect_block(cov + block_at(s.m, p), want, C, peso_lora_proj_name((peso_lora_proj)p));
    free(want);
    free(x);
    peso_inflora_cov_free(&w, s.m);
    free(cov);
    setup_close(&s);
}

/* Every module of both layers against the reference's inputs (LoRA with
 * non-zero B and new tokens, so later inputs depend on the adapters); a
 * second call adds the same again. */
Test(input_cov, every_module_matches_reference_and_adds)
{
    peso_inflora_cov w = {0};
    setup s;
    setup_open(&s, 0, 3, PESO_LORA_ALL, 11);
    setup_randomize_b(&s, 12);
    tbatch b;
    int lens[2] = {7, 4};
    tbatch_make(&b, 2, 7, lens, s.m->cfg.vocab_size, 3, 13);
    peso_llama_batch v = tbatch_view(&b);
    size_t n = peso_inflora_cov_numel(s.m);
    double *cov = calloc(n, sizeof *cov), *want = calloc(n, sizeof *want);
    long n_tok = 0;
    peso_err err;
    cr_assert_eq(peso_inflora_cov_add(&w, s.m, &v, cov, &n_tok, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_inflora_cov_add(&w, s.m, &v, cov, &n_tok, &err), 0, "%s", err.msg);
    cr_assert_eq(n_tok, 2 * 11);
    for (int r = 0; r < b.B; r++) {
        ref_inputs ri;
        ref_inputs_run(&s.ref, b.ids + r * b.T, lens[r], &ri);
        for (int mi = 0; mi < s.m->lora.n_modules; mi++) {
            const peso_lora_module *md = &s.m->lora.mods[mi];
            xtx_add(ri.x[md->layer][md->proj], lens[r], md->in, want + block_at(s.m, mi));
        }
        ref_inputs_free(&ri);
    }
    for (size_t i = 0; i < n; i++)
        want[i] *= 2.0;
    for (int mi = 0; mi < s.m->lora.n_modules; mi++) {
        const peso_lora_module *md = &s.m->lora.mods[mi];
        char what[64];
        snprintf(what, sizeof what, "layer %d %s", md->layer, peso_lora_proj_name(md->proj));
        expect_block(cov + block_at(s.m, mi), want + block_at(s.m, mi), md->in, what);
    }
    peso_inflora_cov_free(&w, s.m);
    free(cov);
    free(want);
    setup_close(&s);
}

Test(input_cov, refuses_a_bad_batch_and_adds_nothing)
{
    peso_inflora_cov w = {0};
    setup s;
    setup_open(&s, 1, 0, PESO_LORA_ALL, 15);
    tbatch b;
    int lens[1] = {4};
    tbatch_make(&b, 1, 4, lens, s.m->cfg.vocab_size, 0, 16);
    b.lens[0] = 5;
    peso_llama_batch v = tbatch_view(&b);
    double *cov = calloc(peso_inflora_cov_numel(s.m), sizeof *cov);
    long n_tok = 3;
    peso_err err;
    cr_assert_eq(peso_inflora_cov_add(&w, s.m, &v, cov, &n_tok, &err), -1);
    cr_assert(strstr(err.msg, "length 5"), "%s", err.msg);
    cr_assert_eq(n_tok, 3);
    cr_assert_eq(cov[0], 0.0);
    peso_inflora_cov_free(&w, s.m);
    free(cov);
    setup_close(&s);
}

/* With freeze_a the A views keep the gradient they had (zero here, twice
 * over), B's gradient is the unfrozen one, bit for bit; the output-KL's
 * gradient respects it too. */
static void freeze_case(int with_okl)
{
    setup s;
    setup_open(&s, 0, 0, PESO_LORA_ALL, 17);
    setup_randomize_b(&s, 18);
    tbatch b;
    int lens[2] = {6, 5};
    tbatch_make(&b, 2, 6, lens, s.m->cfg.vocab_size, 0, 19);
    peso_llama_batch v = tbatch_view(&b);
    peso_err err;
    peso_llama_loss loss;
    size_t n = s.m->flat.numel;
    float *prev = malloc(n * sizeof *prev), *g0 = malloc(n * sizeof *g0), *g1 = malloc(n * sizeof *g1);
    memcpy(prev, s.params, n * sizeof *prev);
    for (size_t i = 0; i < n; i++)
        prev[i] *= 0.5f;
    peso_okl term = {0};
    if (with_okl)
        cr_assert_eq(peso_okl_init(&term, s.m, prev, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_zero_grads(s.m, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_forward_backward(s.m, &v, 0.1f, &loss, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_get_grads(s.m, g0, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_set_freeze_a(s.m, 1), 0);
    cr_assert_eq(peso_llama_zero_grads(s.m, &err), 0, "%s", err.msg);
    for (int rep = 0; rep < 2; rep++) {
        cr_assert_eq(peso_llama_forward_backward(s.m, &v, 0.1f, &loss, &err), 0, "%s", err.msg);
        cr_assert_eq(peso_llama_get_grads(s.m, g1, &err), 0, "%s", err.msg);
        for (int mi = 0; mi < s.m->lora.n_modules; mi++) {
            const peso_lora_module *md = &s.m->lora.mods[mi];
            double sa = 0.0;
            for (size_t i = 0; i < (size_t)md->in * s.o.lora.rank; i++) {
                cr_assert_eq(g1[md->a_off + i], 0.0f, "module %d: A gradient with freeze_a", mi);
                sa += fabs(g0[md->a_off + i]);
            }
            cr_assert(sa > 0.0, "module %d: no A gradient without freeze_a", mi);
            for (size_t i = 0; rep == 0 && i < (size_t)md->out * s.o.lora.rank; i++)
                cr_assert_eq(g1[md->b_off + i], g0[md->b_off + i], "module %d: B gradient changed", mi);
        }
    }
    peso_okl_free(&term);
    free(prev);
    free(g0);
    free(g1);
    setup_close(&s);
}

Test(freeze_a, only_b_gets_gradients)
{
    freeze_case(0);
}

Test(freeze_a, only_b_gets_gradients_with_output_kl)
{
    freeze_case(1);
}
