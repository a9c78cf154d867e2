#include "common/strtab.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"

struct peso_strtab {
    int32_t *slots;   /* index+1, 0 = empty */
    size_t nslots;    /* power of two */
    size_t *off;      /* offset of string i in arena */
    size_t n, cap_off;
    char *arena;
    size_t arena_len, arena_cap;
};

uint64_t peso_hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

peso_strtab *peso_strtab_new(void)
{
    peso_strtab *t = peso_calloc(1, sizeof *t);
    t->nslots = 1024;
    t->slots = peso_calloc(t->nslots, sizeof *t->slots);
    return t;
}

void peso_strtab_free(peso_strtab *t)
{
    if (!t)
        return;
    free(t->slots);
    free(t->off);
    free(t->arena);
    free(t);
}

static int32_t lookup(const peso_strtab *t, const char *s, size_t len, size_t *slot)
{
    size_t mask = t->nslots - 1;
    size_t i = peso_hash_bytes(s, len) & mask;
    for (;;) {
        int32_t v = t->slots[i];
        if (v == 0) {
            *slot = i;
            return -1;
        }
        const char *o = t->arena + t->off[v - 1];
        if (strncmp(o, s, len) == 0 && o[len] == '\0') {
            *slot = i;
            return v - 1;
        }
        i = (i + 1) & mask;
    }
}

static void rehash(peso_strtab *t)
{
    size_t n = t->nslots * 2;
    int32_t *s = peso_calloc(n, sizeof *s);
    for (size_t k = 0; k < t->n; k++) {
        const char *str = t->arena + t->off[k];
        size_t i = peso_hash_bytes(str, strlen(str)) & (n - 1);
        while (s[i])
            i = (i + 1) & (n - 1);
        s[i] = (int32_t)k + 1;
    }
    free(t->slots);
    t->slots = s;
    t->nslots = n;
}

int32_t peso_strtab_intern(peso_strtab *t, const char *s, size_t len)
{
    size_t slot;
    int32_t v = lookup(t, s, len, &slot);
    if (v >= 0)
        return v;
    peso_grow((void **)&t->arena, &t->arena_cap, t->arena_len + len + 1, 1);
    memcpy(t->arena + t->arena_len, s, len);
    t->arena[t->arena_len + len] = '\0';
    peso_grow((void **)&t->off, &t->cap_off, t->n + 1, sizeof *t->off);
    t->off[t->n] = t->arena_len;
    t->arena_len += len + 1;
    t->slots[slot] = (int32_t)t->n + 1;
    t->n++;
    if (t->n * 2 > t->nslots)
        rehash(t);
    return (int32_t)t->n - 1;
}

int32_t peso_strtab_find(const peso_strtab *t, const char *s, size_t len)
{
    size_t slot;
    return lookup(t, s, len, &slot);
}

size_t peso_strtab_count(const peso_strtab *t) { return t->n; }

const char *peso_strtab_str(const peso_strtab *t, int32_t i) { return t->arena + t->off[i]; }
