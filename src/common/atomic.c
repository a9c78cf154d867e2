#include "common/atomic.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void peso_tmp_path(char *tmp, size_t n, const char *path)
{
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
}

int peso_commit_file(const char *tmp, const char *path, peso_err *err)
{
    int fd = open(tmp, O_RDONLY);
    if (fd < 0) {
        int e = errno;
        unlink(tmp);
        return peso_errf(err, "%s: cannot reopen temporary file: %s", tmp, strerror(e));
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return peso_errf(err, "%s: fsync failed: %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return peso_errf(err, "%s: cannot rename into place: %s", path, strerror(e));
    }
    return 0;
}

int peso_mkdir_p(const char *dir, peso_err *err)
{
    char p[PESO_PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof p)
        return peso_errf(err, "directory path '%s' is empty or too long", dir);
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] == '/' || p[i] == '\0') {
            char c = p[i];
            p[i] = '\0';
            if (mkdir(p, 0777) != 0 && errno != EEXIST)
                return peso_errf(err, "%s: cannot create directory: %s", p, strerror(errno));
            p[i] = c;
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return peso_errf(err, "%s: exists and is not a directory", dir);
    return 0;
}

int peso_dir_is_empty(const char *dir, int *empty, peso_err *err)
{
    DIR *d = opendir(dir);
    *empty = 1;
    if (!d)
        return errno == ENOENT ? 0 : peso_errf(err, "%s: cannot open directory: %s", dir, strerror(errno));
    struct dirent *e;
    while (*empty && (e = readdir(d)))
        *empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    return 0;
}

int peso_write_file_atomic(const char *path, const void *data, size_t n, peso_err *err)
{
    char tmp[PESO_PATH_MAX];
    peso_tmp_path(tmp, sizeof tmp, path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return peso_errf(err, "%s: cannot create: %s", tmp, strerror(errno));
    if (fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        unlink(tmp);
        return peso_errf(err, "%s: write failed: %s", tmp, strerror(errno));
    }
    return peso_commit_file(tmp, path, err);
}
