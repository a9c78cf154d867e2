/* The gradient all-reduce of the CUDA backend (DESIGN.md "Parallel
 * design"): one NCCL communicator per train group, created from an id
 * that rank 0 of the group makes and broadcasts over MPI.
 *
 * How the trainer uses it: under the CUDA backend the flat gradient
 * buffer (peso_llama.grads, flat.numel + PESO_LLAMA_GRAD_TAIL floats) is
 * device memory, so the step's reduction
 *
 *     peso_par_allreduce_f(par, m->grads, m->flat.numel + TAIL_N, err)
 *
 * becomes
 *
 *     peso_nccl_allreduce_f(nccl, m->grads, m->flat.numel + TAIL_N, err)
 *
 * one call per optimizer step over the gradients and the loss sums and
 * flags the trainer uploads into the tail, with no copy through the host.
 * The communicator is made once per run, after peso_par_init, by every
 * rank of the train group (the evaluation group needs none):
 *
 *     peso_nccl_init(&nccl, par.group, device, err)
 *
 * where device is the rank's GPU on its node (its rank among the ranks
 * of the node, as from MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)): NCCL
 * refuses two ranks of one communicator on the same GPU. */
#ifndef PESO_KERNELS_NCCL_H
#define PESO_KERNELS_NCCL_H

#include <mpi.h>
#include <stddef.h>

#include "common/err.h"

typedef struct peso_nccl peso_nccl;

/* Collective over group: every rank calls it with its own CUDA device.
 * Each rank selects its device and makes a stream of its own; the ranks
 * agree that all of them succeeded before rank 0 makes the NCCL id, which
 * MPI_Bcast hands to the others, so a rank whose device fails makes every
 * rank return -1 instead of leaving them waiting in ncclCommInitRank.
 * Messages name the CUDA or NCCL call and its error string. */
int peso_nccl_init(peso_nccl **out, MPI_Comm group, int device, peso_err *err);

/* Sums n floats of device memory in place over the group (ncclAllReduce,
 * ncclSum) on the communicator's stream and waits for the result, so the
 * buffer is ready for the optimizer when it returns. Collective. */
int peso_nccl_allreduce_f(peso_nccl *c, float *dev_buf, size_t n, peso_err *err);

/* CUDA devices this process sees; a machine without a CUDA driver or
 * without a GPU has 0, which is not an error (the GPU tests skip). */
int peso_nccl_device_count(int *n, peso_err *err);

/* Destroys the communicator and the stream; NULL is allowed. */
void peso_nccl_free(peso_nccl *c);

#endif
