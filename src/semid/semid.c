#include "semid/semid.h"

#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic.h"
#include "common/h5.h"
#include "common/json.h"
#include "common/strtab.h"
#include "semid/modelfeat.h"
#include "semid/textenc.h"

/* Largest code an imported token may carry: "<a_N>" with N < 10000. */
#define SEMID_MAX_TOKEN_CODE 10000
/* Rows read from /embeddings per HDF5 call: bounds the buffer at ~16 MiB. */
#define SEMID_H5_CHUNK_FLOATS ((size_t)1 << 22)

void peso_semid_free(peso_semid *s)
{
    free(s->codes);
    memset(s, 0, sizeof *s);
}

/* ---- grouping of equal code tuples ---- */

/* For each row i of codes (stride columns, the first len compared), rank[i]
 * = how many earlier rows carry the same tuple; returns the number of
 * distinct tuples. Open addressing over the rows: first[h] is 1 + the
 * first row of the tuple in slot h. Fails (-1, *over = the row) at the
 * first rank that reaches limit (limit < 0: no limit). */
static long tuple_ranks(const int32_t *codes, size_t n, int stride, int len, int32_t *rank, long limit,
                        size_t *over)
{
    size_t cap = 16, row_bytes = (size_t)len * sizeof *codes;
    while (cap < 2 * n)
        cap *= 2;
    int64_t *first = peso_calloc(cap, sizeof *first);
    int32_t *count = peso_calloc(cap, sizeof *count);
    long groups = 0;
    for (size_t i = 0; i < n; i++) {
        const int32_t *row = codes + i * (size_t)stride;
        size_t h = (size_t)peso_hash_bytes(row, row_bytes) & (cap - 1);
        while (first[h] != 0 && memcmp(codes + (size_t)(first[h] - 1) * stride, row, row_bytes) != 0)
            h = (h + 1) & (cap - 1);
        if (first[h] == 0) {
            first[h] = (int64_t)i + 1;
            groups++;
        }
        if (limit >= 0 && count[h] >= limit) {
            *over = i;
            groups = -1;
            break;
        }
        rank[i] = count[h]++;
    }
    free(count);
    free(first);
    return groups;
}

static void format_tuple(char *buf, size_t n, const int32_t *row, int len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int l = 0; l < len && o < n; l++)
        o += (size_t)snprintf(buf + o, n - o, "%s%d", l ? ", " : "(", row[l]);
    if (o < n)
        snprintf(buf + o, n - o, ")");
}

int peso_semid_assign_collisions(int32_t *codes, size_t n, int learned, int max_collide, peso_err *err)
{
    int stride = learned + 1;
    int32_t *rank = peso_malloc((n ? n : 1) * sizeof *rank);
    size_t over = 0;
    if (tuple_ranks(codes, n, stride, learned, rank, max_collide, &over) < 0) {
        char t[256];
        format_tuple(t, sizeof t, codes + over * (size_t)stride, learned);
        free(rank);
        return peso_errf(err,
                         "semid: more than %d items share the learned codes %s (dataset item %zu is "
                         "one too many for the collision level; items with equal features, e.g. "
                         "without text, share all learned codes)",
                         max_collide, t, over);
    }
    for (size_t i = 0; i < n; i++)
        codes[i * (size_t)stride + learned] = rank[i];
    free(rank);
    return 0;
}

/* collision_share, distinct_tuples and the collision level's size. */
static void summarise(peso_semid *s)
{
    int L = s->n_levels;
    size_t coll = 0;
    int32_t maxc = -1;
    for (size_t i = 0; i < s->n_items; i++) {
        int32_t c = s->codes[i * (size_t)L + L - 1];
        coll += c > 0;
        if (c > maxc)
            maxc = c;
    }
    s->collision_share = s->n_items ? (double)coll / (double)s->n_items : 0.0;
    int32_t *rank = peso_malloc((s->n_items ? s->n_items : 1) * sizeof *rank);
    size_t over;
    s->distinct_tuples = (size_t)tuple_ranks(s->codes, s->n_items, L, L, rank, -1, &over);
    free(rank);
    if (!s->imported)
        s->level_size[L - 1] = maxc + 1;
}

/* ---- .index.json import / export ---- */

static cJSON *load_index(const char *path, peso_err *err)
{
    cJSON *root = peso_json_load(path, "semantic ID index", err);
    if (root && !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        peso_errf(err, "%s: expected a JSON object {\"<item id>\": [\"<a_N>\", ...]}", path);
        return NULL;
    }
    return root;
}

/* "<x_N>" with x = 'a' + level and 0 <= N < SEMID_MAX_TOKEN_CODE. */
static int parse_token(const char *t, int level, int32_t *code)
{
    if (t[0] != '<' || t[1] != 'a' + level || t[2] != '_')
        return -1;
    const char *p = t + 3;
    long v = 0;
    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (*p - '0');
        if (v >= SEMID_MAX_TOKEN_CODE)
            return -1;
    }
    if (p[0] != '>' || p[1] != '\0')
        return -1;
    *code = (int32_t)v;
    return 0;
}

/* The items' ids interned in item order: the index of an id is its item. */
static peso_strtab *id_index(const peso_semid_items *items)
{
    peso_strtab *t = peso_strtab_new();
    for (size_t i = 0; i < items->n; i++)
        peso_strtab_intern(t, items->id[i], strlen(items->id[i]));
    return t;
}

/* entry[i] = the member of dataset item i (NULL: none), found in one pass
 * over the members, as a lookup per item would be quadratic. The parser
 * left one member per key, the last one written. A member written as null
 * is kept: it is there, but is no array. */
static const cJSON **index_entries(const cJSON *root, const peso_semid_items *items)
{
    peso_strtab *ids = id_index(items);
    const cJSON **entry = peso_calloc(items->n, sizeof *entry);
    for (const cJSON *m = root->child; m; m = m->next) {
        int32_t i = peso_strtab_find(ids, m->string, strlen(m->string));
        if (i >= 0)
            entry[i] = m;
    }
    peso_strtab_free(ids);
    return entry;
}

static int import_item(peso_semid *s, const char *path, const cJSON *arr, const char *id, size_t i,
                       peso_err *err)
{
    if (!arr)
        return peso_errf(err, "%s: dataset item '%s' has no entry", path, id);
    if (!cJSON_IsArray(arr))
        return peso_errf(err, "%s: item '%s': expected an array of tokens", path, id);
    size_t nt = (size_t)cJSON_GetArraySize(arr);
    if (i == 0) {
        if (nt < 1 || nt > PESO_SEMID_MAX_LEVELS)
            return peso_errf(err, "%s: item '%s' has %zu tokens, expected 1..%d", path, id, nt,
                             PESO_SEMID_MAX_LEVELS);
        s->n_levels = (int)nt;
        s->codes = peso_malloc(s->n_items * nt * sizeof *s->codes);
    } else if (nt != (size_t)s->n_levels) {
        return peso_errf(err, "%s: item '%s' has %zu tokens, expected %d like the other items", path, id, nt,
                         s->n_levels);
    }
    const cJSON *tk = arr->child;
    for (int l = 0; l < s->n_levels; l++, tk = tk->next) {
        const char *t = cJSON_IsString(tk) ? tk->valuestring : NULL;
        int32_t *c = &s->codes[i * (size_t)s->n_levels + l];
        char brief[64];
        if (!t || parse_token(t, l, c))
            return peso_errf(err, "%s: item '%s': token %d is %s, expected \"<%c_N>\" with N < %d", path, id,
                             l + 1, t ? t : peso_json_brief(tk, brief, sizeof brief), 'a' + l,
                             SEMID_MAX_TOKEN_CODE);
        if (*c + 1 > s->level_size[l])
            s->level_size[l] = *c + 1;
    }
    return 0;
}

int peso_semid_import(peso_semid *s, const char *path, const peso_semid_items *items, peso_err *err)
{
    memset(s, 0, sizeof *s);
    if (items->n == 0)
        return peso_errf(err, "%s: the dataset has no items to import IDs for", path);
    cJSON *root = load_index(path, err);
    if (!root)
        return -1;
    const cJSON **entry = index_entries(root, items);
    s->n_items = items->n;
    s->imported = 1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < items->n; i++)
        rc = import_item(s, path, entry[i], items->id[i], i, err);
    free(entry);
    cJSON_Delete(root);
    if (rc) {
        peso_semid_free(s);
        return -1;
    }
    summarise(s);
    return 0;
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    peso_grow((void **)&b->p, &b->cap, b->n + n + 1, 1);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* A JSON string literal: quotes, backslashes and control bytes escaped,
 * other bytes (UTF-8) as they are. */
static void sb_json_string(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2);
        } else if (c < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", c);
            sb_str(b, e);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

int peso_semid_export(const peso_semid *s, const char *path, const peso_semid_items *items, peso_err *err)
{
    if (s->n_items != items->n)
        return peso_errf(err, "%s: %zu semantic IDs for a dataset of %zu items", path, s->n_items, items->n);
    sbuf b = {0};
    sb_str(&b, "{");
    for (size_t i = 0; i < s->n_items; i++) {
        if (i)
            sb_str(&b, ", ");
        sb_json_string(&b, items->id[i]);
        sb_str(&b, ": [");
        for (int l = 0; l < s->n_levels; l++) {
            char t[32];
            snprintf(t, sizeof t, "%s\"<%c_%d>\"", l ? ", " : "", 'a' + l,
                     s->codes[i * (size_t)s->n_levels + l]);
            sb_str(&b, t);
        }
        sb_str(&b, "]");
    }
    sb_str(&b, "}");
    int rc = peso_write_file_atomic(path, b.p, b.n, err);
    free(b.p);
    return rc;
}

/* ---- HDF5 embeddings ---- */

/* The open /embeddings and the strings of /ids, one a row. */
typedef struct h5_handles {
    hid_t file, emb, emb_space;
    char **ids;
    size_t n_ids;
} h5_handles;

static void h5_close(h5_handles *h)
{
    for (size_t i = 0; i < h->n_ids; i++)
        free(h->ids[i]);
    free(h->ids);
    if (h->emb_space >= 0)
        H5Sclose(h->emb_space);
    if (h->emb >= 0)
        H5Dclose(h->emb);
    if (h->file >= 0)
        H5Fclose(h->file);
}

/* Opens /embeddings [n, d] float and reads /ids [n] strings (variable or
 * fixed length). */
static int h5_open(h5_handles *h, const char *path, hsize_t *n, hsize_t *d, peso_err *err)
{
    peso_h5r r = {path, err};
    hsize_t ed[H5S_MAX_RANK];
    int rank;
    h->file = peso_h5_r_open(&r, NULL);
    if (h->file < 0)
        return -1;
    if (H5Lexists(h->file, "embeddings", H5P_DEFAULT) <= 0)
        return peso_errf(err, "%s: no dataset /embeddings", path);
    h->emb = peso_h5_r_data_open(&r, h->file, "embeddings", H5T_FLOAT, 0, H5S_MAX_RANK, &rank, ed);
    if (h->emb < 0)
        return -1;
    if (rank != 2)
        return peso_errf(err, "%s: /embeddings must be 2-dimensional [items, dim]", path);
    if (peso_h5_r_strs(&r, h->file, "ids", -1, &h->ids, &h->n_ids) < 0)
        return -1;
    if (h->n_ids != ed[0])
        return peso_errf(err, "%s: /ids has %zu entries but /embeddings has %llu rows", path, h->n_ids,
                         (unsigned long long)ed[0]);
    if (ed[1] < 1 || ed[1] > INT_MAX)
        return peso_errf(err, "%s: /embeddings has %llu columns, expected 1..%d", path,
                         (unsigned long long)ed[1], INT_MAX);
    h->emb_space = H5Dget_space(h->emb);
    *n = ed[0];
    *d = ed[1];
    return 0;
}

/* Maps every /ids row to its dataset item (-1: not in the dataset). */
static int map_ids(h5_handles *h, const char *path, size_t n, const peso_semid_items *items,
                   int64_t *row_item, peso_err *err)
{
    peso_strtab *ids = id_index(items);
    int64_t *seen = peso_malloc(items->n * sizeof *seen);
    for (size_t i = 0; i < items->n; i++)
        seen[i] = -1;
    int rc = 0;
    for (size_t r = 0; rc == 0 && r < n; r++) {
        const char *s = h->ids[r];
        int64_t ds = peso_strtab_find(ids, s, strlen(s));
        row_item[r] = ds;
        if (ds < 0)
            continue;
        if (seen[ds] >= 0)
            rc = peso_errf(err, "%s: /ids rows %lld and %zu both name item '%s'", path, (long long)seen[ds],
                           r, s);
        seen[ds] = (int64_t)r;
    }
    for (size_t i = 0; rc == 0 && i < items->n; i++) {
        if (seen[i] >= 0)
            continue;
        size_t missing = 0;
        for (size_t j = 0; j < items->n; j++)
            missing += seen[j] < 0;
        rc = peso_errf(err,
                       "%s: dataset item '%s' has no row in /embeddings (no /ids entry; %zu "
                       "of %zu dataset items missing)",
                       path, items->id[i], missing, items->n);
    }
    free(seen);
    peso_strtab_free(ids);
    return rc;
}

/* Reads /embeddings in row chunks, scattering kept rows to their items. */
static int read_rows(h5_handles *h, const char *path, size_t n, int d, const int64_t *row_item,
                     const peso_semid_items *items, float *x, peso_err *err)
{
    size_t chunk = SEMID_H5_CHUNK_FLOATS / (size_t)d;
    if (chunk == 0)
        chunk = 1;
    float *buf = peso_malloc((chunk < n ? chunk : n) * (size_t)d * sizeof *buf);
    int rc = 0;
    for (size_t r0 = 0; rc == 0 && r0 < n; r0 += chunk) {
        size_t m = n - r0 < chunk ? n - r0 : chunk;
        hsize_t start[2] = {r0, 0}, count[2] = {m, (hsize_t)d};
        hid_t mem = H5Screate_simple(2, count, NULL);
        H5Sselect_hyperslab(h->emb_space, H5S_SELECT_SET, start, NULL, count, NULL);
        if (H5Dread(h->emb, H5T_NATIVE_FLOAT, mem, h->emb_space, H5P_DEFAULT, buf) < 0)
            rc = peso_errf(err, "%s: cannot read /embeddings rows %zu..%zu", path, r0, r0 + m - 1);
        H5Sclose(mem);
        for (size_t i = 0; rc == 0 && i < m; i++) {
            int64_t ds = row_item[r0 + i];
            if (ds < 0)
                continue;
            const float *row = buf + i * (size_t)d;
            for (int j = 0; j < d && rc == 0; j++)
                if (!isfinite(row[j]))
                    rc = peso_errf(err,
                                   "%s: /embeddings row %zu (item '%s') column %d is not "
                                   "finite",
                                   path, r0 + i, items->id[ds], j);
            memcpy(x + (size_t)ds * (size_t)d, row, (size_t)d * sizeof *x);
        }
    }
    free(buf);
    return rc;
}

int peso_semid_read_embeddings(const char *path, const peso_semid_items *items, float **x, int *dim,
                               peso_err *err)
{
    *x = NULL;
    *dim = 0;
    H5E_auto2_t old_fn;
    void *old_data;
    H5Eget_auto2(H5E_DEFAULT, &old_fn, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    h5_handles h = {-1, -1, -1, NULL, 0};
    hsize_t n = 0, d = 0;
    int rc = h5_open(&h, path, &n, &d, err);
    int64_t *row_item = NULL;
    float *out = NULL;
    if (rc == 0) {
        row_item = peso_malloc((n ? n : 1) * sizeof *row_item);
        rc = map_ids(&h, path, (size_t)n, items, row_item, err);
    }
    if (rc == 0) {
        out = peso_malloc((items->n ? items->n : 1) * (size_t)d * sizeof *out);
        rc = read_rows(&h, path, (size_t)n, (int)d, row_item, items, out, err);
    }
    h5_close(&h);
    H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
    free(row_item);
    if (rc) {
        free(out);
        return -1;
    }
    *x = out;
    *dim = (int)d;
    return 0;
}

/* ---- RQ-VAE source ---- */

static int conf_int(const char *key, int64_t v, int64_t lo, int64_t hi, int *out, peso_err *err)
{
    if (v < lo || v > hi)
        return peso_errf(err, "%s = %lld, expected %lld..%lld", key, (long long)v, (long long)lo,
                         (long long)hi);
    *out = (int)v;
    return 0;
}

static int rqvae_opts_from_conf(peso_rqvae_opts *o, const peso_conf *c, int in_dim, peso_err *err)
{
    const peso_conf_semid *s = &c->semid;
    memset(o, 0, sizeof *o);
    o->in_dim = in_dim;
    if (s->n_hidden < 0 || s->n_hidden > PESO_MAX_HIDDEN)
        return peso_errf(err, "semid.hidden has %d layers, expected 0..%d", s->n_hidden, PESO_MAX_HIDDEN);
    o->n_hidden = s->n_hidden;
    for (int i = 0; i < s->n_hidden; i++) {
        char key[32];
        snprintf(key, sizeof key, "semid.hidden[%d]", i);
        if (conf_int(key, s->hidden[i], 1, 1 << 16, &o->hidden[i], err))
            return -1;
    }
    if (conf_int("semid.latent", s->latent, 1, 1 << 16, &o->latent, err) ||
        conf_int("semid.levels", s->levels, 1, PESO_SEMID_MAX_LEVELS - 1, &o->levels, err) ||
        conf_int("semid.codebook", s->codebook, 1, SEMID_MAX_TOKEN_CODE, &o->codebook, err) ||
        conf_int("semid.epochs", s->epochs, 0, 1 << 20, &o->epochs, err) ||
        conf_int("semid.batch", s->batch, 1, 1 << 20, &o->batch, err) ||
        conf_int("semid.kmeans_iters", s->kmeans_iters, 0, 1 << 20, &o->kmeans_iters, err))
        return -1;
    o->lr = (float)s->lr;
    o->beta = (float)s->beta;
    o->seed = c->seed;
    return 0;
}

static int item_features(const peso_semid_items *items, const peso_conf *c, float **x, int *dim,
                         peso_err *err)
{
    const char *f = c->semid.features;
    if (strcmp(f, "embeddings") == 0)
        return peso_semid_read_embeddings(c->semid.embeddings, items, x, dim, err);
    if (strcmp(f, "model") == 0) {
        int max = 0;
        if (!c->semid.model[0])
            return peso_errf(err, "semid.features model needs semid.model (a Hugging Face model folder)");
        if (conf_int("semid.model_max_tokens", c->semid.model_max_tokens, 1, 1 << 20, &max, err))
            return -1;
        peso_backend_opts bo;
        peso_conf_backend_opts(c, &bo);
        return peso_semid_model_features(c->semid.model, max, items, &bo, x, dim, err);
    }
    if (strcmp(f, "text") != 0)
        return peso_errf(err, "semid.features = '%s', expected text, embeddings or model", f);
    if (conf_int("semid.text_dim", c->semid.text_dim, 1, 1 << 20, dim, err))
        return -1;
    *x = peso_malloc((items->n ? items->n : 1) * (size_t)*dim * sizeof **x);
    for (size_t i = 0; i < items->n; i++)
        peso_textenc(items->text[i], items->text[i] ? items->text_len[i] : 0, *x + i * (size_t)*dim, *dim);
    return 0;
}

/* Fits on the block-1 items' rows of x, encodes all rows with the frozen
 * model and adds the collision level. */
static int build_codes(peso_semid *s, const float *x, int dim, const peso_semid_items *items,
                       const peso_rqvae_opts *o, int verbose, peso_err *err)
{
    size_t n = items->n, n_fit = 0;
    float *xfit = peso_malloc((n ? n : 1) * (size_t)dim * sizeof *xfit);
    for (size_t i = 0; i < n; i++)
        if (items->first_block[i] == 1)
            memcpy(xfit + n_fit++ * (size_t)dim, x + i * (size_t)dim, (size_t)dim * sizeof *x);
    peso_rqvae *m = NULL;
    if (n_fit == 0) {
        free(xfit);
        return peso_errf(err, "semid: no items first kept in block 1 to fit the RQ-VAE on");
    }
    if (peso_rqvae_fit(&m, xfit, n_fit, o, verbose, err)) {
        free(xfit);
        return peso_err_prefix(err, "semid");
    }
    int L = o->levels;
    int32_t *learned = peso_malloc(n * (size_t)L * sizeof *learned);
    peso_rqvae_encode(m, x, n, learned);
    peso_rqvae_evaluate(m, xfit, n_fit, &s->fit_report);
    peso_rqvae_evaluate(m, x, n, &s->all_report);
    peso_rqvae_free(m);
    free(xfit);
    s->n_items = n;
    s->n_levels = L + 1;
    s->codes = peso_malloc(n * (size_t)(L + 1) * sizeof *s->codes);
    for (size_t i = 0; i < n; i++)
        memcpy(s->codes + i * (size_t)(L + 1), learned + i * (size_t)L, (size_t)L * sizeof *learned);
    free(learned);
    if (peso_semid_assign_collisions(s->codes, n, L, o->codebook, err))
        return -1;
    for (int l = 0; l < L; l++)
        s->level_size[l] = o->codebook;
    summarise(s);
    return 0;
}

static int build_rqvae(peso_semid *s, const peso_semid_items *items, const peso_conf *c, int verbose,
                       peso_err *err)
{
    if (items->n == 0)
        return peso_errf(err, "semid: the dataset has no items");
    float *x = NULL;
    int dim = 0;
    peso_rqvae_opts o;
    if (item_features(items, c, &x, &dim, err) || rqvae_opts_from_conf(&o, c, dim, err)) {
        free(x);
        return -1;
    }
    int rc = build_codes(s, x, dim, items, &o, verbose, err);
    free(x);
    return rc;
}

int peso_semid_build(peso_semid *s, const peso_semid_items *items, const peso_conf *c, int verbose,
                     peso_err *err)
{
    memset(s, 0, sizeof *s);
    int rc;
    if (strcmp(c->semid.source, "import") == 0)
        rc = peso_semid_import(s, c->semid.index, items, err);
    else if (strcmp(c->semid.source, "rqvae") == 0)
        rc = build_rqvae(s, items, c, verbose, err);
    else
        rc = peso_errf(err, "semid.source = '%s', expected rqvae or import", c->semid.source);
    if (rc == 0 && c->semid.export_index[0])
        rc = peso_semid_export(s, c->semid.export_index, items, err);
    if (rc)
        peso_semid_free(s);
    return rc;
}
