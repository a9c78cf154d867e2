/* peso_semid_read_embeddings: files written here with the HDF5 C API and
 * fixtures written by h5py (variable-length UTF-8 ids; fixed-length ids
 * with float64 rows). */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "semid/semid.h"
#include "semid_test_util.h"

#define FIX PESO_FIXTURES "/semid/"

/* /embeddings [n x d] row r = (r, 10 r + j ...), /ids as given. */
static void write_h5(const char *path, const char *const *ids, size_t n, int d, int vlen, int emb_rank)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(f >= 0);
    float *e = malloc(n * (size_t)d * sizeof *e);
    for (size_t r = 0; r < n; r++)
        for (int j = 0; j < d; j++)
            e[r * d + j] = (float)(r + 0.25 * j);
    hsize_t dims[2] = {n, (hsize_t)d}, flat[1] = {n * (hsize_t)d};
    hid_t sp = emb_rank == 2 ? H5Screate_simple(2, dims, NULL) : H5Screate_simple(1, flat, NULL);
    hid_t ds = H5Dcreate2(f, "/embeddings", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, e);
    H5Dclose(ds);
    H5Sclose(sp);
    hsize_t nd[1] = {n};
    sp = H5Screate_simple(1, nd, NULL);
    hid_t st = H5Tcopy(H5T_C_S1);
    if (vlen) {
        H5Tset_size(st, H5T_VARIABLE);
        ds = H5Dcreate2(f, "/ids", st, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(ds, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids);
    } else {
        size_t w = 1;
        for (size_t i = 0; i < n; i++)
            if (strlen(ids[i]) > w)
                w = strlen(ids[i]);
        char *buf = calloc(n, w);
        for (size_t i = 0; i < n; i++)
            memcpy(buf + i * w, ids[i], strlen(ids[i]));
        H5Tset_size(st, w);
        H5Tset_strpad(st, H5T_STR_NULLPAD);
        ds = H5Dcreate2(f, "/ids", st, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(ds, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
        free(buf);
    }
    H5Dclose(ds);
    H5Tclose(st);
    H5Sclose(sp);
    H5Fclose(f);
    free(e);
}

static int read_for(const char *path, const char *const *items, size_t n, float **x, int *d, peso_err *err)
{
    peso_semid_items it;
    test_items(&it, n, items, NULL, NULL);
    int rc = peso_semid_read_embeddings(path, &it, x, d, err);
    test_items_free(&it);
    return rc;
}

/* Items in another order than the file, and a file row for no item. */
static void check_rows(int vlen)
{
    char dir[64], path[128];
    cr_assert_eq(test_tmpdir(dir), 0);
    snprintf(path, sizeof path, "%s/e.h5", dir);
    const char *file_ids[] = {"B0001", "B0002", "extra", "B0004", "B3"};
    write_h5(path, file_ids, 5, 3, vlen, 2);
    const char *items[] = {"B3", "B0001", "B0004", "B0002"};
    const int row[] = {4, 0, 3, 1};
    float *x;
    int d;
    peso_err err;
    cr_assert_eq(read_for(path, items, 4, &x, &d, &err), 0, "%s", err.msg);
    cr_assert_eq(d, 3);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
            cr_assert_float_eq(x[i * 3 + j], row[i] + 0.25 * j, 0, "item %d col %d", i, j);
    free(x);
    remove(path);
    remove(dir);
}

Test(embeddings, variable_length_ids)
{
    check_rows(1);
}

Test(embeddings, fixed_length_ids)
{
    check_rows(0);
}

/* h5py: /ids as variable-length UTF-8, rows r = (r, r + 0.5, -r). */
static void check_h5py(const char *name)
{
    const char *items[] = {"a", "b", "c"};
    const int row[] = {1, 0, 3};
    float *x;
    int d;
    peso_err err;
    cr_assert_eq(read_for(name, items, 3, &x, &d, &err), 0, "%s", err.msg);
    cr_assert_eq(d, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_float_eq(x[i * 3 + 0], row[i], 0);
        cr_assert_float_eq(x[i * 3 + 1], row[i] + 0.5, 0);
        cr_assert_float_eq(x[i * 3 + 2], -row[i], 0);
    }
    free(x);
}

Test(embeddings, h5py_files)
{
    check_h5py(FIX "emb_h5py.h5");
    check_h5py(FIX "emb_fixed.h5");
}

static void expect_error(const char *path, const char *const *items, size_t n, const char *want)
{
    float *x = (float *)1;
    int d = 7;
    peso_err err = {{0}};
    cr_assert_eq(read_for(path, items, n, &x, &d, &err), -1);
    cr_assert_null(x);
    cr_assert(strstr(err.msg, path), "'%s' lacks the file name", err.msg);
    cr_assert(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
}

Test(embeddings, errors)
{
    char dir[64], path[128];
    cr_assert_eq(test_tmpdir(dir), 0);
    snprintf(path, sizeof path, "%s/e.h5", dir);
    const char *file_ids[] = {"x1", "x2", "x3"};
    write_h5(path, file_ids, 3, 2, 1, 2);
    const char *items[] = {"x2", "x9", "x1"};
    expect_error(path, items, 3, "dataset item 'x9' has no row");
    expect_error(path, items, 3, "1 of 3 dataset items missing");
    const char *dup_ids[] = {"x1", "x2", "x1"};
    write_h5(path, dup_ids, 3, 2, 1, 2);
    const char *x1[] = {"x1"};
    expect_error(path, x1, 1, "/ids rows 0 and 2 both name item 'x1'");
    write_h5(path, file_ids, 3, 2, 1, 1);
    expect_error(path, items, 1, "/embeddings must be 2-dimensional");
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    expect_error(path, items, 1, "no dataset /embeddings");
    FILE *t = fopen(path, "w");
    fputs("not hdf5\n", t);
    fclose(t);
    expect_error(path, items, 1, "cannot open as an HDF5 file");
    remove(path);
    expect_error(path, items, 1, "cannot open as an HDF5 file");
    remove(dir);
}

Test(embeddings, non_finite_rows_are_errors)
{
    char dir[64], path[128];
    cr_assert_eq(test_tmpdir(dir), 0);
    snprintf(path, sizeof path, "%s/nan.h5", dir);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    float e[4] = {1, 2, NAN, 4};
    hsize_t dims[2] = {2, 2}, nd[1] = {2};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t ds = H5Dcreate2(f, "/embeddings", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, e);
    H5Dclose(ds);
    H5Sclose(sp);
    sp = H5Screate_simple(1, nd, NULL);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    const char *ids[] = {"p", "q"};
    ds = H5Dcreate2(f, "/ids", st, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids);
    H5Dclose(ds);
    H5Tclose(st);
    H5Sclose(sp);
    H5Fclose(f);
    const char *items[] = {"p", "q"};
    expect_error(path, items, 2, "row 1 (item 'q') column 0 is not finite");
    remove(path);
    remove(dir);
}
