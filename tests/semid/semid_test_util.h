/* Shared helpers of the semid tests: hand-made datasets and synthetic
 * feature vectors. */
#ifndef PESO_TESTS_SEMID_UTIL_H
#define PESO_TESTS_SEMID_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "data/raw.h"
#include "data/split.h"

/* A dataset of n items with ids[i], optional texts and first blocks
 * (NULL: all 1). The raw table interns a filtered-out item first and the
 * ids in reverse order, so raw and dataset indices differ (item_raw[i] =
 * n - i) as they do after the protocol. */
static inline void test_dataset(peso_raw *raw, peso_split *split, size_t n, const char *const *ids,
                                const char *const *texts, const int *first_block)
{
    peso_raw_init(raw);
    memset(split, 0, sizeof *split);
    split->n_items = n;
    split->item_raw = malloc((n ? n : 1) * sizeof *split->item_raw);
    split->item_first_block = malloc((n ? n : 1) * sizeof *split->item_first_block);
    peso_raw_add(raw, "u", 1, "filtered-out", 12, 0);
    for (size_t k = n; k-- > 0;)
        peso_raw_add(raw, "u", 1, ids[k], strlen(ids[k]), (int64_t)k);
    for (size_t i = 0; i < n; i++) {
        split->item_raw[i] = peso_strtab_find(raw->items, ids[i], strlen(ids[i]));
        split->item_first_block[i] = first_block ? first_block[i] : 1;
        if (texts && texts[i])
            peso_raw_add_text(raw, split->item_raw[i], texts[i], strlen(texts[i]), 1 << 20);
    }
}

static inline void test_dataset_free(peso_raw *raw, peso_split *split)
{
    free(split->item_raw);
    free(split->item_first_block);
    memset(split, 0, sizeof *split);
    peso_raw_free(raw);
}

/* n points in k Gaussian clusters of dimension d: cluster c's mean has
 * `spread` on a few random coordinates, noise sigma; label[i] = i % k. */
static inline float *test_clusters(size_t n, int d, int k, double spread, double sigma, uint64_t seed,
                                   int *label)
{
    peso_rng r;
    peso_rng_seed(&r, seed, 99);
    double *mean = calloc((size_t)k * d, sizeof *mean);
    for (int c = 0; c < k; c++)
        for (int j = 0; j < d; j++)
            mean[(size_t)c * d + j] = spread * peso_rng_normal(&r);
    float *x = malloc(n * (size_t)d * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        int c = (int)(i % (size_t)k);
        if (label)
            label[i] = c;
        for (int j = 0; j < d; j++)
            x[i * d + j] = (float)(mean[(size_t)c * d + j] + sigma * peso_rng_normal(&r));
    }
    free(mean);
    return x;
}

/* A fresh directory under /tmp (path[] of at least 64 bytes). */
static inline int test_tmpdir(char *path)
{
    strcpy(path, "/tmp/peso-semid-XXXXXX");
    return mkdtemp(path) ? 0 : -1;
}

#endif
