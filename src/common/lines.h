/* Streaming line reader over a plain or gzip file (zlib detects gzip by its
 * magic bytes, so `.gz` in the name is not required). The file is never held
 * whole: one line at a time, with its 1-based line number for messages.
 * A truncated or corrupt gzip stream is an error, not an early EOF. */
#ifndef PESO_COMMON_LINES_H
#define PESO_COMMON_LINES_H

#include <stddef.h>

#include "common/err.h"

typedef struct peso_lines peso_lines;

int peso_lines_open(peso_lines **r, const char *path, peso_err *err);
/* Next line without its '\n' (and '\r'). Returns 1 with line and len set, 0 at
 * end of file, -1 on a read or decompression error (message names the file
 * and line). The buffer stays valid until the next call. */
int peso_lines_next(peso_lines *r, char **line, size_t *len, peso_err *err);
/* 1-based number of the line last returned. */
long peso_lines_lineno(const peso_lines *r);
const char *peso_lines_path(const peso_lines *r);
/* Bytes of the (decompressed) input consumed so far. */
size_t peso_lines_bytes(const peso_lines *r);
void peso_lines_close(peso_lines *r);

#endif
