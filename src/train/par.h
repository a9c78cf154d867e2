/* The MPI layout of a run (DESIGN.md "Parallel design"): MPI_COMM_WORLD
 * split into a train group (world ranks 0 .. N-E-1) and an evaluation
 * group (the last E = parallel.eval_ranks ranks, possibly none). Train
 * rank 0 writes every checkpoint and logs the training; the root of the
 * group that evaluates writes metrics.jsonl. A single process is a world
 * of one train rank. */
#ifndef PESO_TRAIN_PAR_H
#define PESO_TRAIN_PAR_H

#include <mpi.h>
#include <stddef.h>
#include <stdio.h>

#include "backend/backend.h"
#include "common/err.h"

typedef struct peso_par {
    int world, rank;  /* MPI_COMM_WORLD */
    int n_train, n_eval;
    int is_eval;      /* this rank belongs to the evaluation group */
    int grank, gsize; /* rank and size within its group */
    MPI_Comm group;   /* the train or the evaluation group */
    int eval_root;    /* world rank of the evaluation group's root (-1: none) */
} peso_par;

/* Splits the world (after MPI_Init) for eval_ranks evaluation ranks;
 * at least one rank must be left to train. */
int peso_par_init(peso_par *p, int eval_ranks, peso_err *err);
void peso_par_free(peso_par *p);

/* [*lo, *hi) of n items that group rank r of size ranks takes:
 * contiguous and balanced. */
void peso_par_range(size_t n, int r, int size, size_t *lo, size_t *hi);

/* Sums n floats / doubles in place over the group (a no-op for one rank). */
int peso_par_allreduce_f(const peso_par *p, float *buf, size_t n, peso_err *err);
/* The step's gradient all-reduce: dev [n] (backend memory) summed over
 * the group through host [n + n_tail], whose last n_tail floats the
 * caller has filled (statistics riding in the same message) and reads
 * back summed. MPI sums host memory, so dev crosses by download and
 * upload; with one rank nothing moves. */
int peso_par_allreduce_grads(const peso_par *p, peso_backend *be, float *dev, size_t n, float *host, size_t n_tail,
                             peso_err *err);
int peso_par_allreduce_d(const peso_par *p, double *buf, size_t n, peso_err *err);
/* Sums n doubles onto the group's root (rank 0). */
int peso_par_reduce_d(const peso_par *p, double *buf, size_t n, peso_err *err);
int peso_par_barrier(const peso_par *p, peso_err *err);
/* The same on MPI_COMM_WORLD. */
int peso_par_world_barrier(peso_err *err);

/* Messages from train rank 0 to the evaluation root: a stage to
 * evaluate and its checkpoint, or stage 0 = no more. */
int peso_par_send_eval(const peso_par *p, int stage, const char *path, peso_err *err);
/* Evaluation group: the next request, received by the root and shared
 * with the group (path holds n bytes). */
int peso_par_recv_eval(const peso_par *p, int *stage, char *path, size_t n, peso_err *err);

/* Where a rank's progress goes: stdout on world rank 0 and on the
 * evaluation group's root, nowhere on the others. */
FILE *peso_par_log(const peso_par *p);
/* Reports a failure as "<prog>: rank R: msg" (no rank in a world of
 * one) and, when there are other ranks, stops the whole job with
 * MPI_Abort so that nobody waits for this rank forever. Returns 1 (the
 * exit status) in a world of one. */
int peso_par_fail(const peso_par *p, const char *prog, const char *msg);

#endif
