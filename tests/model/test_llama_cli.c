/* The peso-model program, run as a user runs it, on a generated folder,
 * PEFT adapter and HDF5 batch; results against the double reference. */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <sys/wait.h>

#include "common/atomic.h"
#include "lora/adapter.h"
#include "ref_llama.h"

struct cli {
    char *dir;
    char model[300], adapter[300], batch[300], out[300], err[300];
    tiny t;
    peso_flat flat;
    peso_lora lora;
    float *params;
    ref_model ref;
    int32_t ids[14], lens[2], labels[14];
};

static void write_batch(struct cli *c)
{
    int64_t ids[14], mask[14], lab[14];
    peso_rng r;
    peso_rng_seed(&r, 3, 3);
    c->lens[0] = 7;
    c->lens[1] = 5;
    for (int i = 0; i < 14; i++) {
        int t = i % 7, len = c->lens[i / 7];
        c->ids[i] = (int32_t)peso_rng_below(&r, 40);
        c->labels[i] = t < len && i % 4 != 1 ? c->ids[i] : -100;
        ids[i] = c->ids[i];
        mask[i] = t < len;
        lab[i] = c->labels[i];
    }
    hid_t f = H5Fcreate(c->batch, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const char *names[3] = {"input_ids", "attention_mask", "labels"};
    const int64_t *data[3] = {ids, mask, lab};
    hsize_t d[2] = {2, 7};
    for (int k = 0; k < 3; k++) {
        hid_t sp = H5Screate_simple(2, d, NULL);
        hid_t ds = H5Dcreate2(f, names[k], k == 0 ? H5T_STD_I64LE : H5T_STD_I32LE, sp, H5P_DEFAULT,
                              H5P_DEFAULT, H5P_DEFAULT);
        cr_assert(ds >= 0 && H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, data[k]) >= 0);
        H5Dclose(ds);
        H5Sclose(sp);
    }
    H5Fclose(f);
}

/* tiny untied model, a rank-4 adapter on all projections with non-zero
 * B (written with peso_lora_adapter_write), a [2, 7] batch */
static void cli_setup(struct cli *c)
{
    peso_llama_config cfg;
    peso_err err;
    memset(c, 0, sizeof *c);
    tiny_config(&cfg, 0);
    tiny_init(&c->t, &cfg, 301);
    c->dir = tiny_tmpdir();
    snprintf(c->model, sizeof c->model, "%s/model", c->dir);
    snprintf(c->adapter, sizeof c->adapter, "%s/adapter", c->dir);
    snprintf(c->batch, sizeof c->batch, "%s/batch.h5", c->dir);
    snprintf(c->out, sizeof c->out, "%s/stdout", c->dir);
    snprintf(c->err, sizeof c->err, "%s/stderr", c->dir);
    cr_assert_eq(peso_mkdir_p(c->model, &err), 0);
    tiny_write(&c->t, c->model, PESO_ST_WRITE_BF16);
    peso_lora_conf lc = {4, 8.0, PESO_LORA_ALL};
    peso_flat_init(&c->flat);
    cr_assert_eq(peso_lora_layout(&c->lora, &lc, &cfg, &c->flat, &err), 0, "%s", err.msg);
    c->params = calloc(c->flat.numel, sizeof(float));
    peso_rng r;
    peso_rng_seed(&r, 4, 4);
    for (size_t v = 0; v < c->flat.n_views; v++)
        for (size_t j = 0; j < c->flat.views[v].numel; j++)
            c->params[c->flat.views[v].offset + j] = (float)(0.5 * peso_rng_uniform(&r) - 0.25);
    cr_assert_eq(peso_lora_adapter_write(c->adapter, &c->lora, c->params, "tiny", &err), 0, "%s", err.msg);
    ref_bind(&c->ref, &c->t, &c->flat, c->params, 4, 8.0, PESO_LORA_ALL, 0);
    write_batch(c);
}

static void cli_close(struct cli *c)
{
    peso_lora_free(&c->lora);
    peso_flat_free(&c->flat);
    free(c->params);
    tiny_free(&c->t);
    tiny_rmdir(c->dir);
}

/* Runs peso-model with args; returns the exit status. */
static int run(struct cli *c, const char *args)
{
    const char *bin = getenv("PESO_BIN_DIR");
    cr_assert(bin, "PESO_BIN_DIR is not set (run through ctest)");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s/peso-model' %s > '%s' 2> '%s'", bin, args, c->out, c->err);
    int st = system(cmd);
    cr_assert(WIFEXITED(st), "%s", cmd);
    return WEXITSTATUS(st);
}

static char *slurp(const char *path)
{
    static char buf[1 << 16];
    FILE *f = fopen(path, "r");
    cr_assert(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* the value of the last line "loss <value>" */
static double last_loss(const char *text)
{
    const char *p = text + strlen(text);
    cr_assert(p > text && p[-1] == '\n', "output does not end with a line: %s", text);
    p--;
    while (p > text && p[-1] != '\n')
        p--;
    double v;
    cr_assert_eq(sscanf(p, "loss %lf", &v), 1, "last line is not 'loss <value>': %s", p);
    return v;
}

Test(peso_model, loss_and_grads_with_adapter)
{
    struct cli c;
    cli_setup(&c);
    char args[1600], grads[320];
    snprintf(grads, sizeof grads, "%s/grads.safetensors", c.dir);
    snprintf(args, sizeof args, "loss --model '%s' --adapter '%s' --batch '%s' --grads-out '%s'", c.model,
             c.adapter, c.batch, grads);
    cr_assert_eq(run(&c, args), 0, "%s", slurp(c.err));
    long n;
    double sum = ref_loss_sum(&c.ref, c.ids, c.lens, c.labels, 2, 7, &n);
    double got = last_loss(slurp(c.out));
    cr_assert(fabs(got - sum / n) <= 2e-6 * sum / n, "loss %.9g, reference %.9g", got, sum / n);
    char line[64];
    snprintf(line, sizeof line, "tokens %ld\n", n);
    cr_assert(strstr(slurp(c.out), line), "%s", slurp(c.out));

    /* every adapter tensor under its PEFT key, F32, d(mean loss) */
    peso_st *st;
    peso_err err;
    cr_assert_eq(peso_st_open(&st, grads, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_st_count(st), 28);
    peso_rng r;
    peso_rng_seed(&r, 9, 9);
    float g[48 * 4];
    for (int l = 0; l < 2; l++)
        for (int p = 0; p < TINY_NPROJ; p++)
            for (int ab = 0; ab < 2; ab++) {
                char key[128];
                int in, out;
                tiny_dims(&c.t.cfg, p, &in, &out);
                snprintf(key, sizeof key, "base_model.model.model.layers.%d.%s.lora_%c.weight", l,
                         tiny_proj[p], ab ? 'B' : 'A');
                const peso_st_tensor *x = peso_st_find(st, key);
                cr_assert(x, "grads file lacks %s", key);
                cr_assert_str_eq(x->dtype, "F32");
                cr_assert(x->ndim == 2 && x->shape[0] == (ab ? out : 4) && x->shape[1] == (ab ? 4 : in), "%s",
                          key);
                cr_assert_eq(peso_st_to_f32(x, g, &err), 0);
                const float *w = ab ? c.ref.B[l][p] : c.ref.A[l][p];
                size_t i = peso_rng_below(&r, peso_st_numel(x));
                float *pi = (float *)w + i, x0 = *pi, h = 1e-4f;
                *pi = x0 + h;
                double lp = ref_loss_sum(&c.ref, c.ids, c.lens, c.labels, 2, 7, &n) / n;
                *pi = x0 - h;
                double lm = ref_loss_sum(&c.ref, c.ids, c.lens, c.labels, 2, 7, &n) / n;
                *pi = x0;
                double fd = (lp - lm) / ((double)(x0 + h) - (double)(x0 - h));
                cr_assert(fabs(fd - g[i]) <= 1e-3 * fabs(fd) + 1e-6,
                          "%s[%zu]: file %.9g, finite difference %.9g", key, i, (double)g[i], fd);
            }
    peso_st_close(st);
    cli_close(&c);
}

Test(peso_model, loss_without_adapter_is_the_base_model)
{
    struct cli c;
    cli_setup(&c);
    char args[1200];
    snprintf(args, sizeof args, "loss --model '%s' --batch '%s' --rank 2 --targets q,v", c.model, c.batch);
    cr_assert_eq(run(&c, args), 0, "%s", slurp(c.err));
    ref_model base = c.ref;
    memset(base.A, 0, sizeof base.A);
    memset(base.B, 0, sizeof base.B);
    long n;
    double want = ref_loss_sum(&base, c.ids, c.lens, c.labels, 2, 7, &n) / n;
    double got = last_loss(slurp(c.out));
    cr_assert(fabs(got - want) <= 2e-6 * want, "loss %.9g, base reference %.9g", got, want);
    cli_close(&c);
}

Test(peso_model, logits_top5_and_out_file)
{
    struct cli c;
    cli_setup(&c);
    char args[1200], path[320];
    snprintf(path, sizeof path, "%s/logits.safetensors", c.dir);
    snprintf(args, sizeof args, "logits --model '%s' --adapter '%s' --ids 3,1,4,1,5,9 --out '%s'", c.model,
             c.adapter, path);
    cr_assert_eq(run(&c, args), 0, "%s", slurp(c.err));
    int32_t ids[6] = {3, 1, 4, 1, 5, 9};
    double want[6 * 40];
    ref_logits(&c.ref, ids, 6, want);
    peso_st *st;
    peso_err err;
    cr_assert_eq(peso_st_open(&st, path, &err), 0, "%s", err.msg);
    const peso_st_tensor *x = peso_st_find(st, "logits");
    cr_assert(x && x->ndim == 2 && x->shape[0] == 6 && x->shape[1] == 40);
    float got[6 * 40];
    cr_assert_eq(peso_st_to_f32(x, got, &err), 0);
    for (int i = 0; i < 240; i++)
        cr_assert(fabs(got[i] - want[i]) <= 1e-5 * (1 + fabs(want[i])), "logits[%d][%d] %.7g, reference %.7g",
                  i / 40, i % 40, got[i], want[i]);
    peso_st_close(st);
    /* top-5 of the last position, in order */
    int order[40];
    for (int j = 0; j < 40; j++)
        order[j] = j;
    for (int a = 0; a < 5; a++)
        for (int b = a + 1; b < 40; b++)
            if (want[200 + order[b]] > want[200 + order[a]]) {
                int t = order[a];
                order[a] = order[b];
                order[b] = t;
            }
    char *text = slurp(c.out);
    cr_assert(strstr(text, "position 5\n"), "%s", text);
    for (int k = 0; k < 5; k++) {
        char line[32];
        snprintf(line, sizeof line, "top %d %d ", k + 1, order[k]);
        cr_assert(strstr(text, line), "expected '%s' in:\n%s", line, text);
    }
    cli_close(&c);
}

Test(peso_model, usage_and_failures)
{
    struct cli c;
    cli_setup(&c);
    char args[1200], bad[320];
    cr_assert_eq(run(&c, "loss --batch x.h5"), 2);
    cr_assert(strstr(slurp(c.err), "--model"), "%s", slurp(c.err));
    cr_assert_eq(run(&c, "frobnicate"), 2);
    snprintf(args, sizeof args, "loss --model '%s' --batch '%s' --bogus 1", c.model, c.batch);
    cr_assert_eq(run(&c, args), 2);
    snprintf(args, sizeof args, "loss --model '%s' --adapter '%s' --rank 2 --batch '%s'", c.model, c.adapter,
             c.batch);
    cr_assert_eq(run(&c, args), 2);
    /* a folder with a tensor missing: exit 1, naming file and tensor */
    snprintf(bad, sizeof bad, "%s/bad", c.dir);
    peso_err err;
    cr_assert_eq(peso_mkdir_p(bad, &err), 0);
    tiny_write_skip(&c.t, bad, PESO_ST_WRITE_F32, "model.layers.0.self_attn.v_proj.weight");
    snprintf(args, sizeof args, "loss --model '%s' --batch '%s'", bad, c.batch);
    cr_assert_eq(run(&c, args), 1);
    cr_assert(strstr(slurp(c.err), "bad/model.safetensors") &&
                  strstr(slurp(c.err), "model.layers.0.self_attn.v_proj.weight"),
              "%s", slurp(c.err));
    snprintf(args, sizeof args, "loss --model '%s' --batch '%s/none.h5'", c.model, c.dir);
    cr_assert_eq(run(&c, args), 1);
    cr_assert(strstr(slurp(c.err), "none.h5"), "%s", slurp(c.err));
    cli_close(&c);
}

Test(peso_model, inspect_llama_3_2_1b_config)
{
    struct cli c;
    cli_setup(&c);
    cr_assert_eq(run(&c, "inspect --model '" PESO_FIXTURES "/model/llama-3.2-1b'"), 0, "%s", slurp(c.err));
    char *text = slurp(c.out);
    const char *want[] = {"vocab_size 128256\n",
                          "num_key_value_heads 8\n",
                          "tie_word_embeddings true\n",
                          "rope_scaling llama3 factor=32 ",
                          "params_base 1235814400\n",
                          "lora r=8 alpha=16 scaling=2 targets=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,"
                          "down_proj\n",
                          "params_lora 5636096\n",
                          "weights none"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert(strstr(text, want[i]), "expected '%s' in:\n%s", want[i], text);
    cli_close(&c);
}
