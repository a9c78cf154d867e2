#include "kernels/nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>

struct peso_nccl {
    ncclComm_t comm;
    cudaStream_t stream;
};

/* What rank 0 broadcasts: the id, and whether making it worked, so that
 * the other ranks do not enter ncclCommInitRank with a garbage id. */
typedef struct id_msg {
    int ok;
    ncclUniqueId id;
} id_msg;

/* Clears the runtime's last error too, so that a later check does not
 * report this failure again (sticky errors stay, as they must). */
static int cuda_fail(peso_err *err, const char *call, cudaError_t e)
{
    cudaGetLastError();
    return peso_errf(err, "%s: %s (%s)", call, cudaGetErrorString(e), cudaGetErrorName(e));
}

/* ncclGetLastError carries the detail (e.g. "Duplicate GPU detected")
 * that the result code's string lacks. */
static int nccl_fail(peso_err *err, const char *call, ncclResult_t r, ncclComm_t comm)
{
    const char *last = ncclGetLastError(comm);
    if (last && last[0])
        return peso_errf(err, "%s: %s (%s)", call, ncclGetErrorString(r), last);
    return peso_errf(err, "%s: %s", call, ncclGetErrorString(r));
}

static int mpi_fail(peso_err *err, const char *call, int rc)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return peso_errf(err, "%s: %.*s", call, len, msg);
}

static int open_device(peso_nccl *c, int device, peso_err *err)
{
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        char call[32];
        snprintf(call, sizeof call, "cudaSetDevice(%d)", device);
        return cuda_fail(err, call, e);
    }
    e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        c->stream = NULL;
        return cuda_fail(err, "cudaStreamCreateWithFlags", e);
    }
    return 0;
}

/* All ranks learn whether every rank's device is usable; a rank whose
 * own step failed keeps its own message. */
static int agree(MPI_Comm group, int mine, peso_err *err)
{
    int all = 0;
    int rc = MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, group);
    if (rc != MPI_SUCCESS)
        return mpi_fail(err, "MPI_Allreduce of the CUDA device status", rc);
    if (!mine)
        return -1;
    if (!all)
        return peso_errf(err, "peso_nccl_init: another rank of the group could not open its CUDA device");
    return 0;
}

static int share_id(MPI_Comm group, int rank, ncclUniqueId *id, peso_err *err)
{
    id_msg m = {.ok = 1};
    if (rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&m.id);
        if (r != ncclSuccess) {
            nccl_fail(err, "ncclGetUniqueId", r, NULL);
            m.ok = 0;
        }
    }
    int rc = MPI_Bcast(&m, (int)sizeof m, MPI_BYTE, 0, group);
    if (rc != MPI_SUCCESS)
        return mpi_fail(err, "MPI_Bcast of the NCCL id", rc);
    if (!m.ok)
        return rank == 0 ? -1
                         : peso_errf(err, "peso_nccl_init: rank 0 of the group could not make the NCCL id");
    *id = m.id;
    return 0;
}

static int connect_ranks(peso_nccl *c, MPI_Comm group, int rank, int size, int device, peso_err *err)
{
    ncclUniqueId id;
    int opened = open_device(c, device, err) == 0;
    if (agree(group, opened, err) < 0 || share_id(group, rank, &id, err) < 0)
        return -1;
    ncclResult_t r = ncclCommInitRank(&c->comm, size, id, rank);
    if (r != ncclSuccess) {
        c->comm = NULL;
        return nccl_fail(err, "ncclCommInitRank", r, NULL);
    }
    return 0;
}

int peso_nccl_init(peso_nccl **out, MPI_Comm group, int device, peso_err *err)
{
    *out = NULL;
    int rank = 0, size = 0;
    MPI_Comm_rank(group, &rank);
    MPI_Comm_size(group, &size);
    peso_nccl *c = peso_calloc(1, sizeof *c);
    if (connect_ranks(c, group, rank, size, device, err) < 0) {
        peso_err_prefix(err, "NCCL communicator of group rank %d of %d", rank, size);
        peso_nccl_free(c);
        return -1;
    }
    *out = c;
    return 0;
}

int peso_nccl_allreduce_f(peso_nccl *c, float *dev_buf, size_t n, peso_err *err)
{
    if (n == 0)
        return 0;
    ncclResult_t r = ncclAllReduce(dev_buf, dev_buf, n, ncclFloat32, ncclSum, c->comm, c->stream);
    if (r != ncclSuccess)
        return nccl_fail(err, "ncclAllReduce of the gradients", r, c->comm);
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess)
        return cuda_fail(err, "cudaStreamSynchronize after ncclAllReduce", e);
    /* a peer's failure shows up here, not in the local result codes */
    ncclResult_t async = ncclSuccess;
    r = ncclCommGetAsyncError(c->comm, &async);
    if (r != ncclSuccess)
        return nccl_fail(err, "ncclCommGetAsyncError", r, c->comm);
    if (async != ncclSuccess)
        return nccl_fail(err, "ncclAllReduce of the gradients (asynchronous)", async, c->comm);
    return 0;
}

int peso_nccl_device_count(int *n, peso_err *err)
{
    *n = 0;
    /* version 0: no driver is installed, the build machines' case, where
     * cudaGetDeviceCount says "insufficient driver" instead of "no device" */
    int driver = 0;
    cudaError_t e = cudaDriverGetVersion(&driver);
    if (e != cudaSuccess)
        return cuda_fail(err, "cudaDriverGetVersion", e);
    if (driver == 0)
        return 0;
    e = cudaGetDeviceCount(n);
    if (e == cudaErrorNoDevice) {
        *n = 0;
        cudaGetLastError();
        return 0;
    }
    if (e != cudaSuccess) {
        *n = 0;
        return cuda_fail(err, "cudaGetDeviceCount", e);
    }
    return 0;
}

void peso_nccl_free(peso_nccl *c)
{
    if (!c)
        return;
    if (c->comm)
        ncclCommDestroy(c->comm);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c);
}
