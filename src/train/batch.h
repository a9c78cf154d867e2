/* Windows to optimizer steps to micro-batches (train/train.h): the
 * epoch's shuffled order, its cut into steps by the token budget, and the
 * padded [B, T] batches of a step's windows. */
#ifndef PESO_TRAIN_BATCH_H
#define PESO_TRAIN_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "data/dataset.h"
#include "model/llama.h"
#include "model/prompt.h"

/* RNG stream tag of the epoch shuffles; the stream is tag ^ stage << 20 ^ epoch. */
#define PESO_STEPS_RNG_STREAM 0x5368756600000000ull /* "Shuf" */

typedef struct peso_steps {
    size_t n_win;
    int32_t *win;   /* pair indices in training order */
    size_t n_steps;
    size_t *start;  /* step s = win[start[s] .. start[s + 1]) */
    long *labels;   /* label tokens of each step */
    long *tokens;   /* tokens of each step (no padding) */
} peso_steps;

/* The plan of one epoch of stage over pairs: all pairs shuffled by
 * (seed, stage, epoch), the first max_windows kept (0 = all), then cut
 * into steps: a step takes windows while its tokens stay within
 * batch_tokens (a longer window is a step of its own). */
int peso_steps_plan(peso_steps *s, const peso_pairs *pairs, const peso_prompt *p, uint64_t seed, int stage,
                    int epoch, size_t max_windows, long batch_tokens, peso_err *err);
void peso_steps_free(peso_steps *s);

/* Tokens of pair i's training example. */
size_t peso_pair_tokens(const peso_pairs *pairs, const peso_prompt *p, size_t i);

/* Host buffers of the batches being built. */
typedef struct peso_batcher {
    const peso_dataset *d;
    const peso_prompt *p;
    const peso_pairs *pairs;
    int32_t *order; /* a step's windows, longest first */
    size_t cap_order;
    int32_t *ids, *labels, *lens, *hist;
    size_t cap_ids, cap_labels, cap_rows, cap_hist;
} peso_batcher;

void peso_batcher_init(peso_batcher *b, const peso_dataset *d, const peso_prompt *p, const peso_pairs *pairs);
void peso_batcher_free(peso_batcher *b);

/* Orders windows win[0..n) longest first (ties by position) for packing;
 * then peso_batcher_next fills out with the next micro-batch: as many
 * windows as fit in micro_tokens padded tokens (at least one), from
 * *pos on; *pos advances. Returns 1 when a batch was made, 0 at the end,
 * -1 on error. */
int peso_batcher_begin(peso_batcher *b, const int32_t *win, size_t n);
int peso_batcher_next(peso_batcher *b, size_t n, size_t *pos, long micro_tokens, peso_llama_batch *out,
                      long *real_tokens, peso_err *err);

#endif
