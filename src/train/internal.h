/* Shared by the files of src/train: a stage's method state and the
 * checkpoint conversions. */
#ifndef PESO_TRAIN_INTERNAL_H
#define PESO_TRAIN_INTERNAL_H

#include "ckpt/ckpt.h"
#include "eval/metrics.h"
#include "method/prox.h"
#include "optim/optim.h"
#include "train/train.h"

#define PESO_STAGE1_METHOD "stage1"

/* Everything of stage t beyond the model's own flat: the frozen previous
 * adapter, past adapters of the cumulative family and InfLoRA's
 * protected subspaces. Host buffers have the flat's layout. */
typedef struct peso_stage {
    int t;
    float *prev;      /* v_{t-1} (NULL in stage 1) */
    int n_past;
    float **past;     /* [n_past] host, LoRA views used */
    float *alpha;     /* [n_past] fixed magnitudes (NULL: learnable, in the flat) */
    /* InfLoRA: per module an orthonormal basis [basis_k[i], in] of the
     * inputs of earlier stages (capacity in - rank rows). */
    float **basis;
    int *basis_k;
    double *cov;      /* this stage's module-input covariances (inflora) */
    /* eval.select_epoch: the best epoch so far (best NULL: none yet) */
    float *best;
    double best_score;
    int best_epoch;
} peso_stage;

void peso_stage_free(peso_stage *s, int n_modules);

/* The LoRA views only: the first views of the model's flat. */
peso_flat peso_train_lora_flat(const peso_run *r);
/* The flat without the magnitudes view (what a stage-1 file holds). */
peso_flat peso_train_base_flat(const peso_run *r);

/* A checkpoint of the model's current state and s (optimizer o may be
 * NULL) written to path. */
int peso_train_ckpt_write(peso_run *r, const peso_stage *s, const peso_optim *o, const char *path,
                          peso_ckpt_kind kind, int64_t step, int epoch, int64_t global_step, peso_err *err);
/* Reads path and checks it against the config: model shape, method
 * (label, or stage 1's), and the config keys that determine it (listed
 * when they differ). */
int peso_train_ckpt_open(peso_run *r, const char *path, int stage1, peso_ckpt *ck, peso_err *err);
/* From a checkpoint: the flat into host buffer params [flat.numel] (a
 * stage-1 file has no magnitudes: they are left as they are), the past
 * adapters, InfLoRA bases and the best epoch so far into s. */
int peso_train_ckpt_state(peso_run *r, const peso_ckpt *ck, float *params, peso_stage *s, peso_err *err);

/* The best epoch so far (eval.select_epoch) of a partial checkpoint, if
 * it has one, into s. */
int peso_train_ckpt_best(peso_run *r, const peso_ckpt *ck, peso_stage *s, peso_err *err);

/* The metric sums of stage t's split (eval.max_users of its pairs),
 * shared out over r's group: all = 1 sums them on every rank, 0 on the
 * group's root only. */
int peso_train_eval_sums(peso_run *r, int stage, int split, int all, peso_metrics *sums, peso_err *err);

/* <dir>/stage-<t>.h5 */
void peso_train_stage_path(char *out, size_t n, const char *dir, int t);

#endif
