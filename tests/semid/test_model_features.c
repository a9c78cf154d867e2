/* semid.features: model on a tiny folder from peso_init_write: each
 * item's feature row is the model's mean hidden state over BOS + its text
 * tokens (cut to semid.model_max_tokens), computed here one item at a time
 * with its own tokenization; the build gives the same codes twice, equal
 * texts equal learned codes, and a collision level checked by brute force. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/init.h"
#include "model/llama.h"
#include "hf/tokenizer.h"
#include "semid/modelfeat.h"
#include "semid/semid.h"
#include "semid_test_util.h"

#define N 16
#define MAX_TOK 12

static const char *const ids[N] = {"i00", "i01", "i02", "i03", "i04", "i05", "i06", "i07",
                                   "i08", "i09", "i10", "i11", "i12", "i13", "i14", "i15"};
/* items 3 and 9 share a text, 4, 6 and 12 have none (the first test gives
 * 4 an empty one), 1 is longer than MAX_TOK tokens */
static const char *const texts[N] = {
    "red wool winter scarf",
    "a very long description of a blue cotton summer shirt with short sleeves and buttons and pockets",
    "stainless steel kitchen knife",
    "green tea 100 bags",
    NULL,
    "wireless mouse for laptops",
    NULL,
    "hardcover cookbook of italian pasta",
    "running shoes size 42",
    "green tea 100 bags",
    "usb cable two metres",
    "wooden chess set",
    NULL,
    "yoga mat non slip",
    "ceramic coffee mug",
    "mechanical keyboard with brown switches"};

static char dir[64];
static peso_init_report rep;

static void make_folder(void)
{
    char base[64];
    peso_err err;
    cr_assert_eq(test_tmpdir(base), 0);
    snprintf(dir, sizeof dir, "%s/m", base);
    peso_init_opts o = {.preset = "tiny", .seed = 5};
    cr_assert_eq(peso_init_write(dir, &o, &rep, &err), 0, "%s", err.msg);
}

static void remove_folder(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%.*s'", (int)(strrchr(dir, '/') - dir), dir);
    cr_assert_eq(system(cmd), 0);
}

static const char *text_of(int i)
{
    return i == 4 ? "" : texts[i];
}

/* The feature row of item i on its own: [BOS] + tokens, cut to MAX_TOK. */
static void item_by_itself(peso_llama *m, const peso_tok *tok, int i, float *out)
{
    peso_err err;
    int32_t seq[MAX_TOK], *t = NULL;
    size_t n = 0;
    const char *s = text_of(i);
    if (s)
        cr_assert_eq(peso_tok_encode(tok, s, strlen(s), &t, &n, &err), 0, "%s", err.msg);
    seq[0] = rep.config.bos_token_id;
    int len = 1;
    for (size_t k = 0; k < n && len < MAX_TOK; k++)
        seq[len++] = t[k];
    if (i == 1)
        cr_assert_gt(n, MAX_TOK, "item 1 must be cut");
    free(t);
    peso_llama_batch b = {1, len, seq, &len, NULL};
    cr_assert_eq(peso_llama_hidden_mean(m, &b, out, &err), 0, "%s", err.msg);
}

Test(model_features, rows_are_each_items_own_mean_hidden_state, .timeout = 60)
{
    make_folder();
    peso_semid_items it;
    const char *tx[N];
    for (int i = 0; i < N; i++)
        tx[i] = text_of(i);
    test_items(&it, N, ids, tx, NULL);
    peso_err err;
    float *x = NULL;
    int dim = 0;
    cr_assert_eq(peso_semid_model_features(dir, MAX_TOK, &it, &(peso_backend_opts){.name = "cpu"}, &x, &dim, &err), 0, "%s", err.msg);
    cr_assert_eq(dim, rep.config.hidden_size);

    peso_backend *be = peso_backend_create("cpu", &err);
    peso_llama_opts o;
    peso_llama_opts_defaults(&o);
    o.lora.targets = 0;
    peso_llama *m = NULL;
    peso_tok *tok = NULL;
    char path[128];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    cr_assert_eq(peso_llama_load(&m, dir, be, &o, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_tok_load(&tok, path, &err), 0, "%s", err.msg);
    float *want = malloc((size_t)dim * sizeof *want);
    for (int i = 0; i < N; i++) {
        item_by_itself(m, tok, i, want);
        for (int j = 0; j < dim; j++)
            cr_assert(fabsf(x[(size_t)i * dim + j] - want[j]) <= 1e-5f * (1.0f + fabsf(want[j])),
                      "item %d column %d: %.9g, by itself %.9g", i, j, x[(size_t)i * dim + j], want[j]);
    }
    /* no text and empty text are both BOS alone; different texts differ */
    cr_assert_eq(memcmp(x + 4 * (size_t)dim, x + 6 * (size_t)dim, (size_t)dim * sizeof *x), 0);
    cr_assert_neq(memcmp(x, x + 2 * (size_t)dim, (size_t)dim * sizeof *x), 0);
    free(want);
    free(x);
    peso_tok_free(tok);
    peso_llama_free(m);
    peso_backend_destroy(be);
    test_items_free(&it);
    remove_folder();
}

static peso_conf model_conf(void)
{
    peso_conf c;
    peso_conf_defaults(&c);
    strcpy(c.semid.features, "model");
    snprintf(c.semid.model, sizeof c.semid.model, "%s", dir);
    c.semid.model_max_tokens = MAX_TOK;
    c.semid.levels = 2;
    c.semid.codebook = 4;
    c.semid.n_hidden = 1;
    c.semid.hidden[0] = 16;
    c.semid.latent = 8;
    c.semid.epochs = 10;
    c.semid.batch = 8;
    return c;
}

static void build(peso_semid *s, const peso_conf *c)
{
    peso_semid_items it;
    peso_err err;
    test_items(&it, N, ids, texts, NULL);
    cr_assert_eq(peso_semid_build(s, &it, c, 0, &err), 0, "%s", err.msg);
    test_items_free(&it);
}

Test(model_features, build_is_deterministic_with_a_collision_level, .timeout = 60)
{
    make_folder();
    peso_conf c = model_conf();
    peso_semid a, b;
    build(&a, &c);
    build(&b, &c);
    cr_assert_eq(a.n_items, N);
    cr_assert_eq(a.n_levels, 3);
    cr_assert_eq(memcmp(a.codes, b.codes, N * 3 * sizeof *a.codes), 0, "two builds differ");
    for (int i = 0; i < N; i++) {
        const int32_t *row = a.codes + i * 3;
        cr_assert(row[0] >= 0 && row[0] < 4 && row[1] >= 0 && row[1] < 4);
        int earlier = 0;
        for (int j = 0; j < i; j++)
            earlier += memcmp(a.codes + j * 3, row, 2 * sizeof *row) == 0;
        cr_assert_eq(row[2], earlier, "item %d: collision code %d, %d earlier items share its codes", i,
                     row[2], earlier);
    }
    /* equal texts (3, 9) and no texts (6, 12): equal features, equal codes */
    cr_assert_eq(memcmp(a.codes + 3 * 3, a.codes + 9 * 3, 2 * sizeof *a.codes), 0);
    cr_assert_eq(memcmp(a.codes + 6 * 3, a.codes + 12 * 3, 2 * sizeof *a.codes), 0);
    cr_assert_eq(a.distinct_tuples, N);
    peso_semid_free(&a);
    peso_semid_free(&b);
    remove_folder();
}

Test(model_features, missing_folder_names_it)
{
    peso_conf c;
    peso_conf_defaults(&c);
    strcpy(c.semid.features, "model");
    strcpy(c.semid.model, "/nonexistent/peso-model");
    peso_semid_items it;
    peso_semid s;
    peso_err err;
    test_items(&it, 2, ids, texts, NULL);
    cr_assert_eq(peso_semid_build(&s, &it, &c, 0, &err), -1);
    cr_assert(strstr(err.msg, "semid.model") && strstr(err.msg, "/nonexistent/peso-model"), "%s", err.msg);
    test_items_free(&it);
}
