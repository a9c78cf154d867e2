/* The proximal terms of the continual methods as the trainer calls them
 * (prox() after a step's micro-batches, its gradient added into
 * m->grads), at a stage t = 2 set up by begin() (method_stage.h):
 *   - peso, l2, ortho: inherit v_{t-1}; the value at v_t = v_{t-1} (0,
 *     but ortho's ||A A^T||_F^2) and at a perturbed v_t against a double
 *     computation written here from DESIGN.md "Continual methods" (KL
 *     over groups: module, matrix, rank; L2; ortho), its gradient against
 *     central differences of that computation (none on the new rows),
 *     and peso's shares on 2 train ranks summing to the one-rank value
 *     and gradient (DESIGN.md "Parallel design");
 *   - output-kl: inherits, installs the model hook and removes it with
 *     the stage, the term 0 at v_t = v_{t-1} and lambda over the step's
 *     tokens. */
#include <criterion/criterion.h>

#include "method_stage.h"

/* ---- the proximal terms, against a computation written here ---- */

typedef enum term { KL_MODULE, KL_MATRIX, KL_RANK, L2, ORTHO } term;

/* KL(softmax(v[idx]) || softmax(prev[idx])) by log-sum-exp. */
static double kl_at(const size_t *idx, size_t n, const double *v, const double *prev)
{
    double mv = -INFINITY, mp = -INFINITY, zv = 0, zp = 0, kl = 0;
    for (size_t i = 0; i < n; i++) {
        mv = fmax(mv, v[idx[i]]);
        mp = fmax(mp, prev[idx[i]]);
    }
    for (size_t i = 0; i < n; i++) {
        zv += exp(v[idx[i]] - mv);
        zp += exp(prev[idx[i]] - mp);
    }
    for (size_t i = 0; i < n; i++) {
        double lp = v[idx[i]] - mv - log(zv), lq = prev[idx[i]] - mp - log(zp);
        kl += exp(lp) * (lp - lq);
    }
    return kl;
}

/* The term's value (lambda included) in double, from DESIGN.md:
 * KL over groups (a module's A and B; A, B apart; row k of A with column
 * k of B), lambda/2 ||v - prev||^2 over A and B, lambda sum ||A A_prev^T||_F^2. */
static double ref_term(const peso_lora *l, term how, const double *v, const double *prev, double lambda)
{
    size_t r = (size_t)l->conf.rank, cap = 0;
    for (int mi = 0; mi < l->n_modules; mi++)
        cap += r * (size_t)(l->mods[mi].in + l->mods[mi].out);
    size_t *idx = malloc(cap * sizeof *idx);
    double sum = 0;
    for (int mi = 0; mi < l->n_modules; mi++) {
        const peso_lora_module *md = &l->mods[mi];
        size_t in = (size_t)md->in, out = (size_t)md->out, na = r * in, nb = out * r, n = 0;
        switch (how) {
        case KL_MODULE:
            for (size_t i = 0; i < na; i++)
                idx[n++] = md->a_off + i;
            for (size_t i = 0; i < nb; i++)
                idx[n++] = md->b_off + i;
            sum += kl_at(idx, n, v, prev);
            break;
        case KL_MATRIX:
            for (size_t i = 0; i < na; i++)
                idx[i] = md->a_off + i;
            sum += kl_at(idx, na, v, prev);
            for (size_t i = 0; i < nb; i++)
                idx[i] = md->b_off + i;
            sum += kl_at(idx, nb, v, prev);
            break;
        case KL_RANK:
            for (size_t k = 0; k < r; k++) {
                n = 0;
                for (size_t c = 0; c < in; c++)
                    idx[n++] = md->a_off + k * in + c;
                for (size_t o = 0; o < out; o++)
                    idx[n++] = md->b_off + o * r + k;
                sum += kl_at(idx, n, v, prev);
            }
            break;
        case L2:
            for (size_t i = 0; i < na; i++)
                sum +=
                    0.5 * (v[md->a_off + i] - prev[md->a_off + i]) * (v[md->a_off + i] - prev[md->a_off + i]);
            for (size_t i = 0; i < nb; i++)
                sum +=
                    0.5 * (v[md->b_off + i] - prev[md->b_off + i]) * (v[md->b_off + i] - prev[md->b_off + i]);
            break;
        case ORTHO:
            for (size_t i = 0; i < r; i++)
                for (size_t j = 0; j < r; j++) {
                    double d = 0;
                    for (size_t c = 0; c < in; c++)
                        d += v[md->a_off + i * in + c] * prev[md->a_off + j * in + c];
                    sum += d * d;
                }
            break;
        }
    }
    free(idx);
    return lambda * sum;
}

static double *to_double(const float *x, size_t n)
{
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

/* The method's prox at model parameters v: value, and the gradient it
 * added into zeroed m->grads (host copy into grad). */
static double method_prox(mfx *f, peso_method_stage *ms, const float *v, float *grad)
{
    peso_err err;
    double value = NAN;
    cr_assert_eq(peso_llama_set_params(f->s.m, v, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_zero_grads(f->s.m, &err), 0, "%s", err.msg);
    cr_assert_eq(ms->meth->prox(ms, &value, &err), 0, "%s prox: %s", ms->meth->name, err.msg);
    cr_assert_eq(peso_llama_get_grads(f->s.m, grad, &err), 0, "%s", err.msg);
    return value;
}

/* v_{t-1} + N(0, 0.3^2) on every entry of the flat (new rows included,
 * which no parameter-space term may read). */
static float *perturbed(const mfx *f, uint64_t seed)
{
    peso_rng r;
    peso_rng_seed(&r, seed, 43);
    float *v = copy_flat(f->s.m, f->v1);
    for (size_t i = 0; i < f->s.m->flat.numel; i++)
        v[i] += (float)(0.3 * peso_rng_normal(&r));
    return v;
}

/* Coordinates for the finite differences: A and B entries of a few
 * modules, and a new embedding row (no term's coordinate). */
static size_t probes(const peso_llama *m, size_t *out)
{
    size_t n = 0;
    const int mods[] = {0, 4, m->lora.n_modules - 1};
    for (size_t i = 0; i < 3; i++) {
        const peso_lora_module *md = &m->lora.mods[mods[i]];
        out[n++] = md->a_off + 5;
        out[n++] = md->a_off + (size_t)m->lora.conf.rank * (size_t)md->in - 2;
        out[n++] = md->b_off + 3;
    }
    out[n++] = m->embed_new_off + 7;
    return n;
}

static void expect_term(const char *name, const char *group, term how, double lambda)
{
    mfx f;
    const peso_method *meth = peso_method_find(name);
    cr_assert(meth);
    mfx_open(&f, meth, "all", group, lambda, 71);
    peso_method_stage ms;
    stage_init(&f, &ms, meth, 2, 0, 1);
    float *params = stage_begin(&f, &ms, NULL, f.v1);
    const peso_llama *m = f.s.m;
    size_t n = m->flat.numel;
    cr_expect(memcmp(params, f.v1, n * sizeof *params) == 0, "%s: the stage does not start from v_{t-1}",
              name);
    double *prev = to_double(f.v1, n);
    float *grad = malloc(n * sizeof *grad);

    /* at v_t = v_{t-1} */
    double at_prev = method_prox(&f, &ms, f.v1, grad),
           want_prev = ref_term(&m->lora, how, prev, prev, lambda);
    if (how == ORTHO)
        cr_expect(fabs(at_prev - want_prev) <= 1e-9 * want_prev, "ortho at v_{t-1}: %.12g, expected %.12g",
                  at_prev, want_prev);
    else
        cr_expect(at_prev == 0.0, "%s %s at v_t = v_{t-1}: %g, expected 0", name, group, at_prev);

    /* at a perturbed v_t */
    float *vt = perturbed(&f, 72);
    double *v = to_double(vt, n);
    double got = method_prox(&f, &ms, vt, grad), want = ref_term(&m->lora, how, v, prev, lambda);
    cr_expect(want > 1e-3, "%s %s: the reference term is %g; the test needs a larger perturbation", name,
              group, want);
    cr_expect(fabs(got - want) <= 1e-9 * fabs(want), "%s %s: proximal value %.12g, reference %.12g", name,
              group, got, want);
    size_t at[16], np = probes(m, at);
    for (size_t k = 0; k < np; k++) {
        size_t j = at[k];
        double h = 1e-4, keep = v[j];
        v[j] = keep + h;
        double up = ref_term(&m->lora, how, v, prev, lambda);
        v[j] = keep - h;
        double down = ref_term(&m->lora, how, v, prev, lambda);
        v[j] = keep;
        double fd = (up - down) / (2 * h);
        cr_expect(fabs(grad[j] - fd) <= 1e-4 * fabs(fd) + 1e-7,
                  "%s %s: gradient at %zu is %.9g, differences %.9g", name, group, j, (double)grad[j], fd);
    }
    free(vt);
    free(v);
    free(prev);
    free(grad);
    free(params);
    stage_end(&f, &ms);
    mfx_close(&f);
}

Test(method_prox, peso_kl_over_modules)
{
    expect_term("peso", "module", KL_MODULE, 2.0);
}

Test(method_prox, peso_kl_over_matrices)
{
    expect_term("peso", "matrix", KL_MATRIX, 0.7);
}

Test(method_prox, peso_kl_over_ranks)
{
    expect_term("peso", "rank", KL_RANK, 3.0);
}

Test(method_prox, l2_term)
{
    expect_term("l2", "module", L2, 0.7);
}

Test(method_prox, ortho_term)
{
    expect_term("ortho", "module", ORTHO, 0.7);
}

/* On 2 train ranks each adds its share of the groups: the values sum to
 * the one-rank value, the gradients to its gradient. */
Test(method_prox, peso_shares_sum_to_the_whole)
{
    for (int g = 0; g < 3; g++) {
        mfx f;
        const peso_method *meth = peso_method_find("peso");
        mfx_open(&f, meth, "all", groups[g], 2.0, 81);
        size_t n = f.s.m->flat.numel;
        float *vt = perturbed(&f, 82), *whole = malloc(n * sizeof *whole), *part = malloc(n * sizeof *part);
        float *sum = calloc(n, sizeof *sum);
        peso_method_stage one, two[2];
        stage_init(&f, &one, meth, 2, 0, 1);
        free(stage_begin(&f, &one, NULL, f.v1));
        double v_whole = method_prox(&f, &one, vt, whole), v_sum = 0;
        for (int r = 0; r < 2; r++) {
            stage_init(&f, &two[r], meth, 2, r, 2);
            free(stage_begin(&f, &two[r], NULL, f.v1));
            double v = method_prox(&f, &two[r], vt, part);
            cr_expect(v > 0, "group %s: rank %d of 2 has no share", groups[g], r);
            v_sum += v;
            for (size_t i = 0; i < n; i++)
                sum[i] += part[i];
        }
        cr_expect(fabs(v_sum - v_whole) <= 1e-12 * v_whole, "group %s: shares sum to %.15g, one rank %.15g",
                  groups[g], v_sum, v_whole);
        cr_expect(memcmp(sum, whole, n * sizeof *sum) == 0,
                  "group %s: the shares' gradients do not sum to one "
                  "rank's",
                  groups[g]);
        peso_method_stage_free(&one);
        peso_method_stage_free(&two[0]);
        peso_method_stage_free(&two[1]);
        free(vt);
        free(whole);
        free(part);
        free(sum);
        mfx_close(&f);
    }
}

/* ---- output-kl ---- */

/* The term after one training pass over stage 2's first batch, with
 * step(tokens) before it. */
static double okl_pass(mfx *f, peso_method_stage *ms, const float *v, long tokens)
{
    peso_err err;
    tbatch b;
    stage_batch(f, 2, 0, &b);
    peso_llama_batch bv = tbatch_view(&b);
    peso_llama_loss L;
    double value = NAN;
    cr_assert_eq(peso_llama_set_params(f->s.m, v, &err), 0, "%s", err.msg);
    ms->meth->step(ms, tokens);
    cr_assert_eq(peso_llama_zero_grads(f->s.m, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_forward_backward(f->s.m, &bv, 0.01f, &L, &err), 0, "%s", err.msg);
    cr_assert_eq(ms->meth->prox(ms, &value, &err), 0, "%s", err.msg);
    return value;
}

Test(method_prox, output_kl_hook)
{
    mfx f;
    const peso_method *meth = peso_method_find("output-kl");
    cr_assert(meth && meth->step && meth->prox);
    mfx_open(&f, meth, "all", "module", 1.5, 91);
    peso_method_stage ms;
    stage_init(&f, &ms, meth, 2, 0, 1);
    float *params = stage_begin(&f, &ms, NULL, f.v1);
    cr_expect(memcmp(params, f.v1, f.s.m->flat.numel * sizeof *params) == 0,
              "output-kl does not inherit v_{t-1}");
    cr_expect(f.s.m->hook.forward != NULL, "output-kl installed no hook");
    double none = NAN;
    peso_err err;
    cr_assert_eq(meth->prox(&ms, &none, &err), 0, "%s", err.msg);
    cr_expect(none == 0.0, "the term before any pass: %g", none);
    double same = okl_pass(&f, &ms, f.v1, 20);
    cr_expect(fabs(same) < 1e-12, "the term at v_t = v_{t-1}: %g", same);
    float *vt = perturbed(&f, 92);
    double v20 = okl_pass(&f, &ms, vt, 20), v50 = okl_pass(&f, &ms, vt, 50);
    cr_expect(v20 > 0, "the term at a perturbed v_t: %g", v20);
    /* lambda / tokens: the term is a mean over the step's tokens */
    cr_expect(fabs(v20 * 20 - v50 * 50) <= 1e-9 * v20 * 20, "tokens 20: %.12g, tokens 50: %.12g", v20, v50);
    stage_end(&f, &ms);
    cr_expect(f.s.m->hook.forward == NULL && f.s.m->hook.backward == NULL, "the hook outlived the stage");
    free(vt);
    free(params);
    mfx_close(&f);
}
