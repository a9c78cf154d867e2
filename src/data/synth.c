/* The built-in synthetic dataset: a small world with the structure the
 * paper's method is about, so that the CPU demo has something to learn and
 * something to forget.
 *
 * - Items belong to clusters (topics). Each cluster has its own vocabulary
 *   of made-up words and a category word; an item's text is a title of a few
 *   cluster words (sometimes one shared word) plus its category, so the text
 *   hashing encoder gives items of one cluster nearby vectors and the
 *   semantic IDs carry the cluster.
 * - Popularity inside a cluster is Zipf: weight rank^-zipf.
 * - Time is cut into periods t = 1..T, one per split fraction, with exactly
 *   as many interactions as the chronological split will put in block t, in
 *   disjoint time spans, so block t of the split is period t.
 * - Every user has a long-term interest L over clusters and a short-term
 *   interest that drifts between periods (paper, Appendix A):
 *   P_t = drift * P_{t-1} + (1 - drift) * Q_t, Q_t fresh per user and period.
 *   Each choice takes its cluster from L with probability long_term, else
 *   from P_t. Interests are symmetric Dirichlet(1/2) draws, so a few clusters
 *   dominate each one.
 * - New users (new_user_share * users) and new items (new_item_share * items,
 *   in existing clusters, choosable from their period on) arrive in every
 *   period t >= 2; returning users from earlier periods make up the rest of
 *   the period's active users, at least a third of them.
 *
 * Ids are in order of creation: users U000000.. (period 1 first), items
 * I000000.. (the initial items, then each period's new ones). Every
 * interaction is a new (user, item) pair, so the protocol's dedup removes
 * nothing. Times are integer milliseconds within 2019 (UTC). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "data/raw.h"
#include "data/split.h"

/* RNG streams: one per purpose, so that changing the vocabulary does not
 * change the interactions. */
enum { STREAM_WORDS = 1, STREAM_ITEMS = 2, STREAM_INTEREST = 3, STREAM_PERIOD = 16 };

#define SYNTH_T0_MS 1546300800000LL        /* 2019-01-01T00:00:00Z */
#define SYNTH_SPAN_MS (365LL * 86400000LL) /* all of 2019 */
#define PICK_TRIES 32                      /* rejection draws before an exact draw */

static const char *const shared_words[] = {"classic", "deluxe",    "compact",  "premium",
                                           "vintage", "essential", "portable", "edition"};
#define N_SHARED (sizeof shared_words / sizeof shared_words[0])

typedef struct synth_item {
    int32_t cluster, period;
    double w; /* popularity rank^-zipf */
} synth_item;

typedef struct synth_cluster {
    int32_t *items; /* creation order, hence by arrival period */
    double *cum;    /* prefix sums of the items' weights */
    size_t n, cap, n_initial;
    size_t avail; /* items arrived by the current period: a prefix */
} synth_cluster;

typedef struct synth_user {
    int32_t *items; /* everything the user chose so far, any period */
    size_t n, cap;
} synth_user;

typedef struct synth {
    const peso_conf_synth *p;
    int T, K;
    synth_item *item;
    size_t n_items;
    synth_cluster *cl;
    synth_user *user;
    double *lt, *st; /* [n_users * K] long-term and short-term interest */
    size_t n_users, cap_users;
    size_t bounds[PESO_MAX_BLOCKS + 1];
} synth;

static int check_conf(const peso_conf *c, peso_err *err)
{
    const peso_conf_synth *p = &c->synth;
    if (p->users < 1 || p->clusters < 1 || p->words_per_cluster < 1 || p->seq_mean < 1)
        return peso_errf(err, "synth: users, clusters, words_per_cluster and seq_mean must be >= 1");
    if (p->items < p->clusters)
        return peso_errf(err,
                         "synth.items (%lld) must be at least synth.clusters (%lld): every cluster "
                         "starts with an item",
                         (long long)p->items, (long long)p->clusters);
    if (!(p->drift >= 0 && p->drift <= 1) || !(p->long_term >= 0 && p->long_term <= 1))
        return peso_errf(err, "synth.drift and synth.long_term must be in [0, 1]");
    if (!(p->zipf >= 0) || !(p->new_user_share >= 0) || !(p->new_item_share >= 0))
        return peso_errf(err, "synth.zipf, synth.new_user_share and synth.new_item_share must be >= 0");
    if (c->split.n_fractions < 1 || c->split.n_fractions > PESO_MAX_BLOCKS)
        return peso_errf(err, "split.fractions: expected 1 to %d blocks, got %d", PESO_MAX_BLOCKS,
                         c->split.n_fractions);
    for (int k = 0; k < c->split.n_fractions; k++)
        if (!(c->split.fractions[k] > 0))
            return peso_errf(err, "split.fractions[%d] must be > 0 for the synthetic periods", k);
    return 0;
}

/* First index j < n with cum[j] > u * cum[n-1]; never a zero-weight entry. */
static size_t pick_cum(const double *cum, size_t n, double u)
{
    double x = u * cum[n - 1];
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cum[mid] > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    while (lo > 0 && cum[lo] == cum[lo - 1])
        lo--;
    return lo;
}

static int pick_dist(const double *p, int K, double u)
{
    double acc = 0.0;
    for (int k = 0; k < K - 1; k++) {
        acc += p[k];
        if (u < acc)
            return k;
    }
    return K - 1;
}

/* Symmetric Dirichlet(1/2): Gamma(1/2) variates are Z^2 / 2 for a standard
 * normal Z, and the common factor cancels in the normalisation. */
static void draw_interest(peso_rng *r, double *p, int K)
{
    double sum = 0.0;
    for (int k = 0; k < K; k++) {
        double z = peso_rng_normal(r);
        p[k] = z * z;
        sum += p[k];
    }
    for (int k = 0; k < K; k++)
        p[k] = sum > 0 ? p[k] / sum : 1.0 / K;
}

/* ---- vocabulary and items ---- */

/* Made-up words of `syl` consonant-vowel syllables, unique in `words`. */
static int32_t new_word(peso_strtab *words, peso_rng *r, int syl)
{
    static const char cons[] = "bdfgklmnprstvz", vow[] = "aeiou";
    char buf[64];
    do {
        for (int i = 0; i < syl; i++) {
            buf[2 * i] = cons[peso_rng_below(r, sizeof cons - 1)];
            buf[2 * i + 1] = vow[peso_rng_below(r, sizeof vow - 1)];
        }
        buf[2 * syl] = '\0';
    } while (peso_strtab_find(words, buf, (size_t)(2 * syl)) >= 0);
    return peso_strtab_intern(words, buf, (size_t)(2 * syl));
}

/* Syllables per word: at least 3, and enough that random words are unique
 * after few rejections (the space is 70^syl). */
static int word_syllables(size_t needed)
{
    int syl = 3;
    double space = 70.0 * 70.0 * 70.0;
    while (space < 4.0 * (double)needed && syl < 20) {
        space *= 70.0;
        syl++;
    }
    return syl;
}

static void cluster_push(synth_cluster *c, int32_t item)
{
    peso_grow((void **)&c->items, &c->cap, c->n + 1, sizeof *c->items);
    c->items[c->n++] = item;
}

static void add_item(synth *s, int32_t cluster, int32_t period, double rank)
{
    synth_item *it = &s->item[s->n_items];
    it->cluster = cluster;
    it->period = period;
    it->w = pow(rank, -s->p->zipf);
    cluster_push(&s->cl[cluster], (int32_t)s->n_items);
    s->n_items++;
}

/* Initial items round-robin over clusters (every cluster gets one), ranks a
 * random permutation inside each cluster; each later period's new items
 * join random clusters at a random rank of the cluster's initial range. */
static void make_items(synth *s, uint64_t seed)
{
    peso_rng r;
    peso_rng_seed(&r, seed, STREAM_ITEMS);
    size_t I = (size_t)s->p->items, K = (size_t)s->K;
    size_t per_period = (size_t)llround(s->p->new_item_share * (double)I);
    s->item = peso_malloc((I + per_period * (size_t)(s->T - 1)) * sizeof *s->item);
    int32_t *rank = peso_malloc(I * sizeof *rank);
    int32_t *perm = peso_malloc((I / K + 1) * sizeof *perm);
    for (size_t k = 0; k < K; k++) {
        size_t n = I / K + (k < I % K);
        s->cl[k].n_initial = n;
        for (size_t j = 0; j < n; j++)
            perm[j] = (int32_t)j + 1;
        peso_rng_shuffle_i32(&r, perm, n);
        /* the j-th item of cluster k is item k + j * K */
        for (size_t j = 0; j < n; j++)
            rank[k + j * K] = perm[j];
    }
    for (size_t i = 0; i < I; i++)
        add_item(s, (int32_t)(i % K), 1, (double)rank[i]);
    for (int t = 2; t <= s->T; t++)
        for (size_t j = 0; j < per_period; j++) {
            int32_t k = (int32_t)peso_rng_below(&r, K);
            add_item(s, k, t, (double)(1 + peso_rng_below(&r, s->cl[k].n_initial)));
        }
    for (size_t k = 0; k < K; k++) {
        synth_cluster *c = &s->cl[k];
        c->cum = peso_malloc(c->n * sizeof *c->cum);
        double acc = 0.0;
        for (size_t j = 0; j < c->n; j++)
            c->cum[j] = acc += s->item[c->items[j]].w;
    }
    free(rank);
    free(perm);
}

static int item_id(char *buf, size_t cap, size_t item)
{
    return snprintf(buf, cap, "I%06zu", item);
}

static void append(char **buf, size_t *len, size_t *cap, const char *s)
{
    size_t n = strlen(s);
    peso_grow((void **)buf, cap, *len + n + 1, 1);
    memcpy(*buf + *len, s, n + 1);
    *len += n;
}

/* Item text: "<2-4 cluster words>[ <shared word>]. category: <word>". */
static void make_texts(synth *s, peso_raw *r, const peso_conf *c)
{
    peso_rng rng;
    peso_rng_seed(&rng, c->seed, STREAM_WORDS);
    int K = s->K, W = (int)s->p->words_per_cluster;
    size_t need = (size_t)K * (size_t)(W + 1);
    int syl = word_syllables(need);
    peso_strtab *words = peso_strtab_new();
    for (size_t i = 0; i < N_SHARED; i++)
        peso_strtab_intern(words, shared_words[i], strlen(shared_words[i]));
    int32_t *vocab = peso_malloc(need * sizeof *vocab); /* cluster k: W words, then its category */
    for (size_t i = 0; i < need; i++)
        vocab[i] = new_word(words, &rng, syl);
    int32_t *pick = peso_malloc((size_t)W * sizeof *pick);
    char *buf = NULL, id[32];
    size_t cap = 0;
    for (size_t i = 0; i < s->n_items; i++) {
        const int32_t *v = vocab + (size_t)s->item[i].cluster * (size_t)(W + 1);
        int nw = 2 + (int)peso_rng_below(&rng, 3);
        if (nw > W)
            nw = W;
        for (int j = 0; j < W; j++)
            pick[j] = j;
        size_t len = 0;
        for (int j = 0; j < nw; j++) {
            int q = j + (int)peso_rng_below(&rng, (uint64_t)(W - j));
            int32_t tmp = pick[j];
            pick[j] = pick[q];
            pick[q] = tmp;
            if (j)
                append(&buf, &len, &cap, " ");
            append(&buf, &len, &cap, peso_strtab_str(words, v[pick[j]]));
        }
        if (peso_rng_below(&rng, 2)) {
            append(&buf, &len, &cap, " ");
            append(&buf, &len, &cap, shared_words[peso_rng_below(&rng, N_SHARED)]);
        }
        append(&buf, &len, &cap, ". category: ");
        append(&buf, &len, &cap, peso_strtab_str(words, v[W]));
        int32_t ix = peso_strtab_intern(r->items, id, (size_t)item_id(id, sizeof id, i));
        peso_raw_add_text(r, ix, buf, len, (size_t)c->data.max_text);
    }
    free(buf);
    free(pick);
    free(vocab);
    peso_strtab_free(words);
}

/* ---- users ---- */

static size_t add_user(synth *s, peso_rng *r)
{
    size_t K = (size_t)s->K, u = s->n_users;
    if (u == s->cap_users) {
        size_t cap = s->cap_users ? 2 * s->cap_users : 1024;
        s->user = peso_realloc(s->user, cap * sizeof *s->user);
        s->lt = peso_realloc(s->lt, cap * K * sizeof *s->lt);
        s->st = peso_realloc(s->st, cap * K * sizeof *s->st);
        s->cap_users = cap;
    }
    memset(&s->user[u], 0, sizeof s->user[u]);
    draw_interest(r, s->lt + u * K, s->K);
    draw_interest(r, s->st + u * K, s->K);
    s->n_users++;
    return u;
}

/* P_t = a P_{t-1} + (1 - a) Q_t for every user who arrived earlier. */
static void drift_interests(synth *s, peso_rng *r)
{
    size_t K = (size_t)s->K;
    double a = s->p->drift;
    double *q = peso_malloc(K * sizeof *q);
    for (size_t u = 0; u < s->n_users; u++) {
        double *p = s->st + u * K;
        draw_interest(r, q, s->K);
        for (size_t k = 0; k < K; k++)
            p[k] = a * p[k] + (1.0 - a) * q[k];
    }
    free(q);
}

static int user_has(const synth_user *u, int32_t item)
{
    for (size_t i = 0; i < u->n; i++)
        if (u->items[i] == item)
            return 1;
    return 0;
}

/* Exact weighted draw over the available items of clusters [k0, k1) that
 * the user has not chosen yet; -1 if there are none. */
static int32_t pick_exact(const synth *s, const synth_user *u, int k0, int k1, peso_rng *r)
{
    double total = 0.0;
    for (int k = k0; k < k1; k++)
        for (size_t j = 0; j < s->cl[k].avail; j++)
            if (!user_has(u, s->cl[k].items[j]))
                total += s->item[s->cl[k].items[j]].w;
    if (total <= 0)
        return -1;
    double x = peso_rng_uniform(r) * total;
    int32_t last = -1;
    for (int k = k0; k < k1; k++)
        for (size_t j = 0; j < s->cl[k].avail; j++) {
            int32_t it = s->cl[k].items[j];
            if (user_has(u, it))
                continue;
            last = it;
            x -= s->item[it].w;
            if (x < 0)
                return it;
        }
    return last;
}

/* An item of cluster k by popularity, one the user has not chosen before.
 * Rejection first (cheap, exact for the conditional law); when the user
 * holds most of the cluster's weight, an exact draw over the rest; when the
 * cluster is exhausted, any available item. */
static int32_t pick_item(const synth *s, const synth_user *u, int k, peso_rng *r)
{
    const synth_cluster *c = &s->cl[k];
    for (int i = 0; i < PICK_TRIES; i++) {
        int32_t it = c->items[pick_cum(c->cum, c->avail, peso_rng_uniform(r))];
        if (!user_has(u, it))
            return it;
    }
    int32_t it = pick_exact(s, u, k, k + 1, r);
    return it >= 0 ? it : pick_exact(s, u, 0, s->K, r);
}

/* ---- periods ---- */

typedef struct period {
    int t;
    size_t n;            /* interactions */
    int64_t start, span; /* ms */
    size_t *active;      /* users active in the period */
    size_t n_active;
    size_t *len; /* their interaction counts */
} period;

/* Returning users: max(n / seq_mean - new, ceil(new / 2)), so that the period's
 * mean sequence is about seq_mean and at least a third of its users return. */
static size_t returning_count(const synth *s, size_t n, size_t n_new, size_t n_prev)
{
    long long want = llround((double)n / (double)s->p->seq_mean) - (long long)n_new;
    long long floor_share = (long long)(n_new + 1) / 2;
    if (want < floor_share)
        want = floor_share;
    if (want < 1 && n_new == 0)
        want = 1;
    size_t r = (size_t)want;
    if (r > n_prev)
        r = n_prev;
    if (r > n - n_new)
        r = n - n_new;
    return r;
}

static void choose_active(synth *s, period *pd, peso_rng *ri, peso_rng *r)
{
    size_t n_prev = s->n_users, n_new, n_ret;
    if (pd->t == 1)
        n_new = (size_t)s->p->users;
    else
        n_new = (size_t)llround(s->p->new_user_share * (double)s->p->users);
    if (n_new > pd->n)
        n_new = pd->n;
    n_ret = pd->t == 1 ? 0 : returning_count(s, pd->n, n_new, n_prev);
    pd->active = peso_malloc((n_new + n_ret + 1) * sizeof *pd->active);
    pd->len = peso_calloc(n_new + n_ret + 1, sizeof *pd->len);
    /* partial Fisher-Yates over the earlier users */
    int32_t *ix = peso_malloc((n_prev + 1) * sizeof *ix);
    for (size_t u = 0; u < n_prev; u++)
        ix[u] = (int32_t)u;
    for (size_t i = 0; i < n_ret; i++) {
        size_t j = i + (size_t)peso_rng_below(r, n_prev - i);
        int32_t tmp = ix[i];
        ix[i] = ix[j];
        ix[j] = tmp;
        pd->active[pd->n_active++] = (size_t)ix[i];
    }
    free(ix);
    for (size_t i = 0; i < n_new; i++)
        pd->active[pd->n_active++] = add_user(s, ri);
}

/* Each active user gets 1 + a Dirichlet-multinomial share (Gamma(2)
 * activity weights) of the period's interactions, at most half of the
 * available items it has not chosen yet. */
static int draw_lengths(synth *s, period *pd, peso_rng *r, peso_err *err)
{
    size_t A = pd->n_active, total_avail = 0, room = 0;
    for (int k = 0; k < s->K; k++)
        total_avail += s->cl[k].avail;
    size_t *cap = peso_malloc((A + 1) * sizeof *cap);
    double *w = peso_malloc((A + 1) * sizeof *w), *cum = peso_malloc((A + 1) * sizeof *cum);
    int rc = 0;
    for (size_t i = 0; i < A; i++) {
        size_t free_items = total_avail - s->user[pd->active[i]].n;
        cap[i] = free_items >= 2 ? free_items / 2 : free_items;
        room += cap[i];
        w[i] = -log(1.0 - peso_rng_uniform(r)) - log(1.0 - peso_rng_uniform(r));
        pd->len[i] = 1;
    }
    if (A == 0 || room < pd->n) {
        rc = peso_errf(err,
                       "synth: period %d needs %zu interactions but its %zu users can take only "
                       "%zu distinct items: raise synth.items or lower synth.seq_mean",
                       pd->t, pd->n, A, room);
        goto out;
    }
    for (size_t i = 0; i < A; i++)
        if (cap[i] < 1) {
            rc = peso_errf(err,
                           "synth: a user of period %d has chosen every available item: raise "
                           "synth.items",
                           pd->t);
            goto out;
        }
    int rebuild = 1;
    for (size_t left = pd->n - A; left > 0; left--) {
        if (rebuild) {
            double acc = 0.0;
            for (size_t i = 0; i < A; i++)
                cum[i] = acc += pd->len[i] < cap[i] ? w[i] : 0.0;
            if (acc <= 0) /* every weight zero: fall back to equal weights */
                for (size_t i = 0; i < A; i++)
                    cum[i] = acc += pd->len[i] < cap[i] ? 1.0 : 0.0;
            rebuild = 0;
        }
        size_t i = pick_cum(cum, A, peso_rng_uniform(r));
        if (++pd->len[i] == cap[i])
            rebuild = 1;
    }
out:
    free(cap);
    free(w);
    free(cum);
    return rc;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* One user's interactions of the period: sorted distinct times in the
 * period's span, one choice per time. */
static void emit_user(synth *s, peso_raw *raw, const period *pd, size_t u, size_t len, peso_rng *r,
                      int64_t *ts)
{
    size_t K = (size_t)s->K;
    synth_user *su = &s->user[u];
    char uid[32], iid[32];
    int ul = snprintf(uid, sizeof uid, "U%06zu", u);
    for (size_t i = 0; i < len; i++)
        ts[i] = (int64_t)peso_rng_below(r, (uint64_t)(pd->span - (int64_t)len + 1));
    qsort(ts, len, sizeof *ts, cmp_i64);
    for (size_t i = 0; i < len; i++) {
        const double *p = peso_rng_uniform(r) < s->p->long_term ? s->lt + u * K : s->st + u * K;
        int k = pick_dist(p, s->K, peso_rng_uniform(r));
        int32_t it = pick_item(s, su, k, r);
        peso_grow((void **)&su->items, &su->cap, su->n + 1, sizeof *su->items);
        su->items[su->n++] = it;
        int il = item_id(iid, sizeof iid, (size_t)it);
        peso_raw_add(raw, uid, (size_t)ul, iid, (size_t)il, pd->start + ts[i] + (int64_t)i);
    }
}

static int run_period(synth *s, peso_raw *raw, const peso_conf *c, int t, double c_lo, double c_hi,
                      peso_rng *ri, peso_err *err)
{
    period pd = {.t = t, .n = s->bounds[t] - s->bounds[t - 1]};
    int64_t lo = (int64_t)floor((double)SYNTH_SPAN_MS * c_lo);
    int64_t hi = (int64_t)floor((double)SYNTH_SPAN_MS * c_hi);
    pd.start = SYNTH_T0_MS + lo;
    pd.span = hi - lo;
    peso_rng r;
    peso_rng_seed(&r, c->seed, STREAM_PERIOD + (uint64_t)t);
    for (int k = 0; k < s->K; k++) {
        synth_cluster *cl = &s->cl[k];
        while (cl->avail < cl->n && s->item[cl->items[cl->avail]].period <= t)
            cl->avail++;
    }
    if (pd.n == 0)
        return 0;
    if (t > 1)
        drift_interests(s, ri);
    choose_active(s, &pd, ri, &r);
    int rc = draw_lengths(s, &pd, &r, err);
    size_t max_len = 0;
    for (size_t i = 0; rc == 0 && i < pd.n_active; i++)
        if (pd.len[i] > max_len)
            max_len = pd.len[i];
    if (rc == 0 && (int64_t)max_len > pd.span)
        rc = peso_errf(err, "split.fractions[%d] gives period %d only %lld ms for %zu interactions", t - 1, t,
                       (long long)pd.span, max_len);
    if (rc == 0) {
        int64_t *ts = peso_malloc((max_len + 1) * sizeof *ts);
        for (size_t i = 0; i < pd.n_active; i++)
            emit_user(s, raw, &pd, pd.active[i], pd.len[i], &r, ts);
        free(ts);
    }
    free(pd.active);
    free(pd.len);
    return rc;
}

static void synth_free(synth *s)
{
    for (int k = 0; s->cl && k < s->K; k++) {
        free(s->cl[k].items);
        free(s->cl[k].cum);
    }
    for (size_t u = 0; u < s->n_users; u++)
        free(s->user[u].items);
    free(s->cl);
    free(s->item);
    free(s->user);
    free(s->lt);
    free(s->st);
}

int peso_synth_generate(peso_raw *r, const peso_conf *c, peso_err *err)
{
    if (check_conf(c, err))
        return -1;
    synth s = {.p = &c->synth, .T = c->split.n_fractions, .K = (int)c->synth.clusters};
    /* Period 1 has users * seq_mean interactions; the total follows from
     * its fraction, and the periods are the split's blocks exactly. */
    double f1 = c->split.fractions[0];
    size_t n = (size_t)llround((double)c->synth.users * (double)c->synth.seq_mean / f1);
    peso_split_bounds(n, c->split.fractions, s.T, s.bounds);
    s.cl = peso_calloc((size_t)s.K, sizeof *s.cl);
    make_items(&s, c->seed);
    make_texts(&s, r, c);
    r->has_time = 1;
    peso_rng ri;
    peso_rng_seed(&ri, c->seed, STREAM_INTEREST);
    double c_lo = 0.0;
    int rc = 0;
    for (int t = 1; rc == 0 && t <= s.T; t++) {
        double c_hi = t == s.T ? 1.0 : c_lo + c->split.fractions[t - 1];
        rc = run_period(&s, r, c, t, c_lo, c_hi, &ri, err);
        c_lo = c_hi;
    }
    synth_free(&s);
    return rc;
}
