/* Causal grouped-query attention (forward and backward) and one decoding
 * step's attention, float32, on ctx->stream. The reference is the cpu
 * backend (backend/cpu_attention.c for the first two; model decode's
 * attend_one for the third, softmax sums in double).
 *
 * One warp owns one query row (or one key row in the dk/dv pass): lane l
 * holds dimensions l, l + 32, ... of the row in registers (NPL of them,
 * a template parameter: head_dim up to 32 * NPL), a score is a per-lane
 * partial dot product summed by a butterfly of shuffles, which leaves the
 * same bits in every lane, so the softmax state is warp-uniform. Each
 * sum runs in a fixed order (keys, then query rows, in index order), so
 * results are the same run to run, and no output has two writers. */
#include <math.h>

#include "kernels/cuda.h"

#define ATTN_WARPS 4 /* warps per block */
#define ATTN_THREADS (32 * ATTN_WARPS)
#define ATTN_MAX_DIM 256 /* 32 lanes x 8 dimensions each */

/* ---- warp helpers ---- */

/* Sum over the 32 lanes; every lane gets the same bits (at each step lane
 * i adds x_i + x_(i^o) and lane i^o the same two terms). */
static __device__ __forceinline__ float warp_sum(float x)
{
    for (int o = 16; o > 0; o >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

/* r[i] = row[lane + 32 i] for the dimensions that exist, else 0. */
template <int NPL>
static __device__ __forceinline__ void lane_load(float *r, const float *row, int dim, int lane)
{
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        int d = lane + 32 * i;
        r[i] = d < dim ? row[d] : 0.0f;
    }
}

/* The row held in r, dotted with row (memory): the same in every lane. */
template <int NPL>
static __device__ __forceinline__ float lane_dot(const float *r, const float *row, int dim, int lane)
{
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        int d = lane + 32 * i;
        if (d < dim)
            s += r[i] * row[d];
    }
    return warp_sum(s);
}

/* acc = c * acc + p * row. */
template <int NPL>
static __device__ __forceinline__ void lane_axpby(float *acc, float c, float p, const float *row, int dim,
                                                  int lane)
{
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        int d = lane + 32 * i;
        if (d < dim)
            acc[i] = c * acc[i] + p * row[d];
    }
}

/* row[lane + 32 i] += a * r[i]. */
template <int NPL>
static __device__ __forceinline__ void lane_add(float *row, float a, const float *r, int dim, int lane)
{
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        int d = lane + 32 * i;
        if (d < dim)
            row[d] += a * r[i];
    }
}

/* ---- causal attention ---- */

/* Where one (b, t, head) row of a [batch, seq, heads, head_dim] tensor
 * starts. */
static __device__ __forceinline__ size_t row_at(const peso_attn_shape &s, int heads, int b, int t, int h)
{
    return (((size_t)b * s.seq + t) * heads + h) * s.head_dim;
}

/* seq_len[b] within [0, seq]: the cpu backend checks the lengths, the
 * device does not read them on the host, so a bad one only shortens or
 * lengthens a row's range, never leaves the tensors. */
static __device__ __forceinline__ int real_len(const peso_attn_shape &s, const int32_t *seq_len, int b)
{
    int n = seq_len[b];
    return n < 0 ? 0 : n > s.seq ? s.seq : n;
}

/* Launch: one warp per (b, h, t), warp index w = (b * n_head + h) * seq +
 * t (also the row's index in lse), ATTN_WARPS warps per block. Each real
 * row runs an online softmax over keys 0..t in order: running max m, sum
 * l and unnormalised output acc, rescaled when m grows. Padded rows get
 * out = 0 and lse = 0, as on the cpu. */
template <int NPL>
static __global__ void attn_forward(peso_attn_shape s, float scale, float *out, float *lse, const float *q,
                                    const float *k, const float *v, const int32_t *seq_len)
{
    size_t w = (size_t)blockIdx.x * ATTN_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (w >= (size_t)s.batch * s.n_head * s.seq)
        return; /* whole warps only: w is the same in all 32 lanes */
    int t = (int)(w % s.seq), h = (int)(w / s.seq % s.n_head), b = (int)(w / s.seq / s.n_head);
    int dim = s.head_dim, g = h / (s.n_head / s.n_kv_head);
    size_t qo = row_at(s, s.n_head, b, t, h), kv_ld = (size_t)s.n_kv_head * dim;
    if (t >= real_len(s, seq_len, b)) {
        for (int d = lane; d < dim; d += 32)
            out[qo + d] = 0.0f;
        if (lane == 0)
            lse[w] = 0.0f;
        return;
    }
    float acc[NPL];
#pragma unroll
    for (int i = 0; i < NPL; i++)
        acc[i] = 0.0f;
    const float *kb = k + row_at(s, s.n_kv_head, b, 0, g), *vb = v + row_at(s, s.n_kv_head, b, 0, g);
    float qr[NPL];
    lane_load<NPL>(qr, q + qo, dim, lane);
    float m = -INFINITY, l = 0.0f;
    for (int j = 0; j <= t; j++) {
        float sc = scale * lane_dot<NPL>(qr, kb + j * kv_ld, dim, lane);
        float mn = fmaxf(m, sc);
        float c = expf(m - mn), p = expf(sc - mn);
        l = c * l + p;
        lane_axpby<NPL>(acc, c, p, vb + j * kv_ld, dim, lane);
        m = mn;
    }
    float inv = 1.0f / l;
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        int d = lane + 32 * i;
        if (d < dim)
            out[qo + d] = acc[i] * inv;
    }
    if (lane == 0)
        lse[w] = m + logf(l);
}

/* D_t = dout_t . out_t per query row (the softmax backward's row term),
 * into dsum [batch, n_head, seq] (lse's layout); 0 on padded rows. Launch
 * as attn_forward. */
static __global__ void attn_dsum(peso_attn_shape s, float *dsum, const float *dout, const float *out,
                                 const int32_t *seq_len)
{
    size_t w = (size_t)blockIdx.x * ATTN_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (w >= (size_t)s.batch * s.n_head * s.seq)
        return;
    int t = (int)(w % s.seq), h = (int)(w / s.seq % s.n_head), b = (int)(w / s.seq / s.n_head);
    float x = 0.0f;
    if (t < real_len(s, seq_len, b)) {
        size_t o = row_at(s, s.n_head, b, t, h);
        for (int d = lane; d < s.head_dim; d += 32)
            x += dout[o + d] * out[o + d];
        x = warp_sum(x);
    }
    if (lane == 0)
        dsum[w] = x;
}

/* dq_t += scale sum_(j <= t) ds_tj k_j, with p_tj = exp(scale q_t.k_j -
 * lse_t) and ds_tj = p_tj (dout_t.v_j - D_t). Launch as attn_forward:
 * one warp per query row, keys in order; padded rows are left alone. */
template <int NPL>
static __global__ void attn_backward_dq(peso_attn_shape s, float scale, float *dq, const float *dout,
                                        const float *q, const float *k, const float *v, const float *lse,
                                        const float *dsum, const int32_t *seq_len)
{
    size_t w = (size_t)blockIdx.x * ATTN_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (w >= (size_t)s.batch * s.n_head * s.seq)
        return;
    int t = (int)(w % s.seq), h = (int)(w / s.seq % s.n_head), b = (int)(w / s.seq / s.n_head);
    if (t >= real_len(s, seq_len, b))
        return;
    int dim = s.head_dim, g = h / (s.n_head / s.n_kv_head);
    size_t qo = row_at(s, s.n_head, b, t, h), kv_ld = (size_t)s.n_kv_head * dim;
    const float *kb = k + row_at(s, s.n_kv_head, b, 0, g), *vb = v + row_at(s, s.n_kv_head, b, 0, g);
    float qr[NPL], dr[NPL], acc[NPL];
    lane_load<NPL>(qr, q + qo, dim, lane);
    lane_load<NPL>(dr, dout + qo, dim, lane);
#pragma unroll
    for (int i = 0; i < NPL; i++)
        acc[i] = 0.0f;
    float lt = lse[w], dt = dsum[w];
    for (int j = 0; j <= t; j++) {
        const float *kj = kb + j * kv_ld;
        float p = expf(scale * lane_dot<NPL>(qr, kj, dim, lane) - lt);
        float ds = p * (lane_dot<NPL>(dr, vb + j * kv_ld, dim, lane) - dt);
        lane_axpby<NPL>(acc, 1.0f, ds, kj, dim, lane);
    }
    lane_add<NPL>(dq + qo, scale, acc, dim, lane);
}

/* dk_j += scale sum ds_tj q_t and dv_j += sum p_tj dout_t over the query
 * heads h of kv head g (in order) and their real rows t >= j (in order).
 * Launch: one warp per (b, g, j), w = (b * n_kv_head + g) * seq + j,
 * ATTN_WARPS warps per block; the warp alone writes key row j of dk and
 * dv, so there are no atomics. Padded keys (j >= seq_len[b]) are seen by
 * no real row and get nothing. dk or dv may be NULL. */
template <int NPL>
static __global__ void attn_backward_dkv(peso_attn_shape s, float scale, float *dk, float *dv,
                                         const float *dout, const float *q, const float *k, const float *v,
                                         const float *lse, const float *dsum, const int32_t *seq_len)
{
    size_t w = (size_t)blockIdx.x * ATTN_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (w >= (size_t)s.batch * s.n_kv_head * s.seq)
        return;
    int j = (int)(w % s.seq), g = (int)(w / s.seq % s.n_kv_head), b = (int)(w / s.seq / s.n_kv_head);
    int len = real_len(s, seq_len, b);
    if (j >= len)
        return;
    int dim = s.head_dim, rep = s.n_head / s.n_kv_head;
    size_t ko = row_at(s, s.n_kv_head, b, j, g), q_ld = (size_t)s.n_head * dim;
    float kr[NPL], vr[NPL], ak[NPL], av[NPL];
    lane_load<NPL>(kr, k + ko, dim, lane);
    lane_load<NPL>(vr, v + ko, dim, lane);
#pragma unroll
    for (int i = 0; i < NPL; i++)
        ak[i] = av[i] = 0.0f;
    for (int h = g * rep; h < (g + 1) * rep; h++) {
        size_t r0 = ((size_t)b * s.n_head + h) * s.seq; /* row (b, h, 0) of lse and dsum */
        const float *qb = q + row_at(s, s.n_head, b, 0, h), *db = dout + row_at(s, s.n_head, b, 0, h);
        for (int t = j; t < len; t++) {
            const float *qt = qb + t * q_ld, *dt = db + t * q_ld;
            float p = expf(scale * lane_dot<NPL>(kr, qt, dim, lane) - lse[r0 + t]);
            float ds = p * (lane_dot<NPL>(vr, dt, dim, lane) - dsum[r0 + t]);
            lane_axpby<NPL>(ak, 1.0f, ds, qt, dim, lane);
            lane_axpby<NPL>(av, 1.0f, p, dt, dim, lane);
        }
    }
    if (dk)
        lane_add<NPL>(dk + ko, scale, ak, dim, lane);
    if (dv)
        lane_add<NPL>(dv + ko, 1.0f, av, dim, lane);
}

/* ---- decode attention ---- */

/* Key (or value) t of beam b, kv head 0: the prefix's rows, then the
 * beam's own rows (j * own_stride + b). */
static __device__ __forceinline__ const float *decode_row(const peso_decode_attn_shape &s, const float *pre,
                                                          const float *own, int b, int t)
{
    size_t kv = (size_t)s.n_kv_head * s.head_dim;
    if (t < s.n_prefix)
        return pre + (size_t)t * kv;
    return own + ((size_t)(t - s.n_prefix) * s.own_stride + b) * kv;
}

/* Launch: one warp per (beam b, head h), w = b * n_head + h (q's and
 * out's row), ATTN_WARPS warps per block. Two passes over the keys in
 * order, as the cpu: the maximum score, then p = exp(score - max) summed
 * in double with out accumulating p v in float; out = acc / sum. */
template <int NPL>
static __global__ void decode_attn(peso_decode_attn_shape s, float scale, float *out, const float *q,
                                   const float *pk, const float *pv, const float *ok, const float *ov)
{
    size_t w = (size_t)blockIdx.x * ATTN_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (w >= (size_t)s.n_beam * s.n_head)
        return;
    int b = (int)(w / s.n_head), h = (int)(w % s.n_head), dim = s.head_dim;
    size_t go = (size_t)(h / (s.n_head / s.n_kv_head)) * dim; /* kv head's offset in a row */
    int n = s.n_prefix + s.n_own;
    float qr[NPL], acc[NPL];
    lane_load<NPL>(qr, q + w * dim, dim, lane);
    float mx = -INFINITY;
    for (int t = 0; t < n; t++)
        mx = fmaxf(mx, scale * lane_dot<NPL>(qr, decode_row(s, pk, ok, b, t) + go, dim, lane));
#pragma unroll
    for (int i = 0; i < NPL; i++)
        acc[i] = 0.0f;
    double sum = 0.0;
    for (int t = 0; t < n; t++) {
        float p = expf(scale * lane_dot<NPL>(qr, decode_row(s, pk, ok, b, t) + go, dim, lane) - mx);
        sum += p;
        lane_axpby<NPL>(acc, 1.0f, p, decode_row(s, pv, ov, b, t) + go, dim, lane);
    }
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        int d = lane + 32 * i;
        if (d < dim)
            out[w * dim + d] = (float)(acc[i] / sum);
    }
}

/* ---- host side ---- */

/* Kernels by lanes' share of head_dim: 32, 64, 128, 256 dimensions. */
typedef void (*fwd_fn)(peso_attn_shape, float, float *, float *, const float *, const float *, const float *,
                       const int32_t *);
typedef void (*dq_fn)(peso_attn_shape, float, float *, const float *, const float *, const float *,
                      const float *, const float *, const float *, const int32_t *);
typedef void (*dkv_fn)(peso_attn_shape, float, float *, float *, const float *, const float *, const float *,
                       const float *, const float *, const float *, const int32_t *);
typedef void (*decode_fn)(peso_decode_attn_shape, float, float *, const float *, const float *, const float *,
                          const float *, const float *);
static const fwd_fn fwd_kernels[] = {attn_forward<1>, attn_forward<2>, attn_forward<4>, attn_forward<8>};
static const dq_fn dq_kernels[] = {attn_backward_dq<1>, attn_backward_dq<2>, attn_backward_dq<4>,
                                   attn_backward_dq<8>};
static const dkv_fn dkv_kernels[] = {attn_backward_dkv<1>, attn_backward_dkv<2>, attn_backward_dkv<4>,
                                     attn_backward_dkv<8>};
static const decode_fn decode_kernels[] = {decode_attn<1>, decode_attn<2>, decode_attn<4>, decode_attn<8>};

static int lanes_index(int dim)
{
    return dim <= 32 ? 0 : dim <= 64 ? 1 : dim <= 128 ? 2 : 3;
}

/* head_dim ** -0.5 formed in double and rounded once, as the cpu */
static float attn_scale(int dim)
{
    return (float)pow((double)dim, -0.5);
}

static int dim_check(const char *op, int dim, peso_err *err)
{
    if (dim > ATTN_MAX_DIM)
        return peso_errf(err, "%s: head_dim=%d, the cuda backend supports at most %d", op, dim, ATTN_MAX_DIM);
    return 0;
}

/* The shape checks of cpu_attention.c's lens_check (the lengths are
 * device memory here: the kernels clamp them instead), and the head_dim
 * the kernels hold in registers. */
static int attn_args(const char *op, const peso_attn_shape *s, peso_err *err)
{
    if (peso_attn_check(s, err) < 0)
        return peso_err_prefix(err, "%s", op);
    return dim_check(op, s->head_dim, err);
}

/* Blocks for one warp per item. */
static int warp_blocks(const char *op, size_t items, unsigned *blocks, peso_err *err)
{
    size_t n = (items + ATTN_WARPS - 1) / ATTN_WARPS;
    if (n > 0x7fffffffu)
        return peso_errf(err, "%s: %zu rows, more than one launch's grid holds", op, items);
    *blocks = (unsigned)n;
    return 0;
}

int peso_cuda_attention(peso_backend *be, const peso_attn_shape *s, float *out, float *lse, const float *q,
                        const float *k, const float *v, const int32_t *seq_len, peso_err *err)
{
    unsigned blocks = 0;
    if (attn_args("attention", s, err) < 0 ||
        warp_blocks("attention", (size_t)s->batch * s->n_head * s->seq, &blocks, err) < 0)
        return -1;
    cudaStream_t st = peso_cuda_ctx(be)->stream;
    fwd_kernels[lanes_index(s->head_dim)]<<<blocks, ATTN_THREADS, 0, st>>>(*s, attn_scale(s->head_dim), out,
                                                                           lse, q, k, v, seq_len);
    PESO_LAUNCHED(be, "attn_forward");
    return 0;
}

int peso_cuda_attention_backward(peso_backend *be, const peso_attn_shape *s, float *dq, float *dk, float *dv,
                                 const float *dout, const float *q, const float *k, const float *v,
                                 const float *out, const float *lse, const int32_t *seq_len, peso_err *err)
{
    unsigned q_blocks = 0, kv_blocks = 0;
    size_t rows = (size_t)s->batch * s->n_head * s->seq;
    if (attn_args("attention_backward", s, err) < 0 ||
        warp_blocks("attention_backward", rows, &q_blocks, err) < 0 ||
        warp_blocks("attention_backward", (size_t)s->batch * s->n_kv_head * s->seq, &kv_blocks, err) < 0)
        return -1;
    if (!dq && !dk && !dv)
        return 0;
    float *dsum = (float *)peso_cuda_scratch(be, rows * sizeof(float), err);
    if (!dsum)
        return -1;
    cudaStream_t st = peso_cuda_ctx(be)->stream;
    float scale = attn_scale(s->head_dim);
    int li = lanes_index(s->head_dim);
    attn_dsum<<<q_blocks, ATTN_THREADS, 0, st>>>(*s, dsum, dout, out, seq_len);
    PESO_LAUNCHED(be, "attn_dsum");
    if (dq) {
        dq_kernels[li]<<<q_blocks, ATTN_THREADS, 0, st>>>(*s, scale, dq, dout, q, k, v, lse, dsum, seq_len);
        PESO_LAUNCHED(be, "attn_backward_dq");
    }
    if (dk || dv) {
        dkv_kernels[li]<<<kv_blocks, ATTN_THREADS, 0, st>>>(*s, scale, dk, dv, dout, q, k, v, lse, dsum,
                                                            seq_len);
        PESO_LAUNCHED(be, "attn_backward_dkv");
    }
    return 0;
}

int peso_cuda_decode_attention(peso_backend *be, const peso_decode_attn_shape *s, float *out, const float *q,
                               const float *pk, const float *pv, const float *ok, const float *ov,
                               peso_err *err)
{
    unsigned blocks = 0;
    if (peso_decode_attn_check(s, err) < 0 || dim_check("decode_attention", s->head_dim, err) < 0 ||
        warp_blocks("decode_attention", (size_t)s->n_beam * s->n_head, &blocks, err) < 0)
        return -1;
    cudaStream_t st = peso_cuda_ctx(be)->stream;
    decode_kernels[lanes_index(s->head_dim)]<<<blocks, ATTN_THREADS, 0, st>>>(*s, attn_scale(s->head_dim),
                                                                              out, q, pk, pv, ok, ov);
    PESO_LAUNCHED(be, "decode_attn");
    return 0;
}
