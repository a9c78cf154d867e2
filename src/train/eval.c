/* Evaluation inside a run: a checkpoint loaded into the run's model, one
 * stage's test (and validation) pairs decoded by constrained beam search,
 * the means recorded in <out_dir>/metrics.jsonl. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "eval/evaluate.h"
#include "eval/record.h"
#include "train/internal.h"

int peso_train_load_checkpoint(peso_run *r, const char *path, peso_err *err)
{
    peso_ckpt ck;
    peso_llama *m = r->m;
    peso_stage s = {.ms = {.meth = r->meth, .c = r->c, .m = m, .log = r->log}};
    float *params = peso_malloc(m->flat.numel * sizeof *params);
    int rc = peso_llama_get_params(m, params, err);
    if (rc == 0)
        rc = peso_ckpt_read(path, &ck, err);
    if (rc == 0) {
        int stage1 = ck.stage == 1;
        s.t = s.ms.t = ck.stage;
        peso_ckpt_free(&ck);
        rc = peso_train_ckpt_open(r, path, stage1, &ck, err);
    }
    if (rc == 0)
        rc = peso_train_ckpt_state(r, &ck, params, &s, err);
    if (rc == 0)
        rc = peso_llama_set_params(m, params, err);
    if (rc == 0 && r->meth->install)
        rc = r->meth->install(&s.ms, err);
    peso_ckpt_free(&ck);
    peso_stage_free(&s); /* the model keeps what install put on it */
    free(params);
    return rc;
}

typedef struct eval_progress {
    FILE *log;
    int stage;
    const char *split;
    double t0, last;
    int ranks; /* the pairs are shared by this many ranks; the root reports its part */
} eval_progress;

static void on_progress(void *ctx, size_t done, size_t total)
{
    eval_progress *p = ctx;
    double now = peso_now();
    if (!p->log || (done < total && now - p->last < 2.0))
        return;
    p->last = now;
    double el = now - p->t0, rate = el > 0 ? (double)done / el : 0;
    fprintf(p->log, "eval stage %d %s: %zu/%zu users%s, %.1f users/s, eta %.0fs\n", p->stage, p->split, done,
            total, p->ranks > 1 ? " (this rank's share)" : "", rate, rate > 0 ? (double)(total - done) / rate : 0.0);
    fflush(p->log);
}

int peso_train_eval_sums(peso_run *r, int stage, int split, int all, peso_metrics *sums, peso_err *err)
{
    const peso_conf *c = r->c;
    const peso_par *par = r->par;
    peso_metrics_init_default(sums);
    if (stage < 1 || stage > r->n_blocks)
        return peso_errf(err, "stage %d: the dataset has stages 1-%d", stage, r->n_blocks);
    const peso_block *b = &r->d.split.b[stage - 1];
    size_t n = split == PESO_EVAL_TEST ? b->test.n : b->valid.n, lo, hi;
    if (c->eval.max_users && (size_t)c->eval.max_users < n)
        n = (size_t)c->eval.max_users;
    peso_par_range(n, par->grank, par->gsize, &lo, &hi);
    eval_progress pr = {par->grank == 0 ? r->log : NULL, stage, peso_eval_split_name(split), peso_now(), peso_now(),
                        par->gsize};
    if (hi > lo && peso_eval_stage(r->m, &r->prompt, &r->d, stage, split, (int)c->eval.beam, lo, hi, sums,
                                   on_progress, &pr, err) < 0)
        return -1;
    int ns = peso_metrics_n_sums(sums);
    return all ? peso_par_allreduce_d(par, peso_metrics_sums(sums), (size_t)ns, err)
               : peso_par_reduce_d(par, peso_metrics_sums(sums), (size_t)ns, err);
}

static int eval_split(peso_run *r, int stage, int split, const char *run, const char *label, peso_err *err)
{
    const peso_conf *c = r->c;
    peso_metrics sums;
    double t0 = peso_now();
    const char *split_name = peso_eval_split_name(split);
    if (peso_train_eval_sums(r, stage, split, 0, &sums, err) < 0)
        return -1;
    if (r->par->grank != 0)
        return 0;
    peso_metrics_mean mean;
    if (peso_metrics_final(&sums, &mean, err) < 0)
        return peso_err_prefix(err, "stage %d %s", stage, split_name);
    int es[PESO_MAX_BLOCKS];
    for (int i = 0; i < c->eval.n_stages; i++)
        es[i] = (int)c->eval.stages[i];
    peso_metrics_record rec = {
        .run = run,
        .method = label,
        .name = c->method.name,
        .variant = r->meth->flags & PESO_METHOD_VARIANT ? c->method.variant : NULL,
        .group = r->meth->flags & PESO_METHOD_GROUP ? c->method.group : NULL,
        .lambda = r->meth->flags & PESO_METHOD_LAMBDA ? c->method.lambda : 0.0,
        .stage = stage,
        .split = split_name,
        .mean = mean,
        .eval_stages = es,
        .n_eval_stages = c->eval.n_stages,
        .seconds = peso_now() - t0,
    };
    if (!strcmp(label, PESO_STAGE1_METHOD))
        rec.name = rec.variant = rec.group = NULL;
    char path[PESO_CONF_PATH + 32];
    snprintf(path, sizeof path, "%s/metrics.jsonl", c->out_dir);
    if (peso_metrics_record_write(path, &rec, err) < 0)
        return -1;
    if (split == PESO_EVAL_TEST && stage <= PESO_MAX_BLOCKS) {
        r->test_mean[stage] = mean;
        r->have_test[stage] = 1;
    }
    if (r->log) {
        int i5 = peso_metrics_k_index(mean.k, mean.n_k, 5), i10 = peso_metrics_k_index(mean.k, mean.n_k, 10);
        fprintf(r->log, "eval stage %d %s (%s): users %lld hit@5 %.4f hit@10 %.4f ndcg@5 %.4f ndcg@10 %.4f (%.1fs)\n",
                stage, split_name, label, (long long)mean.users, mean.hit[i5], mean.hit[i10], mean.ndcg[i5],
                mean.ndcg[i10], rec.seconds);
        fflush(r->log);
    }
    return 0;
}

int peso_train_evaluate(peso_run *r, int stage, const char *run, const char *label, peso_err *err)
{
    if (eval_split(r, stage, PESO_EVAL_TEST, run, label, err) < 0)
        return -1;
    return r->c->eval.valid ? eval_split(r, stage, PESO_EVAL_VALID, run, label, err) : 0;
}

void peso_train_eval_summary(const peso_run *r)
{
    const peso_conf *c = r->c;
    peso_metrics_mean st[PESO_MAX_BLOCKS], avg;
    char list[128] = "", missing[128] = "";
    int n = 0;
    peso_err err;
    if (!r->log)
        return;
    for (int i = 0; i < c->eval.n_stages; i++) {
        int t = (int)c->eval.stages[i];
        char *dst = r->have_test[t] ? list : missing;
        snprintf(dst + strlen(dst), 128 - strlen(dst), "%s%d", *dst ? "," : "", t);
        if (r->have_test[t])
            st[n++] = r->test_mean[t];
    }
    if (n == 0 || peso_metrics_average(st, n, &avg, &err) < 0)
        return;
    int i5 = peso_metrics_k_index(avg.k, avg.n_k, 5), i10 = peso_metrics_k_index(avg.k, avg.n_k, 10);
    fprintf(r->log, "eval mean over stages %s (%s): hit@5 %.4f hit@10 %.4f ndcg@5 %.4f ndcg@10 %.4f%s%s\n", list,
            r->label, avg.hit[i5], avg.hit[i10], avg.ndcg[i5], avg.ndcg[i10],
            *missing ? "; not evaluated in this run: stages " : "", missing);
    fflush(r->log);
}

int peso_train_eval_serve(peso_run *r, peso_err *err)
{
    char path[PESO_CONF_PATH + 256];
    for (;;) {
        int stage;
        if (peso_par_recv_eval(r->par, &stage, path, sizeof path, err) < 0)
            return -1;
        if (stage == 0) {
            peso_train_eval_summary(r);
            return 0;
        }
        int one = stage == 1;
        if (peso_train_load_checkpoint(r, path, err) < 0 ||
            peso_train_evaluate(r, stage, one ? PESO_STAGE1_METHOD : r->run,
                                one ? PESO_STAGE1_METHOD : r->label, err) < 0)
            return peso_err_prefix(err, "evaluating %s on stage %d", path, stage);
    }
}
