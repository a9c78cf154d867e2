#include "conf/conf.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "backend/backend.h"
#include "common/file.h"
#include "common/strtab.h"

/* ---- the schema: every key once, with type, default, range and doc ---- */

enum key_type { K_STR, K_ENUM, K_INT, K_U64, K_FLOAT, K_FLOAT_LIST, K_INT_LIST };

typedef struct key_def {
    const char *name;      /* dotted path */
    enum key_type type;
    size_t off;            /* offset in peso_conf */
    size_t size;           /* string capacity, or list capacity */
    size_t count_off;      /* lists: offset of the int element count */
    double min, max;       /* numeric range (inclusive); lists: per element */
    const char *choices;   /* K_ENUM: "a|b|c" */
    const char *def;       /* default, in YAML syntax */
    const char *doc;
} key_def;

#define OFF(f) offsetof(peso_conf, f)
#define STR(k, f, d, doc) {k, K_STR, OFF(f), sizeof(((peso_conf *)0)->f), 0, 0, 0, NULL, d, doc}
#define ENUM(k, f, ch, d, doc) {k, K_ENUM, OFF(f), sizeof(((peso_conf *)0)->f), 0, 0, 0, ch, d, doc}
#define INT(k, f, lo, hi, d, doc) {k, K_INT, OFF(f), 0, 0, lo, hi, NULL, d, doc}
#define U64(k, f, d, doc) {k, K_U64, OFF(f), 0, 0, 0, 0, NULL, d, doc}
#define FLT(k, f, lo, hi, d, doc) {k, K_FLOAT, OFF(f), 0, 0, lo, hi, NULL, d, doc}
#define FLIST(k, f, n, lo, hi, d, doc)                                                             \
    {k, K_FLOAT_LIST, OFF(f), sizeof(((peso_conf *)0)->f) / sizeof(double), OFF(n), lo, hi, NULL, d, doc}
#define ILIST(k, f, n, lo, hi, d, doc)                                                             \
    {k, K_INT_LIST, OFF(f), sizeof(((peso_conf *)0)->f) / sizeof(int64_t), OFF(n), lo, hi, NULL, d, doc}

static const key_def keys[] = {
    STR("out_dir", out_dir, "runs/demo", "directory for dataset.h5, stats.json, checkpoints, metrics"),
    U64("seed", seed, "42", "run seed: every random choice derives from it"),
    INT("threads", threads, 0, 4096, "0", "CPU threads (0 = all cores)"),

    ENUM("data.format", data.format, "amazon2023|amazon2014|csv|letter|synthetic", "synthetic",
         "raw data format"),
    STR("data.reviews", data.reviews, "",
        "interactions file, plain or .gz (amazon2023/amazon2014 JSONL, csv, LETTER .inter.json)"),
    STR("data.meta", data.meta, "", "amazon2023 item metadata JSONL, plain or .gz (\"\" = none)"),
    STR("data.csv_user", data.csv_user, "user_id", "csv: user column name"),
    STR("data.csv_item", data.csv_item, "item_id", "csv: item column name"),
    STR("data.csv_time", data.csv_time, "timestamp", "csv: timestamp column name"),
    STR("data.csv_delim", data.csv_delim, ",", "csv: delimiter, one character (\\t = tab)"),
    ENUM("data.csv_time_unit", data.csv_time_unit, "s|ms", "s", "csv: unit of the timestamp column"),
    INT("data.year_min", data.year_min, 0, 9999, "0",
        "keep interactions from this UTC year on, after dedup (0 = no bound)"),
    INT("data.year_max", data.year_max, 0, 9999, "0", "keep interactions up to this UTC year (0 = no bound)"),
    INT("data.skip_bad_lines", data.skip_bad_lines, 0, 1e15, "0",
        "tolerate up to N malformed input lines (they are listed); more is an error"),
    INT("data.max_text", data.max_text, 0, 1 << 24, "2048",
        "bytes of item text kept per item for the text hashing encoder"),

    FLIST("split.fractions", split.fractions, split.n_fractions, 1e-9, 1.0, "[0.6, 0.1, 0.1, 0.1, 0.1]",
          "block sizes D1..DT as fractions of the interactions (sum 1)"),
    INT("split.min_user_interactions", split.min_user_interactions, 3, 1e9, "5",
        "per block, drop users with fewer interactions inside the block"),
    INT("split.window", split.window, 1, 4096, "20", "sliding-window history length (items)"),
    ENUM("split.mode", split.mode, "chronological|user-disjoint", "chronological",
         "global time split, or whole users assigned to blocks at random (sizes matched)"),
    ENUM("split.history", split.history, "block|all", "block",
         "history windows from the block only, or reaching into the user's earlier blocks"),

    ENUM("semid.source", semid.source, "rqvae|import", "rqvae",
         "learn semantic IDs with the RQ-VAE, or import a .index.json"),
    ENUM("semid.features", semid.features, "text|embeddings|model", "text",
         "RQ-VAE input: text hashing encoder over item text, an HDF5 embeddings file, or the mean "
         "final hidden state of semid.model over the item text"),
    STR("semid.embeddings", semid.embeddings, "", "HDF5 file with /embeddings float [n,d] and /ids [n]"),
    STR("semid.model", semid.model, "",
        "Hugging Face model folder (config.json, safetensors, tokenizer.json) for semid.features: model"),
    INT("semid.model_max_tokens", semid.model_max_tokens, 1, 8192, "64",
        "semid.features model: item text tokens fed to the model, BOS included (longer text is cut)"),
    STR("semid.index", semid.index, "", "LETTER/LC-Rec .index.json to import (semid.source: import)"),
    STR("semid.export_index", semid.export_index, "", "also write the IDs as .index.json here (\"\" = no)"),
    INT("semid.text_dim", semid.text_dim, 8, 65536, "256", "text hashing encoder dimension"),
    INT("semid.levels", semid.levels, 1, 7, "3", "RQ-VAE residual levels (a collision level is added)"),
    INT("semid.codebook", semid.codebook, 2, 65536, "256", "codes per level"),
    ILIST("semid.hidden", semid.hidden, semid.n_hidden, 1, 65536, "[256, 128]", "RQ-VAE MLP hidden sizes"),
    INT("semid.latent", semid.latent, 1, 65536, "32", "RQ-VAE code vector size"),
    INT("semid.epochs", semid.epochs, 1, 1e6, "50", "RQ-VAE training epochs over D1's items"),
    INT("semid.batch", semid.batch, 1, 1e7, "256", "RQ-VAE batch size"),
    FLT("semid.lr", semid.lr, 1e-9, 10, "1e-3", "RQ-VAE Adam learning rate"),
    FLT("semid.beta", semid.beta, 0, 100, "0.25", "RQ-VAE commitment loss weight"),
    INT("semid.kmeans_iters", semid.kmeans_iters, 0, 10000, "20", "k-means iterations for codebook init"),

    INT("synth.users", synth.users, 1, 1e8, "500", "synthetic: users active in D1's period"),
    INT("synth.items", synth.items, 1, 1e8, "400", "synthetic: items at the start"),
    INT("synth.clusters", synth.clusters, 1, 100000, "12", "synthetic: item clusters (topics)"),
    INT("synth.words_per_cluster", synth.words_per_cluster, 1, 1000, "8", "synthetic: vocabulary per cluster"),
    INT("synth.seq_mean", synth.seq_mean, 1, 100000, "12",
        "synthetic: mean interactions per active user and block"),
    FLT("synth.zipf", synth.zipf, 0, 10, "1.1", "synthetic: Zipf exponent of popularity within a cluster"),
    FLT("synth.drift", synth.drift, 0, 1, "0.5", "synthetic: a in P_t = a P_{t-1} + (1-a) Q_t"),
    FLT("synth.long_term", synth.long_term, 0, 1, "0.5", "synthetic: share of choices from long-term interest"),
    FLT("synth.new_user_share", synth.new_user_share, 0, 100, "0.2",
        "synthetic: new users per incremental block, relative to synth.users"),
    FLT("synth.new_item_share", synth.new_item_share, 0, 100, "0.1",
        "synthetic: new items per incremental block, relative to synth.items"),

    STR("model.path", model.path, "",
        "Hugging Face model folder (config.json, safetensors, tokenizer.json); \"\" = generate "
        "model.preset into <out_dir>/model"),
    ENUM("model.preset", model.preset, "tiny|small", "tiny",
         "built-in random Llama-3 model used when model.path is empty"),
    INT("model.lora_rank", model.lora_rank, 1, 4096, "8", "LoRA rank r"),
    FLT("model.lora_alpha", model.lora_alpha, 1e-9, 1e9, "16", "LoRA alpha (scaling alpha / r)"),
    STR("model.lora_targets", model.lora_targets, "q,k,v,o,gate,up,down",
        "adapted projections: a comma-separated list of q,k,v,o,gate,up,down, or all"),

    FLT("train.lr", train.lr, 1e-12, 10, "1e-3", "stage-1 peak learning rate (AdamW)"),
    STR("train.lr_scale", train.lr_scale, "auto",
        "stages >= 2 use train.lr times this: a number, or auto = |Dt| / |D1| (training windows)"),
    INT("train.epochs", train.epochs, 1, 1e6, "1", "epochs over D1's training windows (stage 1)"),
    INT("train.epochs_continual", train.epochs_continual, 1, 1e6, "1", "epochs over Dt's windows, t >= 2"),
    INT("train.batch_tokens", train.batch_tokens, 1, 1e12, "8192",
        "global token budget of one optimizer step (windows are packed until it is reached)"),
    INT("train.micro_tokens", train.micro_tokens, 1, 1e12, "4096",
        "padded tokens of one forward/backward pass (memory bound; gradients accumulate)"),
    ENUM("train.schedule", train.schedule, "constant|cosine", "cosine", "learning-rate schedule within a stage"),
    INT("train.warmup_steps", train.warmup_steps, 0, 1e9, "0", "linear warmup steps at the start of a stage"),
    FLT("train.min_lr_ratio", train.min_lr_ratio, 0, 1, "0", "cosine floor as a fraction of the peak rate"),
    FLT("train.weight_decay", train.weight_decay, 0, 10, "0.01", "AdamW decoupled weight decay"),
    FLT("train.max_grad_norm", train.max_grad_norm, 0, 1e9, "1", "global gradient-norm clip (0 = off)"),
    INT("train.max_windows", train.max_windows, 0, 1e12, "0",
        "train on at most this many shuffled windows per stage and epoch (0 = all)"),
    INT("train.log_every", train.log_every, 1, 1e9, "10", "optimizer steps between progress lines"),

    STR("method.name", method.name, "peso",
        "continual method of stages >= 2: a name in src/method/registry.c (README \"peso-train\" lists them)"),
    ENUM("method.variant", method.variant, "all|latest|all+inherit|latest+inherit", "all",
         "sumlora/sdlora/inflora: past adapters summed (all or the latest) and whether (A_t, B_t) "
         "start from (A_t-1, B_t-1)"),
    ENUM("method.group", method.group, "module|matrix|rank", "module",
         "peso: coordinates sharing one softmax (a module's A and B, each matrix, or each rank)"),
    FLT("method.lambda", method.lambda, 0, 1e9, "2",
        "weight of the proximal term (peso, l2, ortho, output-kl)"),
    FLT("method.inflora_threshold", method.inflora_threshold, 1e-9, 1, "0.95",
        "inflora: share of a stage's input energy added to the protected subspace after the stage"),

    INT("eval.beam", eval.beam, 1, 4096, "10", "constrained beam width (items generated per user)"),
    ILIST("eval.stages", eval.stages, eval.n_stages, 1, PESO_MAX_BLOCKS, "[2, 3, 4]",
          "stages whose test metrics are averaged in reports (the paper: D2..D4)"),
    INT("eval.after_stage", eval.after_stage, 0, 1, "1", "1 = peso-train evaluates each stage t >= 2 on Dt"),
    INT("eval.valid", eval.valid, 0, 1, "0", "1 = also evaluate the validation pairs"),
    INT("eval.max_users", eval.max_users, 0, 1e12, "0", "evaluate at most this many users per stage (0 = all)"),
    INT("eval.select_epoch", eval.select_epoch, 0, 1, "0",
        "1 = after each epoch of a stage with several, decode the validation pairs and keep the epoch "
        "with the best NDCG@10"),

    INT("ckpt.every_steps", ckpt.every_steps, 0, 1e12, "0",
        "also checkpoint every N optimizer steps within a stage (0 = at stage ends only)"),

    INT("parallel.eval_ranks", parallel.eval_ranks, 0, 1e6, "0",
        "MPI: the last N ranks form the evaluation group, which decodes stage t while the others train "
        "t+1 (0 = the train ranks evaluate between stages)"),

    ENUM("backend.name", backend.name, "cpu|cuda", "cpu",
         "where the model math runs: cpu (float32, OpenMP + OpenBLAS; the reference) or cuda "
         "(one NVIDIA GPU per rank; needs a build with nvcc)"),
    INT("backend.device", backend.device, -1, 4096, "-1",
        "cuda: the GPU's index on the node; -1 = the rank's local index (Open MPI or Slurm) "
        "modulo the GPUs visible"),
    ENUM("backend.precision", backend.precision, "bf16|f32", "bf16",
         "cuda: bf16 = products on bf16 operands with float32 accumulation (fast); f32 = products "
         "in float32, as the cpu backend (the mode the equivalence tests compare). Either way "
         "frozen weights stay in their file's dtype and activations are float32"),
    INT("backend.debug_sync", backend.debug_sync, 0, 1, "0",
        "1 = synchronise and check after every device operation, so that a kernel fault names "
        "the operation that caused it (slow; also PESO_DEBUG_SYNC=1)"),
    INT("debug.nan_rank", debug.nan_rank, 0, 1e6, "0", "testing only: the train rank whose loss debug.nan_step poisons"),
    INT("debug.nan_step", debug.nan_step, 0, 1e12, "0",
        "testing only: at this optimizer step of every stage that rank's loss becomes NaN (0 = never)"),
};

#define N_KEYS (sizeof keys / sizeof keys[0])

static const key_def *find_key(const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static const char *type_name(const key_def *k)
{
    switch (k->type) {
    case K_STR: return "a string";
    case K_ENUM: return "one of";
    case K_INT: return "an integer";
    case K_U64: return "an unsigned integer";
    case K_FLOAT: return "a number";
    case K_FLOAT_LIST: return "a list of numbers";
    case K_INT_LIST: return "a list of integers";
    }
    return "?";
}

/* "expected ..." text for messages and docs. */
static void expected(const key_def *k, char *buf, size_t n)
{
    switch (k->type) {
    case K_STR: snprintf(buf, n, "a string of at most %zu bytes", k->size - 1); break;
    case K_ENUM: snprintf(buf, n, "one of %s", k->choices); break;
    case K_INT: snprintf(buf, n, "an integer in [%.0f, %.0f]", k->min, k->max); break;
    case K_FLOAT: snprintf(buf, n, "a number in [%g, %g]", k->min, k->max); break;
    case K_FLOAT_LIST:
        snprintf(buf, n, "a list of 1..%zu numbers in [%g, %g]", k->size, k->min, k->max);
        break;
    case K_INT_LIST:
        snprintf(buf, n, "a list of 1..%zu integers in [%.0f, %.0f]", k->size, k->min, k->max);
        break;
    default: snprintf(buf, n, "%s", type_name(k)); break;
    }
}

/* ---- setting one key from YAML scalars ---- */

typedef struct where {
    const char *file;
    long line; /* 0 = no line (e.g. --set) */
} where;

static int fail(peso_err *err, where w, const key_def *k, const char *got)
{
    char exp[256];
    expected(k, exp, sizeof exp);
    if (w.line > 0)
        return peso_errf(err, "%s:%ld: key '%s': expected %s, got '%s'", w.file, w.line, k->name, exp, got);
    return peso_errf(err, "%s: key '%s': expected %s, got '%s'", w.file, k->name, exp, got);
}

static int parse_int(const char *s, int64_t *v)
{
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *v = x;
    return 0;
}

static int parse_double(const char *s, double *v)
{
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(x))
        return -1;
    *v = x;
    return 0;
}

static int in_choices(const char *choices, const char *s)
{
    size_t n = strlen(s);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0)
            return 1;
        if (!bar)
            break;
        p = bar + 1;
    }
    return 0;
}

static int set_scalar(peso_conf *c, const key_def *k, const char *s, where w, peso_err *err)
{
    char *base = (char *)c + k->off;
    int64_t iv;
    double dv;
    switch (k->type) {
    case K_STR:
        if (strlen(s) >= k->size) {
            char what[64];
            snprintf(what, sizeof what, "a string of %zu bytes", strlen(s));
            return fail(err, w, k, what);
        }
        strcpy(base, s);
        return 0;
    case K_ENUM:
        if (!in_choices(k->choices, s))
            return fail(err, w, k, s);
        strcpy(base, s);
        return 0;
    case K_INT:
        if (parse_int(s, &iv) || (double)iv < k->min || (double)iv > k->max)
            return fail(err, w, k, s);
        *(int64_t *)base = iv;
        return 0;
    case K_U64: {
        char *end;
        errno = 0;
        if (s[0] == '-')
            return fail(err, w, k, s);
        unsigned long long u = strtoull(s, &end, 10);
        if (errno || end == s || *end)
            return fail(err, w, k, s);
        *(uint64_t *)base = u;
        return 0;
    }
    case K_FLOAT:
        if (parse_double(s, &dv) || dv < k->min || dv > k->max)
            return fail(err, w, k, s);
        *(double *)base = dv;
        return 0;
    default:
        return fail(err, w, k, s);
    }
}

static int set_list_item(peso_conf *c, const key_def *k, size_t i, const char *s, where w, peso_err *err)
{
    char *base = (char *)c + k->off;
    if (i >= k->size)
        return fail(err, w, k, "a longer list");
    if (k->type == K_FLOAT_LIST) {
        double dv;
        if (parse_double(s, &dv) || dv < k->min || dv > k->max)
            return fail(err, w, k, s);
        ((double *)base)[i] = dv;
    } else {
        int64_t iv;
        if (parse_int(s, &iv) || (double)iv < k->min || (double)iv > k->max)
            return fail(err, w, k, s);
        ((int64_t *)base)[i] = iv;
    }
    return 0;
}

/* ---- YAML documents ---- */

static int yaml_load(yaml_document_t *doc, const unsigned char *text, size_t len, const char *file,
                     peso_err *err)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return peso_errf(err, "%s: cannot initialise the YAML parser", file);
    yaml_parser_set_input_string(&p, text, len);
    if (!yaml_parser_load(&p, doc)) {
        int rc = peso_errf(err, "%s:%lu: YAML syntax error: %s%s%s", file, (unsigned long)p.problem_mark.line + 1,
                           p.problem ? p.problem : "unknown problem", p.context ? " " : "",
                           p.context ? p.context : "");
        yaml_parser_delete(&p);
        return rc;
    }
    yaml_parser_delete(&p);
    return 0;
}

static const char *scalar_text(yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* A plain `~`, `null` or empty scalar sets a string key to "". */
static int is_null(yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *s = scalar_text(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null");
}

static int apply_value(peso_conf *c, const key_def *k, yaml_document_t *doc, yaml_node_t *v, where w,
                       peso_err *err)
{
    w.line = w.line ? (long)v->start_mark.line + 1 : 0;
    if (k->type == K_FLOAT_LIST || k->type == K_INT_LIST) {
        if (v->type != YAML_SEQUENCE_NODE)
            return fail(err, w, k, v->type == YAML_SCALAR_NODE ? scalar_text(v) : "a mapping");
        size_t i = 0;
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++, i++) {
            yaml_node_t *e = yaml_document_get_node(doc, *it);
            if (e->type != YAML_SCALAR_NODE)
                return fail(err, w, k, "a nested collection");
            if (set_list_item(c, k, i, scalar_text(e), w, err))
                return -1;
        }
        if (i == 0)
            return fail(err, w, k, "[]");
        *(int *)((char *)c + k->count_off) = (int)i;
        return 0;
    }
    if (v->type != YAML_SCALAR_NODE)
        return fail(err, w, k, v->type == YAML_SEQUENCE_NODE ? "a list" : "a mapping");
    if (k->type == K_STR && is_null(v))
        return set_scalar(c, k, "", w, err);
    return set_scalar(c, k, scalar_text(v), w, err);
}

/* Lists the known keys under a prefix, for "unknown key" messages. */
static void known_under(const char *prefix, char *buf, size_t n)
{
    size_t pl = strlen(prefix), used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < N_KEYS && used + 2 < n; i++) {
        const char *name = keys[i].name;
        if (pl && (strncmp(name, prefix, pl) != 0 || name[pl] != '.'))
            continue;
        const char *rest = pl ? name + pl + 1 : name;
        size_t len = strcspn(rest, ".");
        char part[128];
        snprintf(part, sizeof part, "%.*s", (int)len, rest);
        char needle[132];
        snprintf(needle, sizeof needle, " %s,", part);
        char hay[4096];
        snprintf(hay, sizeof hay, " %s,", buf);
        if (strstr(hay, needle))
            continue;
        used += (size_t)snprintf(buf + used, n - used, "%s%s", used ? ", " : "", part);
    }
}

static int is_section(const char *path)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < N_KEYS; i++)
        if (strncmp(keys[i].name, path, n) == 0 && keys[i].name[n] == '.')
            return 1;
    return 0;
}

static int walk_mapping(peso_conf *c, yaml_document_t *doc, yaml_node_t *map, const char *prefix, where w,
                        peso_err *err)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(doc, p->value);
        long line = (long)kn->start_mark.line + 1;
        if (kn->type != YAML_SCALAR_NODE)
            return peso_errf(err, "%s:%ld: a key must be a plain name", w.file, line);
        char path[256];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", scalar_text(kn));
        const key_def *k = find_key(path);
        if (k) {
            if (apply_value(c, k, doc, vn, w, err))
                return -1;
            continue;
        }
        if (is_section(path)) {
            if (vn->type != YAML_MAPPING_NODE)
                return peso_errf(err, "%s:%ld: key '%s' is a section: expected a mapping of its keys", w.file,
                                 line, path);
            if (walk_mapping(c, doc, vn, path, w, err))
                return -1;
            continue;
        }
        char known[2048];
        known_under(prefix, known, sizeof known);
        return peso_errf(err, "%s:%ld: unknown key '%s' (known %s%s%s: %s)", w.file, line, path,
                         *prefix ? "keys in '" : "top-level keys", prefix, *prefix ? "'" : "", known);
    }
    return 0;
}

static int apply_text(peso_conf *c, const char *text, size_t len, const char *file, peso_err *err)
{
    yaml_document_t doc;
    if (yaml_load(&doc, (const unsigned char *)text, len, file, err))
        return -1;
    int rc = 0;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && !(root->type == YAML_SCALAR_NODE && is_null(root))) {
        if (root->type != YAML_MAPPING_NODE)
            rc = peso_errf(err, "%s:%lu: the config must be a mapping of keys", file,
                           (unsigned long)root->start_mark.line + 1);
        else
            rc = walk_mapping(c, &doc, root, "", (where){file, 1}, err);
    }
    yaml_document_delete(&doc);
    return rc;
}

void peso_conf_defaults(peso_conf *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->source, "<default>");
    for (size_t i = 0; i < N_KEYS; i++) {
        char buf[512];
        peso_err err;
        snprintf(buf, sizeof buf, "%s=%s", keys[i].name, keys[i].def);
        if (peso_conf_set(c, buf, &err) != 0) {
            fprintf(stderr, "peso: bad built-in default: %s\n", err.msg);
            abort();
        }
    }
}

int peso_conf_load(peso_conf *c, const char *path, peso_err *err)
{
    if (!path)
        return 0;
    char *text;
    size_t len;
    if (peso_read_file(path, "cannot open config", &text, &len, err))
        return -1;
    int rc = apply_text(c, text, len, path, err);
    free(text);
    if (rc == 0)
        snprintf(c->source, sizeof c->source, "%s", path);
    return rc;
}

int peso_conf_set(peso_conf *c, const char *assignment, peso_err *err)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return peso_errf(err, "--set '%s': expected key=value, e.g. --set split.window=20", assignment);
    char key[256];
    size_t kl = (size_t)(eq - assignment);
    if (kl >= sizeof key)
        return peso_errf(err, "--set: key too long");
    memcpy(key, assignment, kl);
    key[kl] = '\0';
    const key_def *k = find_key(key);
    if (!k) {
        char prefix[256], known[2048];
        const char *dot = strrchr(key, '.');
        snprintf(prefix, sizeof prefix, "%.*s", dot ? (int)(dot - key) : 0, key);
        known_under(is_section(prefix) ? prefix : "", known, sizeof known);
        return peso_errf(err, "--set: unknown key '%s' (known %s%s%s: %s)", key,
                         is_section(prefix) ? "keys in '" : "top-level keys", is_section(prefix) ? prefix : "",
                         is_section(prefix) ? "'" : "", known);
    }
    const char *val = eq + 1;
    /* A string is taken literally (--set data.csv_delim=, works); other
     * values are YAML, so lists work: --set split.fractions=[0.5,0.5]. */
    if (k->type == K_STR || k->type == K_ENUM)
        return set_scalar(c, k, val, (where){"--set", 0}, err);
    yaml_document_t doc;
    if (yaml_load(&doc, (const unsigned char *)val, strlen(val), "--set", err))
        return -1;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    int rc;
    if (!root)
        rc = k->type == K_STR ? set_scalar(c, k, "", (where){"--set", 0}, err)
                              : fail(err, (where){"--set", 0}, k, "");
    else
        rc = apply_value(c, k, &doc, root, (where){"--set", 0}, err);
    yaml_document_delete(&doc);
    return rc;
}

int peso_conf_validate(const peso_conf *c, peso_err *err)
{
    const char *src = c->source;
    double sum = 0;
    for (int i = 0; i < c->split.n_fractions; i++)
        sum += c->split.fractions[i];
    if (fabs(sum - 1.0) > 1e-9)
        return peso_errf(err, "%s: split.fractions must sum to 1, they sum to %.12g", src, sum);
    if (c->data.year_min && c->data.year_max && c->data.year_min > c->data.year_max)
        return peso_errf(err, "%s: data.year_min (%lld) is after data.year_max (%lld)", src,
                         (long long)c->data.year_min, (long long)c->data.year_max);
    if (strcmp(c->data.format, "synthetic") != 0 && !c->data.reviews[0])
        return peso_errf(err, "%s: data.format %s needs data.reviews (the interactions file)", src,
                         c->data.format);
    if (strcmp(c->data.csv_delim, "\\t") != 0 && strlen(c->data.csv_delim) != 1)
        return peso_errf(err, "%s: data.csv_delim must be one character or \\t, got '%s'", src,
                         c->data.csv_delim);
    if (!strcmp(c->data.format, "letter") && strcmp(c->semid.source, "import") != 0)
        return peso_errf(err, "%s: data.format letter has no item text: set semid.source: import and "
                              "semid.index to its .index.json", src);
    if (!strcmp(c->semid.source, "import") && !c->semid.index[0])
        return peso_errf(err, "%s: semid.source import needs semid.index (a .index.json file)", src);
    if (!strcmp(c->semid.source, "rqvae") && !strcmp(c->semid.features, "embeddings") &&
        !c->semid.embeddings[0])
        return peso_errf(err, "%s: semid.features embeddings needs semid.embeddings (an HDF5 file)", src);
    double scale;
    if (peso_conf_lr_scale(c, 1, 1, &scale, err) < 0)
        return -1;
    if (c->train.micro_tokens > c->train.batch_tokens)
        return peso_errf(err, "%s: train.micro_tokens (%lld) is larger than train.batch_tokens (%lld)", src,
                         (long long)c->train.micro_tokens, (long long)c->train.batch_tokens);
    if (!strcmp(c->semid.source, "rqvae") && !strcmp(c->semid.features, "model") && !c->semid.model[0])
        return peso_errf(err, "%s: semid.features model needs semid.model (a Hugging Face model folder)",
                         src);
    return 0;
}

/* ---- printing ---- */

static void append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if ((size_t)n < *cap - *len) {
            *len += (size_t)n;
            return;
        }
        peso_grow((void **)buf, cap, *len + (size_t)n + 1, 1);
    }
}

/* A string value in YAML double-quoted form. */
static void append_quoted(char **buf, size_t *len, size_t *cap, const char *s)
{
    append(buf, len, cap, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            append(buf, len, cap, "\\%c", *s);
        else if (*s == '\t')
            append(buf, len, cap, "\\t");
        else if (*s == '\n')
            append(buf, len, cap, "\\n");
        else
            append(buf, len, cap, "%c", *s);
    }
    append(buf, len, cap, "\"");
}

static void append_value(char **buf, size_t *len, size_t *cap, const peso_conf *c, const key_def *k)
{
    const char *base = (const char *)c + k->off;
    switch (k->type) {
    case K_STR: append_quoted(buf, len, cap, base); break;
    case K_ENUM: append(buf, len, cap, "%s", base); break;
    case K_INT: append(buf, len, cap, "%lld", (long long)*(const int64_t *)base); break;
    case K_U64: append(buf, len, cap, "%llu", (unsigned long long)*(const uint64_t *)base); break;
    case K_FLOAT: append(buf, len, cap, "%.17g", *(const double *)base); break;
    case K_FLOAT_LIST:
    case K_INT_LIST: {
        int n = *(const int *)((const char *)c + k->count_off);
        append(buf, len, cap, "[");
        for (int i = 0; i < n; i++) {
            if (k->type == K_FLOAT_LIST)
                append(buf, len, cap, "%s%.17g", i ? ", " : "", ((const double *)base)[i]);
            else
                append(buf, len, cap, "%s%lld", i ? ", " : "", (long long)((const int64_t *)base)[i]);
        }
        append(buf, len, cap, "]");
        break;
    }
    }
}

char *peso_conf_dump(const peso_conf *c)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    peso_grow((void **)&buf, &cap, 4096, 1);
    buf[0] = '\0';
    append(&buf, &len, &cap, "# resolved PESO config (from %s)\n", c->source);
    char section[64] = "";
    for (size_t i = 0; i < N_KEYS; i++) {
        const char *name = keys[i].name;
        const char *dot = strchr(name, '.');
        if (dot) {
            size_t sl = (size_t)(dot - name);
            if (strlen(section) != sl || strncmp(section, name, sl) != 0) {
                snprintf(section, sizeof section, "%.*s", (int)sl, name);
                append(&buf, &len, &cap, "%s:\n", section);
            }
            append(&buf, &len, &cap, "  %s: ", dot + 1);
        } else {
            section[0] = '\0';
            append(&buf, &len, &cap, "%s: ", name);
        }
        append_value(&buf, &len, &cap, c, &keys[i]);
        append(&buf, &len, &cap, "\n");
    }
    return buf;
}

static int determines_data(const char *name)
{
    static const char *const pre[] = {"data.", "split.", "semid.", "synth.", "seed"};
    for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++)
        if (strncmp(name, pre[i], strlen(pre[i])) == 0)
            return 1;
    return 0;
}

/* Which keys a digest covers: 0 = the dataset's, 1 = stage 1's adapter,
 * 2 = a continual run's adapters. */
static int in_digest(const char *name, int what)
{
    if (determines_data(name))
        return strcmp(name, "semid.export_index") != 0;
    if (what == 0)
        return 0;
    if (!strncmp(name, "model.", 6))
        return 1;
    if (!strncmp(name, "train.", 6))
        return what == 2 || (strcmp(name, "train.lr_scale") && strcmp(name, "train.epochs_continual"));
    return what == 2 && !strncmp(name, "method.", 7);
}

static void digest(const peso_conf *c, int what, char out[17])
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    peso_grow((void **)&buf, &cap, 4096, 1);
    for (size_t i = 0; i < N_KEYS; i++) {
        if (!in_digest(keys[i].name, what) || !strcmp(keys[i].name, "train.log_every"))
            continue;
        append(&buf, &len, &cap, "%s=", keys[i].name);
        append_value(&buf, &len, &cap, c, &keys[i]);
        append(&buf, &len, &cap, "\n");
    }
    snprintf(out, 17, "%016llx", (unsigned long long)peso_hash_bytes(buf, len));
    free(buf);
}

void peso_conf_data_fingerprint(const peso_conf *c, char out[17])
{
    digest(c, 0, out);
}

void peso_conf_run_fingerprint(const peso_conf *c, int stage1, char out[17])
{
    digest(c, stage1 ? 1 : 2, out);
}

char *peso_conf_run_diff(const peso_conf *c, const char *other, const char *other_name, int stage1,
                         peso_err *err)
{
    peso_conf o;
    peso_conf_defaults(&o);
    if (apply_text(&o, other, strlen(other), other_name, err) < 0)
        return NULL;
    char *out = NULL, *va = NULL, *vb = NULL;
    size_t len = 0, cap = 0, la, lb, ca = 0, cb = 0;
    peso_grow((void **)&out, &cap, 256, 1);
    out[0] = '\0';
    for (size_t i = 0; i < N_KEYS; i++) {
        if (!in_digest(keys[i].name, stage1 ? 1 : 2) || !strcmp(keys[i].name, "train.log_every"))
            continue;
        la = lb = 0;
        peso_grow((void **)&va, &ca, 64, 1);
        peso_grow((void **)&vb, &cb, 64, 1);
        va[0] = vb[0] = '\0';
        append_value(&va, &la, &ca, &o, &keys[i]);
        append_value(&vb, &lb, &cb, c, &keys[i]);
        if (strcmp(va, vb) != 0)
            append(&out, &len, &cap, "%s: %s vs %s\n", keys[i].name, va, vb);
    }
    free(va);
    free(vb);
    return out;
}

int peso_conf_lr_scale(const peso_conf *c, double dt, double d1, double *scale, peso_err *err)
{
    if (!strcmp(c->train.lr_scale, "auto")) {
        if (!(d1 > 0))
            return peso_errf(err, "train.lr_scale auto: D1 has no training windows");
        *scale = dt / d1;
        return 0;
    }
    char *end;
    double v = strtod(c->train.lr_scale, &end);
    if (end == c->train.lr_scale || *end || !isfinite(v) || v <= 0)
        return peso_errf(err, "%s: key 'train.lr_scale': expected auto or a number > 0, got '%s'", c->source,
                         c->train.lr_scale);
    *scale = v;
    return 0;
}

/* Markdown table cell text: a '|' would end the cell. */
static void append_cell(char **buf, size_t *len, size_t *cap, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            append(buf, len, cap, "\\|");
        else
            append(buf, len, cap, "%c", *s);
    }
}

char *peso_conf_doc(void)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    peso_grow((void **)&buf, &cap, 4096, 1);
    buf[0] = '\0';
    append(&buf, &len, &cap, "| key | type | default | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        char exp[256];
        expected(&keys[i], exp, sizeof exp);
        append(&buf, &len, &cap, "| `%s` | ", keys[i].name);
        append_cell(&buf, &len, &cap, exp);
        append(&buf, &len, &cap, " | ");
        if (keys[i].def[0]) {
            append(&buf, &len, &cap, "`");
            append_cell(&buf, &len, &cap, keys[i].def);
            append(&buf, &len, &cap, "`");
        } else {
            append(&buf, &len, &cap, "(empty)");
        }
        append(&buf, &len, &cap, " | ");
        append_cell(&buf, &len, &cap, keys[i].doc);
        append(&buf, &len, &cap, " |\n");
    }
    return buf;
}

int peso_conf_from_args(peso_conf *c, int *argc, char **argv, int *print, peso_err *err)
{
    const char *path = NULL;
    int out = 1;
    *print = 0;
    /* First pass: the file, so that --set applies over it whatever the order. */
    for (int i = 1; i < *argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= *argc)
                return peso_errf(err, "--config needs a file name");
            path = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            path = argv[i] + 9;
        }
    }
    peso_conf_defaults(c);
    if (peso_conf_load(c, path, err))
        return -1;
    for (int i = 1; i < *argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            i++;
        } else if (!strncmp(argv[i], "--config=", 9)) {
            continue;
        } else if (!strcmp(argv[i], "--set")) {
            if (i + 1 >= *argc)
                return peso_errf(err, "--set needs key=value");
            if (peso_conf_set(c, argv[++i], err))
                return -1;
        } else if (!strncmp(argv[i], "--set=", 6)) {
            if (peso_conf_set(c, argv[i] + 6, err))
                return -1;
        } else if (!strcmp(argv[i], "--print-config")) {
            *print = 1;
        } else {
            argv[out++] = argv[i];
        }
    }
    *argc = out;
    argv[out] = NULL;
    return peso_conf_validate(c, err);
}

int peso_conf_cli(peso_conf *c, int n, char **args, const char *prog, void (*usage)(FILE *), int *status)
{
    *status = 0;
    for (int i = 1; i < n; i++) {
        if (!strcmp(args[i], "--help") || !strcmp(args[i], "-h")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(args[i], "--help-config")) {
            char *doc = peso_conf_doc();
            fputs(doc, stdout);
            free(doc);
            return 1;
        }
    }
    peso_err err;
    int print;
    *status = 2;
    if (peso_conf_from_args(c, &n, args, &print, &err)) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return 1;
    }
    if (n > 1) {
        fprintf(stderr, "%s: unknown argument '%s'\n", prog, args[1]);
        usage(stderr);
        return 1;
    }
    *status = 0;
    if (print) {
        char *y = peso_conf_dump(c);
        fputs(y, stdout);
        free(y);
        return 1;
    }
    return 0;
}

void peso_conf_backend_opts(const peso_conf *c, peso_backend_opts *o)
{
    memset(o, 0, sizeof *o);
    o->name = c->backend.name;
    o->device = (int)c->backend.device;
    o->f32 = strcmp(c->backend.precision, "f32") == 0;
    o->debug_sync = (int)c->backend.debug_sync;
}
