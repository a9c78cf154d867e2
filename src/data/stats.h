/* Per-block dataset statistics (the paper's Table 4) as a file and a table.
 * stats.json schema, exactly:
 *   {"blocks": [{"block": 1, "users": U, "new_users": U1, "items": I,
 *                "new_items": I1, "interactions": N, "avg_seq_len": N/U,
 *                "sparsity": 1-N/(U*I), "train_pairs": P, "valid_pairs": U,
 *                "test_pairs": U}, ...],
 *    "total": {"users": .., "items": .., "interactions": ..}}
 * Doubles are spelled as Python's json spells them (the shortest form that
 * reads back to the same value: 0.25, 20.0, 1e-05), so another
 * implementation's numbers can be compared exactly. */
#ifndef PESO_DATA_STATS_H
#define PESO_DATA_STATS_H

#include <stdio.h>

#include "common/err.h"
#include "data/split.h"

/* The stats.json text (malloc'd, ends with a newline). */
char *peso_stats_json(const peso_split *s);
/* Writes <out_dir>/stats.json atomically. */
int peso_stats_write(const char *out_dir, const peso_split *s, peso_err *err);
/* Prints the same numbers as a table: rows D1..DT and D1:T, columns Users,
 * New Users, Items, New Items, Interactions, Avg Seq Len, Sparsity, Train
 * pairs (NA where a total has no meaning, as in the paper). */
void peso_stats_print(FILE *f, const peso_split *s);

#endif
