/* peso-train: the continual protocol (train/train.h).
 *
 *   peso-train [--config FILE] [--set key=value ...] [--stages A-B] [--resume]
 *              [--print-config] [--help-config]
 *
 * Under MPI (mpirun -np N, srun --mpi=pmix -n N) the last
 * parallel.eval_ranks ranks evaluate while the others train.
 *
 * Exit status: 0 done; 1 error (with several ranks, the failing one
 * stops the job with MPI_Abort); 2 bad command line or config;
 * 75 (PESO_TRAIN_EXIT_REQUEUE) stopped by SIGTERM/SIGUSR1 after writing a
 * checkpoint: rerun with --resume. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "conf/conf.h"
#include "train/train.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: peso-train [--config FILE] [--set key=value ...] [--stages A-B] [--resume]\n"
               "                  [--print-config] [--help-config]\n"
               "  --config FILE    YAML config (default: the built-in synthetic demo)\n"
               "  --set key=value  override one key, e.g. --set method.name=single (repeatable)\n"
               "  --stages A-B     run only stages A..B (A alone: one stage); stage A-1 must be done\n"
               "  --resume         continue from the newest complete checkpoint of the run\n"
               "  --print-config   print the resolved config and exit\n"
               "  --help-config    print every config key (Markdown table) and exit\n"
               "Exit status 75: stopped by SIGTERM/SIGUSR1 after a checkpoint; rerun with --resume.\n");
}

static int parse_stages(const char *s, int *lo, int *hi)
{
    char *end;
    long a = strtol(s, &end, 10), b = a;
    if (end == s)
        return -1;
    if (*end == '-') {
        const char *q = end + 1;
        b = strtol(q, &end, 10);
        if (end == q)
            return -1;
    }
    if (*end || a < 1 || b < a || b > 64)
        return -1;
    *lo = (int)a;
    *hi = (int)b;
    return 0;
}

int main(int argc, char **argv)
{
    peso_conf c;
    peso_err err;
    peso_train_opts o = {0};
    int status, n = 0;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--resume")) {
            o.resume = 1;
            continue;
        }
        if (!strcmp(argv[i], "--stages")) {
            if (i + 1 >= argc || parse_stages(argv[i + 1], &o.stage_lo, &o.stage_hi) < 0) {
                fprintf(stderr, "peso-train: --stages needs A-B or A (1 <= A <= B), got '%s'\n",
                        i + 1 < argc ? argv[i + 1] : "");
                return 2;
            }
            i++;
            continue;
        }
        args[n++] = argv[i];
    }
    int done = peso_conf_cli(&c, n, args, "peso-train", usage, &status);
    free(args);
    if (done)
        return status;
    setvbuf(stdout, NULL, _IOLBF, 0);
    peso_train_signals();
    MPI_Init(&argc, &argv);
    peso_par par;
    peso_run r = {0};
    int rc = peso_par_init(&par, (int)c.parallel.eval_ranks, &err);
    if (rc == 0)
        rc = peso_run_open(&r, &c, &par, peso_par_log(&par), &err);
    if (rc == 0)
        rc = par.is_eval ? peso_train_eval_serve(&r, &err) : peso_train(&r, &o, &err);
    if (rc < 0)
        return peso_par_fail(&par, "peso-train", err.msg);
    peso_run_close(&r);
    peso_par_free(&par);
    MPI_Finalize();
    return rc;
}
