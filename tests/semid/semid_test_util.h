/* Shared helpers of the semid tests: hand-made datasets and synthetic
 * feature vectors. */
#ifndef PESO_TESTS_SEMID_UTIL_H
#define PESO_TESTS_SEMID_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "semid/items.h"

/* The items of a dataset of n items with ids[i], optional texts (NULL:
 * none) and first blocks (NULL: all 1). The strings stay the caller's. */
static inline void test_items(peso_semid_items *it, size_t n, const char *const *ids,
                              const char *const *texts, const int *first_block)
{
    const char **id = malloc((n ? n : 1) * sizeof *id), **text = malloc((n ? n : 1) * sizeof *text);
    size_t *len = malloc((n ? n : 1) * sizeof *len);
    int32_t *block = malloc((n ? n : 1) * sizeof *block);
    for (size_t i = 0; i < n; i++) {
        id[i] = ids[i];
        text[i] = texts ? texts[i] : NULL;
        len[i] = text[i] ? strlen(text[i]) : 0;
        block[i] = first_block ? first_block[i] : 1;
    }
    *it = (peso_semid_items){n, id, text, len, block};
}

static inline void test_items_free(peso_semid_items *it)
{
    free(it->id);
    free(it->text);
    free((size_t *)it->text_len);
    free((int32_t *)it->first_block);
    memset(it, 0, sizeof *it);
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
