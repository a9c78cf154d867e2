#include "common/lines.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define CHUNK (1u << 18)

/* Input is read in chunks with gzread and split at '\n' with memchr, so a
 * NUL byte inside a line neither ends nor merges lines: the line comes back
 * whole with its true length (and the parser then rejects it). */
struct peso_lines {
    gzFile gz;
    char *path;
    char *chunk;        /* raw input window */
    size_t pos, end;    /* unread bytes are chunk[pos..end) */
    char *line;         /* the line returned last, NUL-terminated */
    size_t cap;
    long lineno;
    size_t bytes;
    int eof;
};

int peso_lines_open(peso_lines **out, const char *path, peso_err *err)
{
    *out = NULL;
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return peso_errf(err, "%s: cannot open for reading: %s", path,
                         errno ? strerror(errno) : "out of memory");
    peso_lines *r = peso_calloc(1, sizeof *r);
    r->gz = gz;
    r->path = peso_strdup(path);
    r->chunk = peso_malloc(CHUNK);
    r->cap = 1 << 16;
    r->line = peso_malloc(r->cap);
    *out = r;
    return 0;
}

/* Refills the chunk; returns bytes read (0 at a clean end), -1 on error. */
static int refill(peso_lines *r, peso_err *err)
{
    int got = gzread(r->gz, r->chunk, CHUNK);
    int code = 0;
    const char *m = gzerror(r->gz, &code);
    /* At a truncated end gzread returns the data it could inflate and sets
     * Z_BUF_ERROR: hand out those lines first, fail on the next refill. */
    if (got > 0 && code == Z_BUF_ERROR) {
        r->pos = 0;
        r->end = (size_t)got;
        return got;
    }
    if (got < 0 || (code != Z_OK && code != Z_STREAM_END)) {
        if (code == Z_BUF_ERROR)
            return peso_errf(err, "%s:%ld: truncated gzip stream (unexpected end of file)", r->path,
                             r->lineno + 1);
        return peso_errf(err, "%s:%ld: read error: %s", r->path, r->lineno + 1,
                         code == Z_ERRNO ? strerror(errno) : m);
    }
    r->pos = 0;
    r->end = (size_t)got;
    return got;
}

static void append(peso_lines *r, size_t *n, const char *p, size_t len)
{
    if (*n + len + 1 > r->cap) {
        while (*n + len + 1 > r->cap)
            r->cap *= 2;
        r->line = peso_realloc(r->line, r->cap);
    }
    memcpy(r->line + *n, p, len);
    *n += len;
}

int peso_lines_next(peso_lines *r, char **line, size_t *len, peso_err *err)
{
    if (r->eof)
        return 0;
    size_t n = 0;
    int any = 0;
    for (;;) {
        if (r->pos == r->end) {
            int got = refill(r, err);
            if (got < 0)
                return -1;
            if (got == 0) {
                r->eof = 1;
                if (!any)
                    return 0;
                break;
            }
        }
        any = 1;
        const char *p = r->chunk + r->pos;
        const char *nl = memchr(p, '\n', r->end - r->pos);
        size_t take = nl ? (size_t)(nl - p) : r->end - r->pos;
        append(r, &n, p, take);
        r->pos += take + (nl ? 1 : 0);
        r->bytes += take + (nl ? 1 : 0);
        if (nl)
            break;
    }
    if (n > 0 && r->line[n - 1] == '\r')
        n--;
    r->line[n] = '\0';
    r->lineno++;
    *line = r->line;
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
    free(r->chunk);
    free(r->line);
    free(r);
}
