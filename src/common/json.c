#include "common/json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic.h"
#include "common/file.h"
#include "common/strtab.h"

/* 2^53: integral doubles up to this are exact. */
#define JSON_EXACT_INT 9007199254740992.0

static void json_oom(void)
{
    fprintf(stderr, "peso: out of memory building a JSON tree\n");
    abort();
}

static cJSON *need(cJSON *v)
{
    if (!v)
        json_oom();
    return v;
}

/* ---- text buffer ---- */

struct jbuf {
    char *p;
    size_t n, cap;
};

static void put(struct jbuf *b, const char *s, size_t n)
{
    peso_grow((void **)&b->p, &b->cap, b->n + n + 1, 1);
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void put_raw(struct jbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* ---- numbers ---- */

/* Python's repr of a float: the shortest %.*e that reads back as d, then
 * fixed notation when the exponent is in [-4, 16), with ".0" on integers;
 * non-finite values as Python's json writes them. */
static void float_repr(char *buf, size_t n, double d)
{
    if (isnan(d) || isinf(d)) {
        snprintf(buf, n, "%s", isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
        return;
    }
    char e[40];
    int p = 1;
    for (; p < 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, d);
        if (strtod(e, NULL) == d)
            break;
    }
    snprintf(e, sizeof e, "%.*e", p - 1, d);
    int exp = atoi(strchr(e, 'e') + 1);
    if (exp < -4 || exp >= 16) {
        snprintf(buf, n, "%s", e);
        return;
    }
    snprintf(buf, n, "%.*f", p - 1 - exp > 0 ? p - 1 - exp : 0, d);
    if (!strchr(buf, '.'))
        strncat(buf, ".0", n - strlen(buf) - 1);
}

static char *dup_text(const char *s, size_t n)
{
    char *d = cJSON_malloc(n + 1);
    if (!d)
        json_oom();
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static cJSON *spelled_number(double d, const char *text)
{
    cJSON *v = need(cJSON_CreateNumber(d));
    v->valuestring = dup_text(text, strlen(text));
    return v;
}

/* ---- constructors ---- */

cJSON *peso_json_object(void)
{
    return need(cJSON_CreateObject());
}

cJSON *peso_json_array(void)
{
    return need(cJSON_CreateArray());
}

cJSON *peso_json_string(const char *s)
{
    return need(cJSON_CreateString(s));
}

cJSON *peso_json_bool(int b)
{
    return need(cJSON_CreateBool(b != 0));
}

cJSON *peso_json_null(void)
{
    return need(cJSON_CreateNull());
}

cJSON *peso_json_int(int64_t v)
{
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)v);
    return spelled_number((double)v, s);
}

cJSON *peso_json_float(double d)
{
    char s[40];
    float_repr(s, sizeof s, d);
    return spelled_number(d, s);
}

void peso_json_add(cJSON *o, const char *key, cJSON *v)
{
    if (!cJSON_AddItemToObject(o, key, v))
        json_oom();
}

void peso_json_set(cJSON *o, const char *key, cJSON *v)
{
    if (!cJSON_GetObjectItemCaseSensitive(o, key))
        peso_json_add(o, key, v);
    else if (!cJSON_ReplaceItemInObjectCaseSensitive(o, key, v))
        json_oom();
}

void peso_json_push(cJSON *a, cJSON *v)
{
    if (!cJSON_AddItemToArray(a, v))
        json_oom();
}

/* ---- parsing ---- */

/* The numbers of the text, in order, are the number nodes of the tree in
 * document order (cJSON keeps every member, duplicates included), so one
 * pass over both gives each node its spelling. A number starts at '-' or a
 * digit outside a string and is the run of number characters there: cJSON
 * accepted the text, so no other character can follow it. The text ends in
 * a NUL, which stops every scan. */
static int number_char(char c)
{
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

static const char *next_number(const char **at, size_t *n)
{
    const char *p = *at;
    for (;;) {
        p += strcspn(p, "\"-0123456789");
        if (*p != '"')
            break;
        for (p++;; p += p[1] ? 2 : 1) {
            p += strcspn(p, "\"\\");
            if (*p != '\\')
                break;
        }
        p += *p != '\0';
    }
    const char *q = p;
    while (number_char(*q))
        q++;
    *n = (size_t)(q - p);
    *at = q;
    return p;
}

/* JSON's number grammar, stricter than cJSON's strtod: no leading zeros,
 * '+', bare '.' or empty exponent, so every kept spelling is valid JSON. */
static int json_number(const char *s, size_t n)
{
    size_t i = s[0] == '-';
    size_t d = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i == d || (s[d] == '0' && i > d + 1))
        return 0;
    if (i < n && s[i] == '.') {
        d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i += i + 1 < n && (s[i + 1] == '+' || s[i + 1] == '-') ? 2 : 1;
        d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    return i == n;
}

/* Returns the first malformed number, or NULL. */
static const char *spell_numbers(cJSON *v, const char **at)
{
    for (; v; v = v->next) {
        const char *bad = NULL;
        if (cJSON_IsNumber(v)) {
            size_t n;
            const char *num = next_number(at, &n);
            if (!json_number(num, n))
                return num;
            v->valuestring = dup_text(num, n);
        } else if (v->child && (bad = spell_numbers(v->child, at))) {
            return bad;
        }
    }
    return NULL;
}

/* Whether two members of o share a key: pairwise for small objects, else
 * with a hash set of member indices (open addressing), so the common case
 * costs O(n). */
static int has_duplicates(const cJSON *o, size_t n)
{
    if (n <= 16) {
        for (const cJSON *a = o->child; a; a = a->next)
            for (const cJSON *b = a->next; b; b = b->next)
                if (strcmp(a->string, b->string) == 0)
                    return 1;
        return 0;
    }
    size_t nslots = 1;
    while (nslots < 2 * n)
        nslots *= 2;
    const cJSON **slot = peso_calloc(nslots, sizeof *slot);
    int dup = 0;
    for (const cJSON *c = o->child; c && !dup; c = c->next) {
        size_t i = peso_hash_bytes(c->string, strlen(c->string)) & (nslots - 1);
        for (; slot[i] && !dup; i = (i + 1) & (nslots - 1))
            dup = strcmp(slot[i]->string, c->string) == 0;
        slot[i] = c;
    }
    free(slot);
    return dup;
}

struct member {
    cJSON *v;
    size_t pos;
};

static int cmp_member(const void *a, const void *b)
{
    const struct member *x = a, *y = b;
    int c = strcmp(x->v->string, y->v->string);
    return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

/* Keeps one member per key: the last value, at the first position. */
static void dedupe_members(cJSON *o)
{
    size_t n = 0;
    for (cJSON *c = o->child; c; c = c->next)
        n++;
    if (n < 2 || !has_duplicates(o, n))
        return;
    struct member *m = peso_malloc(n * sizeof *m);
    n = 0;
    for (cJSON *c = o->child; c; c = c->next, n++)
        m[n] = (struct member){c, n};
    qsort(m, n, sizeof *m, cmp_member);
    for (size_t i = 0, j; i < n; i = j + 1) {
        for (j = i; j + 1 < n && strcmp(m[j + 1].v->string, m[i].v->string) == 0; j++)
            ;
        if (j == i)
            continue;
        for (size_t k = i + 1; k < j; k++)
            cJSON_Delete(cJSON_DetachItemViaPointer(o, m[k].v));
        cJSON_ReplaceItemViaPointer(o, m[i].v, cJSON_DetachItemViaPointer(o, m[j].v));
    }
    free(m);
}

static void dedupe(cJSON *v)
{
    if (cJSON_IsObject(v))
        dedupe_members(v);
    for (cJSON *c = v->child; c; c = c->next)
        if (c->child)
            dedupe(c);
}

static int fail_at(const char *text, size_t len, size_t at, const char *what, peso_err *err)
{
    long line = 1;
    size_t bol = 0;
    for (size_t i = 0; i < at && i < len; i++)
        if (text[i] == '\n')
            line++, bol = i + 1;
    char why[64];
    unsigned char c = at < len ? (unsigned char)text[at] : 0;
    if (what)
        snprintf(why, sizeof why, "%s", what);
    else if (at >= len)
        snprintf(why, sizeof why, "unexpected end of input");
    else if (c > 32 && c < 127)
        snprintf(why, sizeof why, "unexpected '%c'", c);
    else
        snprintf(why, sizeof why, "unexpected byte 0x%02x", c);
    return peso_errf(err, "line %ld, column %zu: %s", line, at - bol + 1, why);
}

cJSON *peso_json_parse(const char *text, size_t len, size_t *end, peso_err *err)
{
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        fail_at(text, len, (size_t)(nul - text), "NUL byte (not JSON text)", err);
        return NULL;
    }
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
        fail_at(text, len, 0, "UTF-8 byte order mark (not JSON text)", err);
        return NULL;
    }
    const char *stop = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len + 1, &stop, end == NULL);
    if (!root) {
        fail_at(text, len, stop ? (size_t)(stop - text) : 0, NULL, err);
        return NULL;
    }
    const char *at = text;
    const char *bad = spell_numbers(root, &at);
    if (bad) {
        cJSON_Delete(root);
        fail_at(text, len, (size_t)(bad - text), "malformed number", err);
        return NULL;
    }
    dedupe(root);
    if (end)
        *end = (size_t)(stop - text);
    return root;
}

cJSON *peso_json_load(const char *path, const char *what, peso_err *err)
{
    char doing[256], *text;
    size_t n;
    snprintf(doing, sizeof doing, "cannot read %s", what);
    if (peso_read_file(path, doing, &text, &n, err))
        return NULL;
    cJSON *root = peso_json_parse(text, n, NULL, err);
    if (!root)
        peso_err_prefix(err, "%s: %s", path, doing);
    free(text);
    return root;
}

/* ---- reading values ---- */

cJSON *peso_json_get(const cJSON *o, const char *key)
{
    cJSON *v = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return cJSON_IsNull(v) ? NULL : v;
}

int peso_json_int64(const cJSON *v, int64_t *out)
{
    if (!cJSON_IsNumber(v))
        return -1;
    const char *s = v->valuestring;
    if (!s) {
        /* made by cJSON_CreateNumber: the double is all there is */
        double d = v->valuedouble;
        if (d != floor(d) || fabs(d) > JSON_EXACT_INT)
            return -1;
        *out = (int64_t)d;
        return 0;
    }
    if (strpbrk(s, ".eE"))
        return -1;
    char *e;
    errno = 0;
    long long x = strtoll(s, &e, 10);
    if (errno == ERANGE || *e || e == s)
        return -1;
    *out = x;
    return 0;
}

/* ---- writing ---- */

static void put_string(struct jbuf *b, const char *s)
{
    put(b, "\"", 1);
    for (;;) {
        size_t run = 0;
        while ((unsigned char)s[run] >= 0x20 && s[run] != '"' && s[run] != '\\')
            run++;
        put(b, s, run);
        s += run;
        if (!*s)
            break;
        char esc[8];
        switch (*s) {
        case '"': put_raw(b, "\\\""); break;
        case '\\': put_raw(b, "\\\\"); break;
        case '\b': put_raw(b, "\\b"); break;
        case '\f': put_raw(b, "\\f"); break;
        case '\n': put_raw(b, "\\n"); break;
        case '\r': put_raw(b, "\\r"); break;
        case '\t': put_raw(b, "\\t"); break;
        default: snprintf(esc, sizeof esc, "\\u%04x", (unsigned char)*s); put_raw(b, esc);
        }
        s++;
    }
    put(b, "\"", 1);
}

static void put_number(struct jbuf *b, const cJSON *v)
{
    char s[40];
    double d = v->valuedouble;
    if (v->valuestring)
        put_raw(b, v->valuestring);
    else if (d == floor(d) && fabs(d) <= JSON_EXACT_INT)
        snprintf(s, sizeof s, "%.0f", d), put_raw(b, s);
    else
        float_repr(s, sizeof s, d), put_raw(b, s);
}

static void put_indent(struct jbuf *b, int level, int pretty)
{
    for (int i = 0; pretty && i < level; i++)
        put(b, "  ", 2);
}

static void put_value(struct jbuf *b, const cJSON *v, int level, int pretty);

/* Pretty: the open bracket, a newline, members at level + 1 separated by
 * ",\n", a newline if there were any, the close bracket at level. */
static void put_container(struct jbuf *b, const cJSON *v, int level, int pretty)
{
    int obj = cJSON_IsObject(v);
    put(b, obj ? "{" : "[", 1);
    if (pretty)
        put(b, "\n", 1);
    for (const cJSON *c = v->child; c; c = c->next) {
        if (c != v->child)
            put_raw(b, pretty ? ",\n" : ",");
        put_indent(b, level + 1, pretty);
        if (obj) {
            put_string(b, c->string);
            put_raw(b, pretty ? ": " : ":");
        }
        put_value(b, c, level + 1, pretty);
    }
    if (pretty && v->child)
        put(b, "\n", 1);
    put_indent(b, level, pretty);
    put(b, obj ? "}" : "]", 1);
}

static void put_value(struct jbuf *b, const cJSON *v, int level, int pretty)
{
    if (cJSON_IsObject(v) || cJSON_IsArray(v))
        put_container(b, v, level, pretty);
    else if (cJSON_IsString(v))
        put_string(b, v->valuestring);
    else if (cJSON_IsNumber(v))
        put_number(b, v);
    else if (cJSON_IsRaw(v))
        put_raw(b, v->valuestring);
    else
        put_raw(b, cJSON_IsTrue(v) ? "true" : cJSON_IsFalse(v) ? "false" : "null");
}

char *peso_json_print(const cJSON *v)
{
    struct jbuf b = {0};
    put(&b, "", 0);
    put_value(&b, v, 0, 1);
    return b.p;
}

char *peso_json_print_line(const cJSON *v)
{
    struct jbuf b = {0};
    put(&b, "", 0);
    put_value(&b, v, 0, 1);
    put(&b, "\n", 1);
    return b.p;
}

char *peso_json_print_compact(const cJSON *v)
{
    struct jbuf b = {0};
    put(&b, "", 0);
    put_value(&b, v, 0, 0);
    return b.p;
}

int peso_json_write_file(const char *path, const cJSON *v, peso_err *err)
{
    char *text = peso_json_print_line(v);
    int rc = peso_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

const char *peso_json_brief(const cJSON *v, char *buf, size_t n)
{
    struct jbuf b = {0};
    put(&b, "", 0);
    put_value(&b, v, 0, 0);
    if (b.n < n) {
        memcpy(buf, b.p, b.n + 1);
    } else if (n >= 4) {
        memcpy(buf, b.p, n - 4);
        memcpy(buf + n - 4, "...", 4);
    } else if (n) {
        buf[0] = '\0';
    }
    free(b.p);
    return buf;
}
