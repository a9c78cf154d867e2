/* Proximal terms of the continual methods (the backend entries prox_kl,
 * prox_l2, prox_ortho, and output KL): values against naive double
 * computations written here, gradients against central finite
 * differences, the closed forms of the paper (Propositions 3 and 5), group
 * layouts counted by hand, and sharding over 1..4 ranks. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/bt.h"
#include "common/rng.h"
#include "lora/lora.h"
#include "method/prox.h"

/* The three parameter-space terms are backend entries (backend.h,
 * "proximal terms"); they are reached through the table of bt_backend(),
 * so that PESO_TEST_BACKEND=<name> runs these tests against any backend.
 * The groups, the sharding and the output-KL math are the method side's,
 * called directly. */
static peso_backend *be;

static void open_backend(void)
{
    be = bt_backend();
}

static void close_backend(void)
{
    peso_backend_destroy(be);
    be = NULL;
}

TestSuite(prox, .init = open_backend, .fini = close_backend);

enum term_op { OP_KL, OP_L2, OP_ORTHO };

/* One call of a term on device copies of v, v_prev and grad (n floats
 * each); grad is copied back. */
static int dev_term(enum term_op op, const peso_prox_groups *gs, int rank, int lo, int hi, const float *v,
                    const float *vp, size_t n, double lambda, float *grad, double *value, peso_err *err)
{
    size_t bytes = n * sizeof(float);
    float *dv = bt_dev(be, v, bytes), *dvp = bt_dev(be, vp, bytes),
          *dg = grad ? bt_dev(be, grad, bytes) : NULL;
    int rc = op == OP_KL   ? be->prox_kl(be, gs, lo, hi, dv, dvp, lambda, dg, value, err)
             : op == OP_L2 ? be->prox_l2(be, gs, lo, hi, dv, dvp, lambda, dg, value, err)
                           : be->prox_ortho(be, gs, rank, lo, hi, dv, dvp, lambda, dg, value, err);
    if (grad)
        bt_get(be, grad, dg, bytes);
    be->free(be, dv);
    be->free(be, dvp);
    if (dg)
        be->free(be, dg);
    return rc;
}

static int dev_kl(const peso_prox_groups *gs, int lo, int hi, const float *v, const float *vp, size_t n,
                  double lambda, float *grad, double *value, peso_err *err)
{
    return dev_term(OP_KL, gs, 0, lo, hi, v, vp, n, lambda, grad, value, err);
}

/* l2 and ortho over the module groups of l, as the l2 and ortho methods
 * call them. */
static int dev_modules(enum term_op op, const peso_lora *l, int lo, int hi, const float *v, const float *vp,
                       size_t n, double lambda, float *grad, double *value, peso_err *err)
{
    peso_prox_groups gs;
    cr_assert_eq(peso_prox_groups_build(&gs, l, PESO_PROX_MODULE, err), 0, "%s", err->msg);
    int rc = dev_term(op, &gs, l->conf.rank, lo, hi, v, vp, n, lambda, grad, value, err);
    peso_prox_groups_free(&gs);
    return rc;
}

static int dev_l2(const peso_lora *l, int lo, int hi, const float *v, const float *vp, size_t n,
                  double lambda, float *grad, double *value, peso_err *err)
{
    return dev_modules(OP_L2, l, lo, hi, v, vp, n, lambda, grad, value, err);
}

static int dev_ortho(const peso_lora *l, int lo, int hi, const float *v, const float *vp, size_t n,
                     double lambda, float *grad, double *value, peso_err *err)
{
    return dev_modules(OP_ORTHO, l, lo, hi, v, vp, n, lambda, grad, value, err);
}

/* A tiny Llama: q 8 -> 8, v 8 -> 4, down 12 -> 8, two layers, rank 2. */
static peso_llama_config tiny_model(void)
{
    peso_llama_config c;
    peso_llama_config_defaults(&c);
    c.hidden_size = 8;
    c.intermediate_size = 12;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.head_dim = 4;
    return c;
}

/* Hidden 128, three layers: with all seven projections at rank 8 the
 * terms are over the threading threshold of cpu_prox.c (49152 entries), so
 * the OpenMP path runs. */
static peso_llama_config wide_model(void)
{
    peso_llama_config c = tiny_model();
    c.hidden_size = 128;
    c.intermediate_size = 256;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 32;
    c.num_hidden_layers = 3;
    return c;
}

typedef struct setup {
    peso_flat f;
    peso_lora l;
    float *v, *vp; /* v_t, v_{t-1} */
} setup;

/* Multiples of 2^-10 in [-amp, amp]: shifts by small integers are exact. */
static void fill(float *x, size_t n, peso_rng *rng, double amp)
{
    for (size_t i = 0; i < n; i++) {
        long k = (long)peso_rng_below(rng, (uint64_t)(2 * 1024 * amp) + 1) - (long)(1024 * amp);
        x[i] = (float)((double)k / 1024.0);
    }
}

static void setup_init(setup *s, const peso_llama_config *mc, int rank, unsigned targets, uint64_t seed)
{
    peso_lora_conf lc = {rank, 2.0 * rank, targets};
    peso_err err;
    peso_flat_init(&s->f);
    cr_assert_eq(peso_lora_layout(&s->l, &lc, mc, &s->f, &err), 0, "%s", err.msg);
    s->v = calloc(s->f.numel, sizeof *s->v);
    s->vp = calloc(s->f.numel, sizeof *s->vp);
    peso_rng rng;
    peso_rng_seed(&rng, seed, 7);
    for (int i = 0; i < s->l.n_modules; i++) {
        const peso_lora_module *m = &s->l.mods[i];
        size_t na = (size_t)rank * m->in, nb = (size_t)m->out * rank;
        fill(s->vp + m->a_off, na, &rng, 1.0);
        fill(s->vp + m->b_off, nb, &rng, 1.0);
        for (size_t j = 0; j < na; j++)
            s->v[m->a_off + j] = s->vp[m->a_off + j] + (float)(0.25 * peso_rng_normal(&rng));
        for (size_t j = 0; j < nb; j++)
            s->v[m->b_off + j] = s->vp[m->b_off + j] + (float)(0.25 * peso_rng_normal(&rng));
    }
}

static void tiny_setup(setup *s, uint64_t seed)
{
    peso_llama_config mc = tiny_model();
    setup_init(s, &mc, 2, (1u << PESO_LORA_Q) | (1u << PESO_LORA_V) | (1u << PESO_LORA_DOWN), seed);
}

static void setup_free(setup *s)
{
    free(s->v);
    free(s->vp);
    peso_lora_free(&s->l);
    peso_flat_free(&s->f);
}

/* ---- the test's own reading of the groupings (DESIGN.md) ---- */

typedef struct ref_group {
    size_t n;
    size_t *idx; /* flat indices */
} ref_group;

/* Groups in module order: module = A then B; matrix = A, B; rank k = row k
 * of A, then column k of B (B is [out, r] row-major). */
static ref_group *ref_groups(const peso_lora *l, peso_prox_grouping how, int *n_out)
{
    int r = l->conf.rank, per = how == PESO_PROX_MODULE ? 1 : how == PESO_PROX_MATRIX ? 2 : r;
    ref_group *g = calloc((size_t)l->n_modules * per, sizeof *g);
    int n = 0;
    for (int mi = 0; mi < l->n_modules; mi++) {
        const peso_lora_module *m = &l->mods[mi];
        size_t na = (size_t)r * m->in, nb = (size_t)m->out * r;
        if (how == PESO_PROX_RANK) {
            for (int k = 0; k < r; k++) {
                ref_group *q = &g[n++];
                q->idx = malloc((m->in + m->out) * sizeof *q->idx);
                for (int c = 0; c < m->in; c++)
                    q->idx[q->n++] = m->a_off + (size_t)k * m->in + c;
                for (int o = 0; o < m->out; o++)
                    q->idx[q->n++] = m->b_off + (size_t)o * r + k;
            }
            continue;
        }
        ref_group *q = &g[n++];
        q->idx = malloc((na + nb) * sizeof *q->idx);
        for (size_t j = 0; j < na; j++)
            q->idx[q->n++] = m->a_off + j;
        if (how == PESO_PROX_MATRIX)
            q = &g[n++], q->idx = malloc(nb * sizeof *q->idx);
        for (size_t j = 0; j < nb; j++)
            q->idx[q->n++] = m->b_off + j;
    }
    *n_out = n;
    return g;
}

static void ref_groups_free(ref_group *g, int n)
{
    for (int i = 0; i < n; i++)
        free(g[i].idx);
    free(g);
}

static double naive_group_kl(const ref_group *g, const float *v, const float *vp)
{
    double *x = malloc(g->n * sizeof *x), *y = malloc(g->n * sizeof *y);
    for (size_t i = 0; i < g->n; i++) {
        x[i] = v[g->idx[i]];
        y[i] = vp[g->idx[i]];
    }
    double kl = bt_naive_kl(x, y, g->n);
    free(x);
    free(y);
    return kl;
}

/* ---- term wrappers with one signature, for FD and sharding ---- */

typedef struct term {
    const char *name;
    const setup *s;
    const peso_prox_groups *gs; /* kl; NULL for l2 and ortho (modules) */
    int (*fn)(const peso_lora *, int, int, const float *, const float *, size_t, double, float *, double *,
              peso_err *);
} term;

static double term_eval(const term *t, int lo, int hi, const float *v, double lambda, float *grad)
{
    peso_err err;
    double val = NAN;
    int rc = t->gs ? dev_kl(t->gs, lo, hi, v, t->s->vp, t->s->f.numel, lambda, grad, &val, &err)
                   : t->fn(&t->s->l, lo, hi, v, t->s->vp, t->s->f.numel, lambda, grad, &val, &err);
    cr_assert_eq(rc, 0, "%s: %s", t->name, err.msg);
    return val;
}

static int term_groups(const term *t)
{
    return t->gs ? t->gs->n : t->s->l.n_modules;
}

/* Central differences at every LoRA entry with the float steps actually
 * taken, against the gradient the term added to a zero buffer. */
static void check_fd(const term *t, double lambda, double h, double tol)
{
    const setup *s = t->s;
    size_t n = s->f.numel;
    float *g = calloc(n, sizeof *g), *v = malloc(n * sizeof *v);
    memcpy(v, s->v, n * sizeof *v);
    term_eval(t, 0, term_groups(t), v, lambda, g);
    for (int mi = 0; mi < s->l.n_modules; mi++) {
        const peso_lora_module *m = &s->l.mods[mi];
        size_t off[2] = {m->a_off, m->b_off},
               cnt[2] = {(size_t)s->l.conf.rank * m->in, (size_t)m->out * s->l.conf.rank};
        for (int k = 0; k < 2; k++)
            for (size_t j = off[k]; j < off[k] + cnt[k]; j++) {
                float x = v[j];
                float xp = (float)(x + h), xm = (float)(x - h);
                v[j] = xp;
                double fp = term_eval(t, 0, term_groups(t), v, lambda, NULL);
                v[j] = xm;
                double fm = term_eval(t, 0, term_groups(t), v, lambda, NULL);
                v[j] = x;
                double fd = (fp - fm) / ((double)xp - (double)xm);
                cr_assert(fabs(g[j] - fd) <= tol * (1.0 + fabs(fd)), "%s: d/dv[%zu] = %.9g, FD %.9g", t->name,
                          j, (double)g[j], fd);
            }
    }
    free(g);
    free(v);
}

static double rel(double a, double b)
{
    return fabs(a - b) / fmax(fabs(b), 1e-300);
}

/* ---- groupings ---- */

Test(prox, grouping_names)
{
    peso_prox_grouping how;
    peso_err err;
    const char *names[3] = {"module", "matrix", "rank"};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(peso_prox_grouping_parse(names[i], &how, &err), 0);
        cr_assert_eq((int)how, i);
        cr_assert_str_eq(peso_prox_grouping_name(how), names[i]);
    }
    cr_assert_eq(peso_prox_grouping_parse("layer", &how, &err), -1);
    cr_assert(strstr(err.msg, "'layer'") && strstr(err.msg, "module, matrix or rank"), "%s", err.msg);
}

/* Modules in order: L0 q (in 8, out 8), L0 v (8, 4), L0 down (12, 8), and
 * the same for L1; rank 2. */
Test(prox, group_layouts_counted_by_hand)
{
    setup s;
    tiny_setup(&s, 1);
    peso_err err;
    peso_prox_groups gs;
    size_t want_module[6] = {32, 24, 40, 32, 24, 40};
    size_t want_matrix[12] = {16, 16, 16, 8, 24, 16, 16, 16, 16, 8, 24, 16};
    size_t want_rank[12] = {16, 16, 12, 12, 20, 20, 16, 16, 12, 12, 20, 20};
    const size_t *want[3] = {want_module, want_matrix, want_rank};
    int want_n[3] = {6, 12, 12};
    int *hits = malloc(s.f.numel * sizeof *hits);
    for (int how = 0; how < 3; how++) {
        cr_assert_eq(peso_prox_groups_build(&gs, &s.l, (peso_prox_grouping)how, &err), 0, "%s", err.msg);
        cr_assert_eq(gs.n, want_n[how], "grouping %d", how);
        memset(hits, 0, s.f.numel * sizeof *hits);
        for (int i = 0; i < gs.n; i++) {
            const peso_prox_group *g = &gs.g[i];
            cr_assert_eq(g->numel, want[how][i], "grouping %d group %d", how, i);
            cr_assert_eq(g->module, i / (how == 0 ? 1 : 2));
            size_t n = 0;
            for (int k = 0; k < g->n_seg; k++) {
                n += g->seg[k].n;
                for (size_t j = 0; j < g->seg[k].n; j++)
                    hits[g->seg[k].off + j * g->seg[k].stride]++;
            }
            cr_assert_eq(n, g->numel);
        }
        /* every A and B entry in exactly one group, the alignment gaps in none */
        size_t covered = 0;
        for (size_t j = 0; j < s.f.numel; j++) {
            cr_assert(hits[j] <= 1, "entry %zu in %d groups", j, hits[j]);
            covered += (size_t)hits[j];
        }
        cr_assert_eq(covered, (size_t)2 * (32 + 24 + 40));
        peso_prox_groups_free(&gs);
    }
    /* rank 1 of L0 v: row 1 of A [2, 8], column 1 of B [4, 2] */
    cr_assert_eq(peso_prox_groups_build(&gs, &s.l, PESO_PROX_RANK, &err), 0);
    const peso_lora_module *m = peso_lora_find(&s.l, 0, PESO_LORA_V);
    const peso_prox_group *g = &gs.g[3];
    cr_assert_eq(g->n_seg, 2);
    cr_assert_eq(g->seg[0].off, m->a_off + 8);
    cr_assert_eq(g->seg[0].n, 8);
    cr_assert_eq(g->seg[0].stride, 1);
    cr_assert_eq(g->seg[1].off, m->b_off + 1);
    cr_assert_eq(g->seg[1].n, 4);
    cr_assert_eq(g->seg[1].stride, 2);
    peso_prox_groups_free(&gs);
    free(hits);
    setup_free(&s);
}

/* ---- softmax-KL ---- */

static void check_kl_naive(const setup *s, double tol)
{
    peso_err err;
    double lambda = 1.7;
    for (int how = 0; how < 3; how++) {
        peso_prox_groups gs;
        cr_assert_eq(peso_prox_groups_build(&gs, &s->l, (peso_prox_grouping)how, &err), 0);
        int nr;
        ref_group *ref = ref_groups(&s->l, (peso_prox_grouping)how, &nr);
        cr_assert_eq(nr, gs.n);
        double total = 0;
        for (int i = 0; i < gs.n; i++) {
            double want = naive_group_kl(&ref[i], s->v, s->vp), got;
            total += want;
            cr_assert_eq(dev_kl(&gs, i, i + 1, s->v, s->vp, s->f.numel, lambda, NULL, &got, &err), 0);
            cr_assert(rel(got, lambda * want) < tol, "grouping %d group %d: %.15g, naive %.15g", how, i, got,
                      lambda * want);
        }
        /* the gradient as the formula p (log p - log q) - p KL, computed naively */
        float *g = calloc(s->f.numel, sizeof *g);
        double got;
        cr_assert_eq(dev_kl(&gs, 0, gs.n, s->v, s->vp, s->f.numel, lambda, g, &got, &err), 0);
        cr_assert(rel(got, lambda * total) < tol, "grouping %d: %.15g, naive %.15g", how, got,
                  lambda * total);
        for (int i = 0; i < nr; i++) {
            double zx = 0, zy = 0, kl = naive_group_kl(&ref[i], s->v, s->vp);
            for (size_t j = 0; j < ref[i].n; j++) {
                zx += exp((double)s->v[ref[i].idx[j]]);
                zy += exp((double)s->vp[ref[i].idx[j]]);
            }
            for (size_t j = 0; j < ref[i].n; j++) {
                size_t e = ref[i].idx[j];
                double p = exp((double)s->v[e]) / zx, q = exp((double)s->vp[e]) / zy;
                double want = lambda * (p * log(p / q) - p * kl);
                cr_assert(fabs(g[e] - want) <= 1e-6 * fabs(want) + 1e-12,
                          "grouping %d entry %zu: %g, want %g", how, e, (double)g[e], want);
            }
        }
        free(g);
        ref_groups_free(ref, nr);
        peso_prox_groups_free(&gs);
    }
}

Test(prox, kl_matches_naive_per_group)
{
    setup s;
    tiny_setup(&s, 2);
    check_kl_naive(&s, 1e-10);
    setup_free(&s);
}

Test(prox, kl_matches_naive_on_threaded_path)
{
    setup s;
    peso_llama_config mc = wide_model();
    setup_init(&s, &mc, 8, PESO_LORA_ALL, 3);
    check_kl_naive(&s, 1e-9);
    setup_free(&s);
}

Test(prox, kl_gradient_matches_finite_differences)
{
    setup s;
    tiny_setup(&s, 4);
    peso_err err;
    for (int how = 0; how < 3; how++) {
        peso_prox_groups gs;
        cr_assert_eq(peso_prox_groups_build(&gs, &s.l, (peso_prox_grouping)how, &err), 0);
        term t = {peso_prox_grouping_name((peso_prox_grouping)how), &s, &gs, NULL};
        check_fd(&t, 1.7, 1e-3, 1e-6);
        peso_prox_groups_free(&gs);
    }
    setup_free(&s);
}

/* Paper, Proposition 5: K(0) = 0 and grad K(0) = 0, exactly. */
Test(prox, kl_zero_at_previous_adapter)
{
    setup s;
    tiny_setup(&s, 5);
    peso_err err;
    for (int how = 0; how < 3; how++) {
        peso_prox_groups gs;
        cr_assert_eq(peso_prox_groups_build(&gs, &s.l, (peso_prox_grouping)how, &err), 0);
        float *g = calloc(s.f.numel, sizeof *g);
        double val = -1;
        cr_assert_eq(dev_kl(&gs, 0, gs.n, s.vp, s.vp, s.f.numel, 3.0, g, &val, &err), 0);
        cr_assert_eq(val, 0.0);
        for (size_t j = 0; j < s.f.numel; j++)
            cr_assert_eq(g[j], 0.0f, "entry %zu", j);
        free(g);
        peso_prox_groups_free(&gs);
    }
    setup_free(&s);
}

/* softmax(x + c) = softmax(x): adding a constant to a whole group of v_t
 * or of v_{t-1} leaves the KL unchanged, and its gradient sums to zero
 * over each group (the direction of a uniform shift is free). */
Test(prox, kl_shift_invariant_and_gradient_sums_to_zero)
{
    setup s;
    tiny_setup(&s, 6);
    peso_err err;
    for (int how = 0; how < 3; how++) {
        peso_prox_groups gs;
        cr_assert_eq(peso_prox_groups_build(&gs, &s.l, (peso_prox_grouping)how, &err), 0);
        int nr;
        ref_group *ref = ref_groups(&s.l, (peso_prox_grouping)how, &nr);
        /* v_t needs exact shifts too: round it to the 2^-10 grid */
        for (size_t j = 0; j < s.f.numel; j++)
            s.v[j] = (float)(round(s.v[j] * 1024.0) / 1024.0);
        double base, shifted;
        cr_assert_eq(dev_kl(&gs, 0, gs.n, s.v, s.vp, s.f.numel, 1.0, NULL, &base, &err), 0);
        float *v = malloc(s.f.numel * sizeof *v), *vp = malloc(s.f.numel * sizeof *vp);
        memcpy(v, s.v, s.f.numel * sizeof *v);
        memcpy(vp, s.vp, s.f.numel * sizeof *vp);
        for (int i = 0; i < nr; i += 2)
            for (size_t j = 0; j < ref[i].n; j++)
                v[ref[i].idx[j]] += 3.0f;
        for (int i = 1; i < nr; i += 3)
            for (size_t j = 0; j < ref[i].n; j++)
                vp[ref[i].idx[j]] -= 2.0f;
        cr_assert_eq(dev_kl(&gs, 0, gs.n, v, vp, s.f.numel, 1.0, NULL, &shifted, &err), 0);
        cr_assert(rel(shifted, base) < 1e-12, "grouping %d: %.17g after shifts, %.17g before", how, shifted,
                  base);
        cr_assert(base > 1e-3, "the KL under test is not trivially zero: %g", base);

        float *g = calloc(s.f.numel, sizeof *g);
        cr_assert_eq(dev_kl(&gs, 0, gs.n, s.v, s.vp, s.f.numel, 1.0, g, &base, &err), 0);
        for (int i = 0; i < nr; i++) {
            double sum = 0, mag = 0;
            for (size_t j = 0; j < ref[i].n; j++) {
                sum += g[ref[i].idx[j]];
                mag += fabs(g[ref[i].idx[j]]);
            }
            cr_assert(mag > 0 && fabs(sum) < 1e-6 * mag, "grouping %d group %d: sum %g of |g| %g", how, i,
                      sum, mag);
        }
        free(g);
        free(v);
        free(vp);
        ref_groups_free(ref, nr);
        peso_prox_groups_free(&gs);
    }
    setup_free(&s);
}

/* Paper, Propositions 3 and 5: for small delta, sum_g KL(softmax(v + d) ||
 * softmax(v)) = 0.5 sum_g d^T (diag(p) - p p^T) d + o(|d|^2), p =
 * softmax(v_{t-1}^(g)). The ratio tends to 1 linearly in the scale. */
Test(prox, kl_is_locally_the_quadratic_form)
{
    setup s;
    tiny_setup(&s, 7);
    peso_err err;
    peso_rng rng;
    peso_rng_seed(&rng, 11, 0);
    double *dir = malloc(s.f.numel * sizeof *dir);
    for (size_t j = 0; j < s.f.numel; j++)
        dir[j] = peso_rng_normal(&rng);
    for (int how = 0; how < 3; how++) {
        peso_prox_groups gs;
        cr_assert_eq(peso_prox_groups_build(&gs, &s.l, (peso_prox_grouping)how, &err), 0);
        int nr;
        ref_group *ref = ref_groups(&s.l, (peso_prox_grouping)how, &nr);
        double scales[3] = {1e-1, 1e-2, 1e-3}, dev[3];
        float *v = malloc(s.f.numel * sizeof *v);
        for (int k = 0; k < 3; k++) {
            for (size_t j = 0; j < s.f.numel; j++)
                v[j] = (float)(s.vp[j] + scales[k] * dir[j]);
            double quad = 0;
            for (int i = 0; i < nr; i++) {
                double z = 0, mu = 0, sq = 0;
                for (size_t j = 0; j < ref[i].n; j++)
                    z += exp((double)s.vp[ref[i].idx[j]]);
                for (size_t j = 0; j < ref[i].n; j++) {
                    size_t e = ref[i].idx[j];
                    double p = exp((double)s.vp[e]) / z, d = (double)v[e] - (double)s.vp[e];
                    mu += p * d;
                    sq += p * d * d;
                }
                quad += 0.5 * (sq - mu * mu); /* d^T (diag(p) - p p^T) d = sum p d^2 - (sum p d)^2 */
            }
            double kl;
            cr_assert_eq(dev_kl(&gs, 0, gs.n, v, s.vp, s.f.numel, 1.0, NULL, &kl, &err), 0);
            dev[k] = fabs(kl / quad - 1.0);
        }
        cr_assert(dev[0] < 0.5, "grouping %d: ratio off by %g at scale 0.1", how, dev[0]);
        cr_assert(dev[1] < 0.3 * dev[0] && dev[2] < 0.3 * dev[1], "grouping %d: deviations %g %g %g", how,
                  dev[0], dev[1], dev[2]);
        cr_assert(dev[2] < 1e-2, "grouping %d: ratio off by %g at scale 1e-3", how, dev[2]);
        free(v);
        ref_groups_free(ref, nr);
        peso_prox_groups_free(&gs);
    }
    free(dir);
    setup_free(&s);
}

/* Every entry of every group equal to 1000 + j / 2: the max subtraction
 * keeps exp from overflowing, and the value matches the same groups moved
 * by -1000 (shift invariance, exact on these values). */
Test(prox, kl_stable_for_large_entries)
{
    setup s;
    tiny_setup(&s, 8);
    peso_err err;
    peso_prox_groups gs;
    cr_assert_eq(peso_prox_groups_build(&gs, &s.l, PESO_PROX_MODULE, &err), 0);
    float *big = malloc(s.f.numel * sizeof *big), *bigp = malloc(s.f.numel * sizeof *bigp);
    for (size_t j = 0; j < s.f.numel; j++) {
        s.v[j] = (float)(j % 7) * 0.5f;
        s.vp[j] = (float)(j % 5) * 0.25f;
        big[j] = s.v[j] + 1000.0f;
        bigp[j] = s.vp[j] - 1000.0f;
    }
    double small_val, big_val;
    float *g = calloc(s.f.numel, sizeof *g), *gb = calloc(s.f.numel, sizeof *gb);
    cr_assert_eq(dev_kl(&gs, 0, gs.n, s.v, s.vp, s.f.numel, 1.0, g, &small_val, &err), 0);
    cr_assert_eq(dev_kl(&gs, 0, gs.n, big, bigp, s.f.numel, 1.0, gb, &big_val, &err), 0);
    cr_assert(isfinite(big_val) && rel(big_val, small_val) < 1e-12, "%.17g vs %.17g", big_val, small_val);
    for (size_t j = 0; j < s.f.numel; j++)
        cr_assert(fabs(gb[j] - g[j]) <= 1e-6 * fabs(g[j]) + 1e-12, "entry %zu", j);
    free(g);
    free(gb);
    free(big);
    free(bigp);
    peso_prox_groups_free(&gs);
    setup_free(&s);
}

/* ---- L2 ---- */

Test(prox, l2_closed_form)
{
    setup s;
    tiny_setup(&s, 9);
    peso_err err;
    /* v = v_prev + 0.5 on every LoRA entry of modules 1 and 2 (24 + 40 entries) */
    memcpy(s.v, s.vp, s.f.numel * sizeof *s.v);
    for (int mi = 1; mi <= 2; mi++) {
        const peso_lora_module *m = &s.l.mods[mi];
        for (size_t j = 0; j < (size_t)2 * m->in; j++)
            s.v[m->a_off + j] += 0.5f;
        for (size_t j = 0; j < (size_t)2 * m->out; j++)
            s.v[m->b_off + j] += 0.5f;
    }
    float *g = calloc(s.f.numel, sizeof *g);
    double val;
    cr_assert_eq(dev_l2(&s.l, 0, s.l.n_modules, s.v, s.vp, s.f.numel, 3.0, g, &val, &err), 0);
    cr_assert(fabs(val - 3.0 / 2.0 * 0.25 * 64) < 1e-12, "%.17g", val);
    size_t n_half = 0;
    for (size_t j = 0; j < s.f.numel; j++) {
        cr_assert(g[j] == 0.0f || g[j] == 1.5f, "entry %zu: %g", j, (double)g[j]);
        n_half += g[j] == 1.5f;
    }
    cr_assert_eq(n_half, 64);
    /* only modules [2, 3): 40 entries */
    cr_assert_eq(dev_l2(&s.l, 2, 3, s.v, s.vp, s.f.numel, 3.0, NULL, &val, &err), 0);
    cr_assert(fabs(val - 1.5 * 0.25 * 40) < 1e-12, "%.17g", val);
    free(g);
    setup_free(&s);
}

Test(prox, l2_matches_naive_and_finite_differences)
{
    setup s;
    tiny_setup(&s, 10);
    double want = 0, val;
    peso_err err;
    for (int mi = 0; mi < s.l.n_modules; mi++) {
        const peso_lora_module *m = &s.l.mods[mi];
        for (size_t j = 0; j < (size_t)2 * m->in; j++)
            want += pow((double)s.v[m->a_off + j] - s.vp[m->a_off + j], 2);
        for (size_t j = 0; j < (size_t)2 * m->out; j++)
            want += pow((double)s.v[m->b_off + j] - s.vp[m->b_off + j], 2);
    }
    cr_assert_eq(dev_l2(&s.l, 0, s.l.n_modules, s.v, s.vp, s.f.numel, 0.3, NULL, &val, &err), 0);
    cr_assert(rel(val, 0.15 * want) < 1e-13, "%.17g vs %.17g", val, 0.15 * want);
    term t = {"l2", &s, NULL, dev_l2};
    check_fd(&t, 0.3, 1e-2, 1e-6);
    setup_free(&s);
}

/* ---- orthogonality ---- */

/* One module, rank 2, in 2, out 1: A_t = [[1, 2], [3, 4]], A_prev = [[1, 0],
 * [1, 1]]. M = A_t A_prev^T = [[1, 3], [3, 7]], ||M||^2 = 68; M A_prev =
 * [[4, 3], [10, 7]]. */
Test(prox, ortho_hand_computed_2x2)
{
    peso_lora_module mod = {0, PESO_LORA_Q, 2, 1, 0, 4};
    int index[PESO_LORA_NPROJ] = {0, -1, -1, -1, -1, -1, -1};
    peso_lora l = {{2, 2.0, 1u}, 1.0f, 1, 1, &mod, index};
    float v[6] = {1, 2, 3, 4, 5, 6}, vp[6] = {1, 0, 1, 1, -7, 8};
    float g[6] = {0, 0, 0, 0, 0.25f, 0};
    double val;
    peso_err err;
    cr_assert_eq(dev_ortho(&l, 0, 1, v, vp, 6, 0.5, g, &val, &err), 0, "%s", err.msg);
    cr_assert_eq(val, 34.0);
    float want[6] = {4, 3, 10, 7, 0.25f, 0}; /* 2 * 0.5 * M A_prev; B's gradient untouched */
    for (int i = 0; i < 6; i++)
        cr_assert_eq(g[i], want[i], "entry %d: %g", i, (double)g[i]);
}

Test(prox, ortho_matches_naive_and_finite_differences)
{
    setup s;
    tiny_setup(&s, 12);
    peso_err err;
    int r = s.l.conf.rank;
    double want = 0, val;
    for (int mi = 0; mi < s.l.n_modules; mi++) {
        const peso_lora_module *m = &s.l.mods[mi];
        for (int i = 0; i < r; i++)
            for (int j = 0; j < r; j++) {
                double d = 0;
                for (int c = 0; c < m->in; c++)
                    d += (double)s.v[m->a_off + i * m->in + c] * s.vp[m->a_off + j * m->in + c];
                want += d * d;
            }
    }
    cr_assert_eq(dev_ortho(&s.l, 0, s.l.n_modules, s.v, s.vp, s.f.numel, 0.7, NULL, &val, &err), 0);
    cr_assert(rel(val, 0.7 * want) < 1e-12, "%.17g vs %.17g", val, 0.7 * want);
    term t = {"ortho", &s, NULL, dev_ortho};
    check_fd(&t, 0.7, 1e-2, 1e-5);
    setup_free(&s);
}

Test(prox, ortho_matches_naive_on_threaded_path)
{
    setup s;
    peso_llama_config mc = wide_model();
    setup_init(&s, &mc, 8, PESO_LORA_ALL, 13);
    peso_err err;
    int r = s.l.conf.rank;
    double want = 0, val;
    float *g = calloc(s.f.numel, sizeof *g);
    cr_assert_eq(dev_ortho(&s.l, 0, s.l.n_modules, s.v, s.vp, s.f.numel, 0.7, g, &val, &err), 0);
    for (int mi = 0; mi < s.l.n_modules; mi++) {
        const peso_lora_module *m = &s.l.mods[mi];
        double mm[64];
        for (int i = 0; i < r; i++)
            for (int j = 0; j < r; j++) {
                double d = 0;
                for (int c = 0; c < m->in; c++)
                    d += (double)s.v[m->a_off + i * m->in + c] * s.vp[m->a_off + j * m->in + c];
                mm[i * r + j] = d;
                want += d * d;
            }
        for (int i = 0; i < r; i++)
            for (int c = 0; c < m->in; c++) {
                double d = 0;
                for (int j = 0; j < r; j++)
                    d += mm[i * r + j] * s.vp[m->a_off + j * m->in + c];
                float got = g[m->a_off + i * m->in + c];
                cr_assert(fabs(got - 1.4 * d) <= 1e-6 * fabs(1.4 * d) + 1e-9, "module %d A[%d,%d]", mi, i, c);
            }
        for (int j = 0; j < m->out * r; j++)
            cr_assert_eq(g[m->b_off + j], 0.0f);
    }
    cr_assert(rel(val, 0.7 * want) < 1e-12, "%.17g vs %.17g", val, 0.7 * want);
    free(g);
    setup_free(&s);
}

/* ---- sharding ---- */

static peso_prox_groups sized(const size_t *sizes, int n)
{
    peso_prox_groups gs = {PESO_PROX_MODULE, n, calloc(n ? n : 1, sizeof(peso_prox_group))};
    for (int i = 0; i < n; i++)
        gs.g[i].numel = sizes[i];
    return gs;
}

/* Group i goes to rank floor(world * midpoint_i / total). */
Test(prox, shard_balances_by_size)
{
    peso_err err;
    int lo, hi;
    size_t even[4] = {10, 10, 10, 10}, heavy[4] = {30, 10, 10, 10};
    peso_prox_groups gs = sized(even, 4);
    cr_assert_eq(peso_prox_shard(&gs, 2, 0, &lo, &hi, &err), 0);
    cr_assert(lo == 0 && hi == 2);
    cr_assert_eq(peso_prox_shard(&gs, 2, 1, &lo, &hi, &err), 0);
    cr_assert(lo == 2 && hi == 4);
    free(gs.g);
    /* midpoints 15, 35, 45, 55 of 60 */
    gs = sized(heavy, 4);
    cr_assert_eq(peso_prox_shard(&gs, 2, 0, &lo, &hi, &err), 0);
    cr_assert(lo == 0 && hi == 1, "[%d, %d)", lo, hi);
    cr_assert_eq(peso_prox_shard(&gs, 2, 1, &lo, &hi, &err), 0);
    cr_assert(lo == 1 && hi == 4, "[%d, %d)", lo, hi);
    /* 3 ranks: 3*15/60 = 0, 3*35/60 = 1, 3*45/60 = 2, 3*55/60 = 2 */
    int want3[3][2] = {{0, 1}, {1, 2}, {2, 4}};
    for (int r = 0; r < 3; r++) {
        cr_assert_eq(peso_prox_shard(&gs, 3, r, &lo, &hi, &err), 0);
        cr_assert(lo == want3[r][0] && hi == want3[r][1], "rank %d: [%d, %d)", r, lo, hi);
    }
    /* more ranks than groups: 6 ranks, owners 1, 3, 4, 5; ranks 0 and 2 empty */
    int want6[6][2] = {{0, 0}, {0, 1}, {1, 1}, {1, 2}, {2, 3}, {3, 4}};
    for (int r = 0; r < 6; r++) {
        cr_assert_eq(peso_prox_shard(&gs, 6, r, &lo, &hi, &err), 0);
        cr_assert(lo == want6[r][0] && hi == want6[r][1], "rank %d: [%d, %d)", r, lo, hi);
    }
    cr_assert_eq(peso_prox_shard(&gs, 2, 2, &lo, &hi, &err), -1);
    cr_assert(strstr(err.msg, "rank 2 of world 2"), "%s", err.msg);
    cr_assert_eq(peso_prox_shard(&gs, 0, 0, &lo, &hi, &err), -1);
    free(gs.g);
    gs = sized(NULL, 0);
    cr_assert_eq(peso_prox_shard(&gs, 3, 1, &lo, &hi, &err), 0);
    cr_assert(lo == 0 && hi == 0);
    free(gs.g);
}

/* N ranks each compute their range into their own buffer; the sums equal
 * the unsharded value and gradient. */
static void check_sharded(const term *t, const peso_prox_groups *shard_by)
{
    const setup *s = t->s;
    size_t n = s->f.numel;
    float *g1 = calloc(n, sizeof *g1), *sum = malloc(n * sizeof *sum), *gr = malloc(n * sizeof *gr);
    double whole = term_eval(t, 0, term_groups(t), s->v, 0.9, g1);
    peso_err err;
    for (int world = 1; world <= 4; world++) {
        memset(sum, 0, n * sizeof *sum);
        double total = 0;
        int next = 0;
        for (int rank = 0; rank < world; rank++) {
            int lo, hi;
            cr_assert_eq(peso_prox_shard(shard_by, world, rank, &lo, &hi, &err), 0);
            cr_assert_eq(lo, next, "%s: rank %d of %d starts at %d, expected %d", t->name, rank, world, lo,
                         next);
            cr_assert(hi >= lo);
            next = hi;
            memset(gr, 0, n * sizeof *gr);
            total += term_eval(t, lo, hi, s->v, 0.9, gr);
            for (size_t j = 0; j < n; j++)
                sum[j] += gr[j];
        }
        cr_assert_eq(next, term_groups(t), "%s: world %d covers %d groups", t->name, world, next);
        cr_assert(rel(total, whole) < 1e-6, "%s, world %d: %.17g vs %.17g", t->name, world, total, whole);
        for (size_t j = 0; j < n; j++)
            cr_assert(fabs(sum[j] - g1[j]) <= 1e-6 * fabs(g1[j]), "%s, world %d, entry %zu", t->name, world,
                      j);
    }
    free(g1);
    free(sum);
    free(gr);
}

Test(prox, sharded_sum_equals_unsharded)
{
    setup s;
    peso_llama_config mc = wide_model();
    setup_init(&s, &mc, 8, PESO_LORA_ALL, 31);
    peso_err err;
    peso_prox_groups by_module;
    cr_assert_eq(peso_prox_groups_build(&by_module, &s.l, PESO_PROX_MODULE, &err), 0);
    for (int how = 0; how < 3; how++) {
        peso_prox_groups gs;
        cr_assert_eq(peso_prox_groups_build(&gs, &s.l, (peso_prox_grouping)how, &err), 0);
        term t = {peso_prox_grouping_name((peso_prox_grouping)how), &s, &gs, NULL};
        check_sharded(&t, &gs);
        peso_prox_groups_free(&gs);
    }
    term l2 = {"l2", &s, NULL, dev_l2}, ortho = {"ortho", &s, NULL, dev_ortho};
    check_sharded(&l2, &by_module);
    check_sharded(&ortho, &by_module);
    peso_prox_groups_free(&by_module);
    setup_free(&s);
}

/* The same bits with one thread and with four: values are summed in group
 * order, and each gradient entry has one writer. */
Test(prox, same_bits_for_any_thread_count)
{
    setup s;
    peso_llama_config mc = wide_model();
    setup_init(&s, &mc, 8, PESO_LORA_ALL, 41);
    peso_err err;
    peso_prox_groups gs;
    cr_assert_eq(peso_prox_groups_build(&gs, &s.l, PESO_PROX_RANK, &err), 0);
    size_t n = s.f.numel;
    float *g[2] = {calloc(n, sizeof(float)), calloc(n, sizeof(float))};
    double val[2][3];
    int saved = omp_get_max_threads();
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k == 0 ? 1 : 4);
        cr_assert_eq(dev_kl(&gs, 0, gs.n, s.v, s.vp, s.f.numel, 1.3, g[k], &val[k][0], &err), 0);
        cr_assert_eq(dev_ortho(&s.l, 0, s.l.n_modules, s.v, s.vp, s.f.numel, 0.2, g[k], &val[k][1], &err), 0);
        cr_assert_eq(dev_l2(&s.l, 0, s.l.n_modules, s.v, s.vp, s.f.numel, 0.5, g[k], &val[k][2], &err), 0);
    }
    omp_set_num_threads(saved);
    for (int t = 0; t < 3; t++)
        cr_assert_eq(val[0][t], val[1][t], "term %d", t);
    cr_assert_eq(memcmp(g[0], g[1], n * sizeof(float)), 0);
    free(g[0]);
    free(g[1]);
    peso_prox_groups_free(&gs);
    setup_free(&s);
}

/* ---- argument errors ---- */

Test(prox, bad_arguments_are_errors)
{
    setup s;
    tiny_setup(&s, 40);
    peso_err err;
    peso_prox_groups gs;
    double val;
    cr_assert_eq(peso_prox_groups_build(&gs, &s.l, PESO_PROX_NGROUPING, &err), -1);
    cr_assert_eq(peso_prox_groups_build(&gs, &s.l, PESO_PROX_RANK, &err), 0);
    cr_assert_eq(dev_kl(&gs, 3, 13, s.v, s.vp, s.f.numel, 1.0, NULL, &val, &err), -1);
    cr_assert(strstr(err.msg, "[3, 13)") && strstr(err.msg, "<= 12"), "%s", err.msg);
    cr_assert_eq(dev_kl(&gs, 2, 1, s.v, s.vp, s.f.numel, 1.0, NULL, &val, &err), -1);
    cr_assert_eq(dev_kl(&gs, 0, 1, s.v, s.vp, s.f.numel, NAN, NULL, &val, &err), -1);
    cr_assert(strstr(err.msg, "lambda"), "%s", err.msg);
    cr_assert_eq(dev_l2(&s.l, 0, 7, s.v, s.vp, s.f.numel, 1.0, NULL, &val, &err), -1);
    cr_assert(strstr(err.msg, "prox_l2"), "%s", err.msg);
    cr_assert_eq(dev_ortho(&s.l, -1, 2, s.v, s.vp, s.f.numel, 1.0, NULL, &val, &err), -1);
    /* empty ranges are fine and add nothing */
    cr_assert_eq(dev_kl(&gs, 5, 5, s.v, s.vp, s.f.numel, 1.0, NULL, &val, &err), 0);
    cr_assert_eq(val, 0.0);
    peso_prox_groups_free(&gs);
    setup_free(&s);
}

/* The backend entries' own checks: each error names the entry and the
 * argument, and nothing is written (value nor gradient) on an error. */
Test(prox, backend_entries_check_their_arguments)
{
    setup s;
    tiny_setup(&s, 41);
    peso_err err;
    peso_prox_groups gs, mod;
    cr_assert_eq(peso_prox_groups_build(&gs, &s.l, PESO_PROX_RANK, &err), 0);
    cr_assert_eq(peso_prox_groups_build(&mod, &s.l, PESO_PROX_MODULE, &err), 0);
    size_t n = s.f.numel;
    float *g = calloc(n, sizeof *g);
    for (size_t j = 0; j < n; j++)
        g[j] = 0.5f;
    double val = 42.0;
    int r = s.l.conf.rank;
    struct {
        enum term_op op;
        const char *name;
    } ops[3] = {{OP_KL, "prox_kl"}, {OP_L2, "prox_l2"}, {OP_ORTHO, "prox_ortho"}};
    for (int k = 0; k < 3; k++) {
        const char *name = ops[k].name;
        cr_assert_eq(dev_term(ops[k].op, NULL, r, 0, 0, s.v, s.vp, n, 1.0, g, &val, &err), -1);
        cr_assert(strstr(err.msg, name) && strstr(err.msg, "gs"), "%s", err.msg);
        cr_assert_eq(dev_term(ops[k].op, &mod, r, 0, 1, s.v, s.vp, n, 1.0, g, NULL, &err), -1);
        cr_assert(strstr(err.msg, name) && strstr(err.msg, "value"), "%s", err.msg);
        cr_assert_eq(dev_term(ops[k].op, &mod, r, 0, 7, s.v, s.vp, n, 1.0, g, &val, &err), -1);
        cr_assert(strstr(err.msg, name) && strstr(err.msg, "[0, 7)") && strstr(err.msg, "<= 6"), "%s",
                  err.msg);
        cr_assert_eq(dev_term(ops[k].op, &mod, r, -1, 2, s.v, s.vp, n, 1.0, g, &val, &err), -1);
        cr_assert(strstr(err.msg, "[-1, 2)"), "%s", err.msg);
        cr_assert_eq(dev_term(ops[k].op, &mod, r, 0, 2, s.v, s.vp, n, INFINITY, g, &val, &err), -1);
        cr_assert(strstr(err.msg, name) && strstr(err.msg, "lambda=inf"), "%s", err.msg);
        /* a malformed group inside the range: 3 segments, then a numel that is not its segments' */
        mod.g[1].n_seg = 3;
        cr_assert_eq(dev_term(ops[k].op, &mod, r, 0, 2, s.v, s.vp, n, 1.0, g, &val, &err), -1);
        cr_assert(strstr(err.msg, name) && strstr(err.msg, "group 1 has n_seg=3"), "%s", err.msg);
        mod.g[1].n_seg = 2;
        mod.g[1].numel++;
        cr_assert_eq(dev_term(ops[k].op, &mod, r, 0, 2, s.v, s.vp, n, 1.0, g, &val, &err), -1);
        cr_assert(strstr(err.msg, name) && strstr(err.msg, "group 1 has numel=25"), "%s", err.msg);
        /* outside the range it is not read */
        cr_assert_eq(dev_term(ops[k].op, &mod, r, 2, 4, s.v, s.vp, n, 1.0, NULL, &val, &err), 0, "%s",
                     err.msg);
        mod.g[1].numel--;
        val = 42.0;
    }
    /* ortho takes the module groups, a rank >= 1, and A blocks of rank rows */
    cr_assert_eq(dev_term(OP_ORTHO, &gs, r, 0, 1, s.v, s.vp, n, 1.0, g, &val, &err), -1);
    cr_assert(strstr(err.msg, "prox_ortho") && strstr(err.msg, "grouping 2"), "%s", err.msg);
    cr_assert_eq(dev_term(OP_ORTHO, &mod, 0, 0, 1, s.v, s.vp, n, 1.0, g, &val, &err), -1);
    cr_assert(strstr(err.msg, "prox_ortho") && strstr(err.msg, "rank=0"), "%s", err.msg);
    cr_assert_eq(dev_term(OP_ORTHO, &mod, 3, 0, 1, s.v, s.vp, n, 1.0, g, &val, &err), -1);
    cr_assert(strstr(err.msg, "group 0's A has n=16") && strstr(err.msg, "rank=3"), "%s", err.msg);
    mod.g[2].seg[0].stride = 2;
    cr_assert_eq(dev_term(OP_ORTHO, &mod, r, 0, 3, s.v, s.vp, n, 1.0, g, &val, &err), -1);
    cr_assert(strstr(err.msg, "group 2's A") && strstr(err.msg, "stride=2"), "%s", err.msg);
    mod.g[2].seg[0].stride = 1;
    /* none of the failed calls wrote */
    cr_assert_eq(val, 42.0);
    for (size_t j = 0; j < n; j++)
        cr_assert_eq(g[j], 0.5f, "entry %zu", j);
    free(g);
    peso_prox_groups_free(&mod);
    peso_prox_groups_free(&gs);
    setup_free(&s);
}
