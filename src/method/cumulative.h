/* What the cumulative family (sumlora, sdlora, inflora) shares (DESIGN.md
 * "Continual methods"): W = W0 + sum_{i in S} alpha_i Bhat_i Ahat_i +
 * B_t A_t with frozen past adapters; S = every past stage (variant
 * "all") or only t-1 ("latest"); "+inherit" starts (A_t, B_t) from
 * (A_{t-1}, B_{t-1}), otherwise from a fresh PEFT init. The past
 * adapters live in peso_method_stage (past, n_past, alpha) and in a
 * checkpoint as the groups past/<i>. */
#ifndef PESO_METHOD_CUMULATIVE_H
#define PESO_METHOD_CUMULATIVE_H

#include "method/method.h"

/* The past adapters of a checkpoint (none in a stage-1 file). */
int peso_cumulative_load(peso_method_stage *s, const peso_ckpt *ck, peso_err *err);
int peso_cumulative_save(const peso_method_stage *s, peso_ckpt *ck, peso_err *err);
/* Stage t's past list from the loaded one (stage t-1's) and v_{t-1}
 * (params on entry); magnitudes of adapters that are new to the list
 * start at 1.0 (learnable: in params, else fixed in s->alpha); (A_t, B_t)
 * freshly initialised unless the variant inherits. Does not touch the
 * model. */
int peso_cumulative_begin(peso_method_stage *s, float *params, peso_err *err);
/* peso_cumulative_begin, then the past adapters on the model. */
int peso_cumulative_start(peso_method_stage *s, float *params, peso_err *err);
/* The past adapters on the model (fixed magnitudes 1.0 unless the
 * method's are learnable). */
int peso_cumulative_install(peso_method_stage *s, peso_err *err);

#endif
