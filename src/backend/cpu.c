/* The cpu backend: device memory is host memory, weights are float32, the
 * operations live in cpu_*.c. It is the reference every other backend is
 * compared with, and the embedded default. */
#include "backend/cpu.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* The cpu backend's ctx: one scratch buffer, grown on demand, so that
 * operations needing working memory (attention's score blocks) do not
 * allocate on every call. */
typedef struct cpu_ctx {
    float *scratch;
    size_t cap; /* floats */
} cpu_ctx;

float *peso_cpu_scratch(peso_backend *be, size_t per_thread, size_t *slice)
{
    cpu_ctx *c = be->ctx;
    /* slices rounded up to a cache line (16 floats) */
    *slice = (per_thread + 15) / 16 * 16;
    size_t need = *slice * (size_t)omp_get_max_threads();
    if (need > c->cap) {
        free(c->scratch);
        c->scratch = peso_malloc(need * sizeof *c->scratch);
        c->cap = need;
    }
    return c->scratch;
}


static int cpu_alloc(peso_backend *be, void **p, size_t bytes, peso_err *err)
{
    (void)be;
    (void)err;
    /* 64-byte aligned for vector loads; calloc semantics as documented */
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *q = aligned_alloc(64, rounded ? rounded : 64);
    if (!q)
        return peso_errf(err, "cpu alloc: out of memory allocating %zu bytes", bytes);
    memset(q, 0, rounded ? rounded : 64);
    *p = q;
    return 0;
}

static void cpu_free(peso_backend *be, void *p)
{
    (void)be;
    free(p);
}

static int cpu_zero(peso_backend *be, void *p, size_t bytes, peso_err *err)
{
    (void)be;
    (void)err;
    memset(p, 0, bytes);
    return 0;
}

/* upload, download and copy are all one memcpy when device == host */
static int cpu_copy(peso_backend *be, void *dst, const void *src, size_t bytes, peso_err *err)
{
    (void)be;
    (void)err;
    if (bytes)
        memmove(dst, src, bytes);
    return 0;
}

/* every operation has finished when it returns */
static int cpu_sync(peso_backend *be, peso_err *err)
{
    (void)be;
    (void)err;
    return 0;
}

static void cpu_destroy(peso_backend *be)
{
    cpu_ctx *c = be->ctx;
    free(c->scratch);
    free(c);
    free(be);
}

peso_backend *peso_backend_cpu_create(peso_err *err)
{
    (void)err;
    /* The backend's threads are OpenMP's, each calling OpenBLAS on its own
     * share of the work; OpenBLAS's own pool on the same cores would spin
     * in their way (training steps 1.7x slower, beam search up to 3x on
     * 2 cores), so OpenBLAS runs single-threaded from here on. */
    openblas_set_num_threads(1);
    peso_backend *be = peso_calloc(1, sizeof *be);
    be->name = "cpu";
    be->weight_dtypes = 1u << PESO_F32;
    be->ctx = peso_calloc(1, sizeof(cpu_ctx));
    be->destroy = cpu_destroy;
    be->sync = cpu_sync;
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->zero = cpu_zero;
    be->upload = cpu_copy;
    be->download = cpu_copy;
    be->copy = cpu_copy;
    be->matmul = peso_cpu_matmul;
    be->rmsnorm = peso_cpu_rmsnorm;
    be->rmsnorm_backward = peso_cpu_rmsnorm_backward;
    be->rope = peso_cpu_rope;
    be->rope_backward = peso_cpu_rope_backward;
    be->attention = peso_cpu_attention;
    be->attention_backward = peso_cpu_attention_backward;
    be->swiglu = peso_cpu_swiglu;
    be->swiglu_backward = peso_cpu_swiglu_backward;
    be->embed = peso_cpu_embed;
    be->embed_backward = peso_cpu_embed_backward;
    be->xent = peso_cpu_xent;
    be->adamw = peso_cpu_adamw;
    be->sumsq = peso_cpu_sumsq;
    be->scale = peso_cpu_scale;
    be->prox_kl = peso_cpu_prox_kl;
    be->prox_l2 = peso_cpu_prox_l2;
    be->prox_ortho = peso_cpu_prox_ortho;
    be->row_kl = peso_cpu_row_kl;
    be->gather_rows = peso_cpu_gather_rows;
    be->log_softmax_sel = peso_cpu_log_softmax_sel;
    be->decode_attention = peso_cpu_decode_attention;
    return be;
}
