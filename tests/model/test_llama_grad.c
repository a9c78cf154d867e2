/* The whole model against the independent double-precision reference
 * (ref_llama.h): the loss of the forward, and the gradient of the mean
 * loss w.r.t. LoRA A and B entries and new vocabulary rows against
 * central differences of the reference's loss, computed in double. */
#include <criterion/criterion.h>

#include "llama_setup.h"

static void expect_loss(setup *s, const tbatch *b, double rtol)
{
    peso_err err;
    peso_llama_loss loss;
    peso_llama_batch v = tbatch_view(b);
    long n;
    double want = ref_loss_sum(&s->ref, b->ids, b->lens, b->labels, b->B, b->T, &n);
    cr_assert_eq(peso_llama_forward(s->m, &v, &loss, &err), 0, "%s", err.msg);
    cr_assert_eq(loss.count, n, "label count %ld, expected %ld", loss.count, n);
    cr_assert(fabs(loss.sum - want) <= rtol * fabs(want), "loss sum %.9g, reference %.9g", loss.sum, want);
    cr_assert(fabs(loss.mean - want / n) <= rtol * fabs(want / n), "mean %.9g, reference %.9g", loss.mean,
              want / n);
}

Test(llama_forward, matches_reference_tied_and_untied)
{
    for (int tied = 0; tied < 2; tied++) {
        setup s;
        setup_open(&s, tied, 0, PESO_LORA_ALL, 11 + tied);
        setup_randomize_b(&s, 3);
        tbatch b;
        int lens[3] = {9, 4, 7};
        tbatch_make(&b, 3, 9, lens, s.m->cfg.vocab_size, 0, 21);
        expect_loss(&s, &b, 2e-6);
        setup_close(&s);
    }
}

Test(llama_forward, matches_reference_with_new_tokens)
{
    for (int tied = 0; tied < 2; tied++) {
        setup s;
        setup_open(&s, tied, 5, PESO_LORA_ALL, 31 + tied);
        setup_randomize_b(&s, 4);
        cr_assert_eq(s.m->cfg.vocab_size, 45);
        tbatch b;
        int lens[2] = {8, 6};
        tbatch_make(&b, 2, 8, lens, s.m->cfg.vocab_size, 5, 22);
        expect_loss(&s, &b, 2e-6);
        setup_close(&s);
    }
}

/* head_dim * heads != hidden (o_proj is not square), 3 layers, 1 kv head,
 * plain RoPE, some projections without LoRA. */
Test(llama_forward, matches_reference_other_shapes)
{
    peso_llama_config c;
    tiny_config(&c, 0);
    c.num_hidden_layers = 3;
    c.head_dim = 6;
    c.num_key_value_heads = 1;
    c.intermediate_size = 20;
    c.rope_scaling.llama3 = 0;
    c.rope_theta = 500.0;
    setup s;
    setup_open_cfg(&s, &c, 2, (1u << PESO_LORA_Q) | (1u << PESO_LORA_V) | (1u << PESO_LORA_DOWN), 41);
    setup_randomize_b(&s, 5);
    tbatch b;
    int lens[2] = {10, 3};
    tbatch_make(&b, 2, 10, lens, s.m->cfg.vocab_size, 2, 23);
    expect_loss(&s, &b, 2e-6);
    setup_close(&s);
}

/* Central difference of the reference's mean loss in params[i]. */
static double fd_at(setup *s, const tbatch *b, size_t i, float h)
{
    float x0 = s->params[i], xp = x0 + h, xm = x0 - h;
    s->params[i] = xp;
    double lp = ref_mean(s, b);
    s->params[i] = xm;
    double lm = ref_mean(s, b);
    s->params[i] = x0;
    return (lp - lm) / ((double)xp - (double)xm);
}

/* Analytic gradient of the mean loss at k random entries of every view
 * of the flat, against finite differences. Returns the entries checked. */
static int check_grads(setup *s, const tbatch *b, int k, uint64_t seed)
{
    peso_err err;
    peso_llama_loss loss;
    peso_llama_batch v = tbatch_view(b);
    long n = peso_llama_count_labels(&v);
    size_t numel = s->m->flat.numel;
    float *g = malloc(numel * sizeof *g);
    cr_assert_eq(peso_llama_zero_grads(s->m, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_forward_backward(s->m, &v, 1.0f / (float)n, &loss, &err), 0, "%s", err.msg);
    cr_assert_eq(loss.count, n);
    cr_assert_eq(peso_llama_get_grads(s->m, g, &err), 0, "%s", err.msg);
    peso_rng r;
    peso_rng_seed(&r, seed, 1);
    int checked = 0;
    double worst = 0.0;
    for (size_t vi = 0; vi < s->m->flat.n_views; vi++) {
        const peso_view *view = &s->m->flat.views[vi];
        /* a step relative to the view's scale: new rows start at 0.02 */
        double ss = 0.0;
        for (size_t j = 0; j < view->numel; j++)
            ss += (double)s->params[view->offset + j] * s->params[view->offset + j];
        float h = (float)(1e-3 * sqrt(ss / view->numel));
        for (int j = 0; j < k; j++) {
            size_t i = view->offset + peso_rng_below(&r, view->numel);
            double fd = fd_at(s, b, i, h);
            double d = fabs(fd - g[i]);
            cr_assert(d <= 1e-3 * fabs(fd) + 1e-6, "%s[%zu]: analytic %.9g, finite difference %.9g",
                      view->name, i - view->offset, (double)g[i], fd);
            worst = fmax(worst, d / (fabs(fd) + 1e-12));
            checked++;
        }
    }
    cr_log_info("%d gradient entries, worst relative error %.3g", checked, worst);
    free(g);
    return checked;
}

Test(llama_backward, lora_grads_match_finite_differences_tied)
{
    setup s;
    setup_open(&s, 1, 0, PESO_LORA_ALL, 51);
    setup_randomize_b(&s, 6);
    tbatch b;
    int lens[2] = {7, 5};
    tbatch_make(&b, 2, 7, lens, s.m->cfg.vocab_size, 0, 24);
    cr_assert_eq(check_grads(&s, &b, 3, 61), 3 * 2 * 7 * 2);
    setup_close(&s);
}

Test(llama_backward, lora_and_new_rows_match_finite_differences)
{
    for (int tied = 0; tied < 2; tied++) {
        setup s;
        setup_open(&s, tied, 3, PESO_LORA_ALL, 71 + tied);
        setup_randomize_b(&s, 7);
        tbatch b;
        int lens[2] = {7, 6};
        tbatch_make(&b, 2, 7, lens, s.m->cfg.vocab_size, 3, 25);
        int views = 2 * 7 * 2 + (tied ? 1 : 2);
        cr_assert_eq(check_grads(&s, &b, 3, 81), 3 * views);
        setup_close(&s);
    }
}

/* Embedding rows of new tokens that never appear as inputs get no
 * gradient when untied; head rows always do (every logit enters the
 * softmax). */
Test(llama_backward, new_rows_of_absent_tokens)
{
    setup s;
    setup_open(&s, 0, 4, PESO_LORA_ALL, 91);
    tbatch b;
    int lens[1] = {6};
    tbatch_make(&b, 1, 6, lens, s.m->cfg.vocab_size - 4, 0, 26);
    b.ids[2] = 41; /* only new token 1 of 40..43 appears */
    b.labels[2] = 41;
    peso_err err;
    peso_llama_loss loss;
    peso_llama_batch v = tbatch_view(&b);
    cr_assert_eq(peso_llama_forward_backward(s.m, &v, 1.0f, &loss, &err), 0, "%s", err.msg);
    float *g = malloc(s.m->flat.numel * sizeof *g);
    cr_assert_eq(peso_llama_get_grads(s.m, g, &err), 0, "%s", err.msg);
    const peso_view *e = peso_flat_find(&s.m->flat, "model.embed_tokens.weight.new_rows");
    const peso_view *h = peso_flat_find(&s.m->flat, "lm_head.weight.new_rows");
    int C = s.m->cfg.hidden_size;
    for (int row = 0; row < 4; row++) {
        double se = 0.0, sh = 0.0;
        for (int i = 0; i < C; i++) {
            se += fabs(g[e->offset + (size_t)row * C + i]);
            sh += fabs(g[h->offset + (size_t)row * C + i]);
        }
        if (row == 1)
            cr_assert(se > 0.0, "embedding row of the present new token has no gradient");
        else
            cr_assert_eq(se, 0.0, "embedding row %d of an absent token has gradient %g", row, se);
        cr_assert(sh > 0.0, "head row %d has no gradient", row);
    }
    free(g);
    setup_close(&s);
}
