/* Checkpoints of a continual run: one HDF5 file holding everything a
 * resumed run needs to end with the same adapter as an uninterrupted one.
 *
 * Naming inside <out_dir>:
 *   stage-<t>.h5            the final checkpoint of stage t (kind "final"),
 *                           written after its last step;
 *   stage-<t>-step-<s>.h5   a partial one, after step s of stage t (steps
 *                           counted within the stage, as peso_ckpt.step;
 *                           kind "partial"), every ckpt.every_steps;
 *   <name>.tmp.<pid>        a checkpoint being written (never read).
 * Order, newest last: by stage number, then by step, and the final file of
 * a stage after all of its partial ones.
 *
 * Layout (h5dump shows it; names are dataset paths from the root):
 *   attributes on /: format_version, kind ("final" | "partial"), stage,
 *     step (within the stage), epoch, global_step, method, fingerprint
 *     (of the data file);
 *   /config                  the run's resolved config as one string;
 *   /model                   attributes hidden, layers, heads, kv_heads,
 *     head_dim, vocab (new tokens included), lora_rank, lora_alpha,
 *     lora_targets (mask of lora/lora.h);
 *   /adapter/<key>           float32, one per LoRA A/B view; <key> is the
 *     PEFT key without its "base_model.model." wrapper prefix
 *     (model.layers.0.self_attn.q_proj.lora_A.weight), the same for
 *     every key, so dropping it keeps h5dump readable;
 *   /new_rows/embed, /new_rows/head   the trainable new vocabulary rows;
 *   /magnitude               the learnable magnitudes of the past adapters
 *     (SD-LoRA; the flat view PESO_LLAMA_MAGNITUDES), when the model has
 *     them;
 *   /past/<i>/adapter/..., /past/<i>/new_rows/..., /past/<i>/magnitude
 *     past adapters of cumulative methods (added by the trainer with
 *     peso_ckpt_add_flat / peso_ckpt_add);
 *   /tensors                 the paths of all float tensors above, in the
 *     order they were added, so a read gives them back in that order;
 *   /optim/m, /optim/v       AdamW moments, attribute step;
 *   /rng/<name>              uint64[4] xoshiro state of each named stream.
 *
 * The file is written to a temporary name, flushed, closed, fsync'ed and
 * renamed, so a name without ".tmp." is always a whole checkpoint.
 *
 * Files: ckpt.c the checkpoint in memory (tensors, flat views, optimizer,
 * RNG streams), ckpt_write.c and ckpt_read.c the file, ckpt_check.c the
 * comparison with the config, ckpt_scan.c the search of out_dir. */
#ifndef PESO_CKPT_CKPT_H
#define PESO_CKPT_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "common/flat.h"
#include "common/err.h"
#include "common/rng.h"
#include "lora/lora.h"
#include "hf/config.h"

#define PESO_CKPT_FORMAT 1
#define PESO_CKPT_MAX_DIMS 4
#define PESO_CKPT_NAME_MAX 256

typedef enum peso_ckpt_kind { PESO_CKPT_FINAL = 0, PESO_CKPT_PARTIAL = 1 } peso_ckpt_kind;

/* What a checkpoint must agree on with the model it is loaded into. */
typedef struct peso_ckpt_shape {
    int hidden, layers, heads, kv_heads, head_dim;
    int vocab; /* new tokens included */
    int lora_rank;
    double lora_alpha;
    unsigned lora_targets;
} peso_ckpt_shape;

/* One float32 tensor; path is relative to the root ("adapter/...") and
 * data is owned by the checkpoint. */
typedef struct peso_ckpt_tensor {
    char *path;
    int ndim;
    int64_t shape[PESO_CKPT_MAX_DIMS];
    size_t numel;
    float *data;
} peso_ckpt_tensor;

typedef struct peso_ckpt_rng {
    char *name;
    peso_rng state;
} peso_ckpt_rng;

typedef struct peso_ckpt {
    char *path; /* set by peso_ckpt_read, named in messages; may be NULL */
    peso_ckpt_kind kind;
    int stage;
    int64_t step; /* within the stage */
    int epoch;
    int64_t global_step;
    char *method, *fingerprint, *config;
    peso_ckpt_shape shape;
    peso_ckpt_tensor *tensors;
    size_t n_tensors, cap_tensors;
    float *optim_m, *optim_v; /* [optim_n] each, owned */
    size_t optim_n;
    int64_t optim_step;
    peso_ckpt_rng *rngs;
    size_t n_rngs, cap_rngs;
} peso_ckpt;

/* What the config in hand expects of a checkpoint. */
typedef struct peso_ckpt_expect {
    const char *method;
    const char *fingerprint;
    peso_ckpt_shape shape;
} peso_ckpt_expect;

/* Zeroed, no tensors; strings NULL. */
void peso_ckpt_init(peso_ckpt *ck);
void peso_ckpt_free(peso_ckpt *ck);
/* Copies method, fingerprint and config text (NULL leaves a field empty). */
void peso_ckpt_set_text(peso_ckpt *ck, const char *method, const char *fingerprint, const char *config);
/* The shape summary of model mc (vocab_size with new tokens) with lora. */
void peso_ckpt_shape_of(peso_ckpt_shape *s, const peso_llama_config *mc, const peso_lora_conf *lora);

/* Appends a copy of data (numel = product of shape) under path (segments
 * of [A-Za-z0-9._-], separated by '/'); errors on a repeated path, a bad
 * name or a dimension < 1. */
int peso_ckpt_add(peso_ckpt *ck, const char *path, int ndim, const int64_t *shape, const float *data,
                  peso_err *err);
/* The tensor at path, or NULL. */
const peso_ckpt_tensor *peso_ckpt_find(const peso_ckpt *ck, const char *path);

/* One tensor per view of flat, copied from buf (a buffer with flat's
 * layout), under group ("" for the current adapter, "past/<i>" for a past
 * one): LoRA views (PEFT keys) as <group>/adapter/<key>, the new rows
 * (PESO_LLAMA_EMBED_NEW, PESO_LLAMA_HEAD_NEW) as <group>/new_rows/embed
 * and <group>/new_rows/head, the magnitudes (PESO_LLAMA_MAGNITUDES) as
 * <group>/magnitude. Any other view name is an error. */
int peso_ckpt_add_flat(peso_ckpt *ck, const char *group, const peso_flat *flat, const float *buf,
                       peso_err *err);
/* The reverse: fills every view of buf from the tensors of group; a
 * missing tensor or one of another shape is an error naming both. The
 * padding between views is left as it was. */
int peso_ckpt_get_flat(const peso_ckpt *ck, const char *group, const peso_flat *flat, float *buf,
                       peso_err *err);

/* Copies the optimizer state (n floats per moment). */
void peso_ckpt_set_optim(peso_ckpt *ck, const float *m, const float *v, size_t n, int64_t step);
/* Appends a named RNG state (name as a path segment); errors on a repeat. */
int peso_ckpt_add_rng(peso_ckpt *ck, const char *name, const peso_rng *r, peso_err *err);
/* The state of the stream called name, or NULL. */
const peso_rng *peso_ckpt_find_rng(const peso_ckpt *ck, const char *name);

/* Writes ck to path atomically (layout above). */
int peso_ckpt_write(const char *path, const peso_ckpt *ck, peso_err *err);
/* Reads a whole checkpoint into ck (initialised here; free it with
 * peso_ckpt_free, also after a failure). Messages name the file and the
 * object. */
int peso_ckpt_read(const char *path, peso_ckpt *ck, peso_err *err);
/* 0 when have matches want; otherwise -1 with one message naming every
 * field that differs as "<field> <checkpoint> vs <config>". */
int peso_ckpt_check(const peso_ckpt *have, const peso_ckpt_expect *want, peso_err *err);

/* Messages about files peso_ckpt_newest passed over. */
typedef struct peso_ckpt_skipped {
    char **msgs;
    size_t n, cap;
} peso_ckpt_skipped;
void peso_ckpt_skipped_free(peso_ckpt_skipped *s);

/* The newest checkpoint in out_dir (naming above) that reads completely:
 * its path into path [path_n], its stage, and its step (-1 for a final
 * stage-<t>.h5). Leftover temporary files, files that fail to read and
 * files whose stage, kind or step differ from their name are passed over, each with a message appended to
 * skipped (may be NULL). No checkpoint (or no out_dir): returns 0 with *stage = -1. -1 only when out_dir
 * exists but cannot be listed. */
int peso_ckpt_newest(const char *out_dir, int *stage, int64_t *step, char *path, size_t path_n,
                     peso_ckpt_skipped *skipped, peso_err *err);

#endif
