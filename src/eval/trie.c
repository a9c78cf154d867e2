#include "eval/trie.h"

#include <stdlib.h>
#include <string.h>

void peso_trie_free(peso_trie *t)
{
    free(t->code);
    free(t->parent);
    free(t->child_start);
    free(t->item_start);
    free(t->items);
    memset(t, 0, sizeof *t);
}

static int check_shape(size_t n_rows, int n_levels, const int *level_size, size_t n_items, peso_err *err)
{
    if (n_levels < 1 || n_levels > PESO_SEMID_MAX_LEVELS)
        return peso_errf(err, "trie: %d code levels, expected 1 to %d", n_levels, PESO_SEMID_MAX_LEVELS);
    for (int l = 0; l < n_levels; l++)
        if (level_size[l] < 1)
            return peso_errf(err, "trie: level %d has %d codes, expected at least 1", l, level_size[l]);
    if (n_items == 0)
        return peso_errf(err, "trie: no valid items to build it from");
    /* Node and item numbers are int32: at most one node per item and level. */
    if (n_rows > INT32_MAX || n_items > (size_t)(INT32_MAX - 1) / (size_t)n_levels)
        return peso_errf(err, "trie: %zu items of %d levels exceed the int32 node numbering", n_items,
                         n_levels);
    return 0;
}

/* The listed rows in ascending order, checking range, repeats and codes.
 * seen[r] = 1 + the list entry that named row r. */
static int32_t *listed_rows(const int32_t *codes, size_t n_rows, int n_levels, const int *level_size,
                            const int32_t *item_ids, size_t n_items, peso_err *err)
{
    int32_t *seen = peso_calloc(n_rows ? n_rows : 1, sizeof *seen);
    int rc = 0;
    for (size_t e = 0; e < n_items && rc == 0; e++) {
        int64_t r = item_ids ? item_ids[e] : (int64_t)e;
        if (r < 0 || (size_t)r >= n_rows)
            rc = peso_errf(err, "trie: item list entry %zu is item %lld, outside the %zu dataset items", e,
                           (long long)r, n_rows);
        else if (seen[r])
            rc = peso_errf(err, "trie: dataset item %lld is listed twice (entries %d and %zu)", (long long)r,
                           seen[r] - 1, e);
        else
            seen[r] = (int32_t)e + 1;
        for (int l = 0; l < n_levels && rc == 0; l++) {
            int32_t c = codes[(size_t)r * n_levels + l];
            if (c < 0 || c >= level_size[l])
                rc = peso_errf(err, "trie: dataset item %lld has code %d at level %d, expected 0 to %d",
                               (long long)r, c, l, level_size[l] - 1);
        }
    }
    int32_t *rows = NULL;
    if (rc == 0) {
        rows = peso_malloc(n_items * sizeof *rows);
        size_t k = 0;
        for (size_t r = 0; r < n_rows; r++)
            if (seen[r])
                rows[k++] = (int32_t)r;
    }
    free(seen);
    return rows;
}

/* Sorts rows by tuple, lexicographically: one stable counting sort per
 * level, last level first, so rows with equal tuples stay ascending. */
static void radix_sort(int32_t *rows, size_t n, const int32_t *codes, int n_levels, const int *level_size)
{
    int max_size = 0;
    for (int l = 0; l < n_levels; l++)
        if (level_size[l] > max_size)
            max_size = level_size[l];
    size_t *count = peso_malloc(((size_t)max_size + 1) * sizeof *count);
    int32_t *tmp = peso_malloc(n * sizeof *tmp);
    for (int l = n_levels - 1; l >= 0; l--) {
        memset(count, 0, ((size_t)level_size[l] + 1) * sizeof *count);
        for (size_t i = 0; i < n; i++)
            count[codes[(size_t)rows[i] * n_levels + l] + 1]++;
        for (int c = 0; c < level_size[l]; c++)
            count[c + 1] += count[c];
        for (size_t i = 0; i < n; i++)
            tmp[count[codes[(size_t)rows[i] * n_levels + l]]++] = rows[i];
        memcpy(rows, tmp, n * sizeof *rows);
    }
    free(tmp);
    free(count);
}

/* diverge[i]: the first level where sorted row i differs from row i - 1
 * (n_levels when equal, 0 for the first row); row i opens new nodes at
 * depths diverge[i] + 1 .. n_levels. Fills the node count of each depth. */
static int32_t *divergence(const int32_t *rows, size_t n, const int32_t *codes, int n_levels,
                           int32_t *depth_nodes)
{
    int32_t *diverge = peso_malloc(n * sizeof *diverge);
    memset(depth_nodes, 0, ((size_t)n_levels + 1) * sizeof *depth_nodes);
    depth_nodes[0] = 1;
    for (size_t i = 0; i < n; i++) {
        int f = 0;
        if (i > 0) {
            const int32_t *a = codes + (size_t)rows[i - 1] * n_levels,
                          *b = codes + (size_t)rows[i] * n_levels;
            while (f < n_levels && a[f] == b[f])
                f++;
        }
        diverge[i] = f;
        for (int d = f + 1; d <= n_levels; d++)
            depth_nodes[d]++;
    }
    return diverge;
}

/* Creates the nodes in sorted order, which numbers each depth
 * lexicographically and keeps every node's children consecutive. */
static void link_nodes(peso_trie *t, const int32_t *rows, const int32_t *diverge, const int32_t *codes)
{
    int L = t->n_levels;
    int32_t next[PESO_SEMID_MAX_LEVELS + 1], cur[PESO_SEMID_MAX_LEVELS + 1];
    for (int d = 0; d <= L; d++)
        next[d] = t->level_first[d];
    cur[0] = 0;
    t->code[0] = -1;
    t->parent[0] = -1;
    for (int32_t i = 0; i < t->n_items; i++) {
        const int32_t *row = codes + (size_t)rows[i] * L;
        for (int d = diverge[i] + 1; d <= L; d++) {
            int32_t k = next[d]++;
            t->code[k] = row[d - 1];
            t->parent[k] = cur[d - 1];
            cur[d] = k;
        }
        if (diverge[i] < L)
            t->item_start[cur[L] - t->level_first[L]] = i;
        t->items[i] = rows[i];
    }
    t->item_start[t->n_leaves] = t->n_items;
    /* Children counts, then their prefix sums from node 1 on. */
    memset(t->child_start, 0, ((size_t)t->n_nodes + 1) * sizeof *t->child_start);
    for (int32_t k = 1; k < t->n_nodes; k++)
        t->child_start[t->parent[k] + 1]++;
    t->child_start[0] = 1;
    for (int32_t k = 0; k < t->n_nodes; k++)
        t->child_start[k + 1] += t->child_start[k];
}

static void count_sharing(peso_trie *t)
{
    t->max_items_per_leaf = 0;
    t->n_shared_leaves = 0;
    for (int32_t j = 0; j < t->n_leaves; j++) {
        int32_t m = t->item_start[j + 1] - t->item_start[j];
        if (m > t->max_items_per_leaf)
            t->max_items_per_leaf = m;
        if (m > 1)
            t->n_shared_leaves++;
    }
}

int peso_trie_build(peso_trie *t, const int32_t *codes, size_t n_rows, int n_levels, const int *level_size,
                    const int32_t *item_ids, size_t n_items, peso_err *err)
{
    memset(t, 0, sizeof *t);
    if (check_shape(n_rows, n_levels, level_size, n_items, err))
        return -1;
    int32_t *rows = listed_rows(codes, n_rows, n_levels, level_size, item_ids, n_items, err);
    if (!rows)
        return -1;
    radix_sort(rows, n_items, codes, n_levels, level_size);
    int32_t depth_nodes[PESO_SEMID_MAX_LEVELS + 1];
    int32_t *diverge = divergence(rows, n_items, codes, n_levels, depth_nodes);

    t->n_levels = n_levels;
    memcpy(t->level_size, level_size, (size_t)n_levels * sizeof *level_size);
    t->level_first[0] = 0;
    for (int d = 0; d <= n_levels; d++)
        t->level_first[d + 1] = t->level_first[d] + depth_nodes[d];
    t->n_nodes = t->level_first[n_levels + 1];
    t->n_leaves = depth_nodes[n_levels];
    t->n_items = (int32_t)n_items;
    t->code = peso_malloc((size_t)t->n_nodes * sizeof *t->code);
    t->parent = peso_malloc((size_t)t->n_nodes * sizeof *t->parent);
    t->child_start = peso_malloc(((size_t)t->n_nodes + 1) * sizeof *t->child_start);
    t->item_start = peso_malloc(((size_t)t->n_leaves + 1) * sizeof *t->item_start);
    t->items = peso_malloc(n_items * sizeof *t->items);
    link_nodes(t, rows, diverge, codes);
    count_sharing(t);
    free(diverge);
    free(rows);
    return 0;
}

int peso_trie_depth(const peso_trie *t, int32_t node)
{
    int d = 0;
    while (node >= t->level_first[d + 1])
        d++;
    return d;
}

void peso_trie_children(const peso_trie *t, int32_t node, const int32_t **codes, int32_t *first, int32_t *n)
{
    *first = t->child_start[node];
    *n = t->child_start[node + 1] - t->child_start[node];
    *codes = t->code + *first;
}

int32_t peso_trie_child(const peso_trie *t, int32_t node, int32_t code)
{
    int32_t lo = t->child_start[node], hi = t->child_start[node + 1];
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (t->code[mid] < code)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < t->child_start[node + 1] && t->code[lo] == code ? lo : -1;
}

void peso_trie_items(const peso_trie *t, int32_t leaf, const int32_t **items, int32_t *n)
{
    if (!peso_trie_is_leaf(t, leaf)) {
        *items = t->items;
        *n = 0;
        return;
    }
    int32_t j = leaf - t->level_first[t->n_levels];
    *items = t->items + t->item_start[j];
    *n = t->item_start[j + 1] - t->item_start[j];
}

int32_t peso_trie_find(const peso_trie *t, const int32_t *tuple)
{
    int32_t node = peso_trie_root(t);
    for (int l = 0; l < t->n_levels && node >= 0; l++)
        node = peso_trie_child(t, node, tuple[l]);
    return node;
}

void peso_trie_tuple(const peso_trie *t, int32_t leaf, int32_t *tuple)
{
    for (int d = t->n_levels; d >= 1; d--) {
        tuple[d - 1] = t->code[leaf];
        leaf = t->parent[leaf];
    }
}
