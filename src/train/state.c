/* A run's state to and from checkpoint files (ckpt/ckpt.h): the model's
 * flat, the method's own content (method/method.h), the best epoch and
 * the optimizer, with the checks that refuse a file made for another
 * config; the partial checkpoints of a stage and resuming from one. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/internal.h"

void peso_train_stage_path(char *out, size_t n, const char *dir, int t)
{
    snprintf(out, n, "%s/stage-%d.h5", dir, t);
}

void peso_stage_free(peso_stage *s)
{
    peso_method_stage_free(&s->ms);
    free(s->best);
    memset(s, 0, sizeof *s);
}

peso_flat peso_train_base_flat(const peso_run *r)
{
    peso_flat f = r->m->flat;
    if (r->m->n_magnitudes)
        f.n_views--;
    return f;
}

const char *peso_train_stage_dir(const peso_run *r, int t)
{
    return t == 1 ? r->c->out_dir : r->run_dir;
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
    peso_ckpt_set_text(&ck, s->t == 1 ? PESO_STAGE1_METHOD : r->label, fp, config);
    free(config);
    peso_ckpt_shape_of(&ck.shape, &m->cfg, &m->lora.conf);
    ck.kind = kind;
    ck.stage = s->t;
    ck.step = step;
    ck.epoch = epoch;
    ck.global_step = global_step;
    float *params = peso_malloc(m->flat.numel * sizeof *params);
    peso_flat own = s->t == 1 ? peso_train_base_flat(r) : m->flat;
    int rc = peso_llama_get_params(m, params, err);
    if (rc == 0)
        rc = peso_ckpt_add_flat(&ck, "", &own, params, err);
    if (rc == 0 && s->t >= 2 && r->meth->save)
        rc = r->meth->save(&s->ms, &ck, err);
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
    peso_ckpt_expect want = {.method = stage1 ? PESO_STAGE1_METHOD : r->label,
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

int peso_train_ckpt_state(peso_run *r, const peso_ckpt *ck, float *params, peso_stage *s, peso_err *err)
{
    peso_flat own = ck->stage == 1 ? peso_train_base_flat(r) : r->m->flat;
    if (peso_ckpt_get_flat(ck, "", &own, params, err) < 0 || peso_train_ckpt_best(r, ck, s, err) < 0)
        return -1;
    return r->meth->load ? r->meth->load(&s->ms, ck, err) : 0;
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

/* ---- partial checkpoints ---- */

int peso_train_write_partial(peso_trainer *tr, int64_t step, int epoch, peso_err *err)
{
    char path[sizeof tr->r->run_dir + 64];
    snprintf(path, sizeof path, "%s/stage-%d-step-%lld.h5", peso_train_stage_dir(tr->r, tr->s.t), tr->s.t,
             (long long)step);
    if (peso_train_ckpt_write(tr->r, &tr->s, &tr->opt, path, PESO_CKPT_PARTIAL, step, epoch, tr->opt.step, err) < 0)
        return -1;
    if (tr->r->log)
        fprintf(tr->r->log, "stage %d: checkpoint %s\n", tr->s.t, path);
    return 0;
}

void peso_train_remove_partials(const peso_run *r, int t)
{
    const char *dir = peso_train_stage_dir(r, t);
    DIR *d = opendir(dir);
    if (!d)
        return;
    char prefix[32];
    snprintf(prefix, sizeof prefix, "stage-%d-step-", t);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, prefix, strlen(prefix)) || n < 3 || strcmp(e->d_name + n - 3, ".h5"))
            continue;
        char path[PESO_CONF_PATH + 300];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

int peso_train_resume_from(peso_trainer *tr, const char *path, int64_t *step, peso_err *err)
{
    peso_run *r = tr->r;
    peso_ckpt ck;
    int rc = peso_train_ckpt_open(r, path, tr->s.t == 1, &ck, err);
    float *params = peso_malloc(r->m->flat.numel * sizeof *params);
    if (rc == 0)
        rc = peso_llama_get_params(r->m, params, err);
    peso_flat own = tr->s.t == 1 ? peso_train_base_flat(r) : r->m->flat;
    if (rc == 0)
        rc = peso_ckpt_get_flat(&ck, "", &own, params, err);
    if (rc == 0)
        rc = peso_llama_set_params(r->m, params, err);
    if (rc == 0 && ck.optim_n != r->m->flat.numel)
        rc = peso_errf(err, "%s: optimizer state of %zu floats, the model has %zu", path, ck.optim_n,
                       r->m->flat.numel);
    if (rc == 0)
        rc = peso_optim_import(&tr->opt, ck.optim_m, ck.optim_v, ck.optim_n, ck.optim_step, err);
    if (rc == 0)
        rc = peso_train_ckpt_best(r, &ck, &tr->s, err);
    *step = ck.step;
    peso_ckpt_free(&ck);
    free(params);
    if (rc == 0 && r->log)
        fprintf(r->log, "stage %d: resuming from %s (step %lld)\n", tr->s.t, path, (long long)*step);
    return rc;
}
