/* Writes a checkpoint file (layout in ckpt.h) through the writer context
 * of common/h5.h, which keeps the first failure, under a temporary name
 * renamed when whole. */
#include <hdf5.h>
#include <stdlib.h>

#include "ckpt/ckpt_internal.h"
#include "common/atomic.h"
#include "common/h5.h"

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
    peso_h5_w_attr_str(&w, f, "kind", peso_ckpt_kind_name(ck->kind));
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
