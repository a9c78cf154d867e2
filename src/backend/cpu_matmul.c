/* Matrix products through OpenBLAS: every row-major layout the table
 * allows maps onto one cblas_sgemm per product. */
#include <cblas.h>

#include "backend/cpu.h"

int peso_cpu_matmul(peso_backend *be, const peso_gemm *g, float *c, const float *a, const void *b,
                    peso_err *err)
{
    if (peso_gemm_check(be, g, err) < 0)
        return -1;
    /* leading dimensions of the stored (untransposed) row-major matrices */
    int lda = g->trans_a ? g->m : g->k;
    int ldb = g->trans_b ? g->k : g->n;
    const float *bf = b;
    for (int i = 0; i < g->batch; i++) {
        cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                    g->trans_b ? CblasTrans : CblasNoTrans, g->m, g->n, g->k, g->alpha,
                    a + (size_t)i * g->stride_a, lda, bf + (size_t)i * g->stride_b, ldb, g->beta,
                    c + (size_t)i * g->stride_c, g->n);
    }
    return 0;
}
