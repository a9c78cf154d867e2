/* Benchmark: raw file -> dataset, peso-prep's pipeline against the plain
 * Python reference (tools/reference/protocol.py: json.loads per line, sort,
 * split, windows, pairs written out) on the same file, side by side.
 *
 *   bench-prep [--file F.json.gz] [--repeat K] [--python PY]
 *
 * The input is the real Amazon 2014 Musical Instruments file, enlarged K
 * times (every copy with its own user ids, same items and times) so that
 * the timing is not dominated by start-up. Each side runs in a child
 * process; peak memory is that child's maximum resident set. The ratio
 * compares the same work: load + protocol + writing the pairs; semantic ID
 * fitting, which the Python side does not do, is shown on its own row. */
#define _DEFAULT_SOURCE /* wait4 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/lines.h"
#include "conf/conf.h"
#include "prep/prep.h"

static int enlarge(const char *in, const char *out, int repeat, size_t *lines)
{
    FILE *f = fopen(out, "wb");
    if (!f)
        return -1;
    *lines = 0;
    for (int k = 0; k < repeat; k++) {
        peso_lines *r;
        peso_err err;
        if (peso_lines_open(&r, in, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            fclose(f);
            return -1;
        }
        char *line;
        size_t len;
        while (peso_lines_next(r, &line, &len, &err) == 1) {
            /* "reviewerID": "X" -> "reviewerID": "X~k" */
            char *p = strstr(line, "\"reviewerID\": \"");
            if (!p) {
                fwrite(line, 1, len, f);
            } else {
                char *q = strchr(p + 15, '"');
                fwrite(line, 1, (size_t)(q - line), f);
                fprintf(f, "~%d", k);
                fwrite(q, 1, len - (size_t)(q - line), f);
            }
            fputc('\n', f);
            (*lines)++;
        }
        peso_lines_close(r);
    }
    return fclose(f);
}

typedef struct side {
    double wall, work;
    long rss_kb;
    int ok;
    peso_prep_timing t;
} side;

static void run_c(const char *file, const char *dir, side *s)
{
    int fd[2];
    if (pipe(fd))
        return;
    double t0 = peso_now();
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        peso_conf c;
        peso_err err;
        peso_conf_defaults(&c);
        peso_conf_set(&c, "data.format=amazon2014", &err);
        snprintf(c.data.reviews, sizeof c.data.reviews, "%s", file);
        snprintf(c.out_dir, sizeof c.out_dir, "%s/c", dir);
        peso_prep_timing t;
        int rc = peso_prep_run(&c, NULL, &t, &err);
        if (rc)
            fprintf(stderr, "peso-prep: %s\n", err.msg);
        if (write(fd[1], &t, sizeof t) != (ssize_t)sizeof t)
            rc = 1;
        _exit(rc ? 1 : 0);
    }
    close(fd[1]);
    int status;
    struct rusage ru;
    ssize_t got = read(fd[0], &s->t, sizeof s->t);
    close(fd[0]);
    wait4(pid, &status, 0, &ru);
    s->wall = peso_now() - t0;
    s->ok = got == (ssize_t)sizeof s->t && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    s->work = s->t.load_s + s->t.split_s + s->t.write_s;
    s->rss_kb = ru.ru_maxrss;
}

static void run_py(const char *py, const char *script, const char *file, const char *dir, side *s)
{
    char stats[4400], pairs[4400];
    snprintf(stats, sizeof stats, "%s/py-stats.json", dir);
    snprintf(pairs, sizeof pairs, "%s/py-pairs.jsonl", dir);
    double t0 = peso_now();
    pid_t pid = fork();
    if (pid == 0) {
        execl(py, py, script, "--format", "amazon2014", "--reviews", file, "--stats-out", stats,
              "--pairs-out", pairs, (char *)NULL);
        _exit(127);
    }
    int status;
    struct rusage ru;
    wait4(pid, &status, 0, &ru);
    s->wall = s->work = peso_now() - t0;
    s->ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    s->rss_kb = ru.ru_maxrss;
}

int main(int argc, char **argv)
{
    const char *file = PESO_BENCH_DATA "/amazon-instruments-2014/reviews_Musical_Instruments_5.json.gz";
    const char *py = "/usr/bin/python3";
    int repeat = 50;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--file") && i + 1 < argc)
            file = argv[++i];
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--python") && i + 1 < argc)
            py = argv[++i];
        else {
            fprintf(stderr, "usage: bench-prep [--file F.json.gz] [--repeat K] [--python PY]\n");
            return 2;
        }
    }
    char dir[] = "/tmp/peso_bench_prep_XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char big[PESO_CONF_PATH];
    snprintf(big, sizeof big, "%s/reviews.json", dir);
    size_t lines;
    if (enlarge(file, big, repeat, &lines)) {
        fprintf(stderr, "bench-prep: cannot prepare %s from %s\n", big, file);
        return 1;
    }
    side c = {0}, p = {0};
    run_c(big, dir, &c);
    run_py(py, PESO_BENCH_SOURCE "/tools/reference/protocol.py", big, dir, &p);
    if (!c.ok || !p.ok) {
        fprintf(stderr, "bench-prep: a side failed (C ok=%d, Python ok=%d)\n", c.ok, p.ok);
        return 1;
    }
    printf("input: %s x %d = %zu lines (amazon2014), %s\n\n", file, repeat, lines, big);
    printf("| side | load+protocol+write (s) | interactions/s | peak RSS (MiB) | ratio |\n");
    printf("|---|---|---|---|---|\n");
    printf("| Python reference (json.loads, sort, split) | %.2f | %.0f | %.1f | 1.00x |\n", p.work,
           (double)lines / p.work, p.rss_kb / 1024.0);
    printf("| peso-prep pipeline | %.2f | %.0f | %.1f | %.2fx |\n", c.work, (double)lines / c.work,
           c.rss_kb / 1024.0, p.work / c.work);
    printf("\npeso-prep phases: load %.2f s, protocol %.2f s, write %.2f s; semantic IDs (RQ-VAE, "
           "not in the ratio) %.2f s\n",
           c.t.load_s, c.t.split_s, c.t.write_s, c.t.semid_s);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
