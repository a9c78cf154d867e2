/* Matrix products through OpenBLAS: every row-major layout the table
 * allows maps onto cblas_sgemm calls. The threads are OpenMP's, as for
 * every other cpu operation: each one runs single-threaded OpenBLAS on
 * its own slice of the output (see peso_backend_cpu_create). */
#include <cblas.h>
#include <omp.h>

#include "backend/cpu.h"

/* Multiply-adds below which a product runs on the calling thread
 * (OpenBLAS's own threshold for going multi-threaded). */
#define GEMM_PAR_MIN (1u << 18)

/* Output slices are multiples of this many rows or columns, a multiple
 * of the sgemm kernels' register blocks. */
#define GEMM_SLICE_ALIGN 16

/* Slice [lo, hi) of C's rows (by_rows) or columns for product i. */
static void gemm_slice(const peso_gemm *g, int i, int by_rows, int lo, int hi, float *c,
                       const float *a, const float *b)
{
    /* leading dimensions of the stored (untransposed) row-major matrices */
    int lda = g->trans_a ? g->m : g->k;
    int ldb = g->trans_b ? g->k : g->n;
    a += (size_t)i * g->stride_a;
    b += (size_t)i * g->stride_b;
    c += (size_t)i * g->stride_c;
    int m = g->m, n = g->n;
    if (by_rows) {
        /* rows of op(A): stored rows when plain, stored columns when transposed */
        a += g->trans_a ? (size_t)lo : (size_t)lo * lda;
        c += (size_t)lo * g->n;
        m = hi - lo;
    } else {
        b += g->trans_b ? (size_t)lo * ldb : (size_t)lo;
        c += lo;
        n = hi - lo;
    }
    cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                g->trans_b ? CblasTrans : CblasNoTrans, m, n, g->k, g->alpha, a, lda, b, ldb,
                g->beta, c, g->n);
}

int peso_cpu_matmul(peso_backend *be, const peso_gemm *gm, float *c, const float *a, const void *b,
                    peso_err *err)
{
    if (peso_gemm_check(be, gm, err) < 0)
        return -1;
    /* the device scale is host memory here: fold it into alpha */
    peso_gemm scaled = *gm;
    if (gm->alpha_dev) {
        scaled.alpha = gm->alpha * *gm->alpha_dev;
        scaled.alpha_dev = NULL;
    }
    const peso_gemm *g = &scaled;
    size_t work = (size_t)g->batch * g->m * g->n * g->k;
    int threads = work >= GEMM_PAR_MIN ? omp_get_max_threads() : 1;
    /* each product is cut along its longer output side into about as many
     * slices as it takes to give every thread one; a fixed cut for a
     * given thread count keeps the sums' order fixed */
    int by_rows = g->m >= g->n, side = by_rows ? g->m : g->n;
    int per = g->batch >= threads ? 1 : (threads + g->batch - 1) / g->batch;
    int size = (side + per - 1) / per;
    size = (size + GEMM_SLICE_ALIGN - 1) / GEMM_SLICE_ALIGN * GEMM_SLICE_ALIGN;
    int slices = (side + size - 1) / size, tasks = g->batch * slices;
#pragma omp parallel for schedule(static) if (threads > 1 && tasks > 1)
    for (int t = 0; t < tasks; t++) {
        int lo = (t % slices) * size, hi = lo + size < side ? lo + size : side;
        gemm_slice(g, t / slices, by_rows, lo, hi, c, a, b);
    }
    return 0;
}
