/* The raw interaction table every loader fills, and the dispatch from
 * data.format to a loader. The caller initialises the table with
 * peso_raw_init; loaders append to it, and on failure it holds what was read
 * so far, still to be freed with peso_raw_free. */
#include "data/raw.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void peso_raw_init(peso_raw *r)
{
    memset(r, 0, sizeof *r);
    r->users = peso_strtab_new();
    r->items = peso_strtab_new();
    r->has_time = 1; /* every source but letter has timestamps */
}

void peso_raw_free(peso_raw *r)
{
    free(r->v);
    peso_strtab_free(r->users);
    peso_strtab_free(r->items);
    for (size_t i = 0; i < r->text_cap; i++)
        free(r->item_text[i]);
    free(r->item_text);
    free(r->item_text_len);
    for (size_t i = 0; i < r->n_bad; i++)
        free(r->bad_lines[i]);
    free(r->bad_lines);
    memset(r, 0, sizeof *r);
}

void peso_raw_add(peso_raw *r, const char *user, size_t ulen, const char *item, size_t ilen, int64_t ts)
{
    peso_grow((void **)&r->v, &r->cap, r->n + 1, sizeof *r->v);
    r->v[r->n].user = peso_strtab_intern(r->users, user, ulen);
    r->v[r->n].item = peso_strtab_intern(r->items, item, ilen);
    r->v[r->n].ts = ts;
    r->n++;
}

/* Makes item_text / item_text_len hold at least n entries, new ones empty. */
static void text_reserve(peso_raw *r, size_t n)
{
    if (n <= r->text_cap)
        return;
    size_t old = r->text_cap, cap = old;
    peso_grow((void **)&r->item_text, &cap, n, sizeof *r->item_text);
    r->item_text_len = peso_realloc(r->item_text_len, cap * sizeof *r->item_text_len);
    memset(r->item_text + old, 0, (cap - old) * sizeof *r->item_text);
    memset(r->item_text_len + old, 0, (cap - old) * sizeof *r->item_text_len);
    r->text_cap = cap;
}

/* Largest k <= n such that text[0..k) does not end inside a UTF-8 sequence,
 * so that capping never leaves half a character for the text encoder. */
static size_t utf8_cut(const char *text, size_t len, size_t n)
{
    if (n >= len)
        return len;
    while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80)
        n--;
    return n;
}

void peso_raw_add_text(peso_raw *r, int32_t item, const char *text, size_t len, size_t max)
{
    if (item < 0 || len == 0)
        return;
    text_reserve(r, (size_t)item + 1);
    size_t cur = r->item_text_len[item];
    size_t sep = cur > 0;
    if (cur + sep >= max)
        return;
    size_t take = utf8_cut(text, len, max - cur - sep);
    if (take == 0)
        return;
    char *t = peso_realloc(r->item_text[item], cur + sep + take + 1);
    if (sep)
        t[cur] = ' ';
    memcpy(t + cur + sep, text, take);
    t[cur + sep + take] = '\0';
    r->item_text[item] = t;
    r->item_text_len[item] = cur + sep + take;
}

int peso_raw_bad_line(peso_raw *r, long limit, peso_err *err, const char *fmt, ...)
{
    char msg[PESO_ERR_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    peso_grow((void **)&r->bad_lines, &r->cap_bad, r->n_bad + 1, sizeof *r->bad_lines);
    r->bad_lines[r->n_bad++] = peso_strdup(msg);
    if ((long)r->n_bad <= limit)
        return 0;
    return peso_errf(err, "%s (%zu bad line%s, more than data.skip_bad_lines = %ld)", msg, r->n_bad,
                     r->n_bad == 1 ? "" : "s", limit);
}

typedef struct loader {
    const char *format;
    int (*load)(peso_raw *r, const peso_conf *c, peso_err *err);
    int needs_reviews; /* reads data.reviews */
} loader;

static const loader loaders[] = {
    {"amazon2023", peso_load_amazon2023, 1},
    {"amazon2014", peso_load_amazon2014, 1},
    {"csv", peso_load_csv, 1},
    {"letter", peso_load_letter, 1},
    {"synthetic", peso_synth_generate, 0},
};

int peso_raw_load(peso_raw *r, const peso_conf *c, peso_err *err)
{
    const loader *l = NULL;
    for (size_t k = 0; k < sizeof loaders / sizeof loaders[0]; k++)
        if (strcmp(c->data.format, loaders[k].format) == 0)
            l = &loaders[k];
    if (!l)
        return peso_errf(err,
                         "data.format: unknown value \"%s\" (expected amazon2023, amazon2014, csv, "
                         "letter or synthetic)",
                         c->data.format);
    if (l->needs_reviews && c->data.reviews[0] == '\0')
        return peso_errf(err, "data.reviews: not set (the %s format reads its interactions from it)",
                         l->format);
    if (l->load(r, c, err))
        return -1;
    /* Consumers index item_text by any item without a bounds check. */
    text_reserve(r, peso_strtab_count(r->items));
    return 0;
}
