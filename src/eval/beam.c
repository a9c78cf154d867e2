/* Constrained beam search (see eval/beam.h). */
#include <stdlib.h>
#include <string.h>

#include "eval/beam.h"

int peso_beam_init(peso_beam *bs, peso_llama *m, int beam, int levels, peso_err *err)
{
    memset(bs, 0, sizeof *bs);
    if (beam < 1 || levels < 1)
        return peso_errf(err, "beam search: beam %d, %d levels; expected >= 1 each", beam, levels);
    if (peso_decode_init(&bs->dec, m, beam, levels - 1, err) < 0)
        return -1;
    bs->beam = beam;
    bs->levels = levels;
    bs->parent = peso_malloc((size_t)beam * sizeof(int32_t));
    bs->tok = peso_malloc((size_t)beam * sizeof(int32_t));
    bs->live = peso_malloc((size_t)beam * sizeof(peso_beam_cand));
    return 0;
}

void peso_beam_free(peso_beam *bs)
{
    peso_decode_free(&bs->dec);
    free(bs->lp);
    free(bs->cols);
    free(bs->parent);
    free(bs->tok);
    free(bs->live);
    free(bs->cand);
    memset(bs, 0, sizeof *bs);
}

/* Higher score first, then the lower node id. */
static int cand_cmp(const void *pa, const void *pb)
{
    const peso_beam_cand *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return (a->node > b->node) - (a->node < b->node);
}

/* Every child of the n live beams at level l, scored with lp. */
static int expand(peso_beam *bs, const peso_trie *t, int l, int n)
{
    int k = 0, total = 0;
    for (int b = 0; b < n; b++)
        total += t->child_start[bs->live[b].node + 1] - t->child_start[bs->live[b].node];
    if (total > bs->cap_cand) {
        free(bs->cand);
        bs->cand = peso_malloc((size_t)total * sizeof(peso_beam_cand));
        bs->cap_cand = total;
    }
    for (int b = 0; b < n; b++) {
        const int32_t *codes;
        int32_t first, nc;
        peso_trie_children(t, bs->live[b].node, &codes, &first, &nc);
        const float *lp = bs->lp + (size_t)b * bs->n_cols + bs->level_off[l];
        for (int32_t i = 0; i < nc; i++)
            bs->cand[k++] = (peso_beam_cand){bs->live[b].score + lp[codes[i]], first + i, b};
    }
    return k;
}

static int check(const peso_beam *bs, const peso_trie *t, const peso_prompt *p, peso_err *err)
{
    if (t->n_levels != bs->levels || p->levels != bs->levels)
        return peso_errf(err, "beam search: trie of %d levels, prompt of %d, search of %d; expected equal",
                         t->n_levels, p->levels, bs->levels);
    for (int l = 0; l < bs->levels; l++)
        if (p->level_size[l] < t->level_size[l])
            return peso_errf(err, "beam search: level %d has %d codes in the trie, %d in the prompt", l,
                             t->level_size[l], p->level_size[l]);
    return 0;
}

/* The decoder's columns: the code tokens of the trie's levels, level by
 * level. Selected (uploaded) only when they differ from the last search's,
 * which in an evaluation they do not: the prompt and the level sizes stay. */
static int select_codes(peso_beam *bs, const peso_trie *t, const peso_prompt *p, peso_err *err)
{
    int n = 0, same;
    for (int l = 0; l < bs->levels; l++) {
        bs->level_off[l] = n;
        n += t->level_size[l];
    }
    same = n > 0 && n == bs->n_cols;
    for (int l = 0, k = 0; same && l < bs->levels; l++)
        for (int c = 0; same && c < t->level_size[l]; c++)
            same = bs->cols[k++] == peso_prompt_code_id(p, l, c);
    if (same)
        return 0;
    free(bs->cols);
    free(bs->lp);
    bs->cols = peso_malloc((size_t)n * sizeof *bs->cols);
    bs->lp = peso_malloc((size_t)bs->beam * n * sizeof *bs->lp);
    for (int l = 0, k = 0; l < bs->levels; l++)
        for (int c = 0; c < t->level_size[l]; c++)
            bs->cols[k++] = peso_prompt_code_id(p, l, c);
    bs->n_cols = 0;
    if (peso_decode_select(&bs->dec, bs->cols, n, err) < 0)
        return peso_err_prefix(err, "beam search");
    bs->n_cols = n;
    return 0;
}

int peso_beam_search(peso_beam *bs, const peso_trie *t, const peso_prompt *p, const int32_t *ids, int P,
                     int32_t *leaves, double *scores, int *n, peso_err *err)
{
    *n = 0;
    if (check(bs, t, p, err) < 0 || select_codes(bs, t, p, err) < 0 ||
        peso_decode_prefill(&bs->dec, ids, P, bs->lp, err) < 0)
        return -1;
    int n_live = 1;
    bs->live[0] = (peso_beam_cand){0.0, peso_trie_root(t), 0};
    for (int l = 0; l < bs->levels; l++) {
        if (l > 0) {
            for (int b = 0; b < n_live; b++) {
                bs->parent[b] = bs->live[b].from;
                bs->tok[b] = peso_prompt_code_id(p, l - 1, t->code[bs->live[b].node]);
            }
            if (peso_decode_step(&bs->dec, n_live, bs->parent, bs->tok, bs->lp, err) < 0)
                return peso_err_prefix(err, "beam search level %d", l);
        }
        int k = expand(bs, t, l, n_live);
        qsort(bs->cand, (size_t)k, sizeof *bs->cand, cand_cmp);
        n_live = k < bs->beam ? k : bs->beam;
        memcpy(bs->live, bs->cand, (size_t)n_live * sizeof *bs->live);
    }
    for (int b = 0; b < n_live; b++) {
        leaves[b] = bs->live[b].node;
        scores[b] = bs->live[b].score;
    }
    *n = n_live;
    return 0;
}
