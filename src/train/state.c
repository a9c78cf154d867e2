/* A run's state to and from checkpoint files (ckpt/ckpt.h): the model's
 * flat, the past adapters of the cumulative family, InfLoRA's bases and
 * the optimizer, with the checks that refuse a file made for another
 * config. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/internal.h"

#define WRAPPER "base_model.model."

void peso_train_stage_path(char *out, size_t n, const char *dir, int t)
{
    snprintf(out, n, "%s/stage-%d.h5", dir, t);
}

void peso_stage_free(peso_stage *s, int n_modules)
{
    free(s->prev);
    for (int i = 0; i < s->n_past; i++)
        free(s->past[i]);
    free(s->past);
    free(s->alpha);
    if (s->basis)
        for (int i = 0; i < n_modules; i++)
            free(s->basis[i]);
    free(s->basis);
    free(s->basis_k);
    free(s->cov);
    free(s->best);
    memset(s, 0, sizeof *s);
}

peso_flat peso_train_lora_flat(const peso_run *r)
{
    peso_flat f = r->m->flat;
    f.n_views = 2 * (size_t)r->m->lora.n_modules;
    f.numel = r->lora_end;
    return f;
}

peso_flat peso_train_base_flat(const peso_run *r)
{
    peso_flat f = r->m->flat;
    if (r->n_mag)
        f.n_views--;
    return f;
}

static int add_bases(const peso_run *r, const peso_stage *s, peso_ckpt *ck, peso_err *err)
{
    const peso_lora *l = &r->m->lora;
    float *k = peso_malloc((size_t)l->n_modules * sizeof *k);
    for (int i = 0; i < l->n_modules; i++)
        k[i] = (float)s->basis_k[i];
    int64_t shape[2] = {l->n_modules, 0};
    int rc = peso_ckpt_add(ck, "inflora/k", 1, shape, k, err);
    free(k);
    for (int i = 0; rc == 0 && i < l->n_modules; i++) {
        if (!s->basis_k[i])
            continue;
        char path[64];
        snprintf(path, sizeof path, "inflora/basis/%d", i);
        int64_t sh[2] = {s->basis_k[i], l->mods[i].in};
        rc = peso_ckpt_add(ck, path, 2, sh, s->basis[i], err);
    }
    return rc;
}

int peso_train_ckpt_write(peso_run *r, const peso_stage *s, const peso_optim *o, const char *path,
                          peso_ckpt_kind kind, int64_t step, int epoch, int64_t global_step, peso_err *err)
{
    peso_llama *m = r->m;
    peso_ckpt ck;
    peso_ckpt_init(&ck);
    char *config = peso_conf_dump(r->c);
    char fp[17];
    peso_conf_data_fingerprint(r->c, fp);
    peso_ckpt_set_text(&ck, s->t == 1 ? PESO_STAGE1_METHOD : r->meth.label, fp, config);
    free(config);
    peso_ckpt_shape_of(&ck.shape, &m->cfg, &m->lora.conf);
    ck.kind = kind;
    ck.stage = s->t;
    ck.step = step;
    ck.epoch = epoch;
    ck.global_step = global_step;
    float *params = peso_malloc(m->flat.numel * sizeof *params);
    peso_flat own = s->t == 1 ? peso_train_base_flat(r) : m->flat;
    peso_flat lf = peso_train_lora_flat(r);
    int rc = peso_llama_get_params(m, params, err);
    if (rc == 0)
        rc = peso_ckpt_add_flat(&ck, "", &own, params, err);
    for (int i = 0; rc == 0 && i < s->n_past; i++) {
        char group[32];
        snprintf(group, sizeof group, "past/%d", i);
        rc = peso_ckpt_add_flat(&ck, group, &lf, s->past[i], err);
    }
    if (rc == 0 && s->basis)
        rc = add_bases(r, s, &ck, err);
    if (rc == 0 && s->best) {
        float score[2] = {(float)s->best_score, (float)s->best_epoch};
        int64_t two = 2;
        rc = peso_ckpt_add_flat(&ck, "best", &own, s->best, err);
        if (rc == 0)
            rc = peso_ckpt_add(&ck, "best/score", 1, &two, score, err);
    }
    if (rc == 0 && o) {
        float *mm = peso_malloc(o->n * sizeof *mm), *vv = peso_malloc(o->n * sizeof *vv);
        int64_t ostep;
        rc = peso_optim_export(o, mm, vv, &ostep, err);
        if (rc == 0)
            peso_ckpt_set_optim(&ck, mm, vv, o->n, ostep);
        free(mm);
        free(vv);
    }
    if (rc == 0)
        rc = peso_ckpt_write(path, &ck, err);
    free(params);
    peso_ckpt_free(&ck);
    return rc;
}

int peso_train_ckpt_open(peso_run *r, const char *path, int stage1, peso_ckpt *ck, peso_err *err)
{
    if (peso_ckpt_read(path, ck, err) < 0)
        return -1;
    peso_ckpt_expect want = {.method = stage1 ? PESO_STAGE1_METHOD : r->meth.label,
                             .fingerprint = ck->fingerprint};
    peso_ckpt_shape_of(&want.shape, &r->m->cfg, &r->m->lora.conf);
    if (peso_ckpt_check(ck, &want, err) < 0)
        return -1;
    char *diff = peso_conf_run_diff(r->c, ck->config ? ck->config : "", path, stage1, err);
    if (!diff)
        return peso_err_prefix(err, "%s: its stored config", path);
    int rc = 0;
    if (diff[0]) {
        diff[strlen(diff) - 1] = '\0';
        for (char *p = diff; *p; p++)
            if (*p == '\n')
                *p = ';';
        rc = peso_errf(err, "%s was made with another config (checkpoint vs now: %s); use another out_dir or "
                            "restore those settings",
                       path, diff);
    }
    free(diff);
    return rc;
}

static int read_bases(peso_run *r, const peso_ckpt *ck, peso_stage *s, peso_err *err)
{
    const peso_lora *l = &r->m->lora;
    const peso_ckpt_tensor *k = peso_ckpt_find(ck, "inflora/k");
    if (!k)
        return 0;
    if (k->numel != (size_t)l->n_modules)
        return peso_errf(err, "%s: inflora/k has %zu entries, the model has %d modules", ck->path, k->numel,
                         l->n_modules);
    s->basis = peso_calloc((size_t)l->n_modules, sizeof *s->basis);
    s->basis_k = peso_calloc((size_t)l->n_modules, sizeof *s->basis_k);
    for (int i = 0; i < l->n_modules; i++) {
        int in = l->mods[i].in, cap = in - l->conf.rank;
        s->basis[i] = peso_calloc((size_t)(cap > 0 ? cap : 1) * in, sizeof **s->basis);
        s->basis_k[i] = (int)k->data[i];
        if (!s->basis_k[i])
            continue;
        char path[64];
        snprintf(path, sizeof path, "inflora/basis/%d", i);
        const peso_ckpt_tensor *b = peso_ckpt_find(ck, path);
        if (!b || b->numel != (size_t)s->basis_k[i] * in || s->basis_k[i] > cap)
            return peso_errf(err, "%s: %s is missing or not [%d, %d]", ck->path, path, s->basis_k[i], in);
        memcpy(s->basis[i], b->data, b->numel * sizeof *b->data);
    }
    return 0;
}

int peso_train_ckpt_state(peso_run *r, const peso_ckpt *ck, float *params, peso_stage *s, peso_err *err)
{
    peso_flat lf = peso_train_lora_flat(r);
    peso_flat own = ck->stage == 1 ? peso_train_base_flat(r) : r->m->flat;
    if (peso_ckpt_get_flat(ck, "", &own, params, err) < 0)
        return -1;
    char probe[PESO_CKPT_NAME_MAX + 64];
    for (int i = 0;; i++) {
        snprintf(probe, sizeof probe, "past/%d/adapter/%s", i, lf.views[0].name + strlen(WRAPPER));
        if (!peso_ckpt_find(ck, probe))
            break;
        s->past = peso_realloc(s->past, (size_t)(i + 1) * sizeof *s->past);
        s->past[i] = peso_calloc(r->m->flat.numel, sizeof **s->past);
        s->n_past = i + 1;
        char group[32];
        snprintf(group, sizeof group, "past/%d", i);
        if (peso_ckpt_get_flat(ck, group, &lf, s->past[i], err) < 0)
            return -1;
    }
    if (peso_train_ckpt_best(r, ck, s, err) < 0)
        return -1;
    return read_bases(r, ck, s, err);
}

int peso_train_ckpt_best(peso_run *r, const peso_ckpt *ck, peso_stage *s, peso_err *err)
{
    const peso_ckpt_tensor *best = peso_ckpt_find(ck, "best/score");
    if (!best)
        return 0;
    if (best->numel != 2)
        return peso_errf(err, "%s: best/score has %zu entries, expected 2", ck->path, best->numel);
    peso_flat own = ck->stage == 1 ? peso_train_base_flat(r) : r->m->flat;
    free(s->best);
    s->best = peso_calloc(r->m->flat.numel, sizeof *s->best);
    s->best_score = best->data[0];
    s->best_epoch = (int)best->data[1];
    return peso_ckpt_get_flat(ck, "best", &own, s->best, err);
}
