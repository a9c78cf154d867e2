/* String interning: maps id strings (user ids, item ids) to dense indices
 * 0, 1, 2, ... in first-seen order. Open addressing, FNV-1a hash; strings
 * are copied into one arena. */
#ifndef PESO_COMMON_STRTAB_H
#define PESO_COMMON_STRTAB_H

#include <stddef.h>
#include <stdint.h>

typedef struct peso_strtab peso_strtab;

peso_strtab *peso_strtab_new(void);
void peso_strtab_free(peso_strtab *t);
/* Index of s (length len), inserting it if new. */
int32_t peso_strtab_intern(peso_strtab *t, const char *s, size_t len);
/* Index of s, or -1 if absent. */
int32_t peso_strtab_find(const peso_strtab *t, const char *s, size_t len);
size_t peso_strtab_count(const peso_strtab *t);
/* The string with index i (NUL-terminated, owned by the table). */
const char *peso_strtab_str(const peso_strtab *t, int32_t i);

uint64_t peso_hash_bytes(const void *p, size_t n);

#endif
