/* Reads a checkpoint file (layout in ckpt.h) with the typed readers of
 * common/h5.h, so every failure names the file and the object. */
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt_internal.h"
#include "common/h5.h"

static int r_kind(peso_h5r *r, hid_t f, peso_ckpt *ck)
{
    char *k = NULL;
    int rc = peso_h5_r_attr_str(r, f, "kind", &k);
    if (rc == 0 && strcmp(k, peso_ckpt_kind_name(PESO_CKPT_FINAL)) == 0)
        ck->kind = PESO_CKPT_FINAL;
    else if (rc == 0 && strcmp(k, peso_ckpt_kind_name(PESO_CKPT_PARTIAL)) == 0)
        ck->kind = PESO_CKPT_PARTIAL;
    else if (rc == 0)
        rc = peso_h5_r_fail_at(r, f, "@kind", "\"%s\", expected \"final\" or \"partial\"", k);
    free(k);
    return rc;
}

static int r_model(peso_h5r *r, hid_t f, peso_ckpt_shape *s)
{
    hid_t g = peso_h5_r_group(r, f, "model");
    if (g < 0)
        return -1;
    int rc = peso_h5_r_attr_int(r, g, "hidden", &s->hidden) < 0 ||
             peso_h5_r_attr_int(r, g, "layers", &s->layers) < 0 ||
             peso_h5_r_attr_int(r, g, "heads", &s->heads) < 0 ||
             peso_h5_r_attr_int(r, g, "kv_heads", &s->kv_heads) < 0 ||
             peso_h5_r_attr_int(r, g, "head_dim", &s->head_dim) < 0 ||
             peso_h5_r_attr_int(r, g, "vocab", &s->vocab) < 0 ||
             peso_h5_r_attr_int(r, g, "lora_rank", &s->lora_rank) < 0 ||
             peso_h5_r_attr_f64(r, g, "lora_alpha", &s->lora_alpha) < 0 ||
             peso_h5_r_attr(r, g, "lora_targets", H5T_INTEGER, H5T_NATIVE_UINT, 1, &s->lora_targets) < 0;
    H5Gclose(g);
    return rc ? -1 : 0;
}

static int r_header(peso_h5r *r, hid_t f, peso_ckpt *ck)
{
    int fmt;
    if (peso_h5_r_attr_int(r, f, "format_version", &fmt) < 0)
        return -1;
    if (fmt != PESO_CKPT_FORMAT)
        return peso_h5_r_fail_at(r, f, "@format_version", "%d, this build reads %d", fmt, PESO_CKPT_FORMAT);
    if (r_kind(r, f, ck) < 0 || peso_h5_r_attr_int(r, f, "stage", &ck->stage) < 0 ||
        peso_h5_r_attr_i64(r, f, "step", &ck->step) < 0 ||
        peso_h5_r_attr_int(r, f, "epoch", &ck->epoch) < 0 ||
        peso_h5_r_attr_i64(r, f, "global_step", &ck->global_step) < 0 ||
        peso_h5_r_attr_str(r, f, "method", &ck->method) < 0 ||
        peso_h5_r_attr_str(r, f, "fingerprint", &ck->fingerprint) < 0 ||
        peso_h5_r_str(r, f, "config", &ck->config) < 0)
        return -1;
    return r_model(r, f, &ck->shape);
}

static int r_tensor(peso_h5r *r, hid_t f, peso_ckpt *ck, const char *path)
{
    hsize_t dims[PESO_CKPT_MAX_DIMS];
    int nd;
    hid_t d = peso_h5_r_data_open(r, f, path, H5T_FLOAT, 1, PESO_CKPT_MAX_DIMS, &nd, dims);
    if (d < 0)
        return -1;
    int64_t shape[PESO_CKPT_MAX_DIMS];
    size_t numel = 1;
    for (int i = 0; i < nd; i++) {
        shape[i] = (int64_t)dims[i];
        numel *= (size_t)dims[i];
    }
    float *buf = peso_malloc((numel ? numel : 1) * sizeof *buf);
    int rc = peso_h5_r_data_read(r, d, H5T_NATIVE_FLOAT, buf);
    H5Dclose(d);
    if (rc == 0 && peso_ckpt_add(ck, path, nd, shape, buf, r->err) < 0)
        rc = peso_err_prefix(r->err, "%s", r->file);
    free(buf);
    return rc;
}

/* The tensors in the order /tensors lists them. */
static int r_tensors(peso_h5r *r, hid_t f, peso_ckpt *ck)
{
    char **names = NULL;
    size_t n = 0;
    int rc = peso_h5_r_strs(r, f, "tensors", -1, &names, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = r_tensor(r, f, ck, names[i]);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static int r_optim(peso_h5r *r, hid_t f, peso_ckpt *ck)
{
    hid_t g = peso_h5_r_group(r, f, "optim");
    if (g < 0)
        return -1;
    size_t nm = 0, nv = 0;
    int rc = peso_h5_r_attr_i64(r, g, "step", &ck->optim_step) < 0 ||
             peso_h5_r_f32(r, g, "m", -1, &ck->optim_m, &nm) < 0 ||
             peso_h5_r_f32(r, g, "v", -1, &ck->optim_v, &nv) < 0;
    if (!rc && nm != nv)
        rc = peso_h5_r_fail_at(r, g, NULL, "m has %zu entries but v has %zu", nm, nv);
    if (!rc)
        ck->optim_n = nm;
    H5Gclose(g);
    return rc ? -1 : 0;
}

/* Link names of a group, in name order. */
typedef struct names {
    char **v;
    size_t n, cap;
} names;

static herr_t add_name(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)g;
    (void)info;
    names *l = data;
    peso_grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v);
    l->v[l->n++] = peso_strdup(name);
    return 0;
}

static int r_rng(peso_h5r *r, hid_t g, peso_ckpt *ck, const char *name)
{
    uint64_t *s = NULL;
    int rc = peso_h5_r_vec(r, g, name, H5T_INTEGER, H5T_NATIVE_UINT64, sizeof *s, 4, (void **)&s, NULL);
    if (rc == 0) {
        peso_rng st;
        memcpy(st.s, s, sizeof st.s);
        if (peso_ckpt_add_rng(ck, name, &st, r->err) < 0)
            rc = peso_err_prefix(r->err, "%s", r->file);
    }
    free(s);
    return rc;
}

static int r_rngs(peso_h5r *r, hid_t f, peso_ckpt *ck)
{
    hid_t g = peso_h5_r_group(r, f, "rng");
    if (g < 0)
        return -1;
    names l = {0};
    /* Creation order is not tracked, so streams come back by name. */
    int rc = 0;
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, add_name, &l) < 0)
        rc = peso_h5_r_fail_at(r, g, NULL, "cannot list");
    for (size_t i = 0; rc == 0 && i < l.n; i++)
        rc = r_rng(r, g, ck, l.v[i]);
    H5Gclose(g);
    for (size_t i = 0; i < l.n; i++)
        free(l.v[i]);
    free(l.v);
    return rc;
}

int peso_ckpt_read(const char *path, peso_ckpt *ck, peso_err *err)
{
    peso_ckpt_init(ck);
    ck->path = peso_strdup(path);
    peso_h5r r = {path, err};
    hid_t f = peso_h5_r_open(&r, "cannot open as an HDF5 file: missing, truncated or not a checkpoint");
    if (f < 0)
        return -1;
    int rc = r_header(&r, f, ck) < 0 || r_tensors(&r, f, ck) < 0 || r_optim(&r, f, ck) < 0 ||
             r_rngs(&r, f, ck) < 0;
    H5Fclose(f);
    return rc ? -1 : 0;
}
