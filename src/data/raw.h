/* Raw interactions as loaded, before the protocol: (user, item, time) in
 * input order, user and item ids interned to dense indices in first-seen
 * order, and optional item text for the text hashing encoder. Every loader
 * (amazon2023, amazon2014, csv, letter) and the synthetic generator fill one
 * of these; the protocol (split.h) only reads it. */
#ifndef PESO_DATA_RAW_H
#define PESO_DATA_RAW_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/strtab.h"
#include "conf/conf.h"

typedef struct peso_inter {
    int32_t user; /* index into raw->users */
    int32_t item; /* index into raw->items */
    int64_t ts;   /* milliseconds since the epoch; letter: position in the user's list */
} peso_inter;

typedef struct peso_raw {
    peso_inter *v;       /* in input order */
    size_t n, cap;
    peso_strtab *users;
    peso_strtab *items;
    int has_time;        /* 0 for letter: the chronological split refuses it */
    /* Item text (title, description, categories; or review summaries where
     * there is no metadata), indexed by item, NULL where none. Capped at
     * conf.data.max_text bytes per item. */
    char **item_text;
    size_t *item_text_len;
    size_t text_cap;     /* allocated entries of item_text / item_text_len */
    /* Malformed lines tolerated under --skip-bad-lines: "file:line: reason". */
    char **bad_lines;
    size_t n_bad, cap_bad;
    size_t lines_read;   /* input lines (records) seen, good or bad */
} peso_raw;

void peso_raw_init(peso_raw *r);
void peso_raw_free(peso_raw *r);
/* Appends one interaction (ids as strings). */
void peso_raw_add(peso_raw *r, const char *user, size_t ulen, const char *item, size_t ilen, int64_t ts);
/* Appends text to an item's text (space-separated, capped at max bytes). */
void peso_raw_add_text(peso_raw *r, int32_t item, const char *text, size_t len, size_t max);
/* Records a bad line; fails (returns -1 with the message) once more than
 * `limit` bad lines were seen. */
int peso_raw_bad_line(peso_raw *r, long limit, peso_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Loads the configured data.format (dispatch over the loaders below). */
int peso_raw_load(peso_raw *r, const peso_conf *c, peso_err *err);

int peso_load_amazon2023(peso_raw *r, const peso_conf *c, peso_err *err);
int peso_load_amazon2014(peso_raw *r, const peso_conf *c, peso_err *err);
int peso_load_csv(peso_raw *r, const peso_conf *c, peso_err *err);
int peso_load_letter(peso_raw *r, const peso_conf *c, peso_err *err);
int peso_synth_generate(peso_raw *r, const peso_conf *c, peso_err *err);

#endif
