/* The data protocol (DESIGN.md "Data protocol"). The steps run over index
 * arrays into raw->v so the raw interactions are never copied or changed:
 *   dedup -> year window -> stable time sort -> blocks (chronological cut or
 *   random whole users) -> per block: user filter, compact ids, sequences,
 *   leave-one-out pairs, statistics.
 * Orders (the reference tools/reference/protocol.py follows the same): a
 * block's users in order of first appearance in the block; train pairs user
 * by user, by position; valid and test one per user in the same order. The
 * user-disjoint shuffle starts from the users in first-seen input order. */
#include "data/split.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

/* Stream tag of the user-disjoint assignment ("userdisj"). */
#define SPLIT_RNG_STREAM 0x757365726469736aULL
#define MS_PER_DAY 86400000LL

typedef struct pair_key {
    int32_t user, item;
    int64_t ts;
    size_t idx;
} pair_key;

typedef struct ts_key {
    int64_t ts;
    size_t idx;
} ts_key;

void peso_split_opts_from_conf(peso_split_opts *o, const peso_conf *c)
{
    memset(o, 0, sizeof *o);
    o->fractions = c->split.fractions;
    o->n_blocks = c->split.n_fractions;
    o->min_user_interactions = (int)c->split.min_user_interactions;
    o->window = (int)c->split.window;
    o->user_disjoint = strcmp(c->split.mode, "user-disjoint") == 0;
    o->history_all = strcmp(c->split.history, "all") == 0;
    o->year_min = c->data.year_min;
    o->year_max = c->data.year_max;
    o->seed = c->seed;
}

void peso_split_bounds(size_t n, const double *fractions, int n_blocks, size_t *bounds)
{
    double c = 0.0;
    bounds[0] = 0;
    for (int k = 1; k <= n_blocks; k++) {
        c += fractions[k - 1];
        double b = floor((double)n * c);
        bounds[k] = b >= (double)n ? n : (size_t)b;
    }
    bounds[n_blocks] = n;
}

static int check_opts(const peso_raw *raw, const peso_split_opts *o, peso_err *err)
{
    if (o->n_blocks < 1 || o->n_blocks > PESO_MAX_BLOCKS)
        return peso_errf(err, "split.fractions: expected 1 to %d blocks, got %d", PESO_MAX_BLOCKS,
                         o->n_blocks);
    for (int k = 0; k < o->n_blocks; k++)
        if (!(o->fractions[k] > 0.0))
            return peso_errf(err, "split.fractions[%d] = %g: expected a positive fraction", k,
                             o->fractions[k]);
    if (o->min_user_interactions < 3)
        return peso_errf(err,
                         "split.min_user_interactions = %d: expected >= 3 (leave-one-out needs a "
                         "train, a validation and a test item)",
                         o->min_user_interactions);
    if (o->window < 1)
        return peso_errf(err, "split.window = %d: expected >= 1", o->window);
    if (!raw->has_time && !o->user_disjoint)
        return peso_errf(err, "split.mode: chronological: this data format has no timestamps "
                              "(its sequences are only ordered), so it cannot be cut in time; "
                              "use split.mode: user-disjoint");
    if (!raw->has_time && (o->year_min || o->year_max))
        return peso_errf(err, "data.year_min/year_max: this data format has no timestamps, so "
                              "there is no year to filter on; set both to 0");
    return 0;
}

static int cmp_pair_key(const void *a, const void *b)
{
    const pair_key *x = a, *y = b;
    if (x->user != y->user)
        return x->user < y->user ? -1 : 1;
    if (x->item != y->item)
        return x->item < y->item ? -1 : 1;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int cmp_ts_key(const void *a, const void *b)
{
    const ts_key *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Marks keep[i] = 1 for the earliest interaction of every (user, item):
 * smallest ts, ties to the first in input order. */
static void dedup(const peso_raw *raw, unsigned char *keep)
{
    pair_key *k = peso_malloc((raw->n ? raw->n : 1) * sizeof *k);
    for (size_t i = 0; i < raw->n; i++)
        k[i] = (pair_key){raw->v[i].user, raw->v[i].item, raw->v[i].ts, i};
    qsort(k, raw->n, sizeof *k, cmp_pair_key);
    for (size_t i = 0; i < raw->n; i++)
        keep[k[i].idx] = i == 0 || k[i].user != k[i - 1].user || k[i].item != k[i - 1].item;
    free(k);
}

/* UTC calendar year of a day count since 1970-01-01 (proleptic Gregorian;
 * H. Hinnant's civil_from_days). */
static int64_t year_of_days(int64_t z)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    return yoe + era * 400 + (m <= 2);
}

static int64_t year_of_ms(int64_t ts)
{
    int64_t d = ts / MS_PER_DAY;
    if (ts % MS_PER_DAY < 0)
        d--;
    return year_of_days(d);
}

/* Dedup, year window and stable time sort: *ord holds indices into raw->v. */
static size_t sorted_stream(const peso_raw *raw, const peso_split_opts *o, size_t **ord, peso_split *out)
{
    unsigned char *keep = peso_calloc(raw->n ? raw->n : 1, 1);
    dedup(raw, keep);
    ts_key *t = peso_malloc((raw->n ? raw->n : 1) * sizeof *t);
    size_t n = 0;
    for (size_t i = 0; i < raw->n; i++)
        if (keep[i])
            n++;
    out->n_after_dedup = n;
    n = 0;
    for (size_t i = 0; i < raw->n; i++) {
        if (!keep[i])
            continue;
        int64_t y = o->year_min || o->year_max ? year_of_ms(raw->v[i].ts) : 0;
        if ((o->year_min && y < o->year_min) || (o->year_max && y > o->year_max))
            continue;
        t[n++] = (ts_key){raw->v[i].ts, i};
    }
    out->n_after_years = n;
    qsort(t, n, sizeof *t, cmp_ts_key);
    *ord = peso_malloc((n ? n : 1) * sizeof **ord);
    for (size_t i = 0; i < n; i++)
        (*ord)[i] = t[i].idx;
    free(keep);
    free(t);
    return n;
}

/* User-disjoint: whole users go to blocks at random, block sizes matched to
 * the chronological cut on interaction counts. Reorders ord (stable within
 * each block, so every user keeps its own time order) and fills start[]. */
static void assign_users(const peso_raw *raw, const peso_split_opts *o, size_t *ord, size_t n, size_t *start)
{
    size_t n_raw_users = peso_strtab_count(raw->users);
    int64_t *cnt = peso_calloc(n_raw_users ? n_raw_users : 1, sizeof *cnt);
    int32_t *blk = peso_malloc((n_raw_users ? n_raw_users : 1) * sizeof *blk);
    int32_t *users = peso_malloc((n_raw_users ? n_raw_users : 1) * sizeof *users);
    size_t n_users = 0;
    for (size_t i = 0; i < n; i++)
        cnt[raw->v[ord[i]].user]++;
    for (size_t u = 0; u < n_raw_users; u++)
        if (cnt[u])
            users[n_users++] = (int32_t)u;
    peso_rng rng;
    peso_rng_seed(&rng, o->seed, SPLIT_RNG_STREAM);
    peso_rng_shuffle_i32(&rng, users, n_users);

    size_t bounds[PESO_MAX_BLOCKS + 1];
    peso_split_bounds(n, o->fractions, o->n_blocks, bounds);
    size_t running = 0;
    int k = 1;
    for (size_t j = 0; j < n_users; j++) {
        while (bounds[k] <= running)
            k++;
        blk[users[j]] = k - 1;
        running += (size_t)cnt[users[j]];
    }

    size_t fill[PESO_MAX_BLOCKS + 1] = {0};
    for (size_t i = 0; i < n; i++)
        fill[blk[raw->v[ord[i]].user] + 1]++;
    for (int b = 0; b < o->n_blocks; b++)
        fill[b + 1] += fill[b];
    memcpy(start, fill, (size_t)(o->n_blocks + 1) * sizeof *start);
    size_t *tmp = peso_malloc((n ? n : 1) * sizeof *tmp);
    for (size_t i = 0; i < n; i++)
        tmp[fill[blk[raw->v[ord[i]].user]]++] = ord[i];
    memcpy(ord, tmp, n * sizeof *ord);
    free(tmp);
    free(cnt);
    free(blk);
    free(users);
}

/* State carried from block to block. */
typedef struct split_state {
    const peso_raw *raw;
    const peso_split_opts *o;
    peso_split *out;
    int32_t *ds_item; /* raw item -> dataset item or -1 */
    int32_t *ds_user; /* raw user -> dataset user or -1 */
    size_t cap_items, cap_users;
    int32_t *cnt;       /* raw user -> interactions in the current block */
    int32_t *slot;      /* raw user -> position among the block's kept users or -1 */
    int32_t *item_seen; /* raw item -> last block (1-based) it was counted in */
    /* history: all: the last `window` kept items of each dataset user so far */
    int32_t **tail;
    int32_t *tail_len;
} split_state;

static void new_item(split_state *s, int32_t raw_item, int k)
{
    peso_split *out = s->out;
    if (out->n_items == s->cap_items) {
        s->cap_items = s->cap_items ? 2 * s->cap_items : 1024;
        out->item_raw = peso_realloc(out->item_raw, s->cap_items * sizeof *out->item_raw);
        out->item_first_block =
            peso_realloc(out->item_first_block, s->cap_items * sizeof *out->item_first_block);
    }
    out->item_raw[out->n_items] = raw_item;
    out->item_first_block[out->n_items] = k;
    s->ds_item[raw_item] = (int32_t)out->n_items;
    out->n_items++;
}

static void new_user(split_state *s, int32_t raw_user)
{
    peso_split *out = s->out;
    if (out->n_users == s->cap_users) {
        s->cap_users = s->cap_users ? 2 * s->cap_users : 1024;
        out->user_raw = peso_realloc(out->user_raw, s->cap_users * sizeof *out->user_raw);
        s->tail = peso_realloc(s->tail, s->cap_users * sizeof *s->tail);
        s->tail_len = peso_realloc(s->tail_len, s->cap_users * sizeof *s->tail_len);
    }
    out->user_raw[out->n_users] = raw_user;
    s->ds_user[raw_user] = (int32_t)out->n_users;
    s->tail[out->n_users] = NULL;
    s->tail_len[out->n_users] = 0;
    out->n_users++;
}

static size_t hist_len(size_t pos, int window)
{
    return pos < (size_t)window ? pos : (size_t)window;
}

static void pairs_alloc(peso_pairs *p, size_t n, int64_t n_hist)
{
    p->n = 0;
    p->user = peso_malloc((n ? n : 1) * sizeof *p->user);
    p->target = peso_malloc((n ? n : 1) * sizeof *p->target);
    p->off = peso_malloc((n + 1) * sizeof *p->off);
    p->hist = peso_malloc((n_hist ? (size_t)n_hist : 1) * sizeof *p->hist);
    p->off[0] = 0;
}

/* Appends the pair whose target is full[pos], history the up-to-`window`
 * items before it. */
static void pairs_emit(peso_pairs *p, int32_t user, const int32_t *full, size_t pos, int window)
{
    size_t h = hist_len(pos, window);
    int64_t at = p->off[p->n];
    p->user[p->n] = user;
    p->target[p->n] = full[pos];
    memcpy(p->hist + at, full + pos - h, h * sizeof *full);
    p->off[++p->n] = at + (int64_t)h;
}

/* Kept users of the block in order of first appearance; fills s->cnt and
 * s->slot. Returns their number; *n_users_raw = distinct users before. */
static size_t block_users(split_state *s, const size_t *ix, size_t n, int32_t **order, size_t *n_users_raw)
{
    const peso_inter *v = s->raw->v;
    size_t kept = 0, seen = 0;
    for (size_t i = 0; i < n; i++)
        if (s->cnt[v[ix[i]].user]++ == 0)
            seen++;
    *order = peso_malloc((seen ? seen : 1) * sizeof **order);
    for (size_t i = 0; i < n; i++) {
        int32_t u = v[ix[i]].user;
        if (s->cnt[u] >= s->o->min_user_interactions && s->slot[u] < 0) {
            s->slot[u] = (int32_t)kept;
            (*order)[kept++] = u;
        }
    }
    *n_users_raw = seen;
    return kept;
}

/* Compact ids, the users' block sequences and the block's item counts. */
static void block_sequences(split_state *s, peso_block *b, const size_t *ix, size_t n, const int32_t *order)
{
    const peso_inter *v = s->raw->v;
    b->seq_user = peso_malloc((b->n_seq ? b->n_seq : 1) * sizeof *b->seq_user);
    b->seq_off = peso_malloc((b->n_seq + 1) * sizeof *b->seq_off);
    b->seq_off[0] = 0;
    for (size_t j = 0; j < b->n_seq; j++)
        b->seq_off[j + 1] = b->seq_off[j] + s->cnt[order[j]];
    size_t total = (size_t)b->seq_off[b->n_seq];
    b->seq_item = peso_malloc((total ? total : 1) * sizeof *b->seq_item);
    int64_t *fill = peso_malloc((b->n_seq ? b->n_seq : 1) * sizeof *fill);
    memcpy(fill, b->seq_off, b->n_seq * sizeof *fill);
    for (size_t i = 0; i < n; i++) {
        const peso_inter *x = &v[ix[i]];
        if (s->slot[x->user] < 0)
            continue;
        if (s->ds_user[x->user] < 0) {
            new_user(s, x->user);
            b->st.new_users++;
        }
        if (s->ds_item[x->item] < 0) {
            new_item(s, x->item, b->k);
            b->st.new_items++;
        }
        if (s->item_seen[x->item] != b->k) {
            s->item_seen[x->item] = b->k;
            b->st.items++;
        }
        b->seq_item[fill[s->slot[x->user]]++] = s->ds_item[x->item];
    }
    for (size_t j = 0; j < b->n_seq; j++)
        b->seq_user[j] = s->ds_user[order[j]];
    free(fill);
}

/* Leave-one-out and sliding windows over (tail ++ block sequence). */
static void block_pairs(split_state *s, peso_block *b)
{
    int w = s->o->window;
    size_t n_train = 0;
    int64_t h_train = 0, h_valid = 0, h_test = 0;
    for (size_t j = 0; j < b->n_seq; j++) {
        size_t len = (size_t)(b->seq_off[j + 1] - b->seq_off[j]);
        size_t p = (size_t)s->tail_len[b->seq_user[j]];
        n_train += len - 3;
        for (size_t i = 1; i + 2 < len; i++)
            h_train += (int64_t)hist_len(p + i, w);
        h_valid += (int64_t)hist_len(p + len - 2, w);
        h_test += (int64_t)hist_len(p + len - 1, w);
    }
    pairs_alloc(&b->train, n_train, h_train);
    pairs_alloc(&b->valid, b->n_seq, h_valid);
    pairs_alloc(&b->test, b->n_seq, h_test);

    int32_t *full = NULL;
    size_t cap = 0;
    for (size_t j = 0; j < b->n_seq; j++) {
        int32_t u = b->seq_user[j];
        size_t len = (size_t)(b->seq_off[j + 1] - b->seq_off[j]);
        size_t p = (size_t)s->tail_len[u];
        peso_grow((void **)&full, &cap, p + len, sizeof *full);
        if (p)
            memcpy(full, s->tail[u], p * sizeof *full);
        memcpy(full + p, b->seq_item + b->seq_off[j], len * sizeof *full);
        for (size_t i = 1; i + 2 < len; i++)
            pairs_emit(&b->train, u, full, p + i, w);
        pairs_emit(&b->valid, u, full, p + len - 2, w);
        pairs_emit(&b->test, u, full, p + len - 1, w);
        if (s->o->history_all) {
            size_t keep = hist_len(p + len, w);
            if (!s->tail[u])
                s->tail[u] = peso_malloc((size_t)w * sizeof *s->tail[u]);
            memcpy(s->tail[u], full + p + len - keep, keep * sizeof *full);
            s->tail_len[u] = (int32_t)keep;
        }
    }
    free(full);
    b->st.train_pairs = (int64_t)n_train;
}

static void block_span(const peso_raw *raw, peso_block *b, const size_t *ix, size_t n)
{
    b->n_raw = n;
    b->ts_min = n ? raw->v[ix[0]].ts : 0;
    b->ts_max = b->ts_min;
    for (size_t i = 1; i < n; i++) {
        int64_t t = raw->v[ix[i]].ts;
        b->ts_min = t < b->ts_min ? t : b->ts_min;
        b->ts_max = t > b->ts_max ? t : b->ts_max;
    }
}

static int build_block(split_state *s, peso_block *b, const size_t *ix, size_t n, peso_err *err)
{
    size_t n_users_raw;
    int32_t *order;
    block_span(s->raw, b, ix, n);
    b->n_seq = block_users(s, ix, n, &order, &n_users_raw);
    if (b->n_seq > 0) {
        block_sequences(s, b, ix, n, order);
        block_pairs(s, b);
        b->st.users = (int64_t)b->n_seq;
        b->st.interactions = b->seq_off[b->n_seq];
        b->st.avg_seq_len = (double)b->st.interactions / (double)b->st.users;
        b->st.sparsity = 1.0 - (double)b->st.interactions / ((double)b->st.users * (double)b->st.items);
    }
    for (size_t i = 0; i < n; i++) {
        s->cnt[s->raw->v[ix[i]].user] = 0;
        s->slot[s->raw->v[ix[i]].user] = -1;
    }
    free(order);
    if (b->n_seq == 0)
        return peso_errf(err,
                         "block %d is empty after the per-block user filter: it had %zu raw "
                         "interactions from %zu users, none with at least "
                         "split.min_user_interactions = %d interactions inside the block "
                         "(use fewer blocks, larger fractions or a smaller minimum)",
                         b->k, n, n_users_raw, s->o->min_user_interactions);
    return 0;
}

static void state_init(split_state *s, const peso_raw *raw, const peso_split_opts *o, peso_split *out)
{
    size_t nu = peso_strtab_count(raw->users), ni = peso_strtab_count(raw->items);
    memset(s, 0, sizeof *s);
    s->raw = raw;
    s->o = o;
    s->out = out;
    s->ds_item = peso_malloc((ni ? ni : 1) * sizeof *s->ds_item);
    s->item_seen = peso_calloc(ni ? ni : 1, sizeof *s->item_seen);
    s->ds_user = peso_malloc((nu ? nu : 1) * sizeof *s->ds_user);
    s->slot = peso_malloc((nu ? nu : 1) * sizeof *s->slot);
    s->cnt = peso_calloc(nu ? nu : 1, sizeof *s->cnt);
    memset(s->ds_item, 0xff, ni * sizeof *s->ds_item);
    memset(s->ds_user, 0xff, nu * sizeof *s->ds_user);
    memset(s->slot, 0xff, nu * sizeof *s->slot);
}

static void state_free(split_state *s)
{
    for (size_t u = 0; u < s->out->n_users; u++)
        free(s->tail[u]);
    free(s->tail);
    free(s->tail_len);
    free(s->ds_item);
    free(s->ds_user);
    free(s->cnt);
    free(s->slot);
    free(s->item_seen);
}

int peso_split_run(const peso_raw *raw, const peso_split_opts *o, peso_split *out, peso_err *err)
{
    memset(out, 0, sizeof *out);
    if (check_opts(raw, o, err))
        return -1;
    size_t *ord;
    size_t n = sorted_stream(raw, o, &ord, out);
    size_t start[PESO_MAX_BLOCKS + 1];
    if (o->user_disjoint)
        assign_users(raw, o, ord, n, start);
    else
        peso_split_bounds(n, o->fractions, o->n_blocks, start);

    split_state s;
    state_init(&s, raw, o, out);
    out->n_blocks = o->n_blocks;
    out->b = peso_calloc((size_t)o->n_blocks, sizeof *out->b);
    int rc = 0;
    for (int k = 0; k < o->n_blocks && rc == 0; k++) {
        out->b[k].k = k + 1;
        rc = build_block(&s, &out->b[k], ord + start[k], start[k + 1] - start[k], err);
        out->total_interactions += out->b[k].st.interactions;
    }
    state_free(&s);
    free(ord);
    if (rc)
        peso_split_free(out);
    return rc;
}

static void pairs_free(peso_pairs *p)
{
    free(p->user);
    free(p->target);
    free(p->off);
    free(p->hist);
}

void peso_split_free(peso_split *s)
{
    for (int k = 0; k < s->n_blocks && s->b; k++) {
        peso_block *b = &s->b[k];
        free(b->seq_user);
        free(b->seq_off);
        free(b->seq_item);
        pairs_free(&b->train);
        pairs_free(&b->valid);
        pairs_free(&b->test);
    }
    free(s->b);
    free(s->item_raw);
    free(s->item_first_block);
    free(s->user_raw);
    memset(s, 0, sizeof *s);
}
