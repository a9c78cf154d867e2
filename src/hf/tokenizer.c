#include "hf/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic.h"
#include "common/json.h"
#include "common/strtab.h"
#include "hf/tokenizer_internal.h"

/* One alternative per line: contractions, words (with one leading
 * non-letter), 1-3 digits, punctuation runs, newlines, spaces. */
const char *const peso_tok_llama3_pattern = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
                                            "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
                                            "|\\p{N}{1,3}"
                                            "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                                            "|\\s*[\\r\\n]+"
                                            "|\\s+(?!\\S)"
                                            "|\\s+";

/* What tokenizers' ByteLevel pre-tokenizer splits with when use_regex. */
static const char *const gpt2_pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

#define MAX_STEPS 8
/* Ids index dense arrays; Llama 3 needs 128256 (+ code tokens). */
#define MAX_ID (1 << 24)

/* ---- GPT-2's byte <-> character alphabet ----
 * Printable Latin-1 bytes stand for themselves; the other 68 bytes (0-32,
 * 127-160, 173) map in order to U+0100..U+0143, so every byte is one
 * visible character in the vocabulary's spelling. */

static int byte_printable(unsigned b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
}

static uint32_t byte_to_cp(unsigned b)
{
    if (byte_printable(b))
        return b;
    if (b <= 32)
        return 256 + b;
    if (b <= 160)
        return 256 + 33 + (b - 127);
    return 256 + 67; /* 173 */
}

static int cp_to_byte(uint32_t cp)
{
    if (cp < 256)
        return byte_printable(cp) ? (int)cp : -1;
    if (cp < 256 + 33)
        return (int)(cp - 256);
    if (cp < 256 + 67)
        return (int)(cp - 256 - 33 + 127);
    return cp == 256 + 67 ? 173 : -1;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when invalid, with
 * *bad = length of the maximal invalid subpart (what lossy decoding
 * replaces by one U+FFFD, as Rust's from_utf8_lossy does). */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp, size_t *bad)
{
    unsigned c = s[0], lo = 0x80, hi = 0xbf;
    size_t need;
    uint32_t v;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        need = 1, v = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2, v = c & 0x0f;
        lo = c == 0xe0 ? 0xa0 : lo;
        hi = c == 0xed ? 0x9f : hi;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3, v = c & 0x07;
        lo = c == 0xf0 ? 0x90 : lo;
        hi = c == 0xf4 ? 0x8f : hi;
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *bad = i;
            return 0;
        }
        v = (v << 6) | (s[i] & 0x3f);
        lo = 0x80, hi = 0xbf;
    }
    *cp = v;
    return need + 1;
}

static size_t utf8_put(unsigned char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xc0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xe0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* How the builder writes its vocabulary: each byte as its alphabet
 * character. */
char *peso_tok_spell(const unsigned char *s, size_t n)
{
    unsigned char *o = peso_malloc(2 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += utf8_put(o + k, byte_to_cp(s[i]));
    o[k] = '\0';
    return (char *)o;
}

/* ---- growable byte buffer ---- */

void peso_tok_buf_put(struct tok_buf *b, const void *s, size_t n)
{
    peso_grow((void **)&b->p, &b->cap, b->n + n + 1, 1);
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

/* Appends s with invalid UTF-8 replaced by U+FFFD. */
static void buf_put_lossy(struct tok_buf *b, const unsigned char *s, size_t n)
{
    static const unsigned char repl[3] = {0xef, 0xbf, 0xbd};
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t bad, k = utf8_seq(s + i, n - i, &cp, &bad);
        if (k) {
            peso_tok_buf_put(b, s + i, k);
            i += k;
        } else {
            peso_tok_buf_put(b, repl, 3);
            i += bad;
        }
    }
}

/* ---- byte string -> id map (open addressing) ---- */

void peso_tok_bmap_free(struct tok_bmap *m)
{
    free(m->slots);
    free(m->e);
    free(m->keys.p);
}

static size_t bmap_slot(const struct tok_bmap *m, const void *k, size_t len)
{
    size_t mask = m->nslots - 1, i = peso_hash_bytes(k, len) & mask;
    for (;; i = (i + 1) & mask) {
        uint32_t v = m->slots[i];
        if (!v)
            return i;
        const struct tok_bmap_entry *e = &m->e[v - 1];
        if (e->len == len && memcmp(m->keys.p + e->off, k, len) == 0)
            return i;
    }
}

int32_t peso_tok_bmap_get(const struct tok_bmap *m, const void *k, size_t len)
{
    if (!m->nslots)
        return -1;
    uint32_t v = m->slots[bmap_slot(m, k, len)];
    return v ? m->e[v - 1].val : -1;
}

static void bmap_rehash(struct tok_bmap *m)
{
    free(m->slots);
    m->nslots = m->nslots ? m->nslots * 2 : 1024;
    m->slots = peso_calloc(m->nslots, sizeof *m->slots);
    for (size_t j = 0; j < m->n; j++)
        m->slots[bmap_slot(m, m->keys.p + m->e[j].off, m->e[j].len)] = (uint32_t)j + 1;
}

void peso_tok_bmap_put(struct tok_bmap *m, const void *k, size_t len, int32_t val)
{
    if ((m->n + 1) * 2 > m->nslots)
        bmap_rehash(m);
    size_t i = bmap_slot(m, k, len);
    if (m->slots[i]) {
        m->e[m->slots[i] - 1].val = val;
        return;
    }
    peso_grow((void **)&m->e, &m->cap, m->n + 1, sizeof *m->e);
    m->e[m->n] = (struct tok_bmap_entry){m->keys.n, len, val};
    peso_tok_buf_put(&m->keys, k, len);
    m->slots[i] = (uint32_t)++m->n;
}

/* ---- (left, right) pair -> (rank, merged id) map ---- */

struct pair_entry {
    uint64_t key; /* UINT64_MAX = empty */
    int32_t rank, id;
};

struct pmap {
    struct pair_entry *s;
    size_t nslots, n;
};

static size_t pmap_slot(const struct pmap *m, uint64_t key)
{
    size_t mask = m->nslots - 1, i = peso_hash_bytes(&key, sizeof key) & mask;
    while (m->s[i].key != UINT64_MAX && m->s[i].key != key)
        i = (i + 1) & mask;
    return i;
}

static const struct pair_entry *pmap_get(const struct pmap *m, int32_t l, int32_t r)
{
    if (!m->nslots)
        return NULL;
    const struct pair_entry *e = &m->s[pmap_slot(m, peso_tok_pair_key(l, r))];
    return e->key == UINT64_MAX ? NULL : e;
}

static void pmap_init(struct pmap *m, size_t n)
{
    m->nslots = 1024;
    while (m->nslots < 2 * n + 2)
        m->nslots *= 2;
    m->s = peso_malloc(m->nslots * sizeof *m->s);
    for (size_t i = 0; i < m->nslots; i++)
        m->s[i].key = UINT64_MAX;
    m->n = 0;
}

/* Sized by pmap_init for all entries; a repeated pair takes the later
 * rank, as tokenizers' HashMap collect does. */
static struct pair_entry *pmap_put(struct pmap *m, int32_t l, int32_t r)
{
    uint64_t key = peso_tok_pair_key(l, r);
    struct pair_entry *e = &m->s[pmap_slot(m, key)];
    if (e->key == UINT64_MAX) {
        e->key = key;
        m->n++;
    }
    return e;
}

/* ---- the tokenizer ---- */

enum { ID_ADDED = 1, ID_SPECIAL = 2 };

struct id_info {
    char *text;         /* token text as in the file; NULL = no token */
    unsigned char *dec; /* bytes the ByteLevel decoder gives for it */
    size_t ndec;
    unsigned char flags;
    unsigned char mapped; /* every character is in the byte alphabet */
};

struct added {
    char *content;
    size_t len;
    int32_t id;
    int normalized;
};

struct trie_node {
    int32_t child, next; /* first child, next sibling; -1 = none */
    int32_t added;       /* index into added[] ending here, or -1 */
    unsigned char c;
};

enum { STEP_SPLIT, STEP_BYTELEVEL };

struct step {
    int kind;
    pcre2_code *re; /* NULL: ByteLevel without regex */
    int prefix_space;
};

struct peso_tok {
    cJSON *root; /* the whole file, written back by save */
    char *path;
    struct id_info *ids;
    int32_t size, cap_ids;
    struct tok_bmap by_bytes; /* vocabulary token's bytes -> id */
    struct tok_bmap by_text;  /* vocabulary token's text -> id */
    struct pmap merges;
    int32_t byte_id[256];
    int ignore_merges;
    struct step steps[MAX_STEPS];
    int nsteps;
    struct added *added;
    size_t nadded, cap_added;
    struct trie_node *trie;
    size_t ntrie, cap_trie;
};

void peso_tok_free(peso_tok *t)
{
    if (!t)
        return;
    cJSON_Delete(t->root);
    free(t->path);
    for (int32_t i = 0; i < t->size; i++) {
        free(t->ids[i].text);
        free(t->ids[i].dec);
    }
    free(t->ids);
    peso_tok_bmap_free(&t->by_bytes);
    peso_tok_bmap_free(&t->by_text);
    free(t->merges.s);
    for (int i = 0; i < t->nsteps; i++)
        pcre2_code_free(t->steps[i].re);
    for (size_t i = 0; i < t->nadded; i++)
        free(t->added[i].content);
    free(t->added);
    free(t->trie);
    free(t);
}

static void ensure_id(peso_tok *t, int32_t id)
{
    if (id < t->size)
        return;
    size_t cap = (size_t)t->cap_ids;
    peso_grow((void **)&t->ids, &cap, (size_t)id + 1, sizeof *t->ids);
    memset(t->ids + t->size, 0, ((size_t)id + 1 - (size_t)t->size) * sizeof *t->ids);
    t->cap_ids = (int32_t)cap;
    t->size = id + 1;
}

/* The decoder's bytes for a token: its characters through the byte
 * alphabet, or its UTF-8 as is when a character is outside the alphabet
 * (tokenizers' ByteLevel decoder does the same). Returns 1 when every
 * character mapped, i.e. the token is reachable by byte-level BPE. */
static int decode_token(struct id_info *info)
{
    const unsigned char *s = (const unsigned char *)info->text;
    size_t n = strlen(info->text), k = 0;
    info->dec = peso_malloc(n + 1);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t bad, len = utf8_seq(s + i, n - i, &cp, &bad);
        int b = len ? cp_to_byte(cp) : -1;
        if (b < 0) {
            memcpy(info->dec, s, n);
            info->ndec = n;
            return 0;
        }
        info->dec[k++] = (unsigned char)b;
        i += len;
    }
    info->ndec = k;
    return 1;
}

/* Gives id its text; *mapped tells whether the text is byte-level. */
static int set_token(peso_tok *t, int64_t id, const char *text, const char *where, int *mapped, peso_err *err)
{
    if (id < 0 || id >= MAX_ID)
        return peso_errf(err, "%s: %s: token '%s' has id %lld, expected 0..%d", t->path, where, text,
                         (long long)id, MAX_ID - 1);
    ensure_id(t, (int32_t)id);
    struct id_info *info = &t->ids[id];
    if (info->text && strcmp(info->text, text) != 0)
        return peso_errf(err, "%s: %s: id %lld is both '%s' and '%s'", t->path, where, (long long)id,
                         info->text, text);
    if (!info->text) {
        info->text = peso_strdup(text);
        info->mapped = decode_token(info);
    }
    *mapped = info->mapped;
    return 0;
}

/* ---- loading: model ---- */

static const char *str(const cJSON *v)
{
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* An absent or null flag leaves *out; anything but a boolean fails. */
static int get_flag(const cJSON *o, const char *key, int *out)
{
    const cJSON *v = peso_json_get(o, key);
    if (!v)
        return 0;
    if (!cJSON_IsBool(v))
        return -1;
    *out = cJSON_IsTrue(v);
    return 0;
}

static int load_vocab(peso_tok *t, const cJSON *vocab, peso_err *err)
{
    if (!cJSON_IsObject(vocab))
        return peso_errf(err, "%s: key 'model.vocab': expected an object of token: id", t->path);
    for (const cJSON *jid = vocab->child; jid; jid = jid->next) {
        const char *tok = jid->string;
        int64_t id;
        if (peso_json_int64(jid, &id) != 0)
            id = -1;
        int mapped;
        if (set_token(t, id, tok, "model.vocab", &mapped, err) != 0)
            return -1;
        peso_tok_bmap_put(&t->by_text, tok, strlen(tok), (int32_t)id);
        if (mapped)
            peso_tok_bmap_put(&t->by_bytes, t->ids[id].dec, t->ids[id].ndec, (int32_t)id);
    }
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        t->byte_id[b] = peso_tok_bmap_get(&t->by_bytes, &c, 1);
    }
    return 0;
}

/* A merge as "a b" or ["a", "b"]. */
static int merge_parts(const cJSON *m, char *a, char *b, size_t n)
{
    const char *s = str(m), *sp = s ? strchr(s, ' ') : NULL;
    if (s) {
        if (!sp || strchr(sp + 1, ' ') || (size_t)(sp - s) >= n || strlen(sp + 1) >= n)
            return -1;
        memcpy(a, s, (size_t)(sp - s));
        a[sp - s] = '\0';
        strcpy(b, sp + 1);
        return 0;
    }
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) != 2)
        return -1;
    const char *x = str(m->child), *y = str(m->child->next);
    if (!x || !y || strlen(x) >= n || strlen(y) >= n)
        return -1;
    strcpy(a, x);
    strcpy(b, y);
    return 0;
}

static int load_merges(peso_tok *t, const cJSON *merges, peso_err *err)
{
    if (!cJSON_IsArray(merges))
        return peso_errf(err, "%s: key 'model.merges': expected an array", t->path);
    pmap_init(&t->merges, (size_t)cJSON_GetArraySize(merges));
    char a[1024], b[1024], ab[2048];
    size_t i = 0;
    for (const cJSON *m = merges->child; m; m = m->next, i++) {
        if (merge_parts(m, a, b, sizeof a) != 0)
            return peso_errf(err, "%s: key 'model.merges[%zu]': expected \"a b\" or [\"a\", \"b\"]", t->path,
                             i);
        snprintf(ab, sizeof ab, "%s%s", a, b);
        int32_t l = peso_tok_bmap_get(&t->by_text, a, strlen(a));
        int32_t r = peso_tok_bmap_get(&t->by_text, b, strlen(b));
        int32_t m_id = peso_tok_bmap_get(&t->by_text, ab, strlen(ab));
        if (l < 0 || r < 0 || m_id < 0)
            return peso_errf(err,
                             "%s: key 'model.merges[%zu]': '%s' + '%s': token '%s' is not in model.vocab",
                             t->path, i, a, b,
                             l < 0   ? a
                             : r < 0 ? b
                                     : ab);
        struct pair_entry *e = pmap_put(&t->merges, l, r);
        e->rank = (int32_t)i;
        e->id = m_id;
    }
    return 0;
}

static int null_or_empty(const cJSON *v)
{
    return !v || (cJSON_IsString(v) && !*v->valuestring);
}

static int load_model(peso_tok *t, const cJSON *model, peso_err *err)
{
    const cJSON *drop = peso_json_get(model, "dropout");
    const char *type = str(peso_json_get(model, "type"));
    if (!type || strcmp(type, "BPE") != 0)
        return peso_errf(err, "%s: key 'model.type': only \"BPE\" is supported", t->path);
    if (drop && !(cJSON_IsNumber(drop) && drop->valuedouble == 0.0))
        return peso_errf(err, "%s: key 'model.dropout': BPE dropout is not supported", t->path);
    if (!null_or_empty(peso_json_get(model, "continuing_subword_prefix")) ||
        !null_or_empty(peso_json_get(model, "end_of_word_suffix")))
        return peso_errf(err,
                         "%s: keys 'model.continuing_subword_prefix' and 'model.end_of_word_suffix' must be "
                         "null for byte-level BPE",
                         t->path);
    int fallback = 0;
    if (get_flag(model, "byte_fallback", &fallback) != 0 || fallback)
        return peso_errf(err, "%s: key 'model.byte_fallback': only false is supported", t->path);
    if (get_flag(model, "ignore_merges", &t->ignore_merges) != 0)
        return peso_errf(err, "%s: key 'model.ignore_merges': expected true or false", t->path);
    const cJSON *vocab = peso_json_get(model, "vocab"), *merges = peso_json_get(model, "merges");
    if (!vocab || !merges)
        return peso_errf(err, "%s: keys 'model.vocab' and 'model.merges' are required", t->path);
    if (load_vocab(t, vocab, err) != 0)
        return -1;
    return load_merges(t, merges, err);
}

/* ---- loading: added tokens ---- */

static int32_t trie_new(peso_tok *t, unsigned char c)
{
    peso_grow((void **)&t->trie, &t->cap_trie, t->ntrie + 1, sizeof *t->trie);
    t->trie[t->ntrie] = (struct trie_node){-1, -1, -1, c};
    return (int32_t)t->ntrie++;
}

static int32_t trie_child(const peso_tok *t, int32_t node, unsigned char c)
{
    for (int32_t k = t->trie[node].child; k >= 0; k = t->trie[k].next)
        if (t->trie[k].c == c)
            return k;
    return -1;
}

static void trie_insert(peso_tok *t, const char *s, size_t n, int32_t added)
{
    if (!t->ntrie)
        trie_new(t, 0);
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int32_t k = trie_child(t, node, c);
        if (k < 0) {
            k = trie_new(t, c);
            t->trie[k].next = t->trie[node].child;
            t->trie[node].child = k;
        }
        node = k;
    }
    t->trie[node].added = added;
}

/* Index of the added token whose content is exactly s, or -1. */
static int32_t trie_exact(const peso_tok *t, const char *s)
{
    int32_t node = t->ntrie ? 0 : -1;
    for (; node >= 0 && *s; s++)
        node = trie_child(t, node, (unsigned char)*s);
    return node >= 0 ? t->trie[node].added : -1;
}

static int register_added(peso_tok *t, const char *content, int64_t id, int special, int normalized,
                          peso_err *err)
{
    int mapped;
    if (!*content)
        return peso_errf(err, "%s: added token %lld has empty content", t->path, (long long)id);
    if (trie_exact(t, content) >= 0)
        return peso_errf(err, "%s: added token '%s' given twice", t->path, content);
    if (set_token(t, id, content, "added_tokens", &mapped, err) != 0)
        return -1;
    t->ids[id].flags |= ID_ADDED | (special ? ID_SPECIAL : 0);
    peso_grow((void **)&t->added, &t->cap_added, t->nadded + 1, sizeof *t->added);
    t->added[t->nadded] = (struct added){peso_strdup(content), strlen(content), (int32_t)id, normalized};
    trie_insert(t, content, strlen(content), (int32_t)t->nadded);
    t->nadded++;
    return 0;
}

static int load_added_one(peso_tok *t, const cJSON *a, size_t i, peso_err *err)
{
    const char *content = str(peso_json_get(a, "content"));
    int64_t id;
    int special = 0, normalized = -1, lstrip = 0, rstrip = 0, single = 0;
    if (peso_json_int64(peso_json_get(a, "id"), &id) != 0 || !content || get_flag(a, "special", &special) ||
        get_flag(a, "normalized", &normalized) || get_flag(a, "lstrip", &lstrip) ||
        get_flag(a, "rstrip", &rstrip) || get_flag(a, "single_word", &single))
        return peso_errf(err, "%s: key 'added_tokens[%zu]': expected {id, content, special, normalized, ...}",
                         t->path, i);
    if (lstrip || rstrip || single)
        return peso_errf(
            err, "%s: key 'added_tokens[%zu]' ('%s'): lstrip, rstrip and single_word are not supported",
            t->path, i, content);
    /* tokenizers' AddedToken default: special tokens are not normalized */
    if (normalized < 0)
        normalized = !special;
    return register_added(t, content, id, special, normalized, err);
}

static int load_added(peso_tok *t, const cJSON *arr, peso_err *err)
{
    if (!arr)
        return 0;
    if (!cJSON_IsArray(arr))
        return peso_errf(err, "%s: key 'added_tokens': expected an array", t->path);
    size_t i = 0;
    for (const cJSON *a = arr->child; a; a = a->next, i++)
        if (load_added_one(t, a, i, err) != 0)
            return -1;
    return 0;
}

/* ---- loading: pre-tokenizer ---- */

int peso_tok_compile(const char *path, pcre2_code **re, const char *pattern, uint32_t opts, const char *key,
                     peso_err *err)
{
    int code;
    PCRE2_SIZE off;
    /* PCRE2 refuses UCP with LITERAL, where it has no meaning anyway */
    uint32_t ucp = (opts & PCRE2_LITERAL) ? 0 : PCRE2_UCP;
    *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | ucp | opts, &code, &off, NULL);
    if (!*re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return peso_errf(err, "%s: key '%s': regex does not compile at offset %zu: %s", path, key,
                         (size_t)off, (const char *)msg);
    }
    pcre2_jit_compile(*re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    return 0;
}

static int load_split(peso_tok *t, const cJSON *p, struct step *s, const char *key, peso_err *err)
{
    const cJSON *pat = peso_json_get(p, "pattern");
    const char *beh = str(peso_json_get(p, "behavior"));
    const char *re = str(peso_json_get(pat, "Regex")), *lit = str(peso_json_get(pat, "String"));
    int invert = 0;
    if (!beh || strcmp(beh, "Isolated") != 0 || get_flag(p, "invert", &invert) || invert)
        return peso_errf(err, "%s: key '%s': only behavior Isolated without invert is supported", t->path,
                         key);
    s->kind = STEP_SPLIT;
    if (re)
        return peso_tok_compile(t->path, &s->re, re, 0, key, err);
    if (lit)
        return peso_tok_compile(t->path, &s->re, lit, PCRE2_LITERAL, key, err);
    return peso_errf(err, "%s: key '%s.pattern': expected {\"Regex\": ...} or {\"String\": ...}", t->path,
                     key);
}

static int load_bytelevel(peso_tok *t, const cJSON *p, struct step *s, const char *key, peso_err *err)
{
    int use_regex = 1;
    s->kind = STEP_BYTELEVEL;
    if (get_flag(p, "add_prefix_space", &s->prefix_space) || get_flag(p, "use_regex", &use_regex))
        return peso_errf(err, "%s: key '%s': add_prefix_space and use_regex must be booleans", t->path, key);
    return use_regex ? peso_tok_compile(t->path, &s->re, gpt2_pattern, 0, key, err) : 0;
}

static int load_step(peso_tok *t, const cJSON *p, const char *key, peso_err *err)
{
    const cJSON *jtype = peso_json_get(p, "type");
    const char *type = str(jtype);
    if (t->nsteps == MAX_STEPS)
        return peso_errf(err, "%s: key '%s': more than %d pre-tokenizers", t->path, key, MAX_STEPS);
    struct step *s = &t->steps[t->nsteps++];
    if (type && strcmp(type, "Split") == 0)
        return load_split(t, p, s, key, err);
    if (type && strcmp(type, "ByteLevel") == 0)
        return load_bytelevel(t, p, s, key, err);
    t->nsteps--;
    char got[64];
    return peso_errf(err, "%s: key '%s': pre-tokenizer type '%s' is not supported (Split, ByteLevel)",
                     t->path, key,
                     type    ? type
                     : jtype ? peso_json_brief(jtype, got, sizeof got)
                             : "(none)");
}

static int load_pretok(peso_tok *t, const cJSON *p, peso_err *err)
{
    const char *type = str(peso_json_get(p, "type"));
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *list = peso_json_get(p, "pretokenizers");
        size_t i = 0;
        for (const cJSON *e = cJSON_IsArray(list) ? list->child : NULL; e; e = e->next, i++) {
            char key[64];
            snprintf(key, sizeof key, "pre_tokenizer.pretokenizers[%zu]", i);
            if (load_step(t, e, key, err) != 0)
                return -1;
        }
    } else if (p && load_step(t, p, "pre_tokenizer", err) != 0) {
        return -1;
    }
    /* BPE runs on the byte-level spelling, so ByteLevel must come last. */
    for (int i = 0; i < t->nsteps; i++)
        if ((t->steps[i].kind == STEP_BYTELEVEL) != (i == t->nsteps - 1))
            return peso_errf(err,
                             "%s: key 'pre_tokenizer': exactly one ByteLevel step, the last, is supported "
                             "(byte-level BPE)",
                             t->path);
    if (!t->nsteps)
        return peso_errf(
            err, "%s: key 'pre_tokenizer': ByteLevel required (only byte-level BPE is supported)", t->path);
    return 0;
}

static int load_root(peso_tok *t, peso_err *err)
{
    const cJSON *r = t->root, *dec = peso_json_get(r, "decoder");
    if (!cJSON_IsObject(r))
        return peso_errf(err, "%s: expected a JSON object", t->path);
    if (peso_json_get(r, "normalizer"))
        return peso_errf(err, "%s: key 'normalizer': only null is supported", t->path);
    const char *dtype = str(peso_json_get(dec, "type"));
    if (dec && (!dtype || strcmp(dtype, "ByteLevel") != 0))
        return peso_errf(err, "%s: key 'decoder': only ByteLevel is supported", t->path);
    if (load_pretok(t, peso_json_get(r, "pre_tokenizer"), err) != 0 ||
        load_model(t, peso_json_get(r, "model"), err) != 0)
        return -1;
    return load_added(t, peso_json_get(r, "added_tokens"), err);
}

int peso_tok_from_root(peso_tok **out, cJSON *root, const char *path, peso_err *err)
{
    peso_tok *t = peso_calloc(1, sizeof *t);
    t->root = root;
    t->path = peso_strdup(path);
    if (load_root(t, err) != 0) {
        peso_tok_free(t);
        *out = NULL;
        return -1;
    }
    *out = t;
    return 0;
}

int peso_tok_load(peso_tok **out, const char *path, peso_err *err)
{
    cJSON *root = peso_json_load(path, "JSON", err);
    if (!root) {
        *out = NULL;
        return -1;
    }
    return peso_tok_from_root(out, root, path, err);
}

/* ---- queries ---- */

int32_t peso_tok_vocab_size(const peso_tok *t)
{
    return t->size;
}

int32_t peso_tok_id(const peso_tok *t, const char *token)
{
    int32_t a = trie_exact(t, token);
    if (a >= 0)
        return t->added[a].id;
    return peso_tok_bmap_get(&t->by_text, token, strlen(token));
}

const char *peso_tok_token(const peso_tok *t, int32_t id)
{
    return id >= 0 && id < t->size ? t->ids[id].text : NULL;
}

/* ---- encoding ---- */

static void spans_push(struct tok_spans *s, size_t off, size_t len, int32_t id)
{
    if (!len)
        return;
    peso_grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v);
    s->v[s->n++] = (struct tok_span){off, len, id};
}

/* Longest added token of the given kind starting at s[0..n), or -1. */
static int32_t match_added(const peso_tok *t, const char *s, size_t n, int normalized, size_t *len)
{
    int32_t best = -1;
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        node = trie_child(t, node, (unsigned char)s[i]);
        if (node < 0)
            break;
        int32_t a = t->trie[node].added;
        if (a >= 0 && t->added[a].normalized == normalized) {
            best = a;
            *len = i + 1;
        }
    }
    return best;
}

/* Splits text span `in` around added tokens of one kind, leftmost-longest. */
static void split_added(const peso_tok *t, const char *text, struct tok_span in, int normalized,
                        struct tok_spans *out)
{
    if (in.id >= 0 || !t->ntrie) {
        spans_push(out, in.off, in.len, in.id);
        return;
    }
    size_t last = in.off, end = in.off + in.len;
    for (size_t i = in.off; i < end;) {
        size_t len = 0;
        int32_t a = match_added(t, text + i, end - i, normalized, &len);
        if (a < 0) {
            i++;
            continue;
        }
        spans_push(out, last, i - last, -1);
        spans_push(out, i, len, t->added[a].id);
        i += len;
        last = i;
    }
    spans_push(out, last, end - last, -1);
}

struct ids {
    int32_t *v;
    size_t n, cap;
};

static void ids_push(struct ids *o, int32_t id)
{
    peso_grow((void **)&o->v, &o->cap, o->n + 1, sizeof *o->v);
    o->v[o->n++] = id;
}

/* A candidate merge of the symbol at pos with the next one. */
struct cand {
    int32_t rank;
    size_t pos;
};

struct heap {
    struct cand *v;
    size_t n;
};

static int cand_less(struct cand x, struct cand y)
{
    return x.rank < y.rank || (x.rank == y.rank && x.pos < y.pos);
}

static void heap_push(struct heap *h, struct cand c)
{
    size_t i = h->n++;
    for (; i > 0 && cand_less(c, h->v[(i - 1) / 2]); i = (i - 1) / 2)
        h->v[i] = h->v[(i - 1) / 2];
    h->v[i] = c;
}

static struct cand heap_pop(struct heap *h)
{
    struct cand top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && cand_less(h->v[c + 1], h->v[c]))
            c++;
        if (!cand_less(h->v[c], last))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n)
        h->v[i] = last;
    return top;
}

/* Symbols of one word as a linked list over the original byte positions,
 * and the merge queue; reused across the pre-tokens of one encode call. */
struct word_syms {
    int32_t *id;         /* -1: merged into its left neighbour */
    size_t *next, *prev; /* SIZE_MAX = none */
    struct heap h;
    size_t cap;
};

static void word_reserve(struct word_syms *w, size_t n)
{
    if (n <= w->cap)
        return;
    w->cap = 2 * n;
    w->id = peso_realloc(w->id, w->cap * sizeof *w->id);
    w->next = peso_realloc(w->next, w->cap * sizeof *w->next);
    w->prev = peso_realloc(w->prev, w->cap * sizeof *w->prev);
    /* n - 1 pairs queued at first, and each merge pops one and pushes at
     * most two, so the queue never holds more than 2n entries */
    w->h.v = peso_realloc(w->h.v, 2 * w->cap * sizeof *w->h.v);
}

static void word_free(struct word_syms *w)
{
    free(w->id);
    free(w->next);
    free(w->prev);
    free(w->h.v);
}

static void push_pair(const peso_tok *t, struct word_syms *w, size_t pos)
{
    if (pos == SIZE_MAX || w->next[pos] == SIZE_MAX)
        return;
    const struct pair_entry *e = pmap_get(&t->merges, w->id[pos], w->id[w->next[pos]]);
    if (e)
        heap_push(&w->h, (struct cand){e->rank, pos});
}

/* Applies merges lowest rank first, the leftmost of equal ranks first, as
 * tokenizers' priority queue does; O(n log n) so that a long run of one
 * character cannot stall the encoder. */
static void merge_word(const peso_tok *t, struct word_syms *w, size_t n)
{
    w->h.n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        push_pair(t, w, i);
    while (w->h.n) {
        struct cand c = heap_pop(&w->h);
        size_t nx = w->next[c.pos];
        if (w->id[c.pos] < 0 || nx == SIZE_MAX)
            continue;
        const struct pair_entry *e = pmap_get(&t->merges, w->id[c.pos], w->id[nx]);
        if (!e || e->rank != c.rank)
            continue; /* stale: a neighbour changed since this was queued */
        w->id[c.pos] = e->id;
        w->id[nx] = -1;
        w->next[c.pos] = w->next[nx];
        if (w->next[nx] != SIZE_MAX)
            w->prev[w->next[nx]] = c.pos;
        push_pair(t, w, w->prev[c.pos]);
        push_pair(t, w, c.pos);
    }
}

static int bpe(const peso_tok *t, struct word_syms *w, const unsigned char *s, size_t n, struct ids *out,
               peso_err *err)
{
    if (t->ignore_merges || n == 1) {
        int32_t id = peso_tok_bmap_get(&t->by_bytes, s, n);
        if (id >= 0) {
            ids_push(out, id);
            return 0;
        }
    }
    word_reserve(w, n);
    for (size_t i = 0; i < n; i++) {
        w->id[i] = t->byte_id[s[i]];
        w->next[i] = i + 1 < n ? i + 1 : SIZE_MAX;
        w->prev[i] = i > 0 ? i - 1 : SIZE_MAX;
        if (w->id[i] < 0)
            return peso_errf(err, "%s: the vocabulary has no token for byte 0x%02x", t->path, s[i]);
    }
    merge_word(t, w, n);
    for (size_t i = 0; i != SIZE_MAX; i = w->next[i])
        ids_push(out, w->id[i]);
    return 0;
}

int peso_tok_regex_split(const char *path, const pcre2_code *re, pcre2_match_data *md,
                         const struct tok_buf *w, struct tok_span in, struct tok_spans *out, peso_err *err)
{
    PCRE2_SPTR s = w->p + in.off;
    size_t pos = 0, last = 0;
    while (pos < in.len) {
        int rc = pcre2_match(re, s, in.len, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return peso_errf(err, "%s: pre-tokenizer regex failed: %s", path, (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        spans_push(out, in.off + last, ov[0] - last, -1);
        spans_push(out, in.off + ov[0], ov[1] - ov[0], -1);
        last = ov[1];
        if (ov[1] > ov[0]) {
            pos = ov[1];
        } else {
            uint32_t cp;
            size_t bad, k = utf8_seq(s + ov[1], in.len - ov[1], &cp, &bad);
            pos = ov[1] + (k ? k : 1);
        }
    }
    spans_push(out, in.off + last, in.len - last, -1);
    return 0;
}

/* Runs the pre-tokenizer steps over one text span. Pieces index into w,
 * which starts as a copy of the span; a prefix space makes a new copy. */
static int pretokenize(const peso_tok *t, pcre2_match_data *md, struct tok_buf *w, struct tok_spans *pieces,
                       struct tok_spans *next, peso_err *err)
{
    for (int k = 0; k < t->nsteps; k++) {
        const struct step *st = &t->steps[k];
        next->n = 0;
        for (size_t i = 0; i < pieces->n; i++) {
            struct tok_span p = pieces->v[i];
            if (st->prefix_space && w->p[p.off] != ' ') {
                size_t off = w->n;
                peso_grow((void **)&w->p, &w->cap, off + p.len + 2, 1);
                w->p[off] = ' ';
                memcpy(w->p + off + 1, w->p + p.off, p.len);
                w->n += p.len + 1;
                w->p[w->n] = '\0';
                p = (struct tok_span){off, p.len + 1, -1};
            }
            if (!st->re)
                spans_push(next, p.off, p.len, -1);
            else if (peso_tok_regex_split(t->path, st->re, md, w, p, next, err) != 0)
                return -1;
        }
        struct tok_spans tmp = *pieces;
        *pieces = *next;
        *next = tmp;
    }
    return 0;
}

static int encode_text(const peso_tok *t, pcre2_match_data *md, const char *s, size_t n, struct ids *out,
                       peso_err *err)
{
    struct tok_buf w = {0};
    struct tok_spans pieces = {0}, next = {0};
    struct word_syms syms = {0};
    peso_tok_buf_put(&w, s, n);
    spans_push(&pieces, 0, n, -1);
    int rc = pretokenize(t, md, &w, &pieces, &next, err);
    for (size_t i = 0; rc == 0 && i < pieces.n; i++)
        rc = bpe(t, &syms, w.p + pieces.v[i].off, pieces.v[i].len, out, err);
    word_free(&syms);
    free(w.p);
    free(pieces.v);
    free(next.v);
    return rc;
}

int peso_tok_check_utf8(const char *text, size_t len, peso_err *err)
{
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t bad, k = utf8_seq(s + i, len - i, &cp, &bad);
        if (!k)
            return peso_errf(err, "text is not valid UTF-8 at byte %zu", i);
        i += k;
    }
    return 0;
}

int peso_tok_encode(const peso_tok *t, const char *text, size_t len, int32_t **ids, size_t *n, peso_err *err)
{
    *ids = NULL;
    *n = 0;
    if (peso_tok_check_utf8(text, len, err) != 0)
        return -1;
    struct tok_spans a = {0}, b = {0};
    split_added(t, text, (struct tok_span){0, len, -1}, 0, &a);
    for (size_t i = 0; i < a.n; i++)
        split_added(t, text, a.v[i], 1, &b);
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    struct ids out = {0};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < b.n; i++) {
        if (b.v[i].id >= 0)
            ids_push(&out, b.v[i].id);
        else
            rc = encode_text(t, md, text + b.v[i].off, b.v[i].len, &out, err);
    }
    pcre2_match_data_free(md);
    free(a.v);
    free(b.v);
    if (rc != 0) {
        free(out.v);
        return -1;
    }
    *ids = out.v ? out.v : peso_malloc(sizeof *out.v);
    *n = out.n;
    return 0;
}

/* ---- decoding ---- */

int peso_tok_decode(const peso_tok *t, const int32_t *ids, size_t n, int skip_special, char **text,
                    size_t *len, peso_err *err)
{
    struct tok_buf raw = {0}, out = {0};
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->size || !t->ids[ids[i]].text) {
            free(raw.p);
            *text = NULL;
            return peso_errf(err, "%s: id %d at position %zu is not a token", t->path, ids[i], i);
        }
        const struct id_info *info = &t->ids[ids[i]];
        if (!(skip_special && (info->flags & ID_SPECIAL)))
            peso_tok_buf_put(&raw, info->dec, info->ndec);
    }
    buf_put_lossy(&out, raw.p, raw.n);
    peso_tok_buf_put(&out, "", 0);
    free(raw.p);
    *text = (char *)out.p;
    *len = out.n;
    return 0;
}

/* ---- adding tokens, saving ---- */

static cJSON *added_json(int32_t id, const char *content)
{
    cJSON *o = peso_json_object();
    peso_json_add(o, "id", peso_json_int(id));
    peso_json_add(o, "content", peso_json_string(content));
    peso_json_add(o, "single_word", peso_json_bool(0));
    peso_json_add(o, "lstrip", peso_json_bool(0));
    peso_json_add(o, "rstrip", peso_json_bool(0));
    peso_json_add(o, "normalized", peso_json_bool(0));
    peso_json_add(o, "special", peso_json_bool(1));
    return o;
}

int peso_tok_add_special(peso_tok *t, const char *content, int32_t *id, peso_err *err)
{
    int32_t a = trie_exact(t, content);
    if (a >= 0) {
        *id = t->added[a].id;
        return 0;
    }
    int32_t v = peso_tok_bmap_get(&t->by_text, content, strlen(content));
    *id = v >= 0 ? v : t->size;
    if (register_added(t, content, *id, 1, 0, err) != 0)
        return -1;
    /* a null added_tokens is replaced where it stands */
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(t->root, "added_tokens");
    if (!cJSON_IsArray(arr)) {
        arr = peso_json_array();
        peso_json_set(t->root, "added_tokens", arr);
    }
    peso_json_push(arr, added_json(*id, content));
    return 0;
}

int peso_tok_save(const peso_tok *t, const char *path, peso_err *err)
{
    char *s = peso_json_print(t->root);
    int rc = peso_write_file_atomic(path, s, strlen(s), err);
    free(s);
    return rc;
}
