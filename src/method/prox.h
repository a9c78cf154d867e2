/* The proximal terms of the continual methods (DESIGN.md "Continual
 * methods"), over host float32 buffers with the LoRA flat layout
 * (lora/lora.h): v the trained parameters v_t, v_prev the frozen previous
 * adapter v_{t-1}, grad the gradient buffer. Every term
 *
 *   - returns its value, lambda included, in *value (double);
 *   - ADDS lambda * d(term)/dv into grad (grad may be NULL: value only);
 *   - covers a range [lo, hi) of its groups, so that N train ranks each
 *     compute their share (peso_prox_shard) and add it to their gradient
 *     slice before the one all-reduce (DESIGN.md "Parallel design"). The
 *     groups partition the coordinates, so the sum over ranks equals the
 *     unsharded value up to the order of the float additions, and the
 *     gradient exactly.
 *
 * Terms:
 *   kl     (peso)  lambda * sum_g KL(softmax(v^(g)) || softmax(v_prev^(g)))
 *   l2             lambda/2 * ||v - v_prev||^2
 *   ortho  (O-LoRA) lambda * sum_modules ||A A_prev^T||_F^2 (B untouched)
 * The KL groups follow a grouping (module, matrix, rank); the groups of l2
 * and ortho are the modules, i.e. the groups of PESO_PROX_MODULE, and
 * their [lo, hi) are module indices.
 *
 * Values are accumulated in double in a fixed order, whatever the number
 * of OpenMP threads; softmaxes are max-subtracted. */
#ifndef PESO_METHOD_PROX_H
#define PESO_METHOD_PROX_H

#include <stddef.h>

#include "common/err.h"
#include "lora/lora.h"

/* Which coordinates share one softmax in the KL term (paper, Section 4.2
 * and its Table 5 ablation). */
typedef enum peso_prox_grouping {
    PESO_PROX_MODULE = 0, /* one adapted module: all of A and B together */
    PESO_PROX_MATRIX,     /* A and B of a module separately */
    PESO_PROX_RANK,       /* per rank k: row k of A with column k of B */
    PESO_PROX_NGROUPING
} peso_prox_grouping;

/* n floats at off, off + stride, off + 2 stride, ... */
typedef struct peso_prox_seg {
    size_t off, n, stride;
} peso_prox_seg;

/* One group: the concatenation of its segments. */
typedef struct peso_prox_group {
    int module; /* index into peso_lora.mods */
    int n_seg;  /* 1 or 2 */
    peso_prox_seg seg[2];
    size_t numel;
} peso_prox_group;

/* Groups in module order; within a module: A before B (matrix), rank 0
 * first (rank). */
typedef struct peso_prox_groups {
    peso_prox_grouping how;
    int n;
    peso_prox_group *g;
} peso_prox_groups;

/* "module", "matrix", "rank". */
const char *peso_prox_grouping_name(peso_prox_grouping how);
int peso_prox_grouping_parse(const char *s, peso_prox_grouping *how, peso_err *err);

/* The groups of every module of l under a grouping. */
int peso_prox_groups_build(peso_prox_groups *gs, const peso_lora *l, peso_prox_grouping how, peso_err *err);
void peso_prox_groups_free(peso_prox_groups *gs);

/* The contiguous range [*lo, *hi) of gs's groups that rank (of world)
 * computes, balanced by group size: group i belongs to the rank whose
 * share of the total size contains the midpoint of i's span. Same answer
 * on every rank; the ranges of ranks 0..world-1 tile [0, gs->n) in order
 * (some may be empty when world > gs->n). */
int peso_prox_shard(const peso_prox_groups *gs, int world, int rank, int *lo, int *hi, peso_err *err);

/* PESO's softmax-KL proximal over groups [lo, hi) of gs. Per group, with
 * p = softmax(v^(g)), q = softmax(v_prev^(g)), KL = sum p log(p/q) and
 * dKL/dv^(g) = p * (log p - log q) - p * KL. */
int peso_prox_kl(const peso_prox_groups *gs, int lo, int hi, const float *v, const float *v_prev,
                 double lambda, float *grad, double *value, peso_err *err);

/* lambda/2 * ||v - v_prev||^2 over the A and B entries of modules [lo, hi);
 * gradient lambda * (v - v_prev). */
int peso_prox_l2(const peso_lora *l, int lo, int hi, const float *v, const float *v_prev, double lambda,
                 float *grad, double *value, peso_err *err);

/* lambda * sum ||A A_prev^T||_F^2 over modules [lo, hi), A [rank, in];
 * gradient w.r.t. A: 2 lambda (A A_prev^T) A_prev; none for B. */
int peso_prox_ortho(const peso_lora *l, int lo, int hi, const float *v, const float *v_prev, double lambda,
                    float *grad, double *value, peso_err *err);

#endif
