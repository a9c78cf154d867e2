/* Benchmark: evaluation users per second, the constrained beam search
 * with the shared prefix KV cache (eval/beam.h) against the naive way
 * that re-encodes, at every step, the full prompt + beam tokens of every
 * beam with the training forward (what Hugging Face generate with
 * prefix_allowed_tokens_fn does without a cache), side by side on the
 * same model, items and prompts.
 *
 *   bench-beam [--preset tiny|small] [--users U] [--items N] [--beam K]
 *              [--threads T]
 *
 * The model is `peso-model init --preset P --with-codes` (4 levels x 256
 * codes) with LoRA (rank 8) on every projection; the items are N random
 * tuples; each user's prompt holds 20 random history items. Both sides
 * must return the same ranked lists; the table says how many users
 * differ. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "backend/backend.h"
#include "common/rng.h"
#include "eval/beam.h"
#include "eval/trie.h"
#include "model/init.h"
#include "model/llama.h"
#include "model/prompt.h"
#include "hf/tokenizer.h"

#define HIST 20
#define LEVELS 4
#define CODES 256


static void die(const char *what, const peso_err *err)
{
    fprintf(stderr, "bench-beam: %s: %s\n", what, err ? err->msg : "failed");
    exit(1);
}

static int cand_cmp(const void *pa, const void *pb)
{
    const peso_beam_cand *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return (a->node > b->node) - (a->node < b->node);
}

/* The same search without a cache: at level l one batch of n_live rows,
 * each the prompt + its beam's l tokens, through the whole model. */
static void naive_search(peso_llama *m, const peso_trie *t, const peso_prompt *p, const int32_t *ids, int P,
                         int beam, int32_t *leaves)
{
    peso_err err;
    int V = m->cfg.vocab_size, T = P + LEVELS;
    int32_t *rows = malloc((size_t)beam * T * sizeof(int32_t)),
            *nrows = malloc((size_t)beam * T * sizeof(int32_t));
    int32_t lens[64], pos[64];
    float *logits = malloc((size_t)beam * V * sizeof(float));
    peso_beam_cand live[64], *cand = malloc((size_t)beam * CODES * sizeof(peso_beam_cand));
    int n_live = 1;
    memcpy(rows, ids, (size_t)P * sizeof(int32_t));
    live[0] = (peso_beam_cand){0.0, peso_trie_root(t), 0};
    for (int l = 0; l < LEVELS; l++) {
        int Tl = P + l;
        for (int b = 0; b < n_live; b++) {
            lens[b] = Tl;
            pos[b] = b * Tl + Tl - 1;
        }
        peso_llama_batch batch = {n_live, Tl, rows, lens, NULL};
        if (peso_llama_logits(m, &batch, pos, n_live, logits, &err))
            die("naive forward", &err);
        int k = 0;
        for (int b = 0; b < n_live; b++) {
            float *row = logits + (size_t)b * V, mx = row[0];
            double sum = 0.0;
            for (int v = 1; v < V; v++)
                mx = row[v] > mx ? row[v] : mx;
            for (int v = 0; v < V; v++)
                sum += exp(row[v] - mx);
            double lse = mx + log(sum);
            const int32_t *codes;
            int32_t first, nc;
            peso_trie_children(t, live[b].node, &codes, &first, &nc);
            for (int32_t i = 0; i < nc; i++)
                cand[k++] = (peso_beam_cand){
                    live[b].score + (float)(row[peso_prompt_code_id(p, l, codes[i])] - lse), first + i, b};
        }
        qsort(cand, (size_t)k, sizeof *cand, cand_cmp);
        n_live = k < beam ? k : beam;
        for (int b = 0; b < n_live; b++) {
            memcpy(nrows + (size_t)b * (Tl + 1), rows + (size_t)cand[b].from * Tl,
                   (size_t)Tl * sizeof(int32_t));
            nrows[(size_t)b * (Tl + 1) + Tl] = peso_prompt_code_id(p, l, t->code[cand[b].node]);
            live[b] = cand[b];
        }
        int32_t *x = rows;
        rows = nrows;
        nrows = x;
    }
    for (int b = 0; b < beam; b++)
        leaves[b] = b < n_live ? live[b].node : -1;
    free(rows);
    free(nrows);
    free(logits);
    free(cand);
}

int main(int argc, char **argv)
{
    const char *preset = "tiny";
    int users = 20, n_items = 1000, beam = 10, threads = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc)
            preset = argv[++i];
        else if (!strcmp(argv[i], "--users") && i + 1 < argc)
            users = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--items") && i + 1 < argc)
            n_items = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--beam") && i + 1 < argc)
            beam = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench-beam [--preset tiny|small] [--users U] [--items N] [--beam K] "
                            "[--threads T]\n");
            return 2;
        }
    }
    if (users < 1 || n_items < 1 || beam < 1 || beam > 64 || threads < 1) {
        fprintf(stderr, "bench-beam: expected users, items, threads >= 1 and beam in 1..64\n");
        return 2;
    }
    omp_set_num_threads(threads);
    peso_err err;
    char dir[] = "/tmp/peso_bench_beam_XXXXXX";
    if (!mkdtemp(dir))
        die("mkdtemp", NULL);
    char model[4096], tokpath[4200], cmd[4200];
    snprintf(model, sizeof model, "%s/model", dir);
    snprintf(tokpath, sizeof tokpath, "%s/tokenizer.json", model);
    peso_init_opts io = {.preset = preset, .seed = 1, .with_codes = 1, .levels = LEVELS, .codebook = CODES};
    if (peso_init_write(model, &io, NULL, &err))
        die("peso-model init", &err);
    peso_tok *tok;
    peso_prompt pr;
    int sizes[LEVELS] = {CODES, CODES, CODES, CODES};
    if (peso_tok_load(&tok, tokpath, &err) || peso_prompt_init(&pr, tok, LEVELS, sizes, &err))
        die("prompt", &err);

    peso_rng rng;
    peso_rng_seed(&rng, 7, 2);
    int32_t *codes = malloc((size_t)n_items * LEVELS * sizeof(int32_t));
    for (int i = 0; i < n_items * LEVELS; i++)
        codes[i] = (int32_t)peso_rng_below(&rng, CODES);
    peso_trie t;
    if (peso_trie_build(&t, codes, (size_t)n_items, LEVELS, sizes, NULL, (size_t)n_items, &err))
        die("trie", &err);
    int P = (int)peso_prompt_len(&pr, HIST);
    int32_t *prompts = malloc((size_t)users * P * sizeof(int32_t));
    for (int u = 0; u < users; u++) {
        int32_t hist[HIST * LEVELS];
        for (int h = 0; h < HIST; h++)
            memcpy(hist + h * LEVELS, codes + (size_t)peso_rng_below(&rng, (uint64_t)n_items) * LEVELS,
                   LEVELS * sizeof(int32_t));
        size_t n;
        if (peso_prompt_build(&pr, hist, HIST, prompts + (size_t)u * P, (size_t)P, &n, &err))
            die("prompt", &err);
    }

    peso_backend *be = peso_backend_create("cpu", &err);
    peso_llama_opts mo;
    peso_llama_opts_defaults(&mo);
    mo.lora = (peso_lora_conf){.rank = 8, .alpha = 16.0, .targets = PESO_LORA_ALL};
    peso_llama *m;
    if (!be || peso_llama_load(&m, model, be, &mo, &err))
        die("loading the model", &err);
    peso_beam bs;
    if (peso_beam_init(&bs, m, beam, LEVELS, &err))
        die("beam search", &err);
    int32_t *ours = malloc((size_t)users * beam * sizeof(int32_t)),
            *naive = malloc((size_t)users * beam * sizeof(int32_t));
    double *scores = malloc((size_t)beam * sizeof(double));
    for (int i = 0; i < users * beam; i++)
        ours[i] = -1;

    double t0 = peso_now();
    for (int u = 0; u < users; u++) {
        int n;
        if (peso_beam_search(&bs, &t, &pr, prompts + (size_t)u * P, P, ours + (size_t)u * beam, scores, &n,
                             &err))
            die("beam search", &err);
    }
    double t_ours = (peso_now() - t0) / users;
    t0 = peso_now();
    for (int u = 0; u < users; u++)
        naive_search(m, &t, &pr, prompts + (size_t)u * P, P, beam, naive + (size_t)u * beam);
    double t_naive = (peso_now() - t0) / users;
    int differ = 0;
    for (int u = 0; u < users; u++)
        differ +=
            memcmp(ours + (size_t)u * beam, naive + (size_t)u * beam, (size_t)beam * sizeof(int32_t)) != 0;

    printf("preset %s (vocab %d, hidden %d, %d layers); %d users x %d-token prompts (%d history items); "
           "%d items (%d distinct tuples, %d x %d codes); beam %d; %d threads\n",
           preset, m->cfg.vocab_size, m->cfg.hidden_size, m->cfg.num_hidden_layers, users, P, HIST, n_items,
           t.n_leaves, LEVELS, CODES, beam, threads);
    printf("| search | s/user | users/s | ratio |\n|---|---|---|---|\n");
    printf("| naive (full re-encode per step) | %.4f | %.2f | 1.00x |\n", t_naive, 1.0 / t_naive);
    printf("| peso (prefix KV cache) | %.4f | %.2f | %.2fx |\n", t_ours, 1.0 / t_ours, t_naive / t_ours);
    printf("users whose ranked lists differ: %d of %d\n", differ, users);

    peso_beam_free(&bs);
    peso_llama_free(m);
    peso_backend_destroy(be);
    peso_trie_free(&t);
    peso_prompt_free(&pr);
    peso_tok_free(tok);
    free(codes);
    free(prompts);
    free(ours);
    free(naive);
    free(scores);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench-beam: could not remove %s\n", dir);
    return 0;
}
