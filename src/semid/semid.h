/* Semantic IDs of the dataset's items: `levels` learned codes plus one
 * collision level that makes items sharing the learned codes distinct
 * (0, 1, 2, ... in dataset item order; items of later blocks continue the
 * count, so earlier items never change code). Sources: the RQ-VAE over item
 * features (text hashing encoder, an HDF5 embeddings file, or a base
 * model's mean final hidden states over the item text: modelfeat.h), or a
 * LETTER/LC-Rec `.index.json` imported as given. */
#ifndef PESO_SEMID_SEMID_H
#define PESO_SEMID_SEMID_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "conf/conf.h"
#include "semid/items.h"
#include "semid/rqvae.h"

#define PESO_SEMID_MAX_LEVELS 8

typedef struct peso_semid {
    size_t n_items;
    int n_levels;                          /* total token levels, collision level included (4) */
    int32_t *codes;                        /* [n_items x n_levels] */
    int level_size[PESO_SEMID_MAX_LEVELS]; /* vocabulary per level (256; the collision level: max+1) */
    /* Report */
    int imported;
    double collision_share; /* share of items whose collision code is > 0 */
    size_t distinct_tuples;
    peso_rqvae_report fit_report; /* on D1's items */
    peso_rqvae_report all_report; /* on all items, frozen model */
} peso_semid;

/* Builds the IDs for the items per conf.semid (fit on items first kept
 * in block 1, encode the rest frozen). */
int peso_semid_build(peso_semid *s, const peso_semid_items *items, const peso_conf *c, int verbose,
                     peso_err *err);
/* Imports `.index.json` ({"<item id>": ["<a_1>", "<b_2>", ...]}); every
 * dataset item must have an entry (error names the item), tokens must be
 * "<x_N>" with the level letters in order. */
int peso_semid_import(peso_semid *s, const char *path, const peso_semid_items *items, peso_err *err);
/* Writes `.index.json` keyed by the items' original ids. */
int peso_semid_export(const peso_semid *s, const char *path, const peso_semid_items *items, peso_err *err);
/* Assigns the collision level: codes has n rows of (learned + 1) columns,
 * the last one is written. Fails if a group exceeds max_collide. */
int peso_semid_assign_collisions(int32_t *codes, size_t n, int learned, int max_collide, peso_err *err);
/* Reads an HDF5 embeddings file (/embeddings float32 [n, d], /ids strings
 * [n]) into rows for the dataset items (error names a missing item). */
int peso_semid_read_embeddings(const char *path, const peso_semid_items *items, float **x, int *dim,
                               peso_err *err);
void peso_semid_free(peso_semid *s);

#endif
