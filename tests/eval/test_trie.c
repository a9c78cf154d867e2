/* The constrained-decoding trie against brute force over the tuples, hand
 * cases (shared tuples, one item, errors) and the real LETTER index. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/rng.h"
#include "eval/trie.h"
#include "skip.h"

/* Hand case: 5 items of 3 levels, listed out of order; items 0, 1 and 4
 * share (1, 2, 3). Level sizes {2, 3, 4}. */
static const int32_t hand_codes[] = {1, 2, 3, 1, 2, 3, 1, 0, 3, 0, 2, 3, 1, 2, 3};
static const int hand_size[] = {2, 3, 4};

Test(trie, shared_tuples_hand_case)
{
    const int32_t list[] = {4, 0, 2, 1, 3};
    peso_trie t;
    peso_err err;
    cr_assert_eq(peso_trie_build(&t, hand_codes, 5, 3, hand_size, list, 5, &err), 0, "%s", err.msg);
    /* prefixes: depth 1 {0, 1}, depth 2 {(0,2), (1,0), (1,2)}, depth 3 the same three extended by 3 */
    cr_assert_eq(t.n_nodes, 1 + 2 + 3 + 3);
    const int32_t first[] = {0, 1, 3, 6, 9};
    for (int d = 0; d <= 4; d++)
        cr_assert_eq(t.level_first[d], first[d], "depth %d", d);
    cr_assert_eq(t.n_leaves, 3);
    cr_assert_eq(t.n_items, 5);
    cr_assert_eq(t.max_items_per_leaf, 3);
    cr_assert_eq(t.n_shared_leaves, 1);

    const int32_t *codes, *items;
    int32_t child, n;
    peso_trie_children(&t, peso_trie_root(&t), &codes, &child, &n);
    cr_assert_eq(n, 2);
    cr_assert_eq(codes[0], 0);
    cr_assert_eq(codes[1], 1);
    /* after (1): codes 0 and 2 */
    peso_trie_children(&t, child + 1, &codes, &child, &n);
    cr_assert_eq(n, 2);
    cr_assert_eq(codes[0], 0);
    cr_assert_eq(codes[1], 2);
    cr_assert_eq(peso_trie_depth(&t, child), 2);

    const int32_t shared[] = {1, 2, 3};
    int32_t leaf = peso_trie_find(&t, shared);
    cr_assert(peso_trie_is_leaf(&t, leaf));
    cr_assert_eq(leaf, 8); /* the lexicographically last of the three leaves */
    peso_trie_items(&t, leaf, &items, &n);
    cr_assert_eq(n, 3);
    cr_assert_eq(items[0], 0);
    cr_assert_eq(items[1], 1);
    cr_assert_eq(items[2], 4);
    const int32_t other[] = {0, 2, 3};
    peso_trie_items(&t, peso_trie_find(&t, other), &items, &n);
    cr_assert_eq(n, 1);
    cr_assert_eq(items[0], 3);
    const int32_t absent[] = {0, 2, 2}, out_of_range[] = {7, 2, 3};
    cr_assert_eq(peso_trie_find(&t, absent), -1);
    cr_assert_eq(peso_trie_find(&t, out_of_range), -1);
    /* an inner node has no items */
    peso_trie_items(&t, 1, &items, &n);
    cr_assert_eq(n, 0);
    peso_trie_free(&t);
}

Test(trie, subset_leaves_out_unlisted_items)
{
    const int32_t list[] = {3, 2};
    peso_trie t;
    peso_err err;
    cr_assert_eq(peso_trie_build(&t, hand_codes, 5, 3, hand_size, list, 2, &err), 0, "%s", err.msg);
    cr_assert_eq(t.n_leaves, 2);
    cr_assert_eq(t.n_shared_leaves, 0);
    cr_assert_eq(t.max_items_per_leaf, 1);
    const int32_t only_unlisted[] = {1, 2, 3};
    cr_assert_eq(peso_trie_find(&t, only_unlisted), -1);
    const int32_t *codes;
    int32_t child, n;
    peso_trie_children(&t, 0, &codes, &child, &n);
    cr_assert_eq(n, 2);
    peso_trie_children(&t, child + 1, &codes, &child, &n); /* after (1): only 0, item 2's */
    cr_assert_eq(n, 1);
    cr_assert_eq(codes[0], 0);
    peso_trie_free(&t);
}

Test(trie, single_item)
{
    const int32_t codes4[] = {9, 9, 9, 9, 5, 0, 255, 3};
    const int size[] = {256, 256, 256, 4};
    const int32_t list[] = {1};
    peso_trie t;
    peso_err err;
    cr_assert_eq(peso_trie_build(&t, codes4, 2, 4, size, list, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(t.n_nodes, 5);
    cr_assert_eq(t.n_leaves, 1);
    cr_assert_eq(t.max_items_per_leaf, 1);
    int32_t node = 0;
    for (int d = 0; d < 4; d++) {
        const int32_t *c;
        int32_t child, n;
        peso_trie_children(&t, node, &c, &child, &n);
        cr_assert_eq(n, 1, "depth %d", d);
        cr_assert_eq(c[0], codes4[4 + d], "depth %d", d);
        node = child;
    }
    cr_assert(peso_trie_is_leaf(&t, node));
    const int32_t *items;
    int32_t n;
    peso_trie_items(&t, node, &items, &n);
    cr_assert_eq(n, 1);
    cr_assert_eq(items[0], 1);
    int32_t back[4];
    peso_trie_tuple(&t, node, back);
    cr_assert_eq(memcmp(back, codes4 + 4, sizeof back), 0);
    peso_trie_free(&t);
}

Test(trie, errors_name_the_item_and_level)
{
    peso_trie t;
    peso_err err = {{0}};
    const int small[] = {2, 3, 3}; /* item 0's code 3 at level 2 is out of range */
    cr_assert_eq(peso_trie_build(&t, hand_codes, 5, 3, small, NULL, 5, &err), -1);
    cr_assert(strstr(err.msg, "dataset item 0 has code 3 at level 2, expected 0 to 2"), "%s", err.msg);
    const int32_t far[] = {0, 5};
    cr_assert_eq(peso_trie_build(&t, hand_codes, 5, 3, hand_size, far, 2, &err), -1);
    cr_assert(strstr(err.msg, "entry 1 is item 5, outside the 5 dataset items"), "%s", err.msg);
    const int32_t twice[] = {2, 0, 2};
    cr_assert_eq(peso_trie_build(&t, hand_codes, 5, 3, hand_size, twice, 3, &err), -1);
    cr_assert(strstr(err.msg, "dataset item 2 is listed twice (entries 0 and 2)"), "%s", err.msg);
    cr_assert_eq(peso_trie_build(&t, hand_codes, 5, 0, hand_size, NULL, 5, &err), -1);
    cr_assert(strstr(err.msg, "0 code levels, expected 1 to 8"), "%s", err.msg);
    cr_assert_eq(peso_trie_build(&t, hand_codes, 5, 3, hand_size, NULL, 0, &err), -1);
    cr_assert(strstr(err.msg, "no valid items"), "%s", err.msg);
    const int32_t neg[] = {0, 0, -1};
    cr_assert_eq(peso_trie_build(&t, neg, 1, 3, hand_size, NULL, 1, &err), -1);
    cr_assert(strstr(err.msg, "code -1 at level 2"), "%s", err.msg);
}

/* ---- brute force on random tuples ---- */

enum { BF_LEVELS = 4, BF_ROWS = 400 };
static const int bf_size[BF_LEVELS] = {3, 4, 2, 5}; /* 120 tuples: many shared prefixes and tuples */

/* Sorted distinct next codes after prefix p (depth d) among the listed
 * rows; returns their number, -1 when no listed row has the prefix. */
static int brute_next(const int32_t *codes, const int32_t *list, int n, const int32_t *p, int d,
                      int32_t *next)
{
    int present[8] = {0}, any = 0;
    for (int i = 0; i < n; i++) {
        const int32_t *row = codes + (size_t)list[i] * BF_LEVELS;
        if (memcmp(row, p, (size_t)d * sizeof *p) == 0) {
            any = 1;
            if (d < BF_LEVELS)
                present[row[d]] = 1;
        }
    }
    if (!any)
        return -1;
    int m = 0;
    for (int c = 0; d < BF_LEVELS && c < bf_size[d]; c++)
        if (present[c])
            next[m++] = c;
    return m;
}

/* Node of prefix p through the trie's own child lookups. */
static int32_t walk(const peso_trie *t, const int32_t *p, int d)
{
    int32_t node = 0;
    for (int l = 0; l < d && node >= 0; l++)
        node = peso_trie_child(t, node, p[l]);
    return node;
}

/* Every prefix of every depth, enumerated over the full code space. */
static void check_all_prefixes(const peso_trie *t, const int32_t *codes, const int32_t *list, int n)
{
    int32_t count[BF_LEVELS + 1] = {0};
    int leaves_shared = 0, max_group = 0;
    for (int d = 0; d <= BF_LEVELS; d++) {
        int total = 1;
        for (int l = 0; l < d; l++)
            total *= bf_size[l];
        for (int x = 0; x < total; x++) {
            int32_t p[BF_LEVELS], next[8];
            for (int l = d - 1, r = x; l >= 0; l--) {
                p[l] = r % bf_size[l];
                r /= bf_size[l];
            }
            int m = brute_next(codes, list, n, p, d, next);
            int32_t node = walk(t, p, d);
            cr_assert_eq(node >= 0, m >= 0, "depth %d prefix %d: in trie %d, in data %d", d, x, node, m);
            if (m < 0)
                continue;
            count[d]++;
            cr_assert_eq(peso_trie_depth(t, node), d);
            const int32_t *c, *items;
            int32_t first, k;
            peso_trie_children(t, node, &c, &first, &k);
            cr_assert_eq(k, m, "depth %d prefix %d: %d children, expected %d", d, x, k, m);
            for (int i = 0; i < m; i++) {
                cr_assert_eq(c[i], next[i], "depth %d prefix %d child %d", d, x, i);
                cr_assert_eq(t->parent[first + i], node);
                cr_assert_eq(t->code[first + i], next[i]);
            }
            if (d < BF_LEVELS)
                continue;
            /* a full tuple: exactly the listed rows carrying it, ascending */
            cr_assert(peso_trie_is_leaf(t, node));
            cr_assert_eq(peso_trie_find(t, p), node);
            int32_t back[BF_LEVELS];
            peso_trie_tuple(t, node, back);
            cr_assert_eq(memcmp(back, p, sizeof back), 0);
            peso_trie_items(t, node, &items, &k);
            int j = 0;
            for (int r = 0; r < BF_ROWS; r++) {
                int listed = 0;
                for (int i = 0; i < n; i++)
                    listed |= list[i] == r;
                if (listed && memcmp(codes + (size_t)r * BF_LEVELS, p, sizeof back) == 0) {
                    cr_assert(j < k, "leaf %d lacks row %d", node, r);
                    cr_assert_eq(items[j], r);
                    j++;
                }
            }
            cr_assert_eq(j, k);
            leaves_shared += k > 1;
            if (k > max_group)
                max_group = k;
        }
    }
    for (int d = 0; d <= BF_LEVELS; d++)
        cr_assert_eq(t->level_first[d + 1] - t->level_first[d], count[d], "depth %d", d);
    cr_assert_eq(t->n_leaves, count[BF_LEVELS]);
    cr_assert_eq(t->n_shared_leaves, leaves_shared);
    cr_assert_eq(t->max_items_per_leaf, max_group);
    cr_assert_eq(t->n_items, n);
}

Test(trie, brute_force_random_tuples)
{
    int32_t *codes = malloc(BF_ROWS * BF_LEVELS * sizeof *codes);
    int32_t list[BF_ROWS];
    peso_rng r;
    for (uint64_t seed = 1; seed <= 6; seed++) {
        peso_rng_seed(&r, seed, 7);
        for (int i = 0; i < BF_ROWS; i++)
            for (int l = 0; l < BF_LEVELS; l++)
                codes[i * BF_LEVELS + l] = (int32_t)peso_rng_below(&r, (uint64_t)bf_size[l]);
        for (int i = 0; i < BF_ROWS; i++)
            list[i] = i;
        peso_rng_shuffle_i32(&r, list, BF_ROWS);
        /* a shuffled subset, from sparse (some prefixes absent) to all rows */
        int n = (int)(seed == 6 ? BF_ROWS : 5 + 30 * (seed - 1));
        peso_trie t;
        peso_err err;
        cr_assert_eq(peso_trie_build(&t, codes, BF_ROWS, BF_LEVELS, bf_size, list, (size_t)n, &err), 0, "%s",
                     err.msg);
        check_all_prefixes(&t, codes, list, n);
        peso_trie_free(&t);
    }
    free(codes);
}

/* ---- the real LETTER index ---- */

static int cmp_tuple(const void *a, const void *b)
{
    return memcmp(a, b, 4 * sizeof(int32_t));
}

/* Tuples are compared as bytes: only equality matters for the groups. */
static void count_groups(const int32_t *codes, int n, int *distinct, int *max_group, int *shared)
{
    int32_t *s = malloc((size_t)n * 4 * sizeof *s);
    memcpy(s, codes, (size_t)n * 4 * sizeof *s);
    qsort(s, (size_t)n, 4 * sizeof *s, cmp_tuple);
    *distinct = *max_group = *shared = 0;
    for (int i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && cmp_tuple(s + i * 4, s + j * 4) == 0; j++)
            ;
        (*distinct)++;
        *shared += j - i > 1;
        if (j - i > *max_group)
            *max_group = j - i;
    }
    free(s);
}

static int32_t *read_letter(const char *path, int *n)
{
    peso_err err;
    cJSON *root = peso_json_load(path, "LETTER index", &err);
    cr_assert(root, "%s", err.msg);
    *n = cJSON_GetArraySize(root);
    int32_t *codes = malloc((size_t)*n * 4 * sizeof *codes);
    for (int i = 0; i < *n; i++) {
        char key[16];
        snprintf(key, sizeof key, "%d", i);
        cJSON *toks = peso_json_get(root, key);
        cr_assert(cJSON_IsArray(toks) && cJSON_GetArraySize(toks) == 4, "item %d", i);
        for (int l = 0; l < 4; l++) {
            char letter;
            int code;
            const char *s = cJSON_GetArrayItem(toks, l)->valuestring;
            cr_assert_eq(sscanf(s, "<%c_%d>", &letter, &code), 2, "item %d token %s", i, s);
            cr_assert_eq(letter, 'a' + l);
            codes[i * 4 + l] = code;
        }
    }
    cJSON_Delete(root);
    return codes;
}

Test(trie, letter_instruments_index)
{
    const char *path = PESO_SHARED_DATA "/letter-instruments-2018/Instruments.index.json";
    FILE *f = fopen(path, "rb");
    if (!f)
        peso_test_missing("%s not present (shared data folder absent)", path);
    fclose(f);
    int n;
    int32_t *codes = read_letter(path, &n);
    cr_assert_eq(n, 9922);
    const int size[] = {256, 256, 256, 256};
    peso_trie t;
    peso_err err;
    cr_assert_eq(peso_trie_build(&t, codes, (size_t)n, 4, size, NULL, (size_t)n, &err), 0, "%s", err.msg);

    int distinct, max_group, shared;
    count_groups(codes, n, &distinct, &max_group, &shared);
    cr_assert_eq(distinct, 9897);
    cr_assert_eq(t.n_leaves, distinct);
    cr_assert_eq(t.n_items, 9922);
    cr_assert_eq(t.max_items_per_leaf, max_group);
    cr_assert_eq(t.n_shared_leaves, shared);
    /* counted with Python over the same file */
    cr_assert_eq(max_group, 3);
    cr_assert_eq(shared, 23);
    const int32_t per_depth[] = {1, 150, 6702, 9608, 9897};
    for (int d = 0; d <= 4; d++)
        cr_assert_eq(t.level_first[d + 1] - t.level_first[d], per_depth[d], "depth %d", d);
    /* ("<a_69>", "<b_149>", "<c_213>", "<d_0>") is carried by items 2851, 5311 and 7489 */
    const int32_t triple[] = {69, 149, 213, 0};
    const int32_t *items;
    int32_t k;
    peso_trie_items(&t, peso_trie_find(&t, triple), &items, &k);
    cr_assert_eq(k, 3);
    cr_assert_eq(items[0], 2851);
    cr_assert_eq(items[1], 5311);
    cr_assert_eq(items[2], 7489);
    /* every item finds a leaf that lists it */
    for (int i = 0; i < n; i++) {
        int32_t leaf = peso_trie_find(&t, codes + i * 4);
        cr_assert(leaf >= 0 && peso_trie_is_leaf(&t, leaf), "item %d", i);
        peso_trie_items(&t, leaf, &items, &k);
        int found = 0;
        for (int j = 0; j < k; j++)
            found |= items[j] == i;
        cr_assert(found, "item %d missing from its leaf", i);
    }
    peso_trie_free(&t);
    free(codes);
}
