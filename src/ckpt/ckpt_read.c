/* Reads a checkpoint file (layout in ckpt.h). HDF5's own error printing is
 * switched off; every failure becomes one message naming the file and the
 * object. */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt.h"
#include "common/h5.h"

#define OBJ_MAX (PESO_CKPT_NAME_MAX + 64)

/* A scalar attribute of class cls read as mtype; obj names loc. */
static int r_attr(peso_h5r *r, hid_t loc, const char *obj, const char *name, H5T_class_t cls, hid_t mtype,
                  void *out)
{
    char full[OBJ_MAX];
    snprintf(full, sizeof full, "%s attribute %s", obj, name);
    if (H5Aexists(loc, name) <= 0)
        return peso_h5_r_fail(r, full, "missing");
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0)
        return peso_h5_r_fail(r, full, "cannot open");
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    int ok = H5Tget_class(t) == cls && H5Sget_simple_extent_npoints(sp) == 1;
    H5Tclose(t);
    H5Sclose(sp);
    herr_t rc = ok ? H5Aread(a, mtype, out) : -1;
    H5Aclose(a);
    if (!ok)
        return peso_h5_r_fail(r, full, "expected one %s", cls == H5T_INTEGER ? "integer" : "float");
    return rc < 0 ? peso_h5_r_fail(r, full, "cannot read") : 0;
}

static int r_i32(peso_h5r *r, hid_t loc, const char *obj, const char *name, int *v)
{
    return r_attr(r, loc, obj, name, H5T_INTEGER, H5T_NATIVE_INT, v);
}

static int r_i64(peso_h5r *r, hid_t loc, const char *obj, const char *name, int64_t *v)
{
    return r_attr(r, loc, obj, name, H5T_INTEGER, H5T_NATIVE_INT64, v);
}

/* A variable-length string attribute (name) or scalar dataset (data). */
static int r_vstr(peso_h5r *r, hid_t loc, const char *name, int is_data, char **out)
{
    char full[OBJ_MAX];
    snprintf(full, sizeof full, is_data ? "/%s" : "attribute %s", name);
    if (is_data ? H5Lexists(loc, name, H5P_DEFAULT) <= 0 : H5Aexists(loc, name) <= 0)
        return peso_h5_r_fail(r, full, "missing");
    hid_t o = is_data ? H5Dopen2(loc, name, H5P_DEFAULT) : H5Aopen(loc, name, H5P_DEFAULT);
    if (o < 0)
        return peso_h5_r_fail(r, full, "cannot open");
    hid_t ft = is_data ? H5Dget_type(o) : H5Aget_type(o);
    int ok = H5Tget_class(ft) == H5T_STRING && H5Tis_variable_str(ft) > 0;
    H5Tclose(ft);
    char *s = NULL;
    herr_t rc = -1;
    if (ok) {
        hid_t mt = peso_h5_vlen_str();
        rc = is_data ? H5Dread(o, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, &s) : H5Aread(o, mt, &s);
        H5Tclose(mt);
    }
    if (is_data)
        H5Dclose(o);
    else
        H5Aclose(o);
    if (!ok)
        return peso_h5_r_fail(r, full, "expected a variable-length string");
    if (rc < 0)
        return peso_h5_r_fail(r, full, "cannot read");
    *out = peso_strdup(s ? s : "");
    H5free_memory(s);
    return 0;
}

/* Opens the dataset at path, checks class and rank (rank -1: any, up to
 * PESO_CKPT_MAX_DIMS) and fills dims; -1 after a message. */
static hid_t r_data_open(peso_h5r *r, hid_t loc, const char *path, H5T_class_t cls, int rank, int *got_rank,
                         hsize_t *dims)
{
    char full[OBJ_MAX];
    snprintf(full, sizeof full, "/%s", path);
    if (H5Lexists(loc, path, H5P_DEFAULT) <= 0) {
        peso_h5_r_fail(r, full, "dataset is missing");
        return -1;
    }
    hid_t d = H5Dopen2(loc, path, H5P_DEFAULT);
    if (d < 0) {
        peso_h5_r_fail(r, full, "not a dataset");
        return -1;
    }
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    int cls_ok = H5Tget_class(t) == cls;
    int nd = H5Sget_simple_extent_ndims(sp);
    int rank_ok = rank < 0 ? nd >= 1 && nd <= PESO_CKPT_MAX_DIMS : nd == rank;
    if (rank_ok)
        H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Tclose(t);
    H5Sclose(sp);
    if (!cls_ok || !rank_ok) {
        H5Dclose(d);
        if (rank < 0)
            peso_h5_r_fail(r, full, "expected a float array of 1..%d dimensions", PESO_CKPT_MAX_DIMS);
        else
            peso_h5_r_fail(r, full, "expected a %s array of %d dimension(s)",
                           cls == H5T_FLOAT ? "float" : "integer", rank);
        return -1;
    }
    *got_rank = nd;
    return d;
}

static int r_read(peso_h5r *r, hid_t d, const char *path, hid_t mtype, void *buf)
{
    herr_t rc = H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    H5Dclose(d);
    if (rc < 0) {
        char full[OBJ_MAX];
        snprintf(full, sizeof full, "/%s", path);
        return peso_h5_r_fail(r, full, "cannot read");
    }
    return 0;
}

static int r_kind(peso_h5r *r, hid_t f, peso_ckpt *ck)
{
    char *k = NULL;
    if (r_vstr(r, f, "kind", 0, &k) < 0)
        return -1;
    int rc = 0;
    if (strcmp(k, "final") == 0)
        ck->kind = PESO_CKPT_FINAL;
    else if (strcmp(k, "partial") == 0)
        ck->kind = PESO_CKPT_PARTIAL;
    else
        rc = peso_h5_r_fail(r, "attribute kind", "\"%s\", expected \"final\" or \"partial\"", k);
    free(k);
    return rc;
}

static int r_header(peso_h5r *r, hid_t f, peso_ckpt *ck)
{
    int fmt;
    if (r_i32(r, f, "/", "format_version", &fmt) < 0)
        return -1;
    if (fmt != PESO_CKPT_FORMAT)
        return peso_h5_r_fail(r, "attribute format_version", "%d, this build reads %d", fmt,
                              PESO_CKPT_FORMAT);
    if (r_kind(r, f, ck) < 0 || r_i32(r, f, "/", "stage", &ck->stage) < 0 ||
        r_i64(r, f, "/", "step", &ck->step) < 0 || r_i32(r, f, "/", "epoch", &ck->epoch) < 0 ||
        r_i64(r, f, "/", "global_step", &ck->global_step) < 0 || r_vstr(r, f, "method", 0, &ck->method) < 0 ||
        r_vstr(r, f, "fingerprint", 0, &ck->fingerprint) < 0 || r_vstr(r, f, "config", 1, &ck->config) < 0)
        return -1;
    hid_t g = H5Gopen2(f, "model", H5P_DEFAULT);
    if (g < 0)
        return peso_h5_r_fail(r, "/model", "group is missing");
    peso_ckpt_shape *s = &ck->shape;
    int rc = r_i32(r, g, "/model", "hidden", &s->hidden) < 0 ||
             r_i32(r, g, "/model", "layers", &s->layers) < 0 ||
             r_i32(r, g, "/model", "heads", &s->heads) < 0 ||
             r_i32(r, g, "/model", "kv_heads", &s->kv_heads) < 0 ||
             r_i32(r, g, "/model", "head_dim", &s->head_dim) < 0 ||
             r_i32(r, g, "/model", "vocab", &s->vocab) < 0 ||
             r_i32(r, g, "/model", "lora_rank", &s->lora_rank) < 0 ||
             r_attr(r, g, "/model", "lora_alpha", H5T_FLOAT, H5T_NATIVE_DOUBLE, &s->lora_alpha) < 0 ||
             r_attr(r, g, "/model", "lora_targets", H5T_INTEGER, H5T_NATIVE_UINT, &s->lora_targets) < 0;
    H5Gclose(g);
    return rc ? -1 : 0;
}

static int r_tensor(peso_h5r *r, hid_t f, peso_ckpt *ck, const char *path)
{
    hsize_t dims[PESO_CKPT_MAX_DIMS];
    int nd;
    hid_t d = r_data_open(r, f, path, H5T_FLOAT, -1, &nd, dims);
    if (d < 0)
        return -1;
    int64_t shape[PESO_CKPT_MAX_DIMS];
    size_t numel = 1;
    for (int i = 0; i < nd; i++) {
        shape[i] = (int64_t)dims[i];
        numel *= (size_t)dims[i];
    }
    float *buf = peso_malloc((numel ? numel : 1) * sizeof *buf);
    int rc = r_read(r, d, path, H5T_NATIVE_FLOAT, buf);
    if (rc == 0 && peso_ckpt_add(ck, path, nd, shape, buf, r->err) < 0)
        rc = peso_err_prefix(r->err, "%s", r->file);
    free(buf);
    return rc;
}

static int r_tensors(peso_h5r *r, hid_t f, peso_ckpt *ck)
{
    hsize_t n;
    int nd;
    hid_t d = r_data_open(r, f, "tensors", H5T_STRING, 1, &nd, &n);
    if (d < 0)
        return -1;
    char **names = peso_calloc(n ? n : 1, sizeof *names);
    hid_t mt = peso_h5_vlen_str();
    int rc = r_read(r, d, "tensors", mt, names);
    for (hsize_t i = 0; rc == 0 && i < n; i++)
        rc = r_tensor(r, f, ck, names[i] ? names[i] : "");
    for (hsize_t i = 0; i < n; i++)
        H5free_memory(names[i]);
    H5Tclose(mt);
    free(names);
    return rc;
}

static int r_optim(peso_h5r *r, hid_t f, peso_ckpt *ck)
{
    hsize_t nm, nv;
    int nd;
    hid_t g = H5Gopen2(f, "optim", H5P_DEFAULT);
    if (g < 0)
        return peso_h5_r_fail(r, "/optim", "group is missing");
    int rc = r_i64(r, g, "/optim", "step", &ck->optim_step);
    H5Gclose(g);
    if (rc < 0)
        return -1;
    hid_t dm = r_data_open(r, f, "optim/m", H5T_FLOAT, 1, &nd, &nm);
    if (dm < 0)
        return -1;
    hid_t dv = r_data_open(r, f, "optim/v", H5T_FLOAT, 1, &nd, &nv);
    if (dv < 0) {
        H5Dclose(dm);
        return -1;
    }
    if (nm != nv) {
        H5Dclose(dm);
        H5Dclose(dv);
        return peso_h5_r_fail(r, "/optim", "m has %llu entries but v has %llu", (unsigned long long)nm,
                              (unsigned long long)nv);
    }
    ck->optim_n = nm;
    ck->optim_m = nm ? peso_malloc(nm * sizeof(float)) : NULL;
    ck->optim_v = nm ? peso_malloc(nm * sizeof(float)) : NULL;
    if (!nm) {
        H5Dclose(dm);
        H5Dclose(dv);
        return 0;
    }
    if (r_read(r, dm, "optim/m", H5T_NATIVE_FLOAT, ck->optim_m) < 0) {
        H5Dclose(dv);
        return -1;
    }
    return r_read(r, dv, "optim/v", H5T_NATIVE_FLOAT, ck->optim_v);
}

/* Collects link names into a string list (the skipped-message list type
 * serves as one). */
static herr_t rng_name(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)g;
    (void)info;
    peso_ckpt_skipped *names = data;
    peso_grow((void **)&names->msgs, &names->cap, names->n + 1, sizeof *names->msgs);
    names->msgs[names->n++] = peso_strdup(name);
    return 0;
}

static int r_rngs(peso_h5r *r, hid_t f, peso_ckpt *ck)
{
    hid_t g = H5Gopen2(f, "rng", H5P_DEFAULT);
    if (g < 0)
        return peso_h5_r_fail(r, "/rng", "group is missing");
    peso_ckpt_skipped names = {0};
    /* Creation order is not tracked, so streams come back by name. */
    herr_t it = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, rng_name, &names);
    H5Gclose(g);
    int rc = it < 0 ? peso_h5_r_fail(r, "/rng", "cannot list") : 0;
    for (size_t i = 0; rc == 0 && i < names.n; i++) {
        char path[PESO_CKPT_NAME_MAX + 8];
        hsize_t n;
        int nd;
        snprintf(path, sizeof path, "rng/%s", names.msgs[i]);
        hid_t d = r_data_open(r, f, path, H5T_INTEGER, 1, &nd, &n);
        if (d < 0) {
            rc = -1;
        } else if (n != 4) {
            H5Dclose(d);
            rc = peso_h5_r_fail(r, path, "%llu entries, expected 4", (unsigned long long)n);
        } else {
            peso_rng s;
            rc = r_read(r, d, path, H5T_NATIVE_UINT64, s.s);
            if (rc == 0 && peso_ckpt_add_rng(ck, names.msgs[i], &s, r->err) < 0)
                rc = peso_err_prefix(r->err, "%s", r->file);
        }
    }
    peso_ckpt_skipped_free(&names);
    return rc;
}

int peso_ckpt_read(const char *path, peso_ckpt *ck, peso_err *err)
{
    peso_h5_quiet();
    peso_ckpt_init(ck);
    ck->path = peso_strdup(path);
    peso_h5r r = {path, err};
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return peso_h5_r_fail(&r, "cannot open as HDF5", "missing, truncated or not a checkpoint");
    int rc = r_header(&r, f, ck) < 0 || r_tensors(&r, f, ck) < 0 || r_optim(&r, f, ck) < 0 ||
             r_rngs(&r, f, ck) < 0;
    H5Fclose(f);
    return rc ? -1 : 0;
}
