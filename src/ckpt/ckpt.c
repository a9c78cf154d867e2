/* The checkpoint in memory: its tensors (added one by one or as the views
 * of a flat buffer, under the path rules of the layout in ckpt.h), the
 * optimizer moments and the RNG streams. The file itself is written by
 * ckpt_write.c and read by ckpt_read.c. */
#include "ckpt/ckpt.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt_internal.h"
#include "model/llama.h"

#define PEFT_PREFIX "base_model.model."

const char *peso_ckpt_kind_name(peso_ckpt_kind k)
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
