#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <math.h>
#include <zlib.h>

#include "common/atomic.h"
#include "common/lines.h"
#include "common/rng.h"
#include "common/strtab.h"

Test(strtab, dense_indices_in_first_seen_order_across_rehash)
{
    peso_strtab *t = peso_strtab_new();
    char buf[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(buf, sizeof buf, "id%d", i);
        cr_assert_eq(peso_strtab_intern(t, buf, (size_t)n), i);
    }
    for (int i = 4999; i >= 0; i--) {
        int n = snprintf(buf, sizeof buf, "id%d", i);
        cr_assert_eq(peso_strtab_intern(t, buf, (size_t)n), i, "re-interning must return the same index");
        cr_assert_str_eq(peso_strtab_str(t, i), buf);
    }
    cr_expect_eq(peso_strtab_count(t), 5000u);
    cr_expect_eq(peso_strtab_find(t, "id5000", 6), -1);
    /* a prefix of a stored string is a different string */
    cr_expect_eq(peso_strtab_find(t, "id1", 2), -1);
    peso_strtab_free(t);
}

static char tmpdir[] = "/tmp/peso_common_XXXXXX";

static void write_gz(const char *path, const char *data, size_t n)
{
    gzFile g = gzopen(path, "wb");
    cr_assert(g);
    cr_assert_eq(gzwrite(g, data, (unsigned)n), (int)n);
    gzclose(g);
}

static void read_all(const char *path, char ***lines, int *n)
{
    peso_lines *r;
    peso_err err = {{0}};
    cr_assert_eq(peso_lines_open(&r, path, &err), 0, "%s", err.msg);
    char *line;
    size_t len;
    int rc;
    *n = 0;
    *lines = NULL;
    while ((rc = peso_lines_next(r, &line, &len, &err)) == 1) {
        *lines = realloc(*lines, sizeof(char *) * (size_t)(*n + 1));
        (*lines)[(*n)++] = strdup(line);
        cr_assert_eq(strlen(line), len);
        cr_assert_eq(peso_lines_lineno(r), *n);
    }
    cr_assert_eq(rc, 0, "%s", err.msg);
    peso_lines_close(r);
}

Test(lines, plain_and_gzip_give_the_same_lines)
{
    cr_assert(mkdtemp(tmpdir));
    /* CRLF, a final line without newline, and a line longer than the buffer */
    size_t big = 200000;
    char *text = malloc(big + 64);
    strcpy(text, "first\r\nsecond\n\n");
    size_t n = strlen(text);
    memset(text + n, 'x', big);
    n += big;
    strcpy(text + n, "\nlast");
    n += 5;
    char plain[256], gz[256];
    snprintf(plain, sizeof plain, "%s/a.txt", tmpdir);
    snprintf(gz, sizeof gz, "%s/a.txt.gz", tmpdir);
    FILE *f = fopen(plain, "wb");
    fwrite(text, 1, n, f);
    fclose(f);
    write_gz(gz, text, n);
    const char *paths[] = {plain, gz};
    for (int p = 0; p < 2; p++) {
        char **l;
        int k;
        read_all(paths[p], &l, &k);
        cr_assert_eq(k, 5, "%s: %d lines", paths[p], k);
        cr_expect_str_eq(l[0], "first");
        cr_expect_str_eq(l[1], "second");
        cr_expect_str_eq(l[2], "");
        cr_expect_eq(strlen(l[3]), big);
        cr_expect_str_eq(l[4], "last");
        for (int i = 0; i < k; i++)
            free(l[i]);
        free(l);
    }
    free(text);
}

Test(lines, truncated_gzip_is_an_error_with_file_and_line)
{
    char dir[] = "/tmp/peso_common_XXXXXX";
    cr_assert(mkdtemp(dir));
    char gz[256], cut[256];
    snprintf(gz, sizeof gz, "%s/b.gz", dir);
    snprintf(cut, sizeof cut, "%s/cut.gz", dir);
    char text[8192];
    size_t n = 0;
    for (int i = 0; i < 500; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "line %d\n", i);
    write_gz(gz, text, n);
    FILE *f = fopen(gz, "rb");
    unsigned char buf[16384];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    f = fopen(cut, "wb");
    fwrite(buf, 1, len - 12, f); /* drops the CRC/size trailer and some data */
    fclose(f);
    peso_lines *r;
    peso_err err = {{0}};
    cr_assert_eq(peso_lines_open(&r, cut, &err), 0);
    char *line;
    size_t l;
    int rc, count = 0;
    while ((rc = peso_lines_next(r, &line, &l, &err)) == 1)
        count++;
    peso_lines_close(r);
    cr_expect_eq(rc, -1, "a truncated gzip must not read as a clean end of file");
    cr_expect(strstr(err.msg, cut) && strstr(err.msg, "truncated"), "%s", err.msg);
    cr_expect_lt(count, 500);
}

Test(lines, missing_file)
{
    peso_lines *r;
    peso_err err = {{0}};
    cr_expect_eq(peso_lines_open(&r, "/nonexistent/x.json.gz", &err), -1);
    cr_expect(strstr(err.msg, "/nonexistent/x.json.gz"), "%s", err.msg);
}

Test(atomic, write_replaces_only_when_complete)
{
    char dir[] = "/tmp/peso_atomic_XXXXXX";
    cr_assert(mkdtemp(dir));
    char sub[256], path[300];
    snprintf(sub, sizeof sub, "%s/a/b/c", dir);
    peso_err err = {{0}};
    cr_assert_eq(peso_mkdir_p(sub, &err), 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/out.txt", sub);
    cr_assert_eq(peso_write_file_atomic(path, "hello", 5, &err), 0, "%s", err.msg);
    FILE *f = fopen(path, "rb");
    char got[16] = {0};
    cr_assert_eq(fread(got, 1, sizeof got, f), 5u);
    fclose(f);
    cr_expect_str_eq(got, "hello");
    char tmp[400];
    peso_tmp_path(tmp, sizeof tmp, path);
    cr_expect_neq(access(tmp, F_OK), 0, "the temporary file must be gone");
    cr_expect_eq(peso_write_file_atomic("/nonexistent/dir/x", "a", 1, &err), -1);
    cr_expect(strstr(err.msg, "/nonexistent/dir/x"), "%s", err.msg);
}

Test(atomic, dir_is_empty)
{
    char dir[] = "/tmp/peso_empty_XXXXXX", path[300];
    cr_assert(mkdtemp(dir));
    peso_err err = {{0}};
    int empty = -1;
    cr_assert_eq(peso_dir_is_empty(dir, &empty, &err), 0, "%s", err.msg);
    cr_expect_eq(empty, 1, "a new folder");
    snprintf(path, sizeof path, "%s/absent", dir);
    cr_assert_eq(peso_dir_is_empty(path, &empty, &err), 0, "%s", err.msg);
    cr_expect_eq(empty, 1, "an absent folder counts as empty");
    snprintf(path, sizeof path, "%s/.hidden", dir);
    cr_assert_eq(peso_write_file_atomic(path, "x", 1, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_dir_is_empty(dir, &empty, &err), 0, "%s", err.msg);
    cr_expect_eq(empty, 0, "a folder holding a dot file");
    cr_expect_eq(peso_dir_is_empty(path, &empty, &err), -1, "a file is not a folder");
    cr_expect(strstr(err.msg, path) && strstr(err.msg, "directory"), "%s", err.msg);
    unlink(path);
    rmdir(dir);
}

Test(rng, deterministic_streams_and_unbiased_below)
{
    peso_rng a, b, c;
    peso_rng_seed(&a, 42, 1);
    peso_rng_seed(&b, 42, 1);
    peso_rng_seed(&c, 42, 2);
    int same_c = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = peso_rng_u64(&a);
        cr_assert_eq(x, peso_rng_u64(&b));
        same_c += x == peso_rng_u64(&c);
    }
    cr_expect_eq(same_c, 0, "different streams must differ");
    /* chi-square over 7 bins, 70000 draws: 6 degrees of freedom, p=0.001 at 22.46 */
    long bins[7] = {0};
    for (int i = 0; i < 70000; i++)
        bins[peso_rng_below(&a, 7)]++;
    double chi = 0;
    for (int i = 0; i < 7; i++)
        chi += (bins[i] - 10000.0) * (bins[i] - 10000.0) / 10000.0;
    cr_expect_lt(chi, 22.46, "chi2 = %g", chi);
    double s = 0, s2 = 0;
    for (int i = 0; i < 100000; i++) {
        double z = peso_rng_normal(&a);
        s += z;
        s2 += z * z;
    }
    cr_expect_lt(fabs(s / 1e5), 0.02);
    cr_expect_lt(fabs(s2 / 1e5 - 1.0), 0.02);
}

Test(lines, nul_byte_keeps_line_whole)
{
    char dir[] = "/tmp/peso_common_XXXXXX";
    cr_assert(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/nul.txt", dir);
    FILE *f = fopen(path, "wb");
    fwrite("ab\0cd\nnext\n", 1, 11, f);
    fclose(f);
    peso_lines *r;
    peso_err err = {{0}};
    cr_assert_eq(peso_lines_open(&r, path, &err), 0);
    char *line;
    size_t len;
    cr_assert_eq(peso_lines_next(r, &line, &len, &err), 1);
    cr_expect_eq(len, 5u, "the NUL must not shorten the line");
    cr_expect_eq(memcmp(line, "ab\0cd", 5), 0);
    cr_assert_eq(peso_lines_next(r, &line, &len, &err), 1);
    cr_expect_str_eq(line, "next");
    cr_expect_eq(peso_lines_lineno(r), 2);
    cr_expect_eq(peso_lines_next(r, &line, &len, &err), 0);
    peso_lines_close(r);
}
