/* One stage's evaluation (DESIGN.md, Evaluation): for each (history ->
 * target) pair of a dataset split, the prompt of the history items' code
 * tuples, a constrained beam search over the trie of the items valid at
 * the stage, and the target's rank among the generated tuples added to a
 * peso_metrics.
 *
 * Pairs are taken in a range [lo, hi) so that evaluation ranks can shard
 * the users and reduce their metric sums (peso_metrics_sums) afterwards.
 *
 * A target is ranked by its tuple (eval/metrics.h): it is a hit at rank r
 * when its tuple is the r-th generated leaf. A target whose tuple is not
 * in the stage's trie (an item first seen after the stage, which no valid
 * item shares a tuple with) can never be generated and counts as a miss. */
#ifndef PESO_EVAL_EVALUATE_H
#define PESO_EVAL_EVALUATE_H

#include <stddef.h>

#include "common/err.h"
#include "data/dataset.h"
#include "eval/beam.h"
#include "eval/metrics.h"
#include "eval/trie.h"
#include "model/prompt.h"

enum { PESO_EVAL_VALID = 0, PESO_EVAL_TEST = 1 };

/* "valid" or "test" (the metrics file's split names); NULL otherwise. */
const char *peso_eval_split_name(int split);

/* Called with the pairs done so far out of total, about every 2% of them
 * and once at the end. */
typedef void (*peso_eval_progress_fn)(void *ctx, size_t done, size_t total);

/* The trie over the items valid at stage (1-based): those with
 * d->split.item_first_block[i] <= stage, i.e. seen in D1..Dt. Errors name
 * the stage (out of 1 .. n_blocks, or no item valid). */
int peso_eval_trie_for_stage(peso_trie *t, const peso_dataset *d, int stage, peso_err *err);

/* Evaluates pairs lo .. hi - 1 (lo <= hi <= pairs->n) and ADDS each one's
 * rank to out, which the caller has initialised with its cut-offs
 * (peso_metrics_init), so that several ranges accumulate into one. bs
 * sets the beam width; bs, t, p and d must agree on the levels. History
 * and target items are dataset item numbers, checked against
 * d->split.n_items. fn may be NULL. */
int peso_eval_pairs(peso_beam *bs, const peso_trie *t, const peso_prompt *p, const peso_dataset *d,
                    const peso_pairs *pairs, size_t lo, size_t hi, peso_metrics *out,
                    peso_eval_progress_fn fn, void *ctx, peso_err *err);

/* The trie for stage, a beam state of width beam on m, and
 * peso_eval_pairs over pairs lo .. min(hi, n) - 1 of block stage's
 * PESO_EVAL_VALID or PESO_EVAL_TEST pairs (hi = SIZE_MAX: to the end).
 * Adds to out as peso_eval_pairs does. Errors name the stage and split
 * (stage out of range, a split with no pairs, lo past the end). */
int peso_eval_stage(peso_llama *m, const peso_prompt *p, const peso_dataset *d, int stage, int split,
                    int beam, size_t lo, size_t hi, peso_metrics *out, peso_eval_progress_fn fn, void *ctx,
                    peso_err *err);

#endif
