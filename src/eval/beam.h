/* Constrained beam search over the trie of valid items' code tuples
 * (DESIGN.md, Evaluation). The prompt is prefilled once (model/decode.h)
 * and its cached keys and values are shared by every beam. At level l
 * each live beam (a trie node of depth l) is extended by each of its
 * children: score = beam score + log-softmax over the FULL vocabulary of
 * the child's code token (peso_prompt_code_id(p, l, code)); the top
 * `beam` of all (beam, child) pairs survive, ties going to the lower trie
 * node id. A beam's children are distinct nodes, so the order is total and
 * the result deterministic. Items sharing a tuple share one leaf.
 *
 * Only code tokens are ever read, so the decoder's selected columns are
 * the code tokens of the trie's levels, level by level (code c of level l
 * is column level_off[l] + c), and a step brings back [beams, n_cols]
 * log-probabilities instead of [beams, vocabulary]. */
#ifndef PESO_EVAL_BEAM_H
#define PESO_EVAL_BEAM_H

#include <stdint.h>

#include "common/err.h"
#include "eval/trie.h"
#include "model/decode.h"
#include "model/prompt.h"

/* One candidate: a trie node, the live beam it extends, its score. */
typedef struct peso_beam_cand {
    double score;
    int32_t node, from;
} peso_beam_cand;

typedef struct peso_beam {
    peso_decode dec;
    int beam, levels;
    float *lp;     /* [beam, n_cols] log-softmax of the last step at the selected columns */
    int32_t *cols; /* [n_cols] the decoder's selected columns (code token ids) */
    int n_cols;
    int level_off[PESO_SEMID_MAX_LEVELS]; /* column of each level's code 0 */
    peso_beam_cand *cand;                 /* [beam * widest level] */
    int32_t *parent, *tok;                /* [beam] the next step's inputs */
    peso_beam_cand *live;                 /* [beam] */
    int cap_cand;
} peso_beam;

/* Search state for m, beam width `beam` (eval.beam, 10 by default) and
 * tuples of `levels` codes. */
int peso_beam_init(peso_beam *bs, peso_llama *m, int beam, int levels, peso_err *err);
void peso_beam_free(peso_beam *bs);

/* Ranks the leaves of t for the prompt ids[0..P): leaves[0..*n) (trie
 * leaf node ids, best first) with their cumulative log-probabilities
 * scores; *n = min(beam, leaves reachable). leaves and scores hold beam
 * entries. t->n_levels must equal the levels of bs and of p. */
int peso_beam_search(peso_beam *bs, const peso_trie *t, const peso_prompt *p, const int32_t *ids, int P,
                     int32_t *leaves, double *scores, int *n, peso_err *err);

#endif
