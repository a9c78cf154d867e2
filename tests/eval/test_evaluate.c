/* One stage's evaluation against brute force: a hand-made dataset of 8
 * items (3 levels x 3 codes; items 1 and 4 share a tuple, item 6 is first
 * seen in block 2), the tiny random Llama of the model tests with LoRA on
 * every projection and non-zero B, and a hand-made prompt. With a beam at
 * least as wide as the valid tuples the search ranks all of them, so the
 * metrics must equal those of scoring every valid tuple by its exact
 * sequence log-probability (one teacher-forced full forward of prompt +
 * tuple, full-vocabulary log-softmax), sorting, and applying the Hit@k and
 * NDCG@k formulas by hand. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../model/llama_setup.h"
#include "eval/evaluate.h"

#define LEVELS 3
#define CODES 3
#define N_ITEMS 8
#define N_K 4
#define BEAM 8 /* >= the 7 distinct tuples of stage 2 */

static const int32_t item_codes[N_ITEMS * LEVELS] = {
    0, 1, 2, /* 0 */
    1, 0, 0, /* 1 */
    2, 2, 1, /* 2 */
    0, 1, 0, /* 3 */
    1, 0, 0, /* 4: item 1's tuple */
    2, 0, 2, /* 5 */
    0, 2, 2, /* 6: first seen in block 2, no valid item at stage 1 shares it */
    1, 1, 1, /* 7 */
};
static const int32_t first_block[N_ITEMS] = {1, 1, 1, 1, 1, 1, 2, 1};
static const int cutoffs[N_K] = {1, 2, 3, 6}; /* 6: the last of the 6 tuples of stage 1 */

/* Pairs of each split: history items (-1 ends a history), then target. */
typedef struct pair_spec {
    int32_t hist[5];
    int32_t target;
} pair_spec;

static const pair_spec b1_test[] = {
    {{0, 1, 2, -1}, 3},    {{-1}, 4},    {{5, -1}, 6},    {{3, 7, -1}, 0},
    {{2, 0, 5, 1, -1}, 7}, {{7, -1}, 1}, {{4, 3, -1}, 2}, {{1, 5, 3, -1}, 5},
};
static const pair_spec b1_valid[] = {{{0, -1}, 1}, {{2, 3, -1}, 4}, {{7, 5, -1}, 0}};
static const pair_spec b2_test[] = {
    {{6, -1}, 0}, {{0, 6, -1}, 3}, {{-1}, 6}, {{2, -1}, 6}, {{1, 4, 7, -1}, 5},
};

#define MAX_PAIRS 8
#define MAX_HIST 32

typedef struct pairs_buf {
    peso_pairs p;
    int32_t user[MAX_PAIRS], target[MAX_PAIRS], hist[MAX_HIST];
    int64_t off[MAX_PAIRS + 1];
} pairs_buf;

typedef struct world {
    setup s;
    int V, base;
    peso_prompt p;
    int32_t code_tab[LEVELS][CODES];
    int32_t head[3], sep[1], tail[2], head_tail[3];
    peso_dataset d;
    peso_block blocks[2];
    pairs_buf pb[4]; /* b1 valid, b1 test, b2 valid (empty), b2 test */
} world;

static void pairs_make(pairs_buf *b, const pair_spec *spec, size_t n, int32_t user0)
{
    size_t k = 0;
    memset(b, 0, sizeof *b);
    for (size_t i = 0; i < n; i++) {
        b->off[i] = (int64_t)k;
        for (int h = 0; spec[i].hist[h] >= 0; h++)
            b->hist[k++] = spec[i].hist[h];
        b->user[i] = user0 + (int32_t)i;
        b->target[i] = spec[i].target;
    }
    b->off[n] = (int64_t)k;
    b->p = (peso_pairs){n, b->user, b->target, b->off, b->hist};
}

static void world_open(world *w, uint64_t seed)
{
    memset(w, 0, sizeof *w);
    setup_open(&w->s, 0, LEVELS * CODES, PESO_LORA_ALL, seed);
    setup_randomize_b(&w->s, seed + 1);
    w->V = w->s.m->cfg.vocab_size;
    w->base = w->V - LEVELS * CODES;
    /* the prompt's text pieces: arbitrary base-vocabulary tokens */
    peso_prompt *p = &w->p;
    const int32_t head[3] = {5, 6, 7}, sep[1] = {8}, tail[2] = {9, 10}, head_tail[3] = {12, 13, 14};
    memcpy(w->head, head, sizeof head);
    memcpy(w->sep, sep, sizeof sep);
    memcpy(w->tail, tail, sizeof tail);
    memcpy(w->head_tail, head_tail, sizeof head_tail);
    p->levels = LEVELS;
    p->bos = 1;
    p->head = w->head, p->n_head = 3;
    p->sep = w->sep, p->n_sep = 1;
    p->tail = w->tail, p->n_tail = 2;
    p->head_tail = w->head_tail, p->n_head_tail = 3;
    for (int l = 0; l < LEVELS; l++) {
        p->level_size[l] = CODES;
        for (int c = 0; c < CODES; c++)
            w->code_tab[l][c] = w->base + l * CODES + c;
        p->code_id[l] = w->code_tab[l];
    }
    pairs_make(&w->pb[0], b1_valid, sizeof b1_valid / sizeof b1_valid[0], 0);
    pairs_make(&w->pb[1], b1_test, sizeof b1_test / sizeof b1_test[0], 0);
    pairs_make(&w->pb[2], NULL, 0, 0);
    pairs_make(&w->pb[3], b2_test, sizeof b2_test / sizeof b2_test[0], 10);
    for (int k = 0; k < 2; k++) {
        w->blocks[k].k = k + 1;
        w->blocks[k].valid = w->pb[2 * k].p;
        w->blocks[k].test = w->pb[2 * k + 1].p;
    }
    peso_dataset *d = &w->d;
    d->n_levels = LEVELS;
    d->codes = (int32_t *)item_codes;
    for (int l = 0; l < LEVELS; l++)
        d->level_size[l] = CODES;
    d->split.n_blocks = 2;
    d->split.b = w->blocks;
    d->split.n_items = N_ITEMS;
    d->split.item_first_block = (int32_t *)first_block;
}

static void world_close(world *w)
{
    setup_close(&w->s);
}

/* ---- brute force ---- */

/* [BOS] HEAD codes SEP codes ... TAIL, or [BOS] HEAD_TAIL without history. */
static int ref_prompt(const world *w, const peso_pairs *q, size_t i, int32_t *ids)
{
    int n = 0;
    ids[n++] = w->p.bos;
    if (q->off[i + 1] == q->off[i]) {
        for (int k = 0; k < 3; k++)
            ids[n++] = w->head_tail[k];
        return n;
    }
    for (int k = 0; k < 3; k++)
        ids[n++] = w->head[k];
    for (int64_t h = q->off[i]; h < q->off[i + 1]; h++) {
        if (h > q->off[i])
            ids[n++] = w->sep[0];
        for (int l = 0; l < LEVELS; l++)
            ids[n++] = w->code_tab[l][item_codes[q->hist[h] * LEVELS + l]];
    }
    ids[n++] = w->tail[0];
    ids[n++] = w->tail[1];
    return n;
}

/* The distinct tuples of the items valid at stage, as item numbers of
 * their first carrier. */
static int ref_tuples(int stage, int32_t *first)
{
    int n = 0;
    for (int i = 0; i < N_ITEMS; i++) {
        int seen = 0;
        for (int j = 0; j < n && !seen; j++)
            seen = memcmp(item_codes + first[j] * LEVELS, item_codes + i * LEVELS,
                          LEVELS * sizeof(int32_t)) == 0;
        if (first_block[i] <= stage && !seen)
            first[n++] = i;
    }
    return n;
}

static double ref_log_softmax_at(const float *x, int V, int v)
{
    double mx = -INFINITY, sum = 0.0;
    for (int k = 0; k < V; k++)
        mx = fmax(mx, x[k]);
    for (int k = 0; k < V; k++)
        sum += exp(x[k] - mx);
    return x[v] - mx - log(sum);
}

/* Exact log P(tuple | prompt) of every tuple, one batch row per tuple. */
static void ref_scores(world *w, const int32_t *prompt, int P, const int32_t *tup, int nt, double *score)
{
    peso_err err;
    int T = P + LEVELS;
    int32_t *ids = malloc((size_t)nt * T * sizeof(int32_t)), *lens = malloc((size_t)nt * sizeof(int32_t));
    int32_t *pos = malloc((size_t)nt * LEVELS * sizeof(int32_t));
    float *logits = malloc((size_t)nt * LEVELS * w->V * sizeof(float));
    for (int j = 0; j < nt; j++) {
        memcpy(ids + (size_t)j * T, prompt, (size_t)P * sizeof(int32_t));
        for (int l = 0; l < LEVELS; l++) {
            ids[(size_t)j * T + P + l] = w->code_tab[l][item_codes[tup[j] * LEVELS + l]];
            pos[j * LEVELS + l] = j * T + P - 1 + l;
        }
        lens[j] = T;
    }
    peso_llama_batch b = {nt, T, ids, lens, NULL};
    cr_assert_eq(peso_llama_logits(w->s.m, &b, pos, nt * LEVELS, logits, &err), 0, "%s", err.msg);
    for (int j = 0; j < nt; j++) {
        score[j] = 0.0;
        for (int l = 0; l < LEVELS; l++)
            score[j] += ref_log_softmax_at(logits + ((size_t)j * LEVELS + l) * w->V, w->V,
                                           ids[(size_t)j * T + P + l]);
    }
    free(ids);
    free(lens);
    free(pos);
    free(logits);
}

/* 1-based rank of pair i's target tuple among the stage's tuples by exact
 * score, 0 when no valid item carries it. */
static int ref_rank(world *w, const peso_pairs *q, size_t i, int stage)
{
    int32_t prompt[64], tup[N_ITEMS];
    double score[N_ITEMS];
    int P = ref_prompt(w, q, i, prompt), nt = ref_tuples(stage, tup), at = -1;
    for (int j = 0; j < nt; j++)
        if (memcmp(item_codes + tup[j] * LEVELS, item_codes + q->target[i] * LEVELS,
                   LEVELS * sizeof(int32_t)) == 0)
            at = j;
    if (at < 0)
        return 0;
    ref_scores(w, prompt, P, tup, nt, score);
    int rank = 1;
    for (int j = 0; j < nt; j++) {
        if (j == at)
            continue;
        cr_assert(fabs(score[j] - score[at]) > 1e-4, "pair %zu: tuples %d and %d nearly tie", i, j, at);
        rank += score[j] > score[at];
    }
    return rank;
}

typedef struct ref_result {
    double hit[N_K], ndcg[N_K];
    int ranks[MAX_PAIRS];
} ref_result;

static void ref_metrics(world *w, const peso_pairs *q, int stage, ref_result *r)
{
    memset(r, 0, sizeof *r);
    for (size_t i = 0; i < q->n; i++) {
        int rank = r->ranks[i] = ref_rank(w, q, i, stage);
        for (int c = 0; c < N_K; c++)
            if (rank >= 1 && rank <= cutoffs[c]) {
                r->hit[c] += 1.0 / (double)q->n;
                r->ndcg[c] += 1.0 / log2(rank + 1.0) / (double)q->n;
            }
    }
}

/* ---- the code under test ---- */

typedef struct progress {
    int calls, max_gap, decreasing;
    size_t last_done, last_total;
} progress;

static void on_progress(void *ctx, size_t done, size_t total)
{
    progress *g = ctx;
    g->decreasing |= g->calls > 0 && done <= g->last_done;
    if ((int)(done - g->last_done) > g->max_gap)
        g->max_gap = (int)(done - g->last_done);
    g->calls++;
    g->last_done = done;
    g->last_total = total;
}

static void run_stage(world *w, int stage, int split, size_t lo, size_t hi, peso_metrics *m, progress *g)
{
    peso_err err;
    cr_assert_eq(peso_metrics_init(m, cutoffs, N_K, &err), 0, "%s", err.msg);
    cr_assert_eq(
        peso_eval_stage(w->s.m, &w->p, &w->d, stage, split, BEAM, lo, hi, m, g ? on_progress : NULL, g, &err),
        0, "%s", err.msg);
}

static void check_against_brute_force(world *w, int stage, int split, const peso_pairs *q)
{
    peso_metrics m;
    peso_metrics_mean mean;
    peso_err err;
    progress g = {0};
    ref_result r;
    ref_metrics(w, q, stage, &r);
    run_stage(w, stage, split, 0, SIZE_MAX, &m, &g);
    cr_assert_eq(peso_metrics_final(&m, &mean, &err), 0, "%s", err.msg);
    cr_assert_eq(mean.users, (int64_t)q->n);
    for (int c = 0; c < N_K; c++) {
        cr_assert(fabs(mean.hit[c] - r.hit[c]) < 1e-12, "stage %d hit@%d: %.15f, brute force %.15f", stage,
                  cutoffs[c], mean.hit[c], r.hit[c]);
        cr_assert(fabs(mean.ndcg[c] - r.ndcg[c]) < 1e-12, "stage %d ndcg@%d: %.15f, brute force %.15f", stage,
                  cutoffs[c], mean.ndcg[c], r.ndcg[c]);
    }
    cr_assert(g.calls >= 1 && !g.decreasing);
    cr_assert_eq(g.last_done, q->n);
    cr_assert_eq(g.last_total, q->n);
}

Test(evaluate, stage1_test_equals_brute_force)
{
    world w;
    world_open(&w, 7);
    const peso_pairs *q = &w.blocks[0].test;
    ref_result r;
    ref_metrics(&w, q, 1, &r);
    /* the case is a real test: a miss (item 6), and ranks spread out,
     * some past the cut-offs 1 and 2 */
    int seen[N_ITEMS + 1] = {0}, distinct = 0;
    for (size_t i = 0; i < q->n; i++)
        distinct += !seen[r.ranks[i]]++;
    cr_assert_eq(r.ranks[2], 0, "item 6 is not valid at stage 1");
    cr_assert(distinct >= 4, "only %d distinct ranks", distinct);
    cr_assert(r.hit[0] < r.hit[N_K - 1]);
    check_against_brute_force(&w, 1, PESO_EVAL_TEST, q);
    check_against_brute_force(&w, 1, PESO_EVAL_VALID, &w.blocks[0].valid);
    world_close(&w);
}

/* At stage 2 item 6 is valid, so its tuple is ranked and may be a hit. */
Test(evaluate, stage2_test_equals_brute_force)
{
    world w;
    world_open(&w, 8);
    ref_result r;
    ref_metrics(&w, &w.blocks[1].test, 2, &r);
    cr_assert(r.ranks[2] >= 1 && r.ranks[3] >= 1, "item 6 is valid at stage 2");
    check_against_brute_force(&w, 2, PESO_EVAL_TEST, &w.blocks[1].test);
    world_close(&w);
}

Test(evaluate, shards_merge_to_the_whole)
{
    world w;
    peso_metrics whole, a, b, empty;
    peso_err err;
    world_open(&w, 9);
    size_t n = w.blocks[0].test.n;
    run_stage(&w, 1, PESO_EVAL_TEST, 0, SIZE_MAX, &whole, NULL);
    run_stage(&w, 1, PESO_EVAL_TEST, 0, 3, &a, NULL);
    run_stage(&w, 1, PESO_EVAL_TEST, 3, n, &b, NULL);
    run_stage(&w, 1, PESO_EVAL_TEST, n, SIZE_MAX, &empty, NULL);
    cr_assert_eq(a.sum[0], 3.0);
    cr_assert_eq(b.sum[0], (double)(n - 3));
    cr_assert_eq(empty.sum[0], 0.0);
    cr_assert_eq(peso_metrics_merge(&a, &b, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_metrics_merge(&a, &empty, &err), 0, "%s", err.msg);
    for (int i = 0; i < peso_metrics_n_sums(&whole); i++)
        cr_assert(fabs(a.sum[i] - whole.sum[i]) < 1e-12, "sum %d: %.15f vs %.15f", i, a.sum[i], whole.sum[i]);
    world_close(&w);
}

/* 125 pairs: a report about every 2% (every 2 or 3 pairs), increasing,
 * the last one for all of them. */
Test(evaluate, progress_is_reported_every_two_percent)
{
    enum { N = 125 };
    world w;
    peso_metrics m;
    progress g = {0};
    int32_t user[N], target[N], hist[N];
    int64_t off[N + 1];
    world_open(&w, 12);
    size_t k = 0;
    for (int i = 0; i < N; i++) {
        off[i] = (int64_t)k;
        if (i % 2)
            hist[k++] = i % 6;
        user[i] = i;
        target[i] = (i * 5) % N_ITEMS;
    }
    off[N] = (int64_t)k;
    w.blocks[0].test = (peso_pairs){N, user, target, off, hist};
    run_stage(&w, 1, PESO_EVAL_TEST, 0, SIZE_MAX, &m, &g);
    cr_assert_eq(m.sum[0], (double)N);
    cr_assert(!g.decreasing);
    cr_assert(g.max_gap >= 2 && g.max_gap <= 3, "largest step %d", g.max_gap);
    cr_assert(g.calls >= N / 3 && g.calls <= N / 2 + 1, "%d reports", g.calls);
    cr_assert_eq(g.last_done, (size_t)N);
    cr_assert_eq(g.last_total, (size_t)N);
    world_close(&w);
}

Test(evaluate, trie_holds_the_items_seen_by_the_stage)
{
    world w;
    peso_trie t;
    peso_err err;
    const int32_t *items;
    int32_t n;
    world_open(&w, 10);
    cr_assert_eq(peso_eval_trie_for_stage(&t, &w.d, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(t.n_items, 7);
    cr_assert_eq(t.n_leaves, 6);
    cr_assert_eq(peso_trie_find(&t, item_codes + 6 * LEVELS), -1);
    peso_trie_items(&t, peso_trie_find(&t, item_codes + 1 * LEVELS), &items, &n);
    cr_assert_eq(n, 2);
    cr_assert(items[0] == 1 && items[1] == 4);
    for (int i = 0; i < t.n_items; i++)
        cr_assert_neq(t.items[i], 6);
    peso_trie_free(&t);
    cr_assert_eq(peso_eval_trie_for_stage(&t, &w.d, 2, &err), 0, "%s", err.msg);
    cr_assert_eq(t.n_items, 8);
    cr_assert_eq(t.n_leaves, 7);
    peso_trie_items(&t, peso_trie_find(&t, item_codes + 6 * LEVELS), &items, &n);
    cr_assert(n == 1 && items[0] == 6);
    peso_trie_free(&t);
    cr_assert_eq(peso_eval_trie_for_stage(&t, &w.d, 0, &err), -1);
    cr_assert(strstr(err.msg, "stage 0"), "%s", err.msg);
    cr_assert_eq(peso_eval_trie_for_stage(&t, &w.d, 3, &err), -1);
    cr_assert(strstr(err.msg, "stage 3"), "%s", err.msg);
    world_close(&w);
}

static void expect_stage_error(world *w, int stage, int split, size_t lo, const char *a, const char *b)
{
    peso_metrics m;
    peso_err err;
    peso_metrics_init_default(&m);
    cr_assert_eq(
        peso_eval_stage(w->s.m, &w->p, &w->d, stage, split, BEAM, lo, SIZE_MAX, &m, NULL, NULL, &err), -1);
    cr_assert(strstr(err.msg, a) && strstr(err.msg, b), "%s", err.msg);
    cr_assert_eq(m.sum[0], 0.0);
}

Test(evaluate, bad_requests_are_refused)
{
    world w;
    world_open(&w, 11);
    expect_stage_error(&w, 3, PESO_EVAL_TEST, 0, "stage 3", "1 .. 2");
    expect_stage_error(&w, 0, PESO_EVAL_VALID, 0, "stage 0", "1 .. 2");
    expect_stage_error(&w, 2, PESO_EVAL_VALID, 0, "stage 2, valid split", "no pairs");
    expect_stage_error(&w, 1, 7, 0, "stage 1", "split 7");
    expect_stage_error(&w, 1, PESO_EVAL_TEST, 9, "stage 1, test split", "first pair 9");
    /* a target outside the dataset, named by its pair */
    w.pb[1].target[5] = N_ITEMS;
    w.blocks[0].test = w.pb[1].p;
    expect_stage_error(&w, 1, PESO_EVAL_TEST, 0, "pair 5", "target item 8");

    peso_trie t;
    peso_beam bs;
    peso_metrics m;
    peso_err err;
    peso_metrics_init_default(&m);
    cr_assert_eq(peso_eval_trie_for_stage(&t, &w.d, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_beam_init(&bs, w.s.m, BEAM, LEVELS, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_eval_pairs(&bs, &t, &w.p, &w.d, &w.blocks[0].valid, 1, 4, &m, NULL, NULL, &err), -1);
    cr_assert(strstr(err.msg, "lo <= hi <= 3"), "%s", err.msg);
    peso_beam_free(&bs);
    peso_trie_free(&t);
    world_close(&w);
}
