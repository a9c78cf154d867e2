/* The proximal terms (prox_kl, prox_l2, prox_ortho), the row softmax-KL
 * (row_kl) and the selected log-softmax of decoding (log_softmax_sel) on
 * ctx->stream. The references are backend/cpu_prox.c, cpu_kl.c and the
 * model's decode log-softmax: the same formulas in double, one block per
 * group, module, position or row.
 *
 * Values: each block leaves one double (its group's or position's term)
 * in device scratch; the host downloads them into pinned memory and sums
 * them in the cpu's order, so the value does not depend on the launch.
 * Within a block, sums go through block_sum: every thread accumulates a
 * fixed strided slice in index order, then a fixed tree, so a result is
 * the same bits run to run (not the cpu's bits: its sums are sequential).
 * Each gradient entry has one writer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda.h"

/* Threads per block of every kernel here: a multiple of 32 (block_sum
 * and block_max rely on whole warps), at most 1024. */
#define PROX_THREADS 256
/* prox_ortho keeps M = A A_prev^T [rank, rank] in double in shared
 * memory: 64 x 64 x 8 = 32 KiB, under the 48 KiB a launch gets without
 * opting in. */
#define PROX_ORTHO_MAX_RANK 64

/* ---- block reductions (double) ---- */

static __device__ __forceinline__ double warp_sum_d(double x)
{
    for (int o = 16; o > 0; o >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

static __device__ __forceinline__ double warp_max_d(double x)
{
    for (int o = 16; o > 0; o >>= 1)
        x = fmax(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

/* The sum over the block of each thread's x, returned to every thread:
 * warps reduce by shuffles, warp w's total goes to sh[w] (sh holds 32
 * doubles), and every warp then reduces sh[0..warps) the same way, so all
 * threads get the same bits. Every thread of the block must call it; the
 * leading barrier lets a block call it again with the same sh. */
static __device__ double block_sum(double x, double *sh)
{
    int lane = threadIdx.x % 32, warps = blockDim.x / 32;
    x = warp_sum_d(x);
    __syncthreads();
    if (lane == 0)
        sh[threadIdx.x / 32] = x;
    __syncthreads();
    return warp_sum_d(lane < warps ? sh[lane] : 0.0);
}

/* The same with fmax (-inf for no values; a NaN is skipped, as the cpu's
 * `x > mx ? x : mx` skips it). */
static __device__ double block_max(double x, double *sh)
{
    int lane = threadIdx.x % 32, warps = blockDim.x / 32;
    x = warp_max_d(x);
    __syncthreads();
    if (lane == 0)
        sh[threadIdx.x / 32] = x;
    __syncthreads();
    return warp_max_d(lane < warps ? sh[lane] : -INFINITY);
}

/* ---- softmax-KL of one vector pair (prox_kl groups, row_kl rows) ---- */

/* Where element e (0 <= e < numel) of a group lives in the flat buffers:
 * the concatenation of its segments. */
static __host__ __device__ __forceinline__ size_t group_at(const peso_prox_group &g, size_t e)
{
    if (e < g.seg[0].n)
        return g.seg[0].off + e * g.seg[0].stride;
    e -= g.seg[0].n;
    return g.seg[1].off + e * g.seg[1].stride;
}

/* A group's elements (g set) or a contiguous row of n (g NULL). */
struct kl_view {
    const peso_prox_group *g;
    size_t base;
    size_t n;
    __device__ size_t at(size_t e) const { return g ? group_at(*g, e) : base + e; }
};

/* KL(softmax(x) || softmax(y)) over the view's elements of x and y, in
 * double as peso_cpu_softmax_kl: log-softmaxes max-subtracted, lx = x -
 * (max + log sum exp(x - max)), kl = sum exp(lx) (lx - ly). With out
 * set, out[i] (+)= (float)(alpha * exp(lx) (lx - ly - kl)): added when
 * add is set (prox_kl's gradient), stored otherwise (row_kl's dz, which
 * may be x itself: each thread reads its own elements before writing
 * them, and every read of x by other threads is behind block_sum's
 * barriers). Returns kl to every thread. */
static __device__ double softmax_kl(const kl_view &w, const float *x, const float *y, float *out,
                                    double alpha, int add, double *sh)
{
    double mx = -INFINITY, my = -INFINITY;
    for (size_t e = threadIdx.x; e < w.n; e += blockDim.x) {
        size_t j = w.at(e);
        mx = fmax(mx, (double)x[j]);
        my = fmax(my, (double)y[j]);
    }
    mx = block_max(mx, sh);
    my = block_max(my, sh);
    double zx = 0.0, zy = 0.0;
    for (size_t e = threadIdx.x; e < w.n; e += blockDim.x) {
        size_t j = w.at(e);
        zx += exp((double)x[j] - mx);
        zy += exp((double)y[j] - my);
    }
    double cx = mx + log(block_sum(zx, sh)), cy = my + log(block_sum(zy, sh));
    double kl = 0.0;
    for (size_t e = threadIdx.x; e < w.n; e += blockDim.x) {
        size_t j = w.at(e);
        double lx = (double)x[j] - cx, ly = (double)y[j] - cy;
        kl += exp(lx) * (lx - ly);
    }
    kl = block_sum(kl, sh);
    if (out)
        for (size_t e = threadIdx.x; e < w.n; e += blockDim.x) {
            size_t j = w.at(e);
            double lx = (double)x[j] - cx, ly = (double)y[j] - cy;
            float d = (float)(alpha * (exp(lx) * (lx - ly - kl)));
            out[j] = add ? out[j] + d : d;
        }
    return kl;
}

/* ---- kernels ---- */

/* Launch: one block per group lo + blockIdx.x, PROX_THREADS threads.
 * kl[blockIdx.x] = the group's KL; grad (may be NULL) += lambda dKL/dv. */
static __global__ void prox_kl_kernel(const peso_prox_group *groups, int lo, const float *v,
                                      const float *v_prev, double lambda, float *grad, double *kl)
{
    __shared__ double sh[32];
    peso_prox_group g = groups[lo + blockIdx.x];
    kl_view w = {&g, 0, g.numel};
    double d = softmax_kl(w, v, v_prev, grad, lambda, 1, sh);
    if (threadIdx.x == 0)
        kl[blockIdx.x] = d;
}

/* Launch as prox_kl_kernel. sq[blockIdx.x] = ||v - v_prev||^2 / 2 over the
 * group; grad (may be NULL) += lambda (v - v_prev). */
static __global__ void prox_l2_kernel(const peso_prox_group *groups, int lo, const float *v,
                                      const float *v_prev, double lambda, float *grad, double *sq)
{
    __shared__ double sh[32];
    peso_prox_group g = groups[lo + blockIdx.x];
    double s = 0.0;
    for (size_t e = threadIdx.x; e < g.numel; e += blockDim.x) {
        size_t j = group_at(g, e);
        double d = (double)v[j] - (double)v_prev[j];
        s += d * d;
        if (grad)
            grad[j] += (float)(lambda * d);
    }
    s = block_sum(s, sh);
    if (threadIdx.x == 0)
        sq[blockIdx.x] = 0.5 * s;
}

/* Launch: one block per module lo + blockIdx.x (its A is seg[0], [rank,
 * in] contiguous), PROX_THREADS threads, rank * rank doubles of dynamic
 * shared memory for M = A A_prev^T. Warp w computes the entries w, w +
 * warps, ... of M (each a dot over in, lanes strided, in double);
 * fro[blockIdx.x] = ||M||_F^2; grad (may be NULL) += 2 lambda M A_prev on
 * A's entries, one thread per entry, j in order. */
static __global__ void prox_ortho_kernel(const peso_prox_group *groups, int lo, int rank, const float *v,
                                         const float *v_prev, double lambda, float *grad, double *fro)
{
    extern __shared__ double mm[];
    __shared__ double sh[32];
    peso_prox_seg a = groups[lo + blockIdx.x].seg[0];
    size_t in = a.n / rank;
    const float *A = v + a.off, *Ap = v_prev + a.off;
    int lane = threadIdx.x % 32, warps = blockDim.x / 32;
    for (int e = threadIdx.x / 32; e < rank * rank; e += warps) {
        const float *ai = A + (size_t)(e / rank) * in, *aj = Ap + (size_t)(e % rank) * in;
        double d = 0.0;
        for (size_t c = lane; c < in; c += 32)
            d += (double)ai[c] * (double)aj[c];
        d = warp_sum_d(d);
        if (lane == 0)
            mm[e] = d;
    }
    __syncthreads();
    double s = 0.0;
    for (int e = threadIdx.x; e < rank * rank; e += blockDim.x)
        s += mm[e] * mm[e];
    s = block_sum(s, sh);
    if (threadIdx.x == 0)
        fro[blockIdx.x] = s;
    if (!grad)
        return;
    float *ga = grad + a.off;
    for (size_t e = threadIdx.x; e < a.n; e += blockDim.x) {
        size_t i = e / in, c = e % in;
        double d = 0.0;
        for (int j = 0; j < rank; j++)
            d += mm[i * rank + j] * (double)Ap[(size_t)j * in + c];
        ga[e] += (float)(2.0 * lambda * d);
    }
}

/* Launch: one block per position p = b * T + t, PROX_THREADS threads.
 * Real positions (t < lens[b], clamped to [0, T]): kl[p] = the KL of
 * rows p of z and z_prev, dz row p (may be NULL; may be z) = scale
 * dKL/dz. Padding: kl[p] = 0 and dz row p = 0. */
static __global__ void row_kl_kernel(const float *z, const float *z_prev, const int32_t *lens, int T, int d,
                                     double scale, float *dz, double *kl)
{
    __shared__ double sh[32];
    size_t p = blockIdx.x;
    int len = lens[p / T], t = (int)(p % T);
    len = len < 0 ? 0 : len > T ? T : len;
    if (t >= len) { /* the whole block takes this branch */
        if (dz)
            for (int i = threadIdx.x; i < d; i += blockDim.x)
                dz[p * d + i] = 0.0f;
        if (threadIdx.x == 0)
            kl[p] = 0.0;
        return;
    }
    kl_view w = {NULL, p * d, (size_t)d};
    double x = softmax_kl(w, z, z_prev, dz, scale, 0, sh);
    if (threadIdx.x == 0)
        kl[p] = x;
}

/* Launch: one block per row r of x [n, V], PROX_THREADS threads. lse =
 * max + log sum exp(x - max) in double; out[r, j] = x[r, sel[j]] - lse,
 * lse_out[r] (may be NULL) = lse, both rounded to float once. */
static __global__ void log_softmax_sel_kernel(float *out, float *lse_out, const float *x, int V,
                                              const int32_t *sel, int n_sel)
{
    __shared__ double sh[32];
    const float *row = x + (size_t)blockIdx.x * V;
    double mx = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        mx = fmax(mx, (double)row[i]);
    mx = block_max(mx, sh);
    double s = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        s += exp((double)row[i] - mx);
    double lse = mx + log(block_sum(s, sh));
    if (lse_out && threadIdx.x == 0)
        lse_out[blockIdx.x] = (float)lse;
    for (int j = threadIdx.x; j < n_sel; j += blockDim.x)
        out[(size_t)blockIdx.x * n_sel + j] = (float)((double)row[sel[j]] - lse);
}

/* ---- host side ---- */

/* The device copy of gs->g[0..n) (ctx prox_dev), uploaded only when the
 * groups differ from the last ones (ctx prox_host keeps the bytes it was
 * made from). gs->n >= 1. The cache is marked empty until the upload is
 * queued, so a failure leaves it to be redone. The copy runs from
 * prox_host, which changes only in a later prox call, after this call's
 * own synchronisation. */
static int groups_on_device(peso_backend *be, const peso_prox_groups *gs, const peso_prox_group **dev,
                            peso_err *err)
{
    peso_cuda *c = peso_cuda_ctx(be);
    size_t bytes = (size_t)gs->n * sizeof *gs->g;
    if (bytes != c->prox_host_bytes || memcmp(c->prox_host, gs->g, bytes) != 0) {
        c->prox_host_bytes = 0;
        if (bytes > c->prox_cap) {
            PESO_CU(cudaStreamSynchronize(c->stream));
            PESO_CU(cudaFree(c->prox_dev));
            c->prox_dev = NULL;
            c->prox_cap = 0;
            PESO_CU(cudaMalloc(&c->prox_dev, bytes));
            c->prox_cap = bytes;
        }
        c->prox_host = peso_realloc(c->prox_host, bytes);
        memcpy(c->prox_host, gs->g, bytes);
        PESO_CU(cudaMemcpyAsync(c->prox_dev, c->prox_host, bytes, cudaMemcpyHostToDevice, c->stream));
        c->prox_host_bytes = bytes;
    }
    *dev = (const peso_prox_group *)c->prox_dev;
    return 0;
}

/* n doubles of device scratch (one per block) and as many of pinned host
 * memory to bring them back. */
static int values_alloc(peso_backend *be, size_t n, double **dev, double **host, peso_err *err)
{
    size_t bytes = (n ? n : 1) * sizeof(double);
    *dev = (double *)peso_cuda_scratch(be, bytes, err);
    if (!*dev)
        return -1;
    *host = (double *)peso_cuda_host(be, bytes, err);
    return *host ? 0 : -1;
}

/* Waits for the queued kernels and brings the n per-block values back. */
static int values_download(peso_backend *be, double *host, const double *dev, size_t n, peso_err *err)
{
    cudaStream_t st = peso_cuda_ctx(be)->stream;
    PESO_CU(cudaMemcpyAsync(host, dev, n * sizeof(double), cudaMemcpyDeviceToHost, st));
    PESO_CU(cudaStreamSynchronize(st));
    return 0;
}

static double sum_in_order(const double *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += x[i];
    return s;
}

/* The kernels of the three proximal terms take the same arguments. */
typedef void (*prox_fn)(const peso_prox_group *, int, const float *, const float *, double, float *,
                        double *);

/* One block per group of [lo, hi); *value = lambda * the groups' values
 * summed in group order. */
static int prox_run(peso_backend *be, prox_fn kernel, const char *name, const peso_prox_groups *gs, int lo,
                    int hi, const float *v, const float *v_prev, double lambda, float *grad, double *value,
                    peso_err *err)
{
    size_t n = (size_t)(hi - lo);
    if (n == 0) {
        *value = lambda * 0.0;
        return 0;
    }
    const peso_prox_group *dev;
    double *vals, *host;
    if (groups_on_device(be, gs, &dev, err) < 0 || values_alloc(be, n, &vals, &host, err) < 0)
        return -1;
    kernel<<<(unsigned)n, PROX_THREADS, 0, peso_cuda_ctx(be)->stream>>>(dev, lo, v, v_prev, lambda, grad,
                                                                        vals);
    PESO_LAUNCHED(be, name);
    if (values_download(be, host, vals, n, err) < 0)
        return -1;
    *value = lambda * sum_in_order(host, n);
    return 0;
}

int peso_cuda_prox_kl(peso_backend *be, const peso_prox_groups *gs, int lo, int hi, const float *v,
                      const float *v_prev, double lambda, float *grad, double *value, peso_err *err)
{
    if (peso_prox_check("prox_kl", gs, lo, hi, lambda, value, err) < 0)
        return -1;
    return prox_run(be, prox_kl_kernel, "prox_kl_kernel", gs, lo, hi, v, v_prev, lambda, grad, value, err);
}

int peso_cuda_prox_l2(peso_backend *be, const peso_prox_groups *gs, int lo, int hi, const float *v,
                      const float *v_prev, double lambda, float *grad, double *value, peso_err *err)
{
    if (peso_prox_check("prox_l2", gs, lo, hi, lambda, value, err) < 0)
        return -1;
    return prox_run(be, prox_l2_kernel, "prox_l2_kernel", gs, lo, hi, v, v_prev, lambda, grad, value, err);
}

int peso_cuda_prox_ortho(peso_backend *be, const peso_prox_groups *gs, int rank, int lo, int hi,
                         const float *v, const float *v_prev, double lambda, float *grad, double *value,
                         peso_err *err)
{
    if (peso_prox_check("prox_ortho", gs, lo, hi, lambda, value, err) < 0)
        return -1;
    if (gs->how != PESO_PROX_MODULE)
        return peso_errf(err, "prox_ortho: gs grouping %d, expected the module groups (%d)", (int)gs->how,
                         (int)PESO_PROX_MODULE);
    if (rank < 1)
        return peso_errf(err, "prox_ortho: rank=%d, expected >= 1", rank);
    size_t r = (size_t)rank;
    for (int i = lo; i < hi; i++) {
        const peso_prox_seg *a = &gs->g[i].seg[0];
        if (a->stride != 1 || a->n == 0 || a->n % r != 0)
            return peso_errf(err,
                             "prox_ortho: group %d's A has n=%zu stride=%zu, expected a "
                             "contiguous [rank=%d, in] block",
                             i, a->n, a->stride, rank);
    }
    if (rank > PROX_ORTHO_MAX_RANK)
        return peso_errf(err, "prox_ortho: rank=%d, the cuda backend supports at most %d", rank,
                         PROX_ORTHO_MAX_RANK);
    size_t n = (size_t)(hi - lo);
    if (n == 0) {
        *value = lambda * 0.0;
        return 0;
    }
    const peso_prox_group *dev;
    double *vals, *host;
    if (groups_on_device(be, gs, &dev, err) < 0 || values_alloc(be, n, &vals, &host, err) < 0)
        return -1;
    prox_ortho_kernel<<<(unsigned)n, PROX_THREADS, r * r * sizeof(double), peso_cuda_ctx(be)->stream>>>(
        dev, lo, rank, v, v_prev, lambda, grad, vals);
    PESO_LAUNCHED(be, "prox_ortho_kernel");
    if (values_download(be, host, vals, n, err) < 0)
        return -1;
    *value = lambda * sum_in_order(host, n);
    return 0;
}

/* cpu_kl.c's row_kl_check without the lengths, which are device memory
 * here (the kernel clamps them to [0, T]). */
int peso_cuda_row_kl(peso_backend *be, const float *z, const float *z_prev, const int32_t *lens, int B, int T,
                     int d, double scale, float *dz, double *value, peso_err *err)
{
    if (B < 0 || T < 0)
        return peso_errf(err, "row_kl: B=%d T=%d, expected both >= 0", B, T);
    if (d < 1)
        return peso_errf(err, "row_kl: d=%d, expected >= 1", d);
    if (!isfinite(scale))
        return peso_errf(err, "row_kl: scale=%g, expected a finite number", scale);
    size_t n = (size_t)B * (size_t)T;
    if (n > 0x7fffffffu)
        return peso_errf(err, "row_kl: B*T=%zu positions, more than one launch's grid holds", n);
    double *kl = NULL;
    if (n > 0) {
        double *vals;
        if (values_alloc(be, n, &vals, &kl, err) < 0)
            return -1;
        row_kl_kernel<<<(unsigned)n, PROX_THREADS, 0, peso_cuda_ctx(be)->stream>>>(z, z_prev, lens, T, d,
                                                                                   scale, dz, vals);
        PESO_LAUNCHED(be, "row_kl_kernel");
        if (values_download(be, kl, vals, n, err) < 0)
            return -1;
    }
    /* as the cpu: each row's positions in order, times scale, rows in b
     * order; padded positions hold exactly 0, and s + 0.0 == s, so
     * running over all T gives the cpu's sum over t < lens[b] */
    double total = 0.0;
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        for (int t = 0; t < T; t++)
            s += kl[(size_t)b * (size_t)T + (size_t)t];
        total += scale * s;
    }
    *value = total;
    return 0;
}

int peso_cuda_log_softmax_sel(peso_backend *be, float *out, float *lse, const float *x, int n, int V,
                              const int32_t *sel, int n_sel, peso_err *err)
{
    if (n < 0 || V < 1 || n_sel < 0)
        return peso_errf(err, "log_softmax_sel: n=%d V=%d n_sel=%d, expected n >= 0, V >= 1, n_sel >= 0", n,
                         V, n_sel);
    if (n == 0 || (n_sel == 0 && !lse))
        return 0;
    log_softmax_sel_kernel<<<(unsigned)n, PROX_THREADS, 0, peso_cuda_ctx(be)->stream>>>(out, lse, x, V, sel,
                                                                                        n_sel);
    PESO_LAUNCHED(be, "log_softmax_sel_kernel");
    return 0;
}
