/* One stage's evaluation (see eval/evaluate.h). */
#include "eval/evaluate.h"

#include <stdlib.h>
#include <string.h>

const char *peso_eval_split_name(int split)
{
    switch (split) {
    case PESO_EVAL_VALID: return "valid";
    case PESO_EVAL_TEST: return "test";
    default: return NULL;
    }
}

static int check_stage(const peso_dataset *d, int stage, peso_err *err)
{
    if (stage < 1 || stage > d->split.n_blocks)
        return peso_errf(err, "evaluation: stage %d out of range, the dataset has stages 1 .. %d", stage,
                         d->split.n_blocks);
    return 0;
}

int peso_eval_trie_for_stage(peso_trie *t, const peso_dataset *d, int stage, peso_err *err)
{
    memset(t, 0, sizeof *t);
    if (check_stage(d, stage, err) < 0)
        return -1;
    size_t n = 0;
    int32_t *valid = peso_malloc((d->split.n_items + 1) * sizeof *valid);
    for (size_t i = 0; i < d->split.n_items; i++)
        if (d->split.item_first_block[i] <= stage)
            valid[n++] = (int32_t)i;
    int rc = 0;
    if (n == 0)
        rc = peso_errf(err, "evaluation: stage %d: no item is valid (first seen in blocks 1 .. %d)", stage,
                       stage);
    else if (peso_trie_build(t, d->codes, d->split.n_items, d->n_levels, d->level_size, valid, n, err) < 0)
        rc = peso_err_prefix(err, "evaluation: trie of stage %d", stage);
    free(valid);
    return rc;
}

/* Buffers sized for the pairs of one range. */
typedef struct eval_buf {
    int32_t *hist; /* [longest history x levels] codes */
    int32_t *ids;  /* [cap] prompt tokens */
    size_t cap;
    int32_t *leaves;
    double *scores;
} eval_buf;

static int check_pair(const peso_dataset *d, const peso_pairs *q, size_t i, peso_err *err)
{
    if (q->off[i + 1] < q->off[i])
        return peso_errf(err, "evaluation: pair %zu: history offsets %lld > %lld", i, (long long)q->off[i],
                         (long long)q->off[i + 1]);
    if (q->target[i] < 0 || (size_t)q->target[i] >= d->split.n_items)
        return peso_errf(err, "evaluation: pair %zu: target item %d out of range [0, %zu)", i, q->target[i],
                         d->split.n_items);
    for (int64_t h = q->off[i]; h < q->off[i + 1]; h++)
        if (q->hist[h] < 0 || (size_t)q->hist[h] >= d->split.n_items)
            return peso_errf(err, "evaluation: pair %zu: history item %lld is %d, out of range [0, %zu)", i,
                             (long long)(h - q->off[i]), q->hist[h], d->split.n_items);
    return 0;
}

static int buf_init(eval_buf *b, const peso_beam *bs, const peso_prompt *p, const peso_dataset *d,
                    const peso_pairs *pairs, size_t lo, size_t hi, peso_err *err)
{
    size_t longest = 0;
    memset(b, 0, sizeof *b);
    for (size_t i = lo; i < hi; i++) {
        if (check_pair(d, pairs, i, err) < 0)
            return -1;
        size_t nh = (size_t)(pairs->off[i + 1] - pairs->off[i]);
        longest = nh > longest ? nh : longest;
    }
    /* HEAD + TAIL is tokenized on its own, so no history may be longer. */
    size_t cap0 = peso_prompt_len(p, 0), cap1 = peso_prompt_len(p, longest);
    b->cap = cap0 > cap1 ? cap0 : cap1;
    b->hist = peso_malloc((longest * (size_t)d->n_levels + 1) * sizeof *b->hist);
    b->ids = peso_malloc(b->cap * sizeof *b->ids);
    b->leaves = peso_malloc((size_t)bs->beam * sizeof *b->leaves);
    b->scores = peso_malloc((size_t)bs->beam * sizeof *b->scores);
    return 0;
}

static void buf_free(eval_buf *b)
{
    free(b->hist);
    free(b->ids);
    free(b->leaves);
    free(b->scores);
}

/* The target's 1-based rank for pair i, 0 for a miss. */
static int eval_one(peso_beam *bs, const peso_trie *t, const peso_prompt *p, const peso_dataset *d,
                    const peso_pairs *pairs, size_t i, eval_buf *b, int *rank, peso_err *err)
{
    size_t L = (size_t)d->n_levels, nh = (size_t)(pairs->off[i + 1] - pairs->off[i]), P;
    const int32_t *items = pairs->hist + pairs->off[i];
    for (size_t h = 0; h < nh; h++)
        memcpy(b->hist + h * L, d->codes + (size_t)items[h] * L, L * sizeof *b->hist);
    int n;
    if (peso_prompt_build(p, b->hist, nh, b->ids, b->cap, &P, err) < 0 ||
        peso_beam_search(bs, t, p, b->ids, (int)P, b->leaves, b->scores, &n, err) < 0)
        return peso_err_prefix(err, "evaluation: pair %zu (user %d)", i, pairs->user[i]);
    int32_t leaf = peso_trie_find(t, d->codes + (size_t)pairs->target[i] * L);
    *rank = leaf < 0 ? 0 : peso_metrics_rank(b->leaves, n, leaf);
    return 0;
}

int peso_eval_pairs(peso_beam *bs, const peso_trie *t, const peso_prompt *p, const peso_dataset *d,
                    const peso_pairs *pairs, size_t lo, size_t hi, peso_metrics *out,
                    peso_eval_progress_fn fn, void *ctx, peso_err *err)
{
    if (lo > hi || hi > pairs->n)
        return peso_errf(err, "evaluation: pairs %zu .. %zu requested, expected lo <= hi <= %zu", lo, hi,
                         pairs->n);
    if (t->n_levels != d->n_levels)
        return peso_errf(err, "evaluation: trie of %d levels, dataset codes of %d; expected equal",
                         t->n_levels, d->n_levels);
    eval_buf b;
    if (buf_init(&b, bs, p, d, pairs, lo, hi, err) < 0)
        return -1;
    size_t total = hi - lo, step = total / 50 ? total / 50 : 1;
    int rc = 0;
    for (size_t i = lo; i < hi; i++) {
        int rank = 0;
        if (eval_one(bs, t, p, d, pairs, i, &b, &rank, err) < 0) {
            rc = -1;
            break;
        }
        peso_metrics_add(out, rank);
        size_t done = i - lo + 1;
        if (fn && (done % step == 0 || done == total))
            fn(ctx, done, total);
    }
    if (rc == 0 && fn && total == 0)
        fn(ctx, 0, 0);
    buf_free(&b);
    return rc;
}

static const peso_pairs *stage_pairs(const peso_dataset *d, int stage, int split, peso_err *err)
{
    if (check_stage(d, stage, err) < 0)
        return NULL;
    if (!peso_eval_split_name(split)) {
        peso_errf(err, "evaluation: stage %d: split %d, expected PESO_EVAL_VALID or PESO_EVAL_TEST", stage,
                  split);
        return NULL;
    }
    const peso_block *blk = &d->split.b[stage - 1];
    const peso_pairs *pairs = split == PESO_EVAL_VALID ? &blk->valid : &blk->test;
    if (pairs->n == 0) {
        peso_errf(err, "evaluation: stage %d, %s split: no pairs to evaluate", stage,
                  peso_eval_split_name(split));
        return NULL;
    }
    return pairs;
}

int peso_eval_stage(peso_llama *m, const peso_prompt *p, const peso_dataset *d, int stage, int split,
                    int beam, size_t lo, size_t hi, peso_metrics *out, peso_eval_progress_fn fn, void *ctx,
                    peso_err *err)
{
    const peso_pairs *pairs = stage_pairs(d, stage, split, err);
    if (!pairs)
        return -1;
    const char *name = peso_eval_split_name(split);
    hi = hi < pairs->n ? hi : pairs->n;
    if (lo > hi)
        return peso_errf(err, "evaluation: stage %d, %s split: first pair %zu past the last (%zu pairs)",
                         stage, name, lo, pairs->n);
    peso_trie t;
    peso_beam bs;
    if (peso_eval_trie_for_stage(&t, d, stage, err) < 0)
        return -1;
    int rc = peso_beam_init(&bs, m, beam, d->n_levels, err);
    if (rc == 0)
        rc = peso_eval_pairs(&bs, &t, p, d, pairs, lo, hi, out, fn, ctx, err);
    if (rc < 0)
        peso_err_prefix(err, "stage %d, %s split", stage, name);
    peso_beam_free(&bs);
    peso_trie_free(&t);
    return rc;
}
