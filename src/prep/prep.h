/* The whole data preparation: raw files -> protocol -> semantic IDs ->
 * <out_dir>/dataset.h5 and <out_dir>/stats.json (+ optional .index.json).
 * peso-prep is a front end over this; peso-train calls it when the dataset
 * is missing or was made from another data config. */
#ifndef PESO_PREP_PREP_H
#define PESO_PREP_PREP_H

#include <stdio.h>

#include "conf/conf.h"
#include "data/raw.h"
#include "data/split.h"
#include "semid/items.h"

typedef struct peso_prep_timing {
    double load_s, split_s, semid_s, write_s;
    size_t interactions; /* raw interactions loaded */
    size_t bad_lines;
} peso_prep_timing;

/* log: progress and the statistics table go here (NULL = quiet). */
int peso_prep_run(const peso_conf *c, FILE *log, peso_prep_timing *t, peso_err *err);
/* <out_dir>/dataset.h5 */
void peso_prep_dataset_path(const peso_conf *c, char *out, size_t n);
/* The split's items as semid takes them: dataset item i's original id
 * and text (from raw, through split->item_raw) and its first block. The
 * strings stay raw's; free with peso_prep_semid_items_free. */
void peso_prep_semid_items(peso_semid_items *it, const peso_raw *raw, const peso_split *split);
void peso_prep_semid_items_free(peso_semid_items *it);

#endif
