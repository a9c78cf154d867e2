/* The metrics file: the exact text of a line, values read back with
 * cJSON as the same doubles, a repeated key replacing its line, and a
 * malformed line refused with path:line while the file stays as it was. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "eval/record.h"

static const int eval_stages[3] = {2, 3, 4};

typedef struct tmp {
    char dir[64];
    char path[128];
} tmp;

static void tmp_open(tmp *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/peso-record-test-XXXXXX");
    cr_assert(mkdtemp(t->dir), "mkdtemp");
    snprintf(t->path, sizeof t->path, "%s/metrics.jsonl", t->dir);
}

static void tmp_close(tmp *t)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    cr_assert_eq(system(cmd), 0);
}

/* run r1, peso, lambda 0.1, stage 2, test; values whose shortest decimal
 * spellings are known (Python's repr of the same doubles). */
static peso_metrics_record record_a(void)
{
    peso_metrics_record r = {0};
    r.run = "r1";
    r.method = "peso";
    r.name = "peso";
    r.group = "module";
    r.lambda = 0.1;
    r.stage = 2;
    r.split = "test";
    r.mean.n_k = 2;
    r.mean.k[0] = 5;
    r.mean.k[1] = 10;
    r.mean.hit[0] = 0.25;
    r.mean.hit[1] = 1.0 / 3.0;
    r.mean.ndcg[0] = 0.1 + 0.2;
    r.mean.ndcg[1] = 1e-05 * 3.0;
    r.mean.users = 12;
    r.eval_stages = eval_stages;
    r.n_eval_stages = 3;
    r.seconds = 12.5;
    return r;
}

static const char *const line_a =
    "{\"run\":\"r1\",\"method\":\"peso\",\"name\":\"peso\",\"variant\":null,\"group\":\"module\","
    "\"lambda\":0.1,\"stage\":2,\"split\":\"test\",\"users\":12,\"hit@5\":0.25,\"hit@10\":0.3333333333333333,"
    "\"ndcg@5\":0.30000000000000004,\"ndcg@10\":3.0000000000000004e-05,\"eval_stages\":[2,3,4],"
    "\"seconds\":12.5}";

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    char *buf = calloc(1, 1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The file's lines (at most 8), each parsed; returns the count. */
static int parse_lines(const char *path, cJSON **lines)
{
    char *text = slurp(path), *save = NULL;
    int n = 0;
    cr_assert(strlen(text) > 0 && text[strlen(text) - 1] == '\n', "the file ends with a newline");
    for (char *s = strtok_r(text, "\n", &save); s; s = strtok_r(NULL, "\n", &save)) {
        cr_assert_lt(n, 8);
        lines[n] = cJSON_Parse(s);
        cr_assert(lines[n], "line %d is not JSON: %s", n + 1, s);
        n++;
    }
    free(text);
    return n;
}

static void free_lines(cJSON **lines, int n)
{
    for (int i = 0; i < n; i++)
        cJSON_Delete(lines[i]);
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(cJSON_IsNumber(v), "%s is not a number", key);
    return v->valuedouble;
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(cJSON_IsString(v), "%s is not a string", key);
    return v->valuestring;
}

static void write_ok(const char *path, const peso_metrics_record *r)
{
    peso_err err;
    cr_assert_eq(peso_metrics_record_write(path, r, &err), 0, "%s", err.msg);
}

Test(record, the_line_has_the_documented_text)
{
    tmp t;
    tmp_open(&t);
    peso_metrics_record a = record_a();
    write_ok(t.path, &a);
    char *text = slurp(t.path);
    cr_assert_eq(strlen(text), strlen(line_a) + 1);
    cr_assert(strncmp(text, line_a, strlen(line_a)) == 0, "got %s", text);
    free(text);
    tmp_close(&t);
}

Test(record, two_records_then_one_replaced)
{
    tmp t;
    cJSON *l[8];
    tmp_open(&t);
    peso_metrics_record a = record_a(), b = record_a();
    b.run = "r\"1\\x";
    b.stage = 3;
    b.variant = "all+inherit";
    b.mean.hit[0] = 0.7;
    write_ok(t.path, &a);
    write_ok(t.path, &b);
    int n = parse_lines(t.path, l);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(str(l[0], "run"), "r1");
    cr_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(l[0], "variant")));
    cr_assert_str_eq(str(l[1], "run"), "r\"1\\x");
    cr_assert_str_eq(str(l[1], "variant"), "all+inherit");
    cr_assert_eq(num(l[1], "stage"), 3.0);
    cr_assert_eq(num(l[1], "hit@5"), 0.7);
    cr_assert_eq(num(l[0], "hit@10"), 1.0 / 3.0);
    cr_assert_eq(num(l[0], "ndcg@10"), 1e-05 * 3.0);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(l[0], "eval_stages");
    cr_assert_eq(cJSON_GetArraySize(st), 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(cJSON_GetArrayItem(st, i)->valuedouble, (double)eval_stages[i]);
    free_lines(l, n);

    /* the same key again: a's line goes, the new one comes last */
    peso_metrics_record a2 = record_a();
    a2.mean.hit[0] = 0.5;
    a2.mean.users = 40;
    a2.seconds = 99.25;
    write_ok(t.path, &a2);
    n = parse_lines(t.path, l);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(str(l[0], "run"), "r\"1\\x");
    cr_assert_str_eq(str(l[1], "run"), "r1");
    cr_assert_eq(num(l[1], "hit@5"), 0.5);
    cr_assert_eq(num(l[1], "users"), 40.0);
    cr_assert_eq(num(l[1], "seconds"), 99.25);
    free_lines(l, n);

    /* another lambda, another split: each a line of its own */
    peso_metrics_record c = record_a(), v = record_a();
    c.lambda = nextafter(0.1, 1.0); /* written with 17 digits */
    v.split = "valid";
    cr_assert_neq(c.lambda, 0.1);
    write_ok(t.path, &c);
    write_ok(t.path, &v);
    n = parse_lines(t.path, l);
    cr_assert_eq(n, 4);
    cr_assert_eq(num(l[2], "lambda"), c.lambda);
    cr_assert_str_eq(str(l[3], "split"), "valid");
    free_lines(l, n);
    tmp_close(&t);
}

static void expect_refused(const char *path, const char *content, const char *where, const char *what)
{
    peso_err err;
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    fputs(content, f);
    fclose(f);
    peso_metrics_record a = record_a();
    cr_assert_eq(peso_metrics_record_write(path, &a, &err), -1);
    cr_assert(strstr(err.msg, where) && strstr(err.msg, what), "%s", err.msg);
    char *after = slurp(path);
    cr_assert_str_eq(after, content, "the file is unchanged");
    free(after);
}

Test(record, malformed_lines_are_refused_with_path_and_line)
{
    tmp t;
    char where[160], good[512];
    tmp_open(&t);
    snprintf(good, sizeof good, "%s\n", line_a);
    /* line 3 is blank, line 4 is not JSON */
    char content[2048];
    snprintf(content, sizeof content, "%s%s\n{\"run\": \"x\", oops}\n", good, good);
    snprintf(where, sizeof where, "%s:4", t.path);
    expect_refused(t.path, content, where, "line 1, column");
    /* JSON, but not a record: no stage; an array */
    snprintf(content, sizeof content,
             "%s{\"run\":\"r\",\"method\":\"m\",\"lambda\":1,\"split\":\"test\",\"stage\":1.5}\n", good);
    snprintf(where, sizeof where, "%s:2", t.path);
    expect_refused(t.path, content, where, "\"stage\"");
    snprintf(content, sizeof content, "[1, 2]\n%s", good);
    snprintf(where, sizeof where, "%s:1", t.path);
    expect_refused(t.path, content, where, "JSON object");
    tmp_close(&t);
}

Test(record, incomplete_records_are_refused)
{
    tmp t;
    peso_err err;
    tmp_open(&t);
    peso_metrics_record a = record_a();
    a.method = NULL;
    cr_assert_eq(peso_metrics_record_write(t.path, &a, &err), -1);
    cr_assert(strstr(err.msg, "required"), "%s", err.msg);
    a = record_a();
    a.lambda = NAN;
    cr_assert_eq(peso_metrics_record_write(t.path, &a, &err), -1);
    cr_assert(strstr(err.msg, "finite"), "%s", err.msg);
    FILE *f = fopen(t.path, "rb");
    cr_assert_null(f, "nothing was written");
    tmp_close(&t);
}
