/* What the tokenizer (tokenizer.c: loading, encoding, decoding, saving)
 * shares with the small-vocabulary builder (tokenizer_build.c); not part of
 * the public contract in tokenizer.h. */
#ifndef PESO_HF_TOKENIZER_INTERNAL_H
#define PESO_HF_TOKENIZER_INTERNAL_H

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <cJSON.h>
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "hf/tokenizer.h"

/* A growable byte buffer, kept NUL-terminated. */
struct tok_buf {
    unsigned char *p;
    size_t n, cap;
};

void peso_tok_buf_put(struct tok_buf *b, const void *s, size_t n);

/* Byte string -> id map (open addressing); keys are copied. */
struct tok_bmap_entry {
    size_t off, len;
    int32_t val;
};

struct tok_bmap {
    uint32_t *slots; /* entry index + 1; 0 = empty */
    size_t nslots;
    struct tok_bmap_entry *e;
    size_t n, cap;
    struct tok_buf keys;
};

void peso_tok_bmap_free(struct tok_bmap *m);
/* The value of key k, or -1. */
int32_t peso_tok_bmap_get(const struct tok_bmap *m, const void *k, size_t len);
/* Inserts or overwrites. */
void peso_tok_bmap_put(struct tok_bmap *m, const void *k, size_t len, int32_t val);

/* A (left, right) id pair as one ordered key. */
static inline uint64_t peso_tok_pair_key(int32_t l, int32_t r)
{
    return ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
}

/* The byte-level spelling of a byte string (GPT-2's byte alphabet;
 * malloc'd, NUL-terminated). */
char *peso_tok_spell(const unsigned char *s, size_t n);

/* A piece of text: bytes [off, off + len), an added token's id or -1. */
struct tok_span {
    size_t off, len;
    int32_t id;
};

struct tok_spans {
    struct tok_span *v;
    size_t n, cap;
};

/* Compiles a pre-tokenizer pattern (UTF, UCP unless opts has
 * PCRE2_LITERAL); messages name path and key. */
int peso_tok_compile(const char *path, pcre2_code **re, const char *pattern, uint32_t opts, const char *key,
                     peso_err *err);
/* Isolated split of w's bytes [in.off, in.off + in.len): the matches and
 * the gaps between them are appended to out as pieces. */
int peso_tok_regex_split(const char *path, const pcre2_code *re, pcre2_match_data *md,
                         const struct tok_buf *w, struct tok_span in, struct tok_spans *out, peso_err *err);
/* Fails naming the byte offset of the first invalid UTF-8 sequence. */
int peso_tok_check_utf8(const char *text, size_t len, peso_err *err);
/* Builds a tokenizer from a parsed tokenizer.json, which it takes over
 * (freed on failure too); path names it in messages. */
int peso_tok_from_root(peso_tok **out, cJSON *root, const char *path, peso_err *err);

#endif
