/* The step planning of an epoch (peso_steps_plan, train/batch.h) on
 * hand-made windows whose token counts are known in closed form:
 *   1 (BOS) + HEAD + h L + (h - 1) SEP + TAIL + L   (h >= 1 history items)
 *   1 (BOS) + HEAD_TAIL + L                          (h = 0),
 * L the levels. Against it and against a recount of each window's
 * example built with peso_prompt_example: every window once per epoch, an
 * order that depends on (seed, stage, epoch) and nothing else, steps that
 * are the greedy cut of that order by the token budget (a longer window
 * alone), their token and label counts, and max_windows keeping a prefix
 * of the same shuffle. */
#include <criterion/criterion.h>

#include "train/batch.h"
#include "train_fixture.h"

#define N_WIN 57
#define LEVELS 3
#define N_ITEMS 30

static const int level_size[LEVELS] = {4, 5, 6};

typedef struct fx {
    peso_prompt p;
    peso_pairs pairs;
    int hist_len[N_WIN];
    int32_t codes[N_ITEMS * LEVELS];
} fx;

/* History lengths 0..12 spread over the windows (12 items: 71 tokens). */
static void fx_open(fx *f, int shift)
{
    tprompt_init(&f->p, LEVELS, level_size, 40);
    for (int i = 0; i < N_WIN; i++)
        f->hist_len[i] = (i * 7 + shift) % 13;
    tpairs_make(&f->pairs, N_WIN, f->hist_len, N_ITEMS, 11);
    peso_rng r;
    peso_rng_seed(&r, 12, 1);
    for (int i = 0; i < N_ITEMS; i++)
        for (int l = 0; l < LEVELS; l++)
            f->codes[i * LEVELS + l] = (int32_t)peso_rng_below(&r, (uint64_t)level_size[l]);
}

static void fx_close(fx *f)
{
    tprompt_free(&f->p);
    tpairs_free(&f->pairs);
}

static long closed_len(int h)
{
    return h == 0 ? 1 + TP_HEAD_TAIL + LEVELS
                  : 1 + TP_HEAD + h * LEVELS + (h - 1) * TP_SEP + TP_TAIL + LEVELS;
}

/* Window i's example built token by token: its length and its labels. */
static void recount(const fx *f, size_t i, long *tokens, long *labels)
{
    int32_t hist[16 * LEVELS], target[LEVELS], ids[256], lab[256];
    size_t nh = (size_t)(f->pairs.off[i + 1] - f->pairs.off[i]), n;
    for (size_t h = 0; h < nh; h++)
        memcpy(hist + h * LEVELS, f->codes + f->pairs.hist[f->pairs.off[i] + (int64_t)h] * LEVELS,
               sizeof(int32_t) * LEVELS);
    memcpy(target, f->codes + f->pairs.target[i] * LEVELS, sizeof target);
    peso_err err;
    cr_assert_eq(peso_prompt_example(&f->p, hist, nh, target, ids, lab, 256, &n, &err), 0, "%s", err.msg);
    *tokens = (long)n;
    *labels = 0;
    for (size_t t = 0; t < n; t++)
        *labels += lab[t] != PESO_PROMPT_IGNORE;
}

static void plan(peso_steps *st, const fx *f, uint64_t seed, int stage, int epoch, size_t max_windows,
                 long batch_tokens)
{
    peso_err err;
    cr_assert_eq(peso_steps_plan(st, &f->pairs, &f->p, seed, stage, epoch, max_windows, batch_tokens, &err),
                 0, "%s", err.msg);
}

static int same_order(const peso_steps *a, const peso_steps *b)
{
    return a->n_win == b->n_win && memcmp(a->win, b->win, a->n_win * sizeof *a->win) == 0;
}

Test(steps, window_tokens_closed_form_and_recount)
{
    fx f;
    fx_open(&f, 0);
    for (size_t i = 0; i < N_WIN; i++) {
        long tokens, labels;
        recount(&f, i, &tokens, &labels);
        cr_expect_eq((long)peso_pair_tokens(&f.pairs, &f.p, i), closed_len(f.hist_len[i]),
                     "window %zu (%d items): %zu tokens, closed form %ld", i, f.hist_len[i],
                     peso_pair_tokens(&f.pairs, &f.p, i), closed_len(f.hist_len[i]));
        cr_expect_eq(tokens, closed_len(f.hist_len[i]), "window %zu: example of %ld tokens", i, tokens);
        cr_expect_eq(labels, LEVELS, "window %zu: %ld labels", i, labels);
    }
    fx_close(&f);
}

Test(steps, every_window_once_per_epoch)
{
    fx f;
    fx_open(&f, 0);
    for (int stage = 1; stage <= 3; stage++)
        for (int epoch = 0; epoch < 4; epoch++) {
            peso_steps st;
            plan(&st, &f, 7, stage, epoch, 0, 60);
            cr_assert_eq(st.n_win, N_WIN);
            int seen[N_WIN] = {0};
            for (size_t i = 0; i < st.n_win; i++) {
                cr_assert(st.win[i] >= 0 && st.win[i] < N_WIN, "stage %d epoch %d: window %d", stage, epoch,
                          st.win[i]);
                seen[st.win[i]]++;
            }
            for (int i = 0; i < N_WIN; i++)
                cr_expect_eq(seen[i], 1, "stage %d epoch %d: window %d appears %d times", stage, epoch, i,
                             seen[i]);
            peso_steps_free(&st);
        }
    fx_close(&f);
}

Test(steps, order_depends_on_seed_stage_epoch_only)
{
    fx f, g;
    fx_open(&f, 0);
    fx_open(&g, 5); /* the same number of windows, other lengths */
    peso_steps base, again, other;
    plan(&base, &f, 7, 2, 1, 0, 60);
    plan(&again, &f, 7, 2, 1, 0, 60);
    cr_expect(same_order(&base, &again), "the same (seed, stage, epoch) gave another order");
    peso_steps_free(&again);
    /* not the budget, not the windows' lengths */
    plan(&again, &f, 7, 2, 1, 0, 1000000);
    cr_expect(same_order(&base, &again), "another batch_tokens changed the order");
    peso_steps_free(&again);
    plan(&again, &g, 7, 2, 1, 0, 60);
    cr_expect(same_order(&base, &again), "other window lengths changed the order");
    peso_steps_free(&again);
    /* but each of seed, stage and epoch */
    const struct {
        uint64_t seed;
        int stage, epoch;
    } alt[] = {{8, 2, 1}, {7, 3, 1}, {7, 1, 1}, {7, 2, 0}, {7, 2, 2}};
    for (size_t k = 0; k < sizeof alt / sizeof alt[0]; k++) {
        plan(&other, &f, alt[k].seed, alt[k].stage, alt[k].epoch, 0, 60);
        cr_expect(!same_order(&base, &other),
                  "seed %llu stage %d epoch %d gave the order of seed 7 stage 2 "
                  "epoch 1",
                  (unsigned long long)alt[k].seed, alt[k].stage, alt[k].epoch);
        peso_steps_free(&other);
    }
    peso_steps_free(&base);
    fx_close(&f);
    fx_close(&g);
}

/* The steps of st against the greedy cut of its order written here, and
 * the properties that define it. */
static void expect_cut(const fx *f, const peso_steps *st, long budget)
{
    size_t ref_start[N_WIN + 1], n_ref = 0;
    long cur = 0;
    for (size_t i = 0; i < st->n_win; i++) {
        long t = closed_len(f->hist_len[st->win[i]]);
        if (i == 0 || cur + t > budget) {
            ref_start[n_ref++] = i;
            cur = 0;
        }
        cur += t;
    }
    ref_start[n_ref] = st->n_win;
    cr_assert_eq(st->n_steps, n_ref, "budget %ld: %zu steps, the greedy cut gives %zu", budget, st->n_steps,
                 n_ref);
    for (size_t s = 0; s <= n_ref; s++)
        cr_assert_eq(st->start[s], ref_start[s], "budget %ld: step %zu starts at %zu, expected %zu", budget,
                     s, st->start[s], ref_start[s]);
    for (size_t s = 0; s < st->n_steps; s++) {
        size_t lo = st->start[s], hi = st->start[s + 1];
        cr_assert(hi > lo, "budget %ld: step %zu is empty", budget, s);
        long tokens = 0, labels = 0;
        for (size_t i = lo; i < hi; i++) {
            long t, l;
            recount(f, (size_t)st->win[i], &t, &l);
            tokens += t;
            labels += l;
        }
        cr_expect_eq(st->tokens[s], tokens, "budget %ld step %zu: %ld tokens, recount %ld", budget, s,
                     st->tokens[s], tokens);
        cr_expect_eq(st->labels[s], labels, "budget %ld step %zu: %ld labels, recount %ld", budget, s,
                     st->labels[s], labels);
        cr_expect(tokens <= budget || hi - lo == 1, "budget %ld step %zu: %ld tokens in %zu windows", budget,
                  s, tokens, hi - lo);
        if (s + 1 < st->n_steps)
            cr_expect(tokens + closed_len(f->hist_len[st->win[hi]]) > budget,
                      "budget %ld step %zu: the next window would have fit", budget, s);
    }
}

Test(steps, greedy_cut_by_token_budget)
{
    fx f;
    fx_open(&f, 0);
    /* 1: every window alone; 60: the 10..12-item windows (61..71 tokens)
     * alone, the others packed; 1e9: one step */
    const long budgets[] = {1, 60, 71, 200, 1000000000};
    for (size_t k = 0; k < sizeof budgets / sizeof budgets[0]; k++) {
        peso_steps st;
        plan(&st, &f, 3, 2, 0, 0, budgets[k]);
        expect_cut(&f, &st, budgets[k]);
        if (budgets[k] == 1)
            cr_expect_eq(st.n_steps, N_WIN);
        if (budgets[k] == 1000000000)
            cr_expect_eq(st.n_steps, 1);
        peso_steps_free(&st);
    }
    fx_close(&f);
}

Test(steps, max_windows_keeps_the_shuffles_prefix)
{
    fx f;
    fx_open(&f, 0);
    peso_steps all, some;
    plan(&all, &f, 5, 3, 2, 0, 60);
    const size_t maxes[] = {1, 10, N_WIN - 1, N_WIN, N_WIN + 20};
    for (size_t k = 0; k < sizeof maxes / sizeof maxes[0]; k++) {
        plan(&some, &f, 5, 3, 2, maxes[k], 60);
        size_t want = maxes[k] < N_WIN ? maxes[k] : N_WIN;
        cr_assert_eq(some.n_win, want, "max_windows %zu: %zu windows", maxes[k], some.n_win);
        cr_expect(memcmp(some.win, all.win, want * sizeof *all.win) == 0,
                  "max_windows %zu: not the first windows of the full shuffle", maxes[k]);
        expect_cut(&f, &some, 60);
        peso_steps_free(&some);
    }
    peso_steps_free(&all);
    fx_close(&f);
}

Test(steps, no_windows_is_an_error)
{
    fx f;
    fx_open(&f, 0);
    peso_pairs none = {0};
    peso_steps st;
    peso_err err;
    cr_assert_eq(peso_steps_plan(&st, &none, &f.p, 1, 4, 0, 0, 60, &err), -1);
    cr_expect(strstr(err.msg, "stage 4"), "%s", err.msg);
    fx_close(&f);
}
