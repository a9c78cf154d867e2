/* The metrics file (see eval/record.h). */
#include "eval/record.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/atomic.h"
#include "common/file.h"
#include "common/json.h"

/* What identifies a line: a later record with the same key replaces it. */
typedef struct record_key {
    const char *run, *method, *split;
    double lambda;
    int64_t stage;
} record_key;

static int check_record(const peso_metrics_record *r, peso_err *err)
{
    if (!r->run || !r->method || !r->split)
        return peso_errf(err, "metrics record: run, method and split are required (got %s, %s, %s)",
                         r->run ? r->run : "NULL", r->method ? r->method : "NULL",
                         r->split ? r->split : "NULL");
    if (!isfinite(r->lambda) || !isfinite(r->seconds))
        return peso_errf(err, "metrics record: lambda %g and seconds %g must be finite", r->lambda,
                         r->seconds);
    if (r->mean.n_k < 1 || r->mean.n_k > PESO_METRICS_MAX_K)
        return peso_errf(err, "metrics record: %d cut-offs, expected 1 to %d", r->mean.n_k,
                         PESO_METRICS_MAX_K);
    if (r->n_eval_stages < 0 || (r->n_eval_stages > 0 && !r->eval_stages))
        return peso_errf(err, "metrics record: %d eval stages without a list", r->n_eval_stages);
    return 0;
}

static cJSON *string_or_null(const char *s)
{
    return s ? peso_json_string(s) : peso_json_null();
}

static cJSON *record_json(const peso_metrics_record *r)
{
    char key[32];
    cJSON *o = peso_json_object(), *stages = peso_json_array();
    peso_json_add(o, "run", peso_json_string(r->run));
    peso_json_add(o, "method", peso_json_string(r->method));
    peso_json_add(o, "name", string_or_null(r->name));
    peso_json_add(o, "variant", string_or_null(r->variant));
    peso_json_add(o, "group", string_or_null(r->group));
    peso_json_add(o, "lambda", peso_json_float(r->lambda));
    peso_json_add(o, "stage", peso_json_int(r->stage));
    peso_json_add(o, "split", peso_json_string(r->split));
    peso_json_add(o, "users", peso_json_int(r->mean.users));
    for (int i = 0; i < r->mean.n_k; i++) {
        snprintf(key, sizeof key, "hit@%d", r->mean.k[i]);
        peso_json_add(o, key, peso_json_float(r->mean.hit[i]));
    }
    for (int i = 0; i < r->mean.n_k; i++) {
        snprintf(key, sizeof key, "ndcg@%d", r->mean.k[i]);
        peso_json_add(o, key, peso_json_float(r->mean.ndcg[i]));
    }
    for (int i = 0; i < r->n_eval_stages; i++)
        peso_json_push(stages, peso_json_int(r->eval_stages[i]));
    peso_json_add(o, "eval_stages", stages);
    peso_json_add(o, "seconds", peso_json_float(r->seconds));
    return o;
}

static const char *string_member(const cJSON *o, const char *key)
{
    const cJSON *v = peso_json_get(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The key of a parsed line; NULL, or what is wrong with it. */
static const char *line_key(const cJSON *o, record_key *k)
{
    if (!cJSON_IsObject(o))
        return "expected a JSON object";
    k->run = string_member(o, "run");
    k->method = string_member(o, "method");
    k->split = string_member(o, "split");
    if (!k->run || !k->method || !k->split)
        return "\"run\", \"method\" or \"split\" is missing or not a string";
    const cJSON *lambda = peso_json_get(o, "lambda");
    if (!cJSON_IsNumber(lambda))
        return "\"lambda\" is missing or not a number";
    k->lambda = lambda->valuedouble;
    if (peso_json_int64(peso_json_get(o, "stage"), &k->stage) < 0)
        return "\"stage\" is missing or not an integer";
    return NULL;
}

static int same_key(const record_key *a, const peso_metrics_record *r)
{
    return strcmp(a->run, r->run) == 0 && strcmp(a->method, r->method) == 0 && a->lambda == r->lambda &&
           a->stage == r->stage && strcmp(a->split, r->split) == 0;
}

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

typedef struct text_buf {
    char *p;
    size_t n, cap;
} text_buf;

static void append(text_buf *b, const char *s, size_t n)
{
    peso_grow((void **)&b->p, &b->cap, b->n + n + 1, 1);
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n++] = '\n';
}

/* Copies the lines of text[0..len) other than r's into out. text is
 * modified: each line is NUL-terminated in place to be parsed. */
static int keep_other_lines(const char *path, char *text, size_t len, const peso_metrics_record *r,
                            text_buf *out, peso_err *err)
{
    long lineno = 0;
    for (size_t at = 0; at < len;) {
        char *line = text + at, *nl = memchr(line, '\n', len - at);
        size_t n = nl ? (size_t)(nl - line) : len - at;
        at += n + 1;
        lineno++;
        if (is_blank(line, n))
            continue;
        line[n] = '\0';
        record_key k;
        cJSON *o = peso_json_parse(line, n, NULL, err);
        if (!o)
            return peso_err_prefix(err, "%s:%ld", path, lineno);
        const char *bad = line_key(o, &k);
        int drop = !bad && same_key(&k, r);
        cJSON_Delete(o);
        if (bad)
            return peso_errf(err, "%s:%ld: not a metrics record: %s", path, lineno, bad);
        if (!drop)
            append(out, line, n);
    }
    return 0;
}

/* The file's text, or NULL with *len = 0 when it does not exist yet. */
static int read_existing(const char *path, char **text, size_t *len, peso_err *err)
{
    struct stat st;
    *text = NULL;
    *len = 0;
    if (stat(path, &st) != 0 && errno == ENOENT)
        return 0;
    return peso_read_file(path, "cannot read metrics file", text, len, err);
}

int peso_metrics_record_write(const char *path, const peso_metrics_record *r, peso_err *err)
{
    if (check_record(r, err) < 0)
        return peso_err_prefix(err, "%s", path);
    char *text;
    size_t len;
    if (read_existing(path, &text, &len, err) < 0)
        return -1;
    text_buf out = {0};
    int rc = keep_other_lines(path, text, len, r, &out, err);
    free(text);
    if (rc == 0) {
        cJSON *o = record_json(r);
        char *line = peso_json_print_compact(o);
        cJSON_Delete(o);
        append(&out, line, strlen(line));
        free(line);
        rc = peso_write_file_atomic(path, out.p, out.n, err);
    }
    free(out.p);
    return rc;
}
