/* Typed HDF5 readers (see h5.h): each one checks what it opens before it
 * reads, and every failure names the file and the object. */
#include "common/h5.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for an object path and an attribute or tensor name below it. */
#define OBJ_MAX (2 * PESO_H5_OBJ)

static int fail_v(peso_h5r *r, const char *why, const char *obj, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (why[0])
        return peso_errf(r->err, "%s: %s: %s (%s)", r->file, obj, msg, why);
    return peso_errf(r->err, "%s: %s: %s", r->file, obj, msg);
}

int peso_h5_r_fail(peso_h5r *r, const char *obj, const char *fmt, ...)
{
    char why[PESO_H5_REASON];
    va_list ap;
    peso_h5_reason(why);
    va_start(ap, fmt);
    int rc = fail_v(r, why, obj, fmt, ap);
    va_end(ap);
    return rc;
}

int peso_h5_r_fail_at(peso_h5r *r, hid_t loc, const char *name, const char *fmt, ...)
{
    char why[PESO_H5_REASON], obj[OBJ_MAX];
    va_list ap;
    /* Naming the object is an HDF5 call, which clears the error stack. */
    peso_h5_reason(why);
    peso_h5_obj_path(loc, name, obj, sizeof obj);
    va_start(ap, fmt);
    int rc = fail_v(r, why, obj, fmt, ap);
    va_end(ap);
    return rc;
}

hid_t peso_h5_r_open(peso_h5r *r, const char *what)
{
    char why[PESO_H5_REASON];
    const char *w = what ? what : "cannot open as an HDF5 file";
    peso_h5_quiet();
    hid_t f = H5Fopen(r->file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f >= 0)
        return f;
    peso_h5_reason(why);
    if (why[0])
        return peso_errf(r->err, "%s: %s (%s)", r->file, w, why);
    return peso_errf(r->err, "%s: %s", r->file, w);
}

hid_t peso_h5_r_group(peso_h5r *r, hid_t loc, const char *name)
{
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0)
        return peso_h5_r_fail_at(r, loc, name, "group is missing");
    hid_t g = H5Gopen2(loc, name, H5P_DEFAULT);
    if (g < 0)
        return peso_h5_r_fail_at(r, loc, name, "not a group");
    return g;
}

static const char *class_name(H5T_class_t c)
{
    switch (c) {
    case H5T_INTEGER: return "integer";
    case H5T_FLOAT: return "float";
    case H5T_STRING: return "string";
    default: return "other";
    }
}

static const char *article(H5T_class_t c)
{
    return c == H5T_INTEGER ? "an" : "a";
}

/* "/path/@name" for attribute name of loc. */
static void attr_path(hid_t loc, const char *name, char obj[OBJ_MAX])
{
    char at[PESO_H5_OBJ];
    snprintf(at, sizeof at, "@%s", name);
    peso_h5_obj_path(loc, at, obj, OBJ_MAX);
}

/* Opens attribute name of loc (named obj in messages) and checks its
 * class and number of values. */
static hid_t attr_open(peso_h5r *r, hid_t loc, const char *name, const char *obj, H5T_class_t cls, hssize_t n)
{
    if (H5Aexists(loc, name) <= 0)
        return peso_h5_r_fail(r, obj, "attribute is missing");
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0)
        return peso_h5_r_fail(r, obj, "cannot open attribute");
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    H5T_class_t got = H5Tget_class(t);
    hssize_t npts = H5Sget_simple_extent_npoints(sp);
    H5Tclose(t);
    H5Sclose(sp);
    if (got == cls && npts == n)
        return a;
    H5Aclose(a);
    if (got != cls)
        return peso_h5_r_fail(r, obj, "expected %s %s attribute, found %s", article(cls), class_name(cls),
                              class_name(got));
    return peso_h5_r_fail(r, obj, "expected %lld value(s), found %lld", (long long)n, (long long)npts);
}

int peso_h5_r_attr(peso_h5r *r, hid_t loc, const char *name, H5T_class_t cls, hid_t mtype, hssize_t n,
                   void *out)
{
    char obj[OBJ_MAX];
    attr_path(loc, name, obj);
    hid_t a = attr_open(r, loc, name, obj, cls, n);
    if (a < 0)
        return -1;
    int rc = H5Aread(a, mtype, out) < 0 ? peso_h5_r_fail(r, obj, "cannot read attribute") : 0;
    H5Aclose(a);
    return rc;
}

int peso_h5_r_attr_int(peso_h5r *r, hid_t loc, const char *name, int *v)
{
    return peso_h5_r_attr(r, loc, name, H5T_INTEGER, H5T_NATIVE_INT, 1, v);
}

int peso_h5_r_attr_i64(peso_h5r *r, hid_t loc, const char *name, int64_t *v)
{
    return peso_h5_r_attr(r, loc, name, H5T_INTEGER, H5T_NATIVE_INT64, 1, v);
}

int peso_h5_r_attr_f64(peso_h5r *r, hid_t loc, const char *name, double *v)
{
    return peso_h5_r_attr(r, loc, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, 1, v);
}

hid_t peso_h5_r_data_open(peso_h5r *r, hid_t loc, const char *name, H5T_class_t cls, int min_rank,
                          int max_rank, int *rank, hsize_t *dims)
{
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0)
        return peso_h5_r_fail_at(r, loc, name, "dataset is missing");
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0)
        return peso_h5_r_fail_at(r, loc, name, "not a dataset");
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    H5T_class_t got = H5Tget_class(t);
    int nd = H5Sget_simple_extent_ndims(sp);
    int rank_ok = nd >= min_rank && nd <= max_rank;
    if (rank_ok)
        H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Tclose(t);
    H5Sclose(sp);
    if (got == cls && rank_ok) {
        *rank = nd;
        return d;
    }
    H5Dclose(d);
    if (got != cls)
        return peso_h5_r_fail_at(r, loc, name, "expected %s %s dataset, found %s", article(cls),
                                 class_name(cls), class_name(got));
    if (min_rank == max_rank)
        return peso_h5_r_fail_at(r, loc, name, "expected %d dimension(s), found %d", min_rank, nd);
    return peso_h5_r_fail_at(r, loc, name, "expected %d..%d dimensions, found %d", min_rank, max_rank, nd);
}

int peso_h5_r_data_read(peso_h5r *r, hid_t d, hid_t mtype, void *buf)
{
    hid_t sp = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    if (n == 0 || H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0)
        return 0;
    return peso_h5_r_fail_at(r, d, NULL, "cannot read dataset");
}

/* Opens the one-dimensional dataset name of class cls and checks its
 * length against expect (< 0: any). */
static hid_t vec_open(peso_h5r *r, hid_t loc, const char *name, H5T_class_t cls, int64_t expect, hsize_t *len)
{
    int rank;
    hid_t d = peso_h5_r_data_open(r, loc, name, cls, 1, 1, &rank, len);
    if (d < 0 || expect < 0 || *len == (hsize_t)expect)
        return d;
    H5Dclose(d);
    return peso_h5_r_fail_at(r, loc, name, "expected shape [%lld], found [%llu]", (long long)expect,
                             (unsigned long long)*len);
}

int peso_h5_r_vec(peso_h5r *r, hid_t loc, const char *name, H5T_class_t cls, hid_t mtype, size_t elt,
                  int64_t expect, void **buf, size_t *n)
{
    hsize_t len;
    hid_t d = vec_open(r, loc, name, cls, expect, &len);
    if (d < 0)
        return -1;
    *buf = peso_malloc((len ? (size_t)len : 1) * elt);
    if (n)
        *n = (size_t)len;
    int rc = peso_h5_r_data_read(r, d, mtype, *buf);
    H5Dclose(d);
    return rc;
}

int peso_h5_r_i32(peso_h5r *r, hid_t loc, const char *name, int64_t expect, int32_t **v, size_t *n)
{
    return peso_h5_r_vec(r, loc, name, H5T_INTEGER, H5T_NATIVE_INT32, sizeof **v, expect, (void **)v, n);
}

int peso_h5_r_i64(peso_h5r *r, hid_t loc, const char *name, int64_t expect, int64_t **v, size_t *n)
{
    return peso_h5_r_vec(r, loc, name, H5T_INTEGER, H5T_NATIVE_INT64, sizeof **v, expect, (void **)v, n);
}

int peso_h5_r_f32(peso_h5r *r, hid_t loc, const char *name, int64_t expect, float **v, size_t *n)
{
    return peso_h5_r_vec(r, loc, name, H5T_FLOAT, H5T_NATIVE_FLOAT, sizeof **v, expect, (void **)v, n);
}

/* The memory type for strings of file type ft: its character set (HDF5
 * converts none), variable length kept, a fixed length given room for a
 * terminating NUL. *fixed: the file's fixed length, 0 when variable. */
static hid_t str_mem_type(hid_t ft, size_t *fixed)
{
    hid_t mt = H5Tcopy(ft);
    *fixed = H5Tis_variable_str(ft) > 0 ? 0 : H5Tget_size(ft);
    if (*fixed) {
        H5Tset_size(mt, *fixed + 1);
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
    }
    return mt;
}

static herr_t read_all(hid_t o, int is_attr, hid_t mt, void *buf)
{
    return is_attr ? H5Aread(o, mt, buf) : H5Dread(o, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
}

/* The n strings of o (an attribute when is_attr, else a dataset; named
 * obj in messages) into new copies out[0..n), "" where nothing was read. */
static int read_strs(peso_h5r *r, hid_t o, int is_attr, const char *obj, size_t n, char **out)
{
    hid_t ft = is_attr ? H5Aget_type(o) : H5Dget_type(o);
    size_t fixed;
    hid_t mt = str_mem_type(ft, &fixed);
    H5Tclose(ft);
    int rc = 0;
    if (fixed) {
        char *buf = peso_calloc(n ? n : 1, fixed + 1);
        if (n && read_all(o, is_attr, mt, buf) < 0)
            rc = peso_h5_r_fail(r, obj, "cannot read strings");
        for (size_t i = 0; i < n; i++)
            out[i] = peso_strdup(buf + i * (fixed + 1));
        free(buf);
    } else {
        char **buf = peso_calloc(n ? n : 1, sizeof *buf);
        if (n && read_all(o, is_attr, mt, buf) < 0)
            rc = peso_h5_r_fail(r, obj, "cannot read strings");
        for (size_t i = 0; i < n; i++) {
            out[i] = peso_strdup(buf[i] ? buf[i] : "");
            H5free_memory(buf[i]);
        }
        free(buf);
    }
    H5Tclose(mt);
    return rc;
}

int peso_h5_r_attr_str(peso_h5r *r, hid_t loc, const char *name, char **out)
{
    char obj[OBJ_MAX];
    attr_path(loc, name, obj);
    hid_t a = attr_open(r, loc, name, obj, H5T_STRING, 1);
    if (a < 0)
        return -1;
    int rc = read_strs(r, a, 1, obj, 1, out);
    H5Aclose(a);
    return rc;
}

int peso_h5_r_strs(peso_h5r *r, hid_t loc, const char *name, int64_t expect, char ***out, size_t *n)
{
    char obj[OBJ_MAX];
    hsize_t len;
    hid_t d = vec_open(r, loc, name, H5T_STRING, expect, &len);
    if (d < 0)
        return -1;
    peso_h5_obj_path(loc, name, obj, sizeof obj);
    *out = peso_calloc(len ? (size_t)len : 1, sizeof **out);
    *n = (size_t)len;
    int rc = read_strs(r, d, 0, obj, (size_t)len, *out);
    H5Dclose(d);
    return rc;
}

int peso_h5_r_str(peso_h5r *r, hid_t loc, const char *name, char **out)
{
    char obj[OBJ_MAX];
    int rank;
    hid_t d = peso_h5_r_data_open(r, loc, name, H5T_STRING, 0, 0, &rank, NULL);
    if (d < 0)
        return -1;
    peso_h5_obj_path(loc, name, obj, sizeof obj);
    int rc = read_strs(r, d, 0, obj, 1, out);
    H5Dclose(d);
    return rc;
}
