#include "hf/peft.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"
#include "common/atomic.h"
#include "hf/safetensors.h"

static const char *const proj_names[PESO_PEFT_NPROJ] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
};

const char *peso_peft_proj_name(int proj)
{
    return proj >= 0 && proj < PESO_PEFT_NPROJ ? proj_names[proj] : "?";
}

const char *peso_peft_proj_parent(int proj)
{
    return proj <= 3 /* o_proj */ ? "self_attn" : "mlp";
}

int peso_peft_proj_from_name(const char *name)
{
    for (int p = 0; p < PESO_PEFT_NPROJ; p++)
        if (strcmp(name, proj_names[p]) == 0)
            return p;
    return -1;
}

void peso_peft_key(char *buf, size_t n, int layer, int proj, char which)
{
    snprintf(buf, n, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer,
             peso_peft_proj_parent(proj), peso_peft_proj_name(proj), which);
}

static void join(char *out, size_t n, const char *dir, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

/* ---- writing ---- */

static cJSON *config_json(const peso_peft_conf *c, const char *base_model)
{
    /* keys in sorted order, as PEFT's save_pretrained writes them */
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "alpha_pattern", cJSON_CreateObject());
    if (base_model)
        cJSON_AddStringToObject(o, "base_model_name_or_path", base_model);
    else
        cJSON_AddNullToObject(o, "base_model_name_or_path");
    cJSON_AddStringToObject(o, "bias", "none");
    cJSON_AddFalseToObject(o, "fan_in_fan_out");
    cJSON_AddTrueToObject(o, "inference_mode");
    cJSON_AddTrueToObject(o, "init_lora_weights");
    cJSON_AddNullToObject(o, "layers_pattern");
    cJSON_AddNullToObject(o, "layers_to_transform");
    cJSON_AddNumberToObject(o, "lora_alpha", c->alpha);
    cJSON_AddNumberToObject(o, "lora_dropout", 0.0);
    cJSON_AddNullToObject(o, "modules_to_save");
    cJSON_AddStringToObject(o, "peft_type", "LORA");
    cJSON_AddNumberToObject(o, "r", c->rank);
    cJSON_AddItemToObject(o, "rank_pattern", cJSON_CreateObject());
    cJSON_AddNullToObject(o, "revision");
    cJSON *t = cJSON_AddArrayToObject(o, "target_modules");
    for (int p = 0; p < PESO_PEFT_NPROJ; p++)
        if (c->targets & (1u << p))
            cJSON_AddItemToArray(t, cJSON_CreateString(proj_names[p]));
    cJSON_AddStringToObject(o, "task_type", "CAUSAL_LM");
    cJSON_AddFalseToObject(o, "use_dora");
    cJSON_AddFalseToObject(o, "use_rslora");
    return o;
}

int peso_peft_write_weights(const char *path, const peso_peft_layout *a, const float *buf, peso_err *err)
{
    size_t n = 2 * (size_t)a->n_modules;
    peso_st_wtensor *t = peso_calloc(n ? n : 1, sizeof *t);
    char(*keys)[PESO_PEFT_KEY_MAX] = peso_calloc(n ? n : 1, sizeof *keys);
    for (int i = 0; i < a->n_modules; i++) {
        const peso_peft_module *m = &a->mods[i];
        for (int ab = 0; ab < 2; ab++) {
            peso_st_wtensor *w = &t[2 * i + ab];
            peso_peft_key(keys[2 * i + ab], PESO_PEFT_KEY_MAX, m->layer, m->proj, ab ? 'B' : 'A');
            w->name = keys[2 * i + ab];
            w->dtype = PESO_ST_WRITE_F32;
            w->ndim = 2;
            w->shape[0] = ab ? m->out : a->conf.rank;
            w->shape[1] = ab ? a->conf.rank : m->in;
            w->data = buf + (ab ? m->b_off : m->a_off);
        }
    }
    peso_st_kv meta = {"format", "pt"};
    int rc = peso_st_write(path, t, n, &meta, 1, err);
    free(keys);
    free(t);
    return rc;
}

int peso_peft_write(const char *dir, const peso_peft_layout *a, const float *params, const char *base_model,
                    peso_err *err)
{
    char path[PESO_PATH_MAX];
    if (peso_mkdir_p(dir, err) < 0)
        return -1;
    /* weights first: a config on disk implies its weights are complete */
    join(path, sizeof path, dir, PESO_PEFT_WEIGHTS);
    if (peso_peft_write_weights(path, a, params, err) < 0)
        return -1;
    cJSON *o = config_json(&a->conf, base_model);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    size_t len = strlen(text);
    char *buf = peso_malloc(len + 2);
    memcpy(buf, text, len);
    buf[len] = '\n';
    free(text);
    join(path, sizeof path, dir, PESO_PEFT_CONFIG);
    int rc = peso_write_file_atomic(path, buf, len + 1, err);
    free(buf);
    return rc;
}

/* ---- reading the config ---- */

/* Keys whose only accepted value is "off": absent, null, false, or an
 * empty object or list. Anything else changes the math. */
static int expect_off(const cJSON *o, const char *path, const char *key, const char *why, peso_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v))
        return 0;
    if ((cJSON_IsObject(v) || cJSON_IsArray(v)) && !v->child)
        return 0;
    return peso_errf(err, "%s: key '%s' is set, expected it absent, null, false or empty (%s)", path, key,
                     why);
}

static int read_targets(const cJSON *o, const char *path, unsigned *mask, peso_err *err)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "target_modules");
    if (cJSON_IsString(t) && strcmp(t->valuestring, "all-linear") == 0) {
        /* PEFT: every linear layer but the output head = the 7 projections */
        *mask = PESO_PEFT_ALL;
        return 0;
    }
    if (!cJSON_IsArray(t) || !t->child)
        return peso_errf(err,
                         "%s: key 'target_modules': expected a non-empty list of projection "
                         "names (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj) "
                         "or \"all-linear\"",
                         path);
    unsigned m = 0;
    for (const cJSON *e = t->child; e; e = e->next) {
        int p = cJSON_IsString(e) ? peso_peft_proj_from_name(e->valuestring) : -1;
        if (p < 0)
            return peso_errf(err,
                             "%s: key 'target_modules': '%s' is not one of q_proj, k_proj, "
                             "v_proj, o_proj, gate_proj, up_proj, down_proj",
                             path, cJSON_IsString(e) ? e->valuestring : "(not a string)");
        m |= 1u << p;
    }
    *mask = m;
    return 0;
}

static int read_number(const cJSON *o, const char *path, const char *key, double *out, peso_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v))
        return peso_errf(err, "%s: key '%s': expected a number", path, key);
    *out = v->valuedouble;
    return 0;
}

static int check_string(const cJSON *o, const char *path, const char *key, const char *want, int optional,
                        peso_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (optional && (!v || cJSON_IsNull(v)))
        return 0;
    if (!cJSON_IsString(v) || strcmp(v->valuestring, want) != 0)
        return peso_errf(err, "%s: key '%s': expected \"%s\"", path, key, want);
    return 0;
}

static int parse_conf(const cJSON *o, const char *path, peso_peft_conf *c, char *base_model, size_t n,
                      peso_err *err)
{
    double r = 0.0;
    if (!cJSON_IsObject(o))
        return peso_errf(err, "%s: expected a JSON object", path);
    if (check_string(o, path, "peft_type", "LORA", 0, err) < 0 ||
        check_string(o, path, "task_type", "CAUSAL_LM", 1, err) < 0 ||
        check_string(o, path, "bias", "none", 1, err) < 0)
        return -1;
    if (read_number(o, path, "r", &r, err) < 0 || read_number(o, path, "lora_alpha", &c->alpha, err) < 0)
        return -1;
    if (r != floor(r) || r < 1 || r > 1 << 20)
        return peso_errf(err, "%s: key 'r': %g, expected a positive integer", path, r);
    c->rank = (int)r;
    if (read_targets(o, path, &c->targets, err) < 0)
        return -1;
    if (expect_off(o, path, "use_rslora", "rsLoRA scales by alpha/sqrt(r)", err) < 0 ||
        expect_off(o, path, "use_dora", "DoRA adapters are not supported", err) < 0 ||
        expect_off(o, path, "fan_in_fan_out", "weights must be stored [out, in]", err) < 0 ||
        expect_off(o, path, "rank_pattern", "one rank for all modules", err) < 0 ||
        expect_off(o, path, "alpha_pattern", "one alpha for all modules", err) < 0 ||
        expect_off(o, path, "layers_to_transform", "every layer is adapted", err) < 0 ||
        expect_off(o, path, "exclude_modules", "every targeted projection is adapted", err) < 0 ||
        expect_off(o, path, "lora_bias", "LoRA B has no bias", err) < 0 ||
        expect_off(o, path, "modules_to_save", "only LoRA tensors are adapter state", err) < 0 ||
        expect_off(o, path, "trainable_token_indices", "only LoRA tensors are adapter state", err) < 0)
        return -1;
    if (base_model && n) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "base_model_name_or_path");
        snprintf(base_model, n, "%s", cJSON_IsString(b) ? b->valuestring : "");
    }
    if (!isfinite(c->alpha) || c->alpha <= 0.0)
        return peso_errf(err, "%s: LoRA alpha %g, expected a finite number > 0", path, c->alpha);
    return 0;
}

int peso_peft_read_conf(const char *dir, peso_peft_conf *c, char *base_model, size_t n, peso_err *err)
{
    char path[PESO_PATH_MAX];
    join(path, sizeof path, dir, PESO_PEFT_CONFIG);
    char *text;
    size_t len;
    if (peso_read_file(path, "cannot open", &text, &len, err))
        return -1;
    cJSON *o = cJSON_Parse(text);
    free(text);
    if (!o)
        return peso_errf(err, "%s: not valid JSON", path);
    int rc = parse_conf(o, path, c, base_model, n, err);
    cJSON_Delete(o);
    return rc;
}

/* ---- reading the weights ---- */

static int load_module(const peso_st *st, int rank, const peso_peft_module *m, float *params, peso_err *err)
{
    char key[PESO_PEFT_KEY_MAX];
    int64_t a[2] = {rank, m->in}, b[2] = {m->out, rank};
    peso_peft_key(key, sizeof key, m->layer, m->proj, 'A');
    if (peso_st_load_f32(st, key, 2, a, params + m->a_off, err) < 0)
        return -1;
    peso_peft_key(key, sizeof key, m->layer, m->proj, 'B');
    return peso_st_load_f32(st, key, 2, b, params + m->b_off, err);
}

/* A key the model has no module for would be silently dropped. */
static int check_no_extra(const peso_st *st, const peso_peft_layout *l, peso_err *err)
{
    if (peso_st_count(st) == 2 * (size_t)l->n_modules)
        return 0;
    char key[PESO_PEFT_KEY_MAX];
    for (size_t i = 0; i < peso_st_count(st); i++) {
        const char *name = peso_st_at(st, i)->name;
        int known = 0;
        for (int j = 0; j < l->n_modules && !known; j++)
            for (int ab = 0; ab < 2 && !known; ab++) {
                peso_peft_key(key, sizeof key, l->mods[j].layer, l->mods[j].proj, ab ? 'B' : 'A');
                known = strcmp(key, name) == 0;
            }
        if (!known)
            return peso_errf(err,
                             "%s: tensor '%s' is not a LoRA matrix of this model's %d layers and "
                             "targets",
                             peso_st_path(st), name, l->n_layers);
    }
    return 0;
}

int peso_peft_read(const char *dir, const peso_peft_layout *l, float *params, peso_err *err)
{
    char path[PESO_PATH_MAX];
    peso_peft_conf c = {0};
    if (peso_peft_read_conf(dir, &c, NULL, 0, err) < 0)
        return -1;
    join(path, sizeof path, dir, PESO_PEFT_CONFIG);
    if (c.rank != l->conf.rank || c.alpha != l->conf.alpha || c.targets != l->conf.targets)
        return peso_errf(err,
                         "%s: adapter has r=%d lora_alpha=%g targets 0x%x, the model expects "
                         "r=%d lora_alpha=%g targets 0x%x",
                         path, c.rank, c.alpha, c.targets, l->conf.rank, l->conf.alpha, l->conf.targets);
    join(path, sizeof path, dir, PESO_PEFT_WEIGHTS);
    peso_st *st;
    if (peso_st_open(&st, path, err) < 0)
        return -1;
    int rc = check_no_extra(st, l, err);
    for (int i = 0; i < l->n_modules && rc == 0; i++)
        rc = load_module(st, l->conf.rank, &l->mods[i], params, err);
    peso_st_close(st);
    return rc;
}
