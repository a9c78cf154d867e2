#include "model/prompt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const peso_prompt_head =
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\nBased on the items that the user has interacted with: ";
const char *const peso_prompt_sep = ", ";
const char *const peso_prompt_tail =
    ", can you determine what item would be recommended to the user next?\n\n### Response:";

void peso_prompt_code_token(char *buf, size_t n, int level, int code)
{
    snprintf(buf, n, "<%c_%d>", 'a' + level, code);
}

static int encode_piece(const peso_tok *tok, const char *text, int32_t **ids, size_t *n, peso_err *err)
{
    if (peso_tok_encode(tok, text, strlen(text), ids, n, err) != 0)
        return peso_err_prefix(err, "prompt: tokenizing the fixed text");
    return 0;
}

static int lookup_codes(peso_prompt *p, const peso_tok *tok, peso_err *err)
{
    char name[32];
    for (int l = 0; l < p->levels; l++) {
        p->code_id[l] = peso_malloc((size_t)p->level_size[l] * sizeof *p->code_id[l]);
        for (int c = 0; c < p->level_size[l]; c++) {
            peso_prompt_code_token(name, sizeof name, l, c);
            p->code_id[l][c] = peso_tok_id(tok, name);
            if (p->code_id[l][c] < 0)
                return peso_errf(err,
                                 "prompt: code token %s (level %d of %d, code %d of %d) is not in the "
                                 "tokenizer's vocabulary: add the semantic-ID tokens first",
                                 name, l, p->levels, c, p->level_size[l]);
        }
    }
    return 0;
}

int peso_prompt_init(peso_prompt *p, const peso_tok *tok, int levels, const int *level_size, peso_err *err)
{
    memset(p, 0, sizeof *p);
    if (levels < 1 || levels > PESO_PROMPT_MAX_LEVELS)
        return peso_errf(err, "prompt: levels=%d, expected 1..%d", levels, PESO_PROMPT_MAX_LEVELS);
    p->levels = levels;
    for (int l = 0; l < levels; l++) {
        if (level_size[l] < 1)
            return peso_errf(err, "prompt: level %d has %d codes, expected >= 1", l, level_size[l]);
        p->level_size[l] = level_size[l];
    }
    p->bos = peso_tok_id(tok, PESO_PROMPT_BOS);
    size_t n_ht = strlen(peso_prompt_head) + strlen(peso_prompt_tail) + 1;
    char *ht = peso_malloc(n_ht);
    snprintf(ht, n_ht, "%s%s", peso_prompt_head, peso_prompt_tail);
    int rc = lookup_codes(p, tok, err);
    if (rc == 0)
        rc = encode_piece(tok, peso_prompt_head, &p->head, &p->n_head, err) ||
             encode_piece(tok, peso_prompt_sep, &p->sep, &p->n_sep, err) ||
             encode_piece(tok, peso_prompt_tail, &p->tail, &p->n_tail, err) ||
             encode_piece(tok, ht, &p->head_tail, &p->n_head_tail, err);
    free(ht);
    if (rc != 0) {
        peso_prompt_free(p);
        return -1;
    }
    return 0;
}

void peso_prompt_free(peso_prompt *p)
{
    for (int l = 0; l < PESO_PROMPT_MAX_LEVELS; l++)
        free(p->code_id[l]);
    free(p->head);
    free(p->sep);
    free(p->tail);
    free(p->head_tail);
    memset(p, 0, sizeof *p);
}

size_t peso_prompt_len(const peso_prompt *p, size_t n_hist)
{
    size_t n = p->bos >= 0 ? 1 : 0;
    if (n_hist == 0)
        return n + p->n_head_tail;
    return n + p->n_head + n_hist * (size_t)p->levels + (n_hist - 1) * p->n_sep + p->n_tail;
}

size_t peso_prompt_example_len(const peso_prompt *p, size_t n_hist)
{
    return peso_prompt_len(p, n_hist) + (size_t)p->levels;
}

static size_t put(int32_t *dst, const int32_t *src, size_t n)
{
    memcpy(dst, src, n * sizeof *src);
    return n;
}

/* Appends one item's code tokens; returns the first level whose code is
 * out of range, or -1. */
static int put_codes(const peso_prompt *p, const int32_t *codes, int32_t *dst)
{
    for (int l = 0; l < p->levels; l++) {
        if (codes[l] < 0 || codes[l] >= p->level_size[l])
            return l;
        dst[l] = p->code_id[l][codes[l]];
    }
    return -1;
}

static int bad_code(const peso_prompt *p, const int32_t *codes, int l, const char *what, peso_err *err)
{
    return peso_errf(err, "prompt: %s, level %d: code %d out of range [0, %d)", what, l, codes[l],
                     p->level_size[l]);
}

int peso_prompt_build(const peso_prompt *p, const int32_t *hist, size_t n_hist, int32_t *ids, size_t cap,
                      size_t *n, peso_err *err)
{
    size_t need = peso_prompt_len(p, n_hist), k = 0;
    if (need > cap)
        return peso_errf(err, "prompt: %zu history items need %zu tokens, buffer holds %zu", n_hist, need,
                         cap);
    if (p->bos >= 0)
        ids[k++] = p->bos;
    if (n_hist == 0) {
        k += put(ids + k, p->head_tail, p->n_head_tail);
    } else {
        k += put(ids + k, p->head, p->n_head);
        for (size_t i = 0; i < n_hist; i++) {
            if (i > 0)
                k += put(ids + k, p->sep, p->n_sep);
            const int32_t *codes = hist + i * (size_t)p->levels;
            int l = put_codes(p, codes, ids + k);
            if (l >= 0) {
                char what[48];
                snprintf(what, sizeof what, "history item %zu", i);
                return bad_code(p, codes, l, what, err);
            }
            k += (size_t)p->levels;
        }
        k += put(ids + k, p->tail, p->n_tail);
    }
    *n = k;
    return 0;
}

int peso_prompt_example(const peso_prompt *p, const int32_t *hist, size_t n_hist, const int32_t *target,
                        int32_t *ids, int32_t *labels, size_t cap, size_t *n, peso_err *err)
{
    size_t need = peso_prompt_example_len(p, n_hist), k = 0;
    if (need > cap)
        return peso_errf(err, "prompt: example with %zu history items needs %zu tokens, buffer holds %zu",
                         n_hist, need, cap);
    if (peso_prompt_build(p, hist, n_hist, ids, cap, &k, err) != 0)
        return -1;
    int l = put_codes(p, target, ids + k);
    if (l >= 0)
        return bad_code(p, target, l, "target item", err);
    for (size_t i = 0; i < k; i++)
        labels[i] = PESO_PROMPT_IGNORE;
    for (size_t i = k; i < need; i++)
        labels[i] = ids[i];
    *n = need;
    return 0;
}
