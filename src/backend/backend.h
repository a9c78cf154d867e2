/* The backend operation table: every piece of model math goes through one
 * struct peso_backend, so that the model code is written once and runs on
 * the cpu implementation (float32, OpenBLAS, OpenMP; the reference) and on
 * the cuda implementation (kernels/cuda.h) that fills the same table.
 *
 * Types, decided once for both (DESIGN.md "Backends"):
 * - Frozen matrices (projection weights, the embedding and head tables'
 *   frozen rows) are stored in their file's dtype where the backend keeps
 *   it: bf16 on cuda, float32 on cpu (which converts at load). Norm
 *   weights, LoRA parameters, new vocabulary rows, gradients, optimizer
 *   moments and every reduction are float32 (reductions in double where
 *   said).
 * - Activations are float32 in memory on both backends: every tensor
 *   argument below is float *. On cuda in its default bf16 precision the
 *   products round both operands to bf16 and accumulate in float32 (the
 *   tensor cores' bf16 path, where the time goes), and everything else
 *   (norms, softmaxes, attention, SwiGLU, losses) runs in float32. Storing
 *   activations in bf16 as well would halve their memory traffic but split
 *   the table into two contracts; the benchmarks of the training issue
 *   decide whether that pays. In f32 precision (peso_backend_opts.f32)
 *   cuda computes products in float32 too (bf16 weights widened exactly),
 *   which is what the equivalence suite compares with the cpu backend.
 *
 * Conventions for every operation:
 * - Tensor arguments are device pointers from be->alloc (on the cpu
 *   backend, ordinary host memory). That includes the int32 index arrays
 *   (token ids, positions, targets, sequence lengths). Descriptor structs,
 *   peso_err and explicit host outputs (sumsq) live on the host.
 * - Tensors are dense, row-major, contiguous: a shape [B,T,H,D] means
 *   element ((b*T + t)*H + h)*D + d.
 * - Forward operations overwrite their outputs. Backward operations ADD
 *   into their gradient outputs (the caller zeroes them once per step), as
 *   in llm.c, so that gradients from several uses of a tensor sum up. The
 *   exceptions, said again below, are rope/rope_backward (a rotation in
 *   place) and matmul (explicit alpha/beta).
 * - A gradient output passed as NULL is not computed.
 * - Every operation returns 0, or -1 with a message in err naming the
 *   operation, the argument and what was expected. Nothing is written on
 *   an argument error. Index values (ids, positions, targets, lengths)
 *   live in device memory: the cpu backend checks their range, a GPU one
 *   need not, so callers validate them when they build a batch.
 * - Semantics are those of Hugging Face LlamaForCausalLM in float32. */
#ifndef PESO_BACKEND_BACKEND_H
#define PESO_BACKEND_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Storage type of frozen weights (the B operand of matmul, embedding and
 * output-head tables). Activations, LoRA parameters, gradients and
 * optimizer moments are always float32 (see the types above). */
typedef enum peso_dtype {
    PESO_F32 = 0,
    PESO_BF16 = 1,
} peso_dtype;

/* One matrix product, or `batch` of them at fixed strides:
 *   C = alpha * op(A) * op(B) + beta * C,   op(A) [m,k], op(B) [k,n], C [m,n]
 * trans_a = 0: A stored [m,k]; 1: A stored [k,m].
 * trans_b = 0: B stored [k,n]; 1: B stored [n,k] (an nn.Linear weight, so
 *   y = x W^T is trans_b = 1).
 * beta = 0 overwrites C (its old contents are not read); beta = 1 adds.
 * stride_* are element offsets between consecutive products; a stride of
 * 0 reuses one operand for every product (a shared weight). */
typedef struct peso_gemm {
    int m, n, k;
    int trans_a, trans_b;
    float alpha, beta;
    peso_dtype b_dtype;
    int batch;
    size_t stride_a, stride_b, stride_c;
    /* NULL, or a device float that multiplies alpha: a learnable scale
     * (SD-LoRA's magnitudes) used where it lives, without a download */
    const float *alpha_dev;
} peso_gemm;

/* A [n_rows, dim] table (token embedding or output head) whose rows
 * [train_lo, train_hi) are trainable: those rows are read from `train`
 * (float32, [train_hi - train_lo, dim]) and never from `base`, so the
 * frozen part may be bf16 on the GPU while the trained rows stay float32,
 * and `base` may be shorter than n_rows when the trainable rows are the
 * last ones (new semantic-ID tokens appended to the vocabulary). Gradients
 * exist only for the trainable rows, in a buffer shaped like `train`. */
typedef struct peso_table {
    const void *base;
    peso_dtype base_dtype;
    const float *train;
    int train_lo, train_hi;
    int n_rows, dim;
} peso_table;

/* Causal self-attention shape. q, out: [batch, seq, n_head, head_dim];
 * k, v: [batch, seq, n_kv_head, head_dim] (the KV layout a prefix cache
 * will keep); query head h reads kv head h / (n_head / n_kv_head). */
typedef struct peso_attn_shape {
    int batch, seq, n_head, n_kv_head, head_dim;
} peso_attn_shape;

/* AdamW as torch.optim.AdamW: decoupled weight decay, bias correction.
 * step counts from 1. The gradient is multiplied by grad_scale first (1
 * for none; the clipping factor otherwise). Host doubles, like PyTorch's
 * Python scalars: coefficients such as 1 - beta2 are formed in double and
 * only then rounded to float32. */
typedef struct peso_adamw {
    double lr, beta1, beta2, eps, weight_decay, grad_scale;
    long step;
} peso_adamw;

/* Groups of the proximal terms (DESIGN.md "Continual methods") over the
 * flat float32 LoRA buffers (lora/lora.h), built by the method side
 * (method/prox.h: peso_prox_groups_build) and read by the backend as host
 * descriptors. The groups partition the A and B entries of the adapted
 * modules, so that a range [lo, hi) of groups is a train rank's share. */

/* Which coordinates share one softmax in the KL term (paper, Section 4.2
 * and its Table 5 ablation). */
typedef enum peso_prox_grouping {
    PESO_PROX_MODULE = 0, /* one adapted module: all of A and B together */
    PESO_PROX_MATRIX,     /* A and B of a module separately */
    PESO_PROX_RANK,       /* per rank k: row k of A with column k of B */
    PESO_PROX_NGROUPING
} peso_prox_grouping;

/* n floats at off, off + stride, off + 2 stride, ... */
typedef struct peso_prox_seg {
    size_t off, n, stride;
} peso_prox_seg;

/* One group: the concatenation of its segments. Under PESO_PROX_MODULE
 * seg[0] is the module's A [rank, in] and seg[1] its B [out, rank], both
 * contiguous (stride 1). */
typedef struct peso_prox_group {
    int module; /* index of the adapted module (peso_lora.mods) */
    int n_seg;  /* 1 or 2 */
    peso_prox_seg seg[2];
    size_t numel;
} peso_prox_group;

/* Groups in module order; within a module: A before B (matrix), rank 0
 * first (rank). */
typedef struct peso_prox_groups {
    peso_prox_grouping how;
    int n;
    peso_prox_group *g;
} peso_prox_groups;

/* One decoding step's attention (beam search, model/decode.h): each of
 * n_beam beams has one new query per head and attends to the shared
 * prefix keys [0, n_prefix) then its own keys [0, n_own) (the last own
 * key is the new token's). Layouts, with kv = n_kv_head * head_dim:
 * q, out [n_beam, n_head, head_dim]; prefix pk, pv [n_prefix, kv]
 * (NULL when n_prefix is 0); own keys and values in rows of kv floats,
 * beam b's j-th at row j * own_stride + b of ok, ov (own_stride >=
 * n_beam: the cache keeps one block of beams per step). Query head h reads
 * kv head h / (n_head / n_kv_head); scale 1/sqrt(head_dim), softmax in
 * float32 with the maximum subtracted, as attention. */
typedef struct peso_decode_attn_shape {
    int n_beam, n_head, n_kv_head, head_dim;
    int n_prefix, n_own, own_stride;
} peso_decode_attn_shape;

typedef struct peso_backend peso_backend;

struct peso_backend {
    const char *name;
    /* Bit (1u << dtype) set for each weight dtype the backend accepts. */
    unsigned weight_dtypes;
    /* Implementation state (library handles, streams, scratch memory). */
    void *ctx;
    void (*destroy)(peso_backend *be);

    /* ---- ordering ----
     * Operations run in call order on the backend's one stream (the cpu
     * backend runs each before returning). A call returning 0 has been
     * queued and its arguments checked; a fault inside a queued kernel
     * may be reported by a later call. What waits for the device:
     * download (the host bytes are there on return), upload and copy
     * from host memory (the host buffer may be reused on return), free,
     * every operation with a host output (sumsq, the prox_* and row_kl
     * values) and sync, which waits for everything queued and reports
     * any fault. Device-to-device copy and zero do not wait. */
    int (*sync)(peso_backend *be, peso_err *err);

    /* ---- memory (bytes); alloc returns zeroed memory ---- */
    int (*alloc)(peso_backend *be, void **p, size_t bytes, peso_err *err);
    void (*free)(peso_backend *be, void *p);
    int (*zero)(peso_backend *be, void *p, size_t bytes, peso_err *err);
    int (*upload)(peso_backend *be, void *dst, const void *host, size_t bytes, peso_err *err);
    int (*download)(peso_backend *be, void *host, const void *src, size_t bytes, peso_err *err);
    int (*copy)(peso_backend *be, void *dst, const void *src, size_t bytes, peso_err *err);

    /* ---- products ---- */
    /* See peso_gemm. a and c are float32; b is in g->b_dtype. The two
     * backward products of y = x W^T are this same entry with transposes:
     * dx = dy W (trans_b 0) and dW = dy^T x (trans_a 1); see peso_linear. */
    int (*matmul)(peso_backend *be, const peso_gemm *g, float *c, const float *a, const void *b,
                  peso_err *err);

    /* ---- RMSNorm over rows of x [n, c] ---- */
    /* y = x / sqrt(mean(x^2) + eps) * w; rstd [n] (may be NULL) keeps
     * 1/sqrt(mean(x^2) + eps) for the backward. */
    int (*rmsnorm)(peso_backend *be, float *y, float *rstd, const float *x, const float *w, int n,
                   int c, float eps, peso_err *err);
    /* dx [n,c] += d/dx, dw [c] += d/dw (dw NULL when w is frozen); rstd is
     * the forward's (required). */
    int (*rmsnorm_backward)(peso_backend *be, float *dx, float *dw, const float *dy,
                            const float *x, const float *w, const float *rstd, int n, int c,
                            peso_err *err);

    /* ---- rotary embedding, in place on x [n_tok, n_head, head_dim] ---- */
    /* HF rotate_half convention: dimension i pairs with i + head_dim/2, at
     * angle pos[t] * inv_freq[i] (inv_freq [head_dim/2] from
     * peso_rope_inv_freq). rope_backward rotates by the negative angle,
     * which maps the gradient of the output to that of the input. Both
     * overwrite x (no accumulation). */
    int (*rope)(peso_backend *be, float *x, const int32_t *pos, const float *inv_freq, int n_tok,
                int n_head, int head_dim, peso_err *err);
    int (*rope_backward)(peso_backend *be, float *dx, const int32_t *pos, const float *inv_freq,
                         int n_tok, int n_head, int head_dim, peso_err *err);

    /* ---- causal attention with grouped-query heads ---- */
    /* softmax(q k^T / sqrt(head_dim) + causal mask) v per head, float32.
     * seq_len [batch] gives each right-padded sequence's real length (the
     * attention_mask); with right padding the key mask is implied by the
     * causal one for real rows. Padded query rows (t >= seq_len[b]) get
     * zeros and receive no gradient. lse [batch, n_head, seq] keeps each
     * row's log-sum-exp of the scaled scores for the backward, which
     * recomputes the probabilities instead of storing them. */
    int (*attention)(peso_backend *be, const peso_attn_shape *s, float *out, float *lse,
                     const float *q, const float *k, const float *v, const int32_t *seq_len,
                     peso_err *err);
    int (*attention_backward)(peso_backend *be, const peso_attn_shape *s, float *dq, float *dk,
                              float *dv, const float *dout, const float *q, const float *k,
                              const float *v, const float *out, const float *lse,
                              const int32_t *seq_len, peso_err *err);

    /* ---- SwiGLU: h = silu(g) * u over n elements ---- */
    int (*swiglu)(peso_backend *be, float *h, const float *g, const float *u, size_t n,
                  peso_err *err);
    int (*swiglu_backward)(peso_backend *be, float *dg, float *du, const float *dh, const float *g,
                           const float *u, size_t n, peso_err *err);

    /* ---- embedding ---- */
    /* out [n, dim] = rows ids[0..n) of t. */
    int (*embed)(peso_backend *be, const peso_table *t, float *out, const int32_t *ids, int n,
                 peso_err *err);
    /* dtrain [train_hi - train_lo, dim] += dout rows of tokens whose id is
     * trainable; other tokens are skipped. */
    int (*embed_backward)(peso_backend *be, const peso_table *t, float *dtrain, const float *dout,
                          const int32_t *ids, int n, peso_err *err);

    /* ---- cross-entropy at selected positions only ---- */
    /* For p < n_pos: logits = head rows . h[pos[p]] (h is [n_tok, dim],
     * head is [V = n_rows, dim]), losses[p] = logsumexp(logits) -
     * logits[target[p]] (unscaled). The backward is fused, because the
     * logits are never stored: with d = scale * (softmax - onehot(target)),
     * dh[pos[p]] += d . head (dh [n_tok, dim], may be NULL) and dhead
     * [train_hi - train_lo, dim] += d[v] h[pos[p]] for trainable rows v
     * (may be NULL). The caller passes scale = 1 / (global label count)
     * to get the mean loss's gradient. pos[p] is the position whose hidden
     * state predicts target[p] (the causal shift is the caller's). */
    int (*xent)(peso_backend *be, const peso_table *head, const float *h, int n_tok,
                const int32_t *pos, const int32_t *target, int n_pos, float scale, float *losses,
                float *dh, float *dhead, peso_err *err);

    /* ---- optimizer and flat-buffer reductions ---- */
    int (*adamw)(peso_backend *be, float *param, const float *grad, float *m, float *v, size_t n,
                 const peso_adamw *hp, peso_err *err);
    /* *out (host) = sum of x[i]^2 in double, in a fixed order that does not
     * depend on the thread count (gradient clipping, group norms). */
    int (*sumsq)(peso_backend *be, const float *x, size_t n, double *out, peso_err *err);
    /* x *= s. */
    int (*scale)(peso_backend *be, float *x, size_t n, float s, peso_err *err);

    /* ---- proximal terms of the continual methods ---- */
    /* v are the trained LoRA parameters v_t, v_prev the frozen previous
     * adapter v_{t-1}, grad the gradient buffer, all flat (lora/lora.h)
     * and of the same length. Every term covers groups [lo, hi) of gs
     * (0 <= lo <= hi <= gs->n; a train rank's share, method/prox.h
     * peso_prox_shard), writes its value, lambda included, into *value
     * (host, double) and ADDS lambda * d(term)/dv into grad (NULL: value
     * only). lambda must be finite. Values are accumulated in double in
     * group order, whatever the number of threads; since the groups
     * partition the entries, the shares of the ranks sum to the whole
     * term (values up to rounding, gradients exactly).
     * prox_kl: lambda * sum_g KL(softmax(v^(g)) || softmax(v_prev^(g)))
     * (PESO) under any grouping; softmaxes max-subtracted; per group, with
     * p = softmax(v^(g)), q = softmax(v_prev^(g)): dKL/dv^(g) = p (log p -
     * log q) - p KL. */
    int (*prox_kl)(peso_backend *be, const peso_prox_groups *gs, int lo, int hi, const float *v,
                   const float *v_prev, double lambda, float *grad, double *value, peso_err *err);
    /* prox_l2: lambda/2 * ||v - v_prev||^2 over the entries of groups
     * [lo, hi), any grouping (the l2 method passes PESO_PROX_MODULE, so
     * that its ranks share out by module); gradient lambda (v - v_prev). */
    int (*prox_l2)(peso_backend *be, const peso_prox_groups *gs, int lo, int hi, const float *v,
                   const float *v_prev, double lambda, float *grad, double *value, peso_err *err);
    /* prox_ortho: lambda * sum_modules ||A A_prev^T||_F^2 (O-LoRA) over
     * modules [lo, hi). gs must be the PESO_PROX_MODULE groups: a module's
     * A [rank, in] is its seg[0] (off = A's offset, n = rank * in, stride
     * 1), so the descriptor is the same the other terms take, plus the
     * LoRA rank. Gradient w.r.t. A: 2 lambda (A A_prev^T) A_prev; none for
     * B. */
    int (*prox_ortho)(peso_backend *be, const peso_prox_groups *gs, int rank, int lo, int hi,
                      const float *v, const float *v_prev, double lambda, float *grad,
                      double *value, peso_err *err);

    /* ---- row softmax-KL (output-KL) ---- */
    /* Over a right-padded batch of B rows of T positions: z and z_prev
     * [B*T, d], lens [B] (int32; row b's real positions are t < lens[b],
     * 0 <= lens[b] <= T). *value (host) = scale * sum over real positions
     * of KL(softmax(z[pos]) || softmax(z_prev[pos])), in double: each
     * row's KLs summed in position order and multiplied by scale, the rows'
     * values summed in b order. dz [B*T, d] (may be NULL) is OVERWRITTEN,
     * padding included: scale * dKL/dz at real positions, 0 on padding.
     * dz may be z itself (each position reads its row before writing it),
     * but may not otherwise overlap z or z_prev. */
    int (*row_kl)(peso_backend *be, const float *z, const float *z_prev, const int32_t *lens, int B,
                  int T, int d, double scale, float *dz, double *value, peso_err *err);

    /* ---- rows by index ---- */
    /* dst [n, width] = rows idx[0..n) of src [n_src, width]; idx (int32)
     * is device memory like every index array, 0 <= idx[i] < n_src. dst
     * may not overlap src. */
    int (*gather_rows)(peso_backend *be, float *dst, const float *src, int n_src, int width,
                       const int32_t *idx, int n, peso_err *err);

    /* ---- decoding ---- */
    /* out [n, n_sel] = x[r, sel[j]] - lse[r], where lse[r] is the
     * log-sum-exp over ALL V columns of row r of x [n, V] (maximum
     * subtracted, summed in double on the cpu backend); lse [n] (may be
     * NULL) receives it. sel (int32, device) holds n_sel column indices
     * in [0, V): the beam search reads only the code tokens' columns. */
    int (*log_softmax_sel)(peso_backend *be, float *out, float *lse, const float *x, int n, int V,
                           const int32_t *sel, int n_sel, peso_err *err);
    /* See peso_decode_attn_shape; out is overwritten. */
    int (*decode_attention)(peso_backend *be, const peso_decode_attn_shape *s, float *out,
                            const float *q, const float *pk, const float *pv, const float *ok,
                            const float *ov, peso_err *err);
};

/* What a run asks for (config keys backend, device, precision). */
typedef struct peso_backend_opts {
    const char *name; /* "cpu" (NULL: "cpu") or "cuda" */
    /* cuda: the GPU's index; -1 picks the local rank's (Open MPI's
     * OMPI_COMM_WORLD_LOCAL_RANK, else Slurm's SLURM_LOCALID, else 0)
     * modulo the GPUs visible */
    int device;
    /* cuda: products in float32 (the mode the equivalence suite compares
     * with the cpu backend) instead of bf16 operands with float32
     * accumulation; the cpu backend is float32 always */
    int f32;
    /* synchronise and check after every operation, so that an
     * asynchronous fault is reported by the call that caused it
     * (also PESO_DEBUG_SYNC=1 in the environment) */
    int debug_sync;
} peso_backend_opts;

/* Opens a backend; the error says which are built and, for cuda, why a
 * device cannot be used. With PESO_CPU_GUARD=1 in the environment, "cpu"
 * hands out memory the host cannot dereference (cpu_guard.c): a check,
 * without a GPU, that callers touch backend memory through the table
 * only. */
peso_backend *peso_backend_open(const peso_backend_opts *o, peso_err *err);
/* peso_backend_open with only a name (cuda: the local rank's GPU, bf16). */
peso_backend *peso_backend_create(const char *name, peso_err *err);
void peso_backend_destroy(peso_backend *be);

const char *peso_dtype_name(peso_dtype dt);
size_t peso_dtype_size(peso_dtype dt);
/* 1 when be stores frozen weights of type dt. */
int peso_backend_supports(const peso_backend *be, peso_dtype dt);

/* nn.Linear on the table: y[m,n] = alpha * x[m,k] W^T + beta * y, with W
 * [n,k] in wdt. */
int peso_linear(peso_backend *be, float *y, const float *x, const void *w, peso_dtype wdt, int m,
                int n, int k, float alpha, float beta, peso_err *err);
/* Its backward: dx[m,k] += alpha * dy W and dw[n,k] += alpha * dy^T x
 * (dw float32; either may be NULL). */
int peso_linear_backward(peso_backend *be, float *dx, float *dw, const float *dy, const float *x,
                         const void *w, peso_dtype wdt, int m, int n, int k, float alpha,
                         peso_err *err);
/* The same two with the scale alpha * *alpha_dev (alpha_dev a device
 * float; NULL: alpha alone). */
int peso_linear_scaled(peso_backend *be, float *y, const float *x, const void *w, peso_dtype wdt, int m, int n,
                       int k, float alpha, const float *alpha_dev, float beta, peso_err *err);
int peso_linear_backward_scaled(peso_backend *be, float *dx, float *dw, const float *dy, const float *x,
                                const void *w, peso_dtype wdt, int m, int n, int k, float alpha,
                                const float *alpha_dev, peso_err *err);

/* Argument checks shared by the implementations (what one may call with
 * and what not is part of the table's contract, not of one backend). */
int peso_gemm_check(const peso_backend *be, const peso_gemm *g, peso_err *err);
int peso_table_check(const peso_backend *be, const peso_table *t, const char *op, peso_err *err);
int peso_attn_check(const peso_attn_shape *s, peso_err *err);
int peso_decode_attn_check(const peso_decode_attn_shape *s, peso_err *err);
/* The range, lambda and groups [lo, hi) of a prox_* call (what names the
 * entry in the message). */
int peso_prox_check(const char *what, const peso_prox_groups *gs, int lo, int hi, double lambda,
                    const double *value, peso_err *err);

#ifdef __cplusplus
}
#endif

#endif
