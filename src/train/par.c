#include "train/par.h"

#include <stdio.h>
#include <string.h>

#define TAG_EVAL 7001

static int mpi_fail(int rc, const char *what, peso_err *err)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return peso_errf(err, "MPI %s: %.*s", what, len, msg);
}

int peso_par_init(peso_par *p, int eval_ranks, peso_err *err)
{
    memset(p, 0, sizeof *p);
    p->group = MPI_COMM_NULL;
    MPI_Comm_size(MPI_COMM_WORLD, &p->world);
    MPI_Comm_rank(MPI_COMM_WORLD, &p->rank);
    if (eval_ranks >= p->world)
        return peso_errf(err, "parallel.eval_ranks is %d but the job has %d rank(s): at least one must train",
                         eval_ranks, p->world);
    p->n_eval = eval_ranks;
    p->n_train = p->world - eval_ranks;
    p->is_eval = p->rank >= p->n_train;
    p->eval_root = eval_ranks ? p->n_train : -1;
    int rc = MPI_Comm_split(MPI_COMM_WORLD, p->is_eval, p->rank, &p->group);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "Comm_split", err);
    MPI_Comm_rank(p->group, &p->grank);
    MPI_Comm_size(p->group, &p->gsize);
    return 0;
}

void peso_par_free(peso_par *p)
{
    if (p->group != MPI_COMM_NULL)
        MPI_Comm_free(&p->group);
    p->group = MPI_COMM_NULL;
}

void peso_par_range(size_t n, int r, int size, size_t *lo, size_t *hi)
{
    *lo = n * (size_t)r / (size_t)size;
    *hi = n * (size_t)(r + 1) / (size_t)size;
}

int peso_par_allreduce_f(const peso_par *p, float *buf, size_t n, peso_err *err)
{
    if (p->gsize < 2)
        return 0;
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, p->group);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "Allreduce of the gradients", err);
}

int peso_par_allreduce_grads(const peso_par *p, peso_backend *be, float *dev, size_t n, float *host, size_t n_tail,
                             peso_err *err)
{
    if (p->gsize < 2)
        return 0;
    if (be->download(be, host, dev, n * sizeof *host, err) < 0 ||
        peso_par_allreduce_f(p, host, n + n_tail, err) < 0)
        return -1;
    return be->upload(be, dev, host, n * sizeof *host, err);
}

int peso_par_allreduce_d(const peso_par *p, double *buf, size_t n, peso_err *err)
{
    if (p->gsize < 2)
        return 0;
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, p->group);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "Allreduce", err);
}

int peso_par_reduce_d(const peso_par *p, double *buf, size_t n, peso_err *err)
{
    if (p->gsize < 2)
        return 0;
    int rc = p->grank == 0 ? MPI_Reduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, 0, p->group)
                           : MPI_Reduce(buf, NULL, (int)n, MPI_DOUBLE, MPI_SUM, 0, p->group);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "Reduce of the metric sums", err);
}

int peso_par_barrier(const peso_par *p, peso_err *err)
{
    if (p->gsize < 2)
        return 0;
    int rc = MPI_Barrier(p->group);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "Barrier", err);
}

int peso_par_world_barrier(peso_err *err)
{
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "Barrier", err);
}

/* One message: the stage as an int, then the path (NUL included). */
int peso_par_send_eval(const peso_par *p, int stage, const char *path, peso_err *err)
{
    char buf[4096];
    int n = (int)strlen(path) + 1;
    if (n + (int)sizeof stage > (int)sizeof buf)
        return peso_errf(err, "checkpoint path too long for the evaluation group: %s", path);
    memcpy(buf, &stage, sizeof stage);
    memcpy(buf + sizeof stage, path, (size_t)n);
    int rc = MPI_Send(buf, (int)sizeof stage + n, MPI_CHAR, p->eval_root, TAG_EVAL, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "Send to the evaluation group", err);
}

int peso_par_recv_eval(const peso_par *p, int *stage, char *path, size_t n, peso_err *err)
{
    char buf[4096];
    memset(buf, 0, sizeof buf);
    if (p->grank == 0) {
        int rc = MPI_Recv(buf, (int)sizeof buf, MPI_CHAR, 0, TAG_EVAL, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, "Recv from train rank 0", err);
    }
    int rc = MPI_Bcast(buf, (int)sizeof buf, MPI_CHAR, 0, p->group);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "Bcast in the evaluation group", err);
    memcpy(stage, buf, sizeof *stage);
    buf[sizeof buf - 1] = '\0';
    snprintf(path, n, "%s", buf + sizeof *stage);
    return 0;
}

FILE *peso_par_log(const peso_par *p)
{
    return p->rank == 0 || (p->is_eval && p->grank == 0) ? stdout : NULL;
}

int peso_par_fail(const peso_par *p, const char *prog, const char *msg)
{
    if (p->world < 2) {
        fprintf(stderr, "%s: %s\n", prog, msg);
        return 1;
    }
    fprintf(stderr, "%s: rank %d: %s\n", prog, p->rank, msg);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
}
