/* Delimited text loader: a header line names the columns, data.csv_user /
 * csv_item / csv_time pick three of them. Fields may be double-quoted as in
 * RFC 4180 ("" inside a quoted field is one quote; a field cannot span
 * lines). Times are integers or decimals (no exponent) in data.csv_time_unit
 * and are converted exactly, without floating point, to milliseconds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/lines.h"
#include "data/raw.h"

typedef struct csv_span {
    size_t off, len;
} csv_span;

/* One split line: field k is buf + f[k].off, NUL-terminated, unquoted. */
typedef struct csv_row {
    char *buf;
    size_t buf_cap;
    csv_span *f;
    size_t n, cap;
} csv_row;

typedef struct csv_opts {
    char delim;
    int64_t scale;       /* milliseconds per time unit: 1000 or 1 */
    const char *unit;    /* for messages */
    const char *name[3]; /* user, item, time column names */
    const char *key[3];  /* the config keys that named them */
    size_t col[3];       /* their positions in the header */
    size_t need;         /* 1 + the largest of col[] */
    const char *last;    /* the column at need - 1 */
} csv_opts;

enum { COL_USER, COL_ITEM, COL_TIME };

static void row_push(csv_row *row, size_t off, size_t len)
{
    peso_grow((void **)&row->f, &row->cap, row->n + 1, sizeof *row->f);
    row->f[row->n++] = (csv_span){off, len};
}

/* Copies one quoted field starting after its opening quote; returns the
 * position after the closing quote, or 0 if the quote is never closed. */
static size_t quoted_field(const char *s, size_t len, size_t pos, char *out, size_t *o)
{
    while (pos < len) {
        if (s[pos] != '"') {
            out[(*o)++] = s[pos++];
        } else if (pos + 1 < len && s[pos + 1] == '"') {
            out[(*o)++] = '"';
            pos += 2;
        } else {
            return pos + 1;
        }
    }
    return 0;
}

/* Splits s into row; returns -1 with the reason for bad quoting. */
static int csv_split(csv_row *row, const char *s, size_t len, char delim, peso_err *why)
{
    /* Unquoted text is never longer than the line; plus one NUL per field. */
    peso_grow((void **)&row->buf, &row->buf_cap, 2 * len + 2, 1);
    row->n = 0;
    size_t pos = 0, o = 0;
    for (;;) {
        size_t start = o;
        if (pos < len && s[pos] == '"') {
            pos = quoted_field(s, len, pos + 1, row->buf, &o);
            if (pos == 0)
                return peso_errf(why, "field %zu: quoted field not closed (a field cannot span lines)",
                                 row->n + 1);
            if (pos < len && s[pos] != delim)
                return peso_errf(why, "field %zu: '%c' after the closing quote (expected the delimiter)",
                                 row->n + 1, s[pos]);
        } else {
            for (; pos < len && s[pos] != delim; pos++) {
                if (s[pos] == '"')
                    return peso_errf(why,
                                     "field %zu: quote inside an unquoted field (quote the whole "
                                     "field and double the quote)",
                                     row->n + 1);
                row->buf[o++] = s[pos];
            }
        }
        row_push(row, start, o - start);
        row->buf[o++] = '\0';
        if (pos >= len)
            return 0;
        pos++; /* the delimiter; a trailing one ends with an empty field */
    }
}

/* Exact conversion of "[-+]digits[.digits]" in units of scale ms to ms,
 * rounding the dropped digits half away from zero. The integer part is at
 * most 15 digits (over 30,000 years in ms), so nothing can overflow. */
static int parse_time(const char *s, int64_t scale, int64_t *ms)
{
    int neg = *s == '-';
    if (*s == '-' || *s == '+')
        s++;
    int64_t v = 0;
    int digits = 0;
    for (; *s >= '0' && *s <= '9'; s++, digits++) {
        if (v > 99999999999999)
            return -1;
        v = v * 10 + (*s - '0');
    }
    v *= scale;
    if (*s == '.') {
        s++;
        /* scale 1000 keeps three fraction digits (ms), scale 1 none */
        int64_t place = scale;
        for (; *s >= '0' && *s <= '9'; s++, digits++) {
            if (place > 1) {
                place /= 10;
                v += (*s - '0') * place;
            } else if (place == 1) {
                v += *s >= '5';
                place = 0; /* only the first dropped digit rounds */
            }
        }
    }
    if (*s != '\0' || digits == 0)
        return -1;
    *ms = neg ? -v : v;
    return 0;
}

static int csv_opts_from_conf(csv_opts *o, const peso_conf *c, peso_err *err)
{
    const char *d = c->data.csv_delim;
    if (strcmp(d, "\\t") == 0)
        o->delim = '\t';
    else if (strlen(d) == 1 && d[0] != '"' && d[0] != '\n' && d[0] != '\r')
        o->delim = d[0];
    else
        return peso_errf(err,
                         "data.csv_delim: \"%s\" is not a delimiter (expected one character other "
                         "than a quote, or \"\\t\" for tab)",
                         d);
    if (strcmp(c->data.csv_time_unit, "s") == 0)
        o->scale = 1000;
    else if (strcmp(c->data.csv_time_unit, "ms") == 0)
        o->scale = 1;
    else
        return peso_errf(err, "data.csv_time_unit: unknown value \"%s\" (expected s or ms)",
                         c->data.csv_time_unit);
    o->unit = o->scale == 1 ? "milliseconds" : "seconds";
    const char *names[3] = {c->data.csv_user, c->data.csv_item, c->data.csv_time};
    const char *keys[3] = {"data.csv_user", "data.csv_item", "data.csv_time"};
    for (int k = 0; k < 3; k++) {
        if (names[k][0] == '\0')
            return peso_errf(err, "%s: empty (expected a column name of the header)", keys[k]);
        o->name[k] = names[k];
        o->key[k] = keys[k];
    }
    return 0;
}

/* Finds the three columns in the header row. */
static int csv_header(csv_opts *o, const csv_row *h, const char *path, peso_err *err)
{
    o->need = 0;
    for (int k = 0; k < 3; k++) {
        size_t j = 0;
        while (j < h->n && strcmp(h->buf + h->f[j].off, o->name[k]) != 0)
            j++;
        if (j == h->n) {
            char cols[512] = "";
            size_t used = 0;
            for (size_t i = 0; i < h->n && used < sizeof cols; i++)
                used += (size_t)snprintf(cols + used, sizeof cols - used, "%s\"%s\"", i ? ", " : "",
                                         h->buf + h->f[i].off);
            return peso_errf(err, "%s:1: no column \"%s\" (%s) in the header; its columns are: %s", path,
                             o->name[k], o->key[k], cols);
        }
        o->col[k] = j;
        if (j + 1 > o->need) {
            o->need = j + 1;
            o->last = o->name[k];
        }
    }
    return 0;
}

static int csv_record(peso_raw *r, const csv_opts *o, csv_row *row, const char *line, size_t len,
                      peso_err *why)
{
    if (len == 0)
        return peso_errf(why, "empty line (expected a record with %zu or more fields)", o->need);
    if (csv_split(row, line, len, o->delim, why))
        return -1;
    if (row->n < o->need)
        return peso_errf(why, "%zu field%s, expected %zu or more (column \"%s\" is field %zu)", row->n,
                         row->n == 1 ? "" : "s", o->need, o->last, o->need);
    const csv_span *u = &row->f[o->col[COL_USER]], *i = &row->f[o->col[COL_ITEM]];
    const csv_span *t = &row->f[o->col[COL_TIME]];
    for (int k = 0; k < 2; k++)
        if (row->f[o->col[k]].len == 0)
            return peso_errf(why, "column \"%s\": empty (expected an id)", o->name[k]);
    int64_t ms;
    if (parse_time(row->buf + t->off, o->scale, &ms))
        return peso_errf(why, "column \"%s\": expected an integer or decimal number of %s, got \"%s\"",
                         o->name[COL_TIME], o->unit, row->buf + t->off);
    peso_raw_add(r, row->buf + u->off, u->len, row->buf + i->off, i->len, ms);
    return 0;
}

/* Reads the header (skipping a UTF-8 byte order mark) and resolves columns. */
static int read_header(peso_lines *in, csv_opts *o, csv_row *row, const char *path, peso_err *err)
{
    char *line;
    size_t len;
    int rc = peso_lines_next(in, &line, &len, err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return peso_errf(err, "%s:1: empty file (expected a header line naming the columns)", path);
    if (len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
        line += 3;
        len -= 3;
    }
    peso_err why;
    if (csv_split(row, line, len, o->delim, &why))
        return peso_errf(err, "%s:1: header: %s", path, why.msg);
    return csv_header(o, row, path, err);
}

int peso_load_csv(peso_raw *r, const peso_conf *c, peso_err *err)
{
    csv_opts o = {0};
    if (csv_opts_from_conf(&o, c, err))
        return -1;
    if (c->data.meta[0])
        return peso_errf(err, "data.meta: set to \"%s\", but the csv format reads no metadata; expected \"\"",
                         c->data.meta);
    const char *path = c->data.reviews;
    peso_lines *in;
    if (peso_lines_open(&in, path, err))
        return -1;
    r->has_time = 1;
    csv_row row = {0};
    int rc = read_header(in, &o, &row, path, err) ? -1 : 1;
    char *line;
    size_t len;
    while (rc == 1 && (rc = peso_lines_next(in, &line, &len, err)) == 1) {
        r->lines_read++;
        peso_err why;
        if (csv_record(r, &o, &row, line, len, &why) &&
            peso_raw_bad_line(r, (long)c->data.skip_bad_lines, err, "%s:%ld: %s", path, peso_lines_lineno(in),
                              why.msg))
            rc = -1;
    }
    free(row.buf);
    free(row.f);
    peso_lines_close(in);
    return rc < 0 ? -1 : 0;
}
