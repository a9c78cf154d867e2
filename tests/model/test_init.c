/* `peso-model init`: the folder it writes must load back through our own
 * readers (config, safetensors, tokenizer) with the shapes and parameter
 * counts worked out by hand below from the Llama layer formula, be
 * reproducible for a seed, and refuse to clobber a folder. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hf/config.h"
#include "model/init.h"
#include "model/llama.h"
#include "model/prompt.h"
#include "hf/safetensors.h"
#include "hf/tokenizer.h"

static char *tmpdir(void)
{
    char *d = strdup("/tmp/peso_init_XXXXXX");
    cr_assert(mkdtemp(d), "mkdtemp");
    return d;
}

static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

static char *path_in(const char *dir, const char *file)
{
    static char p[4][8192];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, file);
    return p[k];
}

static void write_model(const char *dir, const char *preset, uint64_t seed, int with_codes,
                        peso_init_report *rep)
{
    peso_init_opts o = {
        .preset = preset, .seed = seed, .with_codes = with_codes, .levels = 4, .codebook = 256};
    peso_err err;
    cr_assert_eq(peso_init_write(dir, &o, rep, &err), 0, "%s", err.msg);
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    cr_assert_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static int same_file(const char *a, const char *b)
{
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

/* The per-layer tensors with their shapes for hidden h, q = heads x
 * head_dim, kv = kv heads x head_dim and intermediate i. */
struct want {
    const char *fmt;
    int ndim;
    char r, c; /* 'h', 'q', 'k', 'i' */
};

static const struct want layer_tensors[] = {
    {"model.layers.%d.input_layernorm.weight", 1, 'h', 0},
    {"model.layers.%d.post_attention_layernorm.weight", 1, 'h', 0},
    {"model.layers.%d.self_attn.q_proj.weight", 2, 'q', 'h'},
    {"model.layers.%d.self_attn.k_proj.weight", 2, 'k', 'h'},
    {"model.layers.%d.self_attn.v_proj.weight", 2, 'k', 'h'},
    {"model.layers.%d.self_attn.o_proj.weight", 2, 'h', 'q'},
    {"model.layers.%d.mlp.gate_proj.weight", 2, 'i', 'h'},
    {"model.layers.%d.mlp.up_proj.weight", 2, 'i', 'h'},
    {"model.layers.%d.mlp.down_proj.weight", 2, 'h', 'i'},
};

static int64_t dim_of(char d, int64_t h, int64_t q, int64_t kv, int64_t i)
{
    return d == 'h' ? h : d == 'q' ? q : d == 'k' ? kv : i;
}

/* Checks every tensor of the folder against the expected list and returns
 * the total number of values. */
static size_t check_tensors(const char *dir, int layers, int64_t v, int64_t h, int64_t q, int64_t kv,
                            int64_t in, int tied)
{
    peso_st *st;
    peso_err err;
    cr_assert_eq(peso_st_open_dir(&st, dir, &err), 0, "%s", err.msg);
    size_t want_count = 2 + 9 * (size_t)layers + (tied ? 0 : 1);
    cr_expect_eq(peso_st_count(st), want_count, "%zu tensors, expected %zu", peso_st_count(st), want_count);
    cr_expect_str_eq(peso_st_meta(st, "format"), "pt");
    int64_t emb[2] = {v, h}, norm[1] = {h};
    const peso_st_tensor *t;
    cr_assert_eq(peso_st_get(st, "model.embed_tokens.weight", &t, &err), 0, "%s", err.msg);
    cr_expect_eq(peso_st_expect(t, 2, emb, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_st_get(st, "model.norm.weight", &t, &err), 0, "%s", err.msg);
    cr_expect_eq(peso_st_expect(t, 1, norm, &err), 0, "%s", err.msg);
    if (tied) {
        cr_expect_null(peso_st_find(st, "lm_head.weight"), "a tied head is not saved");
    } else {
        cr_assert_eq(peso_st_get(st, "lm_head.weight", &t, &err), 0, "%s", err.msg);
        cr_expect_eq(peso_st_expect(t, 2, emb, &err), 0, "%s", err.msg);
    }
    char name[128];
    for (int l = 0; l < layers; l++)
        for (size_t k = 0; k < sizeof layer_tensors / sizeof layer_tensors[0]; k++) {
            const struct want *w = &layer_tensors[k];
            int64_t dims[2] = {dim_of(w->r, h, q, kv, in), dim_of(w->c, h, q, kv, in)};
            snprintf(name, sizeof name, w->fmt, l);
            cr_assert_eq(peso_st_get(st, name, &t, &err), 0, "%s", err.msg);
            cr_expect_eq(peso_st_expect(t, w->ndim, dims, &err), 0, "%s", err.msg);
        }
    size_t total = 0;
    for (size_t i = 0; i < peso_st_count(st); i++) {
        cr_expect_str_eq(peso_st_at(st, i)->dtype, "F32");
        total += peso_st_numel(peso_st_at(st, i));
    }
    peso_st_close(st);
    return total;
}

static void check_tokens(const char *dir, int vocab)
{
    peso_tok *t;
    peso_err err;
    cr_assert_eq(peso_tok_load(&t, path_in(dir, "tokenizer.json"), &err), 0, "%s", err.msg);
    cr_expect_eq(peso_tok_vocab_size(t), vocab);
    peso_tok_free(t);
}

/* tiny: h 64, 4 heads of 16 (q 64), 2 kv heads (kv 32), intermediate 192.
 * A layer: 2 norms 2 * 64 = 128; q, o 64 * 64 = 4096 each; k, v 32 * 64 =
 * 2048 each; gate, up, down 192 * 64 = 12288 each: 128 + 8192 + 4096 +
 * 36864 = 49280. Two layers 98560, final norm 64, tied table V * 64. */
Test(init, tiny_folder_loads_back_with_hand_computed_shapes)
{
    char *dir = tmpdir();
    peso_init_report rep;
    write_model(dir, "tiny", 42, 0, &rep);
    peso_llama_config c;
    peso_err err;
    cr_assert_eq(peso_llama_config_load(&c, path_in(dir, "config.json"), &err), 0, "%s", err.msg);
    cr_expect_eq(c.hidden_size, 64);
    cr_expect_eq(c.num_hidden_layers, 2);
    cr_expect_eq(c.num_attention_heads, 4);
    cr_expect_eq(c.num_key_value_heads, 2);
    cr_expect_eq(c.head_dim, 16);
    cr_expect_eq(c.intermediate_size, 192);
    cr_expect(c.tie_word_embeddings);
    cr_expect(c.rope_scaling.llama3 && c.rope_scaling.factor == 32.0 &&
              c.rope_scaling.original_max_position_embeddings == 8192);
    cr_expect_eq(c.rope_theta, 500000.0);
    cr_expect_eq(c.rms_norm_eps, 1e-5);
    cr_expect_str_eq(c.dtype, "float32");
    /* 256 bytes + learned tokens + the two special tokens, which come last */
    cr_expect(c.vocab_size > 256 + 2 && c.vocab_size <= 256 + PESO_INIT_MAX_MERGES + 2, "vocab %d",
              c.vocab_size);
    cr_expect_eq(c.bos_token_id, c.vocab_size - 2);
    cr_expect_eq(c.n_eos, 1);
    cr_expect_eq(c.eos_token_ids[0], c.vocab_size - 1);
    size_t want = 98624 + (size_t)c.vocab_size * 64;
    cr_expect_eq(check_tensors(dir, 2, c.vocab_size, 64, 64, 32, 192, 1), want);
    cr_expect_eq(rep.n_params, want);
    cr_expect_eq(peso_llama_base_numel(&c), want);
    cr_expect_eq(rep.config.vocab_size, c.vocab_size);
    check_tokens(dir, c.vocab_size);
    rm_tree(dir);
    free(dir);
}

/* small: h 512, 8 heads of 64 (q 512), 4 kv heads (kv 256), intermediate
 * 1408. A layer: norms 1024; q, o 262144 each; k, v 131072 each; gate,
 * up, down 720896 each: 1024 + 524288 + 262144 + 2162688 = 2950144. Eight
 * layers 23601152, final norm 512, untied: two tables V * 512. */
Test(init, small_folder_has_an_untied_head_and_about_24m_parameters)
{
    char *dir = tmpdir();
    peso_init_report rep;
    write_model(dir, "small", 1, 0, &rep);
    peso_llama_config c;
    peso_err err;
    cr_assert_eq(peso_llama_config_load(&c, path_in(dir, "config.json"), &err), 0, "%s", err.msg);
    cr_expect_eq(c.hidden_size, 512);
    cr_expect_eq(c.num_hidden_layers, 8);
    cr_expect_eq(c.head_dim, 64);
    cr_expect(!c.tie_word_embeddings);
    size_t want = 23601152 + 512 + 2 * (size_t)c.vocab_size * 512;
    cr_expect_eq(check_tensors(dir, 8, c.vocab_size, 512, 512, 256, 1408, 0), want);
    cr_expect_eq(rep.n_params, want);
    cr_expect(want > 20000000 && want < 30000000);

    /* the values: normal(0, 0.02) for a 262144-value projection (std of
     * the sample std ~ 0.02 / sqrt(2n) = 2.8e-5, of the mean 3.9e-5), ones
     * for the norms */
    peso_st *st;
    cr_assert_eq(peso_st_open_dir(&st, dir, &err), 0, "%s", err.msg);
    int64_t qd[2] = {512, 512}, nd[1] = {512};
    float *w = malloc(512 * 512 * sizeof *w), nw[512];
    cr_assert_eq(peso_st_load_f32(st, "model.layers.3.self_attn.q_proj.weight", 2, qd, w, &err), 0, "%s",
                 err.msg);
    double s = 0, ss = 0;
    for (size_t i = 0; i < 512 * 512; i++)
        s += w[i], ss += (double)w[i] * w[i];
    double mean = s / (512 * 512), sd = sqrt(ss / (512 * 512) - mean * mean);
    cr_expect(fabs(mean) < 2e-4, "mean %g", mean);
    cr_expect(fabs(sd - 0.02) < 2e-4, "std %g", sd);
    cr_assert_eq(peso_st_load_f32(st, "model.layers.7.post_attention_layernorm.weight", 1, nd, nw, &err), 0,
                 "%s", err.msg);
    for (int i = 0; i < 512; i++)
        cr_expect_eq(nw[i], 1.0f);
    free(w);
    peso_st_close(st);
    rm_tree(dir);
    free(dir);
}

static const char *const files[] = {"config.json",       "generation_config.json",
                                    "model.safetensors", "special_tokens_map.json",
                                    "tokenizer.json",    "tokenizer_config.json"};

Test(init, same_seed_same_files_other_seed_other_weights)
{
    char *a = tmpdir(), *b = tmpdir(), *c = tmpdir();
    write_model(a, "tiny", 7, 0, NULL);
    write_model(b, "tiny", 7, 0, NULL);
    write_model(c, "tiny", 8, 0, NULL);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        cr_expect(same_file(path_in(a, files[i]), path_in(b, files[i])), "%s differs for one seed", files[i]);
        if (strcmp(files[i], "model.safetensors") != 0)
            cr_expect(same_file(path_in(a, files[i]), path_in(c, files[i])), "%s depends on the seed",
                      files[i]);
    }
    peso_st *sa, *sc;
    peso_err err;
    cr_assert_eq(peso_st_open_dir(&sa, a, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_st_open_dir(&sc, c, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < peso_st_count(sa); i++) {
        const peso_st_tensor *x = peso_st_at(sa, i), *y = peso_st_at(sc, i);
        cr_assert_str_eq(x->name, y->name);
        int is_norm = strstr(x->name, "norm") != NULL;
        int same = x->nbytes == y->nbytes && memcmp(x->data, y->data, x->nbytes) == 0;
        cr_expect(is_norm ? same : !same, "%s: %s across seeds", x->name, same ? "equal" : "different");
    }
    peso_st_close(sa);
    peso_st_close(sc);
    rm_tree(a), rm_tree(b), rm_tree(c);
    free(a), free(b), free(c);
}

/* With codes: 4 x 256 code tokens follow the two special tokens, and the
 * embedding's first rows and every layer equal those of the folder without
 * codes (one stream per tensor). */
Test(init, with_codes_appends_the_code_tokens)
{
    char *a = tmpdir(), *b = tmpdir();
    peso_init_report ra, rb;
    write_model(a, "tiny", 3, 0, &ra);
    write_model(b, "tiny", 3, 1, &rb);
    int base = ra.config.vocab_size;
    cr_assert_eq(rb.config.vocab_size, base + 1024);
    peso_tok *t;
    peso_err err;
    cr_assert_eq(peso_tok_load(&t, path_in(b, "tokenizer.json"), &err), 0, "%s", err.msg);
    cr_expect_eq(peso_tok_id(t, "<|begin_of_text|>"), base - 2);
    cr_expect_eq(peso_tok_id(t, "<a_0>"), base);
    cr_expect_eq(peso_tok_id(t, "<a_255>"), base + 255);
    cr_expect_eq(peso_tok_id(t, "<b_0>"), base + 256);
    cr_expect_eq(peso_tok_id(t, "<d_255>"), base + 1023);
    cr_expect_eq(peso_tok_id(t, "<e_0>"), -1);
    peso_tok_free(t);

    /* read with plain cJSON, not the writer's layer */
    size_t n;
    char *text = slurp(path_in(b, "tokenizer_config.json"), &n);
    cJSON *tc = cJSON_ParseWithLength(text, n);
    free(text);
    cJSON *dec = cJSON_GetObjectItemCaseSensitive(tc, "added_tokens_decoder");
    cr_assert(cJSON_IsObject(dec), "tokenizer_config.json lacks added_tokens_decoder");
    cr_expect_eq(cJSON_GetArraySize(dec), 1026);
    char key[16];
    snprintf(key, sizeof key, "%d", base);
    const cJSON *d0 = cJSON_GetObjectItemCaseSensitive(dec, key);
    const char *content = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d0, "content"));
    cr_expect(content && strcmp(content, "<a_0>") == 0, "added_tokens_decoder[%s] is not <a_0>", key);
    const char *cls = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(tc, "tokenizer_class"));
    cr_expect(cls && strcmp(cls, "PreTrainedTokenizerFast") == 0, "tokenizer_class is %s",
              cls ? cls : "absent");
    cJSON_Delete(tc);

    peso_st *sa, *sb;
    cr_assert_eq(peso_st_open_dir(&sa, a, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_st_open_dir(&sb, b, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < peso_st_count(sa); i++) {
        const peso_st_tensor *x = peso_st_at(sa, i), *y = peso_st_find(sb, x->name);
        cr_assert(y, "%s", x->name);
        cr_expect(memcmp(x->data, y->data, x->nbytes) == 0, "%s: the first %zu bytes differ", x->name,
                  x->nbytes);
    }
    peso_st_close(sa);
    peso_st_close(sb);
    rm_tree(a), rm_tree(b);
    free(a), free(b);
}

Test(init, tokenizer_round_trips_the_prompt_text)
{
    char *dir = tmpdir();
    write_model(dir, "tiny", 42, 1, NULL);
    peso_tok *t;
    peso_err err;
    cr_assert_eq(peso_tok_load(&t, path_in(dir, "tokenizer.json"), &err), 0, "%s", err.msg);
    char text[2048];
    snprintf(text, sizeof text,
             "<|begin_of_text|>%s<a_1><b_2><c_3><d_4>%s<a_255><b_0><c_17><d_1>%s<a_7><b_7><c_7><d_7>",
             peso_prompt_head, peso_prompt_sep, peso_prompt_tail);
    const char *texts[] = {peso_prompt_head, peso_prompt_sep, peso_prompt_tail, text};
    for (size_t k = 0; k < 4; k++) {
        int32_t *ids;
        size_t n, len = strlen(texts[k]), blen;
        char *back;
        cr_assert_eq(peso_tok_encode(t, texts[k], len, &ids, &n, &err), 0, "%s", err.msg);
        cr_assert_eq(peso_tok_decode(t, ids, n, 0, &back, &blen, &err), 0, "%s", err.msg);
        cr_expect(blen == len && memcmp(back, texts[k], len) == 0, "text %zu does not round-trip: %s", k,
                  back);
        /* the learned merges shorten the fixed text well below one token a byte */
        if (k == 0 || k == 2)
            cr_expect(n < len * 2 / 3, "text %zu: %zu tokens for %zu bytes", k, n, len);
        free(ids);
        free(back);
    }
    peso_tok_free(t);
    rm_tree(dir);
    free(dir);
}

Test(init, refuses_a_non_empty_folder_unless_forced)
{
    char *dir = tmpdir();
    FILE *f = fopen(path_in(dir, "notes.txt"), "w");
    cr_assert(f);
    fputs("keep me\n", f);
    fclose(f);
    peso_init_opts o = {.preset = "tiny", .seed = 1};
    peso_err err;
    cr_assert_eq(peso_init_write(dir, &o, NULL, &err), -1);
    cr_expect(strstr(err.msg, dir) && strstr(err.msg, "not empty") && strstr(err.msg, "--force"), "%s",
              err.msg);
    cr_expect_eq(access(path_in(dir, "config.json"), F_OK), -1, "nothing written");
    /* a stale shard index would shadow model.safetensors: --force removes it */
    f = fopen(path_in(dir, "model.safetensors.index.json"), "w");
    cr_assert(f);
    fputs("{\"weight_map\": {}}\n", f);
    fclose(f);
    o.force = 1;
    cr_assert_eq(peso_init_write(dir, &o, NULL, &err), 0, "%s", err.msg);
    cr_expect_eq(access(path_in(dir, "model.safetensors.index.json"), F_OK), -1);
    cr_expect_eq(access(path_in(dir, "notes.txt"), F_OK), 0, "other files are left alone");
    peso_st *st;
    cr_assert_eq(peso_st_open_dir(&st, dir, &err), 0, "%s", err.msg);
    peso_st_close(st);
    /* a folder that does not exist yet is created, parents included */
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/a/b", dir);
    o.force = 0;
    cr_assert_eq(peso_init_write(sub, &o, NULL, &err), 0, "%s", err.msg);
    cr_expect_eq(access(path_in(sub, "tokenizer.json"), F_OK), 0);
    rm_tree(sub);
    snprintf(sub, sizeof sub, "%s/a", dir);
    rmdir(sub);
    rm_tree(dir);
    free(dir);
}

Test(init, bad_preset_and_code_sizes_are_named)
{
    peso_llama_config c;
    peso_err err;
    cr_assert_eq(peso_init_preset(&c, "huge", &err), -1);
    cr_expect(strstr(err.msg, "'huge'") && strstr(err.msg, "tiny"), "%s", err.msg);
    peso_tok *t;
    cr_assert_eq(peso_init_tokenizer(&t, 1, 9, 256, &err), -1);
    cr_expect(strstr(err.msg, "levels=9"), "%s", err.msg);
    cr_assert_eq(peso_init_tokenizer(&t, 1, 2, 0, &err), -1);
    cr_expect(strstr(err.msg, "codebook=0"), "%s", err.msg);
    char *dir = tmpdir();
    peso_init_opts o = {.preset = "huge"};
    cr_assert_eq(peso_init_write(dir, &o, NULL, &err), -1);
    rm_tree(dir);
    free(dir);
}

static int run_main(int argc, const char **argv)
{
    return peso_model_init_main(argc, (char **)argv);
}

Test(init, subcommand_parses_its_arguments)
{
    char *dir = tmpdir();
    char out[4096];
    snprintf(out, sizeof out, "%s/m", dir);
    cr_expect_eq(run_main(2, (const char *[]){"init", "--help"}), 0);
    cr_expect_eq(run_main(3, (const char *[]){"init", "--preset", "tiny"}), 2, "--out is required");
    cr_expect_eq(run_main(7, (const char *[]){"init", "--preset", "tiny", "--out", out, "--levels", "3"}), 2,
                 "--levels without --with-codes");
    cr_expect_eq(run_main(7, (const char *[]){"init", "--preset", "tiny", "--out", out, "--seed", "-1"}), 2);
    cr_expect_eq(run_main(6, (const char *[]){"init", "--preset", "tiny", "--out", out, "--bogus"}), 2);
    cr_expect_eq(run_main(5, (const char *[]){"init", "--preset", "nope", "--out", out}), 1);
    cr_expect_eq(access(out, F_OK), -1, "nothing written on bad arguments");
    const char *ok[] = {"init", "--preset",     "tiny",     "--out", out,          "--seed",
                        "5",    "--with-codes", "--levels", "3",     "--codebook", "10"};
    cr_assert_eq(run_main(12, ok), 0);
    peso_llama_config c;
    peso_err err;
    cr_assert_eq(peso_llama_config_load(&c, path_in(out, "config.json"), &err), 0, "%s", err.msg);
    peso_tok *t;
    cr_assert_eq(peso_tok_load(&t, path_in(out, "tokenizer.json"), &err), 0, "%s", err.msg);
    cr_expect_eq(c.vocab_size, peso_tok_vocab_size(t));
    cr_expect_eq(peso_tok_id(t, "<c_9>"), c.vocab_size - 1, "3 levels of 10 codes: <c_9> is last");
    cr_expect_eq(peso_tok_id(t, "<d_0>"), -1);
    peso_tok_free(t);
    cr_expect_eq(run_main(5, (const char *[]){"init", "--preset", "tiny", "--out", out}), 1, "not empty");
    rm_tree(out);
    rm_tree(dir);
    free(dir);
}
