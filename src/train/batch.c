#include "train/batch.h"

#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

size_t peso_pair_tokens(const peso_pairs *pairs, const peso_prompt *p, size_t i)
{
    return peso_prompt_example_len(p, (size_t)(pairs->off[i + 1] - pairs->off[i]));
}

int peso_steps_plan(peso_steps *s, const peso_pairs *pairs, const peso_prompt *p, uint64_t seed, int stage,
                    int epoch, size_t max_windows, long batch_tokens, peso_err *err)
{
    memset(s, 0, sizeof *s);
    if (pairs->n == 0)
        return peso_errf(err, "stage %d has no training windows", stage);
    s->win = peso_malloc(pairs->n * sizeof *s->win);
    for (size_t i = 0; i < pairs->n; i++)
        s->win[i] = (int32_t)i;
    peso_rng r;
    peso_rng_seed(&r, seed, PESO_STEPS_RNG_STREAM ^ ((uint64_t)stage << 20) ^ (uint64_t)epoch);
    peso_rng_shuffle_i32(&r, s->win, pairs->n);
    s->n_win = max_windows && max_windows < pairs->n ? max_windows : pairs->n;
    s->start = peso_malloc((s->n_win + 1) * sizeof *s->start);
    s->labels = peso_malloc(s->n_win * sizeof *s->labels);
    s->tokens = peso_malloc(s->n_win * sizeof *s->tokens);
    long tok = 0;
    for (size_t i = 0; i < s->n_win; i++) {
        long t = (long)peso_pair_tokens(pairs, p, (size_t)s->win[i]);
        if (i == 0 || tok + t > batch_tokens) {
            s->start[s->n_steps] = i;
            s->labels[s->n_steps] = 0;
            s->tokens[s->n_steps] = 0;
            s->n_steps++;
            tok = 0;
        }
        tok += t;
        s->tokens[s->n_steps - 1] += t;
        s->labels[s->n_steps - 1] += p->levels;
    }
    s->start[s->n_steps] = s->n_win;
    return 0;
}

void peso_steps_free(peso_steps *s)
{
    free(s->win);
    free(s->start);
    free(s->labels);
    free(s->tokens);
    memset(s, 0, sizeof *s);
}

void peso_batcher_init(peso_batcher *b, const peso_dataset *d, const peso_prompt *p, const peso_pairs *pairs)
{
    memset(b, 0, sizeof *b);
    b->d = d;
    b->p = p;
    b->pairs = pairs;
}

void peso_batcher_free(peso_batcher *b)
{
    free(b->order);
    free(b->ids);
    free(b->labels);
    free(b->lens);
    free(b->hist);
    memset(b, 0, sizeof *b);
}

static const peso_batcher *sort_ctx;

static int longer_first(const void *x, const void *y)
{
    const peso_batcher *b = sort_ctx;
    int32_t i = *(const int32_t *)x, j = *(const int32_t *)y;
    size_t ti = peso_pair_tokens(b->pairs, b->p, (size_t)i), tj = peso_pair_tokens(b->pairs, b->p, (size_t)j);
    if (ti != tj)
        return ti > tj ? -1 : 1;
    return (i > j) - (i < j);
}

int peso_batcher_begin(peso_batcher *b, const int32_t *win, size_t n)
{
    peso_grow((void **)&b->order, &b->cap_order, n, sizeof *b->order);
    memcpy(b->order, win, n * sizeof *win);
    sort_ctx = b;
    qsort(b->order, n, sizeof *b->order, longer_first);
    sort_ctx = NULL;
    return 0;
}

int peso_batcher_next(peso_batcher *b, size_t n, size_t *pos, long micro_tokens, peso_llama_batch *out,
                      long *real_tokens, peso_err *err)
{
    if (*pos >= n)
        return 0;
    const peso_pairs *pr = b->pairs;
    const peso_prompt *p = b->p;
    int L = b->d->n_levels;
    size_t T = peso_pair_tokens(pr, p, (size_t)b->order[*pos]); /* longest first: the batch's T */
    size_t rows = 1;
    while (*pos + rows < n && (long)((rows + 1) * T) <= micro_tokens)
        rows++;
    peso_grow((void **)&b->ids, &b->cap_ids, rows * T, sizeof *b->ids);
    peso_grow((void **)&b->labels, &b->cap_labels, rows * T, sizeof *b->labels);
    peso_grow((void **)&b->lens, &b->cap_rows, rows, sizeof *b->lens);
    *real_tokens = 0;
    for (size_t r = 0; r < rows; r++) {
        size_t i = (size_t)b->order[*pos + r];
        int64_t lo = pr->off[i], hi = pr->off[i + 1];
        size_t nh = (size_t)(hi - lo);
        peso_grow((void **)&b->hist, &b->cap_hist, (nh + 1) * (size_t)L, sizeof *b->hist);
        for (size_t h = 0; h < nh; h++)
            memcpy(b->hist + h * L, b->d->codes + (size_t)pr->hist[lo + (int64_t)h] * L, (size_t)L * sizeof *b->hist);
        int32_t *target = b->hist + nh * L;
        memcpy(target, b->d->codes + (size_t)pr->target[i] * L, (size_t)L * sizeof *target);
        size_t len;
        int32_t *ids = b->ids + r * T, *lab = b->labels + r * T;
        if (peso_prompt_example(p, b->hist, nh, target, ids, lab, T, &len, err) < 0)
            return peso_err_prefix(err, "training window %zu", i);
        for (size_t t = len; t < T; t++) {
            ids[t] = 0;
            lab[t] = PESO_LABEL_IGNORE;
        }
        b->lens[r] = (int32_t)len;
        *real_tokens += (long)len;
    }
    out->B = (int)rows;
    out->T = (int)T;
    out->ids = b->ids;
    out->lens = b->lens;
    out->labels = b->labels;
    *pos += rows;
    return 1;
}
