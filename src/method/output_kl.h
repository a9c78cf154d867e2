/* The output-KL regularizer (DESIGN.md "Continual methods", an ablation
 * of PESO) as a projection hook of the model (model/llama.h): for every
 * adapted module and every real token of a LOSS or TRAIN pass,
 *   scale * KL(softmax(z) || softmax(z_prev)),
 *   z = scaling (x A^T) B^T, z_prev = scaling (x A_prev^T) B_prev^T,
 * rows over the module's out features, x the module's input. x is a
 * constant of the term (stop-gradient), so its whole gradient is known
 * as soon as the module's forward has run: in a TRAIN pass it goes into
 * the module's A and B right there (A's not with freeze_a) and nothing
 * flows into x. The softmax-KL is the backend's row_kl on the batch's
 * rows, its dz written over z on the device. */
#ifndef PESO_METHOD_OUTPUT_KL_H
#define PESO_METHOD_OUTPUT_KL_H

#include "model/llama.h"

typedef struct peso_okl {
    peso_llama *m;
    float *prev;       /* device [m->lora_span]: v_{t-1} */
    double scale;      /* factor of the term, 1.0 until set */
    double sum;        /* the term's value since the last peso_okl_take */
    float *oz, *ozp;   /* device [rows, widest output]: z, z_prev; dz into oz */
    float *olu, *odlu; /* device [rows, rank]: x A_prev^T, dz B */
    size_t rows;       /* capacity of the device scratch */
} peso_okl;

/* Installs the term on m as its hook, with v_{t-1} = prev (host, m's flat
 * layout; only the LoRA views are read). Fails when m has no adapter. */
int peso_okl_init(peso_okl *o, peso_llama *m, const float *prev, peso_err *err);
/* Removes the hook and frees the term. */
void peso_okl_free(peso_okl *o);
/* The widest out features of an adapted projection. */
int peso_okl_width(const peso_llama_config *c, const peso_lora_conf *l);
/* The term's value summed over the passes since the last call (scale
 * included); starts the next sum at 0. */
double peso_okl_take(peso_okl *o);

#endif
