/* The independent check: the C loader + split on the real Amazon 2014
 * Musical Instruments file against tools/reference/protocol.py (plain
 * Python written from the protocol text): every statistic and every pair,
 * in order, for three settings. Skipped when the shared data is absent
 * (tests/skip.h). */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "data/raw.h"
#include "data/split.h"
#include "data/stats.h"
#include "skip.h"

#define REVIEWS PESO_SHARED_DATA "/amazon-instruments-2014/reviews_Musical_Instruments_5.json.gz"
#define PYTHON "/usr/bin/python3"

typedef struct setting {
    const char *args; /* protocol.py options */
    int window, min_user, history_all;
    int64_t year_min, year_max;
} setting;

static void need_inputs(void)
{
    if (access(REVIEWS, R_OK) != 0)
        peso_test_missing("shared data absent (%s): the reference comparison needs it", REVIEWS);
    if (access(PYTHON, X_OK) != 0)
        peso_test_missing("%s absent: the Python reference cannot run", PYTHON);
}

static void run_reference(const setting *st, const char *stats, const char *pairs)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             PYTHON " " PESO_SOURCE_DIR "/tools/reference/protocol.py --format amazon2014 "
                    "--reviews " REVIEWS " %s --stats-out %s --pairs-out %s",
             st->args, stats, pairs);
    cr_assert_eq(system(cmd), 0, "reference failed: %s", cmd);
}

static void run_c(const setting *st, peso_raw *raw, peso_split *s)
{
    peso_conf c;
    peso_err e = {{0}};
    peso_conf_defaults(&c);
    snprintf(c.data.format, sizeof c.data.format, "amazon2014");
    snprintf(c.data.reviews, sizeof c.data.reviews, "%s", REVIEWS);
    c.split.window = st->window;
    c.split.min_user_interactions = st->min_user;
    snprintf(c.split.history, sizeof c.split.history, "%s", st->history_all ? "all" : "block");
    c.data.year_min = st->year_min;
    c.data.year_max = st->year_max;
    peso_raw_init(raw);
    cr_assert_eq(peso_load_amazon2014(raw, &c, &e), 0, "%s", e.msg);
    peso_split_opts o;
    peso_split_opts_from_conf(&o, &c);
    cr_assert_eq(peso_split_run(raw, &o, s, &e), 0, "%s", e.msg);
}

/* Same keys with equal values (numbers exactly: both sides write doubles
 * that read back to the computed value). Read with plain cJSON, not our
 * writer's layer, so the reader is independent of the writer; cJSON keeps
 * every number as a double, so how integers are spelled is left to the
 * comparison of the texts. */
static void same_json(const cJSON *a, const cJSON *b, const char *where)
{
    int t = a->type & 0xff;
    cr_assert_eq(t, b->type & 0xff, "%s: type differs", where);
    char sub[256];
    if (cJSON_IsObject(a)) {
        cr_assert_eq(cJSON_GetArraySize(a), cJSON_GetArraySize(b), "%s: key count differs", where);
        const cJSON *va;
        cJSON_ArrayForEach(va, a)
        {
            const cJSON *vb = cJSON_GetObjectItemCaseSensitive(b, va->string);
            cr_assert(vb, "%s: reference lacks %s", where, va->string);
            snprintf(sub, sizeof sub, "%s.%s", where, va->string);
            same_json(va, vb, sub);
        }
    } else if (cJSON_IsArray(a)) {
        int n = cJSON_GetArraySize(a);
        cr_assert_eq(n, cJSON_GetArraySize(b), "%s: length differs", where);
        for (int i = 0; i < n; i++) {
            snprintf(sub, sizeof sub, "%s[%d]", where, i);
            same_json(cJSON_GetArrayItem(a, i), cJSON_GetArrayItem(b, i), sub);
        }
    } else if (cJSON_IsNumber(a)) {
        cr_expect_eq(a->valuedouble, b->valuedouble, "%s: %.17g vs %.17g", where, a->valuedouble,
                     b->valuedouble);
    } else if (cJSON_IsString(a)) {
        cr_expect_str_eq(a->valuestring, b->valuestring, "%s", where);
    }
}

static const char *str_field(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(cJSON_IsString(v), "pair line lacks the string %s", key);
    return v->valuestring;
}

/* Compares one C pair with one parsed reference line. */
static void same_pair(const peso_raw *raw, const peso_split *s, int k, const char *name, const peso_pairs *p,
                      size_t i, const cJSON *ref, size_t line)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ref, "block");
    cr_assert(cJSON_IsNumber(v), "line %zu: no block number", line);
    cr_assert_eq(v->valuedouble, (double)k, "line %zu: block", line);
    cr_assert_str_eq(str_field(ref, "split"), name, "line %zu", line);
    cr_assert_str_eq(str_field(ref, "user"), peso_strtab_str(raw->users, s->user_raw[p->user[i]]),
                     "line %zu: user", line);
    cr_assert_str_eq(str_field(ref, "target"), peso_strtab_str(raw->items, s->item_raw[p->target[i]]),
                     "line %zu: target", line);
    v = cJSON_GetObjectItemCaseSensitive(ref, "history");
    cr_assert(cJSON_IsArray(v), "line %zu: no history array", line);
    size_t n = (size_t)(p->off[i + 1] - p->off[i]);
    cr_assert_eq((size_t)cJSON_GetArraySize(v), n, "line %zu: history length", line);
    const cJSON *h = v->child;
    for (size_t j = 0; j < n; j++, h = h->next) {
        cr_assert(cJSON_IsString(h), "line %zu: history[%zu] is no string", line, j);
        cr_assert_str_eq(h->valuestring, peso_strtab_str(raw->items, s->item_raw[p->hist[p->off[i] + j]]),
                         "line %zu: history[%zu]", line, j);
    }
}

static size_t compare_pairs(const peso_raw *raw, const peso_split *s, const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot open %s", path);
    char *buf = NULL;
    size_t cap = 0, line = 0;
    for (int k = 0; k < s->n_blocks; k++) {
        const peso_block *b = &s->b[k];
        const peso_pairs *sets[3] = {&b->train, &b->valid, &b->test};
        const char *names[3] = {"train", "valid", "test"};
        for (int j = 0; j < 3; j++)
            for (size_t i = 0; i < sets[j]->n; i++) {
                cr_assert(getline(&buf, &cap, f) > 0, "reference ends at line %zu", line);
                line++;
                cJSON *ref = cJSON_Parse(buf);
                cr_assert(cJSON_IsObject(ref), "line %zu is not a JSON object", line);
                same_pair(raw, s, b->k, names[j], sets[j], i, ref, line);
                cJSON_Delete(ref);
            }
    }
    cr_expect(getline(&buf, &cap, f) <= 0, "reference has more than %zu pairs", line);
    free(buf);
    fclose(f);
    return line;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    char *buf = NULL;
    size_t n = 0, cap = 0;
    do {
        cap = cap ? 2 * cap : 4096;
        buf = realloc(buf, cap + 1);
        cr_assert(buf);
        n += fread(buf + n, 1, cap - n, f);
    } while (n == cap);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void check_setting(const setting *st)
{
    need_inputs();
    char dir[] = "/tmp/peso-protoref-XXXXXX", stats[64], pairs[64];
    cr_assert(mkdtemp(dir));
    snprintf(stats, sizeof stats, "%s/stats.json", dir);
    snprintf(pairs, sizeof pairs, "%s/pairs.jsonl", dir);
    run_reference(st, stats, pairs);

    peso_raw raw;
    peso_split s;
    run_c(st, &raw, &s);
    char *mine = peso_stats_json(&s), *theirs = slurp(stats);
    cJSON *a = cJSON_Parse(mine), *b = cJSON_Parse(theirs);
    cr_assert(a && b);
    same_json(a, b, "stats");
    /* json.dumps(stats, indent=2) + "\n": the same text, number spellings
     * (20 vs 20.0) included */
    cr_expect_str_eq(mine, theirs);
    size_t n = compare_pairs(&raw, &s, pairs);
    int64_t want = 0;
    for (int k = 0; k < s.n_blocks; k++)
        want += s.b[k].st.train_pairs + (int64_t)s.b[k].valid.n + (int64_t)s.b[k].test.n;
    cr_expect_eq((int64_t)n, want);
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(theirs);
    free(mine);
    peso_split_free(&s);
    peso_raw_free(&raw);
    unlink(stats);
    unlink(pairs);
    rmdir(dir);
}

Test(protocol_reference, amazon2014_defaults)
{
    setting st = {"", 20, 5, 0, 0, 0};
    check_setting(&st);
}

Test(protocol_reference, amazon2014_history_all_window_5_min_4)
{
    setting st = {"--history all --window 5 --min-user 4", 5, 4, 1, 0, 0};
    check_setting(&st);
}

Test(protocol_reference, amazon2014_years_2010_2013)
{
    setting st = {"--year-min 2010 --year-max 2013", 20, 5, 0, 2010, 2013};
    check_setting(&st);
}
