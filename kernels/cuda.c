/* The cuda backend's creation, memory, ordering and table: one device,
 * one non-blocking stream that every operation runs on in call order, a
 * cuBLAS handle bound to it, and grow-only scratch memory. The
 * operations themselves live in cuda_matmul.c, cuda_ops.cu, cuda_attn.cu
 * and cuda_prox.cu (see kernels/cuda.h). */
#include "kernels/cuda.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Scratch grows in steps of this many bytes at least, so that a slowly
 * growing request does not reallocate on every call. */
#define SCRATCH_STEP ((size_t)1 << 20)

/* __FILE__ from "kernels/" on (the build passes absolute paths). */
static const char *short_file(const char *file)
{
    const char *k = strstr(file, "kernels/");
    if (k)
        return k;
    const char *slash = strrchr(file, '/');
    return slash ? slash + 1 : file;
}

int peso_cuda_fail(peso_err *err, const char *file, int line, const char *call, int code, const char *msg)
{
    /* clears a non-sticky runtime error, so that the next launch check
     * does not report this failure a second time */
    cudaGetLastError();
    return peso_errf(err, "%s:%d: %s failed: %d (%s)", short_file(file), line, call, code, msg);
}

const char *peso_cublas_status_name(cublasStatus_t s)
{
    return cublasGetStatusName(s);
}

int peso_cuda_launched(peso_backend *be, const char *kernel, const char *file, int line, peso_err *err)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return peso_cuda_fail(err, file, line, kernel, (int)e, cudaGetErrorString(e));
    if (peso_cuda_ctx(be)->debug_sync) {
        e = cudaStreamSynchronize(peso_cuda_ctx(be)->stream);
        if (e != cudaSuccess) {
            char call[160];
            snprintf(call, sizeof call, "%s (run, debug sync)", kernel);
            return peso_cuda_fail(err, file, line, call, (int)e, cudaGetErrorString(e));
        }
    }
    return 0;
}

/* Rounds a request up to the scratch step. */
static size_t grown(size_t need)
{
    size_t steps = need / SCRATCH_STEP + 1;
    return steps * SCRATCH_STEP;
}

void *peso_cuda_scratch(peso_backend *be, size_t bytes, peso_err *err)
{
    peso_cuda *c = peso_cuda_ctx(be);
    if (c->scratch && bytes <= c->scratch_cap)
        return c->scratch;
    /* kernels queued earlier may still read the old buffer */
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        peso_cuda_fail(err, __FILE__, __LINE__, "cudaStreamSynchronize before growing scratch", (int)e,
                       cudaGetErrorString(e));
        return NULL;
    }
    cudaFree(c->scratch);
    c->scratch = NULL;
    c->scratch_cap = 0;
    size_t cap = grown(bytes);
    e = cudaMalloc(&c->scratch, cap);
    if (e != cudaSuccess) {
        c->scratch = NULL;
        char call[96];
        snprintf(call, sizeof call, "cudaMalloc of %zu bytes of scratch", cap);
        peso_cuda_fail(err, __FILE__, __LINE__, call, (int)e, cudaGetErrorString(e));
        return NULL;
    }
    c->scratch_cap = cap;
    return c->scratch;
}

void *peso_cuda_host(peso_backend *be, size_t bytes, peso_err *err)
{
    peso_cuda *c = peso_cuda_ctx(be);
    if (c->host && bytes <= c->host_cap)
        return c->host;
    /* a copy queued earlier may still write into the old buffer */
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        peso_cuda_fail(err, __FILE__, __LINE__, "cudaStreamSynchronize before growing host staging", (int)e,
                       cudaGetErrorString(e));
        return NULL;
    }
    cudaFreeHost(c->host);
    c->host = NULL;
    c->host_cap = 0;
    size_t cap = grown(bytes);
    e = cudaMallocHost(&c->host, cap);
    if (e != cudaSuccess) {
        c->host = NULL;
        char call[96];
        snprintf(call, sizeof call, "cudaMallocHost of %zu bytes of staging", cap);
        peso_cuda_fail(err, __FILE__, __LINE__, call, (int)e, cudaGetErrorString(e));
        return NULL;
    }
    c->host_cap = cap;
    return c->host;
}

/* ---- ordering and memory ---- */

static int cuda_sync(peso_backend *be, peso_err *err)
{
    PESO_CU(cudaStreamSynchronize(peso_cuda_ctx(be)->stream));
    return 0;
}

/* Zeroed on return: the memset is waited for, so that memory handed to
 * another stream (NCCL's) is zero there too. */
static int cuda_alloc(peso_backend *be, void **p, size_t bytes, peso_err *err)
{
    peso_cuda *c = peso_cuda_ctx(be);
    void *q = NULL;
    *p = NULL;
    /* a zero-byte request still gets a distinct valid pointer, as on cpu */
    cudaError_t e = cudaMalloc(&q, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        char call[64];
        snprintf(call, sizeof call, "cudaMalloc of %zu bytes", bytes);
        return peso_cuda_fail(err, __FILE__, __LINE__, call, (int)e, cudaGetErrorString(e));
    }
    e = cudaMemsetAsync(q, 0, bytes, c->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        cudaFree(q);
        return peso_cuda_fail(err, __FILE__, __LINE__, "zeroing new memory (cudaMemsetAsync)", (int)e,
                              cudaGetErrorString(e));
    }
    *p = q;
    return 0;
}

/* Waits for the stream first: a queued kernel may still use p. */
static void cuda_free(peso_backend *be, void *p)
{
    if (!p)
        return;
    cudaStreamSynchronize(peso_cuda_ctx(be)->stream);
    cudaFree(p);
}

static int cuda_zero(peso_backend *be, void *p, size_t bytes, peso_err *err)
{
    if (bytes == 0)
        return 0;
    PESO_CU(cudaMemsetAsync(p, 0, bytes, peso_cuda_ctx(be)->stream));
    return peso_cuda_launched(be, "cudaMemsetAsync (zero)", __FILE__, __LINE__, err);
}

static int cuda_upload(peso_backend *be, void *dst, const void *host, size_t bytes, peso_err *err)
{
    peso_cuda *c = peso_cuda_ctx(be);
    if (bytes == 0)
        return 0;
    PESO_CU(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, c->stream));
    /* the host buffer may be reused on return */
    PESO_CU(cudaStreamSynchronize(c->stream));
    return 0;
}

static int cuda_download(peso_backend *be, void *host, const void *src, size_t bytes, peso_err *err)
{
    peso_cuda *c = peso_cuda_ctx(be);
    if (bytes == 0)
        return 0;
    PESO_CU(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    PESO_CU(cudaStreamSynchronize(c->stream));
    return 0;
}

/* 1 when p is host memory (pinned or not), 0 when device or managed. */
static int is_host(const void *p, int *host, peso_err *err)
{
    struct cudaPointerAttributes a;
    PESO_CU(cudaPointerGetAttributes(&a, p));
    *host = a.type == cudaMemoryTypeHost || a.type == cudaMemoryTypeUnregistered;
    return 0;
}

/* Any direction (cudaMemcpyDefault); waits only when a side is host
 * memory, so that the host buffer may be reused on return. */
static int cuda_copy(peso_backend *be, void *dst, const void *src, size_t bytes, peso_err *err)
{
    peso_cuda *c = peso_cuda_ctx(be);
    if (bytes == 0)
        return 0;
    int dst_host = 0, src_host = 0;
    if (is_host(dst, &dst_host, err) < 0 || is_host(src, &src_host, err) < 0)
        return -1;
    PESO_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, c->stream));
    if (dst_host || src_host)
        PESO_CU(cudaStreamSynchronize(c->stream));
    return peso_cuda_launched(be, "cudaMemcpyAsync (copy)", __FILE__, __LINE__, err);
}

/* ---- creation ---- */

static void cuda_destroy(peso_backend *be)
{
    if (!be)
        return;
    peso_cuda *c = peso_cuda_ctx(be);
    if (c) {
        if (c->stream)
            cudaStreamSynchronize(c->stream);
        if (c->blas)
            cublasDestroy(c->blas);
        cudaFree(c->scratch);
        cudaFreeHost(c->host);
        cudaFree(c->prox_dev);
        free(c->prox_host);
        if (c->stream)
            cudaStreamDestroy(c->stream);
        free(c);
    }
    free(be);
}

/* The local rank from the launcher's environment: Open MPI's, else
 * Slurm's, else 0. */
static int local_rank(int *rank, peso_err *err)
{
    const char *names[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"};
    *rank = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *s = getenv(names[i]);
        if (!s || !s[0])
            continue;
        char *end = NULL;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || *end || v < 0 || v > 1 << 20)
            return peso_errf(err, "cuda backend: %s='%s', expected a local rank >= 0", names[i], s);
        *rank = (int)v;
        return 0;
    }
    return 0;
}

static int pick_device(const peso_backend_opts *o, int *device, peso_err *err)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return peso_errf(err, "cuda backend: no CUDA device visible (cudaGetDeviceCount: %s)",
                         cudaGetErrorString(e));
    }
    if (count < 1)
        return peso_errf(err, "cuda backend: no CUDA device visible (cudaGetDeviceCount: 0 devices)");
    if (o->device >= 0) {
        if (o->device >= count)
            return peso_errf(err, "cuda backend: device %d asked for, %d visible", o->device, count);
        *device = o->device;
        return 0;
    }
    int rank = 0;
    if (local_rank(&rank, err) < 0)
        return -1;
    *device = rank % count;
    return 0;
}

static int debug_sync_env(void)
{
    const char *s = getenv("PESO_DEBUG_SYNC");
    return s && strcmp(s, "1") == 0;
}

static int open_ctx(peso_cuda *c, const peso_backend_opts *o, peso_err *err)
{
    if (pick_device(o, &c->device, err) < 0)
        return -1;
    c->f32 = o->f32 != 0;
    c->debug_sync = o->debug_sync != 0 || debug_sync_env();
    PESO_CU(cudaSetDevice(c->device));
    PESO_CU(cudaDeviceGetAttribute(&c->sm_count, cudaDevAttrMultiProcessorCount, c->device));
    PESO_CU(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    PESO_CUBLAS(cublasCreate(&c->blas));
    PESO_CUBLAS(cublasSetStream(c->blas, c->stream));
    PESO_CUBLAS(cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST));
    return 0;
}

static void fill_table(peso_backend *be)
{
    be->name = "cuda";
    be->weight_dtypes = (1u << PESO_F32) | (1u << PESO_BF16);
    be->destroy = cuda_destroy;
    be->sync = cuda_sync;
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->zero = cuda_zero;
    be->upload = cuda_upload;
    be->download = cuda_download;
    be->copy = cuda_copy;
    be->matmul = peso_cuda_matmul;
    be->rmsnorm = peso_cuda_rmsnorm;
    be->rmsnorm_backward = peso_cuda_rmsnorm_backward;
    be->rope = peso_cuda_rope;
    be->rope_backward = peso_cuda_rope_backward;
    be->attention = peso_cuda_attention;
    be->attention_backward = peso_cuda_attention_backward;
    be->swiglu = peso_cuda_swiglu;
    be->swiglu_backward = peso_cuda_swiglu_backward;
    be->embed = peso_cuda_embed;
    be->embed_backward = peso_cuda_embed_backward;
    be->xent = peso_cuda_xent;
    be->adamw = peso_cuda_adamw;
    be->sumsq = peso_cuda_sumsq;
    be->scale = peso_cuda_scale;
    be->prox_kl = peso_cuda_prox_kl;
    be->prox_l2 = peso_cuda_prox_l2;
    be->prox_ortho = peso_cuda_prox_ortho;
    be->row_kl = peso_cuda_row_kl;
    be->gather_rows = peso_cuda_gather_rows;
    be->log_softmax_sel = peso_cuda_log_softmax_sel;
    be->decode_attention = peso_cuda_decode_attention;
}

peso_backend *peso_backend_cuda_create(const peso_backend_opts *o, peso_err *err)
{
    peso_backend *be = peso_calloc(1, sizeof *be);
    peso_cuda *c = peso_calloc(1, sizeof *c);
    be->ctx = c;
    fill_table(be);
    if (open_ctx(c, o, err) < 0) {
        cuda_destroy(be);
        return NULL;
    }
    return be;
}
