#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "semid/textenc.h"

#define DIM 4096

static float *enc(const char *s, int dim)
{
    float *v = malloc((size_t)dim * sizeof *v);
    peso_textenc(s, s ? strlen(s) : 0, v, dim);
    return v;
}

static double dotp(const float *a, const float *b, int dim)
{
    double s = 0.0;
    for (int i = 0; i < dim; i++)
        s += (double)a[i] * b[i];
    return s;
}

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The absolute values of the non-zero entries, ascending; returns count. */
static int nonzero_abs(const float *v, int dim, float *out)
{
    int k = 0;
    for (int i = 0; i < dim; i++)
        if (v[i] != 0.0f)
            out[k++] = fabsf(v[i]);
    qsort(out, (size_t)k, sizeof *out, cmp_f);
    return k;
}

Test(textenc, deterministic_and_case_punctuation_blind)
{
    float *a = enc("Fender Stratocaster, electric GUITAR (sunburst)!", 256);
    float *b = enc("fender stratocaster electric guitar sunburst", 256);
    float *c = enc("Fender Stratocaster, electric GUITAR (sunburst)!", 256);
    cr_assert(memcmp(a, b, 256 * sizeof *a) == 0);
    cr_assert(memcmp(a, c, 256 * sizeof *a) == 0);
    free(a);
    free(b);
    free(c);
}

Test(textenc, non_ascii_bytes_separate_words)
{
    float *a = enc("caf\xc3\xa9 au lait", 512);
    float *b = enc("caf au lait", 512);
    cr_assert(memcmp(a, b, 512 * sizeof *a) == 0);
    free(a);
    free(b);
}

Test(textenc, unit_norm)
{
    const char *t[] = {"a", "one two three four five six", "Yamaha P-45 88-key weighted digital piano",
                       "x x x x x x x x y"};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        float *v = enc(t[i], 128);
        cr_assert_float_eq(sqrt(dotp(v, v, 128)), 1.0, 1e-6, "%s", t[i]);
        free(v);
    }
}

Test(textenc, empty_text_is_zero)
{
    const char *t[] = {NULL, "", "!!! --- ...", "\xc3\xa9\xc3\xa8"};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        float *v = enc(t[i], 64);
        for (int j = 0; j < 64; j++)
            cr_assert(v[j] == 0.0f);
        free(v);
    }
}

Test(textenc, one_word_is_one_signed_unit_bucket)
{
    float *v = enc("guitar", DIM), nz[DIM];
    cr_assert_eq(nonzero_abs(v, DIM, nz), 1);
    cr_assert(nz[0] == 1.0f);
    free(v);
}

/* "a a": unigram "a" twice (log 3), bigram "a a" once (log 2). */
Test(textenc, log_term_frequency)
{
    float *v = enc("a a", DIM), nz[DIM];
    cr_assert_eq(nonzero_abs(v, DIM, nz), 2);
    double n = sqrt(log(2.0) * log(2.0) + log(3.0) * log(3.0));
    cr_assert_float_eq(nz[0], log(2.0) / n, 1e-6);
    cr_assert_float_eq(nz[1], log(3.0) / n, 1e-6);
    free(v);
}

/* "x y z": three unigrams and two bigrams, each once. */
Test(textenc, unigrams_and_bigrams)
{
    float *v = enc("x y z", DIM), nz[DIM];
    cr_assert_eq(nonzero_abs(v, DIM, nz), 5);
    for (int i = 0; i < 5; i++)
        cr_assert_float_eq(nz[i], 1.0 / sqrt(5.0), 1e-6);
    free(v);
}

/* Same unigrams, different bigram: cosine (1 + 1 + 0) / 3. */
Test(textenc, bigrams_carry_word_order)
{
    float *a = enc("red guitar", DIM), *b = enc("guitar red", DIM);
    cr_assert_float_eq(dotp(a, b, DIM), 2.0 / 3.0, 1e-6);
    free(a);
    free(b);
}

Test(textenc, hashing_is_signed)
{
    int neg = 0, pos = 0;
    for (int w = 0; w < 64; w++) {
        char word[16];
        snprintf(word, sizeof word, "word%d", w);
        float *v = enc(word, DIM);
        for (int j = 0; j < DIM; j++) {
            neg += v[j] < 0.0f;
            pos += v[j] > 0.0f;
        }
        free(v);
    }
    cr_assert_eq(neg + pos, 64);
    cr_assert(neg >= 16 && pos >= 16, "neg %d pos %d", neg, pos);
}

Test(textenc, similar_texts_are_closer)
{
    float *a = enc("Ernie Ball Regular Slinky electric guitar strings 10-46", 256);
    float *b = enc("Ernie Ball Super Slinky electric guitar strings 9-42", 256);
    float *c = enc("Vic Firth American Classic 5A drumsticks hickory", 256);
    double ab = dotp(a, b, 256), ac = dotp(a, c, 256), bc = dotp(b, c, 256);
    cr_assert(ab > 0.4, "ab %g", ab);
    cr_assert(ab > ac + 0.3 && ab > bc + 0.3, "ab %g ac %g bc %g", ab, ac, bc);
    free(a);
    free(b);
    free(c);
}
