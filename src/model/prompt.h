/* The recommender prompt (paper, Appendix D), assembled from token ids:
 *
 *   [BOS] HEAD <a_..><b_..>.. SEP <a_..><b_..>.. ... TAIL <a_..><b_..>..
 *
 * HEAD = "Below is an instruction ... interacted with: ", SEP = ", ",
 * TAIL = ", can you determine what item would be recommended to the user
 * next?\n\n### Response:", then the target item's code tokens. The three
 * text pieces are tokenized once with the model's tokenizer. Because the
 * code tokens are added (special) tokens, Hugging Face splits a text at
 * them and tokenizes the pieces between them independently, so the
 * assembled ids are exactly what it produces for the whole text.
 *
 * Code token names are "<x_N>": level letter x (a, b, c, ... for level 0,
 * 1, 2, ...) and code N. */
#ifndef PESO_MODEL_PROMPT_H
#define PESO_MODEL_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "hf/tokenizer.h"

#define PESO_PROMPT_MAX_LEVELS 8
/* HF's ignore_index: positions whose label is this carry no loss. */
#define PESO_PROMPT_IGNORE (-100)
#define PESO_PROMPT_BOS "<|begin_of_text|>"

extern const char *const peso_prompt_head;
extern const char *const peso_prompt_sep;
extern const char *const peso_prompt_tail;

typedef struct peso_prompt {
    int levels;
    int level_size[PESO_PROMPT_MAX_LEVELS];
    int32_t *code_id[PESO_PROMPT_MAX_LEVELS]; /* [level_size[l]]: code -> token id */
    int32_t bos;                              /* id of PESO_PROMPT_BOS, -1 when absent */
    int32_t *head, *sep, *tail;
    size_t n_head, n_sep, n_tail;
    /* HEAD + TAIL tokenized together: with no history item there is no
     * code token between them to split the text at. */
    int32_t *head_tail;
    size_t n_head_tail;
} peso_prompt;

/* Writes "<x_N>" for level and code into buf (at least 32 bytes). */
void peso_prompt_code_token(char *buf, size_t n, int level, int code);

/* Tokenizes the pieces with tok and looks up every code token of levels
 * levels of level_size[l] codes; a code token missing from the vocabulary
 * is an error naming it. */
int peso_prompt_init(peso_prompt *p, const peso_tok *tok, int levels, const int *level_size, peso_err *err);
void peso_prompt_free(peso_prompt *p);

/* Token id of a code (no range check: codes come from a checked index). */
static inline int32_t peso_prompt_code_id(const peso_prompt *p, int level, int code)
{
    return p->code_id[level][code];
}

/* Length of the prompt for n_hist history items, without the target. */
size_t peso_prompt_len(const peso_prompt *p, size_t n_hist);
/* Length of a training example: the prompt plus the target's codes. */
size_t peso_prompt_example_len(const peso_prompt *p, size_t n_hist);

/* The prompt for history codes hist [n_hist x levels] into ids (cap
 * entries); *n = peso_prompt_len. A code out of its level's range is an
 * error naming the history item and level. */
int peso_prompt_build(const peso_prompt *p, const int32_t *hist, size_t n_hist, int32_t *ids, size_t cap,
                      size_t *n, peso_err *err);
/* A training example: the prompt followed by the target's codes [levels];
 * labels [*n] are PESO_PROMPT_IGNORE except at the target positions, where
 * they equal the ids (HF convention: the model shifts them). */
int peso_prompt_example(const peso_prompt *p, const int32_t *hist, size_t n_hist, const int32_t *target,
                        int32_t *ids, int32_t *labels, size_t cap, size_t *n, peso_err *err);

#endif
