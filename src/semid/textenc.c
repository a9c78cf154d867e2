#include "semid/textenc.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/strtab.h"

/* Final avalanche (splitmix64): peso_hash_bytes is FNV-based, whose low
 * bits, used for the bucket, depend weakly on the last bytes. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Rewrites text as lower-cased words separated by single spaces into norm;
 * returns the word count, word w spanning norm[start[w] .. end[w]). */
static size_t split_words(const char *text, size_t len, char *norm, size_t *start, size_t *end)
{
    size_t nw = 0, o = 0, i = 0;
    while (i < len) {
        while (i < len && !is_alnum((unsigned char)text[i]))
            i++;
        if (i == len)
            break;
        if (nw > 0)
            norm[o++] = ' ';
        start[nw] = o;
        for (; i < len && is_alnum((unsigned char)text[i]); i++) {
            unsigned char c = (unsigned char)text[i];
            norm[o++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
        }
        end[nw++] = o;
    }
    return nw;
}

void peso_textenc(const char *text, size_t len, float *out, int dim)
{
    if (dim <= 0)
        return;
    memset(out, 0, (size_t)dim * sizeof *out);
    if (!text || len == 0)
        return;
    /* At most len / 2 + 1 words: every word but the last needs a separator. */
    size_t maxw = len / 2 + 1;
    char *norm = peso_malloc(len + maxw);
    size_t *start = peso_malloc(maxw * sizeof *start);
    size_t *end = peso_malloc(maxw * sizeof *end);
    uint64_t *h = peso_malloc(2 * maxw * sizeof *h);
    size_t nw = split_words(text, len, norm, start, end), nf = 0;
    /* A bigram is the span "w1 w2": it contains a space, so it never
     * hashes as the same string as a unigram. */
    for (size_t w = 0; w < nw; w++) {
        h[nf++] = mix64(peso_hash_bytes(norm + start[w], end[w] - start[w]));
        if (w + 1 < nw)
            h[nf++] = mix64(peso_hash_bytes(norm + start[w], end[w + 1] - start[w]));
    }
    /* Sorting groups equal features, so tf is a run length. */
    qsort(h, nf, sizeof *h, cmp_u64);
    double *acc = peso_calloc((size_t)dim, sizeof *acc);
    for (size_t i = 0; i < nf;) {
        size_t j = i;
        while (j < nf && h[j] == h[i])
            j++;
        double wgt = log1p((double)(j - i));
        size_t bucket = (size_t)((h[i] & 0xffffffffu) % (uint64_t)dim);
        acc[bucket] += (h[i] >> 63) ? -wgt : wgt;
        i = j;
    }
    double ss = 0.0;
    for (int k = 0; k < dim; k++)
        ss += acc[k] * acc[k];
    if (ss > 0.0) {
        double inv = 1.0 / sqrt(ss);
        for (int k = 0; k < dim; k++)
            out[k] = (float)(acc[k] * inv);
    }
    free(acc);
    free(h);
    free(end);
    free(start);
    free(norm);
}
