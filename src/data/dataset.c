/* dataset.h5 writer and reader (layout in dataset.h). HDF5's own error
 * printing is switched off; every failure becomes one message naming the
 * file and the object, with HDF5's innermost reason where it has one. */
#include "data/dataset.h"

#include <errno.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/atomic.h"
#include "common/h5.h"

/* Strings of table t at indices idx[0..n). */
static void w_ids(peso_h5w *w, hid_t loc, const char *name, const peso_strtab *t, const int32_t *idx,
                  size_t n)
{
    const char **s = peso_malloc((n ? n : 1) * sizeof *s);
    for (size_t i = 0; i < n; i++)
        s[i] = peso_strtab_str(t, idx[i]);
    hid_t st = peso_h5_vlen_str();
    hsize_t d = n;
    peso_h5_w_data(w, loc, name, st, st, 1, &d, s);
    H5Tclose(st);
    free(s);
}

static void w_pairs(peso_h5w *w, hid_t blk, const char *name, const peso_pairs *p)
{
    hid_t g = peso_h5_w_group(w, blk, name);
    peso_h5_w_i32(w, g, "user", p->user, p->n);
    peso_h5_w_i32(w, g, "target", p->target, p->n);
    peso_h5_w_i64(w, g, "offsets", p->off, p->n + 1);
    peso_h5_w_i32(w, g, "history", p->hist, (size_t)p->off[p->n]);
    peso_h5_close_group(g);
}

static void w_block(peso_h5w *w, hid_t blocks, const peso_block *b)
{
    char name[16];
    snprintf(name, sizeof name, "%d", b->k);
    hid_t g = peso_h5_w_group(w, blocks, name);
    peso_h5_w_attr_i64(w, g, "users", b->st.users);
    peso_h5_w_attr_i64(w, g, "new_users", b->st.new_users);
    peso_h5_w_attr_i64(w, g, "items", b->st.items);
    peso_h5_w_attr_i64(w, g, "new_items", b->st.new_items);
    peso_h5_w_attr_i64(w, g, "interactions", b->st.interactions);
    peso_h5_w_attr_f64(w, g, "avg_seq_len", b->st.avg_seq_len);
    peso_h5_w_attr_f64(w, g, "sparsity", b->st.sparsity);
    peso_h5_w_attr_i64(w, g, "train_pairs", b->st.train_pairs);
    peso_h5_w_attr_i64(w, g, "valid_pairs", (int64_t)b->valid.n);
    peso_h5_w_attr_i64(w, g, "test_pairs", (int64_t)b->test.n);
    peso_h5_w_attr_i64(w, g, "ts_min", b->ts_min);
    peso_h5_w_attr_i64(w, g, "ts_max", b->ts_max);
    peso_h5_w_attr_i64(w, g, "raw_interactions", (int64_t)b->n_raw);
    w_pairs(w, g, "train", &b->train);
    w_pairs(w, g, "valid", &b->valid);
    w_pairs(w, g, "test", &b->test);
    hid_t s = peso_h5_w_group(w, g, "seq");
    peso_h5_w_i32(w, s, "user", b->seq_user, b->n_seq);
    peso_h5_w_i64(w, s, "offsets", b->seq_off, b->n_seq + 1);
    peso_h5_w_i32(w, s, "items", b->seq_item, (size_t)b->seq_off[b->n_seq]);
    peso_h5_close_group(s);
    peso_h5_close_group(g);
}

static void w_items(peso_h5w *w, hid_t f, const peso_raw *raw, const peso_split *sp,
                    const peso_dataset_codes *ids)
{
    hid_t g = peso_h5_w_group(w, f, "items");
    w_ids(w, g, "id", raw->items, sp->item_raw, sp->n_items);
    hsize_t dims[2] = {sp->n_items, (hsize_t)ids->n_levels};
    peso_h5_w_data(w, g, "codes", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, dims, ids->codes);
    if (!w->failed) {
        hid_t d = H5Dopen2(g, "codes", H5P_DEFAULT);
        int32_t ls[PESO_DATASET_MAX_LEVELS];
        for (int l = 0; l < ids->n_levels; l++)
            ls[l] = ids->level_size[l];
        peso_h5_w_attr(w, d, "level_size", H5T_STD_I32LE, H5T_NATIVE_INT32, (hsize_t)ids->n_levels, ls);
        peso_h5_w_attr_i32(w, d, "imported", ids->imported);
        H5Dclose(d);
    }
    peso_h5_w_i32(w, g, "first_block", sp->item_first_block, sp->n_items);
    peso_h5_close_group(g);
}

int peso_dataset_write(const char *path, const peso_raw *raw, const peso_split *split,
                       const peso_dataset_codes *ids, int window, const char *config_yaml,
                       const char *fingerprint, peso_err *err)
{
    if (ids->n_items != split->n_items)
        return peso_errf(err, "%s: semantic IDs cover %zu items but the split has %zu", path, ids->n_items,
                         split->n_items);
    if (ids->n_levels < 1 || ids->n_levels > PESO_DATASET_MAX_LEVELS)
        return peso_errf(err, "%s: semantic IDs have %d levels, expected 1..%d", path, ids->n_levels,
                         PESO_DATASET_MAX_LEVELS);
    char tmp[PESO_PATH_MAX];
    hid_t f = peso_h5_create_tmp(path, tmp, sizeof tmp, err);
    if (f < 0)
        return -1;
    peso_h5w w = {path, err, 0};
    peso_h5_w_attr_i32(&w, f, "format_version", PESO_DATASET_FORMAT);
    peso_h5_w_attr_str(&w, f, "config", config_yaml);
    peso_h5_w_attr_str(&w, f, "fingerprint", fingerprint);
    peso_h5_w_attr_i32(&w, f, "n_blocks", split->n_blocks);
    peso_h5_w_attr_i32(&w, f, "window", window);
    peso_h5_w_attr_i64(&w, f, "n_after_dedup", (int64_t)split->n_after_dedup);
    peso_h5_w_attr_i64(&w, f, "n_after_years", (int64_t)split->n_after_years);
    w_items(&w, f, raw, split, ids);
    hid_t g = peso_h5_w_group(&w, f, "users");
    w_ids(&w, g, "id", raw->users, split->user_raw, split->n_users);
    peso_h5_close_group(g);
    g = peso_h5_w_group(&w, f, "blocks");
    for (int k = 0; k < split->n_blocks; k++)
        w_block(&w, g, &split->b[k]);
    peso_h5_close_group(g);
    return peso_h5_commit(&w, f, tmp, path, err);
}

/* ---- reader ---- */

/* Every value in [lo, hi). */
static int r_range(peso_h5r *r, hid_t loc, const char *name, const int32_t *v, size_t n, int64_t lo,
                   int64_t hi)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] < lo || v[i] >= hi)
            return peso_h5_r_fail_at(r, loc, name, "value %d at [%zu] is outside [%lld, %lld)", (int)v[i], i,
                                     (long long)lo, (long long)hi);
    return 0;
}

/* offsets[0] = 0 and nondecreasing. */
static int r_offsets(peso_h5r *r, hid_t loc, const char *name, const int64_t *off, size_t n)
{
    if (off[0] != 0)
        return peso_h5_r_fail_at(r, loc, name, "expected offsets[0] = 0, found %lld", (long long)off[0]);
    for (size_t i = 0; i < n; i++)
        if (off[i + 1] < off[i])
            return peso_h5_r_fail_at(r, loc, name, "offsets decrease at [%zu]", i + 1);
    return 0;
}

static int r_pairs(peso_h5r *r, hid_t blk, const char *name, peso_pairs *p, const peso_split *s)
{
    hid_t g = peso_h5_r_group(r, blk, name);
    if (g < 0)
        return -1;
    size_t n = 0;
    int rc = peso_h5_r_i32(r, g, "user", -1, &p->user, &n);
    p->n = n;
    rc = rc || peso_h5_r_i32(r, g, "target", (int64_t)n, &p->target, NULL) ||
         peso_h5_r_i64(r, g, "offsets", (int64_t)n + 1, &p->off, NULL) ||
         r_offsets(r, g, "offsets", p->off, n) || peso_h5_r_i32(r, g, "history", p->off[n], &p->hist, NULL) ||
         r_range(r, g, "user", p->user, n, 0, (int64_t)s->n_users) ||
         r_range(r, g, "target", p->target, n, 0, (int64_t)s->n_items) ||
         r_range(r, g, "history", p->hist, (size_t)p->off[n], 0, (int64_t)s->n_items);
    H5Gclose(g);
    return rc ? -1 : 0;
}

static int r_seq(peso_h5r *r, hid_t blk, peso_block *b, const peso_split *s)
{
    hid_t g = peso_h5_r_group(r, blk, "seq");
    if (g < 0)
        return -1;
    int rc = peso_h5_r_i32(r, g, "user", -1, &b->seq_user, &b->n_seq);
    rc = rc || peso_h5_r_i64(r, g, "offsets", (int64_t)b->n_seq + 1, &b->seq_off, NULL) ||
         r_offsets(r, g, "offsets", b->seq_off, b->n_seq) ||
         peso_h5_r_i32(r, g, "items", b->seq_off[b->n_seq], &b->seq_item, NULL) ||
         r_range(r, g, "user", b->seq_user, b->n_seq, 0, (int64_t)s->n_users) ||
         r_range(r, g, "items", b->seq_item, (size_t)b->seq_off[b->n_seq], 0, (int64_t)s->n_items);
    H5Gclose(g);
    return rc ? -1 : 0;
}

/* A count attribute that must equal what the datasets hold. */
static int r_count(peso_h5r *r, hid_t g, const char *name, int64_t *v, int64_t actual)
{
    if (peso_h5_r_attr_i64(r, g, name, v))
        return -1;
    if (*v != actual)
        return peso_h5_r_fail_at(r, g, NULL, "attribute %s = %lld disagrees with the %lld stored", name,
                                 (long long)*v, (long long)actual);
    return 0;
}

static int r_block(peso_h5r *r, hid_t blocks, peso_block *b, const peso_split *s)
{
    char name[16];
    snprintf(name, sizeof name, "%d", b->k);
    hid_t g = peso_h5_r_group(r, blocks, name);
    if (g < 0)
        return -1;
    int64_t n_raw = 0, vp, tp;
    peso_block_stats *st = &b->st;
    int rc = r_pairs(r, g, "train", &b->train, s) || r_pairs(r, g, "valid", &b->valid, s) ||
             r_pairs(r, g, "test", &b->test, s) || r_seq(r, g, b, s) ||
             r_count(r, g, "users", &st->users, (int64_t)b->n_seq) ||
             peso_h5_r_attr_i64(r, g, "new_users", &st->new_users) ||
             peso_h5_r_attr_i64(r, g, "items", &st->items) ||
             peso_h5_r_attr_i64(r, g, "new_items", &st->new_items) ||
             r_count(r, g, "interactions", &st->interactions, b->seq_off[b->n_seq]) ||
             peso_h5_r_attr_f64(r, g, "avg_seq_len", &st->avg_seq_len) ||
             peso_h5_r_attr_f64(r, g, "sparsity", &st->sparsity) ||
             r_count(r, g, "train_pairs", &st->train_pairs, (int64_t)b->train.n) ||
             r_count(r, g, "valid_pairs", &vp, (int64_t)b->valid.n) ||
             r_count(r, g, "test_pairs", &tp, (int64_t)b->test.n) ||
             peso_h5_r_attr_i64(r, g, "ts_min", &b->ts_min) ||
             peso_h5_r_attr_i64(r, g, "ts_max", &b->ts_max) ||
             peso_h5_r_attr_i64(r, g, "raw_interactions", &n_raw);
    b->n_raw = (size_t)n_raw;
    H5Gclose(g);
    return rc ? -1 : 0;
}

static int r_root(peso_h5r *r, hid_t f, peso_dataset *d)
{
    int64_t dedup = 0, years = 0;
    if (peso_h5_r_attr_int(r, f, "format_version", &d->format_version))
        return -1;
    if (d->format_version != PESO_DATASET_FORMAT)
        return peso_h5_r_fail_at(r, f, "@format_version", "found %d, this build reads %d", d->format_version,
                                 PESO_DATASET_FORMAT);
    int rc = peso_h5_r_attr_str(r, f, "config", &d->config) ||
             peso_h5_r_attr_str(r, f, "fingerprint", &d->fingerprint) ||
             peso_h5_r_attr_int(r, f, "n_blocks", &d->split.n_blocks) ||
             peso_h5_r_attr_int(r, f, "window", &d->window) ||
             peso_h5_r_attr_i64(r, f, "n_after_dedup", &dedup) ||
             peso_h5_r_attr_i64(r, f, "n_after_years", &years);
    if (rc)
        return -1;
    d->split.n_after_dedup = (size_t)dedup;
    d->split.n_after_years = (size_t)years;
    if (d->split.n_blocks < 1 || d->split.n_blocks > PESO_MAX_BLOCKS)
        return peso_h5_r_fail_at(r, f, "@n_blocks", "found %d, expected 1..%d", d->split.n_blocks,
                                 PESO_MAX_BLOCKS);
    if (d->window < 1)
        return peso_h5_r_fail_at(r, f, "@window", "found %d, expected >= 1", d->window);
    return 0;
}

static int r_items(peso_h5r *r, hid_t f, peso_dataset *d)
{
    hid_t g = peso_h5_r_group(r, f, "items");
    if (g < 0)
        return -1;
    hsize_t dims[2];
    int rank;
    int rc = peso_h5_r_strs(r, g, "id", -1, &d->item_id, &d->split.n_items);
    hid_t c = rc ? -1 : peso_h5_r_data_open(r, g, "codes", H5T_INTEGER, 2, 2, &rank, dims);
    rc = rc || c < 0;
    if (!rc && (dims[0] != d->split.n_items || dims[1] < 1 || dims[1] > PESO_DATASET_MAX_LEVELS))
        rc = peso_h5_r_fail_at(r, g, "codes", "expected shape [%zu, 1..%d], found [%llu, %llu]",
                               d->split.n_items, PESO_DATASET_MAX_LEVELS, (unsigned long long)dims[0],
                               (unsigned long long)dims[1]);
    if (!rc) {
        d->n_levels = (int)dims[1];
        size_t cells = (size_t)(dims[0] * dims[1]);
        d->codes = peso_malloc((cells ? cells : 1) * sizeof *d->codes);
        rc =
            peso_h5_r_data_read(r, c, H5T_NATIVE_INT32, d->codes) ||
            peso_h5_r_attr(r, c, "level_size", H5T_INTEGER, H5T_NATIVE_INT, d->n_levels, d->level_size) ||
            peso_h5_r_attr_int(r, c, "imported", &d->imported) ||
            peso_h5_r_i32(r, g, "first_block", (int64_t)d->split.n_items, &d->split.item_first_block, NULL) ||
            r_range(r, g, "first_block", d->split.item_first_block, d->split.n_items, 1,
                    d->split.n_blocks + 1);
    }
    if (c >= 0)
        H5Dclose(c);
    H5Gclose(g);
    return rc ? -1 : 0;
}

static int r_file(peso_h5r *r, hid_t f, peso_dataset *d)
{
    if (r_root(r, f, d) || r_items(r, f, d))
        return -1;
    hid_t g = peso_h5_r_group(r, f, "users");
    if (g < 0)
        return -1;
    int rc = peso_h5_r_strs(r, g, "id", -1, &d->user_id, &d->split.n_users);
    H5Gclose(g);
    if (rc)
        return -1;
    g = peso_h5_r_group(r, f, "blocks");
    if (g < 0)
        return -1;
    d->split.b = peso_calloc((size_t)d->split.n_blocks, sizeof *d->split.b);
    for (int k = 0; k < d->split.n_blocks && rc == 0; k++) {
        d->split.b[k].k = k + 1;
        rc = r_block(r, g, &d->split.b[k], &d->split);
        d->split.total_interactions += d->split.b[k].st.interactions;
    }
    H5Gclose(g);
    return rc;
}

static hid_t open_file(peso_h5r *r)
{
    if (access(r->file, R_OK) != 0)
        return peso_errf(r->err, "%s: cannot read: %s", r->file, strerror(errno));
    return peso_h5_r_open(r, "not a readable HDF5 file");
}

int peso_dataset_read(const char *path, peso_dataset *out, peso_err *err)
{
    memset(out, 0, sizeof *out);
    peso_h5r r = {path, err};
    hid_t f = open_file(&r);
    if (f < 0)
        return -1;
    int rc = r_file(&r, f, out);
    H5Fclose(f);
    if (rc)
        peso_dataset_free(out);
    return rc ? -1 : 0;
}

int peso_dataset_read_fingerprint(const char *path, char *out, size_t n, peso_err *err)
{
    peso_h5r r = {path, err};
    hid_t f = open_file(&r);
    if (f < 0)
        return -1;
    char *s = NULL;
    int rc = peso_h5_r_attr_str(&r, f, "fingerprint", &s);
    H5Fclose(f);
    if (rc == 0 && strlen(s) >= n)
        rc = peso_errf(err, "%s: fingerprint '%s' is longer than %zu bytes", path, s, n - 1);
    if (rc == 0)
        memcpy(out, s, strlen(s) + 1);
    free(s);
    return rc ? -1 : 0;
}

void peso_dataset_free(peso_dataset *d)
{
    for (size_t i = 0; d->item_id && i < d->split.n_items; i++)
        free(d->item_id[i]);
    for (size_t i = 0; d->user_id && i < d->split.n_users; i++)
        free(d->user_id[i]);
    free(d->item_id);
    free(d->user_id);
    free(d->codes);
    free(d->config);
    free(d->fingerprint);
    peso_split_free(&d->split);
    memset(d, 0, sizeof *d);
}
