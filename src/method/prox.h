/* The method side of the proximal terms of the continual methods
 * (DESIGN.md "Continual methods"), whose math is the backend's
 * (backend.h, "proximal terms": prox_kl, prox_l2, prox_ortho): this file
 * turns a LoRA layout (lora/lora.h) into the backend's group descriptors
 * (peso_prox_groups, declared in backend.h) and shares the groups out
 * between train ranks.
 *
 * Terms (v_t trained, v_{t-1} frozen):
 *   kl     (peso)  lambda * sum_g KL(softmax(v^(g)) || softmax(v_prev^(g)))
 *   l2             lambda/2 * ||v - v_prev||^2
 *   ortho  (O-LoRA) lambda * sum_modules ||A A_prev^T||_F^2 (B untouched)
 * The KL groups follow a grouping (module, matrix, rank); l2 and ortho
 * take the groups of PESO_PROX_MODULE, so their [lo, hi) are module
 * indices. Every term covers a range [lo, hi) of its groups, so that N
 * train ranks each compute their share (peso_prox_shard) and add it to
 * their gradient slice before the one all-reduce (DESIGN.md "Parallel
 * design"). The groups partition the coordinates, so the sum over ranks
 * equals the unsharded value up to the order of the float additions, and
 * the gradient exactly. */
#ifndef PESO_METHOD_PROX_H
#define PESO_METHOD_PROX_H

#include <stddef.h>

#include "backend/backend.h"
#include "common/err.h"
#include "lora/lora.h"

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


#endif
