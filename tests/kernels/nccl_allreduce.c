/* The NCCL all-reduce under MPI (run by test_nccl.sh with 2 ranks): a
 * plain MPI program rather than a Criterion one, because Criterion runs
 * each test in a child process and MPI and CUDA must be initialised in
 * the process that mpirun started.
 *
 * Ranks whose node has fewer GPUs than its local rank index sit out
 * (NCCL refuses two ranks on one GPU), so the communicator is built over
 * a sub-communicator, as the trainer builds it over the train group.
 * Group rank r fills element i with r + 0.5 i; the sum over R ranks is
 * R(R-1)/2 + 0.5 R i. Every partial sum is a multiple of 0.5 below 2^23
 * (R <= 16, i < 1000003), so float sums in any order are exact and the
 * check is equality. Without a GPU: the device count is 0, a communicator
 * on device 0 fails on every rank with the CUDA error named, and every
 * rank exits 77 (skipped, tests/skip.sh). */
#include <cuda_runtime.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/nccl.h"

#define MAX_RANKS 16
/* the exit status CTest reads as "skipped" (SKIP_RETURN_CODE) */
#define EXIT_SKIPPED 77

static int rank_world;
static int no_gpu;

static int fail(const char *what, const char *msg)
{
    fprintf(stderr, "FAIL: world rank %d: %s: %s\n", rank_world, what, msg);
    return 1;
}

/* cudaMalloc'd buffer of n floats holding r + 0.5 i, all-reduced, then
 * compared with the closed form. */
static int check_sum(peso_nccl *c, int r, int size, size_t n)
{
    float *host = malloc(n * sizeof *host), *dev = NULL;
    if (!host)
        return fail("malloc", "out of memory");
    for (size_t i = 0; i < n; i++)
        host[i] = (float)r + 0.5f * (float)i;
    int bad = 1;
    char msg[PESO_ERR_MSG] = "";
    peso_err err = {{0}};
    cudaError_t e = cudaMalloc((void **)&dev, n * sizeof *dev);
    if (e != cudaSuccess)
        snprintf(msg, sizeof msg, "cudaMalloc: %s", cudaGetErrorString(e));
    else if ((e = cudaMemcpy(dev, host, n * sizeof *dev, cudaMemcpyHostToDevice)) != cudaSuccess)
        snprintf(msg, sizeof msg, "cudaMemcpy to the device: %s", cudaGetErrorString(e));
    else if (peso_nccl_allreduce_f(c, dev, n, &err) < 0)
        snprintf(msg, sizeof msg, "%s", err.msg);
    else if ((e = cudaMemcpy(host, dev, n * sizeof *dev, cudaMemcpyDeviceToHost)) != cudaSuccess)
        snprintf(msg, sizeof msg, "cudaMemcpy to the host: %s", cudaGetErrorString(e));
    else
        bad = 0;
    for (size_t i = 0; !bad && i < n; i++) {
        double want = size * (size - 1) / 2.0 + 0.5 * size * (double)i;
        if ((double)host[i] != want) {
            snprintf(msg, sizeof msg, "element %zu of %zu is %.9g, expected %.9g", i, n, host[i], want);
            bad = 1;
        }
    }
    cudaFree(dev);
    free(host);
    if (bad) {
        char what[64];
        snprintf(what, sizeof what, "all-reduce of %zu floats", n);
        return fail(what, msg);
    }
    return 0;
}

/* A device that does not exist on every rank: all ranks return -1 (none
 * waits in NCCL for the others) and the message names the CUDA call. */
static int check_bad_device(MPI_Comm group, int device)
{
    peso_nccl *c = NULL;
    peso_err err = {{0}};
    char want[64];
    snprintf(want, sizeof want, "cudaSetDevice(%d): ", device);
    if (peso_nccl_init(&c, group, device, &err) == 0) {
        peso_nccl_free(c);
        return fail("peso_nccl_init on a missing device", "succeeded");
    }
    if (c || !strstr(err.msg, want) || !strstr(err.msg, "NCCL communicator of group rank"))
        return fail("peso_nccl_init on a missing device: message", err.msg);
    return 0;
}

static int run_gpu(MPI_Comm group, int device)
{
    int r = 0, size = 0;
    MPI_Comm_rank(group, &r);
    MPI_Comm_size(group, &size);
    if (size > MAX_RANKS)
        return fail("group", "more than 16 ranks: the sums would not be exact");
    int failed = check_bad_device(group, 1 << 20);
    peso_nccl *c = NULL;
    peso_err err = {{0}};
    if (peso_nccl_init(&c, group, device, &err) < 0)
        return failed + fail("peso_nccl_init", err.msg);
    const size_t sizes[] = {1, 1024, 1000003};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
        failed += check_sum(c, r, size, sizes[k]);
    peso_nccl_free(c);
    if (!failed && r == 0)
        printf("nccl: %d rank(s): all-reduce of 1, 1024 and 1000003 floats exact\n", size);
    return failed;
}

static int run_no_gpu(void)
{
    if (check_bad_device(MPI_COMM_WORLD, 0))
        return 1;
    if (rank_world == 0)
        printf("nccl: no CUDA device visible to any rank; the no-device checks passed\n");
    no_gpu = 1;
    return 0;
}

static int run(void)
{
    int ndev = 0;
    peso_err err = {{0}};
    if (peso_nccl_device_count(&ndev, &err) < 0)
        return fail("peso_nccl_device_count", err.msg);
    MPI_Comm node, group;
    int local = 0, users = 0;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_world, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local);
    MPI_Comm_free(&node);
    int uses = local < ndev;
    MPI_Allreduce(&uses, &users, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (users == 0)
        return run_no_gpu();
    MPI_Comm_split(MPI_COMM_WORLD, uses ? 0 : MPI_UNDEFINED, rank_world, &group);
    if (!uses)
        return 0;
    int failed = run_gpu(group, local);
    MPI_Comm_free(&group);
    return failed;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_world);
    int failed = run(), any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Finalize();
    return any ? 1 : no_gpu ? EXIT_SKIPPED : 0;
}
