/* dataset.h5: write a small split, read it back, compare every field with
 * the in-memory split; check h5dump accepts the file; damaged files give
 * messages that name the file and the object. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/dataset.h"
#include "data/raw.h"
#include "data/split.h"
#include "skip.h"

static char dir[64];
static char path[128];

static void add(peso_raw *r, const char *u, const char *i, int64_t ts)
{
    peso_raw_add(r, u, strlen(u), i, strlen(i), ts);
}

static void add_run(peso_raw *r, const char *u, const char *prefix, int n, int64_t ts0)
{
    char item[64];
    for (int j = 0; j < n; j++) {
        snprintf(item, sizeof item, "%s%d", prefix, j);
        add(r, u, item, ts0 + j);
    }
}

/* 15 interactions after dedup, b_1 = 15 * 0.6 = 9: block 1 "ü ser" (6)
 * and B (3); block 2 A (3) and B (3). With min 3 every user stays, and
 * block 2 has no train pairs at all. history: all. */
static void make_split(peso_raw *r, peso_split *s)
{
    static const double frac[2] = {0.6, 0.4};
    peso_raw_init(r);
    add_run(r, "\xc3\xbc ser", "it\xc3\xa9m ", 6, 0);
    add_run(r, "B", "b", 3, 10);
    add_run(r, "A", "a", 3, 100);
    add_run(r, "B", "c", 3, 200);
    add(r, "B", "b0", 300); /* a repeat: dropped by dedup */
    peso_split_opts o = {0};
    o.fractions = frac;
    o.n_blocks = 2;
    o.min_user_interactions = 3;
    o.window = 4;
    o.history_all = 1;
    peso_err e;
    cr_assert_eq(peso_split_run(r, &o, s, &e), 0, "%s", e.msg);
    cr_assert_eq(s->b[0].n_raw, 9);
    cr_assert_eq(s->b[1].train.n, 0);
}

static void make_ids(peso_dataset_codes *ids, size_t n)
{
    memset(ids, 0, sizeof *ids);
    ids->n_items = n;
    ids->n_levels = 4;
    int32_t *codes = malloc(n * 4 * sizeof *codes);
    for (size_t i = 0; i < n * 4; i++)
        codes[i] = (int32_t)((i * 37) % 256);
    ids->codes = codes;
    ids->level_size[0] = ids->level_size[1] = ids->level_size[2] = 256;
    ids->level_size[3] = 3;
    ids->imported = 1;
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/peso-dataset-XXXXXX");
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/dataset.h5", dir);
}

static void teardown(void)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[512];
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    if (d)
        closedir(d);
    rmdir(dir);
}

static void same_pairs(const peso_pairs *a, const peso_pairs *b, const char *what)
{
    cr_assert_eq(a->n, b->n, "%s: n", what);
    cr_expect_arr_eq(a->user, b->user, a->n * sizeof *a->user, "%s: user", what);
    cr_expect_arr_eq(a->target, b->target, a->n * sizeof *a->target, "%s: target", what);
    cr_expect_arr_eq(a->off, b->off, (a->n + 1) * sizeof *a->off, "%s: offsets", what);
    cr_expect_arr_eq(a->hist, b->hist, (size_t)a->off[a->n] * sizeof *a->hist, "%s: history", what);
}

static void write_small(peso_raw *r, peso_split *s, peso_dataset_codes *ids)
{
    make_split(r, s);
    make_ids(ids, s->n_items);
    peso_err e;
    cr_assert_eq(
        peso_dataset_write(path, r, s, ids, 4, "seed: 42\nsplit:\n  window: 4\n", "0123456789abcdef", &e), 0,
        "%s", e.msg);
}

TestSuite(dataset, .init = setup, .fini = teardown);

Test(dataset, round_trip_every_field)
{
    peso_raw r;
    peso_split s;
    peso_dataset_codes ids;
    write_small(&r, &s, &ids);
    /* nothing but the final file is left in the directory */
    DIR *d = opendir(dir);
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d)))
        files += de->d_name[0] != '.';
    closedir(d);
    cr_expect_eq(files, 1);

    peso_dataset ds;
    peso_err e;
    cr_assert_eq(peso_dataset_read(path, &ds, &e), 0, "%s", e.msg);
    cr_expect_eq(ds.format_version, 1);
    cr_expect_str_eq(ds.config, "seed: 42\nsplit:\n  window: 4\n");
    cr_expect_str_eq(ds.fingerprint, "0123456789abcdef");
    cr_expect_eq(ds.window, 4);
    cr_expect_eq(ds.split.n_after_dedup, s.n_after_dedup);
    cr_expect_eq(ds.split.n_after_years, s.n_after_years);
    cr_assert_eq(ds.split.n_items, s.n_items);
    cr_assert_eq(ds.split.n_users, s.n_users);
    for (size_t i = 0; i < s.n_items; i++)
        cr_expect_str_eq(ds.item_id[i], peso_strtab_str(r.items, s.item_raw[i]));
    for (size_t u = 0; u < s.n_users; u++)
        cr_expect_str_eq(ds.user_id[u], peso_strtab_str(r.users, s.user_raw[u]));
    cr_expect_str_eq(ds.item_id[0], "it\xc3\xa9m 0");
    cr_expect_str_eq(ds.user_id[0], "\xc3\xbc ser");
    cr_expect_eq(ds.n_levels, 4);
    cr_expect_arr_eq(ds.codes, ids.codes, s.n_items * 4 * sizeof *ids.codes);
    cr_expect_arr_eq(ds.level_size, ids.level_size, 4 * sizeof *ids.level_size);
    cr_expect_eq(ds.imported, 1);
    cr_expect_arr_eq(ds.split.item_first_block, s.item_first_block, s.n_items * sizeof *s.item_first_block);
    cr_expect_eq(ds.split.item_raw, NULL);
    cr_expect_eq(ds.split.total_interactions, s.total_interactions);
    cr_assert_eq(ds.split.n_blocks, 2);
    for (int k = 0; k < 2; k++) {
        const peso_block *a = &s.b[k], *b = &ds.split.b[k];
        cr_expect_eq(b->k, k + 1);
        cr_expect_eq(b->ts_min, a->ts_min);
        cr_expect_eq(b->ts_max, a->ts_max);
        cr_expect_eq(b->n_raw, a->n_raw);
        cr_expect_eq(b->st.users, a->st.users);
        cr_expect_eq(b->st.new_users, a->st.new_users);
        cr_expect_eq(b->st.items, a->st.items);
        cr_expect_eq(b->st.new_items, a->st.new_items);
        cr_expect_eq(b->st.interactions, a->st.interactions);
        cr_expect_eq(b->st.train_pairs, a->st.train_pairs);
        cr_expect_eq(b->st.avg_seq_len, a->st.avg_seq_len);
        cr_expect_eq(b->st.sparsity, a->st.sparsity);
        same_pairs(&a->train, &b->train, "train");
        same_pairs(&a->valid, &b->valid, "valid");
        same_pairs(&a->test, &b->test, "test");
        cr_assert_eq(b->n_seq, a->n_seq);
        cr_expect_arr_eq(b->seq_user, a->seq_user, a->n_seq * sizeof *a->seq_user);
        cr_expect_arr_eq(b->seq_off, a->seq_off, (a->n_seq + 1) * sizeof *a->seq_off);
        cr_expect_arr_eq(b->seq_item, a->seq_item, (size_t)a->seq_off[a->n_seq] * 4);
    }
    /* Values the split must have produced (not only equal on both sides):
     * block 2 = A a0..a2, B c0..c2; with history all and window 4, B's
     * test pair is b1 b2 c0 c1 -> c2. */
    const peso_pairs *t2 = &ds.split.b[1].test;
    cr_assert_eq(t2->n, 2);
    cr_expect_str_eq(ds.user_id[t2->user[1]], "B");
    cr_expect_eq(t2->off[2] - t2->off[1], 4);
    const char *want[4] = {"b1", "b2", "c0", "c1"};
    for (int h = 0; h < 4; h++)
        cr_expect_str_eq(ds.item_id[t2->hist[t2->off[1] + h]], want[h]);
    cr_expect_str_eq(ds.item_id[t2->target[1]], "c2");

    char fp[17];
    cr_assert_eq(peso_dataset_read_fingerprint(path, fp, sizeof fp, &e), 0, "%s", e.msg);
    cr_expect_str_eq(fp, "0123456789abcdef");
    char small[8];
    cr_expect_eq(peso_dataset_read_fingerprint(path, small, sizeof small, &e), -1);
    peso_dataset_free(&ds);
    free((int32_t *)ids.codes);
    peso_split_free(&s);
    peso_raw_free(&r);
}

Test(dataset, h5dump_reads_the_layout)
{
    if (access("/usr/bin/h5dump", X_OK) != 0)
        peso_test_missing("h5dump (hdf5-tools) absent");
    peso_raw r;
    peso_split s;
    peso_dataset_codes ids;
    write_small(&r, &s, &ids);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "/usr/bin/h5dump -H %s", path);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    char line[1024];
    int train_user = 0, empty = 0, codes = 0, level_size = 0;
    while (fgets(line, sizeof line, p)) {
        train_user += strstr(line, "DATASET \"user\"") != NULL;
        codes += strstr(line, "DATASET \"codes\"") != NULL;
        level_size += strstr(line, "ATTRIBUTE \"level_size\"") != NULL;
        /* block 2's train datasets are empty: SIMPLE { ( 0 ) / ( 0 ) } */
        empty += strstr(line, "( 0 ) / ( 0 )") != NULL;
    }
    cr_assert_eq(pclose(p), 0, "h5dump failed");
    cr_expect_eq(train_user, 2 * 4, "user datasets in train/valid/test/seq of 2 blocks");
    cr_expect_eq(codes, 1);
    cr_expect_eq(level_size, 1);
    cr_expect_eq(empty, 3, "block 2 train: user, target, history");
    free((int32_t *)ids.codes);
    peso_split_free(&s);
    peso_raw_free(&r);
}

/* Edits the written file with HDF5 directly to make it wrong. */
static void damage(void (*edit)(hid_t f))
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    edit(f);
    H5Fclose(f);
}

static void drop_valid_target(hid_t f)
{
    cr_assert(H5Ldelete(f, "/blocks/2/valid/target", H5P_DEFAULT) >= 0);
}

static void short_offsets(hid_t f)
{
    cr_assert(H5Ldelete(f, "/blocks/1/train/offsets", H5P_DEFAULT) >= 0);
    hsize_t n = 2;
    int64_t v[2] = {0, 1};
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t d =
        H5Dcreate2(f, "/blocks/1/train/offsets", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(d);
    H5Sclose(sp);
}

static void drop_sparsity(hid_t f)
{
    cr_assert(H5Adelete_by_name(f, "/blocks/1", "sparsity", H5P_DEFAULT) >= 0);
}

static void bad_target(hid_t f)
{
    hid_t d = H5Dopen2(f, "/blocks/1/test/target", H5P_DEFAULT);
    int32_t v[2] = {0, 9999};
    H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(d);
}

static void future_version(hid_t f)
{
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    int v = 2;
    H5Awrite(a, H5T_NATIVE_INT, &v);
    H5Aclose(a);
}

static void expect_read_error(void (*edit)(hid_t f), const char *a, const char *b)
{
    peso_raw r;
    peso_split s;
    peso_dataset_codes ids;
    write_small(&r, &s, &ids);
    damage(edit);
    peso_dataset ds;
    peso_err e;
    cr_assert_eq(peso_dataset_read(path, &ds, &e), -1);
    cr_expect(strstr(e.msg, path) != NULL, "names the file: %s", e.msg);
    cr_expect(strstr(e.msg, a) != NULL, "%s", e.msg);
    cr_expect(strstr(e.msg, b) != NULL, "%s", e.msg);
    free((int32_t *)ids.codes);
    peso_split_free(&s);
    peso_raw_free(&r);
}

Test(dataset, missing_dataset_is_named)
{
    expect_read_error(drop_valid_target, "/blocks/2/valid/target", "missing");
}

Test(dataset, wrong_shape_is_named)
{
    expect_read_error(short_offsets, "/blocks/1/train/offsets", "expected shape [");
}

Test(dataset, missing_attribute_is_named)
{
    expect_read_error(drop_sparsity, "/blocks/1/@sparsity", "missing");
}

Test(dataset, out_of_range_index_is_named)
{
    expect_read_error(bad_target, "/blocks/1/test/target", "9999");
}

Test(dataset, other_format_version_is_refused)
{
    expect_read_error(future_version, "format_version", "this build reads 1");
}

Test(dataset, unreadable_files)
{
    peso_dataset ds;
    peso_err e;
    char p[256];
    snprintf(p, sizeof p, "%s/absent.h5", dir);
    cr_expect_eq(peso_dataset_read(p, &ds, &e), -1);
    cr_expect(strstr(e.msg, "absent.h5: cannot read") != NULL, "%s", e.msg);
    snprintf(p, sizeof p, "%s/text.h5", dir);
    FILE *f = fopen(p, "w");
    fputs("not hdf5\n", f);
    fclose(f);
    cr_expect_eq(peso_dataset_read(p, &ds, &e), -1);
    cr_expect(strstr(e.msg, "text.h5: not a readable HDF5 file") != NULL, "%s", e.msg);
    char fp[17];
    cr_expect_eq(peso_dataset_read_fingerprint(p, fp, sizeof fp, &e), -1);
}

Test(dataset, write_checks_the_ids)
{
    peso_raw r;
    peso_split s;
    peso_dataset_codes ids;
    make_split(&r, &s);
    make_ids(&ids, s.n_items - 1);
    peso_err e;
    cr_expect_eq(peso_dataset_write(path, &r, &s, &ids, 4, "", "x", &e), -1);
    cr_expect(strstr(e.msg, "cover") != NULL, "%s", e.msg);
    cr_expect_eq(access(path, F_OK), -1, "no file written");
    char bad[256];
    snprintf(bad, sizeof bad, "%s/no/such/dir/dataset.h5", dir);
    ids.n_items = s.n_items;
    cr_expect_eq(peso_dataset_write(bad, &r, &s, &ids, 4, "", "x", &e), -1);
    cr_expect(strstr(e.msg, "cannot create") != NULL, "%s", e.msg);
    free((int32_t *)ids.codes);
    peso_split_free(&s);
    peso_raw_free(&r);
}
