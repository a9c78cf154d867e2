/* peso-eval: evaluates one checkpoint on one stage's users by constrained
 * beam search and records the metrics (train/train.h, eval/evaluate.h).
 *
 *   peso-eval [--config FILE] [--set key=value ...] --checkpoint FILE --stage t
 *
 * The config is the run's (its method, model and data); the checkpoint
 * may be any stage's, e.g. stage-1.h5 evaluated on D3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "conf/conf.h"
#include "train/train.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: peso-eval [--config FILE] [--set key=value ...] --checkpoint FILE --stage t\n"
               "                 [--run NAME] [--print-config]\n"
               "  --checkpoint FILE  a stage-<t>.h5 written by peso-train for this config\n"
               "  --stage t          the stage whose test users (and valid, with eval.valid) are decoded\n"
               "  --run NAME         the run name recorded in <out_dir>/metrics.jsonl (default: the\n"
               "                     method's, with \"-eval\" appended)\n");
}

int main(int argc, char **argv)
{
    peso_conf c;
    peso_err err;
    const char *ckpt = NULL, *run = NULL;
    int stage = 0, status, n = 0;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    for (int i = 0; i < argc; i++) {
        int has = i + 1 < argc;
        if (!strcmp(argv[i], "--checkpoint") && has) {
            ckpt = argv[++i];
        } else if (!strcmp(argv[i], "--run") && has) {
            run = argv[++i];
        } else if (!strcmp(argv[i], "--stage") && has) {
            char *end;
            stage = (int)strtol(argv[++i], &end, 10);
            if (*end || stage < 1) {
                fprintf(stderr, "peso-eval: --stage needs a stage number >= 1, got '%s'\n", argv[i]);
                return 2;
            }
        } else {
            args[n++] = argv[i];
        }
    }
    int done = peso_conf_cli(&c, n, args, "peso-eval", usage, &status);
    free(args);
    if (done)
        return status;
    if (!ckpt || !stage) {
        fprintf(stderr, "peso-eval: --checkpoint and --stage are required\n");
        usage(stderr);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    MPI_Init(&argc, &argv);
    peso_par par;
    peso_run r = {0};
    /* every rank decodes a share of the users */
    int rc = peso_par_init(&par, 0, &err);
    if (rc == 0)
        rc = peso_run_open(&r, &c, &par, peso_par_log(&par), &err);
    char name[sizeof r.run + 8];
    if (rc == 0) {
        snprintf(name, sizeof name, "%s-eval", r.run);
        if (stage > r.n_blocks)
            rc = peso_errf(&err, "--stage %d: the dataset has stages 1-%d", stage, r.n_blocks);
    }
    if (rc == 0)
        rc = peso_train_load_checkpoint(&r, ckpt, &err);
    if (rc == 0)
        rc = peso_train_evaluate(&r, stage, run ? run : name, r.label, &err);
    if (rc < 0)
        return peso_par_fail(&par, "peso-eval", err.msg);
    peso_run_close(&r);
    peso_par_free(&par);
    MPI_Finalize();
    return 0;
}
