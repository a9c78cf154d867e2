/* LETTER / LC-Rec interaction file (.inter.json): one JSON object
 * {"<user index>": [item index, ...], ...}, each list in chronological order
 * but without timestamps. Users are the keys in file order, item ids the
 * decimal strings of the item indices (the .index.json semantic IDs, read by
 * the semid module, use the same strings), and ts is the position in the
 * user's list. Unlike the line formats the file is one value, so it is read
 * whole (plain or gzip) before parsing; each user entry is one record. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "common/lines.h"
#include "data/raw.h"

#define LETTER_SHAPE "{\"<user>\": [item index, ...], ...}"

/* The whole file as one NUL-terminated string, lines joined by '\n'. */
static int read_whole(const char *path, char **text, size_t *n, peso_err *err)
{
    peso_lines *in;
    if (peso_lines_open(&in, path, err))
        return -1;
    size_t cap = 0;
    char *line;
    size_t len;
    int rc;
    *text = NULL;
    *n = 0;
    while ((rc = peso_lines_next(in, &line, &len, err)) == 1) {
        peso_grow((void **)text, &cap, *n + len + 2, 1);
        memcpy(*text + *n, line, len);
        (*text)[*n + len] = '\n';
        *n += len + 1;
    }
    peso_lines_close(in);
    if (rc < 0) {
        free(*text);
        return -1;
    }
    peso_grow((void **)text, &cap, *n + 1, 1);
    (*text)[*n] = '\0';
    return 0;
}

static long line_of(const char *text, const char *at)
{
    long line = 1;
    for (const char *p = text; p < at; p++)
        line += *p == '\n';
    return line;
}

/* Checks one user's list; returns -1 with the reason. */
static int check_entry(const peso_raw *r, const cJSON *e, peso_err *why)
{
    if (e->string[0] == '\0')
        return peso_errf(why, "empty user key (expected the user index)");
    if (peso_strtab_find(r->users, e->string, strlen(e->string)) >= 0)
        return peso_errf(why, "user \"%s\" appears twice (expected each user once)", e->string);
    if (!cJSON_IsArray(e))
        return peso_errf(why, "user \"%s\": expected a list of item indices", e->string);
    int k = 0;
    for (const cJSON *v = e->child; v; v = v->next, k++)
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 2147483647.0 ||
            v->valuedouble != floor(v->valuedouble))
            return peso_errf(why, "user \"%s\": element %d: expected a non-negative integer item index",
                             e->string, k);
    return 0;
}

static void add_entry(peso_raw *r, const cJSON *e)
{
    size_t ulen = strlen(e->string);
    int64_t pos = 0;
    for (const cJSON *v = e->child; v; v = v->next, pos++) {
        char item[16];
        int ilen = snprintf(item, sizeof item, "%ld", (long)v->valuedouble);
        peso_raw_add(r, e->string, ulen, item, (size_t)ilen, pos);
    }
}

int peso_load_letter(peso_raw *r, const peso_conf *c, peso_err *err)
{
    const char *path = c->data.reviews;
    char *text;
    size_t n;
    if (read_whole(path, &text, &n, err))
        return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n + 1, &end, 1);
    int rc = 0;
    if (!root) {
        const char *at = end ? end : text;
        const char *bol = at;
        while (bol > text && bol[-1] != '\n')
            bol--;
        rc = peso_errf(err, "%s:%ld: malformed JSON at column %ld (expected one object " LETTER_SHAPE ")",
                       path, line_of(text, at), (long)(at - bol) + 1);
    } else if (!cJSON_IsObject(root)) {
        rc = peso_errf(err, "%s:1: expected one JSON object " LETTER_SHAPE, path);
    }
    r->has_time = 0;
    long entry = 0;
    for (const cJSON *e = root && cJSON_IsObject(root) ? root->child : NULL; e && rc == 0; e = e->next) {
        entry++;
        r->lines_read++;
        peso_err why;
        if (check_entry(r, e, &why) == 0)
            add_entry(r, e);
        else if (peso_raw_bad_line(r, (long)c->data.skip_bad_lines, err, "%s: entry %ld: %s", path, entry,
                                   why.msg))
            rc = -1;
    }
    cJSON_Delete(root);
    free(text);
    return rc;
}
