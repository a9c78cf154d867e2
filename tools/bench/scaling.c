/* Benchmark: data-parallel LoRA training step time against the number of
 * train ranks, and a model of the same step on 16-256 GPUs.
 *
 *   mpirun -np N bench-scaling [--preset tiny|small] [--batch G] [--steps S]
 *                              [--warmup W] [--threads T] [--rank R]
 *                              [--ar-reps K] [--no-model] [model options]
 *
 * Measured part: the step of src/train/stage.c on the library API. A fixed
 * global batch of G recommender prompts (20 history items, the target's 4
 * code tokens as labels) is dealt to the ranks, prompt j to rank j mod N;
 * each rank runs forward and backward on its share with grad_scale = 1 /
 * the global label count, then ONE all-reduce over the flat gradient buffer
 * (flat.numel + BENCH_TAIL floats, as the trainer's), then the same clipped AdamW
 * update on every rank. Each timed step starts after an MPI_Barrier; every
 * phase is the slowest rank's, and the table gives medians over the timed
 * steps. The global loss and gradient norm of step 1 do not depend on N
 * (up to the order of the float sums), which the output shows.
 *
 * Model part (rank 0, --no-model leaves it out): the all-reduce of
 * Llama-3.2-1B's LoRA gradient as a hierarchical ring over NVLink inside a
 * node and InfiniBand between nodes, against a per-GPU compute time, as an
 * expected-efficiency table. It is a model with the parameters it prints,
 * not a measurement. */
#include <dirent.h>
#include <math.h>
#include <mpi.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "common/clock.h"
#include "common/rng.h"
#include "model/init.h"
#include "model/llama.h"
#include "model/prompt.h"
#include "hf/tokenizer.h"
#include "optim/optim.h"
#include "train/par.h"

/* floats of step statistics that ride after the gradients in the
 * trainer's all-reduce (train/internal.h PESO_STEP_TAIL_N) */
#define BENCH_TAIL 5

#define HIST 20
#define LEVELS 4
#define CODES 256
#define LR 1e-3
#define MAX_GRAD_NORM 1.0

/* Step phases, timed separately. */
enum { PH_FB, PH_AR, PH_OPT, PH_STEP, PH_N };

typedef struct gpu_model {
    double nvlink_gbs; /* effective ring bandwidth per GPU inside a node, GB/s */
    double ib_gbs;     /* effective InfiniBand bandwidth per node, GB/s */
    double alpha_us;   /* latency of one ring step */
    int gpus_per_node;
    double gpu_tflops;  /* peak bf16 dense TFLOP/s */
    double mfu;         /* achieved fraction of the peak */
    double flop_factor; /* FLOPs per parameter and token of a training step */
    double tokens_per_gpu;
    double step_ms; /* > 0: given compute time per step; else from FLOPs */
} gpu_model;

typedef struct bench_opts {
    const char *preset;
    int batch, steps, warmup, threads, rank, ar_reps, model;
    gpu_model gm;
} bench_opts;

/* What one run measured (medians over the timed steps, slowest rank). */
typedef struct bench_result {
    double ms[PH_N];
    double ar_alone_ms;
    double loss1, gnorm1, loss_last;
    size_t grad_floats;
} bench_result;

static void usage(FILE *f)
{
    fprintf(f, "usage: bench-scaling [--preset tiny|small] [--batch G] [--steps S] [--warmup W]\n"
               "                     [--threads T] [--rank R] [--ar-reps K] [--no-model]\n"
               "                     [--nvlink-gbs X] [--ib-gbs X] [--alpha-us X] [--gpus-per-node K]\n"
               "                     [--gpu-tflops X] [--mfu X] [--flop-factor X] [--tokens-per-gpu X]\n"
               "                     [--gpu-step-ms X]\n");
}

static int parse_num(const char *s, double lo, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v) || v < lo)
        return -1;
    *out = v;
    return 0;
}

static int parse_int(const char *s, int lo, int *out)
{
    double v;
    if (parse_num(s, lo, &v) || v != (int)v)
        return -1;
    *out = (int)v;
    return 0;
}

/* Options with a double value, by name: a rate, a size or a fraction
 * must be > 0; the latency and a given step time may be 0 (0 step time:
 * derive it from FLOPs). */
static double *model_opt(gpu_model *g, const char *name, int *zero_ok)
{
    static const char *const names[] = {"--nvlink-gbs", "--ib-gbs",      "--alpha-us",       "--gpu-tflops",
                                        "--mfu",        "--flop-factor", "--tokens-per-gpu", "--gpu-step-ms"};
    double *const fields[] = {&g->nvlink_gbs, &g->ib_gbs,      &g->alpha_us,       &g->gpu_tflops,
                              &g->mfu,        &g->flop_factor, &g->tokens_per_gpu, &g->step_ms};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(name, names[i])) {
            *zero_ok = fields[i] == &g->alpha_us || fields[i] == &g->step_ms;
            return fields[i];
        }
    return NULL;
}

static int parse_args(bench_opts *o, int argc, char **argv)
{
    *o = (bench_opts){.preset = "tiny",
                      .batch = 8,
                      .steps = 3,
                      .warmup = 1,
                      .threads = 1,
                      .rank = 8,
                      .ar_reps = 10,
                      .model = 1,
                      .gm = {.nvlink_gbs = 300,
                             .ib_gbs = 25,
                             .alpha_us = 10,
                             .gpus_per_node = 8,
                             .gpu_tflops = 400,
                             .mfu = 0.4,
                             .flop_factor = 4, /* forward 2 + activation gradients 2: frozen weights get no gradient */
                             .tokens_per_gpu = 16384,
                             .step_ms = 0}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int zero_ok = 0, bad;
        double *d = model_opt(&o->gm, a, &zero_ok);
        if (!strcmp(a, "--no-model")) {
            o->model = 0;
            continue;
        }
        if (!v)
            return -1;
        if (!strcmp(a, "--preset")) {
            o->preset = v;
            bad = strcmp(v, "tiny") && strcmp(v, "small");
        } else if (!strcmp(a, "--batch"))
            bad = parse_int(v, 1, &o->batch);
        else if (!strcmp(a, "--steps"))
            bad = parse_int(v, 1, &o->steps);
        else if (!strcmp(a, "--warmup"))
            bad = parse_int(v, 0, &o->warmup);
        else if (!strcmp(a, "--threads"))
            bad = parse_int(v, 1, &o->threads);
        else if (!strcmp(a, "--rank"))
            bad = parse_int(v, 1, &o->rank);
        else if (!strcmp(a, "--ar-reps"))
            bad = parse_int(v, 1, &o->ar_reps);
        else if (!strcmp(a, "--gpus-per-node"))
            bad = parse_int(v, 1, &o->gm.gpus_per_node);
        else if (d)
            bad = parse_num(v, 0, d) || (!zero_ok && *d == 0);
        else
            bad = 1;
        if (bad)
            return -1;
        i++;
    }
    return 0;
}

/* ---- measured part ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of n values (sorted in place). */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Removes the model folder and the directory above it. */
static void remove_tree(const char *dir, const char *model)
{
    DIR *d = opendir(model);
    struct dirent *e;
    char path[8192];
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", model, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(model);
    rmdir(dir);
}

/* The global batch, all of one length T; every rank draws all G prompts
 * from the same seed and keeps prompt j when j mod N is its rank. */
typedef struct bench_batch {
    int T, mine;
    long global_labels, global_tokens;
    int32_t *ids, *labels, *lens; /* this rank's prompts */
} bench_batch;

static int make_batch(bench_batch *bb, const char *model, int G, const peso_par *par, peso_err *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", model);
    peso_tok *tok;
    peso_prompt pr;
    int sizes[LEVELS] = {CODES, CODES, CODES, CODES};
    if (peso_tok_load(&tok, path, err))
        return -1;
    if (peso_prompt_init(&pr, tok, LEVELS, sizes, err)) {
        peso_tok_free(tok);
        return -1;
    }
    int T = (int)peso_prompt_example_len(&pr, HIST), rc = 0;
    memset(bb, 0, sizeof *bb);
    bb->T = T;
    bb->ids = peso_calloc((size_t)G * T, sizeof *bb->ids);
    bb->labels = peso_calloc((size_t)G * T, sizeof *bb->labels);
    bb->lens = peso_calloc((size_t)G, sizeof *bb->lens);
    int32_t *ids = peso_malloc((size_t)T * sizeof *ids), *labels = peso_malloc((size_t)T * sizeof *labels);
    peso_rng rng;
    peso_rng_seed(&rng, 7, 1);
    for (int j = 0; j < G; j++) {
        int32_t hist[HIST * LEVELS], target[LEVELS];
        for (int i = 0; i < HIST * LEVELS; i++)
            hist[i] = (int32_t)peso_rng_below(&rng, CODES);
        for (int i = 0; i < LEVELS; i++)
            target[i] = (int32_t)peso_rng_below(&rng, CODES);
        size_t n;
        rc = peso_prompt_example(&pr, hist, HIST, target, ids, labels, (size_t)T, &n, err);
        if (rc)
            break;
        int32_t len = (int32_t)n;
        peso_llama_batch one = {.B = 1, .T = T, .ids = ids, .lens = &len, .labels = labels};
        bb->global_labels += peso_llama_count_labels(&one);
        bb->global_tokens += (long)n;
        if (j % par->gsize == par->grank) {
            memcpy(bb->ids + (size_t)bb->mine * T, ids, (size_t)T * sizeof *ids);
            memcpy(bb->labels + (size_t)bb->mine * T, labels, (size_t)T * sizeof *labels);
            bb->lens[bb->mine++] = len;
        }
    }
    free(ids);
    free(labels);
    peso_prompt_free(&pr);
    peso_tok_free(tok);
    return rc;
}

static void free_batch(bench_batch *bb)
{
    free(bb->ids);
    free(bb->labels);
    free(bb->lens);
}

/* One training step of this rank: phase times into t[PH_N], the local
 * loss sum into *sum and the global gradient norm into *gnorm. */
static int timed_step(peso_llama *m, peso_optim *opt, const peso_par *par, const bench_batch *bb, float *host,
                      double *t, double *sum, double *gnorm, peso_err *err)
{
    peso_llama_batch b = {.B = bb->mine, .T = bb->T, .ids = bb->ids, .lens = bb->lens, .labels = bb->labels};
    peso_llama_loss L = {0};
    if (peso_par_barrier(par, err))
        return -1;
    double t0 = peso_now();
    if (peso_llama_zero_grads(m, err) ||
        peso_llama_forward_backward(m, &b, 1.0f / (float)bb->global_labels, &L, err))
        return -1;
    double t1 = peso_now();
    if (peso_par_allreduce_grads(par, m->be, m->grads, m->flat.numel, host, BENCH_TAIL, err))
        return -1;
    double t2 = peso_now();
    if (peso_optim_clip_step(opt, m->params, m->grads, LR, MAX_GRAD_NORM, gnorm, err))
        return -1;
    double t3 = peso_now();
    t[PH_FB] = t1 - t0;
    t[PH_AR] = t2 - t1;
    t[PH_OPT] = t3 - t2;
    t[PH_STEP] = t3 - t0;
    *sum = L.sum;
    return 0;
}

/* The all-reduce alone, ar_reps times after a barrier each: the median of
 * the slowest rank's time, without the wait for a slower rank that the
 * in-step all-reduce also holds. */
static int allreduce_alone(const peso_par *par, size_t n, int reps, double *ms, peso_err *err)
{
    float *buf = peso_calloc(n, sizeof *buf);
    double *t = peso_calloc((size_t)reps, sizeof *t);
    int rc = 0;
    for (int r = 0; r < reps && rc == 0; r++) {
        rc = peso_par_barrier(par, err);
        double t0 = peso_now();
        if (rc == 0)
            rc = peso_par_allreduce_f(par, buf, n, err);
        t[r] = peso_now() - t0;
    }
    if (rc == 0 && par->gsize > 1 && MPI_Allreduce(MPI_IN_PLACE, t, reps, MPI_DOUBLE, MPI_MAX, par->group))
        rc = peso_errf(err, "MPI Allreduce of the all-reduce times failed");
    if (rc == 0)
        *ms = 1e3 * median(t, reps);
    free(t);
    free(buf);
    return rc;
}

/* The steps: warm-up ones first, then the timed ones. */
static int run_steps(peso_llama *m, const peso_par *par, const bench_batch *bb, const bench_opts *o,
                     bench_result *res, peso_err *err)
{
    int n = o->warmup + o->steps, rc = 0;
    double *t = peso_calloc((size_t)n * PH_N, sizeof *t), *sum = peso_calloc((size_t)n, sizeof *sum);
    double *gn = peso_calloc((size_t)n, sizeof *gn), *col = peso_calloc((size_t)o->steps, sizeof *col);
    peso_optim opt;
    peso_optim_hparams hp;
    peso_optim_defaults(&hp);
    memset(&opt, 0, sizeof opt);
    float *host = peso_calloc(m->flat.numel + BENCH_TAIL, sizeof *host);
    if (peso_optim_init(&opt, m->be, m->flat.numel, &hp, err))
        rc = -1;
    for (int s = 0; s < n && rc == 0; s++)
        rc = timed_step(m, &opt, par, bb, host, t + (size_t)s * PH_N, &sum[s], &gn[s], err);
    free(host);
    if (rc == 0 &&
        (peso_par_allreduce_d(par, sum, (size_t)n, err) ||
         (par->gsize > 1 && MPI_Allreduce(MPI_IN_PLACE, t, n * PH_N, MPI_DOUBLE, MPI_MAX, par->group))))
        rc = peso_err_prefix(err, "gathering the step results");
    if (rc == 0) {
        for (int p = 0; p < PH_N; p++) {
            for (int s = 0; s < o->steps; s++)
                col[s] = t[(size_t)(o->warmup + s) * PH_N + p];
            res->ms[p] = 1e3 * median(col, o->steps);
        }
        res->loss1 = sum[0] / (double)bb->global_labels;
        res->loss_last = sum[n - 1] / (double)bb->global_labels;
        res->gnorm1 = gn[0];
        res->grad_floats = m->flat.numel + BENCH_TAIL;
        rc = allreduce_alone(par, res->grad_floats, o->ar_reps, &res->ar_alone_ms, err);
    }
    peso_optim_free(&opt);
    free(col);
    free(t);
    free(sum);
    free(gn);
    return rc;
}

/* Rank 0 writes the model folder; every rank loads it. */
static int load_model(peso_llama **m, peso_backend *be, const bench_opts *o, const peso_par *par, char *dir,
                      char *model, size_t n, peso_init_report *rep, peso_err *err)
{
    int ok = 1;
    if (par->grank == 0) {
        ok = mkdtemp(dir) != NULL;
        snprintf(model, n, "%s/model", dir);
        peso_init_opts io = {
            .preset = o->preset, .seed = 1, .with_codes = 1, .levels = LEVELS, .codebook = CODES};
        if (!ok)
            peso_errf(err, "%s: cannot create the temporary folder", dir);
        else if (peso_init_write(model, &io, rep, err))
            ok = 0;
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, par->group);
    if (!ok)
        return par->grank == 0 ? -1 : peso_errf(err, "rank 0 could not write the model folder");
    MPI_Bcast(model, (int)n, MPI_CHAR, 0, par->group);
    peso_llama_opts mo;
    peso_llama_opts_defaults(&mo);
    mo.lora = (peso_lora_conf){.rank = o->rank, .alpha = 2.0 * o->rank, .targets = PESO_LORA_ALL};
    return peso_llama_load(m, model, be, &mo, err);
}

static void print_measured(const bench_opts *o, const peso_par *par, const peso_llama *m,
                           const bench_batch *bb, const bench_result *r)
{
    double bytes = (double)r->grad_floats * sizeof(float), N = par->gsize;
    printf("measured on this machine: cpu backend, MPI_Allreduce (Open MPI) between processes\n");
    printf("model: %s preset (peso-model init --with-codes), LoRA r=%d on all 7 projections, "
           "%zu trainable floats\n",
           o->preset, o->rank, m->flat.numel);
    printf("global batch: %d prompts x %d tokens (%d history items), %ld label tokens; prompt j on rank j "
           "mod N\n",
           o->batch, bb->T, HIST, bb->global_labels);
    printf("ranks: %d, OpenMP threads per rank: %d; %d timed steps after %d warm-up, medians of the slowest "
           "rank\n",
           par->gsize, o->threads, o->steps, o->warmup);
    printf("all-reduce: %zu floats (flat %zu + tail %d) = %.0f bytes per step\n\n", r->grad_floats,
           m->flat.numel, BENCH_TAIL, bytes);
    printf("| ranks | step (ms) | forward+backward (ms) | all-reduce in step (ms) | optimizer (ms) "
           "| all-reduce alone (ms) | bus bandwidth (GB/s) |\n|---|---|---|---|---|---|---|\n");
    char bw[32] = "-";
    if (par->gsize > 1 && r->ar_alone_ms > 0)
        snprintf(bw, sizeof bw, "%.2f", 2 * (N - 1) / N * bytes / (r->ar_alone_ms * 1e-3) / 1e9);
    printf("| %d | %.2f | %.2f | %.3f | %.3f | %.3f | %s |\n\n", par->gsize, r->ms[PH_STEP], r->ms[PH_FB],
           r->ms[PH_AR], r->ms[PH_OPT], r->ar_alone_ms, bw);
    printf("step 1: global loss %.9f, gradient norm %.9f; step %d: global loss %.9f\n", r->loss1, r->gnorm1,
           o->warmup + o->steps, r->loss_last);
    printf("result ranks=%d step_ms=%.3f fb_ms=%.3f ar_ms=%.4f opt_ms=%.4f ar_alone_ms=%.4f bytes=%.0f "
           "tokens=%ld loss1=%.9f gnorm1=%.9f\n\n",
           par->gsize, r->ms[PH_STEP], r->ms[PH_FB], r->ms[PH_AR], r->ms[PH_OPT], r->ar_alone_ms, bytes,
           bb->global_tokens, r->loss1, r->gnorm1);
}

/* ---- model part ---- */

/* Llama-3.2-1B's shapes (its config.json). */
static void llama32_1b(peso_llama_config *c)
{
    peso_llama_config_defaults(c);
    c->vocab_size = 128256;
    c->hidden_size = 2048;
    c->intermediate_size = 8192;
    c->num_hidden_layers = 16;
    c->num_attention_heads = 32;
    c->num_key_value_heads = 8;
    c->head_dim = 64;
    c->tie_word_embeddings = 1;
}

/* Seconds of a hierarchical ring all-reduce of bytes over g GPUs: a ring
 * inside each node over NVLink, a ring between the nodes over each node's
 * InfiniBand, and alpha per step of a flat ring over all g GPUs (2 (g-1)
 * steps, more than the hierarchical ring takes: an upper bound). */
static double model_allreduce_s(const gpu_model *gm, double bytes, int g)
{
    int k = g < gm->gpus_per_node ? g : gm->gpus_per_node, nodes = (g + k - 1) / k;
    double intra = 2.0 * (k - 1) / k * bytes / (gm->nvlink_gbs * 1e9);
    double inter = 2.0 * (nodes - 1) / nodes * bytes / (gm->ib_gbs * 1e9);
    return intra + inter + 2.0 * (g - 1) * gm->alpha_us * 1e-6;
}

/* Seconds of compute per step and GPU: given, or flop_factor x params x
 * tokens at mfu of the peak. */
static double model_compute_s(const gpu_model *gm, double params)
{
    if (gm->step_ms > 0)
        return gm->step_ms * 1e-3;
    return gm->flop_factor * params * gm->tokens_per_gpu / (gm->gpu_tflops * 1e12 * gm->mfu);
}

static void print_model(const bench_opts *o)
{
    const gpu_model *gm = &o->gm;
    peso_llama_config c;
    llama32_1b(&c);
    peso_lora_conf lc = {.rank = o->rank, .alpha = 2.0 * o->rank, .targets = PESO_LORA_ALL};
    double params = (double)peso_llama_base_numel(&c), lora = (double)peso_lora_numel(&lc, &c);
    double codes = (double)LEVELS * CODES * c.hidden_size; /* stage 1: the code tokens' embedding rows */
    double b2 = (lora + BENCH_TAIL) * sizeof(float), b1 = b2 + codes * sizeof(float);
    double comp = model_compute_s(gm, params);
    printf("MODEL, not a measurement: Llama-3.2-1B (%.4g parameters, tied head), LoRA r=%d on all 7 "
           "projections\n",
           params, o->rank);
    printf("  gradient per all-reduce: stage >= 2: %.0f floats = %.2f MB; stage 1 adds %d code rows x %d: "
           "%.2f MB\n",
           lora + BENCH_TAIL, b2 / 1e6, LEVELS * CODES, c.hidden_size, b1 / 1e6);
    printf("  all-reduce = 2(k-1)/k x bytes / nvlink + 2(n-1)/n x bytes / ib + 2(g-1) x alpha\n"
           "  (g GPUs, k per node, n nodes; hierarchical ring; latency counted as a flat ring's steps)\n");
    printf("  parameters: --nvlink-gbs %g (GB/s per GPU, effective) --ib-gbs %g (GB/s per node, effective) "
           "--alpha-us %g --gpus-per-node %d\n",
           gm->nvlink_gbs, gm->ib_gbs, gm->alpha_us, gm->gpus_per_node);
    if (gm->step_ms > 0)
        printf("  compute per step and GPU: --gpu-step-ms %g\n", gm->step_ms);
    else
        printf("  compute per step and GPU: --flop-factor %g x %.4g parameters x --tokens-per-gpu %g / "
               "(--gpu-tflops %g TFLOP/s x --mfu %g) = %.1f ms\n",
               gm->flop_factor, params, gm->tokens_per_gpu, gm->gpu_tflops, gm->mfu, comp * 1e3);
    printf("  weak scaling: every GPU takes the same tokens per step; efficiency without overlap = compute / "
           "(compute + all-reduce),\n  with full overlap = compute / max(compute, all-reduce); "
           "peso does one all-reduce after the backward (no overlap)\n\n");
    printf("| GPUs | nodes | compute (ms) | all-reduce stage>=2 (ms) | eff. no overlap | eff. full overlap "
           "| all-reduce stage 1 (ms) | eff. no overlap | eff. full overlap |\n"
           "|---|---|---|---|---|---|---|---|---|\n");
    for (int g = 16; g <= 256; g *= 2) {
        int k = g < gm->gpus_per_node ? g : gm->gpus_per_node;
        double a2 = model_allreduce_s(gm, b2, g), a1 = model_allreduce_s(gm, b1, g);
        printf("| %d | %d | %.1f | %.3f | %.4f | %.4f | %.3f | %.4f | %.4f |\n", g, (g + k - 1) / k,
               comp * 1e3, a2 * 1e3, comp / (comp + a2), comp / fmax(comp, a2), a1 * 1e3, comp / (comp + a1),
               comp / fmax(comp, a1));
    }
}

static int bench(const bench_opts *o, const peso_par *par, peso_err *err)
{
    char dir[] = "/tmp/peso_bench_scaling_XXXXXX", model[4096] = "";
    peso_init_report rep;
    peso_backend *be = peso_backend_create("cpu", err);
    peso_llama *m = NULL;
    bench_batch bb = {0};
    bench_result res = {0};
    int rc = be ? 0 : -1;
    if (rc == 0)
        rc = load_model(&m, be, o, par, dir, model, sizeof model, &rep, err);
    if (rc == 0 && o->batch < par->gsize)
        rc = peso_errf(err, "--batch %d is smaller than the %d ranks: every rank needs a prompt", o->batch,
                       par->gsize);
    if (rc == 0)
        rc = make_batch(&bb, model, o->batch, par, err);
    if (rc == 0)
        rc = run_steps(m, par, &bb, o, &res, err);
    if (rc == 0 && par->grank == 0) {
        print_measured(o, par, m, &bb, &res);
        if (o->model)
            print_model(o);
    }
    free_batch(&bb);
    if (m)
        peso_llama_free(m);
    if (be)
        peso_backend_destroy(be);
    /* the others have loaded the folder once every rank is here; after a
     * failure they are stopped anyway */
    if (rc == 0)
        MPI_Barrier(par->group);
    if (par->grank == 0 && model[0])
        remove_tree(dir, model);
    return rc;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    bench_opts o;
    peso_par par;
    peso_err err;
    int status = 0;
    if (parse_args(&o, argc, argv)) {
        usage(stderr);
        MPI_Finalize();
        return 2;
    }
    omp_set_num_threads(o.threads);
    if (peso_par_init(&par, 0, &err))
        status = 1, fprintf(stderr, "bench-scaling: %s\n", err.msg);
    else if (bench(&o, &par, &err))
        status = peso_par_fail(&par, "bench-scaling", err.msg);
    peso_par_free(&par);
    MPI_Finalize();
    return status;
}
