/* RQ-VAE internals exposed for the tests (gradient check); not part of
 * the public contract in rqvae.h. */
#ifndef PESO_SEMID_RQVAE_INTERNAL_H
#define PESO_SEMID_RQVAE_INTERNAL_H

#include "semid/rqvae.h"

/* Parameters are one flat buffer: encoder layers [0, enc_end), decoder
 * layers [enc_end, dec_end), codebooks [dec_end, n_params), each layer a
 * row-major [out x in] weight followed by its bias. */
size_t peso_rqvae_n_params(const peso_rqvae *m);
const float *peso_rqvae_params(const peso_rqvae *m);
void peso_rqvae_param_groups(const peso_rqvae *m, size_t *enc_end, size_t *dec_end);
/* The input normalisation x' = (x - mu) * scale: returns mu [in_dim]. */
const float *peso_rqvae_input_norm(const peso_rqvae *m, float *scale);

/* The straight-through surrogate whose gradient training follows: the loss
 * of rqvae.h on n items x (normalised here, as in training; the loss is in
 * the normalised units) with the given codes (n x levels), evaluated at
 * parameters p while every stop-gradient quantity (the decoder's
 * straight-through shift zq - z, the residuals, the quantised targets) is
 * taken at parameters ref. At p == ref its value is the training loss and
 * its gradient the straight-through gradient; with ref held fixed it is an
 * ordinary function of p, so finite differences check the backward pass.
 * grad (n_params floats, overwritten) may be NULL. */
double peso_rqvae_surrogate(const peso_rqvae *m, const float *p, const float *ref, const float *x, size_t n,
                            const int32_t *codes, float *grad);

#endif
