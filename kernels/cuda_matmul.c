/* Matrix products through cuBLAS. The table's matrices are row-major and
 * cuBLAS's column-major: a row-major [r, c] matrix is the column-major
 * [c, r] one, so C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T
 * with the operands swapped and the same transpose flags.
 *
 * Two modes (peso_backend_opts.f32):
 * - f32: float32 operands and CUBLAS_COMPUTE_32F_PEDANTIC (no TF32, no
 *   reduced-precision tricks), the mode compared with the cpu backend; a
 *   bf16 B is widened to float32 in scratch first (exact).
 * - bf16 (default): A, and B when it is float32, are rounded to bf16 in
 *   scratch; bf16 products accumulate in float32 into a float32 C. */
#include "kernels/cuda.h"

/* Sub-buffers carved from one scratch request start at this alignment. */
#define ALIGN 256

static size_t aligned(size_t bytes)
{
    return (bytes + ALIGN - 1) / ALIGN * ALIGN;
}

/* Elements from the first product's operand to the end of the last one. */
static size_t span(const peso_gemm *g, size_t stride, size_t one)
{
    return (size_t)(g->batch - 1) * stride + one;
}

/* The operands as cuBLAS will read them, after any conversion. */
struct operands {
    const void *a, *b;
    cudaDataType type;
    cublasComputeType_t compute;
    float *scalars; /* device alpha and beta when alpha_dev is set */
};

static int prepare(peso_backend *be, const peso_gemm *g, const float *a, const void *b, struct operands *op,
                   peso_err *err)
{
    peso_cuda *c = peso_cuda_ctx(be);
    size_t na = span(g, g->stride_a, (size_t)g->m * g->k);
    size_t nb = span(g, g->stride_b, (size_t)g->k * g->n);
    int conv_a = !c->f32, conv_b = c->f32 ? g->b_dtype == PESO_BF16 : g->b_dtype == PESO_F32;
    size_t esize = c->f32 ? sizeof(float) : 2;
    size_t a_bytes = conv_a ? aligned(na * esize) : 0, b_bytes = conv_b ? aligned(nb * esize) : 0;
    size_t s_bytes = g->alpha_dev ? 2 * sizeof(float) : 0;
    op->a = a;
    op->b = b;
    op->type = c->f32 ? CUDA_R_32F : CUDA_R_16BF;
    op->compute = c->f32 ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
    op->scalars = NULL;
    if (a_bytes + b_bytes + s_bytes == 0)
        return 0;
    char *s = peso_cuda_scratch(be, a_bytes + b_bytes + s_bytes, err);
    if (!s)
        return -1;
    if (conv_a) {
        if (peso_cuda_f32_to_bf16(be, s, a, na, err) < 0)
            return -1;
        op->a = s;
    }
    if (conv_b) {
        int rc = c->f32 ? peso_cuda_bf16_to_f32(be, (float *)(s + a_bytes), b, nb, err)
                        : peso_cuda_f32_to_bf16(be, s + a_bytes, (const float *)b, nb, err);
        if (rc < 0)
            return -1;
        op->b = s + a_bytes;
    }
    if (g->alpha_dev) {
        op->scalars = (float *)(s + a_bytes + b_bytes);
        if (peso_cuda_gemm_scalars(be, op->scalars, g->alpha, g->alpha_dev, g->beta, err) < 0)
            return -1;
    }
    return 0;
}

static cublasStatus_t gemm(peso_cuda *c, const peso_gemm *g, const struct operands *op, float *out,
                           const void *alpha, const void *beta)
{
    /* leading dimensions of the stored row-major matrices, as on cpu */
    int lda = g->trans_a ? g->m : g->k;
    int ldb = g->trans_b ? g->k : g->n;
    int one = g->batch == 1;
    return cublasGemmStridedBatchedEx(
        c->blas, g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, g->n, g->m,
        g->k, alpha, op->b, op->type, ldb, one ? 0 : (long long)g->stride_b, op->a, op->type, lda,
        one ? 0 : (long long)g->stride_a, beta, out, CUDA_R_32F, g->n, one ? 0 : (long long)g->stride_c,
        g->batch, op->compute, CUBLAS_GEMM_DEFAULT);
}

int peso_cuda_matmul(peso_backend *be, const peso_gemm *g, float *c, const float *a, const void *b,
                     peso_err *err)
{
    if (peso_gemm_check(be, g, err) < 0)
        return -1;
    peso_cuda *cx = peso_cuda_ctx(be);
    struct operands op;
    if (prepare(be, g, a, b, &op, err) < 0)
        return -1;
    if (!op.scalars) {
        PESO_CUBLAS(gemm(cx, g, &op, c, &g->alpha, &g->beta));
    } else {
        /* alpha * *alpha_dev never leaves the device; the pointer mode is
         * restored before any return */
        PESO_CUBLAS(cublasSetPointerMode(cx->blas, CUBLAS_POINTER_MODE_DEVICE));
        cublasStatus_t s = gemm(cx, g, &op, c, op.scalars, op.scalars + 1);
        cublasStatus_t r = cublasSetPointerMode(cx->blas, CUBLAS_POINTER_MODE_HOST);
        PESO_CUBLAS(s);
        PESO_CUBLAS(r);
    }
    return peso_cuda_launched(be, "cublasGemmStridedBatchedEx", __FILE__, __LINE__, err);
}
