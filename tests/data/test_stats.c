/* stats.json and the Table-4-style table on a hand-filled split. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/split.h"
#include "data/stats.h"

/* Two blocks: D1 3 users x 7 items, 12 interactions; D2 2 users (1 new) x
 * 5 items (2 new), 10 interactions. */
static void fill(peso_split *s, peso_block b[2])
{
    memset(s, 0, sizeof *s);
    memset(b, 0, 2 * sizeof *b);
    b[0].k = 1;
    b[0].st = (peso_block_stats){3, 3, 7, 7, 12, 3, 4.0, 1.0 - 12.0 / 21.0};
    b[0].valid.n = b[0].test.n = 3;
    b[1].k = 2;
    b[1].st = (peso_block_stats){2, 1, 5, 2, 10, 4, 5.0, 1.0 - 10.0 / 10.0};
    b[1].valid.n = b[1].test.n = 2;
    s->n_blocks = 2;
    s->b = b;
    s->n_users = 4;
    s->n_items = 9;
    s->total_interactions = 22;
}

/* Read back with plain cJSON, not our writer's layer, so that the check is
 * independent of the writer. cJSON keeps numbers as doubles: an integer is
 * one without a fraction, the spelling of the fractions (4.0, not 4) is
 * checked on the text. */
static cJSON *member(const cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    cr_assert(v, "missing %s", k);
    return v;
}

static int64_t get_int(const cJSON *o, const char *k)
{
    cJSON *v = member(o, k);
    cr_assert(cJSON_IsNumber(v) && v->valuedouble == (double)(int64_t)v->valuedouble, "%s is not an integer",
              k);
    return (int64_t)v->valuedouble;
}

static double get_double(const cJSON *o, const char *k)
{
    cJSON *v = member(o, k);
    cr_assert(cJSON_IsNumber(v), "%s is not a number", k);
    return v->valuedouble;
}

static void check_keys(const cJSON *o, const char *const *keys, int n)
{
    cr_expect_eq(cJSON_GetArraySize(o), n);
    for (int i = 0; i < n; i++)
        cr_expect(cJSON_GetObjectItemCaseSensitive(o, keys[i]), "missing %s", keys[i]);
}

static void check_json(const char *text)
{
    static const char *const bkeys[] = {"block",       "users",        "new_users",   "items",
                                        "new_items",   "interactions", "avg_seq_len", "sparsity",
                                        "train_pairs", "valid_pairs",  "test_pairs"};
    static const char *const tkeys[] = {"users", "items", "interactions"};
    static const char *const rkeys[] = {"blocks", "total"};
    cJSON *root = cJSON_Parse(text);
    cr_assert(cJSON_IsObject(root), "not a JSON object: %s", text);
    check_keys(root, rkeys, 2);
    cJSON *blocks = member(root, "blocks"), *total = member(root, "total");
    cr_assert(cJSON_IsArray(blocks));
    cr_assert_eq(cJSON_GetArraySize(blocks), 2);
    cJSON *b1 = cJSON_GetArrayItem(blocks, 0), *b2 = cJSON_GetArrayItem(blocks, 1);
    check_keys(b1, bkeys, 11);
    check_keys(b2, bkeys, 11);
    check_keys(total, tkeys, 3);
    cr_expect_eq(get_int(b1, "block"), 1);
    cr_expect_eq(get_int(b1, "users"), 3);
    cr_expect_eq(get_int(b1, "new_users"), 3);
    cr_expect_eq(get_int(b1, "items"), 7);
    cr_expect_eq(get_int(b1, "interactions"), 12);
    cr_expect_eq(get_double(b1, "avg_seq_len"), 4.0);
    cr_expect_eq(get_double(b1, "sparsity"), 1.0 - 12.0 / 21.0);
    cr_expect_eq(get_int(b1, "train_pairs"), 3);
    cr_expect_eq(get_int(b1, "valid_pairs"), 3);
    cr_expect_eq(get_int(b1, "test_pairs"), 3);
    cr_expect_eq(get_int(b2, "block"), 2);
    cr_expect_eq(get_int(b2, "new_users"), 1);
    cr_expect_eq(get_int(b2, "new_items"), 2);
    cr_expect_eq(get_double(b2, "sparsity"), 0.0);
    cr_expect_eq(get_int(b2, "valid_pairs"), 2);
    cr_expect_eq(get_int(total, "users"), 4);
    cr_expect_eq(get_int(total, "items"), 9);
    cr_expect_eq(get_int(total, "interactions"), 22);
    /* the floats are written as floats, as Python writes them */
    cr_expect(strstr(text, "\"avg_seq_len\": 4.0,"), "%s", text);
    cr_expect(strstr(text, "\"avg_seq_len\": 5.0,"), "%s", text);
    cr_expect(strstr(text, "\"sparsity\": 0.0,"), "%s", text);
    cJSON_Delete(root);
}

Test(stats, json_schema_and_values)
{
    peso_split s;
    peso_block b[2];
    fill(&s, b);
    char *t = peso_stats_json(&s);
    check_json(t);
    /* shortest round-trip digits, as Python's json writes them */
    cr_expect(strstr(t, "0.4285714285714286") != NULL, "%s", t);
    cr_expect(strstr(t, "4.0") != NULL, "%s", t);
    cr_expect_eq(t[strlen(t) - 1], '\n');
    free(t);
}

Test(stats, write_file)
{
    peso_split s;
    peso_block b[2];
    fill(&s, b);
    char dir[] = "/tmp/peso-stats-XXXXXX", path[64];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/stats.json", dir);
    peso_err e;
    cr_assert_eq(peso_stats_write(dir, &s, &e), 0, "%s", e.msg);
    FILE *f = fopen(path, "r");
    cr_assert(f);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    check_json(buf);
    unlink(path);
    rmdir(dir);
    cr_expect_eq(peso_stats_write("/nonexistent-peso-dir", &s, &e), -1);
    cr_expect(strstr(e.msg, "/nonexistent-peso-dir/stats.json") != NULL, "%s", e.msg);
}

Test(stats, table)
{
    peso_split s;
    peso_block b[2];
    fill(&s, b);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    peso_stats_print(f, &s);
    fclose(f);
    char *l1 = strtok(buf, "\n"), *l2 = strtok(NULL, "\n"), *l3 = strtok(NULL, "\n"),
         *l4 = strtok(NULL, "\n");
    cr_assert(l4 && !strtok(NULL, "\n"), "header + 2 blocks + total");
    const char *cols[] = {"Users",        "New Users",   "Items",    "New Items",
                          "Interactions", "Avg Seq Len", "Sparsity", "Train pairs"};
    for (int i = 0; i < 8; i++)
        cr_expect(strstr(l1, cols[i]) != NULL, "header lacks %s: %s", cols[i], l1);
    char name[16];
    long long u, nu, it, ni, in, tp;
    double avg, spars;
    cr_assert_eq(sscanf(l2, "%15s %lld %lld %lld %lld %lld %lf %lf %lld", name, &u, &nu, &it, &ni, &in, &avg,
                        &spars, &tp),
                 9, "%s", l2);
    cr_expect_str_eq(name, "D1");
    cr_expect(u == 3 && nu == 3 && it == 7 && ni == 7 && in == 12 && tp == 3, "%s", l2);
    cr_expect_float_eq(avg, 4.0, 1e-12);
    cr_expect_float_eq(spars, 0.4286, 1e-12);
    cr_expect(strncmp(l3, "D2 ", 3) == 0, "%s", l3);
    char na1[8], na2[8], na3[8], na4[8];
    cr_assert_eq(
        sscanf(l4, "%15s %lld %7s %lld %7s %lld %7s %7s %lld", name, &u, na1, &it, na2, &in, na3, na4, &tp),
        9, "%s", l4);
    cr_expect_str_eq(name, "D1:2");
    cr_expect(u == 4 && it == 9 && in == 22 && tp == 7, "%s", l4);
    cr_expect(!strcmp(na1, "NA") && !strcmp(na2, "NA") && !strcmp(na3, "NA") && !strcmp(na4, "NA"), "%s", l4);
    free(buf);
}

Test(stats, text_is_what_python_json_dumps_writes)
{
    /* json.dumps(stats, indent=2) of the same numbers, as Python prints
     * it: 40 / 2 is 20.0 and 1 - 40 / 200000 is 0.9998 */
    static const char want[] = "{\n"
                               "  \"blocks\": [\n"
                               "    {\n"
                               "      \"block\": 1,\n"
                               "      \"users\": 2,\n"
                               "      \"new_users\": 2,\n"
                               "      \"items\": 100000,\n"
                               "      \"new_items\": 100000,\n"
                               "      \"interactions\": 40,\n"
                               "      \"avg_seq_len\": 20.0,\n"
                               "      \"sparsity\": 0.9998,\n"
                               "      \"train_pairs\": 36,\n"
                               "      \"valid_pairs\": 2,\n"
                               "      \"test_pairs\": 2\n"
                               "    }\n"
                               "  ],\n"
                               "  \"total\": {\n"
                               "    \"users\": 2,\n"
                               "    \"items\": 100000,\n"
                               "    \"interactions\": 40\n"
                               "  }\n"
                               "}\n";
    peso_split s;
    peso_block b;
    memset(&s, 0, sizeof s);
    memset(&b, 0, sizeof b);
    b.k = 1;
    b.st = (peso_block_stats){2, 2, 100000, 100000, 40, 36, 40.0 / 2.0, 1.0 - 40.0 / 200000.0};
    b.valid.n = b.test.n = 2;
    s.n_blocks = 1;
    s.b = &b;
    s.n_users = 2;
    s.n_items = 100000;
    s.total_interactions = 40;
    char *t = peso_stats_json(&s);
    cr_expect_str_eq(t, want);
    free(t);
}
