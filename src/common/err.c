#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int peso_errf(peso_err *e, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int peso_err_prefix(peso_err *e, const char *fmt, ...)
{
    if (e) {
        char pre[PESO_ERR_MSG];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(pre, sizeof pre - 2, fmt, ap);
        va_end(ap);
        size_t pl = n < 0 ? 0 : (size_t)n < sizeof pre - 2 ? (size_t)n : sizeof pre - 3;
        memcpy(pre + pl, ": ", 3);
        pl += 2;
        size_t ml = strnlen(e->msg, sizeof e->msg - 1);
        if (pl + ml >= sizeof e->msg)
            ml = sizeof e->msg - 1 - pl;
        memmove(e->msg + pl, e->msg, ml);
        memcpy(e->msg, pre, pl);
        e->msg[pl + ml] = '\0';
    }
    return -1;
}

static void oom(size_t n, const char *file, int line)
{
    fprintf(stderr, "peso: out of memory allocating %zu bytes at %s:%d\n", n, file, line);
    abort();
}

void *peso_malloc_check(size_t n, const char *file, int line)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n, file, line);
    return p;
}

void *peso_calloc_check(size_t n, size_t size, const char *file, int line)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size, file, line);
    return p;
}

void *peso_realloc_check(void *p, size_t n, const char *file, int line)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n, file, line);
    return q;
}

char *peso_strdup_check(const char *s, const char *file, int line)
{
    size_t n = strlen(s) + 1;
    char *d = peso_malloc_check(n, file, line);
    memcpy(d, s, n);
    return d;
}

void peso_grow(void **p, size_t *cap, size_t need, size_t elt)
{
    if (need <= *cap)
        return;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    *p = peso_realloc(*p, c * elt);
    *cap = c;
}
