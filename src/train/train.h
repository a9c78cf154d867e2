/* The continual protocol end to end (DESIGN.md "Continual methods",
 * "Files"): stage 1 trains LoRA and the new code-token rows on D1, shared
 * by every method of an out_dir; stages 2..T run one continual method,
 * each starting from the previous stage's final checkpoint; every stage
 * may be evaluated on its test users right after it.
 *
 * Directory layout:
 *   <out_dir>/dataset.h5, stats.json     peso-prep's (made when missing or
 *                                        made from another data config)
 *   <out_dir>/model-<preset>-<seed>/     the built-in model (model.path "")
 *   <out_dir>/stage-1.h5                 stage 1, shared by all methods
 *   <out_dir>/<run>/stage-<t>.h5         stage t >= 2 of one method; <run>
 *                                        is the method label made file-safe
 *                                        (peso_run.run)
 *   <out_dir>/metrics.jsonl              one line per run, stage and split
 * plus the partial checkpoints stage-<t>-step-<s>.h5 (ckpt/ckpt.h).
 *
 * Within a stage: each epoch's windows are shuffled by (seed, stage,
 * epoch) and cut, in that order, into optimizer steps of at most
 * train.batch_tokens tokens; a step runs as micro-batches of at most
 * train.micro_tokens padded tokens whose gradients accumulate; the loss
 * is the mean over the step's label tokens. Because the order depends on
 * nothing else, a resumed run replays the same steps. */
#ifndef PESO_TRAIN_TRAIN_H
#define PESO_TRAIN_TRAIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/err.h"
#include "conf/conf.h"
#include "data/dataset.h"
#include "eval/metrics.h"
#include "method/method.h"
#include "model/llama.h"
#include "model/prompt.h"
#include "hf/tokenizer.h"
#include "train/par.h"

/* Exit status of peso-train when SIGTERM or SIGUSR1 made it write a
 * checkpoint and stop (EX_TEMPFAIL): a job script requeues on it and the
 * next run continues with --resume. */
#define PESO_TRAIN_EXIT_REQUEUE 75

/* One opened run: config, dataset, tokenizer, prompt, backend and model. */
typedef struct peso_run {
    const peso_conf *c;
    const peso_par *par;
    FILE *log; /* progress lines (NULL = quiet) */
    const peso_method *meth; /* method.name's entry of the table */
    char label[2 * PESO_CONF_NAME + 8]; /* metrics "method": "peso", "sumlora all", "peso group=rank" */
    char run[2 * PESO_CONF_NAME + 40];  /* directory name: "peso-lambda2", "sumlora-all" */
    char run_dir[PESO_CONF_PATH + 2 * PESO_CONF_NAME + 48];
    char model_dir[PESO_CONF_PATH + PESO_CONF_NAME + 32];
    peso_dataset d;
    peso_tok *tok;
    peso_prompt prompt;
    peso_backend *be;
    peso_llama *m;
    int n_blocks;
    /* test means of the stages this rank recorded (group roots only) */
    peso_metrics_mean test_mean[PESO_MAX_BLOCKS + 1];
    int have_test[PESO_MAX_BLOCKS + 1];
} peso_run;

/* Opens everything a stage needs on every rank: world rank 0 prepares
 * the dataset when missing or stale and generates the built-in model
 * when model.path is "" while the others wait; then each adds the
 * semantic-ID tokens to the tokenizer and loads the model with them. */
int peso_run_open(peso_run *r, const peso_conf *c, const peso_par *par, FILE *log, peso_err *err);
void peso_run_close(peso_run *r);

typedef struct peso_train_opts {
    int stage_lo, stage_hi; /* inclusive; 0, 0 = every stage */
    int resume;
} peso_train_opts;

/* Runs the stages on a train rank. Returns 0, -1 with err, or
 * PESO_TRAIN_EXIT_REQUEUE when a signal stopped it after a checkpoint.
 * With an evaluation group, train rank 0 sends it each finished stage
 * and, at the end, the message that there are no more. */
int peso_train(peso_run *r, const peso_train_opts *o, peso_err *err);
/* An evaluation rank: evaluates each stage train rank 0 sends, until the
 * message that there are no more. */
int peso_train_eval_serve(peso_run *r, peso_err *err);
/* On the rank that recorded the test metrics: one line with their mean
 * over the eval.stages it has (the paper's average), naming any missing. */
void peso_train_eval_summary(const peso_run *r);

/* Installs the SIGTERM / SIGUSR1 handlers that ask for a checkpoint and
 * a stop at the next optimizer step. */
void peso_train_signals(void);

/* Evaluates the model's current state on stage t (test, and valid when
 * eval.valid), the users sharded over the ranks of r's group, and has
 * the group's root record it in <out_dir>/metrics.jsonl under run name
 * and method label. */
int peso_train_evaluate(peso_run *r, int stage, const char *run, const char *label, peso_err *err);

/* Loads a checkpoint (stage-<t>.h5 of any method) into r's model: the
 * adapter, the new rows and, for cumulative methods, the past adapters
 * and magnitudes, after checking it against the config. */
int peso_train_load_checkpoint(peso_run *r, const char *path, peso_err *err);

#endif
