/* The metrics file, <out_dir>/metrics.jsonl: one JSON object per line,
 * one line per (run, method, lambda, stage, split), for the report tool:
 *
 *   {"run":"r1","method":"peso","name":"peso","variant":null,"group":"module",
 *    "lambda":0.5,"stage":2,"split":"test","users":1200,"hit@5":0.031,
 *    "hit@10":0.052,"ndcg@5":0.019,"ndcg@10":0.026,"eval_stages":[2,3,4],
 *    "seconds":41.7}
 *
 * (on one line). hit@k and ndcg@k appear for every cut-off of the means,
 * hits first; floats are written with the shortest decimal that reads
 * back as the same double. A stage's line is written when its evaluation
 * ends, so a resumed or repeated evaluation replaces the line with the
 * same key instead of adding a second one. */
#ifndef PESO_EVAL_RECORD_H
#define PESO_EVAL_RECORD_H

#include "common/err.h"
#include "eval/metrics.h"

typedef struct peso_metrics_record {
    const char *run;     /* required */
    const char *method;  /* required */
    const char *name;    /* NULL: written as null */
    const char *variant; /* NULL: null */
    const char *group;   /* NULL: null */
    double lambda;
    int stage;
    const char *split; /* required: "valid" or "test" (peso_eval_split_name) */
    peso_metrics_mean mean;
    const int *eval_stages; /* the stages the run's averages are over */
    int n_eval_stages;
    double seconds;
} peso_metrics_record;

/* Reads path if it exists, drops its line with r's key (run, method,
 * lambda, stage, split), appends r's line and writes the whole file
 * atomically (temporary name, then rename). Blank lines are dropped; every
 * other line is kept as it was. A line that is not a JSON object with a
 * string run, method and split, a number lambda and an integer stage is
 * an error naming path:line, and the file is left as it was. */
int peso_metrics_record_write(const char *path, const peso_metrics_record *r, peso_err *err);

#endif
