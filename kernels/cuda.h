/* The cuda backend: the operation table of backend/backend.h on one NVIDIA
 * GPU. Internal to the backend; the model reaches it through
 * peso_backend_open({.name = "cuda"}) and the table only.
 *
 * Files: cuda.c (creation, memory, ordering, the table), cuda_matmul.c
 * (cuBLAS products), cuda_ops.cu (norms, rotary, SwiGLU, embeddings,
 * gathers, cross-entropy, AdamW, reductions), cuda_attn.cu (causal
 * attention forward/backward, decode attention), cuda_prox.cu (proximal
 * terms, row softmax-KL, selected log-softmax).
 *
 * Rules every file keeps:
 * - Everything runs on ctx->stream, in call order.
 * - Every CUDA and cuBLAS call is checked with PESO_CU / PESO_CUBLAS, and
 *   every launch with PESO_LAUNCHED right after it: a failure returns -1
 *   with the call (or kernel), file and line in err. With debug_sync the
 *   check also synchronises, so an asynchronous fault is reported by the
 *   operation that caused it.
 * - Argument checks are the shared ones (peso_gemm_check, ...) and happen
 *   before anything is queued.
 * - No cudaMalloc inside an operation except growing ctx scratch
 *   (peso_cuda_scratch), which reaches its size in the first step and
 *   stays there.
 * - Accumulations that the cpu backend does in double are done in double
 *   here too, so that float32 mode matches it to ~1e-6 relative. */
#ifndef PESO_KERNELS_CUDA_H
#define PESO_KERNELS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct peso_cuda {
    int device;
    int f32;        /* products in float32 (else bf16 operands, float32 accumulation) */
    int debug_sync; /* synchronise after every operation */
    cudaStream_t stream;
    cublasHandle_t blas;
    /* grow-only device scratch (operand conversions, partial sums) */
    void *scratch;
    size_t scratch_cap;
    /* pinned host staging for small results (reduction partials) */
    void *host;
    size_t host_cap;
    /* device copy of the last proximal groups (cuda_prox.cu) */
    void *prox_dev;
    size_t prox_cap;
    void *prox_host; /* the host descriptors it was made from, to compare */
    size_t prox_host_bytes;
    int sm_count;
} peso_cuda;

peso_backend *peso_backend_cuda_create(const peso_backend_opts *o, peso_err *err);

/* Checks of a CUDA runtime / cuBLAS status: return -1 from the calling
 * function with "file:line: call: message" in err. */
int peso_cuda_fail(peso_err *err, const char *file, int line, const char *call, int code,
                   const char *msg);
#define PESO_CU(call)                                                                              \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return peso_cuda_fail(err, __FILE__, __LINE__, #call, (int)e_, cudaGetErrorString(e_)); \
    } while (0)
const char *peso_cublas_status_name(cublasStatus_t s);
#define PESO_CUBLAS(call)                                                                          \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return peso_cuda_fail(err, __FILE__, __LINE__, #call, (int)s_,                         \
                                  peso_cublas_status_name(s_));                                    \
    } while (0)
/* After a launch: the launch error, and with debug_sync the kernel's. */
int peso_cuda_launched(peso_backend *be, const char *kernel, const char *file, int line,
                       peso_err *err);
#define PESO_LAUNCHED(be, kernel)                                                                  \
    do {                                                                                           \
        if (peso_cuda_launched((be), (kernel), __FILE__, __LINE__, err) < 0)                       \
            return -1;                                                                             \
    } while (0)

/* Device scratch of at least `bytes` (256-byte aligned), valid until the
 * next call; grows (cudaFree + cudaMalloc after a stream sync) only when
 * too small. */
void *peso_cuda_scratch(peso_backend *be, size_t bytes, peso_err *err);
/* Pinned host memory of at least `bytes`, likewise. */
void *peso_cuda_host(peso_backend *be, size_t bytes, peso_err *err);

static inline peso_cuda *peso_cuda_ctx(peso_backend *be)
{
    return (peso_cuda *)be->ctx;
}

/* ---- table entries (signatures of backend/backend.h) ---- */
int peso_cuda_matmul(peso_backend *be, const peso_gemm *g, float *c, const float *a, const void *b,
                     peso_err *err);
int peso_cuda_rmsnorm(peso_backend *be, float *y, float *rstd, const float *x, const float *w, int n,
                      int c, float eps, peso_err *err);
int peso_cuda_rmsnorm_backward(peso_backend *be, float *dx, float *dw, const float *dy,
                               const float *x, const float *w, const float *rstd, int n, int c,
                               peso_err *err);
int peso_cuda_rope(peso_backend *be, float *x, const int32_t *pos, const float *inv_freq, int n_tok,
                   int n_head, int head_dim, peso_err *err);
int peso_cuda_rope_backward(peso_backend *be, float *dx, const int32_t *pos, const float *inv_freq,
                            int n_tok, int n_head, int head_dim, peso_err *err);
int peso_cuda_attention(peso_backend *be, const peso_attn_shape *s, float *out, float *lse,
                        const float *q, const float *k, const float *v, const int32_t *seq_len,
                        peso_err *err);
int peso_cuda_attention_backward(peso_backend *be, const peso_attn_shape *s, float *dq, float *dk,
                                 float *dv, const float *dout, const float *q, const float *k,
                                 const float *v, const float *out, const float *lse,
                                 const int32_t *seq_len, peso_err *err);
int peso_cuda_swiglu(peso_backend *be, float *h, const float *g, const float *u, size_t n,
                     peso_err *err);
int peso_cuda_swiglu_backward(peso_backend *be, float *dg, float *du, const float *dh,
                              const float *g, const float *u, size_t n, peso_err *err);
int peso_cuda_embed(peso_backend *be, const peso_table *t, float *out, const int32_t *ids, int n,
                    peso_err *err);
int peso_cuda_embed_backward(peso_backend *be, const peso_table *t, float *dtrain,
                             const float *dout, const int32_t *ids, int n, peso_err *err);
int peso_cuda_xent(peso_backend *be, const peso_table *head, const float *h, int n_tok,
                   const int32_t *pos, const int32_t *target, int n_pos, float scale,
                   float *losses, float *dh, float *dhead, peso_err *err);
int peso_cuda_adamw(peso_backend *be, float *param, const float *grad, float *m, float *v, size_t n,
                    const peso_adamw *hp, peso_err *err);
int peso_cuda_sumsq(peso_backend *be, const float *x, size_t n, double *out, peso_err *err);
int peso_cuda_scale(peso_backend *be, float *x, size_t n, float s, peso_err *err);
int peso_cuda_prox_kl(peso_backend *be, const peso_prox_groups *gs, int lo, int hi, const float *v,
                      const float *v_prev, double lambda, float *grad, double *value,
                      peso_err *err);
int peso_cuda_prox_l2(peso_backend *be, const peso_prox_groups *gs, int lo, int hi, const float *v,
                      const float *v_prev, double lambda, float *grad, double *value,
                      peso_err *err);
int peso_cuda_prox_ortho(peso_backend *be, const peso_prox_groups *gs, int rank, int lo, int hi,
                         const float *v, const float *v_prev, double lambda, float *grad,
                         double *value, peso_err *err);
int peso_cuda_row_kl(peso_backend *be, const float *z, const float *z_prev, const int32_t *lens,
                     int B, int T, int d, double scale, float *dz, double *value, peso_err *err);
int peso_cuda_gather_rows(peso_backend *be, float *dst, const float *src, int n_src, int width,
                          const int32_t *idx, int n, peso_err *err);
int peso_cuda_log_softmax_sel(peso_backend *be, float *out, float *lse, const float *x, int n,
                              int V, const int32_t *sel, int n_sel, peso_err *err);
int peso_cuda_decode_attention(peso_backend *be, const peso_decode_attn_shape *s, float *out,
                               const float *q, const float *pk, const float *pv, const float *ok,
                               const float *ov, peso_err *err);

/* bf16 <-> float32 conversions on the stream (cuda_ops.cu): dst[i] =
 * round-to-nearest-even bf16 of src[i], and back (exact). */
int peso_cuda_f32_to_bf16(peso_backend *be, void *dst, const float *src, size_t n, peso_err *err);
int peso_cuda_bf16_to_f32(peso_backend *be, float *dst, const void *src, size_t n, peso_err *err);

/* The scalars of a product with a device scale (cuda_ops.cu, used by
 * cuda_matmul.c): dst[0] = alpha * *alpha_dev, dst[1] = beta, on the
 * stream. */
int peso_cuda_gemm_scalars(peso_backend *be, float *dst, float alpha, const float *alpha_dev, float beta,
                           peso_err *err);

#ifdef __cplusplus
}
#endif

#endif
