/* Byte-level BPE against Hugging Face tokenizers: tok_cases.json holds the
 * ids and decoded texts that tokenizers 0.23 produced for every fixture
 * tokenizer (tools/reference/make_tokenizer_fixtures.py); the C encoder must
 * give exactly the same. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hf/tokenizer.h"

#define FIX PESO_FIXTURES "/model/"

static peso_tok *load(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, FIX "%s", name);
    peso_tok *t;
    peso_err err;
    cr_assert_eq(peso_tok_load(&t, path, &err), 0, "%s", err.msg);
    return t;
}

static void fmt_ids(char *buf, size_t n, const int32_t *ids, size_t k)
{
    size_t w = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < k && w + 16 < n; i++)
        w += (size_t)snprintf(buf + w, n - w, "%s%d", i ? "," : "", ids[i]);
}

/* The fixture files are read with plain cJSON, not the loader's layer. */
static cJSON *read_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    char *buf = NULL;
    size_t n = 0, cap = 0;
    do {
        cap = cap ? 2 * cap : 65536;
        buf = realloc(buf, cap + 1);
        cr_assert_not_null(buf);
        n += fread(buf + n, 1, cap - n, f);
    } while (n == cap);
    fclose(f);
    cJSON *root = cJSON_ParseWithLength(buf, n);
    free(buf);
    cr_assert_not_null(root, "%s is not JSON", path);
    return root;
}

static const cJSON *field(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert_not_null(v, "no '%s'", key);
    return v;
}

/* ids[0..*n) of a JSON array of integers, malloc'd. */
static int32_t *ids_of(const cJSON *a, size_t *n)
{
    cr_assert(cJSON_IsArray(a));
    *n = (size_t)cJSON_GetArraySize(a);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    size_t i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, a)
    {
        cr_assert(cJSON_IsNumber(v));
        ids[i++] = v->valueint;
    }
    return ids;
}

/* Returns 1 when encoding text gives exactly the expected ids; with
 * roundtrip (tokenizers decodes every text of the set back to itself), the
 * C decoder must too. */
static int check_encode(const peso_tok *t, const char *file, const cJSON *c, int roundtrip)
{
    const char *text = cJSON_GetStringValue(field(c, "text"));
    cr_assert_not_null(text);
    size_t len = strlen(text), n, want_n;
    int32_t *ids, *want = ids_of(field(c, "ids"), &want_n);
    peso_err err;
    cr_assert_eq(peso_tok_encode(t, text, len, &ids, &n, &err), 0, "%s", err.msg);
    int ok = n == want_n && memcmp(ids, want, n * sizeof *ids) == 0;
    if (!ok) {
        char got[4096], exp[4096];
        fmt_ids(got, sizeof got, ids, n);
        fmt_ids(exp, sizeof exp, want, want_n);
        cr_log_error("%s: text '%s': got [%s], expected [%s]", file, text, got, exp);
    }
    char *back;
    size_t blen;
    cr_assert_eq(peso_tok_decode(t, ids, n, 0, &back, &blen, &err), 0, "%s", err.msg);
    if (roundtrip)
        cr_expect(blen == len && memcmp(back, text, len) == 0, "%s: decode(encode('%s')) differs", file,
                  text);
    free(back);
    free(want);
    free(ids);
    return ok;
}

static void check_decode(const peso_tok *t, const char *file, const cJSON *c)
{
    const char *want = cJSON_GetStringValue(field(c, "text"));
    cr_assert_not_null(want);
    int skip = cJSON_IsTrue(field(c, "skip_special"));
    size_t n;
    int32_t *ids = ids_of(field(c, "ids"), &n);
    char *text, list[4096];
    size_t len;
    peso_err err;
    cr_assert_eq(peso_tok_decode(t, ids, n, skip, &text, &len, &err), 0, "%s", err.msg);
    fmt_ids(list, sizeof list, ids, n);
    cr_expect(len == strlen(want) && memcmp(text, want, len) == 0,
              "%s: decode([%s], skip=%d) = '%s', expected '%s'", file, list, skip, text, want);
    free(text);
    free(ids);
}

Test(tokenizer, matches_hf_tokenizers_on_every_fixture_case)
{
    cJSON *root = read_json(FIX "tok_cases.json");
    size_t checked = 0, bad = 0;
    const cJSON *set, *file, *c;
    cJSON_ArrayForEach(set, field(root, "sets"))
    {
        int roundtrip = cJSON_IsTrue(field(set, "roundtrip"));
        cJSON_ArrayForEach(file, field(set, "files"))
        {
            const char *name = cJSON_GetStringValue(file);
            cr_assert_not_null(name);
            peso_tok *t = load(name);
            cJSON_ArrayForEach(c, field(set, "encode"))
            {
                bad += !check_encode(t, name, c, roundtrip);
                checked++;
            }
            cJSON_ArrayForEach(c, field(set, "decode"))
            {
                check_decode(t, name, c);
            }
            peso_tok_free(t);
        }
    }
    cJSON_Delete(root);
    cr_assert_gt(checked, 900, "fixture has %zu encode cases", checked);
    cr_assert_eq(bad, 0, "%zu of %zu encodings differ from tokenizers", bad, checked);
}

static void encode_expect(const peso_tok *t, const char *text, const int32_t *want, size_t nwant)
{
    int32_t *ids;
    size_t n;
    peso_err err;
    cr_assert_eq(peso_tok_encode(t, text, strlen(text), &ids, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, nwant, "'%s': %zu ids, expected %zu", text, n, nwant);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(ids[i], want[i], "'%s': id %zu is %d, expected %d", text, i, ids[i], want[i]);
    free(ids);
}

Test(tokenizer, token_lookup_both_ways)
{
    peso_tok *t = load("tok_ignore_on.json");
    /* tok_ignore_on: 256 byte characters in code point order, then bc, ab,
     * abc, Ġa, Ġab; 'a' is the 65th character (!=33 is first) */
    cr_assert_eq(peso_tok_vocab_size(t), 261);
    cr_assert_eq(peso_tok_id(t, "abc"), 258);
    cr_assert_eq(peso_tok_id(t, "Ġab"), 260);
    cr_assert_eq(peso_tok_id(t, "a"), 'a' - '!');
    cr_assert_eq(peso_tok_id(t, "nope"), -1);
    cr_assert_str_eq(peso_tok_token(t, 257), "ab");
    cr_assert_null(peso_tok_token(t, 261));
    cr_assert_null(peso_tok_token(t, -1));
    peso_tok_free(t);
}

Test(tokenizer, ignore_merges_takes_whole_words_from_the_vocab)
{
    /* merges b+c (rank 0) before a+b (rank 1): plain BPE splits "abc" as
     * [a, bc]; with ignore_merges the vocabulary word "abc" wins */
    peso_tok *on = load("tok_ignore_on.json"), *off = load("tok_ignore_off.json");
    int32_t a = 'a' - '!';
    encode_expect(on, "abc", (int32_t[]){258}, 1);
    encode_expect(off, "abc", (int32_t[]){a, 256}, 2);
    encode_expect(on, "bcab", (int32_t[]){256, 257}, 2);
    peso_tok_free(on);
    peso_tok_free(off);
}

Test(tokenizer, added_special_token_gets_next_id_and_survives_save)
{
    peso_tok *t = load("tok_llama3.json");
    int32_t size = peso_tok_vocab_size(t), id, again, old;
    peso_err err;
    cr_assert_eq(peso_tok_add_special(t, "<e_0>", &id, &err), 0, "%s", err.msg);
    cr_assert_eq(id, size);
    cr_assert_eq(peso_tok_vocab_size(t), size + 1);
    cr_assert_eq(peso_tok_add_special(t, "<e_0>", &again, &err), 0, "%s", err.msg);
    cr_assert_eq(again, id);
    /* an existing added token keeps its id */
    int32_t bot = peso_tok_id(t, "<|begin_of_text|>");
    cr_assert_geq(bot, 0);
    cr_assert_eq(peso_tok_add_special(t, "<|begin_of_text|>", &old, &err), 0, "%s", err.msg);
    cr_assert_eq(old, bot);
    int32_t a0 = peso_tok_id(t, "<a_0>");
    encode_expect(t, "<e_0><a_0><e_0>", (int32_t[]){id, a0, id}, 3);

    char dir[] = "/tmp/peso_tok_XXXXXX", path[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    cr_assert_eq(peso_tok_save(t, path, &err), 0, "%s", err.msg);
    peso_tok *u;
    cr_assert_eq(peso_tok_load(&u, path, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_tok_vocab_size(u), size + 1);
    encode_expect(u, "<e_0><a_0><e_0>", (int32_t[]){id, a0, id}, 3);
    char *text;
    size_t len;
    cr_assert_eq(peso_tok_decode(u, (int32_t[]){a0, id}, 2, 1, &text, &len, &err), 0);
    cr_assert_str_eq(text, "", "special tokens are skipped");
    free(text);
    peso_tok_free(u);
    peso_tok_free(t);
    unlink(path);
    rmdir(dir);
}

Test(tokenizer, build_small_learns_hand_computed_merges)
{
    /* words "aaab" and " aaab": (a,a) occurs 4 times -> "aa" = 256; then
     * (aa,a) and (a,b) both 2, the tie goes to the smaller ids (97,98) ->
     * "ab" = 257; then (aa,ab) twice -> "aaab" = 258; ( ,aaab) once: stop. */
    const char *texts[] = {"aaab aaab"};
    peso_tok *t;
    peso_err err;
    cr_assert_eq(peso_tok_build_small(&t, texts, 1, 100, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_tok_vocab_size(t), 259);
    cr_assert_str_eq(peso_tok_token(t, 256), "aa");
    cr_assert_str_eq(peso_tok_token(t, 257), "ab");
    cr_assert_str_eq(peso_tok_token(t, 258), "aaab");
    cr_assert_str_eq(peso_tok_token(t, ' '), "Ġ");
    cr_assert_str_eq(peso_tok_token(t, 0), "Ā");
    encode_expect(t, "aaab", (int32_t[]){258}, 1);
    /* " aaab" is not a word of the vocabulary: merges a+a, a+b, aa+ab */
    encode_expect(t, " aaab", (int32_t[]){' ', 258}, 2);
    encode_expect(t, "aab", (int32_t[]){256, 'b'}, 2);
    encode_expect(t, "\xc3\xa9", (int32_t[]){0xc3, 0xa9}, 2);
    peso_tok_free(t);

    cr_assert_eq(peso_tok_build_small(&t, texts, 1, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_tok_vocab_size(t), 257, "n_merges caps the merges");
    peso_tok_free(t);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* Loads a tokenizer.json made from the minimal valid one with `from`
 * replaced by `to`, expecting failure with a message containing want. */
static void expect_load_error(const char *from, const char *to, const char *want)
{
    static const char base[] = "{\"added_tokens\": [{\"id\": 3, \"content\": \"<s>\", \"special\": true,"
                               " \"normalized\": false}],"
                               " \"normalizer\": null,"
                               " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},"
                               " \"decoder\": {\"type\": \"ByteLevel\"},"
                               " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2},"
                               " \"merges\": [\"a b\"]}}";
    char text[2048], dir[] = "/tmp/peso_tok_XXXXXX", path[256];
    const char *at = strstr(base, from);
    cr_assert_not_null(at, "'%s' not in the base file", from);
    snprintf(text, sizeof text, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_file(path, text);
    peso_tok *t;
    peso_err err;
    int rc = peso_tok_load(&t, path, &err);
    if (!want) {
        cr_assert_eq(rc, 0, "%s", err.msg);
        peso_tok_free(t);
    } else {
        cr_assert_eq(rc, -1, "loaded despite %s", to);
        cr_assert(strstr(err.msg, path) && strstr(err.msg, want), "message: %s", err.msg);
    }
    unlink(path);
    rmdir(dir);
}

Test(tokenizer, minimal_file_loads)
{
    expect_load_error("\"a b\"", "[\"a\", \"b\"]", NULL);
}

Test(tokenizer, refuses_what_it_does_not_implement)
{
    expect_load_error("\"type\": \"BPE\"", "\"type\": \"WordPiece\"", "model.type");
    expect_load_error("\"normalizer\": null", "\"normalizer\": {\"type\": \"NFC\"}", "normalizer");
    expect_load_error("\"a b\"", "\"a c\"", "model.merges[0]");
    expect_load_error("\"a b\"", "\"ab\"", "model.merges[0]");
    expect_load_error("\"normalized\": false", "\"normalized\": false, \"lstrip\": true", "added_tokens[0]");
    expect_load_error("{\"type\": \"ByteLevel\", \"add_prefix_space\": false}", "{\"type\": \"Whitespace\"}",
                      "pre_tokenizer");
    expect_load_error("{\"type\": \"ByteLevel\", \"add_prefix_space\": false}",
                      "{\"type\": \"Split\", \"pattern\": {\"Regex\": \" \"},"
                      " \"behavior\": \"Removed\"}",
                      "Isolated");
    expect_load_error("{\"type\": \"ByteLevel\", \"add_prefix_space\": false}",
                      "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\","
                      " \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"},"
                      " {\"type\": \"ByteLevel\"}]}",
                      "regex does not compile");
    expect_load_error("\"decoder\": {\"type\": \"ByteLevel\"}", "\"decoder\": {\"type\": \"WordPiece\"}",
                      "decoder");
    expect_load_error("\"b\": 1,", "\"b\": 0,", "id 0");
}

Test(tokenizer, rejects_invalid_utf8_and_unknown_ids)
{
    peso_tok *t = load("tok_llama3.json");
    int32_t *ids;
    size_t n;
    peso_err err;
    cr_assert_eq(peso_tok_encode(t, "ok\xc3(", 4, &ids, &n, &err), -1);
    cr_assert(strstr(err.msg, "byte 2"), "message: %s", err.msg);
    cr_assert_eq(peso_tok_encode(t, "\xed\xa0\x80", 3, &ids, &n, &err), -1, "surrogate");
    char *text;
    size_t len;
    int32_t bad = peso_tok_vocab_size(t);
    cr_assert_eq(peso_tok_decode(t, &bad, 1, 0, &text, &len, &err), -1);
    cr_assert(strstr(err.msg, "is not a token"), "message: %s", err.msg);
    peso_tok_free(t);
}

Test(tokenizer, byte_without_vocab_token_is_an_error)
{
    static const char file[] = "{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"use_regex\": false},"
                               " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}";
    char dir[] = "/tmp/peso_tok_XXXXXX", path[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_file(path, file);
    peso_tok *t;
    peso_err err;
    cr_assert_eq(peso_tok_load(&t, path, &err), 0, "%s", err.msg);
    encode_expect(t, "aa", (int32_t[]){0, 0}, 2);
    int32_t *ids;
    size_t n;
    cr_assert_eq(peso_tok_encode(t, "ab", 2, &ids, &n, &err), -1);
    cr_assert(strstr(err.msg, "byte 0x62"), "message: %s", err.msg);
    peso_tok_free(t);
    unlink(path);
    rmdir(dir);
}

/* Builds a small tokenizer from prompt-like text, adds code tokens, saves
 * it and records the C encodings of probe texts in cases.json. Reloading
 * must give the same ids; test_tokenizer_py.sh runs this test with
 * PESO_TOK_EXPORT_DIR set and checks the files with tokenizers. */
static const char *const probes[] = {
    "Below is an instruction that describes a task.\n\n### Instruction:\n",
    "items <a_0><b_1>, <a_2><b_0> next?\n\n### Response:<a_1><b_1>",
    "unseen words, numbers 12345 and café 日本 😀",
    "  spaces\tand\r\nnewlines\n\n",
    "",
};

/* Written with plain cJSON, not the writer under test. */
static void write_cases(const char *path, const peso_tok *t)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        int32_t *ids;
        size_t n;
        peso_err err;
        cr_assert_eq(peso_tok_encode(t, probes[i], strlen(probes[i]), &ids, &n, &err), 0);
        cJSON *c = cJSON_CreateObject();
        cr_assert_not_null(cJSON_AddStringToObject(c, "text", probes[i]));
        cJSON *jids = cJSON_AddArrayToObject(c, "ids");
        cr_assert_not_null(jids);
        for (size_t k = 0; k < n; k++)
            cr_assert(cJSON_AddItemToArray(jids, cJSON_CreateNumber(ids[k])));
        cr_assert(cJSON_AddItemToArray(arr, c));
        free(ids);
    }
    char *text = cJSON_PrintUnformatted(arr);
    cr_assert_not_null(text);
    write_file(path, text);
    cJSON_free(text);
    cJSON_Delete(arr);
}

Test(tokenizer, built_and_extended_tokenizers_save_for_python)
{
    const char *export = getenv("PESO_TOK_EXPORT_DIR");
    char tmp[] = "/tmp/peso_tok_XXXXXX", dir[512], small[600], ext[600], cases[600];
    if (export)
        snprintf(dir, sizeof dir, "%s", export);
    else
        snprintf(dir, sizeof dir, "%s", mkdtemp(tmp));
    snprintf(small, sizeof small, "%s/small_tokenizer.json", dir);
    snprintf(ext, sizeof ext, "%s/extended_tokenizer.json", dir);
    snprintf(cases, sizeof cases, "%s/cases.json", dir);

    const char *texts[] = {probes[0], probes[1], "what item would be recommended next",
                           "the user has interacted with these items"};
    peso_tok *t;
    peso_err err;
    cr_assert_eq(peso_tok_build_small(&t, texts, 4, 60, &err), 0, "%s", err.msg);
    const char *codes[] = {"<a_0>", "<a_1>", "<a_2>", "<b_0>", "<b_1>"};
    for (int i = 0; i < 5; i++) {
        int32_t id;
        cr_assert_eq(peso_tok_add_special(t, codes[i], &id, &err), 0, "%s", err.msg);
    }
    cr_assert_eq(peso_tok_save(t, small, &err), 0, "%s", err.msg);
    write_cases(cases, t);

    peso_tok *u;
    cr_assert_eq(peso_tok_load(&u, small, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_tok_vocab_size(u), peso_tok_vocab_size(t));
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        int32_t *a, *b;
        size_t na, nb;
        cr_assert_eq(peso_tok_encode(t, probes[i], strlen(probes[i]), &a, &na, &err), 0);
        cr_assert_eq(peso_tok_encode(u, probes[i], strlen(probes[i]), &b, &nb, &err), 0);
        cr_assert(na == nb && memcmp(a, b, na * sizeof *a) == 0, "probe %zu differs", i);
        free(a);
        free(b);
    }
    peso_tok_free(u);
    peso_tok_free(t);

    t = load("tok_llama3.json");
    int32_t id;
    cr_assert_eq(peso_tok_add_special(t, "<e_7>", &id, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_tok_save(t, ext, &err), 0, "%s", err.msg);
    peso_tok_free(t);
    if (!export) {
        unlink(small);
        unlink(ext);
        unlink(cases);
        rmdir(dir);
    }
}

Test(tokenizer, split_on_a_literal_string_isolates_it)
{
    /* merge a+- exists, but Split on "-" (Isolated) makes "-" its own
     * piece, so "a-b" is [a, -, b] and never [a-, b] */
    static const char file[] =
        "{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
        "{\"type\": \"Split\", \"pattern\": {\"String\": \"-\"}, \"behavior\": \"Isolated\","
        " \"invert\": false}, {\"type\": \"ByteLevel\", \"use_regex\": false}]},"
        " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"-\": 1, \"b\": 2, \"a-\": 3},"
        " \"merges\": [\"a -\"]}}";
    char dir[] = "/tmp/peso_tok_XXXXXX", path[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_file(path, file);
    peso_tok *t;
    peso_err err;
    cr_assert_eq(peso_tok_load(&t, path, &err), 0, "%s", err.msg);
    encode_expect(t, "a-b", (int32_t[]){0, 1, 2}, 3);
    encode_expect(t, "ab-", (int32_t[]){0, 2, 1}, 3);
    peso_tok_free(t);
    unlink(path);
    rmdir(dir);
}

Test(tokenizer, llama3_pattern_is_the_one_tokenizers_writes)
{
    cJSON *root = read_json(FIX "tok_llama3.json");
    const cJSON *list = field(field(root, "pre_tokenizer"), "pretokenizers");
    const cJSON *re = field(field(cJSON_GetArrayItem(list, 0), "pattern"), "Regex");
    cr_assert_str_eq(peso_tok_llama3_pattern, cJSON_GetStringValue(re));
    cJSON_Delete(root);
}

Test(tokenizer, save_writes_the_loaded_file_back_with_the_added_token)
{
    /* a null added_tokens is replaced where it stands, numbers keep their
     * spelling (0.0), keys keep their order */
    static const char file[] = "{\"version\": \"1.0\", \"added_tokens\": null, \"normalizer\": null,"
                               " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false,"
                               " \"use_regex\": false}, \"decoder\": {\"type\": \"ByteLevel\"},"
                               " \"model\": {\"type\": \"BPE\", \"dropout\": 0.0,"
                               " \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}}";
    static const char want[] = "{\n"
                               "  \"version\": \"1.0\",\n"
                               "  \"added_tokens\": [\n"
                               "    {\n"
                               "      \"id\": 3,\n"
                               "      \"content\": \"<e_0>\",\n"
                               "      \"single_word\": false,\n"
                               "      \"lstrip\": false,\n"
                               "      \"rstrip\": false,\n"
                               "      \"normalized\": false,\n"
                               "      \"special\": true\n"
                               "    }\n"
                               "  ],\n"
                               "  \"normalizer\": null,\n"
                               "  \"pre_tokenizer\": {\n"
                               "    \"type\": \"ByteLevel\",\n"
                               "    \"add_prefix_space\": false,\n"
                               "    \"use_regex\": false\n"
                               "  },\n"
                               "  \"decoder\": {\n"
                               "    \"type\": \"ByteLevel\"\n"
                               "  },\n"
                               "  \"model\": {\n"
                               "    \"type\": \"BPE\",\n"
                               "    \"dropout\": 0.0,\n"
                               "    \"vocab\": {\n"
                               "      \"a\": 0,\n"
                               "      \"b\": 1,\n"
                               "      \"ab\": 2\n"
                               "    },\n"
                               "    \"merges\": [\n"
                               "      \"a b\"\n"
                               "    ]\n"
                               "  }\n"
                               "}";
    char dir[] = "/tmp/peso_tok_XXXXXX", in[256], out[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(in, sizeof in, "%s/in.json", dir);
    snprintf(out, sizeof out, "%s/out.json", dir);
    write_file(in, file);
    peso_tok *t;
    peso_err err;
    int32_t id;
    cr_assert_eq(peso_tok_load(&t, in, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_tok_add_special(t, "<e_0>", &id, &err), 0, "%s", err.msg);
    cr_assert_eq(id, 3);
    cr_assert_eq(peso_tok_save(t, out, &err), 0, "%s", err.msg);
    peso_tok_free(t);
    char got[2048];
    FILE *f = fopen(out, "rb");
    cr_assert_not_null(f);
    size_t n = fread(got, 1, sizeof got - 1, f);
    fclose(f);
    got[n] = '\0';
    cr_expect_str_eq(got, want);
    unlink(in);
    unlink(out);
    rmdir(dir);
}

Test(tokenizer, vocab_given_twice_keeps_the_last_id)
{
    /* as Python's json and tokenizers' serde map do: "b" is 1, id 4 is no
     * token */
    expect_load_error("\"b\": 1,", "\"b\": 4, \"b\": 1,", NULL);
    static const char file[] = "{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"use_regex\": false},"
                               " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 4, \"b\": 1},"
                               " \"merges\": []}}";
    char dir[] = "/tmp/peso_tok_XXXXXX", path[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_file(path, file);
    peso_tok *t;
    peso_err err;
    cr_assert_eq(peso_tok_load(&t, path, &err), 0, "%s", err.msg);
    cr_expect_eq(peso_tok_id(t, "b"), 1);
    cr_expect_eq(peso_tok_vocab_size(t), 2);
    encode_expect(t, "ab", (int32_t[]){0, 1}, 2);
    peso_tok_free(t);
    unlink(path);
    rmdir(dir);
}
