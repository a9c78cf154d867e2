/* The constrained-decoding trie: the code tuples of the items valid for a
 * stage, so that each beam-search step asks "which codes may follow this
 * prefix" and gets them as one sorted array (to mask a log-softmax over a
 * level's code tokens), and a finished tuple maps back to its items.
 *
 * Nodes are numbered level by level, and within a level in lexicographic
 * order of their prefixes: the root is node 0, depth d holds nodes
 * level_first[d] .. level_first[d + 1] - 1 and the leaves are the last
 * level (depth n_levels). Because of that order the children of a node are
 * consecutive node ids, sorted by code, so a node's children need only the
 * first child's id and a count; code[k] is the code on the edge into node
 * k, and the children's codes are code[first .. first + n). Leaf j
 * (= node - level_first[n_levels]) holds items[item_start[j] ..
 * item_start[j + 1]), the items that share its tuple, in dataset item
 * order. Every array is allocated once; nothing is per node. */
#ifndef PESO_EVAL_TRIE_H
#define PESO_EVAL_TRIE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "semid/semid.h"

typedef struct peso_trie {
    int n_levels;
    int level_size[PESO_SEMID_MAX_LEVELS];
    int32_t n_nodes;                                /* root included */
    int32_t level_first[PESO_SEMID_MAX_LEVELS + 2]; /* first node of each depth; [n_levels + 1] = n_nodes */
    int32_t *code;        /* [n_nodes] code on the edge into the node (-1 for the root) */
    int32_t *parent;      /* [n_nodes] (-1 for the root) */
    int32_t *child_start; /* [n_nodes + 1] node k's children are child_start[k] .. child_start[k + 1] - 1 */
    int32_t *item_start;  /* [n_leaves + 1] */
    int32_t *items;       /* [n_items] dataset item numbers, grouped by leaf */
    /* Counts */
    int32_t n_leaves;           /* distinct tuples */
    int32_t n_items;            /* items the trie was built from */
    int32_t max_items_per_leaf; /* largest group of items sharing one tuple */
    int32_t n_shared_leaves;    /* tuples carried by more than one item */
} peso_trie;

/* Builds the trie over the items item_ids[0 .. n_items) (NULL: the items
 * 0 .. n_items - 1), numbers into codes, a table of n_rows rows of
 * n_levels codes (the dataset's items/codes). Fails, naming the item and level, when an item
 * number is out of range or listed twice, when a code is outside
 * [0, level_size[level]), when n_levels is not in 1 ..
 * PESO_SEMID_MAX_LEVELS, or when there are no items. O(n_rows + n_items *
 * n_levels + sum of level sizes): a radix sort of the tuples, no
 * comparisons. */
int peso_trie_build(peso_trie *t, const int32_t *codes, size_t n_rows, int n_levels, const int *level_size,
                    const int32_t *item_ids, size_t n_items, peso_err *err);
void peso_trie_free(peso_trie *t);

static inline int32_t peso_trie_root(const peso_trie *t)
{
    (void)t;
    return 0;
}

/* Depth of node: 0 for the root, n_levels for a leaf. */
int peso_trie_depth(const peso_trie *t, int32_t node);
static inline int peso_trie_is_leaf(const peso_trie *t, int32_t node)
{
    return node >= t->level_first[t->n_levels];
}

/* The codes allowed after node's prefix, ascending (*codes[i] leads to
 * node *first + i); *n = 0 at a leaf. */
void peso_trie_children(const peso_trie *t, int32_t node, const int32_t **codes, int32_t *first, int32_t *n);
/* The child of node along code, or -1 (binary search over the children). */
int32_t peso_trie_child(const peso_trie *t, int32_t node, int32_t code);
/* The items that carry leaf's tuple, ascending; *n = 0 if node is not a
 * leaf. */
void peso_trie_items(const peso_trie *t, int32_t leaf, const int32_t **items, int32_t *n);
/* The leaf of tuple (n_levels codes), or -1 when no valid item has it. */
int32_t peso_trie_find(const peso_trie *t, const int32_t *tuple);
/* Writes the n_levels codes of leaf's tuple into tuple. */
void peso_trie_tuple(const peso_trie *t, int32_t leaf, int32_t *tuple);

#endif
