#include "common/lines.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct peso_lines {
    gzFile gz;
    char *path;
    char *buf;
    size_t cap;
    long lineno;
    size_t bytes;
    int eof;
};

int peso_lines_open(peso_lines **out, const char *path, peso_err *err)
{
    *out = NULL;
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return peso_errf(err, "%s: cannot open for reading: %s", path,
                         errno ? strerror(errno) : "out of memory");
    gzbuffer(gz, 1 << 18);
    peso_lines *r = peso_calloc(1, sizeof *r);
    r->gz = gz;
    r->path = peso_strdup(path);
    r->cap = 1 << 16;
    r->buf = peso_malloc(r->cap);
    *out = r;
    return 0;
}

static int read_error(peso_lines *r, peso_err *err)
{
    int code = 0;
    const char *m = gzerror(r->gz, &code);
    if (code == Z_ERRNO)
        m = strerror(errno);
    return peso_errf(err, "%s:%ld: read error: %s", r->path, r->lineno + 1, m);
}

int peso_lines_next(peso_lines *r, char **line, size_t *len, peso_err *err)
{
    if (r->eof)
        return 0;
    size_t n = 0;
    for (;;) {
        if (r->cap - n < 2) {
            r->cap *= 2;
            r->buf = peso_realloc(r->buf, r->cap);
        }
        if (!gzgets(r->gz, r->buf + n, (int)(r->cap - n > (1u << 30) ? (1u << 30) : r->cap - n))) {
            int code = 0;
            gzerror(r->gz, &code);
            if (code != Z_OK && code != Z_BUF_ERROR)
                return read_error(r, err);
            /* zlib reports a truncated gzip stream as Z_BUF_ERROR at EOF */
            if (code == Z_BUF_ERROR)
                return peso_errf(err, "%s:%ld: truncated gzip stream (unexpected end of file)",
                                 r->path, r->lineno + 1);
            r->eof = 1;
            if (n == 0)
                return 0;
            break;
        }
        size_t got = strlen(r->buf + n);
        n += got;
        if (n > 0 && r->buf[n - 1] == '\n')
            break;
        if (gzeof(r->gz)) {
            int code = 0;
            gzerror(r->gz, &code);
            if (code == Z_BUF_ERROR)
                return peso_errf(err, "%s:%ld: truncated gzip stream (unexpected end of file)",
                                 r->path, r->lineno + 1);
            r->eof = 1;
            break;
        }
    }
    r->bytes += n;
    if (n > 0 && r->buf[n - 1] == '\n')
        n--;
    if (n > 0 && r->buf[n - 1] == '\r')
        n--;
    r->buf[n] = '\0';
    r->lineno++;
    *line = r->buf;
    *len = n;
    return 1;
}

long peso_lines_lineno(const peso_lines *r) { return r->lineno; }
const char *peso_lines_path(const peso_lines *r) { return r->path; }
size_t peso_lines_bytes(const peso_lines *r) { return r->bytes; }

void peso_lines_close(peso_lines *r)
{
    if (!r)
        return;
    gzclose(r->gz);
    free(r->path);
    free(r->buf);
    free(r);
}
