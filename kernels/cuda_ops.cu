/* The cuda backend's element-wise and row operations: RMSNorm, rotary
 * embedding, SwiGLU, embeddings and row gathers, cross-entropy at selected
 * positions, AdamW, sum of squares, scaling, and the bf16 conversions the
 * products use. Each mirrors its cpu_*.c reference (same argument checks,
 * same formulas in the same order).
 *
 * Conventions of this file:
 * - Kernels with a block reduction run with exactly BLOCK threads (a
 *   multiple of 32); the reductions (block_sum, block_max) combine in a
 *   fixed tree, so results are the same run to run.
 * - Products and sums that the cpu code writes as plain float arithmetic
 *   go through mul/add/sub/dvd, which forbid nvcc's fused multiply-add
 *   contraction, so that they round as the cpu backend's do.
 * - Gradients that several rows add into one place (embedding rows,
 *   repeated positions, dw of RMSNorm) are summed without atomics, in a
 *   fixed order. */
#include <cuda_bf16.h>
#include <math.h>

#include "kernels/cuda.h"

/* Threads per block of every kernel below except scatter_add_rows. */
#define BLOCK 256
/* Grid-stride kernels use at most this many blocks. */
#define MAX_GRID 65536u
/* Sub-buffers carved from one scratch request start at this alignment. */
#define ALIGN 256

static size_t aligned(size_t bytes)
{
    return (bytes + ALIGN - 1) / ALIGN * ALIGN;
}

static unsigned grid_for(size_t n)
{
    size_t b = (n + BLOCK - 1) / BLOCK;
    return b < MAX_GRID ? (unsigned)b : MAX_GRID;
}

/* A grid-stride loop's first index and step. */
__device__ static inline size_t grid_first(void)
{
    return (size_t)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ static inline size_t grid_step(void)
{
    return (size_t)gridDim.x * blockDim.x;
}

/* ---- float arithmetic rounded like the cpu's (no contraction) ---- */

__host__ __device__ static inline float mul(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

__host__ __device__ static inline float add(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

__host__ __device__ static inline float sub(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

__host__ __device__ static inline float dvd(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

/* ---- block reductions (blockDim.x == BLOCK; every thread calls) ---- */

/* Warps reduce by shuffles, then warp 0 reduces the warps' results; the
 * first barrier keeps a previous call's readers of part[0] safe. */
__device__ static double block_sum(double v)
{
    __shared__ double part[BLOCK / 32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int o = 16; o > 0; o /= 2)
        v += __shfl_down_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0)
        part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < BLOCK / 32 ? part[lane] : 0.0;
        for (int o = 16; o > 0; o /= 2)
            v += __shfl_down_sync(0xffffffffu, v, o);
        if (lane == 0)
            part[0] = v;
    }
    __syncthreads();
    return part[0];
}

/* fmaxf skips NaN, as the cpu's `x > mx ? x : mx` does. */
__device__ static float block_max(float v)
{
    __shared__ float part[BLOCK / 32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int o = 16; o > 0; o /= 2)
        v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0)
        part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < BLOCK / 32 ? part[lane] : -INFINITY;
        for (int o = 16; o > 0; o /= 2)
            v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
        if (lane == 0)
            part[0] = v;
    }
    __syncthreads();
    return part[0];
}

/* ---- bf16 conversions ---- */

/* grid-stride over n, one element per thread and step */
__global__ void f32_to_bf16_kernel(__nv_bfloat16 *__restrict__ dst, const float *__restrict__ src, size_t n)
{
    for (size_t i = grid_first(); i < n; i += grid_step())
        dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void bf16_to_f32_kernel(float *__restrict__ dst, const __nv_bfloat16 *__restrict__ src, size_t n)
{
    for (size_t i = grid_first(); i < n; i += grid_step())
        dst[i] = __bfloat162float(src[i]);
}

int peso_cuda_f32_to_bf16(peso_backend *be, void *dst, const float *src, size_t n, peso_err *err)
{
    if (n == 0)
        return 0;
    f32_to_bf16_kernel<<<grid_for(n), BLOCK, 0, peso_cuda_ctx(be)->stream>>>((__nv_bfloat16 *)dst, src, n);
    PESO_LAUNCHED(be, "f32_to_bf16_kernel");
    return 0;
}

int peso_cuda_bf16_to_f32(peso_backend *be, float *dst, const void *src, size_t n, peso_err *err)
{
    if (n == 0)
        return 0;
    bf16_to_f32_kernel<<<grid_for(n), BLOCK, 0, peso_cuda_ctx(be)->stream>>>(dst, (const __nv_bfloat16 *)src,
                                                                             n);
    PESO_LAUNCHED(be, "bf16_to_f32_kernel");
    return 0;
}

/* ---- the device alpha of a product (cuda_matmul.c) ---- */

/* one thread */
__global__ void gemm_scalars_kernel(float *dst, float alpha, const float *alpha_dev, float beta)
{
    dst[0] = mul(alpha, alpha_dev[0]);
    dst[1] = beta;
}

extern "C" int peso_cuda_gemm_scalars(peso_backend *be, float *dst, float alpha, const float *alpha_dev,
                                      float beta, peso_err *err)
{
    gemm_scalars_kernel<<<1, 1, 0, peso_cuda_ctx(be)->stream>>>(dst, alpha, alpha_dev, beta);
    PESO_LAUNCHED(be, "gemm_scalars_kernel");
    return 0;
}

/* ---- RMSNorm ---- */

static int rms_shape_check(const char *op, int n, int c, peso_err *err)
{
    if (n < 1 || c < 1)
        return peso_errf(err, "%s: shape [%d, %d], expected both >= 1", op, n, c);
    return 0;
}

/* r = 1 / sqrt(mean(x^2) + eps) from a row's sum of squares ss, formed
 * as the cpu forms it. */
__host__ __device__ static inline float rms_rstd(double ss, int c, float eps)
{
    return dvd(1.0f, sqrtf(add(dvd((float)ss, (float)c), eps)));
}

/* One block per row, BLOCK threads; thread t owns columns t, t + BLOCK,
 * ... The sum of squares is taken in double (the cpu's float sum is
 * within its own rounding of it). */
__global__ void __launch_bounds__(BLOCK)
    rmsnorm_kernel(float *y, float *rstd, const float *x, const float *w, int c, float eps)
{
    const float *xi = x + (size_t)blockIdx.x * c;
    float *yi = y + (size_t)blockIdx.x * c;
    double ss = 0.0;
    for (int j = threadIdx.x; j < c; j += BLOCK)
        ss += (double)xi[j] * xi[j];
    ss = block_sum(ss);
    float r = rms_rstd(ss, c, eps);
    for (int j = threadIdx.x; j < c; j += BLOCK)
        yi[j] = mul(mul(xi[j], r), w[j]);
    if (rstd && threadIdx.x == 0)
        rstd[blockIdx.x] = r;
}

int peso_cuda_rmsnorm(peso_backend *be, float *y, float *rstd, const float *x, const float *w, int n, int c,
                      float eps, peso_err *err)
{
    if (rms_shape_check("rmsnorm", n, c, err) < 0)
        return -1;
    if (!(eps > 0.0f))
        return peso_errf(err, "rmsnorm: eps=%g, expected > 0", (double)eps);
    rmsnorm_kernel<<<n, BLOCK, 0, peso_cuda_ctx(be)->stream>>>(y, rstd, x, w, c, eps);
    PESO_LAUNCHED(be, "rmsnorm_kernel");
    return 0;
}

/* The backward of one row: dx_j += r w_j dy_j - coef x_j with coef =
 * r^3 / c * sum_k w_k dy_k x_k (the sum's terms by rms_dot_term). */
__host__ __device__ static inline float rms_dot_term(float w, float dy, float x)
{
    return mul(mul(w, dy), x);
}

__host__ __device__ static inline float rms_coef(float r, double dot, int c)
{
    return dvd(mul(mul(mul(r, r), r), (float)dot), (float)c);
}

__host__ __device__ static inline float rms_dx(float dx, float r, float w, float dy, float coef, float x)
{
    return add(dx, sub(mul(mul(r, w), dy), mul(coef, x)));
}

/* One block per row, BLOCK threads, columns strided as in the forward;
 * the dot product in double. */
__global__ void __launch_bounds__(BLOCK)
    rmsnorm_dx_kernel(float *dx, const float *dy, const float *x, const float *w, const float *rstd, int c)
{
    size_t off = (size_t)blockIdx.x * c;
    const float *xi = x + off, *dyi = dy + off;
    float *dxi = dx + off;
    float r = rstd[blockIdx.x];
    double dot = 0.0;
    for (int j = threadIdx.x; j < c; j += BLOCK)
        dot += rms_dot_term(w[j], dyi[j], xi[j]);
    dot = block_sum(dot);
    float coef = rms_coef(r, dot, c);
    for (int j = threadIdx.x; j < c; j += BLOCK)
        dxi[j] = rms_dx(dxi[j], r, w[j], dyi[j], coef, xi[j]);
}

/* dw_j = sum_i dy_ij x_ij r_i in two passes without atomics: partial p
 * sums rows [p * per, (p+1) * per) of each column, then each column's
 * partials are added in order. About DW_ROWS rows per partial, at most
 * DW_PARTS_MAX partials: a split that depends on n only. */
#define DW_ROWS 64
#define DW_PARTS_MAX 1024

static void rms_dw_split(int n, int *parts, int *per)
{
    int p = (n + DW_ROWS - 1) / DW_ROWS;
    if (p > DW_PARTS_MAX)
        p = DW_PARTS_MAX;
    *per = (n + p - 1) / p;
    *parts = (n + *per - 1) / *per;
}

/* Partial p of column j, its rows in order, in double. */
__host__ __device__ static inline void rms_dw_part(double *part, const float *dy, const float *x,
                                                   const float *rstd, int n, int c, int per, int j, int p)
{
    int i0 = p * per, i1 = i0 + per < n ? i0 + per : n;
    double acc = 0.0;
    for (int i = i0; i < i1; i++) {
        size_t e = (size_t)i * c + j;
        acc += mul(mul(dy[e], x[e]), rstd[i]);
    }
    part[(size_t)p * c + j] = acc;
}

/* Column j's partials in partial order, added into dw_j. */
__host__ __device__ static inline void rms_dw_sum(float *dw, const double *part, int c, int parts, int j)
{
    double s = 0.0;
    for (int p = 0; p < parts; p++)
        s += part[(size_t)p * c + j];
    dw[j] = add(dw[j], (float)s);
}

/* Grid (ceil(c / BLOCK), parts), BLOCK threads; thread (j, p) owns
 * column j of partial p. */
__global__ void rmsnorm_dw_part_kernel(double *__restrict__ part, const float *__restrict__ dy,
                                       const float *__restrict__ x, const float *__restrict__ rstd, int n,
                                       int c, int per)
{
    int j = blockIdx.x * BLOCK + threadIdx.x;
    if (j < c)
        rms_dw_part(part, dy, x, rstd, n, c, per, j, blockIdx.y);
}

/* Grid ceil(c / BLOCK), BLOCK threads; thread j owns column j. */
__global__ void rmsnorm_dw_sum_kernel(float *__restrict__ dw, const double *__restrict__ part, int c,
                                      int parts)
{
    int j = blockIdx.x * BLOCK + threadIdx.x;
    if (j < c)
        rms_dw_sum(dw, part, c, parts, j);
}

static int rmsnorm_dw(peso_backend *be, float *dw, const float *dy, const float *x, const float *rstd, int n,
                      int c, peso_err *err)
{
    cudaStream_t st = peso_cuda_ctx(be)->stream;
    int parts, per;
    rms_dw_split(n, &parts, &per);
    double *part = (double *)peso_cuda_scratch(be, (size_t)parts * c * sizeof(double), err);
    if (!part)
        return -1;
    unsigned cols = (unsigned)((c + BLOCK - 1) / BLOCK);
    rmsnorm_dw_part_kernel<<<dim3(cols, (unsigned)parts), BLOCK, 0, st>>>(part, dy, x, rstd, n, c, per);
    PESO_LAUNCHED(be, "rmsnorm_dw_part_kernel");
    rmsnorm_dw_sum_kernel<<<cols, BLOCK, 0, st>>>(dw, part, c, parts);
    PESO_LAUNCHED(be, "rmsnorm_dw_sum_kernel");
    return 0;
}

int peso_cuda_rmsnorm_backward(peso_backend *be, float *dx, float *dw, const float *dy, const float *x,
                               const float *w, const float *rstd, int n, int c, peso_err *err)
{
    if (rms_shape_check("rmsnorm_backward", n, c, err) < 0)
        return -1;
    if (!rstd)
        return peso_errf(err, "rmsnorm_backward: rstd is NULL, expected the forward's rstd");
    if (dx) {
        rmsnorm_dx_kernel<<<n, BLOCK, 0, peso_cuda_ctx(be)->stream>>>(dx, dy, x, w, rstd, c);
        PESO_LAUNCHED(be, "rmsnorm_dx_kernel");
    }
    if (dw && rmsnorm_dw(be, dw, dy, x, rstd, n, c, err) < 0)
        return -1;
    return 0;
}

/* ---- rotary embedding ---- */

/* The cpu's shape check; positions live in device memory and are the
 * caller's to validate (backend.h). */
static int rope_check(const char *op, int n_tok, int n_head, int head_dim, peso_err *err)
{
    if (n_tok < 1 || n_head < 1 || head_dim < 2 || head_dim % 2 != 0)
        return peso_errf(err,
                         "%s: shape n_tok=%d n_head=%d head_dim=%d, expected >= 1 and an even "
                         "head_dim",
                         op, n_tok, n_head, head_dim);
    return 0;
}

/* Pair e of n_tok * n_head * half_dim, e = (t * n_head + h) * half_dim
 * + i: dimensions i and i + half_dim of head h of token t, rotated by
 * sign * pos[t] * inv_freq[i]. */
__host__ __device__ static inline void rope_at(size_t e, float *x, const int32_t *pos, const float *inv_freq,
                                               int n_head, int half_dim, float sign)
{
    int i = (int)(e % half_dim);
    size_t th = e / half_dim; /* t * n_head + h */
    int t = (int)(th / n_head);
    float ang = mul((float)pos[t], inv_freq[i]);
    float c = cosf(ang), s = mul(sign, sinf(ang));
    float *xh = x + th * (size_t)(2 * half_dim);
    float a = xh[i], b = xh[i + half_dim];
    xh[i] = sub(mul(a, c), mul(b, s));
    xh[i + half_dim] = add(mul(b, c), mul(a, s));
}

/* Grid-stride over the pairs, BLOCK threads, one pair per thread and step. */
__global__ void rope_kernel(float *__restrict__ x, const int32_t *__restrict__ pos,
                            const float *__restrict__ inv_freq, int n_tok, int n_head, int half_dim,
                            float sign)
{
    size_t total = (size_t)n_tok * n_head * half_dim;
    for (size_t e = grid_first(); e < total; e += grid_step())
        rope_at(e, x, pos, inv_freq, n_head, half_dim, sign);
}

static int rope_launch(peso_backend *be, const char *op, float *x, const int32_t *pos, const float *inv_freq,
                       int n_tok, int n_head, int head_dim, float sign, peso_err *err)
{
    if (rope_check(op, n_tok, n_head, head_dim, err) < 0)
        return -1;
    int half_dim = head_dim / 2;
    size_t total = (size_t)n_tok * n_head * half_dim;
    rope_kernel<<<grid_for(total), BLOCK, 0, peso_cuda_ctx(be)->stream>>>(x, pos, inv_freq, n_tok, n_head,
                                                                          half_dim, sign);
    PESO_LAUNCHED(be, "rope_kernel");
    return 0;
}

int peso_cuda_rope(peso_backend *be, float *x, const int32_t *pos, const float *inv_freq, int n_tok,
                   int n_head, int head_dim, peso_err *err)
{
    return rope_launch(be, "rope", x, pos, inv_freq, n_tok, n_head, head_dim, 1.0f, err);
}

int peso_cuda_rope_backward(peso_backend *be, float *dx, const int32_t *pos, const float *inv_freq, int n_tok,
                            int n_head, int head_dim, peso_err *err)
{
    return rope_launch(be, "rope_backward", dx, pos, inv_freq, n_tok, n_head, head_dim, -1.0f, err);
}

/* ---- SwiGLU ---- */

__host__ __device__ static inline float sigmoid(float x)
{
    return dvd(1.0f, add(1.0f, expf(-x)));
}

__host__ __device__ static inline float swiglu_one(float g, float u)
{
    return mul(mul(g, sigmoid(g)), u);
}

/* d silu(g) / dg = sigmoid(g) * (1 + g * (1 - sigmoid(g))) */
__host__ __device__ static inline float swiglu_dg(float dh, float g, float u)
{
    float sg = sigmoid(g);
    return mul(mul(mul(dh, u), sg), add(1.0f, mul(g, sub(1.0f, sg))));
}

__host__ __device__ static inline float swiglu_du(float dh, float g)
{
    return mul(mul(dh, g), sigmoid(g));
}

/* grid-stride, one element per thread and step */
__global__ void swiglu_kernel(float *h, const float *g, const float *u, size_t n)
{
    for (size_t i = grid_first(); i < n; i += grid_step())
        h[i] = swiglu_one(g[i], u[i]);
}

__global__ void swiglu_backward_kernel(float *dg, float *du, const float *dh, const float *g, const float *u,
                                       size_t n)
{
    for (size_t i = grid_first(); i < n; i += grid_step()) {
        if (dg)
            dg[i] = add(dg[i], swiglu_dg(dh[i], g[i], u[i]));
        if (du)
            du[i] = add(du[i], swiglu_du(dh[i], g[i]));
    }
}

int peso_cuda_swiglu(peso_backend *be, float *h, const float *g, const float *u, size_t n, peso_err *err)
{
    if (n == 0)
        return 0;
    swiglu_kernel<<<grid_for(n), BLOCK, 0, peso_cuda_ctx(be)->stream>>>(h, g, u, n);
    PESO_LAUNCHED(be, "swiglu_kernel");
    return 0;
}

int peso_cuda_swiglu_backward(peso_backend *be, float *dg, float *du, const float *dh, const float *g,
                              const float *u, size_t n, peso_err *err)
{
    if (n == 0 || (!dg && !du))
        return 0;
    swiglu_backward_kernel<<<grid_for(n), BLOCK, 0, peso_cuda_ctx(be)->stream>>>(dg, du, dh, g, u, n);
    PESO_LAUNCHED(be, "swiglu_backward_kernel");
    return 0;
}

/* ---- rows of tables: embedding, gathers and their scatter-adds ---- */

/* Element e = i * dim + j of out = column j of row ids[i] of a table:
 * read from train (float32) for rows in [lo, hi) and from base
 * (absolute row numbers, float32 or bf16) otherwise. A plain gather is
 * lo = hi = 0. */
__host__ __device__ static inline void rows_at(size_t e, float *out, const int32_t *ids, int dim,
                                               const void *base, int base_bf16, const float *train, int lo,
                                               int hi)
{
    size_t i = e / dim;
    int j = (int)(e - i * dim);
    int r = ids[i];
    float v;
    if (r >= lo && r < hi)
        v = train[(size_t)(r - lo) * dim + j];
    else if (base_bf16)
        v = __bfloat162float(((const __nv_bfloat16 *)base)[(size_t)r * dim + j]);
    else
        v = ((const float *)base)[(size_t)r * dim + j];
    out[e] = v;
}

/* Grid-stride over n * dim output elements, BLOCK threads, one per
 * thread and step. */
__global__ void rows_kernel(float *__restrict__ out, const int32_t *__restrict__ ids, int n, int dim,
                            const void *base, int base_bf16, const float *__restrict__ train, int lo, int hi)
{
    size_t total = (size_t)n * dim;
    for (size_t e = grid_first(); e < total; e += grid_step())
        rows_at(e, out, ids, dim, base, base_bf16, train, lo, hi);
}

static int rows_launch(peso_backend *be, float *out, const int32_t *ids, int n, int dim, const void *base,
                       peso_dtype base_dtype, const float *train, int lo, int hi, peso_err *err)
{
    size_t total = (size_t)n * dim;
    if (total == 0)
        return 0;
    rows_kernel<<<grid_for(total), BLOCK, 0, peso_cuda_ctx(be)->stream>>>(
        out, ids, n, dim, base, base_dtype == PESO_BF16, train, lo, hi);
    PESO_LAUNCHED(be, "rows_kernel");
    return 0;
}

/* Threads per block of scatter_add_rows: one warp, so that a narrow
 * table still spreads over many multiprocessors. */
#define SCATTER_BLOCK 32

/* Column j of dst[idx[i] - lo] += src[i] for the rows i with lo <=
 * idx[i] < hi, i in order: repeated indices add up in the cpu's order. */
__host__ __device__ static inline void scatter_col(int j, float *dst, const float *src, const int32_t *idx,
                                                   int n, int width, int lo, int hi)
{
    for (int i = 0; i < n; i++) {
        int r = idx[i];
        if (r < lo || r >= hi)
            continue;
        size_t d = (size_t)(r - lo) * width + j;
        dst[d] = add(dst[d], src[(size_t)i * width + j]);
    }
}

/* Grid ceil(width / SCATTER_BLOCK); thread j owns column j of every row,
 * so no two threads touch one element. */
__global__ void scatter_add_rows_kernel(float *__restrict__ dst, const float *__restrict__ src,
                                        const int32_t *__restrict__ idx, int n, int width, int lo, int hi)
{
    int j = blockIdx.x * SCATTER_BLOCK + threadIdx.x;
    if (j < width)
        scatter_col(j, dst, src, idx, n, width, lo, hi);
}

static int scatter_add_launch(peso_backend *be, float *dst, const float *src, const int32_t *idx, int n,
                              int width, int lo, int hi, peso_err *err)
{
    if (n == 0 || hi <= lo)
        return 0;
    unsigned grid = (unsigned)((width + SCATTER_BLOCK - 1) / SCATTER_BLOCK);
    scatter_add_rows_kernel<<<grid, SCATTER_BLOCK, 0, peso_cuda_ctx(be)->stream>>>(dst, src, idx, n, width,
                                                                                   lo, hi);
    PESO_LAUNCHED(be, "scatter_add_rows_kernel");
    return 0;
}

/* The cpu's check without the id range (ids are device memory). */
static int ids_check(const char *op, const peso_backend *be, const peso_table *t, int n, peso_err *err)
{
    if (peso_table_check(be, t, op, err) < 0)
        return -1;
    if (n < 0)
        return peso_errf(err, "%s: %d tokens, expected >= 0", op, n);
    return 0;
}

int peso_cuda_embed(peso_backend *be, const peso_table *t, float *out, const int32_t *ids, int n,
                    peso_err *err)
{
    if (ids_check("embed", be, t, n, err) < 0)
        return -1;
    return rows_launch(be, out, ids, n, t->dim, t->base, t->base_dtype, t->train, t->train_lo, t->train_hi,
                       err);
}

int peso_cuda_embed_backward(peso_backend *be, const peso_table *t, float *dtrain, const float *dout,
                             const int32_t *ids, int n, peso_err *err)
{
    if (ids_check("embed_backward", be, t, n, err) < 0)
        return -1;
    if (!dtrain)
        return 0;
    return scatter_add_launch(be, dtrain, dout, ids, n, t->dim, t->train_lo, t->train_hi, err);
}

int peso_cuda_gather_rows(peso_backend *be, float *dst, const float *src, int n_src, int width,
                          const int32_t *idx, int n, peso_err *err)
{
    if (n < 0 || n_src < 0 || width < 1)
        return peso_errf(err, "gather_rows: n=%d n_src=%d width=%d, expected n, n_src >= 0 and width >= 1", n,
                         n_src, width);
    return rows_launch(be, dst, idx, n, width, src, PESO_F32, NULL, 0, 0, err);
}

/* ---- cross-entropy at selected positions ---- */

/* Bytes of float32 logits one block of positions may take. */
#define XENT_LOGIT_BYTES ((size_t)64 << 20)

/* The cpu's check without the pos/target ranges (device memory). */
static int xent_check(const peso_backend *be, const peso_table *head, int n_tok, int n_pos, float scale,
                      peso_err *err)
{
    if (peso_table_check(be, head, "xent", err) < 0)
        return -1;
    if (n_pos < 0 || (n_pos > 0 && n_tok < 1))
        return peso_errf(err, "xent: n_pos=%d n_tok=%d, expected n_pos >= 0 and n_tok >= 1", n_pos, n_tok);
    if (!isfinite(scale))
        return peso_errf(err, "xent: scale=%g, expected a finite number", (double)scale);
    return 0;
}

/* A row's log-sum-exp from its maximum and its sum of exp(l - max), and
 * one entry of d = scale * (softmax - onehot(target)), as the cpu's
 * row_softmax forms them. */
__host__ __device__ static inline float xent_lse(float mx, double sum)
{
    return add(mx, (float)log(sum));
}

__host__ __device__ static inline float xent_d(float l, float lse, float scale, int is_target)
{
    float d = mul(scale, expf(l - lse));
    return is_target ? sub(d, scale) : d;
}

/* One logits row per block, BLOCK threads striding over the vocabulary:
 * the maximum, the sum of exp(l - max) in double, the loss, and when
 * grad is set d = scale * (softmax - onehot(target)) in place, as the
 * cpu's row_softmax. Thread 0 reads l[target] before the first barrier,
 * so before any thread overwrites it. */
__global__ void __launch_bounds__(BLOCK)
    xent_rows_kernel(float *__restrict__ lg, int vocab, const int32_t *__restrict__ target, float scale,
                     int grad, float *__restrict__ losses)
{
    float *l = lg + (size_t)blockIdx.x * vocab;
    int t = target[blockIdx.x];
    float lt = threadIdx.x == 0 ? l[t] : 0.0f;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < vocab; j += BLOCK)
        mx = fmaxf(mx, l[j]);
    mx = block_max(mx);
    double sum = 0.0;
    for (int j = threadIdx.x; j < vocab; j += BLOCK)
        sum += expf(l[j] - mx);
    sum = block_sum(sum);
    float lse = xent_lse(mx, sum);
    if (threadIdx.x == 0)
        losses[blockIdx.x] = sub(lse, lt);
    if (!grad)
        return;
    for (int j = threadIdx.x; j < vocab; j += BLOCK)
        l[j] = xent_d(l[j], lse, scale, j == t);
}

/* The head as up to three row segments (frozen below, trainable, frozen
 * above); src is row lo of the segment in its stored type, op the same
 * rows in the products' type (converted into scratch when they differ). */
struct xent_seg {
    int lo, hi;
    const void *src;
    peso_dtype dt;
    const void *op;
};

static int xent_segments(const peso_table *t, struct xent_seg seg[3])
{
    int n = 0;
    size_t row = (size_t)t->dim * peso_dtype_size(t->base_dtype);
    if (t->train_lo > 0)
        seg[n++] = xent_seg{0, t->train_lo, t->base, t->base_dtype, NULL};
    if (t->train_hi > t->train_lo)
        seg[n++] = xent_seg{t->train_lo, t->train_hi, t->train, PESO_F32, NULL};
    if (t->train_hi < t->n_rows)
        seg[n++] = xent_seg{t->train_hi, t->n_rows, (const char *)t->base + (size_t)t->train_hi * row,
                            t->base_dtype, NULL};
    return n;
}

/* Everything one xent call works in, carved from one scratch request. */
struct xent_work {
    int f32;      /* products in float32, else bf16 operands */
    size_t esize; /* bytes of one product operand element */
    int rows;     /* positions per block */
    float *hb;    /* [rows, dim] gathered hidden rows */
    void *hb_op;  /* the same in the products' type (hb itself in f32 mode) */
    float *lg;    /* [rows, vocab] logits, then d */
    void *lg_op;  /* d in the products' type (lg itself in f32 mode) */
    float *dhb;   /* [rows, dim] d . head before the scatter into dh */
};

/* C[m, n] = op(A) op(B) + beta C on row-major operands of the products'
 * type (see cuda_matmul.c for the column-major mapping), float32 C. */
static int xent_gemm(peso_backend *be, const struct xent_work *w, int ta, int tb, int m, int n, int k,
                     const void *a, int lda, const void *b, int ldb, float beta, float *c, int ldc,
                     peso_err *err)
{
    peso_cuda *cx = peso_cuda_ctx(be);
    float alpha = 1.0f;
    cudaDataType type = w->f32 ? CUDA_R_32F : CUDA_R_16BF;
    cublasComputeType_t compute = w->f32 ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
    PESO_CUBLAS(cublasGemmEx(cx->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m,
                             k, &alpha, b, type, ldb, a, type, lda, &beta, c, CUDA_R_32F, ldc, compute,
                             CUBLAS_GEMM_DEFAULT));
    return peso_cuda_launched(be, "cublasGemmEx (xent)", __FILE__, __LINE__, err);
}

/* Converts the segments whose stored type is not the products' into
 * conv, once per call. */
static int xent_convert(peso_backend *be, const struct xent_work *w, struct xent_seg *seg, int ns, int dim,
                        char *conv, peso_err *err)
{
    for (int s = 0; s < ns; s++) {
        size_t n = (size_t)(seg[s].hi - seg[s].lo) * dim;
        int same = (seg[s].dt == PESO_F32) == (w->f32 != 0);
        if (same) {
            seg[s].op = seg[s].src;
            continue;
        }
        int rc = w->f32 ? peso_cuda_bf16_to_f32(be, (float *)conv, seg[s].src, n, err)
                        : peso_cuda_f32_to_bf16(be, conv, (const float *)seg[s].src, n, err);
        if (rc < 0)
            return -1;
        seg[s].op = conv;
        conv += aligned(n * w->esize);
    }
    return 0;
}

/* Bytes of the converted segments (0 when every segment is used as stored). */
static size_t xent_conv_bytes(const struct xent_seg *seg, int ns, int dim, int f32)
{
    size_t bytes = 0;
    for (int s = 0; s < ns; s++)
        if ((seg[s].dt == PESO_F32) != (f32 != 0))
            bytes += aligned((size_t)(seg[s].hi - seg[s].lo) * dim * (f32 ? 4 : 2));
    return bytes;
}

static const void *op_at(const struct xent_work *w, const void *p, size_t elems)
{
    return (const char *)p + elems * w->esize;
}

/* One block of `rows` positions: gather, logits, losses and d, then the
 * two backward products. */
static int xent_block(peso_backend *be, const struct xent_work *w, const peso_table *head,
                      const struct xent_seg *seg, int ns, const float *h, int n_tok, const int32_t *pos,
                      const int32_t *target, int rows, float scale, float *losses, float *dh, float *dhead,
                      peso_err *err)
{
    int dim = head->dim, vocab = head->n_rows, grad = dh || dhead;
    if (rows_launch(be, w->hb, pos, rows, dim, h, PESO_F32, NULL, 0, 0, err) < 0)
        return -1;
    if (!w->f32 && peso_cuda_f32_to_bf16(be, w->hb_op, w->hb, (size_t)rows * dim, err) < 0)
        return -1;
    for (int s = 0; s < ns; s++)
        if (xent_gemm(be, w, 0, 1, rows, seg[s].hi - seg[s].lo, dim, w->hb_op, dim, seg[s].op, dim, 0.0f,
                      w->lg + seg[s].lo, vocab, err) < 0)
            return -1;
    xent_rows_kernel<<<rows, BLOCK, 0, peso_cuda_ctx(be)->stream>>>(w->lg, vocab, target, scale, grad,
                                                                    losses);
    PESO_LAUNCHED(be, "xent_rows_kernel");
    if (!grad)
        return 0;
    if (!w->f32 && peso_cuda_f32_to_bf16(be, w->lg_op, w->lg, (size_t)rows * vocab, err) < 0)
        return -1;
    if (dh) {
        for (int s = 0; s < ns; s++)
            if (xent_gemm(be, w, 0, 0, rows, dim, seg[s].hi - seg[s].lo, op_at(w, w->lg_op, seg[s].lo), vocab,
                          seg[s].op, dim, s == 0 ? 0.0f : 1.0f, w->dhb, dim, err) < 0)
                return -1;
        /* in order: a position selected twice gets both contributions */
        if (scatter_add_launch(be, dh, w->dhb, pos, rows, dim, 0, n_tok, err) < 0)
            return -1;
    }
    int nt = head->train_hi - head->train_lo;
    if (dhead && nt > 0 &&
        xent_gemm(be, w, 1, 0, nt, dim, rows, op_at(w, w->lg_op, head->train_lo), vocab, w->hb_op, dim, 1.0f,
                  dhead, dim, err) < 0)
        return -1;
    return 0;
}

int peso_cuda_xent(peso_backend *be, const peso_table *head, const float *h, int n_tok, const int32_t *pos,
                   const int32_t *target, int n_pos, float scale, float *losses, float *dh, float *dhead,
                   peso_err *err)
{
    if (xent_check(be, head, n_tok, n_pos, scale, err) < 0)
        return -1;
    if (n_pos == 0)
        return 0;
    int dim = head->dim, vocab = head->n_rows, grad = dh || dhead;
    struct xent_work w = {};
    w.f32 = peso_cuda_ctx(be)->f32;
    w.esize = w.f32 ? 4 : 2;
    size_t fit = XENT_LOGIT_BYTES / ((size_t)vocab * sizeof(float));
    w.rows = fit < 1 ? 1 : fit < (size_t)n_pos ? (int)fit : n_pos;
    struct xent_seg seg[3];
    int ns = xent_segments(head, seg);
    size_t rd = (size_t)w.rows * dim, rv = (size_t)w.rows * vocab;
    size_t conv = xent_conv_bytes(seg, ns, dim, w.f32);
    size_t hb = aligned(rd * 4), hb_op = w.f32 ? 0 : aligned(rd * 2);
    size_t lg = aligned(rv * 4), lg_op = w.f32 || !grad ? 0 : aligned(rv * 2);
    size_t dhb = dh ? aligned(rd * 4) : 0;
    char *s = (char *)peso_cuda_scratch(be, conv + hb + hb_op + lg + lg_op + dhb, err);
    if (!s)
        return -1;
    w.hb = (float *)(s + conv);
    w.hb_op = w.f32 ? (void *)w.hb : (void *)(s + conv + hb);
    w.lg = (float *)(s + conv + hb + hb_op);
    w.lg_op = w.f32 ? (void *)w.lg : (void *)(s + conv + hb + hb_op + lg);
    w.dhb = (float *)(s + conv + hb + hb_op + lg + lg_op);
    if (xent_convert(be, &w, seg, ns, dim, s, err) < 0)
        return -1;
    for (int p0 = 0; p0 < n_pos; p0 += w.rows) {
        int rows = n_pos - p0 < w.rows ? n_pos - p0 : w.rows;
        if (xent_block(be, &w, head, seg, ns, h, n_tok, pos + p0, target + p0, rows, scale, losses + p0, dh,
                       dhead, err) < 0)
            return -1;
    }
    return 0;
}

/* ---- AdamW and the flat-buffer reductions ---- */

/* The coefficients of one step, formed in double and rounded to float
 * exactly as cpu_adamw.c does. */
struct adamw_coef {
    float step_size, bc2_sqrt, decay, b2, w1, w2, eps, gs;
};

static struct adamw_coef adamw_coefs(const peso_adamw *hp)
{
    struct adamw_coef k;
    k.step_size = (float)(hp->lr / (1.0 - pow(hp->beta1, (double)hp->step)));
    k.bc2_sqrt = (float)sqrt(1.0 - pow(hp->beta2, (double)hp->step));
    k.decay = (float)(1.0 - hp->lr * hp->weight_decay);
    k.b2 = (float)hp->beta2;
    k.w1 = (float)(1.0 - hp->beta1);
    k.w2 = (float)(1.0 - hp->beta2);
    k.eps = (float)hp->eps;
    k.gs = (float)hp->grad_scale;
    return k;
}

/* One element of torch.optim.AdamW's single-tensor step, in the cpu's
 * order of float operations. */
__host__ __device__ static inline void adamw_one(float *p, float *m, float *v, float grad,
                                                 struct adamw_coef k)
{
    float g = mul(grad, k.gs);
    *m = add(*m, mul(k.w1, sub(g, *m)));
    *v = add(mul(k.b2, *v), mul(mul(k.w2, g), g));
    float denom = add(dvd(sqrtf(*v), k.bc2_sqrt), k.eps);
    *p = sub(mul(*p, k.decay), dvd(mul(k.step_size, *m), denom));
}

/* grid-stride, one element per thread and step */
__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n,
                             struct adamw_coef k)
{
    for (size_t i = grid_first(); i < n; i += grid_step())
        adamw_one(param + i, m + i, v + i, grad[i], k);
}

int peso_cuda_adamw(peso_backend *be, float *param, const float *grad, float *m, float *v, size_t n,
                    const peso_adamw *hp, peso_err *err)
{
    if (hp->step < 1)
        return peso_errf(err, "adamw: step=%ld, expected >= 1", hp->step);
    if (!(hp->beta1 >= 0.0 && hp->beta1 < 1.0 && hp->beta2 >= 0.0 && hp->beta2 < 1.0))
        return peso_errf(err, "adamw: beta1=%g beta2=%g, expected both in [0, 1)", hp->beta1, hp->beta2);
    if (n == 0)
        return 0;
    adamw_kernel<<<grid_for(n), BLOCK, 0, peso_cuda_ctx(be)->stream>>>(param, grad, m, v, n, adamw_coefs(hp));
    PESO_LAUNCHED(be, "adamw_kernel");
    return 0;
}

/* sumsq's fixed grid: at most SUMSQ_PARTS blocks of at least SUMSQ_MIN
 * elements, a function of n only. */
#define SUMSQ_PARTS 1024
#define SUMSQ_MIN 4096

/* Block b owns elements [b * per, (b+1) * per) (BLOCK threads strided
 * over them) and writes its sum of squares, in double, to part[b]. */
__global__ void __launch_bounds__(BLOCK)
    sumsq_kernel(double *__restrict__ part, const float *__restrict__ x, size_t n, size_t per)
{
    size_t i0 = (size_t)blockIdx.x * per, i1 = i0 + per < n ? i0 + per : n;
    double s = 0.0;
    for (size_t i = i0 + threadIdx.x; i < i1; i += BLOCK)
        s += (double)x[i] * x[i];
    s = block_sum(s);
    if (threadIdx.x == 0)
        part[blockIdx.x] = s;
}

int peso_cuda_sumsq(peso_backend *be, const float *x, size_t n, double *out, peso_err *err)
{
    cudaStream_t st = peso_cuda_ctx(be)->stream;
    *out = 0.0;
    if (n == 0) {
        /* still waits for the device, as every operation with a host output */
        PESO_CU(cudaStreamSynchronize(st));
        return 0;
    }
    size_t parts = (n + SUMSQ_MIN - 1) / SUMSQ_MIN;
    if (parts > SUMSQ_PARTS)
        parts = SUMSQ_PARTS;
    size_t per = (n + parts - 1) / parts;
    parts = (n + per - 1) / per;
    double *part = (double *)peso_cuda_scratch(be, parts * sizeof(double), err);
    double *host = part ? (double *)peso_cuda_host(be, parts * sizeof(double), err) : NULL;
    if (!host)
        return -1;
    sumsq_kernel<<<(unsigned)parts, BLOCK, 0, st>>>(part, x, n, per);
    PESO_LAUNCHED(be, "sumsq_kernel");
    PESO_CU(cudaMemcpyAsync(host, part, parts * sizeof(double), cudaMemcpyDeviceToHost, st));
    PESO_CU(cudaStreamSynchronize(st));
    double s = 0.0;
    for (size_t p = 0; p < parts; p++)
        s += host[p];
    *out = s;
    return 0;
}

/* grid-stride, one element per thread and step */
__global__ void scale_kernel(float *x, size_t n, float s)
{
    for (size_t i = grid_first(); i < n; i += grid_step())
        x[i] = mul(x[i], s);
}

int peso_cuda_scale(peso_backend *be, float *x, size_t n, float s, peso_err *err)
{
    if (n == 0)
        return 0;
    scale_kernel<<<grid_for(n), BLOCK, 0, peso_cuda_ctx(be)->stream>>>(x, n, s);
    PESO_LAUNCHED(be, "scale_kernel");
    return 0;
}
