/* The stage loop: a stage set up (setup.c), trained step by step
 * (step.c) with partial checkpoints, signals and epoch selection, its
 * final checkpoint written and evaluated; and the stages of a run. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic.h"
#include "common/clock.h"
#include "common/file.h"
#include "train/internal.h"

/* ---- a whole stage ---- */

static int run_steps(peso_trainer *tr, int64_t start, peso_err *err)
{
    peso_run *r = tr->r;
    const peso_conf *c = r->c;
    int t = tr->s.t;
    int64_t step = 0;
    tr->t0 = peso_now();
    for (int e = 0; e < tr->epochs; e++) {
        peso_steps st;
        if (peso_steps_plan(&st, peso_train_pairs(r, t), &r->prompt, c->seed, t, e, (size_t)c->train.max_windows,
                            c->train.batch_tokens, err) < 0)
            return -1;
        for (size_t i = 0; i < st.n_steps; i++, step++) {
            if (step < start)
                continue;
            peso_step_out o;
            if (peso_train_step(tr, &st, i, step, &o, err) < 0) {
                peso_steps_free(&st);
                return -1;
            }
            tr->tokens_done += o.tokens;
            int64_t done = step + 1;
            if (i + 1 == st.n_steps && peso_train_select_epoch(tr, e, err) < 0) {
                peso_steps_free(&st);
                return -1;
            }
            if (done % c->train.log_every == 0 || done == tr->total_steps || done == start + 1)
                peso_train_progress(tr, e, done, start, &o);
            int stop = o.stop && done < tr->total_steps;
            int ck = c->ckpt.every_steps > 0 && done % c->ckpt.every_steps == 0 && done < tr->total_steps;
            if ((ck || stop) && r->par->grank == 0 && peso_train_write_partial(tr, done, e, err) < 0) {
                peso_steps_free(&st);
                return -1;
            }
            if (stop) {
                if (r->log)
                    fprintf(r->log, "stage %d: stopped by signal %d after step %lld; rerun with --resume\n", t,
                            peso_train_stop_signal() ? peso_train_stop_signal() : SIGTERM, (long long)done);
                peso_steps_free(&st);
                return PESO_TRAIN_EXIT_REQUEUE;
            }
        }
        peso_steps_free(&st);
    }
    return 0;
}

static int run_stage(peso_run *r, int t, const char *partial, peso_err *err)
{
    peso_trainer tr;
    memset(&tr, 0, sizeof tr);
    tr.r = r;
    tr.s.t = t;
    int64_t start = 0;
    int rc = peso_trainer_setup(&tr, err);
    if (rc == 0 && partial)
        rc = peso_train_resume_from(&tr, partial, &start, err);
    if (rc == 0 && r->log)
        fprintf(r->log, "stage %d (%s): %zu training windows, %d epoch(s), %lld steps, lr %.3g\n", t,
                t == 1 ? PESO_STAGE1_METHOD : r->label, peso_train_pairs(r, t)->n, tr.epochs,
                (long long)tr.total_steps, tr.sched.lr);
    if (rc == 0)
        rc = run_steps(&tr, start, err);
    if (rc == 0)
        rc = peso_train_keep_best(&tr, err);
    if (rc == 0 && t >= 2 && r->meth->end)
        rc = r->meth->end(&tr.s.ms, err);
    char path[sizeof r->run_dir + 32];
    peso_train_stage_path(path, sizeof path, peso_train_stage_dir(r, t), t);
    if (rc == 0 && r->par->grank == 0)
        rc = peso_train_ckpt_write(r, &tr.s, &tr.opt, path, PESO_CKPT_FINAL, tr.total_steps, tr.epochs - 1,
                                   tr.opt.step, err);
    /* the next stage's set-up reads this file on every train rank */
    if (rc == 0)
        rc = peso_par_barrier(r->par, err);
    if (rc == 0 && r->par->grank == 0) {
        peso_train_remove_partials(r, t);
        if (r->log)
            fprintf(r->log, "stage %d: done in %.1fs, checkpoint %s\n", t, peso_now() - tr.t0, path);
    }
    peso_trainer_free(&tr);
    return rc;
}

/* ---- evaluation ---- */

static int listed(const int64_t *v, int n, int x)
{
    for (int i = 0; i < n; i++)
        if (v[i] == x)
            return 1;
    return 0;
}

/* Evaluates stage t from its final checkpoint: the evaluation group
 * does it, while this group goes on (train rank 0 sends the request), or
 * without one the train group itself. */
static int evaluate_file(peso_run *r, int t, const char *ckpt, const char *run, const char *label, peso_err *err)
{
    if (r->par->n_eval)
        return r->par->grank == 0 ? peso_par_send_eval(r->par, t, ckpt, err) : 0;
    if (peso_train_load_checkpoint(r, ckpt, err) < 0)
        return -1;
    int rc = peso_train_evaluate(r, t, run, label, err);
    peso_method_model_plain(r->m);
    return rc;
}

/* ---- the stages of a run ---- */

static int stage_one(peso_run *r, const peso_train_opts *o, peso_err *err)
{
    const peso_conf *c = r->c;
    char path[PESO_CONF_PATH + 32];
    peso_train_stage_path(path, sizeof path, c->out_dir, 1);
    if (peso_file_exists(path)) {
        peso_ckpt ck;
        int rc = peso_train_ckpt_open(r, path, 1, &ck, err);
        peso_ckpt_free(&ck);
        if (rc < 0)
            return -1;
        if (r->log)
            fprintf(r->log, "stage 1: reusing %s\n", path);
    } else {
        int st;
        int64_t step;
        char partial[PESO_CONF_PATH + 64];
        if (peso_ckpt_newest(c->out_dir, &st, &step, partial, sizeof partial, NULL, err) < 0)
            return -1;
        if (st == 1 && !o->resume)
            return peso_errf(err, "%s exists: pass --resume to continue stage 1, or remove it", partial);
        int rc = run_stage(r, 1, st == 1 ? partial : NULL, err);
        if (rc)
            return rc;
    }
    if (c->eval.after_stage && listed(c->eval.stages, c->eval.n_stages, 1))
        return evaluate_file(r, 1, path, PESO_STAGE1_METHOD, PESO_STAGE1_METHOD, err);
    return 0;
}

static int train_stages(peso_run *r, const peso_train_opts *o, peso_err *err);

int peso_train(peso_run *r, const peso_train_opts *o, peso_err *err)
{
    int rc = train_stages(r, o, err);
    if (rc == 0 && !r->par->n_eval)
        peso_train_eval_summary(r);
    /* the evaluation group finishes what it was sent, then stops */
    if (rc >= 0 && r->par->n_eval && r->par->grank == 0 && peso_par_send_eval(r->par, 0, "", err) < 0)
        return -1;
    return rc;
}

static int train_stages(peso_run *r, const peso_train_opts *o, peso_err *err)
{
    const peso_conf *c = r->c;
    int T = r->n_blocks;
    int lo = o->stage_lo ? o->stage_lo : 1, hi = o->stage_hi ? o->stage_hi : T;
    if (lo < 1 || hi > T || lo > hi)
        return peso_errf(err, "--stages %d-%d: the dataset has stages 1-%d", lo, hi, T);
    if (lo == 1) {
        int rc = stage_one(r, o, err);
        if (rc)
            return rc;
    }
    if (hi < 2)
        return 0;
    char s1[PESO_CONF_PATH + 32];
    peso_train_stage_path(s1, sizeof s1, c->out_dir, 1);
    if (r->meth->flags & PESO_METHOD_FROZEN) {
        for (int t = lo > 2 ? lo : 2; t <= hi && c->eval.after_stage; t++)
            if (evaluate_file(r, t, s1, r->run, r->label, err) < 0)
                return -1;
        return 0;
    }
    if (peso_mkdir_p(r->run_dir, err) < 0)
        return -1;
    int k;
    int64_t step;
    char newest[sizeof r->run_dir + 64];
    if (peso_ckpt_newest(r->run_dir, &k, &step, newest, sizeof newest, NULL, err) < 0)
        return -1;
    if (k >= (lo > 2 ? lo : 2) && !o->resume)
        return peso_errf(err, "%s already holds %s: pass --resume to continue the run, or remove it", r->run_dir,
                         newest);
    for (int t = lo > 2 ? lo : 2; t <= hi; t++) {
        char path[sizeof r->run_dir + 32];
        peso_train_stage_path(path, sizeof path, r->run_dir, t);
        if (o->resume && (t < k || (t == k && step < 0))) {
            if (t == k && c->eval.after_stage && evaluate_file(r, t, path, r->run, r->label, err) < 0)
                return -1;
            continue;
        }
        int rc = run_stage(r, t, o->resume && t == k && step >= 0 ? newest : NULL, err);
        if (rc)
            return rc;
        if (c->eval.after_stage && evaluate_file(r, t, path, r->run, r->label, err) < 0)
            return -1;
    }
    return 0;
}
