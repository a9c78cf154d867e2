/* The small-vocabulary builder: byte-level BPE merges learned from texts
 * (peso_tok_build_small in tokenizer.h), written out as a tokenizer.json
 * tree and loaded like any other. */
#include "hf/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "hf/tokenizer_internal.h"

/* A distinct pre-token of the training texts as its current symbols. */
struct word {
    int32_t *sym;
    size_t n;
    int64_t count;
};

struct learner {
    struct word *w;
    size_t nw, cap_w;
    struct tok_bmap word_index;
    struct tok_buf *tok; /* bytes of each token id */
    size_t ntok, cap_tok;
    struct tok_bmap tok_index;
    int32_t (*merges)[2];
    size_t nmerges;
};

static void learner_token(struct learner *L, const unsigned char *s, size_t n)
{
    peso_grow((void **)&L->tok, &L->cap_tok, L->ntok + 1, sizeof *L->tok);
    L->tok[L->ntok] = (struct tok_buf){0};
    peso_tok_buf_put(&L->tok[L->ntok], s, n);
    peso_tok_bmap_put(&L->tok_index, s, n, (int32_t)L->ntok);
    L->ntok++;
}

static void learner_word(struct learner *L, const unsigned char *s, size_t n)
{
    int32_t i = peso_tok_bmap_get(&L->word_index, s, n);
    if (i >= 0) {
        L->w[i].count++;
        return;
    }
    peso_grow((void **)&L->w, &L->cap_w, L->nw + 1, sizeof *L->w);
    struct word *w = &L->w[L->nw];
    w->sym = peso_malloc(n * sizeof *w->sym);
    for (size_t k = 0; k < n; k++)
        w->sym[k] = s[k];
    w->n = n;
    w->count = 1;
    peso_tok_bmap_put(&L->word_index, s, n, (int32_t)L->nw++);
}

struct pair_count {
    uint64_t key;
    int64_t count;
};

static int cmp_pair_count(const void *a, const void *b)
{
    uint64_t x = ((const struct pair_count *)a)->key, y = ((const struct pair_count *)b)->key;
    return x < y ? -1 : x > y;
}

/* The most frequent adjacent pair over all words, weighted by word count;
 * ties go to the smallest (left, right) ids. Sorting the pairs keeps this
 * deterministic without a counting hash map. Returns its count. */
static int64_t best_pair(const struct learner *L, int32_t *l, int32_t *r)
{
    size_t total = 0, k = 0;
    for (size_t i = 0; i < L->nw; i++)
        total += L->w[i].n;
    struct pair_count *pc = peso_malloc((total + 1) * sizeof *pc);
    for (size_t i = 0; i < L->nw; i++)
        for (size_t j = 0; j + 1 < L->w[i].n; j++)
            pc[k++] =
                (struct pair_count){peso_tok_pair_key(L->w[i].sym[j], L->w[i].sym[j + 1]), L->w[i].count};
    qsort(pc, k, sizeof *pc, cmp_pair_count);
    int64_t best = 0;
    uint64_t best_key = 0;
    for (size_t i = 0; i < k;) {
        size_t j = i;
        int64_t c = 0;
        for (; j < k && pc[j].key == pc[i].key; j++)
            c += pc[j].count;
        if (c > best)
            best = c, best_key = pc[i].key;
        i = j;
    }
    free(pc);
    *l = (int32_t)(best_key >> 32);
    *r = (int32_t)(best_key & 0xffffffffu);
    return best;
}

/* Replaces every (l, r) in every word, left to right. */
static void apply_merge(struct learner *L, int32_t l, int32_t r, int32_t id)
{
    for (size_t i = 0; i < L->nw; i++) {
        struct word *w = &L->w[i];
        size_t k = 0;
        for (size_t j = 0; j < w->n; j++) {
            if (j + 1 < w->n && w->sym[j] == l && w->sym[j + 1] == r) {
                w->sym[k++] = id;
                j++;
            } else {
                w->sym[k++] = w->sym[j];
            }
        }
        w->n = k;
    }
}

static void learn(struct learner *L, int n_merges)
{
    L->merges = peso_malloc(((size_t)n_merges + 1) * sizeof *L->merges);
    for (int m = 0; m < n_merges; m++) {
        int32_t l, r;
        if (best_pair(L, &l, &r) < 2)
            break;
        struct tok_buf cat = {0};
        peso_tok_buf_put(&cat, L->tok[l].p, L->tok[l].n);
        peso_tok_buf_put(&cat, L->tok[r].p, L->tok[r].n);
        int32_t id = peso_tok_bmap_get(&L->tok_index, cat.p, cat.n);
        if (id < 0) {
            id = (int32_t)L->ntok;
            learner_token(L, cat.p, cat.n);
        }
        free(cat.p);
        L->merges[L->nmerges][0] = l;
        L->merges[L->nmerges][1] = r;
        L->nmerges++;
        apply_merge(L, l, r, id);
    }
}

static void learner_free(struct learner *L)
{
    for (size_t i = 0; i < L->nw; i++)
        free(L->w[i].sym);
    free(L->w);
    peso_tok_bmap_free(&L->word_index);
    for (size_t i = 0; i < L->ntok; i++)
        free(L->tok[i].p);
    free(L->tok);
    peso_tok_bmap_free(&L->tok_index);
    free(L->merges);
}

static cJSON *spelled(const struct tok_buf *b)
{
    char *s = peso_tok_spell(b->p, b->n);
    cJSON *o = peso_json_string(s);
    free(s);
    return o;
}

static cJSON *small_model_json(const struct learner *L)
{
    cJSON *m = peso_json_object(), *vocab = peso_json_object(), *merges = peso_json_array();
    /* distinct byte strings have distinct spellings, so keys never repeat */
    for (size_t i = 0; i < L->ntok; i++) {
        char *s = peso_tok_spell(L->tok[i].p, L->tok[i].n);
        peso_json_add(vocab, s, peso_json_int((int64_t)i));
        free(s);
    }
    for (size_t i = 0; i < L->nmerges; i++) {
        cJSON *pair = peso_json_array();
        peso_json_push(pair, spelled(&L->tok[L->merges[i][0]]));
        peso_json_push(pair, spelled(&L->tok[L->merges[i][1]]));
        peso_json_push(merges, pair);
    }
    peso_json_add(m, "type", peso_json_string("BPE"));
    peso_json_add(m, "dropout", peso_json_null());
    peso_json_add(m, "unk_token", peso_json_null());
    peso_json_add(m, "continuing_subword_prefix", peso_json_null());
    peso_json_add(m, "end_of_word_suffix", peso_json_null());
    peso_json_add(m, "fuse_unk", peso_json_bool(0));
    peso_json_add(m, "byte_fallback", peso_json_bool(0));
    peso_json_add(m, "ignore_merges", peso_json_bool(1));
    peso_json_add(m, "vocab", vocab);
    peso_json_add(m, "merges", merges);
    return m;
}

static cJSON *bytelevel_json(int prefix, int regex)
{
    cJSON *o = peso_json_object();
    peso_json_add(o, "type", peso_json_string("ByteLevel"));
    peso_json_add(o, "add_prefix_space", peso_json_bool(prefix));
    peso_json_add(o, "trim_offsets", peso_json_bool(1));
    peso_json_add(o, "use_regex", peso_json_bool(regex));
    return o;
}

/* Llama 3's pre-tokenizer and decoder, as its tokenizer.json spells them. */
static cJSON *small_root_json(const struct learner *L)
{
    cJSON *split = peso_json_object(), *pat = peso_json_object();
    peso_json_add(split, "type", peso_json_string("Split"));
    peso_json_add(pat, "Regex", peso_json_string(peso_tok_llama3_pattern));
    peso_json_add(split, "pattern", pat);
    peso_json_add(split, "behavior", peso_json_string("Isolated"));
    peso_json_add(split, "invert", peso_json_bool(0));
    cJSON *seq = peso_json_object(), *list = peso_json_array();
    peso_json_push(list, split);
    peso_json_push(list, bytelevel_json(0, 0));
    peso_json_add(seq, "type", peso_json_string("Sequence"));
    peso_json_add(seq, "pretokenizers", list);

    cJSON *r = peso_json_object();
    peso_json_add(r, "version", peso_json_string("1.0"));
    peso_json_add(r, "truncation", peso_json_null());
    peso_json_add(r, "padding", peso_json_null());
    peso_json_add(r, "added_tokens", peso_json_array());
    peso_json_add(r, "normalizer", peso_json_null());
    peso_json_add(r, "pre_tokenizer", seq);
    peso_json_add(r, "post_processor", peso_json_null());
    peso_json_add(r, "decoder", bytelevel_json(1, 1));
    peso_json_add(r, "model", small_model_json(L));
    return r;
}

/* Pre-tokenizes the training texts with the Llama 3 pattern into counted
 * words. */
static int collect_words(struct learner *L, const char *const *texts, size_t n, peso_err *err)
{
    pcre2_code *re;
    const char *who = "peso_tok_build_small";
    if (peso_tok_compile(who, &re, peso_tok_llama3_pattern, 0, "pattern", err) != 0)
        return -1;
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        size_t len = strlen(texts[i]);
        struct tok_buf w = {0};
        struct tok_spans pieces = {0};
        peso_tok_buf_put(&w, texts[i], len);
        rc = peso_tok_check_utf8(texts[i], len, err);
        if (rc == 0)
            rc = peso_tok_regex_split(who, re, md, &w, (struct tok_span){0, len, -1}, &pieces, err);
        for (size_t k = 0; rc == 0 && k < pieces.n; k++)
            learner_word(L, w.p + pieces.v[k].off, pieces.v[k].len);
        if (rc != 0)
            peso_err_prefix(err, "%s: text %zu", who, i);
        free(w.p);
        free(pieces.v);
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc;
}

int peso_tok_build_small(peso_tok **out, const char *const *texts, size_t n, int n_merges, peso_err *err)
{
    struct learner L = {0};
    *out = NULL;
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        learner_token(&L, &c, 1);
    }
    int rc = collect_words(&L, texts, n, err);
    if (rc == 0) {
        learn(&L, n_merges > 0 ? n_merges : 0);
        rc = peso_tok_from_root(out, small_root_json(&L), "(built tokenizer)", err);
    }
    learner_free(&L);
    return rc;
}
