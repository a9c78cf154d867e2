/* The data protocol on hand-built interaction tables whose expected blocks,
 * sequences and pairs are worked out by hand in the comments. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "data/raw.h"
#include "data/split.h"

static const double five[5] = {0.6, 0.1, 0.1, 0.1, 0.1};
static const double one[1] = {1.0};
static const double halves[2] = {0.5, 0.5};

static peso_split_opts opts(const double *f, int n, int min_user, int window)
{
    peso_split_opts o = {0};
    o.fractions = f;
    o.n_blocks = n;
    o.min_user_interactions = min_user;
    o.window = window;
    o.seed = 42;
    return o;
}

static void add(peso_raw *r, const char *u, const char *i, int64_t ts)
{
    peso_raw_add(r, u, strlen(u), i, strlen(i), ts);
}

/* Adds user u with items "<prefix>0" .. "<prefix>(n-1)" at ts0, ts0+1, ... */
static void add_run(peso_raw *r, const char *u, const char *prefix, int n, int64_t ts0)
{
    char item[64];
    for (int j = 0; j < n; j++) {
        snprintf(item, sizeof item, "%s%d", prefix, j);
        add(r, u, item, ts0 + j);
    }
}

static int run(const peso_raw *r, const peso_split_opts *o, peso_split *s, peso_err *e)
{
    memset(e, 0, sizeof *e);
    return peso_split_run(r, o, s, e);
}

static const char *item_id(const peso_raw *r, const peso_split *s, int32_t i)
{
    return peso_strtab_str(r->items, s->item_raw[i]);
}

static const char *user_id(const peso_raw *r, const peso_split *s, int32_t u)
{
    return peso_strtab_str(r->users, s->user_raw[u]);
}

/* "i1 i2 i3": user u's block-k sequence by original ids ("" if absent). */
static const char *seq_str(const peso_raw *r, const peso_split *s, int k, const char *u)
{
    static char buf[4096];
    const peso_block *b = &s->b[k - 1];
    buf[0] = '\0';
    for (size_t j = 0; j < b->n_seq; j++) {
        if (strcmp(user_id(r, s, b->seq_user[j]), u) != 0)
            continue;
        for (int64_t p = b->seq_off[j]; p < b->seq_off[j + 1]; p++) {
            if (p > b->seq_off[j])
                strcat(buf, " ");
            strcat(buf, item_id(r, s, b->seq_item[p]));
        }
    }
    return buf;
}

/* "u: h1 h2 > t" for pair p. */
static const char *pair_str(const peso_raw *r, const peso_split *s, const peso_pairs *pp, size_t p)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s:", user_id(r, s, pp->user[p]));
    for (int64_t h = pp->off[p]; h < pp->off[p + 1]; h++) {
        strcat(buf, " ");
        strcat(buf, item_id(r, s, pp->hist[h]));
    }
    strcat(buf, " > ");
    strcat(buf, item_id(r, s, pp->target[p]));
    return buf;
}

Test(split, bounds_by_hand)
{
    /* Cumulative sums in double, left to right: 0.6, 0.7, 0.7999999999999999,
     * 0.8999999999999999, then the last boundary is n exactly.
     * n=10:   6.0, 7.0, 7.999999999999999 -> 7, 9.0 (0.8999..*10 rounds to 9.0)
     * n=11:   6.6, 7.699999999999999, 8.799999999999999, 9.899999999999999
     * n=17:   10.2, 11.899999999999999, 13.6, 15.299999999999999
     * n=1000: 600, 700, 799.9999999999999, 899.9999999999999 */
    struct {
        size_t n, b[6];
    } cases[] = {
        {10, {0, 6, 7, 7, 9, 10}},     {11, {0, 6, 7, 8, 9, 11}},
        {17, {0, 10, 11, 13, 15, 17}}, {1000, {0, 600, 700, 799, 899, 1000}},
        {0, {0, 0, 0, 0, 0, 0}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t b[6];
        peso_split_bounds(cases[c].n, five, 5, b);
        for (int k = 0; k < 6; k++)
            cr_expect_eq(b[k], cases[c].b[k], "n=%zu b_%d = %zu, expected %zu", cases[c].n, k, b[k],
                         cases[c].b[k]);
    }
    size_t b[3];
    const double third[3] = {1.0 / 3, 1.0 / 3, 1.0 / 3};
    peso_split_bounds(3, third, 3, b);
    /* 3 * (1/3) = 1, 3 * (2/3) = 2 */
    cr_expect(b[0] == 0 && b[1] == 1 && b[2] == 2);
}

Test(split, timestamp_ties_keep_input_order)
{
    peso_raw r;
    peso_raw_init(&r);
    /* All at ts 100 except b (50) and f (200): b first, then the ties in
     * input order c, a, e, d, then f. */
    add(&r, "u", "c", 100);
    add(&r, "u", "a", 100);
    add(&r, "u", "b", 50);
    add(&r, "u", "e", 100);
    add(&r, "u", "d", 100);
    add(&r, "u", "f", 200);
    peso_split_opts o = opts(one, 1, 5, 20);
    peso_split s;
    peso_err e;
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    cr_expect_str_eq(seq_str(&r, &s, 1, "u"), "b c a e d f");
    /* Dataset item indices follow first appearance in the sorted stream. */
    cr_expect_str_eq(item_id(&r, &s, 0), "b");
    cr_expect_str_eq(item_id(&r, &s, 1), "c");
    cr_expect_str_eq(item_id(&r, &s, 5), "f");
    peso_split_free(&s);
    peso_raw_free(&r);
}

Test(split, repeated_pairs_keep_earliest_timestamp)
{
    peso_raw r;
    peso_raw_init(&r);
    add(&r, "u", "x", 300); /* first in the file, but not the earliest */
    add(&r, "u", "y", 100);
    add(&r, "u", "w", 120);
    add(&r, "u", "x", 200);
    add(&r, "u", "z", 400);
    add(&r, "u", "x", 50);  /* earliest x: x goes first */
    add(&r, "u", "v", 120); /* ties with w, later in input */
    add(&r, "u", "w", 120); /* duplicate tie: the first w (input 2) is kept */
    add(&r, "u", "q", 500);
    peso_split_opts o = opts(one, 1, 5, 20);
    peso_split s;
    peso_err e;
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    cr_expect_eq(s.n_after_dedup, 6);
    cr_expect_str_eq(seq_str(&r, &s, 1, "u"), "x y w v z q");
    peso_split_free(&s);

    /* Which w of the tie is kept decides w's place among ts-120 items: a
     * second user sees w at input 0 and 3, v at 1: first w kept -> w v. */
    peso_raw_free(&r);
    peso_raw_init(&r);
    add(&r, "t", "w", 120);
    add(&r, "t", "v", 120);
    add(&r, "t", "a", 10);
    add(&r, "t", "w", 120);
    add(&r, "t", "b", 130);
    add(&r, "t", "c", 140);
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    cr_expect_str_eq(seq_str(&r, &s, 1, "t"), "a w v b c");
    peso_split_free(&s);
    peso_raw_free(&r);
}

Test(split, user_filter_four_vs_five_and_leave_one_out)
{
    peso_raw r;
    peso_raw_init(&r);
    add_run(&r, "four", "f", 4, 0);
    add_run(&r, "five", "g", 5, 10);
    peso_split_opts o = opts(one, 1, 5, 20);
    peso_split s;
    peso_err e;
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    const peso_block *b = &s.b[0];
    cr_expect_eq(b->n_raw, 9);
    cr_expect_eq(b->st.users, 1);
    cr_expect_eq(b->st.items, 5);
    cr_expect_eq(b->st.interactions, 5);
    cr_expect_eq(b->st.train_pairs, 2);
    cr_expect_float_eq(b->st.avg_seq_len, 5.0, 1e-15);
    cr_expect_float_eq(b->st.sparsity, 0.0, 1e-15);
    cr_expect_eq(b->ts_min, 0);
    cr_expect_eq(b->ts_max, 14);
    cr_expect_str_eq(seq_str(&r, &s, 1, "four"), "");
    cr_assert_eq(b->train.n, 2);
    cr_expect_str_eq(pair_str(&r, &s, &b->train, 0), "five: g0 > g1");
    cr_expect_str_eq(pair_str(&r, &s, &b->train, 1), "five: g0 g1 > g2");
    cr_assert_eq(b->valid.n, 1);
    cr_expect_str_eq(pair_str(&r, &s, &b->valid, 0), "five: g0 g1 g2 > g3");
    cr_assert_eq(b->test.n, 1);
    cr_expect_str_eq(pair_str(&r, &s, &b->test, 0), "five: g0 g1 g2 g3 > g4");
    cr_expect_eq(s.n_users, 1);
    cr_expect_eq(s.n_items, 5);
    peso_split_free(&s);

    /* With a minimum of 4 both users stay: 4 items give 1 train pair. */
    o.min_user_interactions = 4;
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    cr_expect_eq(s.b[0].st.users, 2);
    cr_expect_eq(s.b[0].st.train_pairs, 1 + 2);
    cr_expect_eq(s.b[0].st.interactions, 9);
    cr_expect_float_eq(s.b[0].st.sparsity, 1.0 - 9.0 / (2.0 * 9.0), 1e-15);
    peso_split_free(&s);
    peso_raw_free(&r);
}

Test(split, window_boundaries)
{
    peso_raw r;
    peso_raw_init(&r);
    add_run(&r, "u", "i", 23, 0); /* i0 .. i22 */
    peso_split_opts o = opts(one, 1, 5, 20);
    peso_split s;
    peso_err e;
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    const peso_block *b = &s.b[0];
    /* train targets i1 .. i20 (23 - 3 = 20 pairs), valid i21, test i22 */
    cr_assert_eq(b->train.n, 20);
    cr_expect_str_eq(pair_str(&r, &s, &b->train, 0), "u: i0 > i1");
    for (size_t p = 0; p < 20; p++)
        cr_expect_eq(b->train.off[p + 1] - b->train.off[p], (int64_t)p + 1);
    /* 20 items before i20: all of i0 .. i19 */
    cr_expect_str_eq(pair_str(&r, &s, &b->train, 19),
                     "u: i0 i1 i2 i3 i4 i5 i6 i7 i8 i9 i10 i11 i12 i13 i14 i15 i16 i17 i18 i19 > i20");
    /* 21 items before i21: the oldest (i0) falls out */
    cr_expect_str_eq(pair_str(&r, &s, &b->valid, 0),
                     "u: i1 i2 i3 i4 i5 i6 i7 i8 i9 i10 i11 i12 i13 i14 i15 i16 i17 i18 i19 i20 > i21");
    /* the test history includes the validation item */
    cr_expect_str_eq(pair_str(&r, &s, &b->test, 0),
                     "u: i2 i3 i4 i5 i6 i7 i8 i9 i10 i11 i12 i13 i14 i15 i16 i17 i18 i19 i20 i21 > i22");
    /* history sum 1 + 2 + ... + 20 */
    cr_expect_eq(b->train.off[20], 210);
    peso_split_free(&s);

    o.window = 3;
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    cr_expect_str_eq(pair_str(&r, &s, &s.b[0].train, 1), "u: i0 i1 > i2");
    cr_expect_str_eq(pair_str(&r, &s, &s.b[0].train, 2), "u: i0 i1 i2 > i3");
    cr_expect_str_eq(pair_str(&r, &s, &s.b[0].train, 3), "u: i1 i2 i3 > i4");
    cr_expect_str_eq(pair_str(&r, &s, &s.b[0].test, 0), "u: i19 i20 i21 > i22");
    peso_split_free(&s);
    peso_raw_free(&r);
}

Test(split, empty_block_is_an_error)
{
    peso_raw r;
    peso_raw_init(&r);
    /* 16 interactions: block 1 = first 8 (u1: 8), block 2 = last 8 spread
     * over u2 (4) and u3 (4): nobody reaches 5. */
    add_run(&r, "u1", "a", 8, 0);
    add_run(&r, "u2", "b", 4, 100);
    add_run(&r, "u3", "c", 4, 200);
    peso_split_opts o = opts(halves, 2, 5, 20);
    peso_split s;
    peso_err e;
    cr_assert_eq(run(&r, &o, &s, &e), -1);
    cr_expect(strstr(e.msg, "block 2") != NULL, "%s", e.msg);
    cr_expect(strstr(e.msg, "8 raw interactions from 2 users") != NULL, "%s", e.msg);
    cr_expect(strstr(e.msg, "min_user_interactions = 5") != NULL, "%s", e.msg);
    cr_expect_eq(s.b, NULL);
    peso_raw_free(&r);
}

Test(split, no_timestamps_refuses_chronological)
{
    peso_raw r;
    peso_raw_init(&r);
    add_run(&r, "u", "a", 6, 0);
    r.has_time = 0;
    peso_split_opts o = opts(one, 1, 5, 20);
    peso_split s;
    peso_err e;
    cr_assert_eq(run(&r, &o, &s, &e), -1);
    cr_expect(strstr(e.msg, "no timestamps") != NULL, "%s", e.msg);
    cr_expect(strstr(e.msg, "split.mode: user-disjoint") != NULL, "%s", e.msg);
    o.user_disjoint = 1;
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    cr_expect_str_eq(seq_str(&r, &s, 1, "u"), "a0 a1 a2 a3 a4 a5");
    peso_split_free(&s);
    peso_raw_free(&r);
}

/* 100 users of 5 interactions each, interleaved in time so that the
 * chronological order mixes them. */
static void add_equal_users(peso_raw *r)
{
    char u[16], i[16];
    for (int t = 0; t < 5; t++)
        for (int k = 0; k < 100; k++) {
            snprintf(u, sizeof u, "u%d", k);
            snprintf(i, sizeof i, "i%d", (k * 7 + t) % 60);
            add(r, u, i, t * 1000 + (99 - k));
        }
}

/* Block of every raw user (0 = none), checking each user is in one block. */
static void user_blocks(const peso_raw *r, const peso_split *s, int *blk)
{
    memset(blk, 0, peso_strtab_count(r->users) * sizeof *blk);
    for (int k = 0; k < s->n_blocks; k++)
        for (size_t j = 0; j < s->b[k].n_seq; j++) {
            int32_t u = s->user_raw[s->b[k].seq_user[j]];
            cr_assert_eq(blk[u], 0, "user %s in blocks %d and %d", peso_strtab_str(r->users, u), blk[u],
                         k + 1);
            blk[u] = k + 1;
        }
}

Test(split, user_disjoint_sizes_and_determinism)
{
    peso_raw r;
    peso_raw_init(&r);
    add_equal_users(&r);
    peso_split_opts o = opts(five, 5, 5, 20);
    o.user_disjoint = 1;
    peso_split s, t;
    peso_err e;
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    /* bounds on 500: 300, 350, 399 (500 * 0.7999999999999999 =
     * 399.99999999999994), 449, 500. User j of the shuffle (5 each) starts
     * at 5j: block 1 takes j < 60 (5*59 = 295 < 300), block 2 j = 60..69
     * (300..345 < 350), block 3 j = 70..79 (350..395 < 399), block 4
     * j = 80..89 (400..445 < 449), block 5 the rest. */
    int64_t want[5] = {300, 50, 50, 50, 50};
    int blk[100], blk2[100];
    for (int k = 0; k < 5; k++) {
        cr_expect_eq((int64_t)s.b[k].n_raw, want[k], "block %d: %zu", k + 1, s.b[k].n_raw);
        cr_expect_eq(s.b[k].st.new_users, s.b[k].st.users);
        cr_expect_eq(s.b[k].st.interactions, want[k]);
    }
    user_blocks(&r, &s, blk);
    /* Every user keeps its own time order: u_k's items at t = 0..4. */
    for (int k = 0; k < 100; k += 13) {
        char u[16], exp[128] = "";
        snprintf(u, sizeof u, "u%d", k);
        for (int t = 0; t < 5; t++) {
            char it[16];
            snprintf(it, sizeof it, "%si%d", t ? " " : "", (k * 7 + t) % 60);
            strcat(exp, it);
        }
        cr_expect_str_eq(seq_str(&r, &s, blk[k], u), exp);
    }
    cr_assert_eq(run(&r, &o, &t, &e), 0, "%s", e.msg);
    user_blocks(&r, &t, blk2);
    cr_expect_arr_eq(blk, blk2, sizeof blk, "same seed, same assignment");
    peso_split_free(&t);
    o.seed = 43;
    cr_assert_eq(run(&r, &o, &t, &e), 0, "%s", e.msg);
    user_blocks(&r, &t, blk2);
    cr_expect(memcmp(blk, blk2, sizeof blk) != 0, "another seed, another assignment");
    peso_split_free(&t);
    peso_split_free(&s);
    peso_raw_free(&r);
}

Test(split, user_disjoint_uneven_users_follow_the_boundaries)
{
    peso_raw r;
    peso_raw_init(&r);
    char u[16];
    int max_len = 0, sizes[80];
    for (int k = 0; k < 80; k++) {
        sizes[k] = 5 + (k * 37) % 11;
        max_len = sizes[k] > max_len ? sizes[k] : max_len;
        snprintf(u, sizeof u, "u%d", k);
        add_run(&r, u, u, sizes[k], k * 3);
    }
    size_t n = 0;
    for (int k = 0; k < 80; k++)
        n += (size_t)sizes[k];
    size_t b[6];
    peso_split_bounds(n, five, 5, b);
    peso_split_opts o = opts(five, 5, 5, 20);
    o.user_disjoint = 1;
    peso_split s;
    peso_err e;
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    /* Blocks are runs of the shuffled users: the raw count before block
     * k+1 is at least b_k and less than b_k plus one user. */
    size_t cum = 0;
    for (int k = 0; k < 4; k++) {
        cum += s.b[k].n_raw;
        cr_expect(cum >= b[k + 1] && cum < b[k + 1] + (size_t)max_len, "S_%d = %zu, b = %zu", k + 1, cum,
                  b[k + 1]);
    }
    cr_expect_eq(cum + s.b[4].n_raw, n);
    peso_split_free(&s);
    peso_raw_free(&r);
}

/* Two halves in time: first 12 interactions in block 1, last 12 in 2. */
static void add_two_blocks(peso_raw *r)
{
    add_run(r, "A", "a", 6, 0);   /* block 1, kept */
    add_run(r, "B", "b", 3, 10);  /* block 1, dropped (3 < 5) */
    add_run(r, "C", "c", 3, 20);  /* block 1, dropped */
    add_run(r, "A", "x", 5, 100); /* block 2 */
    add(r, "B", "b0", 200);       /* a repeat of B's first item: dedup drops it */
    add_run(r, "B", "y", 5, 200);
    add(r, "C", "a0", 300); /* C in block 2: 2 interactions, dropped */
    add(r, "C", "q", 301);
    add(r, "D", "d", 400); /* D: 1 interaction, dropped */
}

Test(split, history_all_reaches_back_into_kept_blocks)
{
    peso_raw r;
    peso_raw_init(&r);
    add_two_blocks(&r);
    /* 26 raw, 25 after dedup: b_1 = floor(12.5) = 12. */
    peso_split_opts o = opts(halves, 2, 5, 8);
    peso_split s;
    peso_err e;
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    cr_expect_eq(s.n_after_dedup, 25);
    cr_expect_eq(s.b[0].n_raw, 12);
    cr_expect_eq(s.b[1].n_raw, 13);
    const peso_block *b2 = &s.b[1];
    /* block-local: A's first block-2 pair sees only x0 */
    cr_expect_str_eq(pair_str(&r, &s, &b2->train, 0), "A: x0 > x1");
    peso_split_free(&s);

    o.history_all = 1;
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    b2 = &s.b[1];
    /* A: block-1 items a0..a5 come before, window 8 keeps the last 8 */
    cr_expect_str_eq(pair_str(&r, &s, &b2->train, 0), "A: a0 a1 a2 a3 a4 a5 x0 > x1");
    cr_expect_str_eq(pair_str(&r, &s, &b2->train, 1), "A: a0 a1 a2 a3 a4 a5 x0 x1 > x2");
    cr_expect_str_eq(pair_str(&r, &s, &b2->valid, 0), "A: a1 a2 a3 a4 a5 x0 x1 x2 > x3");
    cr_expect_str_eq(pair_str(&r, &s, &b2->test, 0), "A: a2 a3 a4 a5 x0 x1 x2 x3 > x4");
    /* B was dropped in block 1: nothing of it is prepended */
    cr_expect_str_eq(pair_str(&r, &s, &b2->train, 2), "B: y0 > y1");
    /* the block's own sequences stay block-local */
    cr_expect_str_eq(seq_str(&r, &s, 2, "A"), "x0 x1 x2 x3 x4");
    /* history in block 1 is unchanged */
    cr_expect_str_eq(pair_str(&r, &s, &s.b[0].train, 0), "A: a0 > a1");
    peso_split_free(&s);
    peso_raw_free(&r);
}

Test(split, new_users_new_items_and_first_block)
{
    peso_raw r;
    peso_raw_init(&r);
    add_two_blocks(&r);
    /* B, C, D are added with items already seen in block 1 by kept users. */
    add_run(&r, "E", "a", 5, 500); /* a0..a4: kept in block 1 by A */
    add(&r, "E", "b1", 505);       /* only B had b1, and B was dropped in 1 */
    /* 32 raw, 31 after dedup: b_1 = 15: block 1 = the first 15 by time:
     * A a0..a5, B b0..b2, C c0..c2, A x0..x2 */
    peso_split_opts o = opts(halves, 2, 5, 20);
    peso_split s;
    peso_err e;
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    const peso_block *b1 = &s.b[0], *b2 = &s.b[1];
    cr_expect_eq(b1->n_raw, 15);
    /* block 1: only A (9 interactions: a0..a5, x0..x2) */
    cr_expect_eq(b1->st.users, 1);
    cr_expect_eq(b1->st.new_users, 1);
    cr_expect_eq(b1->st.items, 9);
    cr_expect_eq(b1->st.new_items, 9);
    cr_expect_eq(b1->st.train_pairs, 6);
    /* block 2: A has x3, x4 only (2) -> dropped; B y0..y4 (5), E a0..a4 b1 (6) */
    cr_expect_eq(b2->st.users, 2);
    cr_expect_eq(b2->st.new_users, 2);
    cr_expect_eq(b2->st.interactions, 11);
    cr_expect_eq(b2->st.items, 11);
    /* new: y0..y4 and b1 (a0..a4 were kept in block 1) */
    cr_expect_eq(b2->st.new_items, 6);
    cr_expect_eq(b2->st.train_pairs, 2 + 3);
    cr_expect_float_eq(b2->st.avg_seq_len, 5.5, 1e-15);
    cr_expect_float_eq(b2->st.sparsity, 1.0 - 11.0 / 22.0, 1e-15);
    cr_expect_eq(s.n_users, 3);
    cr_expect_eq(s.n_items, 15);
    cr_expect_eq(s.total_interactions, 20);
    for (size_t i = 0; i < s.n_items; i++) {
        const char *id = item_id(&r, &s, (int32_t)i);
        int want = (id[0] == 'a' || id[0] == 'x') ? 1 : 2;
        cr_expect_eq(s.item_first_block[i], want, "item %s", id);
    }
    /* users numbered by first appearance: A, then B (y0 at 200), then E */
    cr_expect_str_eq(user_id(&r, &s, 0), "A");
    cr_expect_str_eq(user_id(&r, &s, 1), "B");
    cr_expect_str_eq(user_id(&r, &s, 2), "E");
    peso_split_free(&s);

    /* With a minimum of 3, B and C are kept in block 1 too: in block 2, B
     * is not new, and b1 (kept by B in block 1) is not a new item. */
    o.min_user_interactions = 3;
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    cr_expect_eq(s.b[0].st.users, 3);
    cr_expect_eq(s.b[1].st.users, 2);
    cr_expect_eq(s.b[1].st.new_users, 1);
    cr_expect_eq(s.b[1].st.new_items, 5);
    peso_split_free(&s);
    peso_raw_free(&r);
}

Test(split, year_window)
{
    peso_raw r;
    peso_raw_init(&r);
    /* epoch milliseconds (UTC) */
    const int64_t end2013 = 1388534399999LL;   /* 2013-12-31 23:59:59.999 */
    const int64_t start2014 = 1388534400000LL; /* 2014-01-01 00:00:00 */
    const int64_t end2014 = 1420070399999LL;   /* 2014-12-31 23:59:59.999 */
    const int64_t start2015 = 1420070400000LL; /* 2015-01-01 00:00:00 */
    const int64_t leap2016 = 1456747200000LL;  /* 2016-02-29 12:00:00 */
    add(&r, "u", "old", end2013);
    add_run(&r, "u", "in", 5, start2014);
    add(&r, "u", "last", end2014);
    add(&r, "u", "next", start2015);
    add(&r, "u", "leap", leap2016);
    add(&r, "u", "neg", -1); /* 1969-12-31 23:59:59.999 */
    peso_split_opts o = opts(one, 1, 5, 20);
    o.year_min = 2014;
    o.year_max = 2014;
    peso_split s;
    peso_err e;
    cr_assert_eq(run(&r, &o, &s, &e), 0, "%s", e.msg);
    cr_expect_eq(s.n_after_dedup, 10);
    cr_expect_eq(s.n_after_years, 6);
    cr_expect_str_eq(seq_str(&r, &s, 1, "u"), "in0 in1 in2 in3 in4 last");
    peso_split_free(&s);

    o.year_min = 2015;
    o.year_max = 0; /* unbounded above: next, leap, and too few for a user */
    cr_assert_eq(run(&r, &o, &s, &e), -1);
    o.year_min = 0;
    o.year_max = 2013; /* neg (1969) and old */
    cr_assert_eq(run(&r, &o, &s, &e), -1);
    cr_expect(strstr(e.msg, "2 raw interactions from 1 users") != NULL, "%s", e.msg);
    o.year_min = 2016;
    o.year_max = 2016;
    cr_assert_eq(run(&r, &o, &s, &e), -1);
    cr_expect(strstr(e.msg, "1 raw interactions") != NULL, "%s", e.msg);
    peso_raw_free(&r);
}

Test(split, option_checks)
{
    peso_raw r;
    peso_raw_init(&r);
    add_run(&r, "u", "a", 6, 0);
    peso_split s;
    peso_err e;
    peso_split_opts o = opts(one, 1, 2, 20);
    cr_expect_eq(run(&r, &o, &s, &e), -1);
    cr_expect(strstr(e.msg, "min_user_interactions") != NULL, "%s", e.msg);
    o = opts(one, 1, 5, 0);
    cr_expect_eq(run(&r, &o, &s, &e), -1);
    cr_expect(strstr(e.msg, "split.window") != NULL, "%s", e.msg);
    const double bad[2] = {1.0, 0.0};
    o = opts(bad, 2, 5, 20);
    cr_expect_eq(run(&r, &o, &s, &e), -1);
    cr_expect(strstr(e.msg, "split.fractions[1]") != NULL, "%s", e.msg);
    peso_raw_free(&r);
}

Test(split, opts_from_conf)
{
    peso_conf c;
    memset(&c, 0, sizeof c);
    c.split.fractions[0] = 0.7;
    c.split.fractions[1] = 0.3;
    c.split.n_fractions = 2;
    c.split.min_user_interactions = 4;
    c.split.window = 10;
    strcpy(c.split.mode, "user-disjoint");
    strcpy(c.split.history, "all");
    c.data.year_min = 2019;
    c.data.year_max = 2023;
    c.seed = 7;
    peso_split_opts o;
    peso_split_opts_from_conf(&o, &c);
    cr_expect_eq(o.fractions, c.split.fractions);
    cr_expect_eq(o.n_blocks, 2);
    cr_expect_eq(o.min_user_interactions, 4);
    cr_expect_eq(o.window, 10);
    cr_expect_eq(o.user_disjoint, 1);
    cr_expect_eq(o.history_all, 1);
    cr_expect_eq(o.year_min, 2019);
    cr_expect_eq(o.year_max, 2023);
    cr_expect_eq(o.seed, 7);
    strcpy(c.split.mode, "chronological");
    strcpy(c.split.history, "block");
    peso_split_opts_from_conf(&o, &c);
    cr_expect_eq(o.user_disjoint, 0);
    cr_expect_eq(o.history_all, 0);
}
