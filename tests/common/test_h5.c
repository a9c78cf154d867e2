/* The typed HDF5 readers of common/h5.h: a small file written with the
 * writer helpers (and raw HDF5 for what they do not write) is read back
 * value by value, then every refusal is checked to name the file and the
 * object. */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/h5.h"

static char dir[] = "/tmp/peso_h5_XXXXXX";
static char path[256];

/* A fixed-length string dataset, as h5py writes numpy byte strings. */
static void write_fixed_strings(hid_t loc, const char *name, const char *const *s, size_t n, size_t w)
{
    char *buf = calloc(n, w);
    for (size_t i = 0; i < n; i++)
        memcpy(buf + i * w, s[i], strlen(s[i]));
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, w);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    hsize_t d = n;
    hid_t sp = H5Screate_simple(1, &d, NULL);
    hid_t ds = H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(ds >= 0);
    cr_assert(H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Tclose(t);
    free(buf);
}

/* /  @i32 = -7, @i64 = 1 << 40, @f64 = 0.25, @str = "héllo", @pair = {3, 4}
 * /g/ints [5] int32, /g/longs [3] int64, /g/floats [2, 3] float32,
 *     /g/names [3] variable-length strings, /g/fixed [2] fixed-length,
 *     /g/text scalar string, /g/empty [0] int32 */
static void setup(void)
{
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.h5", dir);
    peso_err err;
    char tmp[300];
    hid_t f = peso_h5_create_tmp(path, tmp, sizeof tmp, &err);
    cr_assert(f >= 0, "%s", err.msg);
    peso_h5w w = {path, &err, 0};
    peso_h5_w_attr_i32(&w, f, "i32", -7);
    peso_h5_w_attr_i64(&w, f, "i64", (int64_t)1 << 40);
    peso_h5_w_attr_f64(&w, f, "f64", 0.25);
    peso_h5_w_attr_str(&w, f, "str", "h\xc3\xa9llo");
    int32_t pair[2] = {3, 4};
    peso_h5_w_attr(&w, f, "pair", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, pair);
    hid_t g = peso_h5_w_group(&w, f, "g");
    int32_t ints[5] = {1, -2, 3, -4, 5};
    int64_t longs[3] = {(int64_t)1 << 50, -1, 0};
    float floats[6] = {0.5f, 1.5f, -2.5f, 3.0f, 4.0f, 5.0f};
    hsize_t fd[2] = {2, 3}, three = 3;
    peso_h5_w_i32(&w, g, "ints", ints, 5);
    peso_h5_w_i64(&w, g, "longs", longs, 3);
    peso_h5_w_data(&w, g, "floats", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, fd, floats);
    hid_t st = peso_h5_vlen_str();
    const char *names[3] = {"alpha", "", "gamma"}, *text = "one string";
    peso_h5_w_data(&w, g, "names", st, st, 1, &three, names);
    peso_h5_w_data(&w, g, "text", st, st, 0, NULL, &text);
    H5Tclose(st);
    peso_h5_w_i32(&w, g, "empty", NULL, 0);
    const char *fixed[2] = {"ab", "xyz"};
    write_fixed_strings(g, "fixed", fixed, 2, 3);
    peso_h5_close_group(g);
    cr_assert_eq(peso_h5_commit(&w, f, tmp, path, &err), 0, "%s", err.msg);
}

static void teardown(void)
{
    unlink(path);
    rmdir(dir);
}

TestSuite(h5, .init = setup, .fini = teardown);

/* The file, the group g and the reader context, open for one test. */
typedef struct rd {
    peso_err err;
    peso_h5r r;
    hid_t f, g;
} rd;

static void rd_open(rd *x)
{
    x->r = (peso_h5r){path, &x->err};
    x->f = peso_h5_r_open(&x->r, NULL);
    cr_assert(x->f >= 0, "%s", x->err.msg);
    x->g = peso_h5_r_group(&x->r, x->f, "g");
    cr_assert(x->g >= 0, "%s", x->err.msg);
}

static void rd_close(rd *x)
{
    H5Gclose(x->g);
    H5Fclose(x->f);
}

/* The message names the file and the object, and says what was wrong. */
static void assert_msg(const rd *x, const char *obj, const char *what)
{
    char want[512];
    snprintf(want, sizeof want, "%s: %s: %s", path, obj, what);
    cr_assert(strstr(x->err.msg, want), "want \"%s\" in: %s", want, x->err.msg);
}

Test(h5, attributes_read_back)
{
    rd x;
    rd_open(&x);
    int i = 0;
    int64_t l = 0;
    double d = 0;
    char *s = NULL;
    int32_t pair[2] = {0, 0};
    cr_assert_eq(peso_h5_r_attr_int(&x.r, x.f, "i32", &i), 0, "%s", x.err.msg);
    cr_assert_eq(i, -7);
    cr_assert_eq(peso_h5_r_attr_i64(&x.r, x.f, "i64", &l), 0, "%s", x.err.msg);
    cr_assert_eq(l, (int64_t)1 << 40);
    cr_assert_eq(peso_h5_r_attr_f64(&x.r, x.f, "f64", &d), 0, "%s", x.err.msg);
    cr_assert_eq(d, 0.25);
    cr_assert_eq(peso_h5_r_attr_str(&x.r, x.f, "str", &s), 0, "%s", x.err.msg);
    cr_assert_str_eq(s, "h\xc3\xa9llo");
    free(s);
    cr_assert_eq(peso_h5_r_attr(&x.r, x.f, "pair", H5T_INTEGER, H5T_NATIVE_INT32, 2, pair), 0, "%s",
                 x.err.msg);
    cr_assert(pair[0] == 3 && pair[1] == 4);
    /* An integer attribute read as int64 converts. */
    cr_assert_eq(peso_h5_r_attr_i64(&x.r, x.f, "i32", &l), 0, "%s", x.err.msg);
    cr_assert_eq(l, -7);
    rd_close(&x);
}

Test(h5, datasets_read_back)
{
    rd x;
    rd_open(&x);
    int32_t *ints = NULL;
    int64_t *longs = NULL;
    size_t n = 0;
    cr_assert_eq(peso_h5_r_i32(&x.r, x.g, "ints", 5, &ints, &n), 0, "%s", x.err.msg);
    cr_assert_eq(n, 5);
    cr_assert(ints[0] == 1 && ints[1] == -2 && ints[4] == 5);
    cr_assert_eq(peso_h5_r_i64(&x.r, x.g, "longs", -1, &longs, &n), 0, "%s", x.err.msg);
    cr_assert_eq(n, 3);
    cr_assert(longs[0] == (int64_t)1 << 50 && longs[1] == -1 && longs[2] == 0);
    free(ints);
    free(longs);
    /* int32 values widen into int64, and the other way round. */
    cr_assert_eq(peso_h5_r_i64(&x.r, x.g, "ints", 5, &longs, NULL), 0, "%s", x.err.msg);
    cr_assert_eq(longs[3], -4);
    cr_assert_eq(peso_h5_r_i32(&x.r, x.g, "longs", 3, &ints, NULL), 0, "%s", x.err.msg);
    cr_assert_eq(ints[1], -1);
    free(ints);
    free(longs);
    cr_assert_eq(peso_h5_r_i32(&x.r, x.g, "empty", 0, &ints, &n), 0, "%s", x.err.msg);
    cr_assert_eq(n, 0);
    cr_assert_not_null(ints);
    free(ints);

    hsize_t dims[2];
    int rank = 0;
    float v[6];
    hid_t d = peso_h5_r_data_open(&x.r, x.g, "floats", H5T_FLOAT, 1, 4, &rank, dims);
    cr_assert(d >= 0, "%s", x.err.msg);
    cr_assert(rank == 2 && dims[0] == 2 && dims[1] == 3);
    cr_assert_eq(peso_h5_r_data_read(&x.r, d, H5T_NATIVE_FLOAT, v), 0, "%s", x.err.msg);
    cr_assert(v[0] == 0.5f && v[2] == -2.5f && v[5] == 5.0f);
    H5Dclose(d);
    rd_close(&x);
}

Test(h5, strings_read_back)
{
    rd x;
    rd_open(&x);
    char **s = NULL, *t = NULL;
    size_t n = 0;
    cr_assert_eq(peso_h5_r_strs(&x.r, x.g, "names", 3, &s, &n), 0, "%s", x.err.msg);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(s[0], "alpha");
    cr_assert_str_eq(s[1], "");
    cr_assert_str_eq(s[2], "gamma");
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
    cr_assert_eq(peso_h5_r_strs(&x.r, x.g, "fixed", -1, &s, &n), 0, "%s", x.err.msg);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(s[0], "ab");
    cr_assert_str_eq(s[1], "xyz");
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
    cr_assert_eq(peso_h5_r_str(&x.r, x.g, "text", &t), 0, "%s", x.err.msg);
    cr_assert_str_eq(t, "one string");
    free(t);
    rd_close(&x);
}

Test(h5, missing_objects_are_named)
{
    rd x;
    rd_open(&x);
    int i;
    int32_t *v = NULL;
    char *s = NULL;
    cr_assert_eq(peso_h5_r_attr_int(&x.r, x.f, "nope", &i), -1);
    assert_msg(&x, "/@nope", "attribute is missing");
    cr_assert_eq(peso_h5_r_attr_str(&x.r, x.g, "nope", &s), -1);
    assert_msg(&x, "/g/@nope", "attribute is missing");
    cr_assert_null(s);
    cr_assert_eq(peso_h5_r_i32(&x.r, x.g, "nope", -1, &v, NULL), -1);
    assert_msg(&x, "/g/nope", "dataset is missing");
    cr_assert_null(v);
    cr_assert_eq(peso_h5_r_str(&x.r, x.f, "g/nope", &s), -1);
    assert_msg(&x, "/g/nope", "dataset is missing");
    cr_assert(peso_h5_r_group(&x.r, x.f, "h") < 0);
    assert_msg(&x, "/h", "group is missing");
    cr_assert(peso_h5_r_group(&x.r, x.g, "ints") < 0);
    assert_msg(&x, "/g/ints", "not a group");
    cr_assert_eq(peso_h5_r_i32(&x.r, x.f, "g", -1, &v, NULL), -1);
    assert_msg(&x, "/g", "not a dataset");
    rd_close(&x);
}

Test(h5, wrong_class_is_named)
{
    rd x;
    rd_open(&x);
    int i;
    double d;
    float *f = NULL;
    int32_t *v = NULL;
    char **s = NULL, *t = NULL;
    size_t n = 0;
    cr_assert_eq(peso_h5_r_attr_int(&x.r, x.f, "f64", &i), -1);
    assert_msg(&x, "/@f64", "expected an integer attribute, found float");
    cr_assert_eq(peso_h5_r_attr_f64(&x.r, x.f, "str", &d), -1);
    assert_msg(&x, "/@str", "expected a float attribute, found string");
    cr_assert_eq(peso_h5_r_attr_str(&x.r, x.f, "i32", &t), -1);
    assert_msg(&x, "/@i32", "expected a string attribute, found integer");
    cr_assert_eq(peso_h5_r_f32(&x.r, x.g, "ints", -1, &f, NULL), -1);
    assert_msg(&x, "/g/ints", "expected a float dataset, found integer");
    cr_assert_eq(peso_h5_r_i32(&x.r, x.g, "names", -1, &v, NULL), -1);
    assert_msg(&x, "/g/names", "expected an integer dataset, found string");
    cr_assert_eq(peso_h5_r_strs(&x.r, x.g, "longs", -1, &s, &n), -1);
    assert_msg(&x, "/g/longs", "expected a string dataset, found integer");
    cr_assert(f == NULL && v == NULL && s == NULL && n == 0);
    rd_close(&x);
}

Test(h5, wrong_rank_and_length_are_named)
{
    rd x;
    rd_open(&x);
    int i;
    int32_t *v = NULL;
    float *f = NULL;
    char **s = NULL, *t = NULL;
    size_t n = 0;
    hsize_t dims[2];
    int rank;
    cr_assert_eq(peso_h5_r_f32(&x.r, x.g, "floats", -1, &f, NULL), -1);
    assert_msg(&x, "/g/floats", "expected 1 dimension(s), found 2");
    cr_assert(peso_h5_r_data_open(&x.r, x.g, "ints", H5T_INTEGER, 2, 3, &rank, dims) < 0);
    assert_msg(&x, "/g/ints", "expected 2..3 dimensions, found 1");
    cr_assert_eq(peso_h5_r_str(&x.r, x.g, "names", &t), -1);
    assert_msg(&x, "/g/names", "expected 0 dimension(s), found 1");
    cr_assert_eq(peso_h5_r_strs(&x.r, x.g, "text", -1, &s, &n), -1);
    assert_msg(&x, "/g/text", "expected 1 dimension(s), found 0");
    cr_assert_eq(peso_h5_r_i32(&x.r, x.g, "ints", 4, &v, &n), -1);
    assert_msg(&x, "/g/ints", "expected shape [4], found [5]");
    cr_assert_eq(peso_h5_r_strs(&x.r, x.g, "fixed", 3, &s, &n), -1);
    assert_msg(&x, "/g/fixed", "expected shape [3], found [2]");
    cr_assert_eq(peso_h5_r_attr_int(&x.r, x.f, "pair", &i), -1);
    assert_msg(&x, "/@pair", "expected 1 value(s), found 2");
    cr_assert(v == NULL && f == NULL && s == NULL && t == NULL && n == 0);
    rd_close(&x);
}

Test(h5, fail_at_names_the_object)
{
    rd x;
    rd_open(&x);
    cr_assert_eq(peso_h5_r_fail_at(&x.r, x.g, "ints", "value %d is out of range", 9), -1);
    assert_msg(&x, "/g/ints", "value 9 is out of range");
    cr_assert_eq(peso_h5_r_fail_at(&x.r, x.g, NULL, "odd group"), -1);
    assert_msg(&x, "/g", "odd group");
    cr_assert_eq(peso_h5_r_fail_at(&x.r, x.f, "@i32", "too small"), -1);
    assert_msg(&x, "/@i32", "too small");
    rd_close(&x);
}

Test(h5, unopenable_files_are_named)
{
    char p[300];
    peso_err err;
    snprintf(p, sizeof p, "%s/absent.h5", dir);
    peso_h5r r = {p, &err};
    cr_assert(peso_h5_r_open(&r, NULL) < 0);
    cr_assert(strstr(err.msg, p) && strstr(err.msg, ": cannot open as an HDF5 file ("), "%s", err.msg);
    snprintf(p, sizeof p, "%s/text.h5", dir);
    FILE *f = fopen(p, "w");
    fputs("not hdf5\n", f);
    fclose(f);
    cr_assert(peso_h5_r_open(&r, "not a dataset file") < 0);
    cr_assert(strstr(err.msg, p) && strstr(err.msg, ": not a dataset file ("), "%s", err.msg);
    unlink(p);
}
