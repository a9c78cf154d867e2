/* Errors are values: a library function returns 0 on success or -1 on
 * failure and fills a peso_err with a message that names the file, line,
 * key or field that was wrong and what was expected. Only a program's main
 * decides to exit. */
#ifndef PESO_COMMON_ERR_H
#define PESO_COMMON_ERR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PESO_ERR_MSG 2048

typedef struct peso_err {
    char msg[PESO_ERR_MSG];
} peso_err;

/* Formats a message into e (if e is not NULL) and returns -1, so that
 * `return peso_errf(err, "...")` both reports and fails. */
int peso_errf(peso_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message (adds context on the way up). */
int peso_err_prefix(peso_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Allocation that cannot fail silently: aborts with file:line on OOM. These
 * are the only functions that exit from inside the library, because no
 * caller can recover from running out of memory midway through a step. */
void *peso_malloc_check(size_t n, const char *file, int line);
void *peso_calloc_check(size_t n, size_t size, const char *file, int line);
void *peso_realloc_check(void *p, size_t n, const char *file, int line);
char *peso_strdup_check(const char *s, const char *file, int line);
#define peso_malloc(n) peso_malloc_check((n), __FILE__, __LINE__)
#define peso_calloc(n, s) peso_calloc_check((n), (s), __FILE__, __LINE__)
#define peso_realloc(p, n) peso_realloc_check((p), (n), __FILE__, __LINE__)
#define peso_strdup(s) peso_strdup_check((s), __FILE__, __LINE__)

/* Grows a dynamic array *p of *cap elements of size elt to hold at least
 * need elements (doubling). */
void peso_grow(void **p, size_t *cap, size_t need, size_t elt);

#ifdef __cplusplus
}
#endif

#endif
