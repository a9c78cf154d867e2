/* peso_semid_build end to end: text features, an embeddings file, import;
 * the collision level and the frozen tokenizer checked by brute force. */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "semid/semid.h"
#include "semid_test_util.h"

#define N_ITEMS 240
#define N_BLOCK1 180
#define N_TOPICS 8

typedef struct text_data {
    char *ids[N_ITEMS];
    char *texts[N_ITEMS];
    int block[N_ITEMS];
    int topic[N_ITEMS];
} text_data;

/* Item i: topic i % 8, six words of its topic's vocabulary, two shared
 * words. Items 5 and 13 have the same text; items 7 and 15 have none. */
static void make_texts(text_data *t)
{
    peso_rng r;
    peso_rng_seed(&r, 17, 0);
    for (int i = 0; i < N_ITEMS; i++) {
        t->ids[i] = malloc(16);
        snprintf(t->ids[i], 16, "P%04d", 1000 + i);
        t->topic[i] = i % N_TOPICS;
        t->block[i] = i < N_BLOCK1 ? 1 : 2 + (i % 2);
        t->texts[i] = malloc(256);
        size_t o = 0;
        for (int w = 0; w < 6; w++)
            o += (size_t)snprintf(t->texts[i] + o, 256 - o, "topic%cword%d ", 'a' + t->topic[i],
                                  (int)peso_rng_below(&r, 12));
        for (int w = 0; w < 2; w++)
            o += (size_t)snprintf(t->texts[i] + o, 256 - o, "common%d ", (int)peso_rng_below(&r, 30));
    }
    strcpy(t->texts[13], t->texts[5]);
    free(t->texts[7]);
    free(t->texts[15]);
    t->texts[7] = t->texts[15] = NULL;
}

static void free_texts(text_data *t)
{
    for (int i = 0; i < N_ITEMS; i++) {
        free(t->ids[i]);
        free(t->texts[i]);
    }
}

static peso_conf test_conf(void)
{
    peso_conf c;
    peso_conf_defaults(&c);
    c.semid.epochs = 20;
    return c;
}

static int build_n(peso_semid *s, const text_data *t, size_t n, const peso_conf *c, peso_err *err)
{
    peso_semid_items it;
    test_items(&it, n, (const char *const *)t->ids, (const char *const *)t->texts, t->block);
    int rc = peso_semid_build(s, &it, c, 0, err);
    test_items_free(&it);
    return rc;
}

static int same_prefix(const int32_t *a, const int32_t *b, int len)
{
    return memcmp(a, b, (size_t)len * sizeof *a) == 0;
}

Test(build, text_features_and_collision_level, .timeout = 60)
{
    text_data t;
    make_texts(&t);
    peso_conf c = test_conf();
    peso_semid s;
    peso_err err;
    cr_assert_eq(build_n(&s, &t, N_ITEMS, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(s.n_items, N_ITEMS);
    cr_assert_eq(s.n_levels, 4);
    cr_assert_eq(s.imported, 0);
    int maxc = 0;
    size_t coll = 0;
    for (int i = 0; i < N_ITEMS; i++) {
        const int32_t *row = s.codes + i * 4;
        for (int l = 0; l < 3; l++)
            cr_assert(row[l] >= 0 && row[l] < 256);
        int earlier = 0;
        for (int j = 0; j < i; j++)
            earlier += same_prefix(s.codes + j * 4, row, 3);
        cr_assert_eq(row[3], earlier, "item %d: collision code %d, %d earlier items share its codes", i,
                     row[3], earlier);
        for (int j = 0; j < i; j++)
            cr_assert(!same_prefix(s.codes + j * 4, row, 4), "items %d and %d share an ID", j, i);
        maxc = row[3] > maxc ? row[3] : maxc;
        coll += row[3] > 0;
    }
    for (int l = 0; l < 3; l++)
        cr_assert_eq(s.level_size[l], 256);
    cr_assert_eq(s.level_size[3], maxc + 1);
    cr_assert_eq(s.distinct_tuples, N_ITEMS);
    cr_assert_float_eq(s.collision_share, (double)coll / N_ITEMS, 1e-12);
    /* equal features, equal learned codes: the collision level parts them */
    cr_assert(same_prefix(s.codes + 5 * 4, s.codes + 13 * 4, 3));
    cr_assert(same_prefix(s.codes + 7 * 4, s.codes + 15 * 4, 3));
    cr_assert_gt(s.codes[13 * 4 + 3], s.codes[5 * 4 + 3]);
    cr_assert_gt(s.codes[15 * 4 + 3], s.codes[7 * 4 + 3]);
    cr_assert(s.fit_report.used_codes[0] > 1 && s.all_report.used_codes[0] >= s.fit_report.used_codes[0]);
    cr_assert(s.fit_report.perplexity[0] > 1.0);
    peso_semid_free(&s);
    free_texts(&t);
}

/* Items of later blocks never change the IDs of block-1 items: building
 * on block 1 alone gives the same IDs, collision level included. */
Test(build, later_items_leave_earlier_ids, .timeout = 60)
{
    text_data t;
    make_texts(&t);
    peso_conf c = test_conf();
    peso_semid all, first, again;
    peso_err err;
    cr_assert_eq(build_n(&all, &t, N_ITEMS, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(build_n(&first, &t, N_BLOCK1, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(build_n(&again, &t, N_ITEMS, &c, &err), 0, "%s", err.msg);
    cr_assert(memcmp(all.codes, first.codes, N_BLOCK1 * 4 * sizeof *all.codes) == 0);
    cr_assert(memcmp(all.codes, again.codes, N_ITEMS * 4 * sizeof *all.codes) == 0);
    cr_assert_float_eq(all.fit_report.recon_mse, first.fit_report.recon_mse, 0);
    c.seed = 7;
    peso_semid other;
    cr_assert_eq(build_n(&other, &t, N_ITEMS, &c, &err), 0, "%s", err.msg);
    cr_assert(memcmp(all.codes, other.codes, N_ITEMS * 4 * sizeof *all.codes) != 0);
    peso_semid_free(&other);
    peso_semid_free(&again);
    peso_semid_free(&first);
    peso_semid_free(&all);
    free_texts(&t);
}

/* With a small codebook, items of one topic share their first code far
 * more often than items of different topics. */
Test(build, first_code_follows_the_topic, .timeout = 60)
{
    text_data t;
    make_texts(&t);
    peso_conf c = test_conf();
    c.semid.codebook = 16;
    c.semid.epochs = 50;
    peso_semid s;
    peso_err err;
    cr_assert_eq(build_n(&s, &t, N_ITEMS, &c, &err), 0, "%s", err.msg);
    long same = 0, same_n = 0, diff = 0, diff_n = 0;
    for (int i = 0; i < N_ITEMS; i++)
        for (int j = 0; j < i; j++) {
            if (i == 7 || i == 15 || j == 7 || j == 15)
                continue;
            int eq = s.codes[i * 4] == s.codes[j * 4];
            if (t.topic[i] == t.topic[j]) {
                same += eq;
                same_n++;
            } else {
                diff += eq;
                diff_n++;
            }
        }
    double ps = (double)same / same_n, pd = (double)diff / diff_n;
    fprintf(stderr,
            "topics: same-topic pairs share code a %.3f, other pairs %.3f; perplexity %.2f %.2f %.2f\n", ps,
            pd, s.all_report.perplexity[0], s.all_report.perplexity[1], s.all_report.perplexity[2]);
    /* chance would be about 1/16 for both */
    cr_assert(ps > 0.2 && ps > 4 * pd, "same topic %.3f, different %.3f", ps, pd);
    peso_semid_free(&s);
    free_texts(&t);
}

static void write_embeddings(const char *path, const float *x, size_t n, int d, const char *const *ids)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {n, (hsize_t)d}, nd[1] = {n};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t ds = H5Dcreate2(f, "/embeddings", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
    H5Dclose(ds);
    H5Sclose(sp);
    sp = H5Screate_simple(1, nd, NULL);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    ds = H5Dcreate2(f, "/ids", st, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids);
    H5Dclose(ds);
    H5Tclose(st);
    H5Sclose(sp);
    H5Fclose(f);
}

Test(build, embeddings_file_and_export, .timeout = 60)
{
    enum { N = 120, D = 16 };
    int label[N], block[N];
    float *x = test_clusters(N, D, 4, 2.0, 0.2, 3, label);
    char *ids[N];
    for (int i = 0; i < N; i++) {
        ids[i] = malloc(8);
        snprintf(ids[i], 8, "e%d", i);
        block[i] = i < 90 ? 1 : 2;
    }
    char dir[64];
    cr_assert_eq(test_tmpdir(dir), 0);
    peso_conf c = test_conf();
    strcpy(c.semid.features, "embeddings");
    snprintf(c.semid.embeddings, sizeof c.semid.embeddings, "%s/emb.h5", dir);
    snprintf(c.semid.export_index, sizeof c.semid.export_index, "%s/ids.index.json", dir);
    c.semid.codebook = 16;
    c.semid.batch = 16; /* 90 items: several steps per epoch */
    c.semid.epochs = 40;
    write_embeddings(c.semid.embeddings, x, N, D, (const char *const *)ids);
    peso_semid_items it;
    test_items(&it, N, (const char *const *)ids, NULL, block);
    peso_semid s, back;
    peso_err err;
    cr_assert_eq(peso_semid_build(&s, &it, &c, 0, &err), 0, "%s", err.msg);
    /* four clusters, 16 codes: no first code spans two clusters */
    for (int i = 0; i < N; i++)
        for (int j = 0; j < i; j++)
            if (label[i] != label[j])
                cr_assert_neq(s.codes[i * 4], s.codes[j * 4], "items %d, %d", i, j);
    cr_assert_eq(peso_semid_import(&back, c.semid.export_index, &it, &err), 0, "%s", err.msg);
    cr_assert_eq(back.n_levels, 4);
    cr_assert(memcmp(back.codes, s.codes, N * 4 * sizeof *s.codes) == 0);
    peso_semid_free(&back);
    peso_semid_free(&s);
    test_items_free(&it);
    remove(c.semid.export_index);
    remove(c.semid.embeddings);
    remove(dir);
    for (int i = 0; i < N; i++)
        free(ids[i]);
    free(x);
}

Test(build, import_source_with_export)
{
    const char *ids[] = {"12", "10", "11", "13"};
    char dir[64];
    cr_assert_eq(test_tmpdir(dir), 0);
    peso_conf c = test_conf();
    strcpy(c.semid.source, "import");
    snprintf(c.semid.index, sizeof c.semid.index, "%s", PESO_FIXTURES "/semid/small.index.json");
    snprintf(c.semid.export_index, sizeof c.semid.export_index, "%s/out.index.json", dir);
    peso_semid_items it;
    test_items(&it, 4, ids, NULL, NULL);
    peso_semid s;
    peso_err err;
    cr_assert_eq(peso_semid_build(&s, &it, &c, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(s.imported, 1);
    cr_assert_eq(s.n_levels, 4);
    FILE *f = fopen(c.semid.export_index, "r");
    char buf[512] = {0};
    cr_assert_not_null(f);
    cr_assert_gt(fread(buf, 1, sizeof buf - 1, f), 0);
    fclose(f);
    cr_assert_str_eq(buf, "{\"12\": [\"<a_200>\", \"<b_15>\", \"<c_2>\", \"<d_0>\"], "
                          "\"10\": [\"<a_3>\", \"<b_0>\", \"<c_7>\", \"<d_0>\"], "
                          "\"11\": [\"<a_3>\", \"<b_0>\", \"<c_7>\", \"<d_1>\"], "
                          "\"13\": [\"<a_3>\", \"<b_0>\", \"<c_7>\", \"<d_0>\"]}");
    peso_semid_free(&s);
    /* an export that cannot be written fails the build and frees the IDs */
    snprintf(c.semid.export_index, sizeof c.semid.export_index, "%s/no/such/dir/x.json", dir);
    cr_assert_eq(peso_semid_build(&s, &it, &c, 0, &err), -1);
    cr_assert(strstr(err.msg, "no/such/dir"), "%s", err.msg);
    cr_assert_null(s.codes);
    test_items_free(&it);
    char out[128];
    snprintf(out, sizeof out, "%s/out.index.json", dir);
    remove(out);
    remove(dir);
}

static void expect_build_error(const peso_conf *c, const int *block, const char *want)
{
    text_data t;
    make_texts(&t);
    int saved[N_ITEMS];
    memcpy(saved, t.block, sizeof saved);
    if (block)
        for (int i = 0; i < N_ITEMS; i++)
            t.block[i] = block[i];
    peso_semid s;
    peso_err err = {{0}};
    cr_assert_eq(build_n(&s, &t, 20, c, &err), -1);
    cr_assert(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
    cr_assert_null(s.codes);
    free_texts(&t);
}

Test(build, configuration_errors)
{
    peso_conf c = test_conf();
    strcpy(c.semid.source, "magic");
    expect_build_error(&c, NULL, "semid.source = 'magic', expected rqvae or import");
    c = test_conf();
    strcpy(c.semid.features, "pixels");
    expect_build_error(&c, NULL, "semid.features = 'pixels', expected text, embeddings or model");
    c = test_conf();
    c.semid.levels = 8;
    expect_build_error(&c, NULL, "semid.levels = 8, expected 1..7");
    c = test_conf();
    int later[N_ITEMS];
    for (int i = 0; i < N_ITEMS; i++)
        later[i] = 2;
    expect_build_error(&c, later, "no items first kept in block 1");
    c = test_conf();
    c.semid.codebook = 2;
    c.semid.levels = 1;
    expect_build_error(&c, NULL, "more than 2 items share the learned codes");
}
