/* RQ-VAE (Rajput et al., 2023) in plain C: MLP encoder x -> z (ReLU hidden
 * layers), `levels` residual quantisers of `codebook` codes each, MLP decoder
 * zq -> x_hat. Loss = ||x - x_hat||^2 + sum_l (||sg[r_l] - e_l||^2 +
 * beta ||r_l - sg[e_l]||^2), straight-through gradient to the encoder,
 * Adam. Inputs are centred and scaled by one factor (the training set's
 * mean and RMS norm), so the fit does not depend on the features' units.
 * The first epochs / 5 epochs train the autoencoder without quantisation;
 * then the codebooks are initialised by k-means on the training set's
 * residuals (level by level); a code no item chose during an epoch restarts
 * on a residual of the epoch's last batch. Fitted once (on D1's items), then
 * frozen: encoding is a pure function of the fitted weights and of the item
 * alone. Deterministic for a seed, whatever the thread count. */
#ifndef PESO_SEMID_RQVAE_H
#define PESO_SEMID_RQVAE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct peso_rqvae_opts {
    int in_dim;
    int hidden[4];
    int n_hidden;
    int latent;
    int levels;
    int codebook;
    int epochs;
    int batch;
    float lr;
    float beta;
    int kmeans_iters;
    uint64_t seed;
} peso_rqvae_opts;

typedef struct peso_rqvae peso_rqvae;

typedef struct peso_rqvae_report {
    double recon_mse;          /* mean squared reconstruction error per item (sum over dims) */
    double perplexity[8];      /* exp(entropy) of code usage per level */
    int used_codes[8];         /* distinct codes used per level */
} peso_rqvae_report;

int peso_rqvae_fit(peso_rqvae **m, const float *x, size_t n, const peso_rqvae_opts *o,
                   int verbose, peso_err *err);
/* codes: n x levels, row-major. */
void peso_rqvae_encode(const peso_rqvae *m, const float *x, size_t n, int32_t *codes);
/* Reconstruction error and code usage of x under the frozen model. */
void peso_rqvae_evaluate(const peso_rqvae *m, const float *x, size_t n, peso_rqvae_report *rep);
void peso_rqvae_free(peso_rqvae *m);

#endif
