/* Collision level, .index.json import / export, the real LETTER index. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "semid/semid.h"
#include "semid_test_util.h"
#include "skip.h"

#define FIX PESO_FIXTURES "/semid/"

Test(collisions, numbered_in_item_order)
{
    int32_t c[] = {1, 2, 3, -1, 1, 2, 3, -1, 4, 5, 6, -1, 1, 2, 3, -1, 1, 2, 4, -1};
    peso_err err;
    cr_assert_eq(peso_semid_assign_collisions(c, 5, 3, 256, &err), 0, "%s", err.msg);
    const int32_t want[] = {0, 1, 0, 2, 0};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(c[i * 4 + 3], want[i], "item %d", i);
    /* learned codes untouched */
    cr_assert_eq(c[4], 1);
    cr_assert_eq(c[18], 4);
}

Test(collisions, overflow_is_an_error)
{
    int32_t c[] = {1, 2, 3, 0, 1, 2, 3, 0, 4, 5, 6, 0, 1, 2, 3, 0};
    peso_err err = {{0}};
    cr_assert_eq(peso_semid_assign_collisions(c, 4, 3, 2, &err), -1);
    cr_assert(strstr(err.msg, "more than 2 items share the learned codes (1, 2, 3)"), "%s", err.msg);
    cr_assert(strstr(err.msg, "dataset item 3"), "%s", err.msg);
    /* exactly at the limit is fine */
    int32_t ok[] = {1, 2, 3, 0, 1, 2, 3, 0, 4, 5, 6, 0};
    cr_assert_eq(peso_semid_assign_collisions(ok, 3, 3, 2, &err), 0);
    cr_assert_eq(ok[7], 1);
}

Test(collisions, one_learned_level_many_items)
{
    enum { N = 1000 };
    int32_t *c = malloc(N * 2 * sizeof *c);
    for (int i = 0; i < N; i++)
        c[i * 2] = i % 7;
    peso_err err;
    cr_assert_eq(peso_semid_assign_collisions(c, N, 1, 1000, &err), 0, "%s", err.msg);
    for (int i = 0; i < N; i++)
        cr_assert_eq(c[i * 2 + 1], i / 7, "item %d", i);
    free(c);
}

static const char *small_ids[] = {"12", "10", "11", "13"};

static int import_fix(peso_semid *s, const char *name, const char *const *ids, size_t n, peso_err *err)
{
    peso_semid_items it;
    test_items(&it, n, ids, NULL, NULL);
    char path[512];
    snprintf(path, sizeof path, FIX "%s", name);
    int rc = peso_semid_import(s, path, &it, err);
    test_items_free(&it);
    return rc;
}

Test(import, small_index)
{
    peso_semid s;
    peso_err err;
    cr_assert_eq(import_fix(&s, "small.index.json", small_ids, 4, &err), 0, "%s", err.msg);
    cr_assert_eq(s.n_items, 4);
    cr_assert_eq(s.n_levels, 4);
    cr_assert_eq(s.imported, 1);
    const int32_t want[] = {200, 15, 2, 0, 3, 0, 7, 0, 3, 0, 7, 1, 3, 0, 7, 0};
    for (int i = 0; i < 16; i++)
        cr_assert_eq(s.codes[i], want[i], "code %d", i);
    const int size[] = {201, 16, 8, 2};
    for (int l = 0; l < 4; l++)
        cr_assert_eq(s.level_size[l], size[l], "level %d", l);
    cr_assert_eq(s.distinct_tuples, 3); /* "10" and "13" share (3, 0, 7, 0) */
    cr_assert_float_eq(s.collision_share, 0.25, 1e-12);
    peso_semid_free(&s);
}

static void expect_import_error(const char *name, const char *const *ids, size_t n, const char *want1,
                                const char *want2)
{
    peso_semid s;
    peso_err err = {{0}};
    cr_assert_eq(import_fix(&s, name, ids, n, &err), -1, "%s imported", name);
    cr_assert(strstr(err.msg, name), "'%s' lacks the file name", err.msg);
    cr_assert(strstr(err.msg, want1), "'%s' lacks '%s'", err.msg, want1);
    if (want2)
        cr_assert(strstr(err.msg, want2), "'%s' lacks '%s'", err.msg, want2);
    cr_assert_null(s.codes);
}

Test(import, errors_name_the_item)
{
    const char *ids5[] = {"12", "10", "11", "13", "14"};
    expect_import_error("small.index.json", ids5, 5, "item '14' has no entry", NULL);
    const char *ids3[] = {"10", "11", "12"};
    expect_import_error("bad_letter.index.json", ids3, 3, "item '11'", "<c_0>");
    expect_import_error("bad_letter.index.json", ids3, 3, "expected \"<b_N>\"", NULL);
    expect_import_error("bad_number.index.json", ids3, 3, "item '11'", "<b_10000>");
    expect_import_error("bad_type.index.json", ids3, 3, "item '11': token 2 is 7", NULL);
    expect_import_error("short.index.json", ids3, 3, "item '11' has 1 tokens, expected 2", NULL);
    /* the file ends after the newline that ends line 2 */
    expect_import_error("truncated.index.json", ids3, 3, "cannot read semantic ID index",
                        "line 3, column 1: unexpected end of input");
    expect_import_error("array.index.json", ids3, 3, "expected a JSON object", NULL);
    expect_import_error("absent.index.json", ids3, 3, "cannot read semantic ID index",
                        "No such file or directory");
}

Test(import, token_syntax)
{
    char dir[64], path[128];
    cr_assert_eq(test_tmpdir(dir), 0);
    snprintf(path, sizeof path, "%s/t.index.json", dir);
    const char *bad[] = {"<a_>", "<a_1>x", "a_1", "<a_1", "<a1>", "<a_-1>", "<b_1>", "<a_ 1>"};
    const char *ids[] = {"1"};
    peso_semid_items it;
    test_items(&it, 1, ids, NULL, NULL);
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        FILE *f = fopen(path, "w");
        fprintf(f, "{\"1\": [\"%s\"]}", bad[k]);
        fclose(f);
        peso_semid s;
        peso_err err = {{0}};
        cr_assert_eq(peso_semid_import(&s, path, &it, &err), -1, "%s accepted", bad[k]);
        cr_assert(strstr(err.msg, bad[k]), "'%s' lacks '%s'", err.msg, bad[k]);
    }
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"1\": [\"<a_9999>\", \"<b_007>\"]}  \n");
    fclose(f);
    peso_semid s;
    peso_err err;
    cr_assert_eq(peso_semid_import(&s, path, &it, &err), 0, "%s", err.msg);
    cr_assert_eq(s.codes[0], 9999);
    cr_assert_eq(s.codes[1], 7);
    peso_semid_free(&s);
    f = fopen(path, "w");
    fprintf(f, "{\"1\": [\"<a_1>\"]} {}");
    fclose(f);
    cr_assert_eq(peso_semid_import(&s, path, &it, &err), -1);
    /* the second '{' is byte 18 */
    cr_assert(strstr(err.msg, "line 1, column 18: unexpected '{'"), "%s", err.msg);
    test_items_free(&it);
    remove(path);
    remove(dir);
}

static int import_text(const char *text, const char *const *ids, size_t n, peso_semid *s, peso_err *err)
{
    char dir[64], path[128];
    cr_assert_eq(test_tmpdir(dir), 0);
    snprintf(path, sizeof path, "%s/t.index.json", dir);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    peso_semid_items it;
    test_items(&it, n, ids, NULL, NULL);
    int rc = peso_semid_import(s, path, &it, err);
    test_items_free(&it);
    remove(path);
    remove(dir);
    return rc;
}

/* Entries are matched to items by key, whatever their order in the file;
 * a key written twice keeps its last value; keys of no dataset item are
 * ignored; errors name the first bad item in dataset order. */
Test(import, entries_by_key)
{
    const char *ids[] = {"2", "1"};
    peso_semid s;
    peso_err err = {{0}};
    cr_assert_eq(import_text("{\"9\": 5, \"1\": [\"<a_4>\", \"<b_1>\"], \"2\": [\"<a_3>\", \"<b_0>\"], "
                             "\"1\": [\"<a_6>\", \"<b_2>\"]}",
                             ids, 2, &s, &err),
                 0, "%s", err.msg);
    const int32_t want[] = {3, 0, 6, 2};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(s.codes[i], want[i], "code %d", i);
    cr_assert_eq(s.level_size[0], 7);
    cr_assert_eq(s.level_size[1], 3);
    peso_semid_free(&s);
    cr_assert_eq(import_text("{\"1\": [\"<a_1>\"], \"2\": null}", ids, 2, &s, &err), -1);
    cr_assert(strstr(err.msg, "item '2': expected an array of tokens"), "%s", err.msg);
    cr_assert_null(s.codes);
    cr_assert_eq(import_text("{\"1\": [7], \"2\": [\"<a_1>\", \"<b_1>\"]}", ids, 2, &s, &err), -1);
    cr_assert(strstr(err.msg, "item '1' has 1 tokens, expected 2 like the other items"), "%s", err.msg);
    cr_assert_eq(import_text("{\"1\": [\"<a_1>\"], \"2\": [{\"x\": [1.50]}]}", ids, 2, &s, &err), -1);
    cr_assert(strstr(err.msg, "item '2': token 1 is {\"x\":[1.50]}, expected \"<a_N>\""), "%s", err.msg);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = '\0';
    fclose(f);
    return b;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

Test(export, writes_the_letter_format_and_reads_back)
{
    const char *ids[] = {"B00\"q", "A\\b", "7"};
    peso_semid_items it;
    test_items(&it, 3, ids, NULL, NULL);
    int32_t codes[] = {5, 17, 0, 5, 17, 1, 255, 0, 0};
    peso_semid s = {.n_items = 3, .n_levels = 3, .codes = codes};
    char dir[64], path[128];
    cr_assert_eq(test_tmpdir(dir), 0);
    snprintf(path, sizeof path, "%s/out.index.json", dir);
    peso_err err;
    cr_assert_eq(peso_semid_export(&s, path, &it, &err), 0, "%s", err.msg);
    cr_assert_eq(count_entries(dir), 1, "a temporary file was left behind");
    char *text = slurp(path);
    cr_assert_str_eq(text, "{\"B00\\\"q\": [\"<a_5>\", \"<b_17>\", \"<c_0>\"], "
                           "\"A\\\\b\": [\"<a_5>\", \"<b_17>\", \"<c_1>\"], "
                           "\"7\": [\"<a_255>\", \"<b_0>\", \"<c_0>\"]}");
    free(text);
    peso_semid back;
    cr_assert_eq(peso_semid_import(&back, path, &it, &err), 0, "%s", err.msg);
    cr_assert_eq(back.n_levels, 3);
    cr_assert(memcmp(back.codes, codes, sizeof codes) == 0);
    peso_semid_free(&back);
    /* exporting for another dataset size is refused */
    s.n_items = 2;
    cr_assert_eq(peso_semid_export(&s, path, &it, &err), -1);
    cr_assert(strstr(err.msg, "2 semantic IDs for a dataset of 3 items"), "%s", err.msg);
    test_items_free(&it);
    remove(path);
    remove(dir);
}

/* The real LETTER Instruments index: 9,922 items, 9,897 distinct 4-token
 * tuples (DESIGN data README); exporting it again gives the same bytes. */
Test(import, letter_instruments)
{
    const char *path = PESO_SHARED_DATA "/letter-instruments-2018/Instruments.index.json";
    FILE *f = fopen(path, "rb");
    if (!f)
        peso_test_missing("%s not present (shared data folder absent)", path);
    fclose(f);
    enum { N = 9922 };
    char **ids = malloc(N * sizeof *ids);
    for (int i = 0; i < N; i++) {
        ids[i] = malloc(8);
        snprintf(ids[i], 8, "%d", i);
    }
    peso_semid_items it;
    test_items(&it, N, (const char *const *)ids, NULL, NULL);
    peso_semid s;
    peso_err err;
    cr_assert_eq(peso_semid_import(&s, path, &it, &err), 0, "%s", err.msg);
    cr_assert_eq(s.n_items, N);
    cr_assert_eq(s.n_levels, 4);
    cr_assert_eq(s.distinct_tuples, 9897);
    for (int l = 0; l < 4; l++)
        cr_assert_eq(s.level_size[l], 256);
    /* item "0" is ["<a_128>", "<b_241>", "<c_146>", "<d_235>"] */
    cr_assert_eq(s.codes[0], 128);
    cr_assert_eq(s.codes[1], 241);
    cr_assert_eq(s.codes[2], 146);
    cr_assert_eq(s.codes[3], 235);
    /* share of items with a non-zero last code, counted with Python */
    cr_assert_float_eq(s.collision_share, 0.9881072364442652, 1e-12);
    char dir[64], out[128];
    cr_assert_eq(test_tmpdir(dir), 0);
    snprintf(out, sizeof out, "%s/again.index.json", dir);
    cr_assert_eq(peso_semid_export(&s, out, &it, &err), 0, "%s", err.msg);
    char *a = slurp(path), *b = slurp(out);
    cr_assert(strcmp(a, b) == 0, "the exported index differs from the original");
    free(a);
    free(b);
    remove(out);
    remove(dir);
    peso_semid_free(&s);
    test_items_free(&it);
    for (int i = 0; i < N; i++)
        free(ids[i]);
    free(ids);
}
