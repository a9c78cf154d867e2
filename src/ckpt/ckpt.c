/* Checkpoint writer, reader, config check and newest-file search (layout
 * and naming in ckpt.h). HDF5's own error printing is switched off; every
 * failure becomes one message naming the file and the object. */
#include "ckpt/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/atomic.h"
#include "common/h5.h"
#include "model/llama.h"

#define PEFT_PREFIX "base_model.model."
#define OBJ_MAX (PESO_CKPT_NAME_MAX + 64)

static const char *kind_name(peso_ckpt_kind k)
{
    return k == PESO_CKPT_FINAL ? "final" : "partial";
}

void peso_ckpt_init(peso_ckpt *ck)
{
    memset(ck, 0, sizeof *ck);
}

void peso_ckpt_free(peso_ckpt *ck)
{
    for (size_t i = 0; i < ck->n_tensors; i++) {
        free(ck->tensors[i].path);
        free(ck->tensors[i].data);
    }
    for (size_t i = 0; i < ck->n_rngs; i++)
        free(ck->rngs[i].name);
    free(ck->tensors);
    free(ck->rngs);
    free(ck->optim_m);
    free(ck->optim_v);
    free(ck->path);
    free(ck->method);
    free(ck->fingerprint);
    free(ck->config);
    peso_ckpt_init(ck);
}

static void set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = s ? peso_strdup(s) : NULL;
}

void peso_ckpt_set_text(peso_ckpt *ck, const char *method, const char *fingerprint, const char *config)
{
    set_str(&ck->method, method);
    set_str(&ck->fingerprint, fingerprint);
    set_str(&ck->config, config);
}

void peso_ckpt_shape_of(peso_ckpt_shape *s, const peso_llama_config *mc, const peso_lora_conf *lora)
{
    s->hidden = mc->hidden_size;
    s->layers = mc->num_hidden_layers;
    s->heads = mc->num_attention_heads;
    s->kv_heads = mc->num_key_value_heads;
    s->head_dim = mc->head_dim;
    s->vocab = mc->vocab_size;
    s->lora_rank = lora->rank;
    s->lora_alpha = lora->alpha;
    s->lora_targets = lora->targets;
}

/* Segments of [A-Za-z0-9._-] joined by '/', none empty, none "." or "..":
 * names HDF5 takes as they are and h5dump prints unquoted. */
static int path_ok(const char *p)
{
    size_t seg = 0;
    if (!*p)
        return 0;
    for (const char *c = p;; c++) {
        if (*c == '/' || *c == '\0') {
            if (seg == 0 || (seg == 1 && c[-1] == '.') || (seg == 2 && c[-1] == '.' && c[-2] == '.'))
                return 0;
            if (*c == '\0')
                return 1;
            seg = 0;
            continue;
        }
        int ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                 *c == '.' || *c == '_' || *c == '-';
        if (!ok)
            return 0;
        seg++;
    }
}

/* Top-level names the layout itself uses. */
static int reserved(const char *path)
{
    static const char *const names[] = {"tensors", "config", "model", "optim", "rng"};
    size_t len = strcspn(path, "/");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && strncmp(path, names[i], len) == 0)
            return 1;
    return 0;
}

const peso_ckpt_tensor *peso_ckpt_find(const peso_ckpt *ck, const char *path)
{
    for (size_t i = 0; i < ck->n_tensors; i++)
        if (strcmp(ck->tensors[i].path, path) == 0)
            return &ck->tensors[i];
    return NULL;
}

int peso_ckpt_add(peso_ckpt *ck, const char *path, int ndim, const int64_t *shape, const float *data,
                  peso_err *err)
{
    if (strlen(path) >= PESO_CKPT_NAME_MAX || !path_ok(path))
        return peso_errf(err,
                         "checkpoint tensor \"%s\": expected '/'-separated names of [A-Za-z0-9._-] "
                         "shorter than %d characters",
                         path, PESO_CKPT_NAME_MAX);
    if (reserved(path))
        return peso_errf(err, "checkpoint tensor \"%s\": the name is taken by the checkpoint layout", path);
    if (ndim < 1 || ndim > PESO_CKPT_MAX_DIMS)
        return peso_errf(err, "checkpoint tensor %s: %d dimensions, expected 1..%d", path, ndim,
                         PESO_CKPT_MAX_DIMS);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 1)
            return peso_errf(err, "checkpoint tensor %s: dimension %d is %" PRId64 ", expected >= 1", path, d,
                             shape[d]);
        numel *= (size_t)shape[d];
    }
    if (peso_ckpt_find(ck, path))
        return peso_errf(err, "checkpoint tensor %s added twice", path);
    size_t plen = strlen(path);
    for (size_t i = 0; i < ck->n_tensors; i++) {
        /* A dataset cannot also be a group above another one. */
        const char *q = ck->tensors[i].path;
        size_t qlen = strlen(q);
        if ((qlen < plen && strncmp(q, path, qlen) == 0 && path[qlen] == '/') ||
            (plen < qlen && strncmp(q, path, plen) == 0 && q[plen] == '/'))
            return peso_errf(err, "checkpoint tensor %s: clashes with tensor %s (one would be a group)", path,
                             q);
    }
    peso_grow((void **)&ck->tensors, &ck->cap_tensors, ck->n_tensors + 1, sizeof *ck->tensors);
    peso_ckpt_tensor *t = &ck->tensors[ck->n_tensors++];
    memset(t, 0, sizeof *t);
    t->path = peso_strdup(path);
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->numel = numel;
    t->data = peso_malloc(numel * sizeof *t->data);
    memcpy(t->data, data, numel * sizeof *t->data);
    return 0;
}

/* The tensor path of a flat view under group. */
static int view_path(char *buf, size_t n, const char *group, const char *view, peso_err *err)
{
    const char *sep = group[0] ? "/" : "";
    size_t pl = strlen(PEFT_PREFIX);
    int w;
    if (strncmp(view, PEFT_PREFIX, pl) == 0)
        w = snprintf(buf, n, "%s%sadapter/%s", group, sep, view + pl);
    else if (strcmp(view, PESO_LLAMA_EMBED_NEW) == 0)
        w = snprintf(buf, n, "%s%snew_rows/embed", group, sep);
    else if (strcmp(view, PESO_LLAMA_HEAD_NEW) == 0)
        w = snprintf(buf, n, "%s%snew_rows/head", group, sep);
    else if (strcmp(view, PESO_LLAMA_MAGNITUDES) == 0)
        w = snprintf(buf, n, "%s%smagnitude", group, sep);
    else
        return peso_errf(err, "flat view %s: neither a LoRA key (%s...) nor %s / %s / %s", view, PEFT_PREFIX,
                         PESO_LLAMA_EMBED_NEW, PESO_LLAMA_HEAD_NEW, PESO_LLAMA_MAGNITUDES);
    if (w < 0 || (size_t)w >= n)
        return peso_errf(err, "flat view %s under \"%s\": tensor path too long", view, group);
    return 0;
}

int peso_ckpt_add_flat(peso_ckpt *ck, const char *group, const peso_flat *flat, const float *buf,
                       peso_err *err)
{
    char p[PESO_CKPT_NAME_MAX];
    for (size_t i = 0; i < flat->n_views; i++) {
        const peso_view *v = &flat->views[i];
        int64_t shape[PESO_CKPT_MAX_DIMS];
        for (int d = 0; d < v->ndim; d++)
            shape[d] = v->shape[d];
        if (view_path(p, sizeof p, group, v->name, err) < 0 ||
            peso_ckpt_add(ck, p, v->ndim, shape, buf + v->offset, err) < 0)
            return -1;
    }
    return 0;
}

int peso_ckpt_get_flat(const peso_ckpt *ck, const char *group, const peso_flat *flat, float *buf,
                       peso_err *err)
{
    char p[PESO_CKPT_NAME_MAX];
    const char *file = ck->path ? ck->path : "checkpoint";
    for (size_t i = 0; i < flat->n_views; i++) {
        const peso_view *v = &flat->views[i];
        if (view_path(p, sizeof p, group, v->name, err) < 0)
            return -1;
        const peso_ckpt_tensor *t = peso_ckpt_find(ck, p);
        if (!t)
            return peso_errf(err, "%s: /%s is missing (flat view %s)", file, p, v->name);
        int same = t->ndim == v->ndim;
        for (int d = 0; same && d < v->ndim; d++)
            same = t->shape[d] == v->shape[d];
        if (!same) {
            char a[96] = "", b[96] = "";
            for (int d = 0; d < t->ndim; d++)
                snprintf(a + strlen(a), sizeof a - strlen(a), "%s%" PRId64, d ? "x" : "", t->shape[d]);
            for (int d = 0; d < v->ndim; d++)
                snprintf(b + strlen(b), sizeof b - strlen(b), "%s%d", d ? "x" : "", v->shape[d]);
            return peso_errf(err, "%s: /%s has shape %s, the model's view %s is %s", file, p, a, v->name, b);
        }
        memcpy(buf + v->offset, t->data, t->numel * sizeof *buf);
    }
    return 0;
}

void peso_ckpt_set_optim(peso_ckpt *ck, const float *m, const float *v, size_t n, int64_t step)
{
    free(ck->optim_m);
    free(ck->optim_v);
    ck->optim_m = n ? peso_malloc(n * sizeof(float)) : NULL;
    ck->optim_v = n ? peso_malloc(n * sizeof(float)) : NULL;
    if (n) {
        memcpy(ck->optim_m, m, n * sizeof(float));
        memcpy(ck->optim_v, v, n * sizeof(float));
    }
    ck->optim_n = n;
    ck->optim_step = step;
}

const peso_rng *peso_ckpt_find_rng(const peso_ckpt *ck, const char *name)
{
    for (size_t i = 0; i < ck->n_rngs; i++)
        if (strcmp(ck->rngs[i].name, name) == 0)
            return &ck->rngs[i].state;
    return NULL;
}

int peso_ckpt_add_rng(peso_ckpt *ck, const char *name, const peso_rng *r, peso_err *err)
{
    if (strlen(name) >= PESO_CKPT_NAME_MAX || !path_ok(name) || strchr(name, '/'))
        return peso_errf(err, "checkpoint RNG \"%s\": expected one name of [A-Za-z0-9._-]", name);
    if (peso_ckpt_find_rng(ck, name))
        return peso_errf(err, "checkpoint RNG %s added twice", name);
    peso_grow((void **)&ck->rngs, &ck->cap_rngs, ck->n_rngs + 1, sizeof *ck->rngs);
    ck->rngs[ck->n_rngs].name = peso_strdup(name);
    ck->rngs[ck->n_rngs].state = *r;
    ck->n_rngs++;
    return 0;
}

/* ---- writer (the peso_h5w context keeps the first failure) ---- */

static void w_model(peso_h5w *w, hid_t f, const peso_ckpt_shape *s)
{
    hid_t g = peso_h5_w_group(w, f, "model");
    peso_h5_w_attr_i32(w, g, "hidden", s->hidden);
    peso_h5_w_attr_i32(w, g, "layers", s->layers);
    peso_h5_w_attr_i32(w, g, "heads", s->heads);
    peso_h5_w_attr_i32(w, g, "kv_heads", s->kv_heads);
    peso_h5_w_attr_i32(w, g, "head_dim", s->head_dim);
    peso_h5_w_attr_i32(w, g, "vocab", s->vocab);
    peso_h5_w_attr_i32(w, g, "lora_rank", s->lora_rank);
    peso_h5_w_attr(w, g, "lora_alpha", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, &s->lora_alpha);
    peso_h5_w_attr(w, g, "lora_targets", H5T_STD_U32LE, H5T_NATIVE_UINT, 0, &s->lora_targets);
    peso_h5_close_group(g);
}

static void w_tensors(peso_h5w *w, hid_t f, const peso_ckpt *ck)
{
    const char **names = peso_malloc((ck->n_tensors + 1) * sizeof *names);
    for (size_t i = 0; i < ck->n_tensors; i++) {
        const peso_ckpt_tensor *t = &ck->tensors[i];
        hsize_t dims[PESO_CKPT_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++)
            dims[d] = (hsize_t)t->shape[d];
        peso_h5_w_data(w, f, t->path, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, t->ndim, dims, t->data);
        names[i] = t->path;
    }
    hid_t st = peso_h5_vlen_str();
    hsize_t n = ck->n_tensors;
    peso_h5_w_data(w, f, "tensors", st, st, 1, &n, names);
    H5Tclose(st);
    free(names);
}

static void w_optim_rng(peso_h5w *w, hid_t f, const peso_ckpt *ck)
{
    hid_t g = peso_h5_w_group(w, f, "optim");
    hsize_t n = ck->optim_n;
    peso_h5_w_attr_i64(w, g, "step", ck->optim_step);
    peso_h5_w_data(w, g, "m", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &n, ck->optim_m);
    peso_h5_w_data(w, g, "v", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &n, ck->optim_v);
    peso_h5_close_group(g);
    g = peso_h5_w_group(w, f, "rng");
    hsize_t four = 4;
    for (size_t i = 0; i < ck->n_rngs; i++)
        peso_h5_w_data(w, g, ck->rngs[i].name, H5T_STD_U64LE, H5T_NATIVE_UINT64, 1, &four,
                       ck->rngs[i].state.s);
    peso_h5_close_group(g);
}

int peso_ckpt_write(const char *path, const peso_ckpt *ck, peso_err *err)
{
    char tmp[PESO_PATH_MAX];
    hid_t f = peso_h5_create_tmp(path, tmp, sizeof tmp, err);
    if (f < 0)
        return -1;
    peso_h5w w = {path, err, 0};
    peso_h5_w_attr_i32(&w, f, "format_version", PESO_CKPT_FORMAT);
    peso_h5_w_attr_str(&w, f, "kind", kind_name(ck->kind));
    peso_h5_w_attr_i32(&w, f, "stage", ck->stage);
    peso_h5_w_attr_i64(&w, f, "step", ck->step);
    peso_h5_w_attr_i32(&w, f, "epoch", ck->epoch);
    peso_h5_w_attr_i64(&w, f, "global_step", ck->global_step);
    peso_h5_w_attr_str(&w, f, "method", ck->method);
    peso_h5_w_attr_str(&w, f, "fingerprint", ck->fingerprint);
    hid_t st = peso_h5_vlen_str();
    const char *conf = ck->config ? ck->config : "";
    peso_h5_w_data(&w, f, "config", st, st, 0, NULL, &conf);
    H5Tclose(st);
    w_model(&w, f, &ck->shape);
    w_tensors(&w, f, ck);
    w_optim_rng(&w, f, ck);
    return peso_h5_commit(&w, f, tmp, path, err);
}

/* ---- reader ---- */

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

/* ---- config check ---- */

static void targets_text(char *buf, size_t n, unsigned mask)
{
    buf[0] = '\0';
    for (int p = 0; p < PESO_LORA_NPROJ; p++)
        if (mask & (1u << p))
            snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", buf[0] ? "," : "",
                     peso_lora_proj_name((peso_lora_proj)p));
    if (mask & ~PESO_LORA_ALL)
        snprintf(buf + strlen(buf), n - strlen(buf), "%s0x%x", buf[0] ? "," : "", mask & ~PESO_LORA_ALL);
    if (!buf[0])
        snprintf(buf, n, "none");
}

static void add_diff(char *msg, size_t n, int *count, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void add_diff(char *msg, size_t n, int *count, const char *fmt, ...)
{
    size_t len = strlen(msg);
    if (*count)
        len += (size_t)snprintf(msg + len, len < n ? n - len : 0, "; ");
    va_list ap;
    va_start(ap, fmt);
    if (len < n)
        vsnprintf(msg + len, n - len, fmt, ap);
    va_end(ap);
    (*count)++;
}

static int str_eq(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

int peso_ckpt_check(const peso_ckpt *have, const peso_ckpt_expect *want, peso_err *err)
{
    char msg[PESO_ERR_MSG - 256] = "";
    int n = 0;
    const peso_ckpt_shape *h = &have->shape, *w = &want->shape;
    const struct {
        const char *name;
        int h, w;
    } ints[] = {{"model hidden", h->hidden, w->hidden},       {"model layers", h->layers, w->layers},
                {"model heads", h->heads, w->heads},          {"model kv_heads", h->kv_heads, w->kv_heads},
                {"model head_dim", h->head_dim, w->head_dim}, {"model vocab", h->vocab, w->vocab},
                {"lora rank", h->lora_rank, w->lora_rank}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (ints[i].h != ints[i].w)
            add_diff(msg, sizeof msg, &n, "%s %d vs %d", ints[i].name, ints[i].h, ints[i].w);
    if (h->lora_alpha != w->lora_alpha)
        add_diff(msg, sizeof msg, &n, "lora alpha %.17g vs %.17g", h->lora_alpha, w->lora_alpha);
    if (h->lora_targets != w->lora_targets) {
        char a[128], b[128];
        targets_text(a, sizeof a, h->lora_targets);
        targets_text(b, sizeof b, w->lora_targets);
        add_diff(msg, sizeof msg, &n, "lora targets %s vs %s", a, b);
    }
    if (!str_eq(have->method, want->method))
        add_diff(msg, sizeof msg, &n, "method %s vs %s", have->method ? have->method : "",
                 want->method ? want->method : "");
    if (!str_eq(have->fingerprint, want->fingerprint))
        add_diff(msg, sizeof msg, &n, "data fingerprint %s vs %s", have->fingerprint ? have->fingerprint : "",
                 want->fingerprint ? want->fingerprint : "");
    if (n == 0)
        return 0;
    return peso_errf(err, "%s: checkpoint does not match the config (checkpoint vs config): %s",
                     have->path ? have->path : "checkpoint", msg);
}

/* ---- newest checkpoint ---- */

void peso_ckpt_skipped_free(peso_ckpt_skipped *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->msgs[i]);
    free(s->msgs);
    memset(s, 0, sizeof *s);
}

static void skip(peso_ckpt_skipped *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void skip(peso_ckpt_skipped *s, const char *fmt, ...)
{
    if (!s)
        return;
    char buf[PESO_ERR_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    peso_grow((void **)&s->msgs, &s->cap, s->n + 1, sizeof *s->msgs);
    s->msgs[s->n++] = peso_strdup(buf);
}

/* A checkpoint name: stage-<t>.h5 or stage-<t>-step-<s>.h5 (decimal
 * digits only); *step = INT64_MAX for a final one, so it sorts last. */
typedef struct cand {
    char *name;
    int stage;
    int64_t step;
} cand;

static int parse_digits(const char **p, int64_t max, int64_t *v)
{
    const char *c = *p;
    int64_t x = 0;
    if (*c < '0' || *c > '9')
        return 0;
    for (; *c >= '0' && *c <= '9'; c++) {
        if (x > (max - (*c - '0')) / 10)
            return 0;
        x = x * 10 + (*c - '0');
    }
    *p = c;
    *v = x;
    return 1;
}

static int parse_name(const char *name, int *stage, int64_t *step)
{
    const char *p = name;
    int64_t t, s = INT64_MAX;
    if (strncmp(p, "stage-", 6) != 0)
        return 0;
    p += 6;
    if (!parse_digits(&p, INT32_MAX, &t))
        return 0;
    if (strncmp(p, "-step-", 6) == 0) {
        p += 6;
        if (!parse_digits(&p, INT64_MAX - 1, &s))
            return 0;
    }
    if (strcmp(p, ".h5") != 0)
        return 0;
    *stage = (int)t;
    *step = s;
    return 1;
}

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->stage != y->stage)
        return x->stage > y->stage ? -1 : 1;
    if (x->step != y->step)
        return x->step > y->step ? -1 : 1;
    return 0;
}

static int list_cands(const char *dir, cand **out, size_t *n_out, peso_ckpt_skipped *skipped, peso_err *err)
{
    DIR *d = opendir(dir);
    *out = NULL;
    *n_out = 0;
    if (!d) {
        if (errno == ENOENT)
            return 0;
        return peso_errf(err, "%s: cannot list checkpoints: %s", dir, strerror(errno));
    }
    cand *c = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int t;
        int64_t s;
        if (strncmp(e->d_name, "stage-", 6) == 0 && strstr(e->d_name, ".tmp."))
            skip(skipped, "%s/%s: temporary file of an unfinished write, ignored", dir, e->d_name);
        if (!parse_name(e->d_name, &t, &s))
            continue;
        peso_grow((void **)&c, &cap, n + 1, sizeof *c);
        c[n].name = peso_strdup(e->d_name);
        c[n].stage = t;
        c[n].step = s;
        n++;
    }
    closedir(d);
    qsort(c, n, sizeof *c, cand_cmp);
    *out = c;
    *n_out = n;
    return 0;
}

int peso_ckpt_newest(const char *out_dir, int *stage, int64_t *step, char *path, size_t path_n,
                     peso_ckpt_skipped *skipped, peso_err *err)
{
    cand *c = NULL;
    size_t n = 0;
    *stage = -1;
    *step = -1;
    if (path_n)
        path[0] = '\0';
    if (list_cands(out_dir, &c, &n, skipped, err) < 0)
        return -1;
    for (size_t i = 0; i < n && *stage < 0; i++) {
        char p[PESO_PATH_MAX];
        int w = snprintf(p, sizeof p, "%s/%s", out_dir, c[i].name);
        peso_ckpt ck;
        peso_err e;
        if (w < 0 || (size_t)w >= sizeof p || (size_t)w >= path_n) {
            skip(skipped, "%s/%s: path too long, ignored", out_dir, c[i].name);
            continue;
        }
        int want_kind = c[i].step == INT64_MAX ? PESO_CKPT_FINAL : PESO_CKPT_PARTIAL;
        if (peso_ckpt_read(p, &ck, &e) < 0) {
            skip(skipped, "%s (ignored)", e.msg);
        } else if (ck.stage != c[i].stage || (int)ck.kind != want_kind ||
                   (want_kind == PESO_CKPT_PARTIAL && ck.step != c[i].step)) {
            /* A renamed or copied file would resume from the wrong place. */
            skip(skipped,
                 "%s: holds the %s checkpoint of stage %d step %" PRId64 ", not what its name says "
                 "(ignored)",
                 p, kind_name(ck.kind), ck.stage, ck.step);
        } else {
            *stage = c[i].stage;
            *step = c[i].step == INT64_MAX ? -1 : c[i].step;
            memcpy(path, p, (size_t)w + 1);
        }
        peso_ckpt_free(&ck);
    }
    for (size_t i = 0; i < n; i++)
        free(c[i].name);
    free(c);
    return 0;
}
