/* Shared by the files of src/train, which follow one stage from start to
 * checkpoint:
 *   setup.c   a stage's set-up: the method's begin from the previous
 *             stage's checkpoint, the frozen ranges, the optimizer
 *   step.c    one optimizer step (micro-batches, proximal term, the one
 *             all-reduce, the update) and its progress line
 *   select.c  eval.select_epoch: the best epoch's parameters
 *   state.c   checkpoints: the run's state to and from files, partial
 *             checkpoints and resuming from one
 *   stage.c   the stage loop and the stages of a run
 *   eval.c    evaluation inside a run
 *   run.c     opening a run */
#ifndef PESO_TRAIN_INTERNAL_H
#define PESO_TRAIN_INTERNAL_H

#include <signal.h>

#include "ckpt/ckpt.h"
#include "eval/metrics.h"
#include "method/method.h"
#include "optim/optim.h"
#include "optim/schedule.h"
#include "train/batch.h"
#include "train/train.h"

#define PESO_STAGE1_METHOD "stage1"

/* Stage t: the method's state and eval.select_epoch's best epoch so far
 * (best NULL: none yet). Host buffers have the flat's layout. */
typedef struct peso_stage {
    int t;
    peso_method_stage ms;
    float *best;
    double best_score;
    int best_epoch;
} peso_stage;

void peso_stage_free(peso_stage *s);

/* A range of the flat that a stage does not train: its gradients are
 * zeroed before the update and its values put back after it (AdamW's
 * weight decay would move them otherwise). */
typedef struct peso_frozen {
    size_t off, n;
} peso_frozen;

/* One stage being trained on a train rank. */
typedef struct peso_trainer {
    peso_run *r;
    peso_stage s;
    peso_method_env env; /* what the method may ask of the trainer */
    peso_optim opt;
    peso_schedule sched;
    peso_frozen *fr;
    int n_fr;
    float *fr_copy; /* device, the frozen values in range order */
    peso_batcher batcher;
    float *host_grads; /* host [numel + PESO_STEP_TAIL_N]: the all-reduce's staging */
    int32_t *mine;     /* this rank's windows of a step */
    size_t cap_mine;
    int epochs;
    int64_t total_steps;
    double t0;
    long tokens_done;
} peso_trainer;

/* The training pairs of stage t. */
const peso_pairs *peso_train_pairs(const peso_run *r, int t);

/* ---- setup.c ---- */
/* Sets stage tr->s.t up: the method from the previous stage's final
 * checkpoint (t >= 2), the frozen ranges, the optimizer and schedule. */
int peso_trainer_setup(peso_trainer *tr, peso_err *err);
void peso_trainer_free(peso_trainer *tr);
/* Puts the frozen ranges' values back (after an update). */
int peso_trainer_unfreeze(peso_trainer *tr, peso_err *err);
/* Zeroes the frozen ranges' gradients (before an update). */
int peso_trainer_zero_frozen(peso_trainer *tr, peso_err *err);

/* ---- step.c ---- */
typedef struct peso_step_out {
    double data, prox, gnorm, lr;
    long tokens;
    int stop; /* some train rank got SIGTERM/SIGUSR1 */
} peso_step_out;

/* The step's statistics that ride in the gradient all-reduce, as floats
 * after the flat (in the trainer's host staging buffer, host_grads):
 * summed over the train ranks, they give the step's data and proximal
 * sums, its tokens, how many ranks saw a non-finite loss and whether any
 * was asked to stop. */
#define PESO_STEP_TAIL_N 5
typedef struct peso_step_tail {
    double data, prox;
    long tokens;
    int bad, stop;
} peso_step_tail;
void peso_step_tail_pack(const peso_step_tail *t, float out[PESO_STEP_TAIL_N]);
void peso_step_tail_unpack(const float in[PESO_STEP_TAIL_N], peso_step_tail *t);

/* The windows of step i of st that train rank `rank` of `size` runs, in
 * step order, into out (room for the step's windows); returns how many. */
size_t peso_step_mine(const peso_steps *st, size_t i, int rank, int size, int32_t *out);

/* Step i of plan st (the stage's step number stage_step): this rank's
 * windows through forward and backward, the method's proximal term, the
 * all-reduce, the update. */
int peso_train_step(peso_trainer *tr, const peso_steps *st, size_t i, int64_t stage_step, peso_step_out *o,
                    peso_err *err);
/* The progress line after step `step` of an epoch (first: the step the
 * stage started or resumed at). */
void peso_train_progress(peso_trainer *tr, int epoch, int64_t step, int64_t first, const peso_step_out *o);
/* The signal that asked for a stop, or 0. */
int peso_train_stop_signal(void);

/* ---- select.c ---- */
/* At the end of epoch e: keeps the parameters when their validation
 * NDCG@10 beats every earlier epoch's. */
int peso_train_select_epoch(peso_trainer *tr, int e, peso_err *err);
/* The best epoch's parameters become the stage's result. */
int peso_train_keep_best(peso_trainer *tr, peso_err *err);

/* ---- state.c ---- */
/* A checkpoint of the model's current state and s (optimizer o may be
 * NULL) written to path. */
int peso_train_ckpt_write(peso_run *r, const peso_stage *s, const peso_optim *o, const char *path,
                          peso_ckpt_kind kind, int64_t step, int epoch, int64_t global_step, peso_err *err);
/* Reads path and checks it against the config: model shape, method
 * (label, or stage 1's), and the config keys that determine it (listed
 * when they differ). */
int peso_train_ckpt_open(peso_run *r, const char *path, int stage1, peso_ckpt *ck, peso_err *err);
/* From a checkpoint: the flat into host buffer params [flat.numel] (a
 * stage-1 file has no magnitudes: they are left as they are), the
 * method's content into s->ms and the best epoch so far into s. */
int peso_train_ckpt_state(peso_run *r, const peso_ckpt *ck, float *params, peso_stage *s, peso_err *err);
/* The best epoch so far (eval.select_epoch) of a partial checkpoint, if
 * it has one, into s. */
int peso_train_ckpt_best(peso_run *r, const peso_ckpt *ck, peso_stage *s, peso_err *err);
/* The flat without the magnitudes view (what a stage-1 file holds). */
peso_flat peso_train_base_flat(const peso_run *r);
/* <dir>/stage-<t>.h5 */
void peso_train_stage_path(char *out, size_t n, const char *dir, int t);
/* The directory of stage t's checkpoints: out_dir for stage 1, else the
 * run's. */
const char *peso_train_stage_dir(const peso_run *r, int t);
/* A partial checkpoint of the stage after `step` steps. */
int peso_train_write_partial(peso_trainer *tr, int64_t step, int epoch, peso_err *err);
/* Removes stage t's partial checkpoints once its final one exists. */
void peso_train_remove_partials(const peso_run *r, int t);
/* Overlays a partial checkpoint of this stage: parameters, optimizer,
 * best epoch; *step = the steps it holds. */
int peso_train_resume_from(peso_trainer *tr, const char *path, int64_t *step, peso_err *err);

/* ---- eval.c ---- */
/* The metric sums of stage t's split (eval.max_users of its pairs),
 * shared out over r's group: all = 1 sums them on every rank, 0 on the
 * group's root only. */
int peso_train_eval_sums(peso_run *r, int stage, int split, int all, peso_metrics *sums, peso_err *err);

#endif
