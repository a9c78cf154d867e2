/* Reading a whole (small) input file: configs, JSON headers, indexes. */
#ifndef PESO_COMMON_FILE_H
#define PESO_COMMON_FILE_H

#include <stddef.h>

#include "common/err.h"

/* Reads path into *text (malloc'd, NUL-terminated; *len bytes without the
 * NUL). On failure the message is "<path>: <doing>: <reason>", e.g.
 * doing = "cannot open config". */
int peso_read_file(const char *path, const char *doing, char **text, size_t *len, peso_err *err);

/* 1 when something exists at path (stat succeeds), else 0. */
int peso_file_exists(const char *path);

#endif
