#include "semid/modelfeat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/llama.h"
#include "hf/tokenizer.h"

/* A batch holds at most this many rows and B*T tokens: rows sorted by
 * length waste little padding, and the forward's arena stays small. */
#define MODELFEAT_MAX_ROWS 64
#define MODELFEAT_MAX_TOKENS 4096

typedef struct item_tokens {
    int32_t **ids; /* [n_items], each BOS + text, cut */
    int32_t *len;
    size_t *order; /* dataset items by (length, index) */
} item_tokens;

static void item_tokens_free(item_tokens *it, size_t n)
{
    for (size_t i = 0; it->ids && i < n; i++)
        free(it->ids[i]);
    free(it->ids);
    free(it->len);
    free(it->order);
}

/* BOS (when the config has one) then the text's tokens, cut to max. */
static int tokenize_item(const peso_tok *tok, const peso_llama_config *c, const peso_semid_items *items,
                         size_t i, int max, item_tokens *it, peso_err *err)
{
    int32_t *text = NULL;
    size_t n = 0;
    if (items->text[i] && peso_tok_encode(tok, items->text[i], items->text_len[i], &text, &n, err))
        return peso_err_prefix(err, "semid.model: item '%s'", items->id[i]);
    int bos = c->bos_token_id >= 0;
    size_t keep = n < (size_t)(max - bos) ? n : (size_t)(max - bos);
    it->ids[i] = peso_malloc((keep + 1) * sizeof **it->ids);
    if (bos)
        it->ids[i][0] = c->bos_token_id;
    if (keep)
        memcpy(it->ids[i] + bos, text, keep * sizeof *text);
    free(text);
    it->len[i] = (int32_t)(keep + bos);
    if (it->len[i] == 0)
        return peso_errf(err, "semid.model: item '%s' has no text and the model has no bos_token_id",
                         items->id[i]);
    for (int32_t t = 0; t < it->len[i]; t++)
        if (it->ids[i][t] < 0 || it->ids[i][t] >= c->vocab_size)
            return peso_errf(err, "semid.model: item '%s' token id %d is outside the model's vocabulary (%d)",
                             items->id[i], it->ids[i][t], c->vocab_size);
    return 0;
}

typedef struct len_item {
    int32_t len;
    size_t item;
} len_item;

static int by_length(const void *a, const void *b)
{
    const len_item *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->item < y->item ? -1 : x->item > y->item;
}

/* it->order: items by (length, index), so batches need little padding. */
static void sort_by_length(item_tokens *it, size_t n)
{
    len_item *v = peso_malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = (len_item){it->len[i], i};
    qsort(v, n, sizeof *v, by_length);
    for (size_t i = 0; i < n; i++)
        it->order[i] = v[i].item;
    free(v);
}

static int tokenize_all(const char *dir, const peso_llama_config *c, int max, const peso_semid_items *items,
                        item_tokens *it, peso_err *err)
{
    char path[1100];
    peso_tok *tok = NULL;
    size_t n = items->n;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (peso_tok_load(&tok, path, err))
        return peso_err_prefix(err, "semid.model");
    it->ids = peso_calloc(n ? n : 1, sizeof *it->ids);
    it->len = peso_malloc((n ? n : 1) * sizeof *it->len);
    it->order = peso_malloc((n ? n : 1) * sizeof *it->order);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = tokenize_item(tok, c, items, i, max, it, err);
    peso_tok_free(tok);
    if (rc == 0)
        sort_by_length(it, n);
    return rc;
}

/* Runs rows order[lo..hi) as one right-padded batch; scatters the means. */
static int run_batch(peso_llama *m, const item_tokens *it, size_t lo, size_t hi, float *x, peso_err *err)
{
    int B = (int)(hi - lo), T = it->len[it->order[hi - 1]];
    size_t C = (size_t)m->cfg.hidden_size;
    int32_t *ids = peso_calloc((size_t)B * T, sizeof *ids), lens[MODELFEAT_MAX_ROWS];
    for (int b = 0; b < B; b++) {
        size_t i = it->order[lo + b];
        lens[b] = it->len[i];
        memcpy(ids + (size_t)b * T, it->ids[i], (size_t)lens[b] * sizeof *ids);
    }
    peso_llama_batch batch = {B, T, ids, lens, NULL};
    float *h = peso_malloc((size_t)B * C * sizeof *h);
    int rc = peso_llama_hidden_mean(m, &batch, h, err);
    for (int b = 0; b < B && rc == 0; b++)
        memcpy(x + it->order[lo + b] * C, h + (size_t)b * C, C * sizeof *h);
    free(h);
    free(ids);
    return rc;
}

static int run_all(peso_llama *m, const item_tokens *it, size_t n, float *x, peso_err *err)
{
    size_t lo = 0;
    while (lo < n) {
        size_t hi = lo + 1;
        /* sorted ascending, so the last row sets T */
        while (hi < n && hi - lo < MODELFEAT_MAX_ROWS &&
               (hi + 1 - lo) * (size_t)it->len[it->order[hi]] <= MODELFEAT_MAX_TOKENS)
            hi++;
        if (run_batch(m, it, lo, hi, x, err))
            return -1;
        lo = hi;
    }
    return 0;
}

int peso_semid_model_features(const char *dir, int max_tokens, const peso_semid_items *items,
                              const peso_backend_opts *bo, float **x, int *dim, peso_err *err)
{
    peso_backend *be = peso_backend_open(bo, err);
    if (!be)
        return peso_err_prefix(err, "semid.model");
    peso_llama_opts o;
    peso_llama_opts_defaults(&o);
    o.lora.targets = 0;
    peso_llama *m = NULL;
    if (peso_llama_load(&m, dir, be, &o, err)) {
        peso_backend_destroy(be);
        return peso_err_prefix(err, "semid.model");
    }
    item_tokens it = {0};
    size_t n = items->n, C = (size_t)m->cfg.hidden_size;
    int rc = tokenize_all(dir, &m->cfg, max_tokens, items, &it, err);
    *x = peso_malloc((n ? n : 1) * C * sizeof **x);
    if (rc == 0)
        rc = run_all(m, &it, n, *x, err);
    *dim = (int)C;
    item_tokens_free(&it, n);
    peso_llama_free(m);
    peso_backend_destroy(be);
    if (rc) {
        free(*x);
        *x = NULL;
    }
    return rc;
}
