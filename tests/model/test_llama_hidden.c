/* peso_llama_hidden_mean against the double-precision reference's final
 * hidden states (ref_llama.h, after the final RMSNorm) averaged by hand
 * over each row's real tokens, and its independence of padding. */
#include <criterion/criterion.h>

#include "llama_setup.h"

/* Largest |got - want| over a row, relative to the row's largest |want|. */
static double row_rel_err(const float *got, const double *want, int C)
{
    double d = 0.0, s = 0.0;
    for (int i = 0; i < C; i++) {
        d = fmax(d, fabs(got[i] - want[i]));
        s = fmax(s, fabs(want[i]));
    }
    return d / s;
}

static void expect_means(setup *s, const tbatch *b)
{
    peso_err err;
    int C = s->m->cfg.hidden_size;
    float *got = malloc((size_t)b->B * C * sizeof *got);
    double *xf = malloc((size_t)b->T * C * sizeof *xf), *want = malloc((size_t)C * sizeof *want);
    peso_llama_batch v = tbatch_view(b);
    v.labels = NULL;
    cr_assert_eq(peso_llama_hidden_mean(s->m, &v, got, &err), 0, "%s", err.msg);
    for (int r = 0; r < b->B; r++) {
        int len = b->lens[r];
        ref_hidden(&s->ref, b->ids + (size_t)r * b->T, len, xf);
        for (int i = 0; i < C; i++) {
            want[i] = 0.0;
            for (int t = 0; t < len; t++)
                want[i] += xf[(size_t)t * C + i] / len;
        }
        double e = row_rel_err(got + (size_t)r * C, want, C);
        cr_assert(e <= 1e-4, "row %d: relative error %.3g against the reference", r, e);
    }
    free(got), free(xf), free(want);
}

Test(llama_hidden, mean_matches_reference_without_lora)
{
    for (int tied = 0; tied < 2; tied++) {
        setup s;
        setup_open(&s, tied, 0, 0, 51 + tied);
        tbatch b;
        int lens[3] = {9, 1, 5};
        tbatch_make(&b, 3, 9, lens, s.m->cfg.vocab_size, 0, 61);
        expect_means(&s, &b);
        setup_close(&s);
    }
}

/* With LoRA adapters and new rows loaded, they take part (the reference
 * includes them; B is made nonzero so that they matter). */
Test(llama_hidden, mean_matches_reference_with_lora_and_new_rows)
{
    setup s;
    setup_open(&s, 0, 3, PESO_LORA_ALL, 71);
    setup_randomize_b(&s, 6);
    tbatch b;
    int lens[2] = {7, 3};
    tbatch_make(&b, 2, 7, lens, s.m->cfg.vocab_size, 3, 62);
    expect_means(&s, &b);
    setup_close(&s);
}

/* The same rows with more padding (random ids after each row's end) and
 * in a larger batch give the same means. */
Test(llama_hidden, padding_does_not_change_a_row)
{
    setup s;
    setup_open(&s, 1, 0, 0, 81);
    peso_err err;
    int C = s.m->cfg.hidden_size, lens[2] = {6, 4}, lens_pad[3] = {6, 4, 12};
    tbatch a, p;
    tbatch_make(&a, 2, 6, lens, s.m->cfg.vocab_size, 0, 63);
    tbatch_make(&p, 3, 12, lens_pad, s.m->cfg.vocab_size, 0, 64);
    for (int r = 0; r < 2; r++)
        memcpy(p.ids + r * 12, a.ids + r * 6, (size_t)lens[r] * sizeof *a.ids);
    float *ga = malloc(2 * (size_t)C * sizeof *ga), *gp = malloc(3 * (size_t)C * sizeof *gp);
    peso_llama_batch va = {2, 6, a.ids, a.lens, NULL}, vp = {3, 12, p.ids, p.lens, NULL};
    cr_assert_eq(peso_llama_hidden_mean(s.m, &va, ga, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_hidden_mean(s.m, &vp, gp, &err), 0, "%s", err.msg);
    for (int i = 0; i < 2 * C; i++)
        cr_assert(fabsf(ga[i] - gp[i]) <= 1e-6f * (1.0f + fabsf(ga[i])), "entry %d: %.9g vs %.9g padded", i,
                  ga[i], gp[i]);
    free(ga), free(gp);
    setup_close(&s);
}

Test(llama_hidden, empty_row_is_refused)
{
    setup s;
    setup_open(&s, 1, 0, 0, 91);
    peso_err err;
    int32_t ids[4] = {1, 2, 3, 4}, lens[2] = {2, 0};
    float out[64];
    peso_llama_batch v = {2, 2, ids, lens, NULL};
    cr_assert_eq(peso_llama_hidden_mean(s.m, &v, out, &err), -1);
    cr_assert(strstr(err.msg, "row 1 has 0 tokens"), "%s", err.msg);
    setup_close(&s);
}
