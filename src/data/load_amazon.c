/* Amazon review loaders: the 2023 release (reviews JSONL plus optional item
 * metadata JSONL) and the 2014 release (one JSON object per line). Files are
 * streamed line by line (plain or gzip) and parsed with cJSON, the fastest
 * of the three Debian JSON libraries on these files (tools/bench/json_libs.c).
 * A line that is not a JSON object, or lacks a field or has one of the wrong
 * type, is a bad line (peso_raw_bad_line) and adds nothing. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "common/lines.h"
#include "data/raw.h"

/* Integers in JSON arrive as doubles; beyond 2^53 they are no longer exact. */
#define JSON_INT_MAX 9007199254740992.0

/* Handles one parsed line; returns -1 with the reason in why to reject it. */
typedef int (*record_fn)(peso_raw *r, const peso_conf *c, const cJSON *o, peso_err *why);

static const char *json_kind(const cJSON *v)
{
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsArray(v))
        return "an array";
    return "an object";
}

static int get_field(const cJSON *o, const char *key, const char *what, const cJSON **v, peso_err *why)
{
    *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!*v)
        return peso_errf(why, "missing field \"%s\" (expected %s)", key, what);
    return 0;
}

/* A required non-empty string (an id). */
static int get_id(const cJSON *o, const char *key, const char **s, size_t *len, peso_err *why)
{
    const cJSON *v;
    if (get_field(o, key, "a non-empty string", &v, why))
        return -1;
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0')
        return peso_errf(why, "field \"%s\": expected a non-empty string, got %s", key,
                         cJSON_IsString(v) ? "an empty string" : json_kind(v));
    *s = v->valuestring;
    *len = strlen(v->valuestring);
    return 0;
}

/* A required integer; `what` names its unit for the message. */
static int get_int(const cJSON *o, const char *key, const char *what, int64_t *x, peso_err *why)
{
    const cJSON *v;
    if (get_field(o, key, what, &v, why))
        return -1;
    if (!cJSON_IsNumber(v))
        return peso_errf(why, "field \"%s\": expected %s, got %s", key, what, json_kind(v));
    double d = v->valuedouble;
    if (fabs(d) > JSON_INT_MAX || d != floor(d))
        return peso_errf(why, "field \"%s\": expected %s, got %.17g", key, what, d);
    *x = (int64_t)d;
    return 0;
}

/* An optional string: absent or null gives NULL; anything else but a string
 * is wrong. */
static int get_opt_string(const cJSON *o, const char *key, const cJSON **s, peso_err *why)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *s = NULL;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v))
        return peso_errf(why, "field \"%s\": expected a string, got %s", key, json_kind(v));
    *s = v;
    return 0;
}

/* An optional list of strings: absent or null gives NULL. */
static int get_opt_strings(const cJSON *o, const char *key, const cJSON **list, peso_err *why)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *list = NULL;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsArray(v))
        return peso_errf(why, "field \"%s\": expected a list of strings, got %s", key, json_kind(v));
    int k = 0;
    for (const cJSON *e = v->child; e; e = e->next, k++)
        if (!cJSON_IsString(e))
            return peso_errf(why, "field \"%s\": element %d: expected a string, got %s", key, k,
                             json_kind(e));
    *list = v;
    return 0;
}

static void add_text(peso_raw *r, const peso_conf *c, int32_t item, const cJSON *s)
{
    size_t max = c->data.max_text > 0 ? (size_t)c->data.max_text : 0;
    peso_raw_add_text(r, item, s->valuestring, strlen(s->valuestring), max);
}

/* One line as a JSON object, or NULL with the reason. */
static cJSON *parse_object(const char *line, size_t len, peso_err *why)
{
    if (len == 0) {
        peso_errf(why, "empty line (expected one JSON object per line)");
        return NULL;
    }
    /* The length includes the terminating NUL, which the parser requires
     * after the value: trailing garbage is an error, not ignored. */
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(line, len + 1, &end, 1);
    if (!o) {
        peso_errf(why, "malformed JSON at column %ld (expected one JSON object per line)",
                  end ? (long)(end - line) + 1 : 1L);
        return NULL;
    }
    if (!cJSON_IsObject(o)) {
        peso_errf(why, "expected a JSON object, got %s", json_kind(o));
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* While a file is parsed, cJSON allocates from per-thread arenas that are
 * reset after each batch instead of freeing node by node: malloc and free
 * were a third of the load time. The hooks are process-wide, so a loader
 * must not run while another thread uses cJSON; they are restored to
 * malloc/free when the file is done. */
typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

typedef struct arena {
    arena_block *head; /* the block being filled; full ones follow */
    struct arena *next_arena;
} arena;

static arena *all_arenas;
static unsigned arena_gen; /* a thread's t_arena belongs to the current file only */
static _Thread_local arena *t_arena;
static _Thread_local unsigned t_gen;

static void *arena_alloc(size_t n)
{
    arena *a = t_gen == arena_gen ? t_arena : NULL;
    if (!a) {
        a = peso_calloc(1, sizeof *a);
#pragma omp critical(peso_json_arena)
        {
            a->next_arena = all_arenas;
            all_arenas = a;
        }
        t_arena = a;
        t_gen = arena_gen;
    }
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    arena_block *b = a->head;
    if (!b || b->used + n > b->cap) {
        size_t cap = n > (1u << 20) ? n : (1u << 20);
        arena_block *nb = peso_malloc(sizeof *nb + cap);
        nb->used = 0;
        nb->cap = cap;
        nb->next = b;
        a->head = b = nb;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

static void arena_free(void *p) { (void)p; }

/* Between batches, on one thread: every arena keeps its newest block. */
static void arenas_reset(void)
{
    for (arena *a = all_arenas; a; a = a->next_arena) {
        arena_block *b = a->head;
        if (!b)
            continue;
        for (arena_block *o = b->next, *nx; o; o = nx) {
            nx = o->next;
            free(o);
        }
        b->next = NULL;
        b->used = 0;
    }
}

static void arenas_begin(void)
{
    cJSON_Hooks h = {arena_alloc, arena_free};
    arena_gen++;
    cJSON_InitHooks(&h);
}

static void arenas_end(void)
{
    cJSON_InitHooks(NULL);
    for (arena *a = all_arenas, *na; a; a = na) {
        na = a->next_arena;
        for (arena_block *b = a->head, *nb; b; b = nb) {
            nb = b->next;
            free(b);
        }
        free(a);
    }
    all_arenas = NULL;
}

/* Lines are parsed in batches: the JSON parsing (most of the time) runs on
 * all threads, then the records go to fn in input order on one thread, so
 * interning and the order of interactions are exactly those of a serial
 * read. */
#define BATCH_LINES 8192

typedef struct line_batch {
    char *text;      /* the batch's lines, each NUL-terminated */
    size_t len, cap;
    size_t *off;     /* BATCH_LINES offsets into text */
    size_t *n;       /* line lengths */
    long *lineno;
    cJSON **obj;
    int count;
} line_batch;

static void batch_parse(line_batch *b)
{
    /* cJSON's parser keeps no shared state apart from the position of the
     * last error, which is never read here: a failed line is parsed again
     * serially for its message. */
#pragma omp parallel for schedule(dynamic, 256)
    for (int i = 0; i < b->count; i++) {
        const char *line = b->text + b->off[i];
        cJSON *o = b->n[i] ? cJSON_ParseWithLengthOpts(line, b->n[i] + 1, NULL, 1) : NULL;
        if (o && !cJSON_IsObject(o)) {
            cJSON_Delete(o);
            o = NULL;
        }
        b->obj[i] = o;
    }
}

static void batch_release(line_batch *b)
{
    arenas_reset(); /* frees every object of the batch at once */
    b->count = 0;
    b->len = 0;
}

static int batch_consume(peso_raw *r, const peso_conf *c, const char *path, line_batch *b, record_fn fn,
                         peso_err *err)
{
    batch_parse(b);
    int rc = 0;
    for (int i = 0; i < b->count && rc == 0; i++) {
        r->lines_read++;
        peso_err why;
        cJSON *o = b->obj[i];
        int ok;
        if (!o) {
            o = parse_object(b->text + b->off[i], b->n[i], &why); /* the message */
            ok = o && fn(r, c, o, &why) == 0;
            cJSON_Delete(o);
        } else {
            ok = fn(r, c, o, &why) == 0;
        }
        if (!ok && peso_raw_bad_line(r, (long)c->data.skip_bad_lines, err, "%s:%ld: %s", path, b->lineno[i],
                                     why.msg))
            rc = -1;
    }
    batch_release(b);
    return rc;
}

/* Streams path, one JSON object per line, into fn. */
static int each_json_line(peso_raw *r, const peso_conf *c, const char *path, record_fn fn, peso_err *err)
{
    peso_lines *in;
    if (peso_lines_open(&in, path, err))
        return -1;
    arenas_begin();
    line_batch b = {0};
    b.off = peso_malloc(BATCH_LINES * sizeof *b.off);
    b.n = peso_malloc(BATCH_LINES * sizeof *b.n);
    b.lineno = peso_malloc(BATCH_LINES * sizeof *b.lineno);
    b.obj = peso_malloc(BATCH_LINES * sizeof *b.obj);
    char *line;
    size_t len;
    int rc;
    while ((rc = peso_lines_next(in, &line, &len, err)) == 1) {
        peso_grow((void **)&b.text, &b.cap, b.len + len + 1, 1);
        memcpy(b.text + b.len, line, len + 1);
        b.off[b.count] = b.len;
        b.n[b.count] = len;
        b.lineno[b.count] = peso_lines_lineno(in);
        b.len += len + 1;
        if (++b.count == BATCH_LINES && batch_consume(r, c, path, &b, fn, err)) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && b.count && batch_consume(r, c, path, &b, fn, err))
        rc = -1;
    if (rc < 0)
        batch_release(&b);
    arenas_end();
    peso_lines_close(in);
    free(b.text);
    free(b.off);
    free(b.n);
    free(b.lineno);
    free(b.obj);
    return rc < 0 ? -1 : 0;
}

static int review_2023(peso_raw *r, const peso_conf *c, const cJSON *o, peso_err *why)
{
    (void)c;
    const char *user, *item;
    size_t ulen, ilen;
    int64_t ts;
    const cJSON *rating;
    if (get_id(o, "user_id", &user, &ulen, why) || get_id(o, "parent_asin", &item, &ilen, why) ||
        get_int(o, "timestamp", "an integer (milliseconds since the epoch)", &ts, why) ||
        get_field(o, "rating", "a number", &rating, why))
        return -1;
    /* The rating is not used, but a review without a numeric one is not a
     * well-formed 2023 review line. */
    if (!cJSON_IsNumber(rating))
        return peso_errf(why, "field \"rating\": expected a number, got %s", json_kind(rating));
    peso_raw_add(r, user, ulen, item, ilen, ts);
    return 0;
}

/* Item text = title, description strings, categories, in that order. */
static int meta_2023(peso_raw *r, const peso_conf *c, const cJSON *o, peso_err *why)
{
    const char *asin;
    size_t len;
    if (get_id(o, "parent_asin", &asin, &len, why))
        return -1;
    int32_t item = peso_strtab_find(r->items, asin, len);
    if (item < 0)
        return 0; /* an item nobody reviewed */
    const cJSON *title, *desc, *cats;
    if (get_opt_string(o, "title", &title, why) || get_opt_strings(o, "description", &desc, why) ||
        get_opt_strings(o, "categories", &cats, why))
        return -1;
    if (title)
        add_text(r, c, item, title);
    for (const cJSON *e = desc ? desc->child : NULL; e; e = e->next)
        add_text(r, c, item, e);
    for (const cJSON *e = cats ? cats->child : NULL; e; e = e->next)
        add_text(r, c, item, e);
    return 0;
}

int peso_load_amazon2023(peso_raw *r, const peso_conf *c, peso_err *err)
{
    r->has_time = 1;
    if (each_json_line(r, c, c->data.reviews, review_2023, err))
        return -1;
    /* After the reviews: only the items they name are looked up. */
    if (c->data.meta[0] && each_json_line(r, c, c->data.meta, meta_2023, err))
        return -1;
    return 0;
}

/* unixReviewTime is in seconds; ts is milliseconds. The reviews' summary
 * strings are the item text, as the 2014 5-core files have no metadata. */
static int review_2014(peso_raw *r, const peso_conf *c, const cJSON *o, peso_err *why)
{
    const char *user, *item;
    size_t ulen, ilen;
    int64_t sec;
    const cJSON *summary;
    if (get_id(o, "reviewerID", &user, &ulen, why) || get_id(o, "asin", &item, &ilen, why) ||
        get_int(o, "unixReviewTime", "an integer (seconds since the epoch)", &sec, why) ||
        get_opt_string(o, "summary", &summary, why))
        return -1;
    if (fabs((double)sec) > JSON_INT_MAX / 1000)
        return peso_errf(why, "field \"unixReviewTime\": %lld seconds is out of range", (long long)sec);
    peso_raw_add(r, user, ulen, item, ilen, sec * 1000);
    if (summary)
        add_text(r, c, r->v[r->n - 1].item, summary);
    return 0;
}

int peso_load_amazon2014(peso_raw *r, const peso_conf *c, peso_err *err)
{
    if (c->data.meta[0])
        return peso_errf(err,
                         "data.meta: set to \"%s\", but the amazon2014 format reads no metadata "
                         "(item text comes from the reviews' summary fields); expected \"\"",
                         c->data.meta);
    r->has_time = 1;
    return each_json_line(r, c, c->data.reviews, review_2014, err);
}
