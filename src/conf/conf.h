/* One configuration schema for all programs. A YAML file (libyaml) is read
 * into the typed struct peso_conf; every key is declared once in the table
 * in conf.c with its type, default, allowed range or values, and a line of
 * documentation. Unknown keys, wrong types and out-of-range values are
 * errors that name the file, line, key and what was expected. */
#ifndef PESO_CONF_CONF_H
#define PESO_CONF_CONF_H

#include <stdint.h>
#include <stdio.h>

#include "common/err.h"

#define PESO_CONF_PATH 1024
#define PESO_CONF_NAME 64
#define PESO_MAX_BLOCKS 16
#define PESO_MAX_HIDDEN 4

typedef struct peso_conf_data {
    char format[PESO_CONF_NAME];   /* amazon2023 | amazon2014 | csv | letter | synthetic */
    char reviews[PESO_CONF_PATH];  /* reviews/interactions file (plain or .gz); letter: .inter.json */
    char meta[PESO_CONF_PATH];     /* item metadata (amazon2023 JSONL); letter: .index.json */
    char csv_user[PESO_CONF_NAME]; /* csv column names */
    char csv_item[PESO_CONF_NAME];
    char csv_time[PESO_CONF_NAME];
    char csv_delim[8];             /* one character; "\t" allowed */
    char csv_time_unit[8];         /* s | ms: unit of the csv time column */
    int64_t year_min;              /* 0 = no lower bound (UTC calendar years, inclusive) */
    int64_t year_max;              /* 0 = no upper bound */
    int64_t skip_bad_lines;        /* tolerate up to N malformed lines (listed) */
    int64_t max_text;              /* bytes of item text kept per item for the text encoder */
} peso_conf_data;

typedef struct peso_conf_split {
    double fractions[PESO_MAX_BLOCKS];
    int n_fractions;
    int64_t min_user_interactions;
    int64_t window;
    char mode[PESO_CONF_NAME];     /* chronological | user-disjoint */
    char history[PESO_CONF_NAME];  /* block | all */
} peso_conf_split;

typedef struct peso_conf_semid {
    char source[PESO_CONF_NAME];   /* rqvae | import */
    char features[PESO_CONF_NAME]; /* text | embeddings | model */
    char embeddings[PESO_CONF_PATH]; /* HDF5 file: /embeddings float [n,d], /ids strings [n] */
    char model[PESO_CONF_PATH];    /* Hugging Face model folder (features: model) */
    int64_t model_max_tokens;      /* tokens per item text, BOS included (features: model) */
    char index[PESO_CONF_PATH];    /* .index.json to import (source: import) */
    char export_index[PESO_CONF_PATH]; /* write the IDs as .index.json here ("" = no) */
    int64_t text_dim;              /* text hashing encoder output size */
    int64_t levels;                /* residual levels (3) */
    int64_t codebook;              /* codes per level (256) */
    int64_t hidden[PESO_MAX_HIDDEN];
    int n_hidden;
    int64_t latent;                /* code vector size */
    int64_t epochs;
    int64_t batch;
    double lr;
    double beta;                   /* commitment loss weight */
    int64_t kmeans_iters;
} peso_conf_semid;

typedef struct peso_conf_synth {
    int64_t users;                 /* users in D1's time span; new users join every block */
    int64_t items;                 /* items at the start; new items arrive every block */
    int64_t clusters;
    int64_t words_per_cluster;
    int64_t seq_mean;              /* mean interactions per user */
    double zipf;                   /* popularity exponent within a cluster */
    double drift;                  /* a in P_t = a P_{t-1} + (1-a) Q_t */
    double long_term;              /* share of choices from the long-term interest */
    double new_user_share;         /* per incremental block, relative to D1 users */
    double new_item_share;
} peso_conf_synth;

typedef struct peso_conf_model {
    char path[PESO_CONF_PATH];     /* Hugging Face folder; "" = generate model.preset into <out_dir>/model */
    char preset[PESO_CONF_NAME];   /* tiny | small: the built-in random model */
    int64_t lora_rank;
    double lora_alpha;
    char lora_targets[PESO_CONF_NAME]; /* "q,k,v,o,gate,up,down" or "all" */
} peso_conf_model;

typedef struct peso_conf_train {
    double lr;                     /* stage-1 peak rate */
    char lr_scale[PESO_CONF_NAME]; /* stages >= 2: rate = lr * lr_scale; "auto" = |Dt| / |D1| */
    int64_t epochs;                /* stage 1 */
    int64_t epochs_continual;      /* each stage >= 2 */
    int64_t batch_tokens;          /* global token budget of one optimizer step */
    int64_t micro_tokens;          /* padded tokens of one forward/backward pass */
    char schedule[PESO_CONF_NAME]; /* constant | cosine */
    int64_t warmup_steps;
    double min_lr_ratio;
    double weight_decay;
    double max_grad_norm;          /* 0 = no clipping */
    int64_t max_windows;           /* per stage and epoch; 0 = all */
    int64_t log_every;             /* optimizer steps between progress lines */
} peso_conf_train;

typedef struct peso_conf_method {
    char name[PESO_CONF_NAME];     /* a method of src/method/registry.c */
    char variant[PESO_CONF_NAME];  /* all | latest | all+inherit | latest+inherit (cumulative family) */
    char group[PESO_CONF_NAME];    /* module | matrix | rank (peso) */
    double lambda;
    double inflora_threshold;
} peso_conf_method;

typedef struct peso_conf_eval {
    int64_t beam;
    int64_t stages[PESO_MAX_BLOCKS]; /* stages averaged in reports */
    int n_stages;
    int64_t after_stage;           /* 1 = evaluate after each stage */
    int64_t valid;                 /* 1 = also the validation split */
    int64_t max_users;             /* 0 = all */
    int64_t select_epoch;          /* 1 = keep the epoch with the best validation NDCG@10 */
} peso_conf_eval;

typedef struct peso_conf_ckpt {
    int64_t every_steps;           /* 0 = at stage ends only */
} peso_conf_ckpt;

typedef struct peso_conf_parallel {
    int64_t eval_ranks;            /* the last ranks of MPI_COMM_WORLD evaluate; 0 = the train ranks do */
} peso_conf_parallel;

typedef struct peso_conf_backend {
    char name[16];                 /* cpu | cuda */
    int64_t device;                /* cuda: GPU index, -1 = the local rank's */
    char precision[8];             /* cuda: bf16 | f32 */
    int64_t debug_sync;            /* synchronise and check after every operation */
} peso_conf_backend;

typedef struct peso_conf_debug {
    int64_t nan_rank;              /* testing only: this train rank's loss ... */
    int64_t nan_step;              /* ... becomes NaN at this optimizer step of a stage (0 = never) */
} peso_conf_debug;

typedef struct peso_conf {
    char source[PESO_CONF_PATH];   /* the file read ("<default>" for built-in) */
    char out_dir[PESO_CONF_PATH];
    uint64_t seed;
    int64_t threads;               /* 0 = all cores */
    peso_conf_data data;
    peso_conf_split split;
    peso_conf_semid semid;
    peso_conf_synth synth;
    peso_conf_model model;
    peso_conf_train train;
    peso_conf_method method;
    peso_conf_eval eval;
    peso_conf_ckpt ckpt;
    peso_conf_parallel parallel;
    peso_conf_backend backend;
    peso_conf_debug debug;
} peso_conf;

/* Fills every key with its default. */
void peso_conf_defaults(peso_conf *c);
/* Reads a YAML file over the defaults (path NULL = defaults only). */
int peso_conf_load(peso_conf *c, const char *path, peso_err *err);
/* Applies one "a.b=value" override (value in YAML syntax, e.g. [0.5, 0.5]). */
int peso_conf_set(peso_conf *c, const char *assignment, peso_err *err);
/* Cross-key checks (fractions sum to 1, ...) after all sources are applied. */
int peso_conf_validate(const peso_conf *c, peso_err *err);
/* The resolved config as YAML text (malloc'd); stored in every output file. */
char *peso_conf_dump(const peso_conf *c);
/* A digest of the keys that determine the dataset (data, split, semid,
 * synth, seed), hex in out[17]: a dataset made from another config differs. */
void peso_conf_data_fingerprint(const peso_conf *c, char out[17]);
/* A digest of the keys that determine a run's trained adapters (the data
 * keys, model, train, method, seed; stage 1: without method), hex in
 * out[17]. */
void peso_conf_run_fingerprint(const peso_conf *c, int stage1, char out[17]);
/* The backend options of the backend.* keys (strings point into c). */
struct peso_backend_opts;
void peso_conf_backend_opts(const peso_conf *c, struct peso_backend_opts *o);
/* The keys of the run digest (stage1 as above) whose values differ
 * between the config text `other` (a resolved YAML dump, as stored in a
 * checkpoint) and c, as "key: <other> vs <c>" lines (malloc'd; "" when
 * they agree). NULL with err set when other does not parse. */
char *peso_conf_run_diff(const peso_conf *c, const char *other, const char *other_name, int stage1,
                         peso_err *err);
/* The learning-rate factor of stages >= 2: train.lr_scale as a number,
 * or |Dt| / |D1| for "auto" given those sizes (training windows). */
int peso_conf_lr_scale(const peso_conf *c, double dt, double d1, double *scale, peso_err *err);
/* Markdown table of every key: name, type, default, meaning. */
char *peso_conf_doc(void);

/* Parses the common command line: --config FILE, --set k=v (repeatable),
 * --print-config. Unknown options are left for the program: argv is
 * compacted to them and *argc updated. Sets *print if --print-config. */
int peso_conf_from_args(peso_conf *c, int *argc, char **argv, int *print, peso_err *err);

/* A program's command line after it took its own options out: args[0]
 * is the program, args[1..n) the common options. Handles --help / -h
 * (usage to stdout), --help-config, --config, --set, --print-config,
 * reports a bad config or a leftover argument on stderr as "<prog>: ...".
 * Returns 1 when the program should exit now with *status (0 or 2), 0
 * when it should go on with c. */
int peso_conf_cli(peso_conf *c, int n, char **args, const char *prog, void (*usage)(FILE *), int *status);

#endif
