/* Shared HDF5 helpers (see h5.h). */
#include "common/h5.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/atomic.h"

void peso_h5_quiet(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

/* Walking upward starts at the function that detected the failure, whose
 * description says the most, so the first one found is kept. */
static herr_t first_reason(unsigned n, const H5E_error2_t *e, void *data)
{
    (void)n;
    char *buf = data;
    if (!buf[0] && e->desc && e->desc[0])
        snprintf(buf, PESO_H5_REASON, "%s", e->desc);
    return 0;
}

void peso_h5_reason(char buf[PESO_H5_REASON])
{
    buf[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, first_reason, buf);
}

void peso_h5_obj_path(hid_t loc, const char *name, char *buf, size_t n)
{
    char base[PESO_H5_OBJ];
    if (H5Iget_name(loc, base, sizeof base) <= 0)
        snprintf(base, sizeof base, "?");
    if (!name)
        snprintf(buf, n, "%s", base);
    else
        snprintf(buf, n, "%s/%s", strcmp(base, "/") == 0 ? "" : base, name);
}

hid_t peso_h5_vlen_str(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

void peso_h5_w_fail(peso_h5w *w, hid_t loc, const char *name, const char *what)
{
    char p[PESO_H5_OBJ + 64], why[PESO_H5_REASON];
    if (w->failed)
        return;
    /* Naming the object is an HDF5 call, which clears the error stack. */
    peso_h5_reason(why);
    peso_h5_obj_path(loc, name, p, sizeof p);
    peso_errf(w->err, "%s: cannot write %s %s%s%s", w->file, what, p, why[0] ? ": " : "", why);
    w->failed = 1;
}

hid_t peso_h5_w_group(peso_h5w *w, hid_t loc, const char *name)
{
    if (w->failed)
        return -1;
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0)
        peso_h5_w_fail(w, loc, name, "group");
    return g;
}

void peso_h5_close_group(hid_t g)
{
    if (g >= 0)
        H5Gclose(g);
}

void peso_h5_w_attr(peso_h5w *w, hid_t loc, const char *name, hid_t ftype, hid_t mtype, hsize_t n,
                    const void *buf)
{
    if (w->failed)
        return;
    hid_t sp = n ? H5Screate_simple(1, &n, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Awrite(a, mtype, buf) < 0)
        peso_h5_w_fail(w, loc, name, "attribute");
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
}

void peso_h5_w_attr_i32(peso_h5w *w, hid_t loc, const char *name, int32_t v)
{
    peso_h5_w_attr(w, loc, name, H5T_STD_I32LE, H5T_NATIVE_INT32, 0, &v);
}

void peso_h5_w_attr_i64(peso_h5w *w, hid_t loc, const char *name, int64_t v)
{
    peso_h5_w_attr(w, loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &v);
}

void peso_h5_w_attr_f64(peso_h5w *w, hid_t loc, const char *name, double v)
{
    peso_h5_w_attr(w, loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, &v);
}

void peso_h5_w_attr_str(peso_h5w *w, hid_t loc, const char *name, const char *s)
{
    hid_t t = peso_h5_vlen_str();
    const char *v = s ? s : "";
    peso_h5_w_attr(w, loc, name, t, t, 0, &v);
    H5Tclose(t);
}

void peso_h5_w_data(peso_h5w *w, hid_t loc, const char *path, hid_t ftype, hid_t mtype, int rank,
                    const hsize_t *dims, const void *buf)
{
    if (w->failed)
        return;
    hsize_t total = 1;
    for (int i = 0; i < rank; i++)
        total *= dims[i];
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t sp = rank ? H5Screate_simple(rank, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(loc, path, ftype, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    /* An empty dataset has nothing to write (and HDF5 wants a buffer). */
    if (d < 0 || (total && H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0))
        peso_h5_w_fail(w, loc, path, "dataset");
    if (d >= 0)
        H5Dclose(d);
    H5Sclose(sp);
    H5Pclose(lcpl);
}

void peso_h5_w_i32(peso_h5w *w, hid_t loc, const char *name, const int32_t *v, size_t n)
{
    hsize_t d = n;
    peso_h5_w_data(w, loc, name, H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &d, v);
}

void peso_h5_w_i64(peso_h5w *w, hid_t loc, const char *name, const int64_t *v, size_t n)
{
    hsize_t d = n;
    peso_h5_w_data(w, loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &d, v);
}

hid_t peso_h5_create_tmp(const char *path, char *tmp, size_t n, peso_err *err)
{
    char why[PESO_H5_REASON];
    peso_h5_quiet();
    peso_tmp_path(tmp, n, path);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        peso_h5_reason(why);
        return peso_errf(err, "%s: cannot create HDF5 file: %s", tmp, why);
    }
    return f;
}

int peso_h5_commit(peso_h5w *w, hid_t f, const char *tmp, const char *path, peso_err *err)
{
    char why[PESO_H5_REASON];
    if (!w->failed && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) {
        peso_h5_reason(why);
        peso_errf(err, "%s: cannot flush: %s", tmp, why);
        w->failed = 1;
    }
    if (H5Fclose(f) < 0 && !w->failed) {
        peso_h5_reason(why);
        peso_errf(err, "%s: cannot close: %s", tmp, why);
        w->failed = 1;
    }
    if (w->failed) {
        unlink(tmp);
        return -1;
    }
    return peso_commit_file(tmp, path, err);
}
