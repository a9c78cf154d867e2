/* The dataset file (<out_dir>/dataset.h5): everything the trainer and the
 * evaluator need, written once by peso-prep, inspectable with h5dump.
 *
 * Layout (format_version 1); int32/int64 are little-endian, strings are
 * variable-length UTF-8:
 *   /                       attributes: format_version int32 (= 1),
 *                           config string (the resolved YAML),
 *                           fingerprint string (peso_conf_data_fingerprint),
 *                           n_blocks int32, window int32,
 *                           n_after_dedup int64, n_after_years int64
 *   /items/id               string [n_items]    original item ids
 *   /items/codes            int32 [n_items, n_levels]  semantic IDs
 *                           attributes: level_size int32 [n_levels],
 *                           imported int32
 *   /items/first_block      int32 [n_items]     1-based block first kept in
 *   /users/id               string [n_users]    original user ids
 *   /blocks/<k>/            k = 1..n_blocks; attributes (int64 unless said):
 *                           users, new_users, items, new_items,
 *                           interactions, avg_seq_len (double),
 *                           sparsity (double), train_pairs, valid_pairs,
 *                           test_pairs, ts_min, ts_max, raw_interactions
 *   /blocks/<k>/{train,valid,test}/
 *                           user int32 [P], target int32 [P],
 *                           offsets int64 [P+1], history int32 [offsets[P]]
 *                           (pair p: history[offsets[p] .. offsets[p+1]),
 *                           oldest first)
 *   /blocks/<k>/seq/        user int32 [S], offsets int64 [S+1],
 *                           items int32 [offsets[S]]  (the kept users'
 *                           block sequences, time order)
 * Item and user numbers are the split's compact dataset indices
 * (data/split.h). Datasets with 0 elements are stored with shape [0]. */
#ifndef PESO_DATA_DATASET_H
#define PESO_DATA_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "data/raw.h"
#include "data/split.h"

#define PESO_DATASET_FORMAT 1
/* Most code levels an item's semantic ID may have. */
#define PESO_DATASET_MAX_LEVELS 8

/* The items' semantic IDs as the file stores them (made by semid/). */
typedef struct peso_dataset_codes {
    size_t n_items;
    int n_levels;                            /* 1 .. PESO_DATASET_MAX_LEVELS */
    const int32_t *codes;                    /* [n_items x n_levels] */
    int level_size[PESO_DATASET_MAX_LEVELS]; /* codes per level */
    int imported;                            /* 1: from an .index.json */
} peso_dataset_codes;

typedef struct peso_dataset {
    int format_version;
    char *config; /* resolved YAML the dataset was made from */
    char *fingerprint;
    int window;
    char **item_id; /* [split.n_items] original ids */
    char **user_id; /* [split.n_users] */
    int n_levels;
    int32_t *codes; /* [split.n_items x n_levels] */
    int level_size[PESO_DATASET_MAX_LEVELS];
    int imported;
    /* Blocks (pairs, sequences, statistics), counts and item_first_block;
     * item_raw and user_raw are NULL: raw indices belong to a load, the
     * ids above replace them. */
    peso_split split;
} peso_dataset;

/* Writes path atomically (temporary name, then rename). ids must cover
 * split->n_items items; window is the split's history window. */
int peso_dataset_write(const char *path, const peso_raw *raw, const peso_split *split,
                       const peso_dataset_codes *ids, int window, const char *config_yaml,
                       const char *fingerprint, peso_err *err);
/* Reads the whole file; errors name the file and the attribute or dataset
 * that is missing, has the wrong type or shape, or holds an out-of-range
 * index. */
int peso_dataset_read(const char *path, peso_dataset *out, peso_err *err);
/* Reads only the fingerprint attribute (to decide whether to rebuild). */
int peso_dataset_read_fingerprint(const char *path, char *out, size_t n, peso_err *err);
void peso_dataset_free(peso_dataset *d);

#endif
