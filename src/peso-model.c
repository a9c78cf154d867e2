/* peso-model: utilities over one model folder (+ optional PEFT adapter).
 *
 *   peso-model loss    --model DIR [--adapter DIR] --batch FILE.h5
 *                      [--grads-out FILE.safetensors]
 *   peso-model logits  --model DIR [--adapter DIR] --ids 1,2,3
 *                      [--out FILE.safetensors]
 *   peso-model inspect --model DIR [--adapter DIR]
 *   peso-model adapter --model DIR --out ADAPTER_DIR [LoRA options]
 *                      [--b-init zero|normal] [--b-std S] [--force]
 *   peso-model init    ... (model/init.h: a tiny random model folder)
 *
 * Without --adapter, LoRA comes from --rank/--alpha/--targets with PEFT's
 * init (B = 0), so results are the base model's. `adapter` writes such a
 * fresh adapter as a PEFT folder (optionally with B random, so that it
 * changes the outputs), to check interchange with PEFT. Exit status: 0 ok,
 * 1 failure, 2 usage. */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "common/atomic.h"
#include "lora/adapter.h"
#include "model/init.h"
#include "model/llama.h"
#include "hf/safetensors.h"

enum {
    OPT_MODEL = 1 << 0,
    OPT_ADAPTER = 1 << 1,
    OPT_BATCH = 1 << 2,
    OPT_GRADS = 1 << 3,
    OPT_IDS = 1 << 4,
    OPT_OUT = 1 << 5,
    OPT_LORA = 1 << 6, /* --rank --alpha --targets --seed */
    OPT_BACKEND = 1 << 7,
    OPT_ADAPTER_INIT = 1 << 8, /* --b-init --b-std --force */
};

struct args {
    const char *model, *adapter, *batch, *grads_out, *ids, *out, *backend;
    const char *b_init, *b_std;
    peso_llama_opts mo;
    int lora_set;
    int force;
};

static const char *prog = "peso-model";

static void usage(FILE *f)
{
    fprintf(f, "usage: peso-model <command> [options]\n"
               "  loss    --model DIR [--adapter DIR] --batch FILE.h5 [--grads-out FILE.safetensors]\n"
               "          loss of one batch (/input_ids, /attention_mask, /labels int [B, T]); the last\n"
               "          line is 'loss <mean>'. --grads-out writes the gradient of the mean loss for\n"
               "          every adapter tensor under its PEFT key (F32).\n"
               "  logits  --model DIR [--adapter DIR] --ids 1,2,3 [--out FILE.safetensors]\n"
               "          top-5 logits of the last position; --out writes 'logits' F32 [T, V]\n"
               "  inspect --model DIR [--adapter DIR]\n"
               "          config, parameter counts and the folder's weights\n"
               "  adapter --model DIR --out ADAPTER_DIR [--b-init zero|normal] [--b-std S] [--force]\n"
               "          writes a fresh LoRA adapter for the model as a PEFT folder (adapter_config.json,\n"
               "          adapter_model.safetensors): A from PEFT's Kaiming-uniform init; B zero\n"
               "          (--b-init zero, the default: PEFT's init_lora_weights=True, outputs unchanged)\n"
               "          or N(0, S^2) (--b-init normal, --b-std S, default 0.02: the analog of PEFT's\n"
               "          init_lora_weights=False, which also makes B non-zero, so the adapter changes\n"
               "          the outputs). A non-empty ADAPTER_DIR is refused unless --force.\n"
               "  init    --preset NAME --out DIR ...  a random model folder (peso-model init --help)\n"
               "LoRA without --adapter: --rank R (8) --alpha A (16) --targets q,k,v,o,gate,up,down\n"
               "  (default all) --seed N (42, init of A); --backend NAME (cpu)\n");
}

static int bad_value(const char *opt, const char *v, const char *want)
{
    fprintf(stderr, "%s: %s '%s': expected %s\n", prog, opt, v, want);
    return -1;
}

static int parse_int(const char *opt, const char *v, int lo, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > INT_MAX)
        return bad_value(opt, v, "an integer in range");
    *out = (int)x;
    return 0;
}

static int parse_lora(struct args *a, const char *opt, const char *v)
{
    peso_err err;
    char *end;
    a->lora_set = 1;
    if (!strcmp(opt, "--rank"))
        return parse_int(opt, v, 1, &a->mo.lora.rank);
    if (!strcmp(opt, "--alpha")) {
        errno = 0;
        a->mo.lora.alpha = strtod(v, &end);
        return errno || end == v || *end || !(a->mo.lora.alpha > 0) ? bad_value(opt, v, "a number > 0") : 0;
    }
    if (!strcmp(opt, "--seed")) {
        errno = 0;
        a->mo.seed = strtoull(v, &end, 10);
        return errno || end == v || *end ? bad_value(opt, v, "an unsigned integer") : 0;
    }
    if (peso_lora_targets_parse(v, &a->mo.lora.targets, &err) < 0) {
        fprintf(stderr, "%s: --targets: %s\n", prog, err.msg);
        return -1;
    }
    return 0;
}

static const char **string_slot(struct args *a, const char *opt, unsigned allowed)
{
    static const struct {
        const char *name;
        unsigned bit;
        size_t off;
    } table[] = {
        {"--model", OPT_MODEL, offsetof(struct args, model)},
        {"--adapter", OPT_ADAPTER, offsetof(struct args, adapter)},
        {"--batch", OPT_BATCH, offsetof(struct args, batch)},
        {"--grads-out", OPT_GRADS, offsetof(struct args, grads_out)},
        {"--ids", OPT_IDS, offsetof(struct args, ids)},
        {"--out", OPT_OUT, offsetof(struct args, out)},
        {"--backend", OPT_BACKEND, offsetof(struct args, backend)},
        {"--b-init", OPT_ADAPTER_INIT, offsetof(struct args, b_init)},
        {"--b-std", OPT_ADAPTER_INIT, offsetof(struct args, b_std)},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(opt, table[i].name) && (allowed & table[i].bit))
            return (const char **)((char *)a + table[i].off);
    return NULL;
}

static int is_lora_opt(const char *s)
{
    return !strcmp(s, "--rank") || !strcmp(s, "--alpha") || !strcmp(s, "--targets") || !strcmp(s, "--seed");
}

/* argv[0] is the command; returns 0, or 2 after printing a usage error. */
static int parse_args(struct args *a, int argc, char **argv, unsigned allowed)
{
    memset(a, 0, sizeof *a);
    peso_llama_opts_defaults(&a->mo);
    a->backend = "cpu";
    allowed |= OPT_BACKEND;
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if ((allowed & OPT_ADAPTER_INIT) && !strcmp(opt, "--force")) {
            a->force = 1;
            continue;
        }
        const char **slot = string_slot(a, opt, allowed);
        int lora = (allowed & OPT_LORA) && is_lora_opt(opt);
        if (!slot && !lora) {
            fprintf(stderr, "%s %s: unknown option '%s'\n", prog, argv[0], opt);
            usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s %s: %s needs a value\n", prog, argv[0], opt);
            return 2;
        }
        if (slot)
            *slot = argv[++i];
        else if (parse_lora(a, opt, argv[++i]) < 0)
            return 2;
    }
    if (!a->model) {
        fprintf(stderr, "%s %s: --model DIR is required\n", prog, argv[0]);
        return 2;
    }
    if (a->adapter && a->lora_set) {
        fprintf(stderr, "%s %s: --rank/--alpha/--targets/--seed conflict with --adapter, which sets LoRA\n",
                prog, argv[0]);
        return 2;
    }
    return 0;
}

/* Backend, model (LoRA shaped by the adapter when one is given) and the
 * adapter's weights. */
static int open_model(struct args *a, peso_backend **be, peso_llama **m)
{
    peso_err err;
    *m = NULL;
    if (a->adapter && peso_lora_adapter_read_conf(a->adapter, &a->mo.lora, NULL, 0, &err) < 0)
        goto fail;
    *be = peso_backend_create(a->backend, &err);
    if (!*be)
        goto fail;
    if (peso_llama_load(m, a->model, *be, &a->mo, &err) < 0 ||
        (a->adapter && peso_llama_load_adapter(*m, a->adapter, &err) < 0)) {
        peso_llama_free(*m);
        peso_backend_destroy(*be);
        goto fail;
    }
    return 0;
fail:
    fprintf(stderr, "%s: %s\n", prog, err.msg);
    return -1;
}

static void close_model(peso_backend *be, peso_llama *m)
{
    peso_llama_free(m);
    peso_backend_destroy(be);
}

/* ---- loss ---- */

static int write_grads(peso_llama *m, const char *path, peso_err *err)
{
    float *g = peso_malloc((m->flat.numel ? m->flat.numel : 1) * sizeof(float));
    int rc = peso_llama_get_grads(m, g, err);
    if (rc == 0)
        rc = peso_lora_adapter_write_weights(path, &m->lora, g, err);
    free(g);
    return rc;
}

static int run_loss(struct args *a, peso_llama *m)
{
    peso_err err;
    peso_llama_batch_file bf;
    peso_llama_loss loss;
    if (peso_llama_batch_read(&bf, a->batch, &err) < 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return 1;
    }
    int rc = 1;
    if (!bf.labels) {
        fprintf(stderr, "%s: %s: dataset /labels is missing\n", prog, a->batch);
        goto out;
    }
    /* the count is known before the pass: d(mean)/d = (1/count) d(sum)/d */
    long n = peso_llama_count_labels(&bf.batch);
    int r = a->grads_out ? peso_llama_forward_backward(m, &bf.batch, n ? 1.0f / (float)n : 0.0f, &loss, &err)
                         : peso_llama_forward(m, &bf.batch, &loss, &err);
    if (r < 0) {
        fprintf(stderr, "%s: %s: %s\n", prog, a->batch, err.msg);
        goto out;
    }
    if (loss.count == 0) {
        fprintf(stderr, "%s: %s: no label tokens (every label is -100 or at position 0)\n", prog, a->batch);
        goto out;
    }
    if (a->grads_out && write_grads(m, a->grads_out, &err) < 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        goto out;
    }
    printf("model %s\n", a->model);
    printf("adapter %s\n", a->adapter ? a->adapter : "none");
    printf("batch %s [%d, %d]\n", a->batch, bf.batch.B, bf.batch.T);
    printf("tokens %ld\n", loss.count);
    printf("loss_sum %.10g\n", loss.sum);
    if (a->grads_out)
        printf("grads %s (%d tensors)\n", a->grads_out, 2 * m->lora.n_modules);
    printf("loss %.10g\n", loss.mean);
    rc = 0;
out:
    peso_llama_batch_file_free(&bf);
    return rc;
}

static int cmd_loss(int argc, char **argv)
{
    struct args a;
    int rc = parse_args(&a, argc, argv, OPT_MODEL | OPT_ADAPTER | OPT_BATCH | OPT_GRADS | OPT_LORA);
    if (rc)
        return rc;
    if (!a.batch) {
        fprintf(stderr, "%s loss: --batch FILE.h5 is required\n", prog);
        return 2;
    }
    peso_backend *be;
    peso_llama *m;
    if (open_model(&a, &be, &m) < 0)
        return 1;
    rc = run_loss(&a, m);
    close_model(be, m);
    return rc;
}

/* ---- logits ---- */

static int parse_ids(const char *s, int32_t **ids, int *n)
{
    size_t cap = 16;
    *n = 0;
    *ids = peso_malloc(cap * sizeof **ids);
    for (const char *p = s;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            free(*ids);
            return bad_value("--ids", s, "comma-separated token ids");
        }
        peso_grow((void **)ids, &cap, (size_t)*n + 1, sizeof **ids);
        (*ids)[(*n)++] = (int32_t)v;
        if (!*end)
            return 0;
        p = end + 1;
    }
}

static void print_top(const float *row, int V, int k)
{
    int best[8];
    for (int j = 0; j < k; j++) {
        best[j] = -1;
        for (int v = 0; v < V; v++) {
            int taken = 0;
            for (int i = 0; i < j; i++)
                taken |= best[i] == v;
            if (!taken && (best[j] < 0 || row[v] > row[best[j]]))
                best[j] = v;
        }
        printf("top %d %d %.9g\n", j + 1, best[j], (double)row[best[j]]);
    }
}

static int run_logits(struct args *a, peso_llama *m, const int32_t *ids, int T)
{
    peso_err err;
    int V = m->cfg.vocab_size, n_pos = a->out ? T : 1;
    int32_t len = T, *pos = peso_malloc((size_t)n_pos * sizeof *pos);
    for (int i = 0; i < n_pos; i++)
        pos[i] = T - n_pos + i;
    float *lg = peso_malloc((size_t)n_pos * V * sizeof *lg);
    peso_llama_batch b = {1, T, ids, &len, NULL};
    int rc = peso_llama_logits(m, &b, pos, n_pos, lg, &err);
    if (rc == 0 && a->out) {
        peso_st_wtensor t = {"logits", PESO_ST_WRITE_F32, 2, {T, V}, lg};
        peso_st_kv meta = {"format", "pt"};
        rc = peso_st_write(a->out, &t, 1, &meta, 1, &err);
    }
    if (rc == 0) {
        printf("model %s\n", a->model);
        printf("adapter %s\n", a->adapter ? a->adapter : "none");
        printf("tokens %d\n", T);
        printf("vocab %d\n", V);
        if (a->out)
            printf("logits %s [%d, %d]\n", a->out, T, V);
        printf("position %d\n", T - 1);
        print_top(lg + (size_t)(n_pos - 1) * V, V, V < 5 ? V : 5);
    } else {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
    }
    free(lg);
    free(pos);
    return rc ? 1 : 0;
}

static int cmd_logits(int argc, char **argv)
{
    struct args a;
    int rc = parse_args(&a, argc, argv, OPT_MODEL | OPT_ADAPTER | OPT_IDS | OPT_OUT | OPT_LORA);
    if (rc)
        return rc;
    int32_t *ids;
    int T;
    if (!a.ids) {
        fprintf(stderr, "%s logits: --ids 1,2,3 is required\n", prog);
        return 2;
    }
    if (parse_ids(a.ids, &ids, &T) < 0)
        return 2;
    peso_backend *be;
    peso_llama *m;
    if (open_model(&a, &be, &m) < 0) {
        free(ids);
        return 1;
    }
    rc = run_logits(&a, m, ids, T);
    close_model(be, m);
    free(ids);
    return rc;
}

/* ---- inspect: config.json and the weight files, no weights loaded ---- */

static void print_config(const peso_llama_config *c)
{
    printf("vocab_size %d\nhidden_size %d\nintermediate_size %d\nnum_hidden_layers %d\n", c->vocab_size,
           c->hidden_size, c->intermediate_size, c->num_hidden_layers);
    printf("num_attention_heads %d\nnum_key_value_heads %d\nhead_dim %d\n", c->num_attention_heads,
           c->num_key_value_heads, c->head_dim);
    printf("rms_norm_eps %g\nrope_theta %g\n", c->rms_norm_eps, c->rope_theta);
    if (c->rope_scaling.llama3)
        printf("rope_scaling llama3 factor=%g low_freq_factor=%g high_freq_factor=%g "
               "original_max_position_embeddings=%d\n",
               c->rope_scaling.factor, c->rope_scaling.low_freq_factor, c->rope_scaling.high_freq_factor,
               c->rope_scaling.original_max_position_embeddings);
    else
        printf("rope_scaling none\n");
    printf("max_position_embeddings %d\ntie_word_embeddings %s\ndtype %s\n", c->max_position_embeddings,
           c->tie_word_embeddings ? "true" : "false", c->dtype[0] ? c->dtype : "(unset)");
}

static void print_targets(unsigned mask)
{
    int first = 1;
    for (int p = 0; p < PESO_LORA_NPROJ; p++)
        if (mask & (1u << p)) {
            printf("%s%s", first ? "" : ",", peso_lora_proj_name((peso_lora_proj)p));
            first = 0;
        }
    printf("%s\n", first ? "none" : "");
}

static void print_weights(const char *dir)
{
    peso_st *st;
    peso_err err;
    if (peso_st_open_dir(&st, dir, &err) < 0) {
        printf("weights none (%s)\n", err.msg);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < peso_st_count(st); i++)
        n += peso_st_numel(peso_st_at(st, i));
    printf("weights %s tensors %zu params %zu\n", peso_st_path(st), peso_st_count(st), n);
    peso_st_close(st);
}

static int cmd_inspect(int argc, char **argv)
{
    struct args a;
    int rc = parse_args(&a, argc, argv, OPT_MODEL | OPT_ADAPTER | OPT_LORA);
    if (rc)
        return rc;
    peso_err err;
    peso_llama_config c;
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", a.model);
    if (peso_llama_config_load(&c, path, &err) < 0 || peso_llama_config_check(&c, path, &err) < 0 ||
        (a.adapter && peso_lora_adapter_read_conf(a.adapter, &a.mo.lora, NULL, 0, &err) < 0)) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return 1;
    }
    printf("model %s\n", a.model);
    print_config(&c);
    printf("params_base %zu\n", peso_llama_base_numel(&c));
    printf("lora r=%d alpha=%g scaling=%g targets=", a.mo.lora.rank, a.mo.lora.alpha,
           peso_lora_scaling(&a.mo.lora));
    print_targets(a.mo.lora.targets);
    printf("params_lora %zu\n", peso_lora_numel(&a.mo.lora, &c));
    print_weights(a.model);
    return 0;
}

/* ---- adapter: a fresh PEFT adapter folder ---- */

#define DEFAULT_B_STD 0.02

/* --b-init and --b-std into *std: 0 for B = 0, else the normal's std. */
static int parse_b_init(const struct args *a, double *std)
{
    char *end;
    *std = 0.0;
    if (!a->b_init || !strcmp(a->b_init, "zero")) {
        if (a->b_std) {
            fprintf(stderr, "%s adapter: --b-std needs --b-init normal (B is zero otherwise)\n", prog);
            return -1;
        }
        return 0;
    }
    if (strcmp(a->b_init, "normal"))
        return bad_value("--b-init", a->b_init, "zero or normal");
    if (!a->b_std) {
        *std = DEFAULT_B_STD;
        return 0;
    }
    errno = 0;
    *std = strtod(a->b_std, &end);
    if (errno || end == a->b_std || *end || !(*std > 0.0) || *std > DBL_MAX)
        return bad_value("--b-std", a->b_std, "a finite number > 0");
    return 0;
}

static int refuse_nonempty(const struct args *a)
{
    peso_err err;
    int empty;
    if (peso_dir_is_empty(a->out, &empty, &err) < 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return -1;
    }
    if (!empty && !a->force) {
        fprintf(stderr, "%s: %s: directory is not empty (pass --force to overwrite its adapter files)\n",
                prog, a->out);
        return -1;
    }
    return 0;
}

/* The LoRA of a freshly loaded model is PEFT's init; B is redrawn when
 * asked, then the adapter is written as training would save it. */
static int write_adapter(const struct args *a, peso_llama *m, double b_std)
{
    peso_err err;
    float *host = peso_malloc((m->flat.numel ? m->flat.numel : 1) * sizeof(float));
    int rc = 0;
    if (b_std > 0.0) {
        rc = peso_llama_get_params(m, host, &err);
        if (rc == 0) {
            peso_lora_init_b_normal(&m->lora, host, a->mo.seed, b_std);
            rc = peso_llama_set_params(m, host, &err);
        }
    }
    free(host);
    if (rc == 0)
        rc = peso_llama_save_adapter(m, a->out, a->model, &err);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return 1;
    }
    printf("model %s\n", a->model);
    printf("adapter %s\n", a->out);
    printf("lora r=%d alpha=%g scaling=%g targets=", m->lora.conf.rank, m->lora.conf.alpha,
           peso_lora_scaling(&m->lora.conf));
    print_targets(m->lora.conf.targets);
    printf("b_init %s", b_std > 0.0 ? "normal" : "zero");
    if (b_std > 0.0)
        printf(" std=%g", b_std);
    printf("\nseed %llu\n", (unsigned long long)a->mo.seed);
    printf("tensors %d params %zu\n", 2 * m->lora.n_modules, peso_lora_numel(&m->lora.conf, &m->cfg));
    return 0;
}

static int cmd_adapter(int argc, char **argv)
{
    struct args a;
    double b_std;
    int rc = parse_args(&a, argc, argv, OPT_MODEL | OPT_OUT | OPT_LORA | OPT_ADAPTER_INIT);
    if (rc)
        return rc;
    if (!a.out) {
        fprintf(stderr, "%s adapter: --out ADAPTER_DIR is required\n", prog);
        return 2;
    }
    if (parse_b_init(&a, &b_std) < 0)
        return 2;
    if (refuse_nonempty(&a) < 0)
        return 1;
    peso_backend *be;
    peso_llama *m;
    if (open_model(&a, &be, &m) < 0)
        return 1;
    rc = write_adapter(&a, m, b_std);
    close_model(be, m);
    return rc;
}

/* ---- dispatch ---- */

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {
    {.name = "loss", .run = cmd_loss},
    {.name = "logits", .run = cmd_logits},
    {.name = "inspect", .run = cmd_inspect},
    {.name = "adapter", .run = cmd_adapter},
    {.name = "init", .run = peso_model_init_main},
};

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "%s: unknown command '%s'\n", prog, argv[1]);
    usage(stderr);
    return 2;
}
