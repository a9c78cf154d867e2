/* eval.select_epoch: at the end of every epoch the stage's validation
 * pairs are decoded and the parameters kept when their NDCG@10 beats
 * every earlier epoch's; the best epoch becomes the stage's result. */
#include <stdio.h>
#include <stdlib.h>

#include "eval/evaluate.h"
#include "train/internal.h"

/* Scores are compared as float32, the precision a checkpoint keeps them
 * in, so a resumed run decides the same. */
int peso_train_select_epoch(peso_trainer *tr, int e, peso_err *err)
{
    peso_run *r = tr->r;
    const peso_conf *c = r->c;
    if (!c->eval.select_epoch || tr->epochs < 2)
        return 0;
    peso_metrics sums;
    peso_metrics_mean mean;
    if (peso_train_eval_sums(r, tr->s.t, PESO_EVAL_VALID, 1, &sums, err) < 0 ||
        peso_metrics_final(&sums, &mean, err) < 0)
        return peso_err_prefix(err, "stage %d epoch %d: validation", tr->s.t, e + 1);
    double score = (float)mean.ndcg[peso_metrics_k_index(mean.k, mean.n_k, 10)];
    int better = !tr->s.best || score > tr->s.best_score;
    if (r->log)
        fprintf(r->log, "stage %d epoch %d: valid ndcg@10 %.4f over %lld users%s\n", tr->s.t, e + 1, score,
                (long long)mean.users, better ? " (best so far)" : "");
    if (!better)
        return 0;
    if (!tr->s.best)
        tr->s.best = peso_malloc(r->m->flat.numel * sizeof *tr->s.best);
    tr->s.best_score = score;
    tr->s.best_epoch = e;
    return peso_llama_get_params(r->m, tr->s.best, err);
}

int peso_train_keep_best(peso_trainer *tr, peso_err *err)
{
    peso_run *r = tr->r;
    int rc = 0;
    if (tr->s.best && tr->s.best_epoch != tr->epochs - 1) {
        if (r->log)
            fprintf(r->log, "stage %d: keeping epoch %d (valid ndcg@10 %.4f)\n", tr->s.t,
                    tr->s.best_epoch + 1, tr->s.best_score);
        rc = peso_llama_set_params(r->m, tr->s.best, err);
    }
    free(tr->s.best); /* not part of the stage's final checkpoint */
    tr->s.best = NULL;
    return rc;
}
