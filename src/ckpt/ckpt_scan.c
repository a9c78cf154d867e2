/* peso_ckpt_newest: the newest checkpoint of an output directory that
 * reads whole and holds what its name says (naming in ckpt.h). */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt_internal.h"
#include "common/atomic.h"

void peso_ckpt_skipped_free(peso_ckpt_skipped *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->msgs[i]);
    free(s->msgs);
    memset(s, 0, sizeof *s);
}

static void skip(peso_ckpt_skipped *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void skip(peso_ckpt_skipped *s, const char *fmt, ...)
{
    if (!s)
        return;
    char buf[PESO_ERR_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    peso_grow((void **)&s->msgs, &s->cap, s->n + 1, sizeof *s->msgs);
    s->msgs[s->n++] = peso_strdup(buf);
}

/* A checkpoint name: stage-<t>.h5 or stage-<t>-step-<s>.h5 (decimal
 * digits only); *step = INT64_MAX for a final one, so it sorts last. */
typedef struct cand {
    char *name;
    int stage;
    int64_t step;
} cand;

static int parse_digits(const char **p, int64_t max, int64_t *v)
{
    const char *c = *p;
    int64_t x = 0;
    if (*c < '0' || *c > '9')
        return 0;
    for (; *c >= '0' && *c <= '9'; c++) {
        if (x > (max - (*c - '0')) / 10)
            return 0;
        x = x * 10 + (*c - '0');
    }
    *p = c;
    *v = x;
    return 1;
}

static int parse_name(const char *name, int *stage, int64_t *step)
{
    const char *p = name;
    int64_t t, s = INT64_MAX;
    if (strncmp(p, "stage-", 6) != 0)
        return 0;
    p += 6;
    if (!parse_digits(&p, INT32_MAX, &t))
        return 0;
    if (strncmp(p, "-step-", 6) == 0) {
        p += 6;
        if (!parse_digits(&p, INT64_MAX - 1, &s))
            return 0;
    }
    if (strcmp(p, ".h5") != 0)
        return 0;
    *stage = (int)t;
    *step = s;
    return 1;
}

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->stage != y->stage)
        return x->stage > y->stage ? -1 : 1;
    if (x->step != y->step)
        return x->step > y->step ? -1 : 1;
    return 0;
}

static int list_cands(const char *dir, cand **out, size_t *n_out, peso_ckpt_skipped *skipped, peso_err *err)
{
    DIR *d = opendir(dir);
    *out = NULL;
    *n_out = 0;
    if (!d) {
        if (errno == ENOENT)
            return 0;
        return peso_errf(err, "%s: cannot list checkpoints: %s", dir, strerror(errno));
    }
    cand *c = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int t;
        int64_t s;
        if (strncmp(e->d_name, "stage-", 6) == 0 && strstr(e->d_name, ".tmp."))
            skip(skipped, "%s/%s: temporary file of an unfinished write, ignored", dir, e->d_name);
        if (!parse_name(e->d_name, &t, &s))
            continue;
        peso_grow((void **)&c, &cap, n + 1, sizeof *c);
        c[n].name = peso_strdup(e->d_name);
        c[n].stage = t;
        c[n].step = s;
        n++;
    }
    closedir(d);
    if (n > 1)
        qsort(c, n, sizeof *c, cand_cmp);
    *out = c;
    *n_out = n;
    return 0;
}

int peso_ckpt_newest(const char *out_dir, int *stage, int64_t *step, char *path, size_t path_n,
                     peso_ckpt_skipped *skipped, peso_err *err)
{
    cand *c = NULL;
    size_t n = 0;
    *stage = -1;
    *step = -1;
    if (path_n)
        path[0] = '\0';
    if (list_cands(out_dir, &c, &n, skipped, err) < 0)
        return -1;
    for (size_t i = 0; i < n && *stage < 0; i++) {
        char p[PESO_PATH_MAX];
        int w = snprintf(p, sizeof p, "%s/%s", out_dir, c[i].name);
        peso_ckpt ck;
        peso_err e;
        if (w < 0 || (size_t)w >= sizeof p || (size_t)w >= path_n) {
            skip(skipped, "%s/%s: path too long, ignored", out_dir, c[i].name);
            continue;
        }
        int want_kind = c[i].step == INT64_MAX ? PESO_CKPT_FINAL : PESO_CKPT_PARTIAL;
        if (peso_ckpt_read(p, &ck, &e) < 0) {
            skip(skipped, "%s (ignored)", e.msg);
        } else if (ck.stage != c[i].stage || (int)ck.kind != want_kind ||
                   (want_kind == PESO_CKPT_PARTIAL && ck.step != c[i].step)) {
            /* A renamed or copied file would resume from the wrong place. */
            skip(skipped,
                 "%s: holds the %s checkpoint of stage %d step %" PRId64 ", not what its name says "
                 "(ignored)",
                 p, peso_ckpt_kind_name(ck.kind), ck.stage, ck.step);
        } else {
            *stage = c[i].stage;
            *step = c[i].step == INT64_MAX ? -1 : c[i].step;
            memcpy(path, p, (size_t)w + 1);
        }
        peso_ckpt_free(&ck);
    }
    for (size_t i = 0; i < n; i++)
        free(c[i].name);
    free(c);
    return 0;
}
