/* The data protocol (DESIGN.md "Data protocol"), exactly:
 * dedup of (user, item) keeping the earliest, optional year window, stable
 * global time sort, blocks at b_k = floor(n * c_k), per-block user filter,
 * leave-one-out, sliding windows, block-local (or `all`) history.
 * The result uses compact dataset indices: items and users that survive the
 * per-block filter in some block, numbered in order of first appearance in
 * the time-sorted kept stream (block 1 first). */
#ifndef PESO_DATA_SPLIT_H
#define PESO_DATA_SPLIT_H

#include <stddef.h>
#include <stdint.h>

#include "data/raw.h"

/* A set of (history -> target) pairs; history of pair p is
 * hist[off[p] .. off[p+1]), oldest first, at most `window` items. */
typedef struct peso_pairs {
    size_t n;
    int32_t *user;   /* dataset user index */
    int32_t *target; /* dataset item index */
    int64_t *off;    /* n + 1 offsets into hist */
    int32_t *hist;
} peso_pairs;

typedef struct peso_block_stats {
    int64_t users, new_users, items, new_items, interactions, train_pairs;
    double avg_seq_len, sparsity;
} peso_block_stats;

typedef struct peso_block {
    int k;                 /* 1-based block number */
    int64_t ts_min, ts_max;/* time span of the block's raw interactions (before the filter) */
    size_t n_raw;          /* interactions in the block before the user filter */
    /* Kept users' block-local sequences, time order: user u_i's items are
     * seq_item[seq_off[i] .. seq_off[i+1]). */
    size_t n_seq;
    int32_t *seq_user;
    int64_t *seq_off;
    int32_t *seq_item;
    peso_pairs train, valid, test;
    peso_block_stats st;
} peso_block;

typedef struct peso_split {
    int n_blocks;
    peso_block *b;
    size_t n_items, n_users;    /* distinct kept over all blocks */
    int32_t *item_raw;          /* [n_items] raw item index of dataset item i */
    int32_t *item_first_block;  /* [n_items] 1-based block where the item is first kept */
    int32_t *user_raw;          /* [n_users] */
    size_t n_after_dedup, n_after_years;
    int64_t total_interactions;
} peso_split;

typedef struct peso_split_opts {
    const double *fractions;   /* n_blocks fractions, sum 1 */
    int n_blocks;
    int min_user_interactions; /* >= 3 */
    int window;                /* >= 1 */
    int user_disjoint;         /* 0 = chronological */
    int history_all;           /* 0 = block-local */
    int64_t year_min, year_max;/* 0 = unbounded */
    uint64_t seed;             /* user-disjoint assignment */
} peso_split_opts;

void peso_split_opts_from_conf(peso_split_opts *o, const peso_conf *c);
/* Runs the protocol; fails with a clear message for an empty block after
 * filtering, or a chronological split of data without timestamps. */
int peso_split_run(const peso_raw *raw, const peso_split_opts *o, peso_split *out, peso_err *err);
void peso_split_free(peso_split *s);

/* Block boundaries: bounds[0] = 0, bounds[k] = floor(n * c_k) with c_k
 * summed left to right in double, bounds[n_blocks] = n. */
void peso_split_bounds(size_t n, const double *fractions, int n_blocks, size_t *bounds);

#endif
