/* The continual methods (DESIGN.md "Continual methods") as one table:
 * each method is one file of src/method/ that fills one peso_method, and
 * registry.c lists them. The trainer (src/train/) calls the table and
 * never asks which method runs.
 *
 * A stage t >= 2 of a method, as the trainer drives it:
 *   1. the previous stage's final checkpoint is read: the flat into a
 *      host buffer params, then load() takes the method's own content
 *      (past adapters, InfLoRA's subspace);
 *   2. prev = v_{t-1} (a copy of params); begin() sets the stage up:
 *      fresh or inherited (A_t, B_t), past adapters, designed A, frozen
 *      ranges, the proximal term's groups; params then holds the stage's
 *      starting point, which the trainer puts on the model;
 *   3. every optimizer step: step() with the step's token count before
 *      its micro-batches, prox() after them (value, and its gradient
 *      added to m->grads on this rank's share);
 *   4. end() after the last step, then save() adds the method's content
 *      to the stage's checkpoint (and to every partial one);
 *   5. peso_method_stage_free.
 * Evaluating a checkpoint: load(), then install() puts what was loaded
 * on the model (past adapters).
 * Every callback may be NULL: nothing to do (begin NULL: inherit v_{t-1}).
 *
 * Adding a method: a new file that defines `const peso_method
 * peso_method_<name>` and one line in registry.c. */
#ifndef PESO_METHOD_METHOD_H
#define PESO_METHOD_METHOD_H

#include <stddef.h>
#include <stdio.h>

#include "ckpt/ckpt.h"
#include "conf/conf.h"
#include "model/llama.h"

/* Which config keys and model parts a method uses. */
enum {
    PESO_METHOD_FROZEN = 1u << 0,     /* no training after stage 1 (pretrain) */
    PESO_METHOD_LAMBDA = 1u << 1,     /* method.lambda: in the run name and the metrics */
    PESO_METHOD_VARIANT = 1u << 2,    /* method.variant (all, latest, +inherit) */
    PESO_METHOD_GROUP = 1u << 3,      /* method.group (module, matrix, rank) */
    PESO_METHOD_MAGNITUDES = 1u << 4, /* the model gets one learnable magnitude per later stage */
};

/* What the trainer lends a method: services over the stage's data and
 * the frozen ranges of the flat. */
typedef struct peso_method_env {
    void *ctx;
    /* fn(arg, batch) on every micro-batch of stage k's training windows
     * (all of them, in epoch 0's order, on every train rank) */
    int (*each_batch)(void *ctx, int k, int (*fn)(void *arg, const peso_llama_batch *b, peso_err *err),
                      void *arg, peso_err *err);
    /* the stage does not train [off, off + n) of the flat */
    void (*freeze)(void *ctx, size_t off, size_t n);
} peso_method_env;

typedef struct peso_method peso_method;

/* A method at one stage. The trainer sets the fields up to env; the
 * method owns the rest. Host buffers have the model's flat layout. */
typedef struct peso_method_stage {
    const peso_method *meth;
    const peso_conf *c;
    peso_llama *m;
    int t;
    int rank, size; /* this rank in the train group, for the proximal term's share */
    FILE *log;      /* progress lines (NULL = quiet) */
    const peso_method_env *env;
    float *prev;     /* host: v_{t-1} while training stage t >= 2, else NULL */
    float *prev_dev; /* the same on the backend, for the proximal terms */
    /* past adapters of the cumulative family (LoRA views used) and their
     * fixed magnitudes (alpha NULL: learnable, in the flat) */
    int n_past;
    float **past;
    float *alpha;
    void *priv; /* the method's own state */
} peso_method_stage;

struct peso_method {
    const char *name;
    unsigned flags;
    int (*load)(peso_method_stage *s, const peso_ckpt *ck, peso_err *err);
    int (*begin)(peso_method_stage *s, float *params, peso_err *err);
    int (*install)(peso_method_stage *s, peso_err *err);
    void (*step)(peso_method_stage *s, long tokens);
    int (*prox)(peso_method_stage *s, double *value, peso_err *err);
    int (*end)(peso_method_stage *s, peso_err *err);
    int (*save)(const peso_method_stage *s, peso_ckpt *ck, peso_err *err);
    void (*free)(peso_method_stage *s);
};

/* The registered methods, in the order of the README's method list. */
extern const peso_method *const peso_methods[];
extern const int peso_n_methods;

/* The method called name, or NULL. */
const peso_method *peso_method_find(const char *name);

/* The method of c, its label (metrics "method": "peso", "sumlora all",
 * "peso group=rank") and its run directory name ("peso-lambda2",
 * "sumlora-all"). An unknown method.name is an error naming the key. */
int peso_method_of_conf(const peso_conf *c, const peso_method **meth, char *label, size_t label_n, char *run,
                        size_t run_n, peso_err *err);

/* Frees what the method and the stage hold (the model keeps what begin
 * or install put on it). */
/* prev and prev_dev = copies of v (m's flat, host), before begin(). */
int peso_method_stage_set_prev(peso_method_stage *s, const float *v, peso_err *err);
void peso_method_stage_free(peso_method_stage *s);
/* Leaves the model plain: no past adapters, no hook, A trainable. */
void peso_method_model_plain(peso_llama *m);

/* The LoRA views of the model's flat only (the first views). */
peso_flat peso_method_lora_flat(const peso_llama *m);

#endif
