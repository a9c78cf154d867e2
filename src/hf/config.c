#include "hf/config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic.h"
#include "common/json.h"

void peso_llama_config_defaults(peso_llama_config *c)
{
    memset(c, 0, sizeof *c);
    c->vocab_size = 32000;
    c->hidden_size = 4096;
    c->intermediate_size = 11008;
    c->num_hidden_layers = 32;
    c->num_attention_heads = 32;
    c->num_key_value_heads = 32;
    c->head_dim = 128;
    c->rms_norm_eps = 1e-6;
    c->rope_theta = 10000.0;
    c->max_position_embeddings = 2048;
    c->bos_token_id = 1;
    c->eos_token_ids[0] = 2;
    c->n_eos = 1;
}

/* ---- typed field readers: absent or null keys leave the default ---- */

static int get_int(const cJSON *o, const char *path, const char *key, int *out, peso_err *err)
{
    const cJSON *v = peso_json_get(o, key);
    int64_t x;
    if (!v)
        return 0;
    if (peso_json_int64(v, &x) != 0 || x < INT_MIN || x > INT_MAX) {
        char got[128];
        return peso_errf(err, "%s: key '%s': expected an integer, got %s", path, key,
                         peso_json_brief(v, got, sizeof got));
    }
    *out = (int)x;
    return 0;
}

static int get_num(const cJSON *o, const char *path, const char *key, double *out, peso_err *err)
{
    const cJSON *v = peso_json_get(o, key);
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v)) {
        char got[128];
        return peso_errf(err, "%s: key '%s': expected a number, got %s", path, key,
                         peso_json_brief(v, got, sizeof got));
    }
    *out = v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *o, const char *path, const char *key, int *out, peso_err *err)
{
    const cJSON *v = peso_json_get(o, key);
    if (!v)
        return 0;
    if (!cJSON_IsBool(v)) {
        char got[128];
        return peso_errf(err, "%s: key '%s': expected true or false, got %s", path, key,
                         peso_json_brief(v, got, sizeof got));
    }
    *out = cJSON_IsTrue(v);
    return 0;
}

/* A string key that, when present, must have one given value. */
static int want_str(const cJSON *o, const char *path, const char *key, const char *want, int required,
                    peso_err *err)
{
    const cJSON *v = peso_json_get(o, key);
    if (!v) {
        if (required)
            return peso_errf(err, "%s: key '%s' missing (expected \"%s\")", path, key, want);
        return 0;
    }
    if (!cJSON_IsString(v) || strcmp(v->valuestring, want) != 0) {
        char got[128];
        return peso_errf(err, "%s: key '%s' is %s: only \"%s\" is supported", path, key,
                         peso_json_brief(v, got, sizeof got), want);
    }
    return 0;
}

static int want_false(const cJSON *o, const char *path, const char *key, peso_err *err)
{
    int b = 0;
    if (get_bool(o, path, key, &b, err) != 0)
        return -1;
    if (b)
        return peso_errf(err, "%s: key '%s' is true: Llama layers with biases are not supported", path, key);
    return 0;
}

static int check_arch(const cJSON *o, const char *path, peso_err *err)
{
    if (want_str(o, path, "model_type", "llama", 1, err) != 0)
        return -1;
    const cJSON *a = peso_json_get(o, "architectures");
    if (!a)
        return 0;
    for (const cJSON *e = cJSON_IsArray(a) ? a->child : NULL; e; e = e->next)
        if (cJSON_IsString(e) && strcmp(e->valuestring, "LlamaForCausalLM") == 0)
            return 0;
    char got[128];
    return peso_errf(err, "%s: key 'architectures' is %s: expected [\"LlamaForCausalLM\"]", path,
                     peso_json_brief(a, got, sizeof got));
}

/* eos_token_id (and bos) may be an int, a list of ints, or null (*n = 0);
 * an absent key leaves *n as it was. */
static int get_ids(const cJSON *o, const char *path, const char *key, int *ids, int *n, int max,
                   peso_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    int64_t x;
    if (!v)
        return 0;
    *n = 0;
    if (cJSON_IsNull(v))
        return 0;
    int single = peso_json_int64(v, &x) == 0;
    if (!single && !cJSON_IsArray(v))
        return peso_errf(err, "%s: key '%s': expected an integer or a list of integers", path, key);
    size_t len = single ? 1 : (size_t)cJSON_GetArraySize(v);
    if (len > (size_t)max)
        return peso_errf(err, "%s: key '%s': %zu ids, at most %d supported", path, key, len, max);
    for (const cJSON *e = single ? v : v->child; e; e = single ? NULL : e->next) {
        if (peso_json_int64(e, &x) != 0 || x < 0 || x > INT_MAX)
            return peso_errf(err, "%s: key '%s': expected non-negative integer token ids", path, key);
        ids[(*n)++] = (int)x;
    }
    return 0;
}

static int get_bos(const cJSON *o, const char *path, int *bos, peso_err *err)
{
    int ids[PESO_MAX_EOS], n = -1;
    if (get_ids(o, path, "bos_token_id", ids, &n, 1, err) != 0)
        return -1;
    if (n >= 0)
        *bos = n == 1 ? ids[0] : -1;
    return 0;
}

/* ---- rope ---- */

static int rope_type(const cJSON *r, const char *path, const char *key, const char **type, peso_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, "rope_type");
    if (!v)
        v = cJSON_GetObjectItemCaseSensitive(r, "type");
    if (!v)
        return peso_errf(err, "%s: key '%s': missing 'rope_type'", path, key);
    if (!cJSON_IsString(v))
        return peso_errf(err, "%s: key '%s.rope_type': expected a string", path, key);
    *type = v->valuestring;
    return 0;
}

static int need(const cJSON *r, const char *path, const char *key, const char *field, peso_err *err)
{
    if (peso_json_get(r, field))
        return 0;
    return peso_errf(err, "%s: key '%s': rope_type llama3 needs '%s'", path, key, field);
}

/* rope_scaling (transformers 4) or rope_parameters (transformers 5). */
static int parse_rope(const cJSON *r, const char *path, const char *key, peso_llama_config *c, peso_err *err)
{
    if (!cJSON_IsObject(r))
        return peso_errf(err, "%s: key '%s': expected an object or null", path, key);
    if (get_num(r, path, "rope_theta", &c->rope_theta, err) != 0)
        return -1;
    const char *type = NULL;
    if (rope_type(r, path, key, &type, err) != 0)
        return -1;
    if (strcmp(type, "default") == 0)
        return 0;
    if (strcmp(type, "llama3") != 0)
        return peso_errf(err,
                         "%s: key '%s.rope_type' is \"%s\": only \"llama3\" and \"default\" are supported",
                         path, key, type);
    peso_rope_scaling *s = &c->rope_scaling;
    s->llama3 = 1;
    if (need(r, path, key, "factor", err) || need(r, path, key, "low_freq_factor", err) ||
        need(r, path, key, "high_freq_factor", err) ||
        need(r, path, key, "original_max_position_embeddings", err))
        return -1;
    if (get_num(r, path, "factor", &s->factor, err) ||
        get_num(r, path, "low_freq_factor", &s->low_freq_factor, err) ||
        get_num(r, path, "high_freq_factor", &s->high_freq_factor, err) ||
        get_int(r, path, "original_max_position_embeddings", &s->original_max_position_embeddings, err))
        return -1;
    return 0;
}

static int get_rope(const cJSON *o, const char *path, peso_llama_config *c, peso_err *err)
{
    if (get_num(o, path, "rope_theta", &c->rope_theta, err) != 0)
        return -1;
    const cJSON *r;
    if ((r = peso_json_get(o, "rope_parameters")))
        return parse_rope(r, path, "rope_parameters", c, err);
    if ((r = peso_json_get(o, "rope_scaling")))
        return parse_rope(r, path, "rope_scaling", c, err);
    return 0;
}

static int get_dtype(const cJSON *o, const char *path, char *dtype, peso_err *err)
{
    const cJSON *v = peso_json_get(o, "dtype");
    if (!v)
        v = peso_json_get(o, "torch_dtype");
    if (!v)
        return 0;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= PESO_DTYPE_NAME)
        return peso_errf(err, "%s: key 'torch_dtype': expected a dtype name such as \"bfloat16\"", path);
    strcpy(dtype, v->valuestring);
    return 0;
}

static int parse(const cJSON *o, const char *path, peso_llama_config *c, peso_err *err)
{
    if (!cJSON_IsObject(o))
        return peso_errf(err, "%s: expected a JSON object", path);
    if (check_arch(o, path, err) || want_str(o, path, "hidden_act", "silu", 0, err) ||
        want_false(o, path, "attention_bias", err) || want_false(o, path, "mlp_bias", err))
        return -1;
    if (get_int(o, path, "vocab_size", &c->vocab_size, err) ||
        get_int(o, path, "hidden_size", &c->hidden_size, err) ||
        get_int(o, path, "intermediate_size", &c->intermediate_size, err) ||
        get_int(o, path, "num_hidden_layers", &c->num_hidden_layers, err) ||
        get_int(o, path, "num_attention_heads", &c->num_attention_heads, err) ||
        get_int(o, path, "max_position_embeddings", &c->max_position_embeddings, err) ||
        get_num(o, path, "rms_norm_eps", &c->rms_norm_eps, err) ||
        get_bool(o, path, "tie_word_embeddings", &c->tie_word_embeddings, err))
        return -1;
    c->num_key_value_heads = c->num_attention_heads;
    if (get_int(o, path, "num_key_value_heads", &c->num_key_value_heads, err))
        return -1;
    c->head_dim = c->num_attention_heads > 0 ? c->hidden_size / c->num_attention_heads : 0;
    if (peso_json_get(o, "head_dim")) {
        if (get_int(o, path, "head_dim", &c->head_dim, err))
            return -1;
    } else if (c->num_attention_heads > 0 && c->hidden_size % c->num_attention_heads) {
        return peso_errf(
            err, "%s: key 'head_dim' absent and hidden_size %d is not divisible by num_attention_heads %d",
            path, c->hidden_size, c->num_attention_heads);
    }
    if (get_rope(o, path, c, err) || get_bos(o, path, &c->bos_token_id, err) ||
        get_ids(o, path, "eos_token_id", c->eos_token_ids, &c->n_eos, PESO_MAX_EOS, err) ||
        get_dtype(o, path, c->dtype, err))
        return -1;
    return 0;
}

int peso_llama_config_check(const peso_llama_config *c, const char *where, peso_err *err)
{
    const struct {
        const char *key;
        int v;
    } pos[] = {
        {"vocab_size", c->vocab_size},
        {"hidden_size", c->hidden_size},
        {"intermediate_size", c->intermediate_size},
        {"num_hidden_layers", c->num_hidden_layers},
        {"num_attention_heads", c->num_attention_heads},
        {"num_key_value_heads", c->num_key_value_heads},
        {"head_dim", c->head_dim},
        {"max_position_embeddings", c->max_position_embeddings},
    };
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i].v <= 0)
            return peso_errf(err, "%s: key '%s' is %d: expected a positive integer", where, pos[i].key,
                             pos[i].v);
    if (c->num_attention_heads % c->num_key_value_heads)
        return peso_errf(err, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", where,
                         c->num_attention_heads, c->num_key_value_heads);
    if (c->head_dim % 2)
        return peso_errf(err, "%s: key 'head_dim' is %d: rotary embeddings need an even size", where,
                         c->head_dim);
    if (!(c->rms_norm_eps > 0) || !(c->rope_theta > 0))
        return peso_errf(err, "%s: rms_norm_eps and rope_theta must be positive", where);
    const peso_rope_scaling *s = &c->rope_scaling;
    if (s->llama3 &&
        (!(s->factor > 0) || !(s->low_freq_factor > 0) || !(s->high_freq_factor > s->low_freq_factor) ||
         s->original_max_position_embeddings <= 0))
        return peso_errf(err,
                         "%s: key 'rope_scaling': llama3 needs factor > 0, 0 < low_freq_factor < "
                         "high_freq_factor and original_max_position_embeddings > 0",
                         where);
    return 0;
}

int peso_llama_config_load(peso_llama_config *c, const char *path, peso_err *err)
{
    peso_llama_config_defaults(c);
    cJSON *o = peso_json_load(path, "JSON", err);
    if (!o)
        return -1;
    int rc = parse(o, path, c, err);
    cJSON_Delete(o);
    if (rc != 0)
        return -1;
    return peso_llama_config_check(c, path, err);
}

/* ---- writing: floats spelled as Python's repr spells them (500000.0,
 * 1e-05), so a written config reads like one saved by transformers ---- */

static cJSON *rope_json(const peso_rope_scaling *s)
{
    if (!s->llama3)
        return peso_json_null();
    cJSON *r = peso_json_object();
    peso_json_add(r, "factor", peso_json_float(s->factor));
    peso_json_add(r, "high_freq_factor", peso_json_float(s->high_freq_factor));
    peso_json_add(r, "low_freq_factor", peso_json_float(s->low_freq_factor));
    peso_json_add(r, "original_max_position_embeddings", peso_json_int(s->original_max_position_embeddings));
    peso_json_add(r, "rope_type", peso_json_string("llama3"));
    return r;
}

static cJSON *eos_json(const peso_llama_config *c)
{
    if (c->n_eos == 0)
        return peso_json_null();
    if (c->n_eos == 1)
        return peso_json_int(c->eos_token_ids[0]);
    cJSON *a = peso_json_array();
    for (int i = 0; i < c->n_eos; i++)
        peso_json_push(a, peso_json_int(c->eos_token_ids[i]));
    return a;
}

/* Keys in sorted order, as transformers' to_json_string(sort_keys=True). */
static cJSON *config_json(const peso_llama_config *c)
{
    cJSON *o = peso_json_object();
    cJSON *arch = peso_json_array();
    peso_json_push(arch, peso_json_string("LlamaForCausalLM"));
    peso_json_add(o, "architectures", arch);
    peso_json_add(o, "attention_bias", peso_json_bool(0));
    peso_json_add(o, "bos_token_id",
                  c->bos_token_id >= 0 ? peso_json_int(c->bos_token_id) : peso_json_null());
    peso_json_add(o, "eos_token_id", eos_json(c));
    peso_json_add(o, "head_dim", peso_json_int(c->head_dim));
    peso_json_add(o, "hidden_act", peso_json_string("silu"));
    peso_json_add(o, "hidden_size", peso_json_int(c->hidden_size));
    peso_json_add(o, "intermediate_size", peso_json_int(c->intermediate_size));
    peso_json_add(o, "max_position_embeddings", peso_json_int(c->max_position_embeddings));
    peso_json_add(o, "mlp_bias", peso_json_bool(0));
    peso_json_add(o, "model_type", peso_json_string("llama"));
    peso_json_add(o, "num_attention_heads", peso_json_int(c->num_attention_heads));
    peso_json_add(o, "num_hidden_layers", peso_json_int(c->num_hidden_layers));
    peso_json_add(o, "num_key_value_heads", peso_json_int(c->num_key_value_heads));
    peso_json_add(o, "rms_norm_eps", peso_json_float(c->rms_norm_eps));
    peso_json_add(o, "rope_scaling", rope_json(&c->rope_scaling));
    peso_json_add(o, "rope_theta", peso_json_float(c->rope_theta));
    peso_json_add(o, "tie_word_embeddings", peso_json_bool(c->tie_word_embeddings));
    peso_json_add(o, "torch_dtype", c->dtype[0] ? peso_json_string(c->dtype) : peso_json_null());
    peso_json_add(o, "vocab_size", peso_json_int(c->vocab_size));
    return o;
}

int peso_llama_config_write(const peso_llama_config *c, const char *path, peso_err *err)
{
    if (peso_llama_config_check(c, path, err) != 0)
        return -1;
    cJSON *o = config_json(c);
    int rc = peso_json_write_file(path, o, err);
    cJSON_Delete(o);
    return rc;
}
