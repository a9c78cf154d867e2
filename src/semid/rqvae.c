/* RQ-VAE: training runs batched through cblas_sgemm; encoding and
 * evaluation run row by row with a fixed summation order, so an item's
 * codes depend only on the fitted weights and the item itself, never on
 * which other items are encoded with it.
 *
 * Gradient (straight-through). With z = enc(x), c_l = e_0 + ... + e_l the
 * cumulative quantised vector and r_l = z - c_{l-1} the residual of level
 * l, the decoder reads z + sg[c_{L-1} - z], so the reconstruction gradient
 * reaches z unchanged; the codebook term ||sg[r_l] - e_l||^2 moves only
 * e_l; the commitment term beta ||r_l - sg[e_l]||^2 = beta ||z - sg[c_l]||^2
 * moves only the encoder (earlier codes inside r_l are stop-gradient).
 *
 * The model sees x' = (x - mu) * scale, mu the training mean and scale the
 * inverse RMS norm of the centred training items. Adam moves every weight
 * and code by about lr per step whatever the units, so without this the
 * codebooks trail the latents of large or offset features (LLM hidden
 * states) and clusters merge; with it, the fit does not depend on the
 * features' units. Reported errors are in the original units. */
#include "semid/rqvae.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/rng.h"
#include "semid/kmeans.h"
#include "semid/rqvae_internal.h"

#define RQ_MAX_HIDDEN 4
#define RQ_MAX_LAYERS (RQ_MAX_HIDDEN + 1)
#define RQ_MAX_LEVELS 8
#define RQ_ENC 0
#define RQ_DEC 1

/* RNG streams: one per purpose, so changing one use leaves the others. */
#define RQ_STREAM_INIT 0x7271696e6974ull     /* weights */
#define RQ_STREAM_KMEANS 0x72716b6d65616eull /* codebook k-means */
#define RQ_STREAM_SHUFFLE 0x727173687566ull  /* epoch order */

/* Warm-up: the first epochs / RQ_WARMUP_DIV epochs skip quantisation. */
#define RQ_WARMUP_DIV 5

#define ADAM_B1 0.9
#define ADAM_B2 0.999
#define ADAM_EPS 1e-8

typedef struct rq_layer {
    int in, out;
    size_t w, b; /* offsets of the [out x in] weight and the bias */
} rq_layer;

struct peso_rqvae {
    peso_rqvae_opts o;
    int n_layers;                     /* per MLP */
    rq_layer layer[2][RQ_MAX_LAYERS]; /* [RQ_ENC], [RQ_DEC] */
    size_t enc_end, dec_end;          /* the codebooks start at dec_end */
    size_t n_params;
    int max_dim;
    float *p;
    float *mu;   /* [in_dim] training mean */
    float scale; /* inverse RMS norm of the centred training items */
};

/* Batch buffers: act[mlp][0] is the MLP's input, act[mlp][l + 1] the output
 * of layer l (after ReLU on hidden layers). */
typedef struct rq_ws {
    float *act[2][RQ_MAX_LAYERS + 1];
    float *z0;      /* [B x latent] z at the reference parameters */
    float *cum;     /* [levels x B x latent] c_l at the reference parameters */
    float *res;     /* [B x latent] */
    float *dot;     /* [B x codebook] */
    float *enorm;   /* [codebook] */
    int32_t *codes; /* [B x levels] */
    float *g0, *g1; /* [B x max_dim] backward buffers */
} rq_ws;

typedef struct rq_parts {
    double recon, quant;
} rq_parts;

static float *cb_entry(const peso_rqvae *m, const float *p, int level, int code)
{
    size_t k = (size_t)level * (size_t)m->o.codebook + (size_t)code;
    return (float *)p + m->dec_end + k * (size_t)m->o.latent;
}

static int check_opts(const peso_rqvae_opts *o, peso_err *err)
{
    if (o->in_dim < 1)
        return peso_errf(err, "rqvae: in_dim = %d, expected >= 1", o->in_dim);
    if (o->n_hidden < 0 || o->n_hidden > RQ_MAX_HIDDEN)
        return peso_errf(err, "rqvae: %d hidden layers, expected 0..%d", o->n_hidden, RQ_MAX_HIDDEN);
    for (int i = 0; i < o->n_hidden; i++)
        if (o->hidden[i] < 1)
            return peso_errf(err, "rqvae: hidden[%d] = %d, expected >= 1", i, o->hidden[i]);
    if (o->latent < 1)
        return peso_errf(err, "rqvae: latent = %d, expected >= 1", o->latent);
    if (o->levels < 1 || o->levels > RQ_MAX_LEVELS)
        return peso_errf(err, "rqvae: levels = %d, expected 1..%d", o->levels, RQ_MAX_LEVELS);
    if (o->codebook < 1)
        return peso_errf(err, "rqvae: codebook = %d, expected >= 1", o->codebook);
    if (o->epochs < 0 || o->batch < 1 || o->kmeans_iters < 0)
        return peso_errf(err,
                         "rqvae: epochs = %d, batch = %d, kmeans_iters = %d: expected "
                         "epochs >= 0, batch >= 1, kmeans_iters >= 0",
                         o->epochs, o->batch, o->kmeans_iters);
    if (!(o->lr > 0.0f) || !(o->beta >= 0.0f))
        return peso_errf(err, "rqvae: lr = %g, beta = %g: expected lr > 0, beta >= 0", (double)o->lr,
                         (double)o->beta);
    return 0;
}

/* Lays out the parameter buffer: encoder in -> hidden... -> latent, decoder
 * the mirror image, then the codebooks. */
static peso_rqvae *model_new(const peso_rqvae_opts *o)
{
    peso_rqvae *m = peso_calloc(1, sizeof *m);
    m->o = *o;
    m->n_layers = o->n_hidden + 1;
    int dims[RQ_MAX_LAYERS + 1];
    dims[0] = o->in_dim;
    for (int i = 0; i < o->n_hidden; i++)
        dims[i + 1] = o->hidden[i];
    dims[m->n_layers] = o->latent;
    size_t off = 0;
    m->max_dim = 0;
    for (int mlp = 0; mlp < 2; mlp++) {
        for (int l = 0; l < m->n_layers; l++) {
            rq_layer *ly = &m->layer[mlp][l];
            ly->in = mlp == RQ_ENC ? dims[l] : dims[m->n_layers - l];
            ly->out = mlp == RQ_ENC ? dims[l + 1] : dims[m->n_layers - l - 1];
            ly->w = off;
            off += (size_t)ly->in * (size_t)ly->out;
            ly->b = off;
            off += (size_t)ly->out;
            if (ly->in > m->max_dim)
                m->max_dim = ly->in;
        }
        if (mlp == RQ_ENC)
            m->enc_end = off;
    }
    m->dec_end = off;
    m->n_params = off + (size_t)o->levels * (size_t)o->codebook * (size_t)o->latent;
    m->p = peso_calloc(m->n_params, sizeof *m->p);
    m->mu = peso_calloc((size_t)o->in_dim, sizeof *m->mu);
    m->scale = 1.0f;
    return m;
}

/* mu and scale from the training items (sums in item order). Items that
 * are all equal keep scale 1. */
static void fit_input_norm(peso_rqvae *m, const float *x, size_t n)
{
    size_t d = (size_t)m->o.in_dim;
    double *mean = peso_calloc(d, sizeof *mean), ss = 0.0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++)
            mean[j] += x[i * d + j];
    for (size_t j = 0; j < d; j++) {
        mean[j] /= (double)n;
        m->mu[j] = (float)mean[j];
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++) {
            double t = (double)x[i * d + j] - mean[j];
            ss += t * t;
        }
    m->scale = ss > 0.0 ? (float)(1.0 / sqrt(ss / (double)n)) : 1.0f;
    free(mean);
}

static void normalise_row(const peso_rqvae *m, const float *x, float *out)
{
    for (int j = 0; j < m->o.in_dim; j++)
        out[j] = (x[j] - m->mu[j]) * m->scale;
}

/* Uniform(-1/sqrt(in), 1/sqrt(in)) weights and biases, as PyTorch's Linear. */
static void init_weights(peso_rqvae *m)
{
    peso_rng rng;
    peso_rng_seed(&rng, m->o.seed, RQ_STREAM_INIT);
    for (int mlp = 0; mlp < 2; mlp++) {
        for (int l = 0; l < m->n_layers; l++) {
            const rq_layer *ly = &m->layer[mlp][l];
            double a = 1.0 / sqrt((double)ly->in);
            size_t cnt = (size_t)ly->in * (size_t)ly->out + (size_t)ly->out;
            for (size_t i = 0; i < cnt; i++)
                m->p[ly->w + i] = (float)((2.0 * peso_rng_uniform(&rng) - 1.0) * a);
        }
    }
}

/* ---- row-wise path (encode, evaluate, k-means init) ---- */

/* Dot product with eight partial sums in a fixed order. */
static float dot8(const float *a, const float *b, int n)
{
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int u = 0; u < 8; u++)
            acc[u] += a[i + u] * b[i + u];
    float tail = 0.0f;
    for (; i < n; i++)
        tail += a[i] * b[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

static float sqdist8(const float *a, const float *b, int n, float *tmp)
{
    for (int i = 0; i < n; i++)
        tmp[i] = a[i] - b[i];
    return dot8(tmp, tmp, n);
}

/* Runs one MLP on one row; a and b are max_dim scratch rows. Returns the
 * output (one of a, b). */
static const float *mlp_row(const peso_rqvae *m, int mlp, const float *in, float *a, float *b)
{
    const float *cur = in;
    float *out = a;
    for (int l = 0; l < m->n_layers; l++) {
        const rq_layer *ly = &m->layer[mlp][l];
        const float *w = m->p + ly->w, *bias = m->p + ly->b;
        for (int j = 0; j < ly->out; j++) {
            float v = bias[j] + dot8(w + (size_t)j * ly->in, cur, ly->in);
            out[j] = (l < m->n_layers - 1 && v < 0.0f) ? 0.0f : v;
        }
        cur = out;
        out = out == a ? b : a;
    }
    return cur;
}

/* Nearest code per level for latent z; zq = sum of the chosen codes. r and
 * tmp are latent-sized scratch. */
static void quantize_row(const peso_rqvae *m, const float *z, int32_t *codes, float *zq, float *r, float *tmp)
{
    int d = m->o.latent;
    memcpy(r, z, (size_t)d * sizeof *r);
    memset(zq, 0, (size_t)d * sizeof *zq);
    for (int l = 0; l < m->o.levels; l++) {
        int best = 0;
        float bd = sqdist8(r, cb_entry(m, m->p, l, 0), d, tmp);
        for (int k = 1; k < m->o.codebook; k++) {
            float v = sqdist8(r, cb_entry(m, m->p, l, k), d, tmp);
            if (v < bd) {
                bd = v;
                best = k;
            }
        }
        const float *e = cb_entry(m, m->p, l, best);
        for (int j = 0; j < d; j++) {
            r[j] -= e[j];
            zq[j] += e[j];
        }
        codes[l] = best;
    }
}

typedef struct rq_row_scratch {
    float *a, *b, *zq, *r, *tmp, *xin;
} rq_row_scratch;

static void scratch_alloc(const peso_rqvae *m, rq_row_scratch *s)
{
    size_t md = (size_t)m->max_dim > (size_t)m->o.latent ? (size_t)m->max_dim : (size_t)m->o.latent;
    s->a = peso_malloc(md * sizeof *s->a);
    s->b = peso_malloc(md * sizeof *s->b);
    s->zq = peso_malloc((size_t)m->o.latent * sizeof *s->zq);
    s->r = peso_malloc((size_t)m->o.latent * sizeof *s->r);
    s->tmp = peso_malloc(md * sizeof *s->tmp);
    s->xin = peso_malloc((size_t)m->o.in_dim * sizeof *s->xin);
}

static void scratch_free(rq_row_scratch *s)
{
    free(s->a);
    free(s->b);
    free(s->zq);
    free(s->r);
    free(s->tmp);
    free(s->xin);
}

/* Codes of one item and, when err2 is not NULL, its squared
 * reconstruction error in the input's units. The decoder output reuses the
 * scratch rows, so zq is copied to tmp before decoding. */
static void encode_row(const peso_rqvae *m, const float *x, int32_t *codes, double *err2, rq_row_scratch *s)
{
    normalise_row(m, x, s->xin);
    const float *z = mlp_row(m, RQ_ENC, s->xin, s->a, s->b);
    quantize_row(m, z, codes, s->zq, s->r, s->tmp);
    if (!err2)
        return;
    memcpy(s->tmp, s->zq, (size_t)m->o.latent * sizeof *s->tmp);
    const float *xh = mlp_row(m, RQ_DEC, s->tmp, s->a, s->b);
    double e = 0.0;
    for (int j = 0; j < m->o.in_dim; j++) {
        double t = (double)s->xin[j] - (double)xh[j];
        e += t * t;
    }
    *err2 = e / ((double)m->scale * m->scale);
}

void peso_rqvae_encode(const peso_rqvae *m, const float *x, size_t n, int32_t *codes)
{
#pragma omp parallel
    {
        rq_row_scratch s;
        scratch_alloc(m, &s);
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++)
            encode_row(m, x + i * (size_t)m->o.in_dim, codes + i * (size_t)m->o.levels, NULL, &s);
        scratch_free(&s);
    }
}

void peso_rqvae_evaluate(const peso_rqvae *m, const float *x, size_t n, peso_rqvae_report *rep)
{
    int L = m->o.levels, K = m->o.codebook;
    int32_t *codes = peso_malloc((n ? n : 1) * (size_t)L * sizeof *codes);
    double *e2 = peso_malloc((n ? n : 1) * sizeof *e2);
#pragma omp parallel
    {
        rq_row_scratch s;
        scratch_alloc(m, &s);
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++)
            encode_row(m, x + i * (size_t)m->o.in_dim, codes + i * (size_t)L, &e2[i], &s);
        scratch_free(&s);
    }
    memset(rep, 0, sizeof *rep);
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += e2[i];
    rep->recon_mse = n ? sum / (double)n : 0.0;
    size_t *cnt = peso_malloc((size_t)K * sizeof *cnt);
    for (int l = 0; l < L; l++) {
        memset(cnt, 0, (size_t)K * sizeof *cnt);
        for (size_t i = 0; i < n; i++)
            cnt[codes[i * (size_t)L + l]]++;
        double h = 0.0;
        for (int k = 0; k < K; k++) {
            if (cnt[k] == 0)
                continue;
            double q = (double)cnt[k] / (double)n;
            h -= q * log(q);
            rep->used_codes[l]++;
        }
        rep->perplexity[l] = n ? exp(h) : 0.0;
    }
    free(cnt);
    free(e2);
    free(codes);
}

/* ---- batched path (training and its surrogate) ---- */

static void ws_alloc(const peso_rqvae *m, size_t cap, rq_ws *w)
{
    memset(w, 0, sizeof *w);
    for (int mlp = 0; mlp < 2; mlp++) {
        w->act[mlp][0] = peso_malloc(cap * (size_t)m->layer[mlp][0].in * sizeof(float));
        for (int l = 0; l < m->n_layers; l++)
            w->act[mlp][l + 1] = peso_malloc(cap * (size_t)m->layer[mlp][l].out * sizeof(float));
    }
    size_t d = (size_t)m->o.latent;
    w->z0 = peso_malloc(cap * d * sizeof(float));
    w->cum = peso_malloc((size_t)m->o.levels * cap * d * sizeof(float));
    w->res = peso_malloc(cap * d * sizeof(float));
    w->dot = peso_malloc(cap * (size_t)m->o.codebook * sizeof(float));
    w->enorm = peso_malloc((size_t)m->o.codebook * sizeof(float));
    w->codes = peso_malloc(cap * (size_t)m->o.levels * sizeof(int32_t));
    w->g0 = peso_malloc(cap * (size_t)m->max_dim * sizeof(float));
    w->g1 = peso_malloc(cap * (size_t)m->max_dim * sizeof(float));
}

static void ws_free(const peso_rqvae *m, rq_ws *w)
{
    for (int mlp = 0; mlp < 2; mlp++)
        for (int l = 0; l <= m->n_layers; l++)
            free(w->act[mlp][l]);
    free(w->z0);
    free(w->cum);
    free(w->res);
    free(w->dot);
    free(w->enorm);
    free(w->codes);
    free(w->g0);
    free(w->g1);
}

/* act[mlp][0] (B rows) -> act[mlp][n_layers] with parameters p. */
static void mlp_forward(const peso_rqvae *m, const float *p, int mlp, rq_ws *w, int B)
{
    for (int l = 0; l < m->n_layers; l++) {
        const rq_layer *ly = &m->layer[mlp][l];
        float *y = w->act[mlp][l + 1];
        for (int i = 0; i < B; i++)
            memcpy(y + (size_t)i * ly->out, p + ly->b, (size_t)ly->out * sizeof *y);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, ly->out, ly->in, 1.0f, w->act[mlp][l], ly->in,
                    p + ly->w, ly->in, 1.0f, y, ly->out);
        if (l < m->n_layers - 1)
            for (size_t i = 0; i < (size_t)B * ly->out; i++)
                if (y[i] < 0.0f)
                    y[i] = 0.0f;
    }
}

/* Backward through one MLP from dy (B x output, in buffer dy, which is one
 * of w->g0 / w->g1). Accumulates weight and bias gradients into grad and
 * returns the gradient w.r.t. the MLP's input (NULL if need_din is 0). */
static float *mlp_backward(const peso_rqvae *m, const float *p, float *grad, int mlp, rq_ws *w, int B,
                           float *dy, int need_din)
{
    float *spare = dy == w->g0 ? w->g1 : w->g0;
    for (int l = m->n_layers - 1; l >= 0; l--) {
        const rq_layer *ly = &m->layer[mlp][l];
        if (l < m->n_layers - 1) {
            const float *y = w->act[mlp][l + 1];
            for (size_t i = 0; i < (size_t)B * ly->out; i++)
                if (y[i] <= 0.0f)
                    dy[i] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ly->out, ly->in, B, 1.0f, dy, ly->out,
                    w->act[mlp][l], ly->in, 1.0f, grad + ly->w, ly->in);
        float *gb = grad + ly->b;
        for (int i = 0; i < B; i++)
            for (int j = 0; j < ly->out; j++)
                gb[j] += dy[(size_t)i * ly->out + j];
        if (l == 0 && !need_din)
            return NULL;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, ly->in, ly->out, 1.0f, dy, ly->out,
                    p + ly->w, ly->in, 0.0f, spare, ly->in);
        float *t = dy;
        dy = spare;
        spare = t;
    }
    return dy;
}

/* Fills w->cum from z0 with the codebooks of ref; when choose is set, also
 * picks each level's nearest code into codes (ties: lowest index). */
static void quantize_batch(const peso_rqvae *m, const float *ref, rq_ws *w, int B, int32_t *codes, int choose)
{
    int d = m->o.latent, K = m->o.codebook, L = m->o.levels;
    size_t bd = (size_t)B * (size_t)d;
    for (int l = 0; l < L; l++) {
        float *cum = w->cum + (size_t)l * bd;
        const float *prev = l > 0 ? cum - bd : NULL;
        if (choose) {
            for (size_t i = 0; i < bd; i++)
                w->res[i] = w->z0[i] - (prev ? prev[i] : 0.0f);
            const float *E = cb_entry(m, ref, l, 0);
            for (int k = 0; k < K; k++)
                w->enorm[k] = dot8(E + (size_t)k * d, E + (size_t)k * d, d);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, K, d, 1.0f, w->res, d, E, d, 0.0f, w->dot,
                        K);
            for (int i = 0; i < B; i++) {
                const float *row = w->dot + (size_t)i * K;
                int best = 0;
                float bv = w->enorm[0] - 2.0f * row[0];
                for (int k = 1; k < K; k++) {
                    float v = w->enorm[k] - 2.0f * row[k];
                    if (v < bv) {
                        bv = v;
                        best = k;
                    }
                }
                codes[(size_t)i * L + l] = best;
            }
        }
        for (int i = 0; i < B; i++) {
            const float *e = cb_entry(m, ref, l, codes[(size_t)i * L + l]);
            for (int j = 0; j < d; j++) {
                size_t o = (size_t)i * d + j;
                cum[o] = (prev ? prev[o] : 0.0f) + e[j];
            }
        }
    }
}

/* Forward pass of the surrogate on the B rows in w->act[RQ_ENC][0]: z at
 * p, z0 and the quantised c_l at ref (codes NULL: chosen there), decoder
 * at p on z + (c_{L-1} - z0), or on z alone without quantisation. */
static void forward_batch(const peso_rqvae *m, const float *p, const float *ref, int B, const int32_t *codes,
                          int quantise, rq_ws *w)
{
    int L = m->o.levels, nl = m->n_layers;
    size_t bd = (size_t)B * (size_t)m->o.latent;
    if (ref != p) {
        mlp_forward(m, ref, RQ_ENC, w, B);
        memcpy(w->z0, w->act[RQ_ENC][nl], bd * sizeof *w->z0);
    }
    mlp_forward(m, p, RQ_ENC, w, B);
    const float *z = w->act[RQ_ENC][nl];
    float *din = w->act[RQ_DEC][0];
    if (ref == p)
        memcpy(w->z0, z, bd * sizeof *w->z0);
    if (quantise) {
        if (codes)
            memcpy(w->codes, codes, (size_t)B * (size_t)L * sizeof *w->codes);
        quantize_batch(m, ref, w, B, w->codes, codes == NULL);
        const float *zq = w->cum + (size_t)(L - 1) * bd;
        for (size_t i = 0; i < bd; i++)
            din[i] = z[i] + (zq[i] - w->z0[i]);
    } else {
        memcpy(din, z, bd * sizeof *din);
    }
    mlp_forward(m, p, RQ_DEC, w, B);
}

/* Sums over the batch of ||sg[r_l] - e_l||^2 (cbl) and ||z - sg[c_l]||^2
 * (commit) over all levels. */
static void quant_sums(const peso_rqvae *m, const float *p, int B, const rq_ws *w, double *cbl,
                       double *commit)
{
    int d = m->o.latent, L = m->o.levels;
    size_t bd = (size_t)B * (size_t)d;
    const float *z = w->act[RQ_ENC][m->n_layers];
    *cbl = *commit = 0.0;
    for (int l = 0; l < L; l++) {
        const float *cum = w->cum + (size_t)l * bd, *prev = l > 0 ? cum - bd : NULL;
        for (int i = 0; i < B; i++) {
            const float *e = cb_entry(m, p, l, w->codes[(size_t)i * L + l]);
            for (int j = 0; j < d; j++) {
                size_t o = (size_t)i * d + j;
                double r0 = (double)w->z0[o] - (prev ? prev[o] : 0.0);
                double t = r0 - e[j], c = (double)z[o] - cum[o];
                *cbl += t * t;
                *commit += c * c;
            }
        }
    }
}

/* Adds the commitment gradient to dz and the codebook gradient to grad. */
static void quant_backward(const peso_rqvae *m, const float *p, int B, const rq_ws *w, float *dz, float *grad)
{
    int d = m->o.latent, L = m->o.levels;
    size_t bd = (size_t)B * (size_t)d;
    const float *z = w->act[RQ_ENC][m->n_layers];
    float cc = (float)(2.0 * (double)m->o.beta / B), ce = (float)(2.0 / B);
    for (int l = 0; l < L; l++) {
        const float *cum = w->cum + (size_t)l * bd, *prev = l > 0 ? cum - bd : NULL;
        for (int i = 0; i < B; i++) {
            int code = w->codes[(size_t)i * L + l];
            const float *e = cb_entry(m, p, l, code);
            float *ge = cb_entry(m, grad, l, code);
            for (int j = 0; j < d; j++) {
                size_t o = (size_t)i * d + j;
                float r0 = w->z0[o] - (prev ? prev[o] : 0.0f);
                dz[o] += cc * (z[o] - cum[o]);
                ge[j] += ce * (e[j] - r0);
            }
        }
    }
}

/* The surrogate (see rqvae_internal.h) on the B rows in w->act[RQ_ENC][0];
 * the mean loss per item. grad, if not NULL, must be zeroed by the caller;
 * gradients are added. */
static double batch_loss(const peso_rqvae *m, const float *p, const float *ref, int B, const int32_t *codes,
                         int quantise, float *grad, rq_ws *w, rq_parts *parts)
{
    size_t bx = (size_t)B * (size_t)m->o.in_dim;
    forward_batch(m, p, ref, B, codes, quantise, w);
    const float *x = w->act[RQ_ENC][0], *xh = w->act[RQ_DEC][m->n_layers];
    double recon = 0.0, cbl = 0.0, commit = 0.0;
    for (size_t i = 0; i < bx; i++) {
        double t = (double)xh[i] - (double)x[i];
        recon += t * t;
    }
    if (quantise)
        quant_sums(m, p, B, w, &cbl, &commit);
    if (parts) {
        parts->recon = recon / B;
        parts->quant = (cbl + (double)m->o.beta * commit) / B;
    }
    if (grad) {
        float *dy = w->g0;
        for (size_t i = 0; i < bx; i++)
            dy[i] = (float)(2.0 / B * ((double)xh[i] - (double)x[i]));
        /* dz lies in g0 or g1; the encoder backward swaps between them. */
        float *dz = mlp_backward(m, p, grad, RQ_DEC, w, B, dy, 1);
        if (quantise)
            quant_backward(m, p, B, w, dz, grad);
        mlp_backward(m, p, grad, RQ_ENC, w, B, dz, 0);
    }
    return (recon + cbl + (double)m->o.beta * commit) / B;
}

size_t peso_rqvae_n_params(const peso_rqvae *m)
{
    return m->n_params;
}

const float *peso_rqvae_input_norm(const peso_rqvae *m, float *scale)
{
    *scale = m->scale;
    return m->mu;
}

const float *peso_rqvae_params(const peso_rqvae *m)
{
    return m->p;
}

void peso_rqvae_param_groups(const peso_rqvae *m, size_t *enc_end, size_t *dec_end)
{
    *enc_end = m->enc_end;
    *dec_end = m->dec_end;
}

double peso_rqvae_surrogate(const peso_rqvae *m, const float *p, const float *ref, const float *x, size_t n,
                            const int32_t *codes, float *grad)
{
    rq_ws w;
    ws_alloc(m, n, &w);
    for (size_t i = 0; i < n; i++)
        normalise_row(m, x + i * (size_t)m->o.in_dim, w.act[RQ_ENC][0] + i * (size_t)m->o.in_dim);
    if (grad)
        memset(grad, 0, m->n_params * sizeof *grad);
    double v = batch_loss(m, p, ref, (int)n, codes, 1, grad, &w, NULL);
    ws_free(m, &w);
    return v;
}

/* ---- fitting ---- */

/* Level by level: k-means on the residuals of the training set's latents
 * under the freshly initialised encoder, then subtract the nearest code. */
static void init_codebooks(peso_rqvae *m, const float *x, size_t n)
{
    int d = m->o.latent, K = m->o.codebook;
    float *r = peso_malloc(n * (size_t)d * sizeof *r);
    int32_t *assign = peso_malloc(n * sizeof *assign);
#pragma omp parallel
    {
        rq_row_scratch s;
        scratch_alloc(m, &s);
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) {
            normalise_row(m, x + i * (size_t)m->o.in_dim, s.xin);
            const float *z = mlp_row(m, RQ_ENC, s.xin, s.a, s.b);
            memcpy(r + i * (size_t)d, z, (size_t)d * sizeof *r);
        }
        scratch_free(&s);
    }
    peso_rng rng;
    peso_rng_seed(&rng, m->o.seed, RQ_STREAM_KMEANS);
    for (int l = 0; l < m->o.levels; l++) {
        float *E = cb_entry(m, m->p, l, 0);
        peso_kmeans(r, n, d, K, m->o.kmeans_iters, &rng, E);
        peso_kmeans_assign(r, n, d, E, K, assign);
        for (size_t i = 0; i < n; i++)
            for (int j = 0; j < d; j++)
                r[i * (size_t)d + j] -= E[(size_t)assign[i] * d + j];
    }
    free(assign);
    free(r);
}

static void adam_step(float *p, const float *g, float *m1, float *m2, size_t n, long t, float lr)
{
    double c1 = 1.0 - pow(ADAM_B1, (double)t), c2 = 1.0 - pow(ADAM_B2, (double)t);
    for (size_t i = 0; i < n; i++) {
        m1[i] = (float)(ADAM_B1 * m1[i] + (1.0 - ADAM_B1) * g[i]);
        m2[i] = (float)(ADAM_B2 * m2[i] + (1.0 - ADAM_B2) * (double)g[i] * g[i]);
        double mh = m1[i] / c1, vh = m2[i] / c2;
        p[i] -= (float)(lr * mh / (sqrt(vh) + ADAM_EPS));
    }
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

/* Codes no training item chose during the epoch are moved onto residuals
 * of the last batch (distinct rows while they last), with their Adam
 * moments cleared: without this, codes the moving latents leave behind
 * stay unused for good. */
static void restart_dead(peso_rqvae *m, const rq_ws *w, int nb, const int32_t *used, float *m1, float *m2,
                         peso_rng *rng, int32_t *rows)
{
    int d = m->o.latent, K = m->o.codebook;
    size_t bd = (size_t)nb * (size_t)d;
    for (int l = 0; l < m->o.levels; l++) {
        int left = 0;
        for (int k = 0; k < K; k++) {
            if (used[(size_t)l * K + k])
                continue;
            if (left == 0) {
                for (int i = 0; i < nb; i++)
                    rows[i] = i;
                left = nb;
            }
            int j = (int)peso_rng_below(rng, (uint64_t)left);
            int row = rows[j];
            rows[j] = rows[--left];
            const float *prev = l > 0 ? w->cum + (size_t)(l - 1) * bd : NULL;
            float *e = cb_entry(m, m->p, l, k);
            size_t off = (size_t)(e - m->p);
            for (int t = 0; t < d; t++) {
                size_t o = (size_t)row * d + t;
                e[t] = w->z0[o] - (prev ? prev[o] : 0.0f);
            }
            memset(m1 + off, 0, (size_t)d * sizeof *m1);
            memset(m2 + off, 0, (size_t)d * sizeof *m2);
        }
    }
}

/* Training state: Adam moments, epoch order, code usage. */
typedef struct rq_trainer {
    rq_ws w;
    int B;
    float *grad, *m1, *m2;
    int32_t *perm, *used, *rows;
    long step;
    peso_rng rng;
} rq_trainer;

static void trainer_init(const peso_rqvae *m, size_t n, rq_trainer *t)
{
    t->B = n < (size_t)m->o.batch ? (int)n : m->o.batch;
    ws_alloc(m, (size_t)t->B, &t->w);
    t->grad = peso_malloc(m->n_params * sizeof *t->grad);
    t->m1 = peso_calloc(m->n_params, sizeof *t->m1);
    t->m2 = peso_calloc(m->n_params, sizeof *t->m2);
    t->perm = peso_malloc(n * sizeof *t->perm);
    for (size_t i = 0; i < n; i++)
        t->perm[i] = (int32_t)i;
    t->used = peso_malloc((size_t)m->o.levels * (size_t)m->o.codebook * sizeof *t->used);
    t->rows = peso_malloc((size_t)t->B * sizeof *t->rows);
    t->step = 0;
    peso_rng_seed(&t->rng, m->o.seed, RQ_STREAM_SHUFFLE);
}

static void trainer_free(const peso_rqvae *m, rq_trainer *t)
{
    free(t->rows);
    free(t->used);
    free(t->perm);
    free(t->m2);
    free(t->m1);
    free(t->grad);
    ws_free(m, &t->w);
}

/* One pass over the items in a fresh random order; quantise 0 trains the
 * plain autoencoder. The partial batch goes first, so the last one, whose
 * residuals seed the restarts, is full. Returns the mean loss parts. */
static rq_parts run_epoch(peso_rqvae *m, const float *x, size_t n, int quantise, int restart, rq_trainer *t)
{
    size_t in = (size_t)m->o.in_dim, L = (size_t)m->o.levels;
    rq_parts sum = {0.0, 0.0};
    peso_rng_shuffle_i32(&t->rng, t->perm, n);
    memset(t->used, 0, L * (size_t)m->o.codebook * sizeof *t->used);
    size_t B = (size_t)t->B, b0 = 0, nb = (n % B) ? (n % B) : B;
    while (b0 < n) {
        for (size_t i = 0; i < nb; i++)
            normalise_row(m, x + (size_t)t->perm[b0 + i] * in, t->w.act[RQ_ENC][0] + i * in);
        memset(t->grad, 0, m->n_params * sizeof *t->grad);
        rq_parts parts;
        batch_loss(m, m->p, m->p, (int)nb, NULL, quantise, t->grad, &t->w, &parts);
        adam_step(m->p, t->grad, t->m1, t->m2, m->n_params, ++t->step, m->o.lr);
        sum.recon += parts.recon * (double)nb / (double)n;
        sum.quant += parts.quant * (double)nb / (double)n;
        for (size_t i = 0; quantise && i < nb * L; i++)
            t->used[(i % L) * (size_t)m->o.codebook + (size_t)t->w.codes[i]]++;
        b0 += nb;
        nb = B;
    }
    if (quantise && restart)
        restart_dead(m, &t->w, t->B, t->used, t->m1, t->m2, &t->rng, t->rows);
    return sum;
}

/* The first epochs / RQ_WARMUP_DIV epochs train the autoencoder alone:
 * Adam's first steps move all latents together by more than the codes
 * can follow (codes move ~lr per step), which merges k-means clusters
 * formed on the untrained encoder. Codebooks are initialised after. */
static void train(peso_rqvae *m, const float *x, size_t n, int verbose)
{
    rq_trainer t;
    trainer_init(m, n, &t);
    int warm = m->o.epochs / RQ_WARMUP_DIV;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int ep = 1; ep <= m->o.epochs; ep++) {
        if (ep == warm + 1)
            init_codebooks(m, x, n);
        rq_parts p = run_epoch(m, x, n, ep > warm, ep < m->o.epochs, &t);
        double unit = 1.0 / ((double)m->scale * m->scale); /* back to the input's units */
        if (verbose && (ep == 1 || ep == warm || ep % 10 == 0 || ep == m->o.epochs))
            fprintf(stderr, "rqvae: epoch %d/%d%s recon %.5f quant %.5f (%.1f s)\n", ep, m->o.epochs,
                    ep <= warm ? " (autoencoder warm-up)" : "", p.recon * unit, p.quant * unit,
                    seconds_since(&t0));
    }
    if (m->o.epochs == 0)
        init_codebooks(m, x, n);
    trainer_free(m, &t);
}

int peso_rqvae_fit(peso_rqvae **out, const float *x, size_t n, const peso_rqvae_opts *o, int verbose,
                   peso_err *err)
{
    *out = NULL;
    if (check_opts(o, err))
        return -1;
    if (n == 0)
        return peso_errf(err, "rqvae: no training items");
    for (size_t i = 0; i < n * (size_t)o->in_dim; i++)
        if (!isfinite(x[i]))
            return peso_errf(err, "rqvae: training item %zu, feature %zu is not finite (%g)",
                             i / (size_t)o->in_dim, i % (size_t)o->in_dim, (double)x[i]);
    /* OpenBLAS splits its products differently with more threads, which
     * changes the rounding: one thread makes the fitted model (and so the
     * semantic IDs) the same on machines with any number of cores. */
    int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    peso_rqvae *m = model_new(o);
    fit_input_norm(m, x, n);
    init_weights(m);
    train(m, x, n, verbose);
    openblas_set_num_threads(blas_threads);
    *out = m;
    return 0;
}

void peso_rqvae_free(peso_rqvae *m)
{
    if (!m)
        return;
    free(m->p);
    free(m->mu);
    free(m);
}
