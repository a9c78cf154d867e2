/* The recommender prompt assembled from ids must be exactly what the
 * tokenizer gives for the whole prompt text (the code tokens are special
 * tokens, so tokenizers splits the text at them), on the tokenizer that
 * `peso-model init --with-codes` writes. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/rng.h"
#include "model/init.h"
#include "model/prompt.h"
#include "hf/tokenizer.h"

#define LEVELS 4
#define CODES 256

static const int sizes[LEVELS] = {CODES, CODES, CODES, CODES};

/* The tokenizer.json of a tiny folder written by init, loaded back. */
static peso_tok *init_tokenizer(int with_codes)
{
    char dir[] = "/tmp/peso_prompt_XXXXXX", path[64];
    cr_assert(mkdtemp(dir));
    peso_init_opts o = {
        .preset = "tiny", .seed = 1, .with_codes = with_codes, .levels = LEVELS, .codebook = CODES};
    peso_err err;
    cr_assert_eq(peso_init_write(dir, &o, NULL, &err), 0, "%s", err.msg);
    peso_tok *t;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    cr_assert_eq(peso_tok_load(&t, path, &err), 0, "%s", err.msg);
    const char *files[] = {"config.json",       "generation_config.json",
                           "model.safetensors", "special_tokens_map.json",
                           "tokenizer.json",    "tokenizer_config.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return t;
}

/* The prompt as text, the way a Python reference would format it. */
static size_t prompt_text(char *buf, size_t cap, int bos, const int32_t *hist, size_t n_hist,
                          const int32_t *target)
{
    size_t k = (size_t)snprintf(buf, cap, "%s%s", bos ? "<|begin_of_text|>" : "", peso_prompt_head);
    for (size_t i = 0; i < n_hist; i++) {
        if (i > 0)
            k += (size_t)snprintf(buf + k, cap - k, "%s", peso_prompt_sep);
        for (int l = 0; l < LEVELS; l++)
            k += (size_t)snprintf(buf + k, cap - k, "<%c_%d>", 'a' + l, hist[i * LEVELS + l]);
    }
    k += (size_t)snprintf(buf + k, cap - k, "%s", peso_prompt_tail);
    for (int l = 0; target && l < LEVELS; l++)
        k += (size_t)snprintf(buf + k, cap - k, "<%c_%d>", 'a' + l, target[l]);
    return k;
}

static void random_codes(peso_rng *r, int32_t *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        c[i] = (int32_t)peso_rng_below(r, CODES);
}

static void expect_same_ids(const int32_t *got, size_t n, const int32_t *want, size_t wn, const char *what)
{
    cr_assert_eq(n, wn, "%s: %zu ids assembled, the tokenizer gives %zu", what, n, wn);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "%s: id %zu is %d, the tokenizer gives %d", what, i, got[i], want[i]);
}

static void check_against_text(const peso_tok *t, const peso_prompt *p, int bos, size_t n_hist, peso_rng *r)
{
    int32_t hist[20 * LEVELS], target[LEVELS], ids[1024], labels[1024], *want;
    char text[8192], what[64];
    size_t n, wn;
    peso_err err;
    random_codes(r, hist, n_hist * LEVELS);
    random_codes(r, target, LEVELS);
    snprintf(what, sizeof what, "%zu history items", n_hist);

    cr_assert_eq(peso_prompt_example(p, hist, n_hist, target, ids, labels, 1024, &n, &err), 0, "%s", err.msg);
    size_t len = prompt_text(text, sizeof text, bos, hist, n_hist, target);
    cr_assert_eq(peso_tok_encode(t, text, len, &want, &wn, &err), 0, "%s", err.msg);
    expect_same_ids(ids, n, want, wn, what);
    cr_expect_eq(n, peso_prompt_example_len(p, n_hist));
    for (size_t i = 0; i < n; i++)
        cr_expect_eq(labels[i], i + LEVELS < n ? -100 : want[i], "%s: label %zu", what, i);
    free(want);

    /* the prompt alone, as decoding starts from it */
    cr_assert_eq(peso_prompt_build(p, hist, n_hist, ids, 1024, &n, &err), 0, "%s", err.msg);
    len = prompt_text(text, sizeof text, bos, hist, n_hist, NULL);
    cr_assert_eq(peso_tok_encode(t, text, len, &want, &wn, &err), 0, "%s", err.msg);
    expect_same_ids(ids, n, want, wn, what);
    cr_expect_eq(n, peso_prompt_len(p, n_hist));
    free(want);
}

Test(prompt, assembled_ids_equal_tokenizing_the_whole_text)
{
    peso_tok *t = init_tokenizer(1);
    peso_prompt p;
    peso_err err;
    peso_rng r;
    peso_rng_seed(&r, 5, 0);
    cr_assert_eq(peso_prompt_init(&p, t, LEVELS, sizes, &err), 0, "%s", err.msg);
    cr_expect_eq(p.bos, peso_tok_id(t, "<|begin_of_text|>"));
    cr_expect(p.bos >= 0);
    const size_t counts[] = {0, 1, 2, 3, 7, 20};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++)
        check_against_text(t, &p, 1, counts[k], &r);
    peso_prompt_free(&p);
    peso_tok_free(t);
}

/* ", " is two Llama 3 pre-tokens, "," and " ", each a single byte whose id
 * is its value: 44 and 32. The length of a prompt with n items is BOS +
 * head + 4n codes + (n - 1) separators + tail. */
Test(prompt, pieces_and_lengths_by_hand)
{
    peso_tok *t = init_tokenizer(1);
    peso_prompt p;
    peso_err err;
    cr_assert_eq(peso_prompt_init(&p, t, LEVELS, sizes, &err), 0, "%s", err.msg);
    cr_assert_eq(p.n_sep, 2);
    cr_expect(p.sep[0] == 44 && p.sep[1] == 32, "sep ids %d %d", p.sep[0], p.sep[1]);
    for (size_t n = 1; n <= 20; n++)
        cr_expect_eq(peso_prompt_len(&p, n), 1 + p.n_head + 4 * n + 2 * (n - 1) + p.n_tail);
    cr_expect_eq(peso_prompt_len(&p, 0), 1 + p.n_head_tail);
    cr_expect_eq(peso_prompt_example_len(&p, 3), peso_prompt_len(&p, 3) + 4);
    char name[32];
    peso_prompt_code_token(name, sizeof name, 2, 17);
    cr_expect_str_eq(name, "<c_17>");
    cr_expect_eq(peso_prompt_code_id(&p, 2, 17), peso_tok_id(t, "<c_17>"));
    cr_expect_eq(peso_prompt_code_id(&p, 0, 0), peso_tok_id(t, "<|end_of_text|>") + 1);
    peso_prompt_free(&p);
    peso_tok_free(t);
}

/* A tokenizer without <|begin_of_text|> learned from the text with no
 * history item, HEAD + TAIL, so that " ," (the end of HEAD and the start
 * of TAIL) is one token: then the empty history must tokenize HEAD + TAIL
 * as one text, and the prompt has no BOS. */
Test(prompt, without_bos_and_with_an_empty_history)
{
    char joint[1024];
    snprintf(joint, sizeof joint, "%s%s", peso_prompt_head, peso_prompt_tail);
    const char *texts[] = {joint, joint};
    peso_tok *t;
    peso_err err;
    int32_t id;
    char name[32];
    cr_assert_eq(peso_tok_build_small(&t, texts, 2, PESO_INIT_MAX_MERGES, &err), 0, "%s", err.msg);
    cr_assert(peso_tok_id(t, "\xc4\xa0,") >= 0, "the merge of \" ,\" was learned");
    for (int l = 0; l < LEVELS; l++)
        for (int c = 0; c < CODES; c++) {
            peso_prompt_code_token(name, sizeof name, l, c);
            cr_assert_eq(peso_tok_add_special(t, name, &id, &err), 0, "%s", err.msg);
        }
    peso_prompt p;
    peso_rng r;
    peso_rng_seed(&r, 6, 0);
    cr_assert_eq(peso_prompt_init(&p, t, LEVELS, sizes, &err), 0, "%s", err.msg);
    cr_expect_eq(p.bos, -1);
    cr_expect_lt(p.n_head_tail, p.n_head + p.n_tail);
    check_against_text(t, &p, 0, 0, &r);
    check_against_text(t, &p, 0, 1, &r);
    check_against_text(t, &p, 0, 4, &r);
    cr_expect_eq(peso_prompt_len(&p, 2), p.n_head + 8 + p.n_sep + p.n_tail);
    peso_prompt_free(&p);
    peso_tok_free(t);
}

Test(prompt, missing_code_tokens_are_named)
{
    peso_tok *plain = init_tokenizer(0), *coded = init_tokenizer(1);
    peso_prompt p;
    peso_err err;
    cr_assert_eq(peso_prompt_init(&p, plain, LEVELS, sizes, &err), -1);
    cr_expect(strstr(err.msg, "<a_0>") && strstr(err.msg, "vocabulary"), "%s", err.msg);
    const int big[LEVELS] = {256, 256, 300, 256};
    cr_assert_eq(peso_prompt_init(&p, coded, LEVELS, big, &err), -1);
    cr_expect(strstr(err.msg, "<c_256>"), "%s", err.msg);
    const int five[5] = {256, 256, 256, 256, 1};
    cr_assert_eq(peso_prompt_init(&p, coded, 5, five, &err), -1);
    cr_expect(strstr(err.msg, "<e_0>"), "%s", err.msg);
    cr_assert_eq(peso_prompt_init(&p, coded, 0, sizes, &err), -1);
    cr_expect(strstr(err.msg, "levels=0"), "%s", err.msg);
    cr_assert_eq(peso_prompt_init(&p, coded, 9, sizes, &err), -1);
    const int zero[LEVELS] = {256, 0, 256, 256};
    cr_assert_eq(peso_prompt_init(&p, coded, LEVELS, zero, &err), -1);
    cr_expect(strstr(err.msg, "level 1 has 0 codes"), "%s", err.msg);
    /* fewer codes than the vocabulary holds is fine (a collision level) */
    const int small[LEVELS] = {256, 256, 256, 3};
    cr_assert_eq(peso_prompt_init(&p, coded, LEVELS, small, &err), 0, "%s", err.msg);
    int32_t hist[8] = {1, 2, 3, 2, 4, 5, 6, 3}, target[4] = {0, 0, 0, 0}, ids[512], labels[512];
    size_t n;
    cr_assert_eq(peso_prompt_example(&p, hist, 2, target, ids, labels, 512, &n, &err), -1);
    cr_expect(strstr(err.msg, "history item 1, level 3: code 3 out of range [0, 3)"), "%s", err.msg);
    hist[7] = 0;
    target[0] = -1;
    cr_assert_eq(peso_prompt_example(&p, hist, 2, target, ids, labels, 512, &n, &err), -1);
    cr_expect(strstr(err.msg, "target item, level 0: code -1"), "%s", err.msg);
    target[0] = 255;
    size_t need = peso_prompt_example_len(&p, 2);
    cr_assert_eq(peso_prompt_example(&p, hist, 2, target, ids, labels, need - 1, &n, &err), -1);
    cr_expect(strstr(err.msg, "buffer holds"), "%s", err.msg);
    cr_assert_eq(peso_prompt_example(&p, hist, 2, target, ids, labels, need, &n, &err), 0, "%s", err.msg);
    cr_expect_eq(n, need);
    cr_expect_eq(ids[n - 4], peso_tok_id(coded, "<a_255>"));
    cr_assert_eq(peso_prompt_build(&p, hist, 2, ids, peso_prompt_len(&p, 2) - 1, &n, &err), -1);
    peso_prompt_free(&p);
    peso_tok_free(plain);
    peso_tok_free(coded);
}

/* For tests/model/test_init_hf.sh: with PESO_INIT_EXPORT_DIR set, writes
 * the folders tiny (seed 42), tiny-codes (with the 4 x 256 code tokens)
 * and small, and prompts.json: for tiny-codes' tokenizer, each example's
 * text with the ids and labels assembled here. Without it, the same runs
 * in a temporary folder that is removed. */
static void rm_folder(const char *dir)
{
    const char *files[] = {"config.json",       "generation_config.json",
                           "model.safetensors", "special_tokens_map.json",
                           "tokenizer.json",    "tokenizer_config.json"};
    char path[2048];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* The examples are written with plain cJSON, not the library's writer. */
static cJSON *ids_json(const int32_t *ids, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    cr_assert_not_null(a);
    for (size_t i = 0; i < n; i++)
        cr_assert(cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i])));
    return a;
}

Test(prompt, folders_and_examples_export_for_python)
{
    const char *export = getenv("PESO_INIT_EXPORT_DIR");
    char tmp[] = "/tmp/peso_prompt_export_XXXXXX", dir[512], sub[3][600], path[700];
    snprintf(dir, sizeof dir, "%s", export ? export : mkdtemp(tmp));
    const char *names[] = {"tiny", "tiny-codes", "small"};
    peso_init_opts o[] = {
        {.preset = "tiny", .seed = 42},
        {.preset = "tiny", .seed = 42, .with_codes = 1, .levels = LEVELS, .codebook = CODES},
        {.preset = "small", .seed = 42},
    };
    peso_err err;
    size_t n_folders = export ? 3 : 2; /* the small folder only when Python reads it */
    for (size_t i = 0; i < n_folders; i++) {
        snprintf(sub[i], sizeof sub[i], "%s/%s", dir, names[i]);
        cr_assert_eq(peso_init_write(sub[i], &o[i], NULL, &err), 0, "%s", err.msg);
    }
    peso_tok *t;
    snprintf(path, sizeof path, "%s/tokenizer.json", sub[1]);
    cr_assert_eq(peso_tok_load(&t, path, &err), 0, "%s", err.msg);
    peso_prompt p;
    cr_assert_eq(peso_prompt_init(&p, t, LEVELS, sizes, &err), 0, "%s", err.msg);
    peso_rng r;
    peso_rng_seed(&r, 9, 0);
    cJSON *cases = cJSON_CreateArray();
    const size_t counts[] = {0, 1, 3, 20};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        int32_t hist[20 * LEVELS], target[LEVELS], ids[1024], labels[1024];
        char text[8192];
        size_t n;
        random_codes(&r, hist, counts[k] * LEVELS);
        random_codes(&r, target, LEVELS);
        cr_assert_eq(peso_prompt_example(&p, hist, counts[k], target, ids, labels, 1024, &n, &err), 0, "%s",
                     err.msg);
        prompt_text(text, sizeof text, 1, hist, counts[k], target);
        cJSON *c = cJSON_CreateObject();
        cr_assert_not_null(cJSON_AddStringToObject(c, "text", text));
        cr_assert(cJSON_AddItemToObject(c, "ids", ids_json(ids, n)));
        cr_assert(cJSON_AddItemToObject(c, "labels", ids_json(labels, n)));
        cr_assert(cJSON_AddItemToArray(cases, c));
    }
    snprintf(path, sizeof path, "%s/prompts.json", dir);
    char *json = cJSON_PrintUnformatted(cases);
    cr_assert_not_null(json);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    int ok = fputs(json, f) >= 0;
    ok = fclose(f) == 0 && ok;
    cr_assert(ok, "cannot write %s", path);
    cJSON_free(json);
    cJSON_Delete(cases);
    peso_prompt_free(&p);
    peso_tok_free(t);
    if (!export) {
        unlink(path);
        for (size_t i = 0; i < n_folders; i++)
            rm_folder(sub[i]);
        rmdir(dir);
    }
}
