#include "model/init.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/atomic.h"
#include "common/json.h"
#include "common/rng.h"
#include "model/prompt.h"
#include "hf/safetensors.h"

#define EOS_TOKEN "<|end_of_text|>"

/* ---- config ---- */

static void llama32_rope(peso_llama_config *c)
{
    c->rope_theta = 500000.0;
    c->rope_scaling = (peso_rope_scaling){
        .llama3 = 1,
        .factor = 32.0,
        .low_freq_factor = 1.0,
        .high_freq_factor = 4.0,
        .original_max_position_embeddings = 8192,
    };
    c->max_position_embeddings = 131072;
    c->rms_norm_eps = 1e-5;
}

int peso_init_preset(peso_llama_config *c, const char *preset, peso_err *err)
{
    peso_llama_config_defaults(c);
    llama32_rope(c);
    if (strcmp(preset, "tiny") == 0) {
        c->hidden_size = 64;
        c->num_hidden_layers = 2;
        c->num_attention_heads = 4;
        c->num_key_value_heads = 2;
        c->intermediate_size = 192;
        c->tie_word_embeddings = 1;
    } else if (strcmp(preset, "small") == 0) {
        c->hidden_size = 512;
        c->num_hidden_layers = 8;
        c->num_attention_heads = 8;
        c->num_key_value_heads = 4;
        c->intermediate_size = 1408;
        c->tie_word_embeddings = 0;
    } else {
        return peso_errf(err, "preset '%s': expected \"tiny\" or \"small\"", preset);
    }
    c->head_dim = c->hidden_size / c->num_attention_heads;
    c->vocab_size = 0;
    c->bos_token_id = -1;
    c->n_eos = 0;
    strcpy(c->dtype, "float32");
    return 0;
}

/* ---- tokenizer ---- */

int peso_init_tokenizer(peso_tok **out, int with_codes, int levels, int codebook, peso_err *err)
{
    const char *texts[] = {peso_prompt_head, peso_prompt_sep, peso_prompt_tail};
    peso_tok *t;
    int32_t id;
    if (with_codes && (levels < 1 || levels > PESO_PROMPT_MAX_LEVELS || codebook < 1))
        return peso_errf(err, "code tokens: levels=%d codebook=%d, expected levels 1..%d and codebook >= 1",
                         levels, codebook, PESO_PROMPT_MAX_LEVELS);
    if (peso_tok_build_small(&t, texts, sizeof texts / sizeof texts[0], PESO_INIT_MAX_MERGES, err) != 0)
        return -1;
    int rc =
        peso_tok_add_special(t, PESO_PROMPT_BOS, &id, err) || peso_tok_add_special(t, EOS_TOKEN, &id, err);
    char name[32];
    for (int l = 0; rc == 0 && with_codes && l < levels; l++)
        for (int k = 0; rc == 0 && k < codebook; k++) {
            peso_prompt_code_token(name, sizeof name, l, k);
            rc = peso_tok_add_special(t, name, &id, err);
        }
    if (rc != 0) {
        peso_tok_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

/* ---- weights ---- */

#define NAME_LEN 96

struct spec {
    char name[NAME_LEN];
    int ndim;
    int64_t shape[2];
    int ones; /* RMSNorm weight */
};

/* Embedding and final norm, 9 tensors a layer, and an untied head. */
static size_t spec_count(const peso_llama_config *c)
{
    return 2 + 9 * (size_t)c->num_hidden_layers + (c->tie_word_embeddings ? 0 : 1);
}

static void spec_set(struct spec *s, int ones, int64_t rows, int64_t cols, const char *name)
{
    snprintf(s->name, NAME_LEN, "%s", name);
    s->ones = ones;
    s->ndim = cols ? 2 : 1;
    s->shape[0] = rows;
    s->shape[1] = cols;
}

/* The tensors of LlamaForCausalLM's state dict, as save_pretrained names
 * them (a tied lm_head is not saved). */
static void specs(const peso_llama_config *c, struct spec *s)
{
    int64_t h = c->hidden_size, in = c->intermediate_size;
    int64_t q = (int64_t)c->num_attention_heads * c->head_dim,
            kv = (int64_t)c->num_key_value_heads * c->head_dim;
    const struct {
        const char *name;
        int ones;
        int64_t rows, cols;
    } layer[] = {
        {"input_layernorm.weight", 1, h, 0},   {"self_attn.q_proj.weight", 0, q, h},
        {"self_attn.k_proj.weight", 0, kv, h}, {"self_attn.v_proj.weight", 0, kv, h},
        {"self_attn.o_proj.weight", 0, h, q},  {"post_attention_layernorm.weight", 1, h, 0},
        {"mlp.gate_proj.weight", 0, in, h},    {"mlp.up_proj.weight", 0, in, h},
        {"mlp.down_proj.weight", 0, h, in},
    };
    char name[NAME_LEN];
    size_t k = 0;
    spec_set(&s[k++], 0, c->vocab_size, h, "model.embed_tokens.weight");
    for (int l = 0; l < c->num_hidden_layers; l++)
        for (size_t j = 0; j < sizeof layer / sizeof layer[0]; j++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", l, layer[j].name);
            spec_set(&s[k++], layer[j].ones, layer[j].rows, layer[j].cols, name);
        }
    spec_set(&s[k++], 1, h, 0, "model.norm.weight");
    if (!c->tie_word_embeddings)
        spec_set(&s[k++], 0, c->vocab_size, h, "lm_head.weight");
}

/* FNV-1a: the tensor's stream, so a tensor's values depend only on the
 * seed, its name and its size. */
static uint64_t name_stream(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static float *fill(const struct spec *s, uint64_t seed)
{
    size_t n = (size_t)s->shape[0] * (size_t)(s->ndim == 2 ? s->shape[1] : 1);
    float *x = peso_malloc(n * sizeof *x);
    if (s->ones) {
        for (size_t i = 0; i < n; i++)
            x[i] = 1.0f;
        return x;
    }
    peso_rng r;
    peso_rng_seed(&r, seed, name_stream(s->name));
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(PESO_INIT_STD * peso_rng_normal(&r));
    return x;
}

static int write_weights(const char *path, const peso_llama_config *c, uint64_t seed, size_t *n_params,
                         peso_err *err)
{
    size_t n = spec_count(c);
    struct spec *s = peso_calloc(n, sizeof *s);
    peso_st_wtensor *w = peso_calloc(n, sizeof *w);
    specs(c, s);
    *n_params = 0;
    for (size_t i = 0; i < n; i++) {
        w[i] = (peso_st_wtensor){.name = s[i].name, .dtype = PESO_ST_WRITE_F32, .ndim = s[i].ndim};
        memcpy(w[i].shape, s[i].shape, sizeof s[i].shape);
        w[i].data = fill(&s[i], seed);
        *n_params += (size_t)s[i].shape[0] * (size_t)(s[i].ndim == 2 ? s[i].shape[1] : 1);
    }
    const peso_st_kv meta[] = {{"format", "pt"}};
    int rc = peso_st_write(path, w, n, meta, 1, err);
    for (size_t i = 0; i < n; i++)
        free((void *)w[i].data);
    free(w);
    free(s);
    return rc;
}

/* ---- the small JSON files ---- */

static int write_json(const char *path, cJSON *o, peso_err *err)
{
    int rc = peso_json_write_file(path, o, err);
    cJSON_Delete(o);
    return rc;
}

static cJSON *added_token_json(const char *content)
{
    cJSON *o = peso_json_object();
    peso_json_add(o, "content", peso_json_string(content));
    peso_json_add(o, "lstrip", peso_json_bool(0));
    peso_json_add(o, "normalized", peso_json_bool(0));
    peso_json_add(o, "rstrip", peso_json_bool(0));
    peso_json_add(o, "single_word", peso_json_bool(0));
    peso_json_add(o, "special", peso_json_bool(1));
    return o;
}

/* As save_pretrained writes it for a PreTrainedTokenizerFast. Decoding
 * keeps spaces as they are (clean_up_tokenization_spaces false), so that
 * decode(encode(text)) is text. */
static cJSON *tokenizer_config_json(const peso_tok *t, const peso_llama_config *c)
{
    cJSON *o = peso_json_object(), *dec = peso_json_object();
    char key[16];
    for (int32_t id = c->bos_token_id; id < peso_tok_vocab_size(t); id++) {
        snprintf(key, sizeof key, "%d", id);
        peso_json_add(dec, key, added_token_json(peso_tok_token(t, id)));
    }
    cJSON *names = peso_json_array();
    peso_json_push(names, peso_json_string("input_ids"));
    peso_json_push(names, peso_json_string("attention_mask"));
    peso_json_add(o, "added_tokens_decoder", dec);
    peso_json_add(o, "bos_token", peso_json_string(PESO_PROMPT_BOS));
    peso_json_add(o, "clean_up_tokenization_spaces", peso_json_bool(0));
    peso_json_add(o, "eos_token", peso_json_string(EOS_TOKEN));
    peso_json_add(o, "model_input_names", names);
    peso_json_add(o, "model_max_length", peso_json_int(c->max_position_embeddings));
    peso_json_add(o, "tokenizer_class", peso_json_string("PreTrainedTokenizerFast"));
    return o;
}

static cJSON *special_tokens_json(void)
{
    cJSON *o = peso_json_object();
    peso_json_add(o, "bos_token", peso_json_string(PESO_PROMPT_BOS));
    peso_json_add(o, "eos_token", peso_json_string(EOS_TOKEN));
    return o;
}

static cJSON *generation_config_json(const peso_llama_config *c)
{
    cJSON *o = peso_json_object();
    peso_json_add(o, "_from_model_config", peso_json_bool(1));
    peso_json_add(o, "bos_token_id", peso_json_int(c->bos_token_id));
    peso_json_add(o, "eos_token_id", peso_json_int(c->eos_token_ids[0]));
    return o;
}

/* ---- the folder ---- */

static void join(char *buf, const char *dir, const char *file)
{
    snprintf(buf, PESO_PATH_MAX, "%s/%s", dir, file);
}

/* A sharded index left in the folder would shadow model.safetensors for
 * every loader, ours and transformers' alike. */
static int remove_stale_index(const char *dir, peso_err *err)
{
    char p[PESO_PATH_MAX];
    join(p, dir, "model.safetensors.index.json");
    if (unlink(p) != 0 && errno != ENOENT)
        return peso_errf(err, "%s: cannot remove the stale index: %s", p, strerror(errno));
    return 0;
}

static int prepare_dir(const char *dir, int force, peso_err *err)
{
    int empty;
    if (strlen(dir) + 64 >= PESO_PATH_MAX)
        return peso_errf(err, "%s: path too long", dir);
    if (peso_dir_is_empty(dir, &empty, err) != 0)
        return -1;
    if (!empty && !force)
        return peso_errf(err, "%s: directory is not empty (pass --force to overwrite the model files in it)",
                         dir);
    if (peso_mkdir_p(dir, err) != 0)
        return -1;
    return force ? remove_stale_index(dir, err) : 0;
}

static int write_files(const char *dir, const peso_init_opts *o, peso_tok *t, peso_init_report *rep,
                       peso_err *err)
{
    peso_llama_config *c = &rep->config;
    char p[PESO_PATH_MAX];
    if (peso_init_preset(c, o->preset, err) != 0)
        return -1;
    c->vocab_size = peso_tok_vocab_size(t);
    c->bos_token_id = peso_tok_id(t, PESO_PROMPT_BOS);
    c->eos_token_ids[0] = peso_tok_id(t, EOS_TOKEN);
    c->n_eos = 1;
    rep->n_learned = (size_t)c->bos_token_id - 256;
    join(p, dir, "config.json");
    if (peso_llama_config_write(c, p, err) != 0)
        return -1;
    join(p, dir, "generation_config.json");
    if (write_json(p, generation_config_json(c), err) != 0)
        return -1;
    join(p, dir, "tokenizer.json");
    if (peso_tok_save(t, p, err) != 0)
        return -1;
    join(p, dir, "tokenizer_config.json");
    if (write_json(p, tokenizer_config_json(t, c), err) != 0)
        return -1;
    join(p, dir, "special_tokens_map.json");
    if (write_json(p, special_tokens_json(), err) != 0)
        return -1;
    join(p, dir, "model.safetensors");
    return write_weights(p, c, o->seed, &rep->n_params, err);
}

int peso_init_write(const char *dir, const peso_init_opts *o, peso_init_report *rep, peso_err *err)
{
    peso_init_report local;
    peso_llama_config check;
    peso_tok *t;
    if (!rep)
        rep = &local;
    if (peso_init_preset(&check, o->preset, err) != 0 || prepare_dir(dir, o->force, err) != 0 ||
        peso_init_tokenizer(&t, o->with_codes, o->levels, o->codebook, err) != 0)
        return -1;
    int rc = write_files(dir, o, t, rep, err);
    peso_tok_free(t);
    return rc;
}

/* ---- the subcommand ---- */

static const char *const usage =
    "usage: peso-model init --preset tiny|small --out DIR [--seed N] [--with-codes [--levels L]\n"
    "                       [--codebook K]] [--force]\n"
    "Writes a Hugging Face Llama folder with random weights (normal(0, 0.02), RMSNorm ones)\n"
    "and a small byte-level BPE tokenizer learned from the recommender prompt.\n"
    "  --preset      tiny (hidden 64, 2 layers, tied head) or small (hidden 512, 8 layers)\n"
    "  --out         the folder; refused when not empty unless --force\n"
    "  --seed        weight seed (default 42)\n"
    "  --with-codes  add the semantic-ID tokens <a_0>.. now (default: the trainer adds them)\n"
    "  --levels      code levels with --with-codes (default 4)\n"
    "  --codebook    codes per level with --with-codes (default 256)\n";

static int parse_u64(const char *opt, const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || s[0] == '-' || v > max) {
        fprintf(stderr, "peso-model init: %s '%s': expected an integer in [0, %llu]\n", opt, s,
                (unsigned long long)max);
        return -1;
    }
    *out = v;
    return 0;
}

struct args {
    peso_init_opts o;
    const char *out;
    int codes_given, help;
};

static int parse_one(struct args *a, const char *opt, const char *val)
{
    uint64_t v;
    if (strcmp(opt, "--preset") == 0)
        a->o.preset = val;
    else if (strcmp(opt, "--out") == 0)
        a->out = val;
    else if (strcmp(opt, "--seed") == 0)
        return parse_u64(opt, val, UINT64_MAX, &a->o.seed);
    else if (strcmp(opt, "--levels") == 0 || strcmp(opt, "--codebook") == 0) {
        if (parse_u64(opt, val, 1u << 20, &v) != 0)
            return -1;
        *(opt[2] == 'l' ? &a->o.levels : &a->o.codebook) = (int)v;
        a->codes_given = 1;
    } else {
        fprintf(stderr, "peso-model init: unknown option '%s'\n%s", opt, usage);
        return -1;
    }
    return 0;
}

static int parse_args(struct args *a, int argc, char **argv)
{
    *a = (struct args){.o = {.seed = 42, .levels = 4, .codebook = 256}};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0)
            a->help = 1;
        else if (strcmp(s, "--with-codes") == 0)
            a->o.with_codes = 1;
        else if (strcmp(s, "--force") == 0)
            a->o.force = 1;
        else if (i + 1 >= argc || strncmp(s, "--", 2) != 0) {
            fprintf(stderr, "peso-model init: '%s': expected an option with a value\n%s", s, usage);
            return -1;
        } else if (parse_one(a, s, argv[++i]) != 0)
            return -1;
    }
    if (a->help)
        return 0;
    if (!a->o.preset || !a->out) {
        fprintf(stderr, "peso-model init: --preset and --out are required\n%s", usage);
        return -1;
    }
    if (a->codes_given && !a->o.with_codes) {
        fprintf(stderr, "peso-model init: --levels and --codebook only apply with --with-codes\n");
        return -1;
    }
    return 0;
}

int peso_model_init_main(int argc, char **argv)
{
    struct args a;
    if (parse_args(&a, argc, argv) != 0)
        return 2;
    if (a.help) {
        fputs(usage, stdout);
        return 0;
    }
    peso_init_report rep;
    peso_err err;
    if (peso_init_write(a.out, &a.o, &rep, &err) != 0) {
        fprintf(stderr, "peso-model init: %s\n", err.msg);
        return 1;
    }
    const peso_llama_config *c = &rep.config;
    printf("wrote %s: preset %s, seed %llu, vocab %d (256 bytes + %zu learned + %d added), hidden %d, "
           "%d layers, %d/%d heads, intermediate %d, %s head\n",
           a.out, a.o.preset, (unsigned long long)a.o.seed, c->vocab_size, rep.n_learned,
           c->vocab_size - 256 - (int)rep.n_learned, c->hidden_size, c->num_hidden_layers,
           c->num_attention_heads, c->num_key_value_heads, c->intermediate_size,
           c->tie_word_embeddings ? "tied" : "untied");
    printf("parameters: %zu (%.2fM)\n", rep.n_params, (double)rep.n_params / 1e6);
    return 0;
}
