#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "semid/rqvae.h"
#include "semid/rqvae_internal.h"
#include "semid_test_util.h"

static peso_rqvae_opts small_opts(void)
{
    peso_rqvae_opts o = {.in_dim = 12,
                         .hidden = {10, 8},
                         .n_hidden = 2,
                         .latent = 4,
                         .levels = 2,
                         .codebook = 4,
                         .epochs = 3,
                         .batch = 8,
                         .lr = 1e-2f,
                         .beta = 0.25f,
                         .kmeans_iters = 5,
                         .seed = 3};
    return o;
}

static peso_rqvae *fit_or_die(const float *x, size_t n, const peso_rqvae_opts *o)
{
    peso_rqvae *m = NULL;
    peso_err err;
    int rc = peso_rqvae_fit(&m, x, n, o, 0, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    return m;
}

/* ---- a plain double-precision reference of the documented model ---- */

typedef struct ref_out {
    double z[64], zq[64], xh[64], quant;
    int32_t codes[8];
} ref_out;

/* One MLP over dims[0..nl], parameters from *off on (W [out x in], b). */
static void ref_mlp(const float *p, size_t *off, const int *dims, int nl, const double *in, double *out)
{
    double cur[64], nxt[64];
    memcpy(cur, in, (size_t)dims[0] * sizeof *cur);
    for (int l = 0; l < nl; l++) {
        const float *w = p + *off, *b = w + (size_t)dims[l] * dims[l + 1];
        for (int j = 0; j < dims[l + 1]; j++) {
            double s = b[j];
            for (int i = 0; i < dims[l]; i++)
                s += (double)w[(size_t)j * dims[l] + i] * cur[i];
            nxt[j] = (l < nl - 1 && s < 0) ? 0 : s;
        }
        *off += (size_t)dims[l] * dims[l + 1] + dims[l + 1];
        memcpy(cur, nxt, (size_t)dims[l + 1] * sizeof *cur);
    }
    memcpy(out, cur, (size_t)dims[nl] * sizeof *out);
}

/* x is first normalised as the model documents: (x - mu) * scale. */
static void ref_forward(const peso_rqvae_opts *o, const float *p, const float *mu, double scale,
                        const float *x, ref_out *r)
{
    int nl = o->n_hidden + 1, enc[6], dec[6];
    enc[0] = o->in_dim;
    for (int i = 0; i < o->n_hidden; i++)
        enc[i + 1] = o->hidden[i];
    enc[nl] = o->latent;
    for (int i = 0; i <= nl; i++)
        dec[i] = enc[nl - i];
    double xin[64], res[64];
    for (int i = 0; i < o->in_dim; i++)
        xin[i] = ((double)x[i] - mu[i]) * scale;
    size_t off = 0;
    ref_mlp(p, &off, enc, nl, xin, r->z);
    size_t cb = off;
    for (int l = 0; l < nl; l++)
        cb += (size_t)dec[l] * dec[l + 1] + dec[l + 1];
    memcpy(res, r->z, (size_t)o->latent * sizeof *res);
    memset(r->zq, 0, sizeof r->zq);
    r->quant = 0;
    for (int l = 0; l < o->levels; l++) {
        double best = INFINITY;
        for (int k = 0; k < o->codebook; k++) {
            const float *e = p + cb + ((size_t)l * o->codebook + k) * o->latent;
            double s = 0;
            for (int j = 0; j < o->latent; j++)
                s += (res[j] - e[j]) * (res[j] - e[j]);
            if (s < best) {
                best = s;
                r->codes[l] = k;
            }
        }
        const float *e = p + cb + ((size_t)l * o->codebook + r->codes[l]) * o->latent;
        for (int j = 0; j < o->latent; j++) {
            res[j] -= e[j];
            r->zq[j] += e[j];
        }
        r->quant += (1.0 + o->beta) * best;
    }
    ref_mlp(p, &off, dec, nl, r->zq, r->xh);
}

/* The surrogate at p == ref is the loss of rqvae.h; codes and the
 * reconstruction error agree with the reference forward pass. */
Test(rqvae, loss_and_codes_match_reference)
{
    peso_rqvae_opts o = small_opts();
    size_t n = 16;
    float *x = test_clusters(n, o.in_dim, 4, 1.0, 0.3, 1, NULL);
    peso_rqvae *m = fit_or_die(x, n, &o);
    const float *p = peso_rqvae_params(m);
    int32_t codes[16 * 2];
    peso_rqvae_encode(m, x, n, codes);
    /* The normalisation: mean and inverse RMS norm of the centred items. */
    float scale;
    const float *mu = peso_rqvae_input_norm(m, &scale);
    double ss = 0;
    for (int j = 0; j < o.in_dim; j++) {
        double mean = 0;
        for (size_t i = 0; i < n; i++)
            mean += x[i * o.in_dim + j] / (double)n;
        cr_assert_float_eq(mu[j], mean, 1e-6);
        for (size_t i = 0; i < n; i++)
            ss += (x[i * o.in_dim + j] - mean) * (x[i * o.in_dim + j] - mean);
    }
    cr_assert_float_eq(scale, 1.0 / sqrt(ss / n), 1e-6 * scale);
    double loss = 0, recon = 0;
    for (size_t i = 0; i < n; i++) {
        ref_out r;
        ref_forward(&o, p, mu, scale, x + i * o.in_dim, &r);
        for (int l = 0; l < o.levels; l++)
            cr_assert_eq(codes[i * o.levels + l], r.codes[l], "item %zu level %d", i, l);
        double e = 0;
        for (int j = 0; j < o.in_dim; j++) {
            double t = (x[i * o.in_dim + j] - mu[j]) * (double)scale - r.xh[j];
            e += t * t;
        }
        /* evaluate reports in the input's units, the loss is normalised */
        recon += e / n / ((double)scale * scale);
        loss += (e + r.quant) / n;
    }
    double got = peso_rqvae_surrogate(m, p, p, x, n, codes, NULL);
    cr_assert_float_eq(got, loss, 1e-4 * loss, "surrogate %g reference %g", got, loss);
    peso_rqvae_report rep;
    peso_rqvae_evaluate(m, x, n, &rep);
    cr_assert_float_eq(rep.recon_mse, recon, 1e-4 * recon);
    peso_rqvae_free(m);
    free(x);
}

/* Central differences of the surrogate (stop-gradient terms held at ref)
 * against the analytic straight-through gradient, every parameter. */
Test(rqvae, gradient_matches_finite_differences)
{
    peso_rqvae_opts o = small_opts();
    size_t n = 16;
    float *x = test_clusters(n, o.in_dim, 4, 1.0, 0.3, 2, NULL);
    peso_rqvae *m = fit_or_die(x, n, &o);
    size_t np = peso_rqvae_n_params(m), enc_end, dec_end;
    peso_rqvae_param_groups(m, &enc_end, &dec_end);
    float *ref = malloc(np * sizeof *ref), *p = malloc(np * sizeof *p), *g = malloc(np * sizeof *g);
    memcpy(ref, peso_rqvae_params(m), np * sizeof *ref);
    int32_t codes[16 * 2];
    peso_rqvae_encode(m, x, n, codes);
    peso_rqvae_surrogate(m, ref, ref, x, n, codes, g);
    const char *group[] = {"encoder", "decoder", "codebook"};
    double gmax[3] = {0}, emax[3] = {0};
    for (size_t i = 0; i < np; i++) {
        int grp = i < enc_end ? 0 : i < dec_end ? 1 : 2;
        double h = 1e-3;
        memcpy(p, ref, np * sizeof *p);
        p[i] = ref[i] + (float)h;
        double hp = (double)p[i] - ref[i];
        double lp = peso_rqvae_surrogate(m, p, ref, x, n, codes, NULL);
        p[i] = ref[i] - (float)h;
        double hm = (double)ref[i] - p[i];
        double lm = peso_rqvae_surrogate(m, p, ref, x, n, codes, NULL);
        double fd = (lp - lm) / (hp + hm);
        double e = fabs(fd - g[i]);
        cr_assert(e <= 2e-3 + 2e-2 * fabs(fd), "%s parameter %zu: analytic %g, finite difference %g",
                  group[grp],
                  i - (grp == 0   ? 0
                       : grp == 1 ? enc_end
                                  : dec_end),
                  g[i], fd);
        if (fabs(g[i]) > gmax[grp])
            gmax[grp] = fabs(g[i]);
        if (e > emax[grp])
            emax[grp] = e;
    }
    /* Every group carries gradient, so the comparison is not vacuous. */
    for (int k = 0; k < 3; k++)
        cr_assert(gmax[k] > 1e-2, "%s: largest gradient %g", group[k], gmax[k]);
    free(g);
    free(p);
    free(ref);
    peso_rqvae_free(m);
    free(x);
}

static peso_rqvae_opts cluster_opts(void)
{
    peso_rqvae_opts o = {.in_dim = 32,
                         .hidden = {64, 32},
                         .n_hidden = 2,
                         .latent = 8,
                         .levels = 3,
                         .codebook = 8,
                         .epochs = 30,
                         .batch = 64,
                         .lr = 3e-3f,
                         .beta = 0.25f,
                         .kmeans_iters = 20,
                         .seed = 42};
    return o;
}

Test(rqvae, deterministic_for_a_seed)
{
    peso_rqvae_opts o = cluster_opts();
    size_t n = 200;
    float *x = test_clusters(n, o.in_dim, 8, 3.0, 0.3, 4, NULL);
    peso_rqvae *a = fit_or_die(x, n, &o), *b = fit_or_die(x, n, &o);
    o.seed = 43;
    peso_rqvae *c = fit_or_die(x, n, &o);
    size_t np = peso_rqvae_n_params(a);
    cr_assert(memcmp(peso_rqvae_params(a), peso_rqvae_params(b), np * sizeof(float)) == 0);
    cr_assert(memcmp(peso_rqvae_params(a), peso_rqvae_params(c), np * sizeof(float)) != 0);
    int32_t *ca = malloc(n * 3 * sizeof *ca), *cb = malloc(n * 3 * sizeof *cb),
            *cc = malloc(n * 3 * sizeof *cc);
    peso_rqvae_encode(a, x, n, ca);
    peso_rqvae_encode(b, x, n, cb);
    peso_rqvae_encode(c, x, n, cc);
    cr_assert(memcmp(ca, cb, n * 3 * sizeof *ca) == 0);
    size_t differ = 0;
    for (size_t i = 0; i < n * 3; i++)
        differ += ca[i] != cc[i];
    cr_assert(differ > n / 4, "only %zu of %zu codes differ with another seed", differ, n * 3);
    free(ca);
    free(cb);
    free(cc);
    peso_rqvae_free(a);
    peso_rqvae_free(b);
    peso_rqvae_free(c);
    free(x);
}

/* Eight well-separated Gaussian clusters, eight codes: each cluster keeps
 * one level-1 code, and no two clusters share it. */
Test(rqvae, first_level_separates_clusters)
{
    peso_rqvae_opts o = cluster_opts();
    size_t n = 400;
    int *label = malloc(n * sizeof *label);
    float *x = test_clusters(n, o.in_dim, 8, 3.0, 0.3, 5, label);
    peso_rqvae *m = fit_or_die(x, n, &o);
    int32_t *codes = malloc(n * 3 * sizeof *codes);
    peso_rqvae_encode(m, x, n, codes);
    int cnt[8][8] = {{0}}, major[8], owner[8];
    for (size_t i = 0; i < n; i++)
        cnt[label[i]][codes[i * 3]]++;
    for (int c = 0; c < 8; c++)
        owner[c] = -1;
    for (int c = 0; c < 8; c++) {
        major[c] = 0;
        for (int k = 1; k < 8; k++)
            if (cnt[c][k] > cnt[c][major[c]])
                major[c] = k;
        cr_assert(cnt[c][major[c]] >= 0.9 * (n / 8), "cluster %d: majority code %d holds %d of %zu", c,
                  major[c], cnt[c][major[c]], n / 8);
        cr_assert_eq(owner[major[c]], -1, "clusters %d and %d share level-1 code %d", owner[major[c]], c,
                     major[c]);
        owner[major[c]] = c;
    }
    peso_rqvae_report rep;
    peso_rqvae_evaluate(m, x, n, &rep);
    fprintf(stderr, "clusters: recon %.4f, perplexity %.2f %.2f %.2f, used %d %d %d\n", rep.recon_mse,
            rep.perplexity[0], rep.perplexity[1], rep.perplexity[2], rep.used_codes[0], rep.used_codes[1],
            rep.used_codes[2]);
    cr_assert(rep.perplexity[0] > 7.5);
    free(codes);
    peso_rqvae_free(m);
    free(x);
    free(label);
}

/* The report against counts taken from the codes here; the reconstruction
 * error well under the data's spread (the model learned). */
Test(rqvae, evaluate_reports_usage_and_error)
{
    peso_rqvae_opts o = cluster_opts();
    o.codebook = 16;
    size_t n = 240;
    float *x = test_clusters(n, o.in_dim, 8, 3.0, 0.3, 6, NULL);
    peso_rqvae *m = fit_or_die(x, n, &o);
    int32_t *codes = malloc(n * 3 * sizeof *codes);
    peso_rqvae_encode(m, x, n, codes);
    peso_rqvae_report rep;
    peso_rqvae_evaluate(m, x, n, &rep);
    for (int l = 0; l < 3; l++) {
        int cnt[16] = {0}, used = 0;
        for (size_t i = 0; i < n; i++)
            cnt[codes[i * 3 + l]]++;
        double h = 0;
        for (int k = 0; k < 16; k++) {
            used += cnt[k] > 0;
            if (cnt[k])
                h -= (double)cnt[k] / n * log((double)cnt[k] / n);
        }
        cr_assert_eq(rep.used_codes[l], used);
        cr_assert_float_eq(rep.perplexity[l], exp(h), 1e-9);
    }
    double mean[32] = {0}, var = 0;
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < 32; j++)
            mean[j] += x[i * 32 + j] / (double)n;
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < 32; j++)
            var += (x[i * 32 + j] - mean[j]) * (x[i * 32 + j] - mean[j]) / (double)n;
    cr_assert(rep.recon_mse < 0.1 * var, "recon %g, total variance %g", rep.recon_mse, var);
    free(codes);
    peso_rqvae_free(m);
    free(x);
}

/* Encoding is a pure function of the frozen model and the item: one item
 * alone, unseen items, fitted items, before and after other encodes and
 * another fit, all give the same codes; the weights never move. */
Test(rqvae, frozen_encoding)
{
    peso_rqvae_opts o = cluster_opts();
    size_t n = 400, nfit = 300;
    float *x = test_clusters(n, o.in_dim, 8, 3.0, 0.3, 7, NULL);
    peso_rqvae *m = fit_or_die(x, nfit, &o);
    size_t np = peso_rqvae_n_params(m);
    float *before = malloc(np * sizeof *before);
    memcpy(before, peso_rqvae_params(m), np * sizeof *before);
    int32_t *all = malloc(n * 3 * sizeof *all), *part = malloc(n * 3 * sizeof *part);
    peso_rqvae_encode(m, x + 350 * 32, 1, part);
    int32_t unseen_first[3];
    memcpy(unseen_first, part, sizeof unseen_first);
    peso_rqvae_encode(m, x, n, all);
    peso_rqvae_encode(m, x + nfit * 32, n - nfit, part);
    cr_assert(memcmp(part, all + nfit * 3, (n - nfit) * 3 * sizeof *part) == 0);
    peso_rqvae_encode(m, x, nfit, part);
    cr_assert(memcmp(part, all, nfit * 3 * sizeof *part) == 0);
    for (size_t i = 0; i < n; i += 37) {
        int32_t one[3];
        peso_rqvae_encode(m, x + i * 32, 1, one);
        cr_assert(memcmp(one, all + i * 3, sizeof one) == 0, "item %zu", i);
    }
    peso_rqvae *more = fit_or_die(x, n, &o);
    peso_rqvae_free(more);
    int32_t again[3];
    peso_rqvae_encode(m, x + 350 * 32, 1, again);
    cr_assert(memcmp(again, unseen_first, sizeof again) == 0);
    cr_assert(memcmp(again, all + 350 * 3, sizeof again) == 0);
    cr_assert(memcmp(before, peso_rqvae_params(m), np * sizeof *before) == 0);
    free(all);
    free(part);
    free(before);
    peso_rqvae_free(m);
    free(x);
}

Test(rqvae, fewer_distinct_items_than_codes)
{
    peso_rqvae_opts o = small_opts();
    o.codebook = 16;
    size_t n = 40;
    float *base = test_clusters(5, o.in_dim, 5, 2.0, 0.0, 8, NULL);
    float *x = malloc(n * o.in_dim * sizeof *x);
    for (size_t i = 0; i < n; i++)
        memcpy(x + i * o.in_dim, base + (i % 5) * o.in_dim, o.in_dim * sizeof *x);
    peso_rqvae *m = fit_or_die(x, n, &o);
    int32_t codes[40 * 2];
    peso_rqvae_encode(m, x, n, codes);
    for (size_t i = 0; i < n; i++)
        for (int l = 0; l < 2; l++) {
            cr_assert(codes[i * 2 + l] >= 0 && codes[i * 2 + l] < 16);
            cr_assert_eq(codes[i * 2 + l], codes[(i % 5) * 2 + l]);
        }
    peso_rqvae_report rep;
    peso_rqvae_evaluate(m, x, n, &rep);
    cr_assert(rep.used_codes[0] >= 1 && rep.used_codes[0] <= 5);
    cr_assert(isfinite(rep.recon_mse));
    peso_rqvae_free(m);
    /* One item, and items without features (all zero). */
    m = fit_or_die(base, 1, &o);
    peso_rqvae_free(m);
    float zero[3 * 12] = {0};
    m = fit_or_die(zero, 3, &o);
    peso_rqvae_encode(m, zero, 3, codes);
    cr_assert_eq(codes[0], codes[2]);
    cr_assert_eq(codes[1], codes[5]);
    peso_rqvae_free(m);
    free(x);
    free(base);
}

static void expect_fit_error(const peso_rqvae_opts *o, const float *x, size_t n, const char *what)
{
    peso_rqvae *m = (peso_rqvae *)1;
    peso_err err = {{0}};
    cr_assert_eq(peso_rqvae_fit(&m, x, n, o, 0, &err), -1);
    cr_assert_null(m);
    cr_assert(strstr(err.msg, what), "message '%s' lacks '%s'", err.msg, what);
}

Test(rqvae, bad_options_and_inputs_are_errors)
{
    float x[2 * 12] = {0};
    peso_rqvae_opts o = small_opts();
    o.levels = 9;
    expect_fit_error(&o, x, 2, "levels = 9");
    o = small_opts();
    o.codebook = 0;
    expect_fit_error(&o, x, 2, "codebook = 0");
    o = small_opts();
    o.hidden[1] = 0;
    expect_fit_error(&o, x, 2, "hidden[1] = 0");
    o = small_opts();
    o.lr = 0;
    expect_fit_error(&o, x, 2, "lr = 0");
    o = small_opts();
    expect_fit_error(&o, x, 0, "no training items");
    x[12 + 5] = NAN;
    expect_fit_error(&o, x, 2, "item 1, feature 5");
}
