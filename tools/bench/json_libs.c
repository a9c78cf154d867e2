/* Parse speed of the three Debian JSON libraries (json-c, jansson, cJSON) on
 * real review lines, to choose the one the loaders use (cJSON won; json-c and
 * jansson are measured when CMake found both: PESO_BENCH_ALL_JSON). The file
 * is decompressed into memory first, so only parsing plus the extraction of
 * reviewerID, asin and unixReviewTime is timed; the file is parsed again and
 * again until each library has run for at least the minimum time, and the
 * best of three such trials is kept (the build machine is shared).
 *
 *   bench-json_libs [FILE [MIN_SECONDS]]
 *
 * FILE defaults to the Amazon 2014 Musical Instruments reviews in the shared
 * data folder. Every library must extract the same fields from every line
 * (a checksum over them is compared), or the run fails. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#ifdef PESO_BENCH_ALL_JSON
#include <json.h>
/* json-c and jansson declare the same names (json_type, json_object,
 * json_object_get, ...) differently. jansson's copies are renamed while its
 * header is read; this file calls none of them (json_object_getn instead of
 * json_object_get), so no renamed symbol reaches the linker. */
#define json_type jansson_type
#define json_object jansson_object
#define json_object_get jansson_object_get
#define json_object_iter jansson_object_iter
#define json_object_iter_next jansson_object_iter_next
#include <jansson.h>
#undef json_type
#undef json_object
#undef json_object_get
#undef json_object_iter
#undef json_object_iter_next
#endif

#include "common/clock.h"
#include "common/err.h"
#include "common/lines.h"

#ifndef PESO_BENCH_DATA
#define PESO_BENCH_DATA "../shared/data"
#endif
#define DEFAULT_FILE PESO_BENCH_DATA "/amazon-instruments-2014/reviews_Musical_Instruments_5.json.gz"
#define TRIALS 3

typedef struct span {
    size_t off, len;
} span;

typedef struct corpus {
    char *text; /* all lines, each NUL-terminated */
    size_t text_len, text_cap;
    span *line;
    size_t n, cap;
    size_t bytes; /* decompressed input, newlines included */
} corpus;

/* What one parse extracts; summed into a checksum so that the work cannot be
 * optimised away and the libraries can be compared. */
typedef struct fields {
    size_t user_len, item_len;
    int64_t time;
} fields;

typedef int (*parse_fn)(void *state, const char *s, size_t len, fields *f);

typedef struct lib {
    const char *name;
    void *(*open)(void);
    void (*close)(void *state);
    parse_fn parse;
} lib;

static int corpus_load(corpus *c, const char *path, peso_err *err)
{
    peso_lines *in;
    if (peso_lines_open(&in, path, err))
        return -1;
    char *line;
    size_t len;
    int rc;
    while ((rc = peso_lines_next(in, &line, &len, err)) == 1) {
        peso_grow((void **)&c->text, &c->text_cap, c->text_len + len + 1, 1);
        memcpy(c->text + c->text_len, line, len + 1);
        peso_grow((void **)&c->line, &c->cap, c->n + 1, sizeof *c->line);
        c->line[c->n++] = (span){c->text_len, len};
        c->text_len += len + 1;
        c->bytes += len + 1;
    }
    peso_lines_close(in);
    return rc < 0 ? -1 : 0;
}

#define STR_(x) #x
#define STR(x) STR_(x)
#define CJSON_VERSION STR(CJSON_VERSION_MAJOR) "." STR(CJSON_VERSION_MINOR) "." STR(CJSON_VERSION_PATCH)

static void *no_state(void)
{
    return NULL;
}
static void no_close(void *state)
{
    (void)state;
}

static int cjson_parse(void *state, const char *s, size_t len, fields *f)
{
    (void)state;
    cJSON *o = cJSON_ParseWithLength(s, len);
    if (!o)
        return -1;
    cJSON *u = cJSON_GetObjectItemCaseSensitive(o, "reviewerID");
    cJSON *i = cJSON_GetObjectItemCaseSensitive(o, "asin");
    cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "unixReviewTime");
    int ok = cJSON_IsString(u) && cJSON_IsString(i) && cJSON_IsNumber(t);
    if (ok) {
        f->user_len = strlen(u->valuestring);
        f->item_len = strlen(i->valuestring);
        f->time = (int64_t)t->valuedouble;
    }
    cJSON_Delete(o);
    return ok ? 0 : -1;
}

#ifdef PESO_BENCH_ALL_JSON
static void *jsonc_open(void)
{
    return json_tokener_new();
}
static void jsonc_close(void *state)
{
    json_tokener_free(state);
}

static int jsonc_parse(void *state, const char *s, size_t len, fields *f)
{
    json_tokener *tok = state;
    json_tokener_reset(tok);
    json_object *o = json_tokener_parse_ex(tok, s, (int)len);
    if (!o)
        return -1;
    json_object *u, *i, *t;
    int ok = json_object_object_get_ex(o, "reviewerID", &u) && json_object_is_type(u, json_type_string) &&
             json_object_object_get_ex(o, "asin", &i) && json_object_is_type(i, json_type_string) &&
             json_object_object_get_ex(o, "unixReviewTime", &t) && json_object_is_type(t, json_type_int);
    if (ok) {
        f->user_len = (size_t)json_object_get_string_len(u);
        f->item_len = (size_t)json_object_get_string_len(i);
        f->time = json_object_get_int64(t);
    }
    json_object_put(o);
    return ok ? 0 : -1;
}

static int jansson_parse(void *state, const char *s, size_t len, fields *f)
{
    (void)state;
    json_error_t e;
    json_t *o = json_loadb(s, len, 0, &e);
    if (!o)
        return -1;
    json_t *u = json_object_getn(o, "reviewerID", 10);
    json_t *i = json_object_getn(o, "asin", 4);
    json_t *t = json_object_getn(o, "unixReviewTime", 14);
    int ok = json_is_string(u) && json_is_string(i) && json_is_integer(t);
    if (ok) {
        f->user_len = json_string_length(u);
        f->item_len = json_string_length(i);
        f->time = (int64_t)json_integer_value(t);
    }
    json_decref(o);
    return ok ? 0 : -1;
}
#endif

/* One pass over the corpus; returns the checksum or -1 on a parse failure. */
static int64_t parse_all(const lib *l, void *state, const corpus *c, size_t *bad_line)
{
    int64_t sum = 0;
    for (size_t k = 0; k < c->n; k++) {
        fields f;
        if (l->parse(state, c->text + c->line[k].off, c->line[k].len, &f)) {
            *bad_line = k + 1;
            return -1;
        }
        sum += (int64_t)(f.user_len + f.item_len) + f.time;
    }
    return sum;
}

/* Passes per second of one trial of at least min_s; -1 on a parse failure. */
static double trial(const lib *l, const corpus *c, double min_s, int64_t *sum)
{
    void *state = l->open();
    double t0 = peso_now(), el;
    long passes = 0;
    do {
        size_t bad = 0;
        *sum = parse_all(l, state, c, &bad);
        if (*sum < 0) {
            fprintf(stderr, "bench-json_libs: %s failed on line %zu\n", l->name, bad);
            l->close(state);
            return -1;
        }
        passes++;
        el = peso_now() - t0;
    } while (el < min_s);
    l->close(state);
    return passes / el;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : DEFAULT_FILE;
    double min_s = argc > 2 ? atof(argv[2]) : 1.0;
    static const lib libs[] = {
        {"cJSON " CJSON_VERSION, no_state, no_close, cjson_parse},
#ifdef PESO_BENCH_ALL_JSON
        {"json-c " JSON_C_VERSION, jsonc_open, jsonc_close, jsonc_parse},
        {"jansson " JANSSON_VERSION, no_state, no_close, jansson_parse},
#endif
    };
    enum { NLIBS = sizeof libs / sizeof libs[0] };

    corpus c = {0};
    peso_err err;
    if (corpus_load(&c, path, &err)) {
        fprintf(stderr, "bench-json_libs: %s\n", err.msg);
        return 1;
    }
    printf("%s: %zu lines, %.2f MB decompressed; >= %.1f s per trial, best of %d\n\n", path, c.n,
           (double)c.bytes / 1e6, min_s, TRIALS);

    /* Trials interleave the libraries, so that a busy moment on the shared
     * machine does not fall on one library only; the best trial counts. */
    double rate[NLIBS] = {0}, best = 0;
    int64_t ref = 0;
    for (int t = 0; t < TRIALS; t++) {
        for (int k = 0; k < NLIBS; k++) {
            int64_t sum;
            double r = trial(&libs[k], &c, min_s, &sum);
            if (r < 0)
                return 1;
            if (t == 0 && k == 0)
                ref = sum;
            if (sum != ref) {
                fprintf(stderr, "bench-json_libs: %s extracted different fields than %s\n", libs[k].name,
                        libs[0].name);
                return 1;
            }
            if (r > rate[k])
                rate[k] = r;
        }
    }
    for (int k = 0; k < NLIBS; k++)
        if (rate[k] > best)
            best = rate[k];
    printf("| library        |   MB/s |    lines/s | vs fastest |\n");
    printf("|----------------|-------:|-----------:|-----------:|\n");
    for (int k = 0; k < NLIBS; k++)
        printf("| %-14s | %6.1f | %10.0f | %10.2f |\n", libs[k].name, rate[k] * (double)c.bytes / 1e6,
               rate[k] * (double)c.n, rate[k] / best);
    free(c.text);
    free(c.line);
    return 0;
}
