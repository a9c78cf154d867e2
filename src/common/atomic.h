/* Outputs are written to a temporary name beside the final one and renamed
 * into place when complete, so a crash never leaves a half file under the
 * real name and an existing file is replaced only by a whole one. */
#ifndef PESO_COMMON_ATOMIC_H
#define PESO_COMMON_ATOMIC_H

#include <stdio.h>

#include "common/err.h"

#define PESO_PATH_MAX 4096

/* tmp = "<path>.tmp.<pid>" */
void peso_tmp_path(char *tmp, size_t n, const char *path);
/* fsync(tmp) and rename(tmp, path); on failure removes tmp. */
int peso_commit_file(const char *tmp, const char *path, peso_err *err);
/* Creates a directory and its parents (mkdir -p). */
int peso_mkdir_p(const char *dir, peso_err *err);
/* *empty = 1 when dir has no entries or does not exist (so an output
 * folder can be refused when it already holds something); -1 when dir
 * exists but cannot be listed (not a directory, no permission). */
int peso_dir_is_empty(const char *dir, int *empty, peso_err *err);
/* Writes a whole buffer to path atomically. */
int peso_write_file_atomic(const char *path, const void *data, size_t n, peso_err *err);

#endif
