/* Benchmark: LoRA training steps per second on the CPU, peso against
 * PyTorch eager (transformers LlamaForCausalLM + PEFT LoRA, the reference
 * venv) on the same model folder, the same batch and the same number of
 * threads, side by side.
 *
 *   bench-train_step [--preset tiny|small] [--batch B] [--steps N]
 *                    [--threads T] [--rank R] [--python PY]
 *
 * The model is `peso-model init --preset P --with-codes`; the batch holds B
 * recommender prompts with 20 items of history (the realistic length of the
 * paper's sliding windows) and the target's 4 code tokens as labels. One
 * step = forward, backward (adapter gradients only), clipping and AdamW.
 * Tokens per second count the batch's real tokens. */
#include <hdf5.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "backend/backend.h"
#include "common/rng.h"
#include "model/init.h"
#include "model/llama.h"
#include "model/prompt.h"
#include "hf/tokenizer.h"
#include "optim/optim.h"

#define HIST 20
#define LEVELS 4
#define CODES 256


static void die(const char *what, const peso_err *err)
{
    fprintf(stderr, "bench-train_step: %s: %s\n", what, err ? err->msg : "failed");
    exit(1);
}

static void write_i32(hid_t f, const char *name, const int32_t *v, int B, int T)
{
    hsize_t dims[2] = {(hsize_t)B, (hsize_t)T};
    hid_t s = H5Screate_simple(2, dims, NULL);
    hid_t d = H5Dcreate2(f, name, H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d < 0 || H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0)
        die("writing the batch file", NULL);
    H5Dclose(d);
    H5Sclose(s);
}

int main(int argc, char **argv)
{
    const char *preset = "small", *py = PESO_BENCH_SOURCE "/.venv-ref/bin/python";
    int B = 4, steps = 3, threads = 2, rank = 8;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc)
            preset = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rank") && i + 1 < argc)
            rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--python") && i + 1 < argc)
            py = argv[++i];
        else {
            fprintf(stderr, "usage: bench-train_step [--preset tiny|small] [--batch B] [--steps N] "
                            "[--threads T] [--rank R] [--python PY]\n");
            return 2;
        }
    }
    omp_set_num_threads(threads);
    peso_err err;
    char dir[] = "/tmp/peso_bench_step_XXXXXX";
    if (!mkdtemp(dir))
        die("mkdtemp", NULL);
    char model[4096], batchf[4096];
    snprintf(model, sizeof model, "%s/model", dir);
    snprintf(batchf, sizeof batchf, "%s/batch.h5", dir);
    peso_init_opts io = {.preset = preset, .seed = 1, .with_codes = 1, .levels = LEVELS, .codebook = CODES};
    peso_init_report rep;
    if (peso_init_write(model, &io, &rep, &err))
        die("peso-model init", &err);

    /* B prompts with HIST random items each, all of one length */
    char tokpath[4200];
    snprintf(tokpath, sizeof tokpath, "%s/tokenizer.json", model);
    peso_tok *tok;
    peso_prompt pr;
    int sizes[LEVELS] = {CODES, CODES, CODES, CODES};
    if (peso_tok_load(&tok, tokpath, &err) || peso_prompt_init(&pr, tok, LEVELS, sizes, &err))
        die("prompt", &err);
    int T = (int)peso_prompt_example_len(&pr, HIST);
    int32_t *ids = calloc((size_t)B * T, sizeof *ids), *labels = calloc((size_t)B * T, sizeof *labels);
    int32_t *mask = calloc((size_t)B * T, sizeof *mask), *lens = calloc((size_t)B, sizeof *lens);
    peso_rng rng;
    peso_rng_seed(&rng, 7, 1);
    for (int b = 0; b < B; b++) {
        int32_t hist[HIST * LEVELS], target[LEVELS];
        for (int i = 0; i < HIST * LEVELS; i++)
            hist[i] = (int32_t)peso_rng_below(&rng, CODES);
        for (int i = 0; i < LEVELS; i++)
            target[i] = (int32_t)peso_rng_below(&rng, CODES);
        size_t n;
        if (peso_prompt_example(&pr, hist, HIST, target, ids + (size_t)b * T, labels + (size_t)b * T, (size_t)T,
                                &n, &err))
            die("prompt example", &err);
        lens[b] = (int32_t)n;
        for (size_t t = 0; t < n; t++)
            mask[(size_t)b * T + t] = 1;
    }
    hid_t f = H5Fcreate(batchf, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    write_i32(f, "/input_ids", ids, B, T);
    write_i32(f, "/attention_mask", mask, B, T);
    write_i32(f, "/labels", labels, B, T);
    H5Fclose(f);

    /* peso */
    peso_backend *be = peso_backend_create("cpu", &err);
    peso_llama_opts mo;
    peso_llama_opts_defaults(&mo);
    mo.lora = (peso_lora_conf){.rank = rank, .alpha = 2.0 * rank, .targets = PESO_LORA_ALL};
    peso_llama *m;
    if (!be || peso_llama_load(&m, model, be, &mo, &err))
        die("loading the model", &err);
    peso_optim opt;
    peso_optim_hparams hp;
    peso_optim_defaults(&hp);
    if (peso_optim_init(&opt, be, m->flat.numel, &hp, &err))
        die("optimizer", &err);
    peso_llama_batch batch = {.B = B, .T = T, .ids = ids, .lens = lens, .labels = labels};
    long count = peso_llama_count_labels(&batch);
    double t0 = 0, loss0 = 0, loss1 = 0;
    for (int s = 0; s <= steps; s++) {
        if (s == 1)
            t0 = peso_now(); /* step 0 warms up */
        peso_llama_loss l;
        if (peso_llama_zero_grads(m, &err) || peso_llama_forward_backward(m, &batch, 1.0f / (float)count, &l, &err) ||
            peso_optim_clip_step(&opt, m->params, m->grads, 1e-3, 1.0, NULL, &err))
            die("training step", &err);
        if (s == 0)
            loss0 = l.mean;
        loss1 = l.mean;
    }
    double c_step = (peso_now() - t0) / steps;
    long tokens = 0;
    for (int b = 0; b < B; b++)
        tokens += lens[b];

    /* PyTorch */
    char cmd[16384], line[512];
    snprintf(cmd, sizeof cmd,
             "'%s' '%s/tools/bench/train_step_torch.py' --model '%s' --batch '%s' --steps %d --threads %d "
             "--rank %d",
             py, PESO_BENCH_SOURCE, model, batchf, steps, threads, rank);
    FILE *p = popen(cmd, "r");
    double t_step = 0, t_loss0 = 0;
    while (p && fgets(line, sizeof line, p)) {
        sscanf(line, "step_s %lf", &t_step);
        sscanf(line, "loss0 %lf", &t_loss0);
    }
    int prc = p ? pclose(p) : -1;
    if (prc != 0 || t_step <= 0) {
        fprintf(stderr, "bench-train_step: the PyTorch side failed (%s); make the venv with "
                        "tools/reference/setup-venv.sh\n", cmd);
        return 1;
    }
    printf("model: %s preset, %zu parameters (%zu trainable LoRA r=%d on all projections)\n", preset,
           rep.n_params, m->flat.numel, rank);
    printf("batch: %d prompts x %d tokens (%d history items), %ld label tokens; %d threads; %d timed steps\n",
           B, T, HIST, count, threads, steps);
    printf("first-step loss: peso %.6f, PyTorch %.6f\n\n", loss0, t_loss0);
    printf("| side | step (s) | tokens/s | ratio |\n|---|---|---|---|\n");
    printf("| PyTorch %s eager (transformers + PEFT) | %.3f | %.0f | 1.00x |\n", "CPU", t_step,
           (double)tokens / t_step);
    printf("| peso cpu backend | %.3f | %.0f | %.2fx |\n", c_step, (double)tokens / c_step, t_step / c_step);
    (void)loss1;
    peso_optim_free(&opt);
    peso_llama_free(m);
    peso_backend_destroy(be);
    peso_prompt_free(&pr);
    peso_tok_free(tok);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
