/* AdamW over one flat float32 buffer of trainable parameters, with the
 * global-norm gradient clipping of torch.nn.utils.clip_grad_norm_.
 *
 * The update is torch.optim.AdamW's (decoupled weight decay, bias
 * correction), done by the backend's adamw op; the moments m and v are
 * device buffers of the backend, shaped like the parameter buffer. The
 * clipping factor is not applied to the gradients in place: it reaches the
 * op as its grad_scale, which multiplies each gradient element in float32
 * exactly as grad.mul_(clip_coef) would.
 *
 * Parameter groups with another weight decay are further peso_optim
 * instances over sub-ranges of the same buffers; clipping stays global
 * when all of them take the factor of the whole gradient buffer. */
#ifndef PESO_OPTIM_OPTIM_H
#define PESO_OPTIM_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "common/err.h"

typedef struct peso_optim_hparams {
    double beta1, beta2, eps, weight_decay;
} peso_optim_hparams;

typedef struct peso_optim {
    peso_backend *be;
    peso_optim_hparams hp;
    size_t n;
    float *m, *v; /* device buffers of n floats (be->alloc) */
    int64_t step; /* updates taken; the next update is step + 1 */
} peso_optim;

/* torch.optim.AdamW's defaults: betas (0.9, 0.999), eps 1e-8, decay 0.01. */
void peso_optim_defaults(peso_optim_hparams *hp);
/* Allocates zeroed moments for n parameters; step 0. */
int peso_optim_init(peso_optim *o, peso_backend *be, size_t n, const peso_optim_hparams *hp, peso_err *err);
void peso_optim_free(peso_optim *o);

/* One update of param [n] from grad [n] at rate lr, the gradient scaled by
 * grad_scale (1 for none). */
int peso_optim_step(peso_optim *o, float *param, const float *grad, double lr, double grad_scale,
                    peso_err *err);

/* ||grad||_2 from the backend's sumsq (double, fixed order). */
int peso_grad_norm(peso_backend *be, const float *grad, size_t n, double *norm, peso_err *err);
/* min(1, max_norm / (norm + 1e-6)), as clip_grad_norm_; 1 when max_norm
 * <= 0 (clipping off). */
double peso_clip_coef(double norm, double max_norm);
/* Norm, clip factor and update in one: *norm (may be NULL) receives the
 * norm before clipping. A non-finite norm is an error and leaves
 * everything unchanged, where torch would silently write NaN into the
 * parameters. */
int peso_optim_clip_step(peso_optim *o, float *param, const float *grad, double lr, double max_norm,
                         double *norm, peso_err *err);

/* The state for a checkpoint: m and v copied to host buffers of o->n
 * floats, and the step count. */
int peso_optim_export(const peso_optim *o, float *m, float *v, int64_t *step, peso_err *err);
/* Restores an exported state of n floats per moment (n must equal o->n). */
int peso_optim_import(peso_optim *o, const float *m, const float *v, size_t n, int64_t step, peso_err *err);

#endif
