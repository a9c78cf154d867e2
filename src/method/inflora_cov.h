/* InfLoRA's input statistics through the model's projection hook
 * (model/llama.h): an observing pass over a batch in which every adapted
 * module's input is multiplied out. */
#ifndef PESO_METHOD_INFLORA_COV_H
#define PESO_METHOD_INFLORA_COV_H

#include <stddef.h>

#include "model/llama.h"

/* A pass's working memory, grown to the largest batch and kept across
 * batches (zero-initialise; free with peso_inflora_cov_free). */
typedef struct peso_inflora_cov {
    size_t *off;   /* [n_modules]: each module's block in cov */
    int max_in;    /* widest module input */
    int cap;       /* tokens the buffers hold */
    int32_t *idx;  /* device [cap]: the rows of the real tokens */
    int32_t *hidx; /* host copy */
    float *rows;   /* device [cap, max_in]: the gathered input */
    float *prod;   /* device [max_in, max_in] */
    float *host;   /* host copy of prod */
} peso_inflora_cov;

/* A forward over b (labels ignored), and for every adapted module, in
 * lora.mods order, ADDS X^T X into cov, X the module's input rows of the
 * real tokens (t < lens[b], padding excluded). cov holds consecutive
 * [in, in] row-major blocks, module after module (module i's block starts
 * at the sum of in_j^2 over j < i); modules that share an input (q/k/v,
 * gate/up) each get their own copy of one product. The products are
 * float32 on the backend, summed into cov in double, each block exactly
 * symmetric. *n_tok += the real tokens of b (nothing is added on an error
 * in the batch). m's hook is used during the call and restored after. */
int peso_inflora_cov_add(peso_inflora_cov *w, peso_llama *m, const peso_llama_batch *b, double *cov, long *n_tok,
                         peso_err *err);
void peso_inflora_cov_free(peso_inflora_cov *w, peso_llama *m);
/* Doubles of cov: the sum of in^2 over the adapted modules. */
size_t peso_inflora_cov_numel(const peso_llama *m);

#endif
