#include "common/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int peso_read_file(const char *path, const char *doing, char **text, size_t *len, peso_err *err)
{
    *text = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return peso_errf(err, "%s: %s: %s", path, doing, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0, got;
    do {
        peso_grow((void **)&buf, &cap, n + 65536 + 1, 1);
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
    } while (got > 0);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return peso_errf(err, "%s: %s: read error", path, doing);
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
}

int peso_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}
