/* The prefix-cached decoder against full forwards of the whole sequence,
 * and the constrained beam search against brute force: every tuple of the
 * trie scored by teacher forcing (one full forward of prompt + tuple), and
 * a plain beam search over those exact prefix scores. The model is the
 * tiny random Llama of the model tests with LoRA on every projection and
 * non-zero B, and 16 code tokens (4 levels x 4 codes) appended. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../model/llama_setup.h"
#include "eval/beam.h"
#include "eval/trie.h"
#include "model/decode.h"

#define LEVELS 4
#define CODES 4
#define N_ITEMS 20
#define PLEN 11

typedef struct world {
    setup s;
    peso_prompt p;
    int32_t code_tab[LEVELS][CODES];
    int32_t items[N_ITEMS * LEVELS];
    int32_t prompt[PLEN];
    peso_trie t;
    int V, base;
} world;

/* Items: random tuples (many shared prefixes: 20 of 256 tuples), item 19
 * repeats item 3's tuple. The prompt mixes text and code tokens. */
static void world_open(world *w, int tied, uint64_t seed)
{
    peso_err err;
    peso_rng r;
    memset(w, 0, sizeof *w);
    setup_open(&w->s, tied, LEVELS * CODES, PESO_LORA_ALL, seed);
    setup_randomize_b(&w->s, seed + 1);
    w->V = w->s.m->cfg.vocab_size;
    w->base = w->V - LEVELS * CODES;
    w->p.levels = LEVELS;
    for (int l = 0; l < LEVELS; l++) {
        w->p.level_size[l] = CODES;
        for (int c = 0; c < CODES; c++)
            w->code_tab[l][c] = w->base + l * CODES + c;
        w->p.code_id[l] = w->code_tab[l];
    }
    peso_rng_seed(&r, seed, 3);
    for (int i = 0; i < N_ITEMS * LEVELS; i++)
        w->items[i] = (int32_t)peso_rng_below(&r, CODES);
    memcpy(w->items + 19 * LEVELS, w->items + 3 * LEVELS, LEVELS * sizeof(int32_t));
    for (int i = 0; i < PLEN; i++)
        w->prompt[i] = i % 4 == 2 ? w->base + (int32_t)peso_rng_below(&r, LEVELS * CODES)
                                  : (int32_t)peso_rng_below(&r, (uint64_t)w->base);
    int sizes[LEVELS] = {CODES, CODES, CODES, CODES};
    cr_assert_eq(peso_trie_build(&w->t, w->items, N_ITEMS, LEVELS, sizes, NULL, N_ITEMS, &err), 0, "%s",
                 err.msg);
}

static void world_close(world *w)
{
    peso_trie_free(&w->t);
    setup_close(&w->s);
}

/* log-softmax of one row, in double */
static void ref_log_softmax(const float *x, int V, double *out)
{
    double mx = -INFINITY, sum = 0.0;
    for (int v = 0; v < V; v++)
        mx = fmax(mx, x[v]);
    for (int v = 0; v < V; v++)
        sum += exp(x[v] - mx);
    for (int v = 0; v < V; v++)
        out[v] = x[v] - mx - log(sum);
}

/* Next-token log-softmax after ids[0..n) by a full forward of the whole
 * sequence. */
static void full_lp(world *w, const int32_t *ids, int n, double *out)
{
    peso_err err;
    int32_t len = n, pos = n - 1;
    peso_llama_batch b = {1, n, ids, &len, NULL};
    float *logits = malloc((size_t)w->V * sizeof(float));
    cr_assert_eq(peso_llama_logits(w->s.m, &b, &pos, 1, logits, &err), 0, "%s", err.msg);
    ref_log_softmax(logits, w->V, out);
    free(logits);
}

static void check_lp(world *w, const float *lp, const int32_t *ids, int n, const char *what)
{
    double *ref = malloc((size_t)w->V * sizeof(double));
    full_lp(w, ids, n, ref);
    for (int v = 0; v < w->V; v++)
        cr_assert(fabs(lp[v] - ref[v]) < 1e-5, "%s, token %d: decode %.7f, full forward %.7f", what, v, lp[v],
                  ref[v]);
    free(ref);
}

/* Three steps with beams that fork, reorder and drop: each beam's step
 * log-probabilities equal a full forward of prompt + its tokens. A
 * shorter prompt and a step come first, so that the longer one grows the
 * prefix cache over a used one; max_beams above 3 leaves cache slots
 * that no live beam uses. */
static void decode_equivalence(int tied, int max_beams)
{
    world w;
    peso_decode d;
    peso_err err;
    world_open(&w, tied, 11 + tied);
    cr_assert_eq(peso_decode_init(&d, w.s.m, max_beams, 3, &err), 0, "%s", err.msg);
    cr_assert_eq(d.n_cols, w.V, "every column is selected at first");
    float *lp = malloc((size_t)max_beams * w.V * sizeof(float));
    const int short_len = PLEN - 4;
    const int32_t short_parent[2] = {0, 0}, short_tok[2] = {w.base + 2, 3};
    cr_assert_eq(peso_decode_prefill(&d, w.prompt, short_len, lp, &err), 0, "%s", err.msg);
    check_lp(&w, lp, w.prompt, short_len, "short prefill");
    cr_assert_eq(peso_decode_step(&d, 2, short_parent, short_tok, lp, &err), 0, "%s", err.msg);
    for (int b = 0; b < 2; b++) {
        int32_t seq[PLEN];
        memcpy(seq, w.prompt, (size_t)short_len * sizeof *seq);
        seq[short_len] = short_tok[b];
        check_lp(&w, lp + (size_t)b * w.V, seq, short_len + 1, "short prompt's step");
    }
    cr_assert_eq(peso_decode_prefill(&d, w.prompt, PLEN, lp, &err), 0, "%s", err.msg);
    check_lp(&w, lp, w.prompt, PLEN, "prefill");
    /* per step: parents and tokens; the beams' sequences are tracked here */
    const int n_beams[3] = {3, 3, 2};
    const int32_t parent[3][3] = {{0, 0, 0}, {2, 0, 0}, {1, 2, 0}};
    const int32_t tok[3][3] = {
        {w.base + 1, w.base + 3, 5}, {w.base + 4, w.base + 6, w.base + 7}, {w.base + 9, 7, 0}};
    int32_t seq[3][PLEN + 3], nseq[3][PLEN + 3];
    for (int b = 0; b < 3; b++)
        memcpy(seq[b], w.prompt, sizeof w.prompt);
    for (int st = 0; st < 3; st++) {
        for (int b = 0; b < n_beams[st]; b++) {
            memcpy(nseq[b], seq[parent[st][b]], sizeof seq[0]);
            nseq[b][PLEN + st] = tok[st][b];
        }
        memcpy(seq, nseq, sizeof seq);
        cr_assert_eq(peso_decode_step(&d, n_beams[st], parent[st], tok[st], lp, &err), 0, "%s", err.msg);
        for (int b = 0; b < n_beams[st]; b++) {
            char what[64];
            snprintf(what, sizeof what, "step %d beam %d", st, b);
            check_lp(&w, lp + (size_t)b * w.V, seq[b], PLEN + st + 1, what);
        }
    }
    /* a fourth step exceeds max_steps; a parent out of range is refused */
    cr_assert_eq(peso_decode_step(&d, 1, parent[0], tok[0], lp, &err), -1);
    cr_assert(strstr(err.msg, "3 tokens"), "%s", err.msg);
    cr_assert_eq(peso_decode_prefill(&d, w.prompt, PLEN, lp, &err), 0, "%s", err.msg);
    const int32_t bad = 1;
    cr_assert_eq(peso_decode_step(&d, 1, &bad, tok[0], lp, &err), -1);
    cr_assert(strstr(err.msg, "parent is 1"), "%s", err.msg);
    free(lp);
    peso_decode_free(&d);
    world_close(&w);
}

Test(beam, decode_equals_full_forward_untied)
{
    decode_equivalence(0, 3);
}

Test(beam, decode_equals_full_forward_tied)
{
    decode_equivalence(1, 3);
}

Test(beam, decode_equals_full_forward_wide_cache)
{
    decode_equivalence(0, 5);
}

/* Prefill and steps of forking beams, for the decoder d as it is: lp
 * [1 + 2 + 2 rows, d.n_cols]. */
static void run_selected(world *w, peso_decode *d, float *lp)
{
    peso_err err;
    const int32_t par1[2] = {0, 0}, tok1[2] = {w->base + 1, 9}, par2[2] = {1, 1}, tok2[2] = {w->base + 5, 2};
    size_t row = (size_t)d->n_cols;
    cr_assert_eq(peso_decode_prefill(d, w->prompt, PLEN, lp, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_decode_step(d, 2, par1, tok1, lp + row, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_decode_step(d, 2, par2, tok2, lp + 3 * row, &err), 0, "%s", err.msg);
}

/* Selected columns (out of order, repeated, text and code tokens) are
 * exactly those columns of the whole-vocabulary rows; NULL selects the
 * whole vocabulary again; bad selections are refused and keep the last
 * one. */
Test(beam, decode_selected_columns)
{
    world w;
    peso_decode d;
    peso_err err;
    world_open(&w, 0, 51);
    cr_assert_eq(peso_decode_init(&d, w.s.m, 2, 2, &err), 0, "%s", err.msg);
    float *full = malloc((size_t)5 * w.V * sizeof(float)), *again = malloc((size_t)5 * w.V * sizeof(float));
    run_selected(&w, &d, full);
    const int32_t cols[6] = {w.V - 1, 0, w.base + 5, w.base + 5, 7, w.base};
    cr_assert_eq(peso_decode_select(&d, cols, 6, &err), 0, "%s", err.msg);
    cr_assert_eq(d.n_cols, 6);
    float sel[5 * 6];
    run_selected(&w, &d, sel);
    for (int r = 0; r < 5; r++)
        for (int j = 0; j < 6; j++)
            cr_assert(memcmp(&sel[r * 6 + j], &full[(size_t)r * w.V + cols[j]], sizeof(float)) == 0,
                      "row %d column %d (token %d): %.9g, whole row %.9g", r, j, cols[j],
                      (double)sel[r * 6 + j], (double)full[(size_t)r * w.V + cols[j]]);
    const int32_t bad[2] = {3, w.V};
    cr_assert_eq(peso_decode_select(&d, bad, 2, &err), -1);
    cr_assert(strstr(err.msg, "column 1 is token"), "%s", err.msg);
    cr_assert_eq(peso_decode_select(&d, cols, 0, &err), -1);
    cr_assert(strstr(err.msg, "0 columns"), "%s", err.msg);
    cr_assert_eq(d.n_cols, 6, "a refused selection keeps the last one");
    cr_assert_eq(peso_decode_select(&d, NULL, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(d.n_cols, w.V);
    run_selected(&w, &d, again);
    cr_assert(memcmp(again, full, (size_t)5 * w.V * sizeof(float)) == 0,
              "whole rows differ after reselecting");
    free(full);
    free(again);
    peso_decode_free(&d);
    world_close(&w);
}

/* No allocation in a decode step: with the backend's alloc counted, a
 * second prefill and steps of the same shapes allocate nothing (the
 * first may grow the scratch), nor does a second beam search. */
static int (*real_alloc)(peso_backend *be, void **p, size_t bytes, peso_err *err);
static int n_allocs;

static int counting_alloc(peso_backend *be, void **p, size_t bytes, peso_err *err)
{
    n_allocs++;
    return real_alloc(be, p, bytes, err);
}

Test(beam, decode_steps_allocate_nothing)
{
    world w;
    peso_decode d;
    peso_err err;
    world_open(&w, 0, 21);
    cr_assert_eq(peso_decode_init(&d, w.s.m, 3, 3, &err), 0, "%s", err.msg);
    float *lp = malloc((size_t)3 * w.V * sizeof(float));
    const int32_t parent[3] = {0, 0, 0}, tok[3] = {w.base + 1, w.base + 2, 5};
    peso_backend *be = w.s.m->be;
    real_alloc = be->alloc;
    be->alloc = counting_alloc;
    for (int round = 0; round < 2; round++) {
        n_allocs = 0;
        cr_assert_eq(peso_decode_prefill(&d, w.prompt, PLEN, lp, &err), 0, "%s", err.msg);
        for (int st = 0; st < 3; st++)
            cr_assert_eq(peso_decode_step(&d, 3, parent, tok, lp, &err), 0, "%s", err.msg);
        if (round == 1)
            cr_assert_eq(n_allocs, 0, "a repeated prefill and 3 steps allocated %d times", n_allocs);
    }
    peso_beam bs;
    int32_t leaves[4];
    double scores[4];
    int n;
    cr_assert_eq(peso_beam_init(&bs, w.s.m, 4, LEVELS, &err), 0, "%s", err.msg);
    for (int round = 0; round < 2; round++) {
        n_allocs = 0;
        cr_assert_eq(peso_beam_search(&bs, &w.t, &w.p, w.prompt, PLEN, leaves, scores, &n, &err), 0, "%s",
                     err.msg);
        if (round == 1)
            cr_assert_eq(n_allocs, 0, "a repeated beam search allocated %d times", n_allocs);
    }
    cr_assert_eq(bs.dec.n_cols, LEVELS * CODES, "the search selects the code tokens only");
    be->alloc = real_alloc;
    peso_beam_free(&bs);
    free(lp);
    peso_decode_free(&d);
    world_close(&w);
}

/* Exact scores of every trie node: the sum of its codes' log-probabilities,
 * each from a full forward of prompt + a leaf tuple below it (teacher
 * forcing; causal, so any leaf below gives the same prefix terms). */
static double *node_scores(world *w)
{
    peso_err err;
    const peso_trie *t = &w->t;
    int T = PLEN + LEVELS, B = t->n_leaves;
    int32_t *ids = malloc((size_t)B * T * sizeof(int32_t)), *lens = malloc((size_t)B * sizeof(int32_t));
    int32_t *pos = malloc((size_t)B * LEVELS * sizeof(int32_t));
    for (int j = 0; j < B; j++) {
        int32_t tuple[LEVELS];
        peso_trie_tuple(t, t->level_first[LEVELS] + j, tuple);
        memcpy(ids + (size_t)j * T, w->prompt, sizeof w->prompt);
        for (int l = 0; l < LEVELS; l++) {
            ids[(size_t)j * T + PLEN + l] = w->code_tab[l][tuple[l]];
            pos[j * LEVELS + l] = j * T + PLEN - 1 + l;
        }
        lens[j] = T;
    }
    peso_llama_batch b = {B, T, ids, lens, NULL};
    float *logits = malloc((size_t)B * LEVELS * w->V * sizeof(float));
    double *lsm = malloc((size_t)w->V * sizeof(double)), *score = calloc((size_t)t->n_nodes, sizeof(double));
    cr_assert_eq(peso_llama_logits(w->s.m, &b, pos, B * LEVELS, logits, &err), 0, "%s", err.msg);
    for (int j = 0; j < B; j++) {
        int32_t path[LEVELS + 1];
        path[LEVELS] = t->level_first[LEVELS] + j;
        for (int l = LEVELS; l > 0; l--)
            path[l - 1] = t->parent[path[l]];
        for (int l = 0; l < LEVELS; l++) {
            ref_log_softmax(logits + ((size_t)j * LEVELS + l) * w->V, w->V, lsm);
            score[path[l + 1]] = score[path[l]] + lsm[ids[(size_t)j * T + PLEN + l]];
        }
    }
    free(ids);
    free(lens);
    free(pos);
    free(logits);
    free(lsm);
    return score;
}

static const double *g_score;

static int by_score(const void *pa, const void *pb)
{
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    if (g_score[a] != g_score[b])
        return g_score[a] > g_score[b] ? -1 : 1;
    return (a > b) - (a < b);
}

/* A plain beam search over exact node scores: keep[0..*n) at the end. */
static void ref_beam(const peso_trie *t, const double *score, int beam, int32_t *keep, int *n)
{
    int32_t *cand = malloc((size_t)t->n_nodes * sizeof(int32_t));
    int nk = 1;
    keep[0] = 0;
    g_score = score;
    for (int l = 0; l < LEVELS; l++) {
        int nc = 0;
        for (int b = 0; b < nk; b++)
            for (int32_t c = t->child_start[keep[b]]; c < t->child_start[keep[b] + 1]; c++)
                cand[nc++] = c;
        qsort(cand, (size_t)nc, sizeof *cand, by_score);
        nk = nc < beam ? nc : beam;
        memcpy(keep, cand, (size_t)nk * sizeof *keep);
    }
    *n = nk;
    free(cand);
}

static void search(world *w, int beam, int32_t *leaves, double *scores, int *n)
{
    peso_beam bs;
    peso_err err;
    cr_assert_eq(peso_beam_init(&bs, w->s.m, beam, LEVELS, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_beam_search(&bs, &w->t, &w->p, w->prompt, PLEN, leaves, scores, n, &err), 0, "%s",
                 err.msg);
    peso_beam_free(&bs);
}

/* beam >= distinct tuples: the exact ranking of all of them. */
Test(beam, wide_beam_is_the_exact_ranking)
{
    world w;
    world_open(&w, 0, 21);
    double *score = node_scores(&w);
    int nl = w.t.n_leaves, n;
    cr_assert_eq(nl, N_ITEMS - 1, "item 19 shares item 3's tuple");
    int32_t *exact = malloc((size_t)nl * sizeof(int32_t)), leaves[32];
    double scores[32];
    for (int j = 0; j < nl; j++)
        exact[j] = w.t.level_first[LEVELS] + j;
    g_score = score;
    qsort(exact, (size_t)nl, sizeof *exact, by_score);
    search(&w, 32, leaves, scores, &n);
    cr_assert_eq(n, nl);
    for (int i = 0; i < nl; i++) {
        cr_assert_eq(leaves[i], exact[i], "rank %d: leaf %d, expected %d", i, leaves[i], exact[i]);
        cr_assert(fabs(scores[i] - score[exact[i]]) < 1e-4, "rank %d: %.6f vs %.6f", i, scores[i],
                  score[exact[i]]);
    }
    /* the shared tuple: one leaf, both items */
    int32_t leaf3 = peso_trie_find(&w.t, w.items + 3 * LEVELS), hits = 0, ni;
    const int32_t *it;
    for (int i = 0; i < n; i++)
        hits += leaves[i] == leaf3;
    cr_assert_eq(hits, 1);
    peso_trie_items(&w.t, leaf3, &it, &ni);
    cr_assert_eq(ni, 2);
    cr_assert_eq(it[0], 3);
    cr_assert_eq(it[1], 19);
    free(exact);
    free(score);
    world_close(&w);
}

/* Narrow beams: the list a beam search over the exact prefix scores
 * keeps, of length beam, descending, each score the tuple's exact one. */
Test(beam, narrow_beam_matches_reference_search)
{
    world w;
    world_open(&w, 0, 31);
    double *score = node_scores(&w);
    const int beams[] = {1, 2, 3, 5, 10};
    for (size_t k = 0; k < sizeof beams / sizeof beams[0]; k++) {
        int32_t leaves[16], ref[16];
        double scores[16];
        int n, nr;
        search(&w, beams[k], leaves, scores, &n);
        ref_beam(&w.t, score, beams[k], ref, &nr);
        cr_assert_eq(n, beams[k], "beam %d", beams[k]);
        cr_assert_eq(nr, n);
        for (int i = 0; i < n; i++) {
            cr_assert_eq(leaves[i], ref[i], "beam %d rank %d", beams[k], i);
            cr_assert(peso_trie_is_leaf(&w.t, leaves[i]));
            cr_assert(fabs(scores[i] - score[leaves[i]]) < 1e-4, "beam %d rank %d", beams[k], i);
            if (i > 0)
                cr_assert(scores[i] <= scores[i - 1]);
        }
    }
    free(score);
    world_close(&w);
}

Test(beam, mismatched_levels_are_refused)
{
    world w;
    peso_beam bs;
    peso_err err;
    int32_t leaves[4];
    double scores[4];
    int n;
    world_open(&w, 0, 41);
    cr_assert_eq(peso_beam_init(&bs, w.s.m, 4, LEVELS - 1, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_beam_search(&bs, &w.t, &w.p, w.prompt, PLEN, leaves, scores, &n, &err), -1);
    cr_assert(strstr(err.msg, "trie of 4 levels"), "%s", err.msg);
    peso_beam_free(&bs);
    world_close(&w);
}
