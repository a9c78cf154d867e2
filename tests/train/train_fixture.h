/* Hand-made inputs of the trainer's unit tests: a recommender prompt
 * whose pieces have fixed lengths (the ids are valid for a tiny model
 * whose code tokens follow its base vocabulary), and training windows
 * with chosen history lengths. No tokenizer and no dataset file: the
 * lengths are what the step planning reads, and the tests write their
 * expected values from them in closed form. */
#ifndef PESO_TESTS_TRAIN_TRAIN_FIXTURE_H
#define PESO_TESTS_TRAIN_TRAIN_FIXTURE_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "data/split.h"
#include "model/prompt.h"

/* Piece lengths of the hand-made prompt. */
enum { TP_HEAD = 5, TP_SEP = 2, TP_TAIL = 4, TP_HEAD_TAIL = 8 };

static inline int32_t *tp_ids(size_t n, int32_t first)
{
    int32_t *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = first + (int32_t)i;
    return v;
}

/* levels levels of level_size[l] codes; BOS id 1, text ids from 3 up,
 * code tokens from first_code on, level after level. */
static inline void tprompt_init(peso_prompt *p, int levels, const int *level_size, int32_t first_code)
{
    memset(p, 0, sizeof *p);
    p->levels = levels;
    p->bos = 1;
    p->head = tp_ids(TP_HEAD, 3);
    p->n_head = TP_HEAD;
    p->sep = tp_ids(TP_SEP, 9);
    p->n_sep = TP_SEP;
    p->tail = tp_ids(TP_TAIL, 12);
    p->n_tail = TP_TAIL;
    p->head_tail = tp_ids(TP_HEAD_TAIL, 3);
    p->n_head_tail = TP_HEAD_TAIL;
    for (int l = 0; l < levels; l++) {
        p->level_size[l] = level_size[l];
        p->code_id[l] = tp_ids((size_t)level_size[l], first_code);
        first_code += level_size[l];
    }
}

static inline void tprompt_free(peso_prompt *p)
{
    free(p->head);
    free(p->sep);
    free(p->tail);
    free(p->head_tail);
    for (int l = 0; l < p->levels; l++)
        free(p->code_id[l]);
    memset(p, 0, sizeof *p);
}

/* n windows, window i with hist_len[i] history items; items (history and
 * target) drawn from [0, n_items). */
static inline void tpairs_make(peso_pairs *pr, size_t n, const int *hist_len, int n_items, uint64_t seed)
{
    peso_rng r;
    peso_rng_seed(&r, seed, 3);
    memset(pr, 0, sizeof *pr);
    pr->n = n;
    pr->user = malloc((n ? n : 1) * sizeof *pr->user);
    pr->target = malloc((n ? n : 1) * sizeof *pr->target);
    pr->off = malloc((n + 1) * sizeof *pr->off);
    pr->off[0] = 0;
    for (size_t i = 0; i < n; i++)
        pr->off[i + 1] = pr->off[i] + hist_len[i];
    pr->hist = malloc((size_t)(pr->off[n] ? pr->off[n] : 1) * sizeof *pr->hist);
    for (size_t i = 0; i < n; i++) {
        pr->user[i] = (int32_t)i;
        pr->target[i] = (int32_t)peso_rng_below(&r, (uint64_t)n_items);
    }
    for (int64_t j = 0; j < pr->off[n]; j++)
        pr->hist[j] = (int32_t)peso_rng_below(&r, (uint64_t)n_items);
}

static inline void tpairs_free(peso_pairs *pr)
{
    free(pr->user);
    free(pr->target);
    free(pr->off);
    free(pr->hist);
    memset(pr, 0, sizeof *pr);
}

#endif
