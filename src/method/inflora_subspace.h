/* InfLoRA's subspace math (Liang & Li 2024; DESIGN.md "Continual
 * methods"): A_t of an adapted module is not trained but designed from the
 * stage's module-input covariance, after projecting out the input
 * subspace that earlier stages used, so that the update B_t A_t leaves
 * the earlier stages' inputs untouched; only B_t is trained. Pure linear
 * algebra on host buffers, one module at a time: the trainer loops over
 * the modules.
 *
 * Per module, with in its input width:
 *   cov    C = X^T X over the stage's inputs of the module, double
 *          [in, in] row-major, symmetric positive semi-definite;
 *   basis  M, float [k, in] row-major, orthonormal rows spanning the
 *          input subspace of the earlier stages (k = 0 at stage 1);
 *   P      = I - M^T M, the projector onto the complement of span(M).
 *
 * Sign convention: every returned direction v is scaled by +-1 so that its
 * entry of largest magnitude (the first such index on a tie) is positive,
 * which makes the output a function of the input alone.
 *
 * The eigenvectors come from LAPACK's dsyevr (OpenBLAS) applied to
 * P C P - c M^T M with c = trace(C) (1 when C = 0): the shift moves the
 * directions of span(M) to eigenvalue -c, below every eigenvalue of the
 * complement (all >= 0), so the top in - k eigenvectors lie in the
 * complement even when C is rank-deficient and P C P has fewer than r
 * nonzero eigenvalues (the surplus rows are then orthonormal directions
 * of the complement that C does not excite). Eigenvalues within
 * in * DBL_EPSILON * trace(C) of each other are equal at double
 * precision; the threshold rule of peso_inflora_extend uses that slack.
 *
 * Inputs are checked: C finite, symmetric within 1e-6 * max diag, no
 * negative diagonal; M's rows orthonormal within 1e-3 (float storage
 * gives about 1e-7), after which they are re-orthonormalised in double by
 * modified Gram-Schmidt. */
#ifndef PESO_METHOD_INFLORA_SUBSPACE_H
#define PESO_METHOD_INFLORA_SUBSPACE_H

#include "common/err.h"

/* The designed LoRA-A of one module: a [r, in] row-major = the top-r
 * eigenvectors of P C P, unit rows ordered by descending eigenvalue, each
 * orthogonal to the basis. k may be 0 (basis then unused, may be NULL).
 * Fails when 0 <= k <= in, r >= 1 do not hold or r > in - k (fewer free
 * directions than the rank), naming the numbers. */
int peso_inflora_design(const double *cov, int in, const float *basis, int k, int r, float *a, peso_err *err);

/* InfLoRA's memory of the input subspace (DualGPM-style), updated after a
 * stage: appends to basis (capacity max_k rows of in floats; rows
 * [0, *k) are the current basis) the top eigenvectors of P C P in
 * descending order of eigenvalue, each re-orthonormalised in double
 * (modified Gram-Schmidt) against the current rows and the ones added
 * before it, until the added eigenvalues sum to at least
 * threshold * trace(P C P) (within the precision above, so that a
 * threshold met exactly is met and directions carrying no energy of C
 * are not memorised), or the basis reaches max_k rows. Nothing is added
 * when *k == max_k. *k becomes the new row count; on failure basis and *k
 * are unchanged. The trainer uses max_k = in - r so that later stages
 * always keep r free directions for peso_inflora_design. Fails unless
 * 0 <= *k <= max_k <= in and threshold is in (0, 1]. */
int peso_inflora_extend(const double *cov, int in, float *basis, int *k, int max_k, double threshold,
                        peso_err *err);

#endif
