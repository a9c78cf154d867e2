/* PEFT adapter folders: what is written (keys, shapes, config values) is
 * checked by reading the files back with cJSON and the safetensors reader,
 * and adapters as PEFT writes them are read. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hf/peft.h"
#include "hf/safetensors.h"

/* Projection numbers of hf/peft.h. */
enum { Q, K, V, O, GATE, UP, DOWN };

/* in and out features of each projection in a model of 2 layers, hidden
 * 16, 2 heads of 4, 1 kv head, intermediate 24 */
#define N_LAYERS 2
static const int proj_in[PESO_PEFT_NPROJ] = {16, 16, 16, 8, 16, 16, 24};
static const int proj_out[PESO_PEFT_NPROJ] = {8, 4, 4, 16, 24, 24, 16};

struct adapter {
    peso_peft_module mods[N_LAYERS * PESO_PEFT_NPROJ];
    peso_peft_layout a;
    size_t numel;
    float *params;
};

/* Modules layer-major, projections in order, each A then B packed. */
static void adapter_make(struct adapter *a, int rank, double alpha, unsigned targets)
{
    size_t off = 0;
    a->a = (peso_peft_layout){{rank, alpha, targets}, N_LAYERS, 0, a->mods};
    for (int l = 0; l < N_LAYERS; l++)
        for (int p = 0; p < PESO_PEFT_NPROJ; p++) {
            if (!(targets & (1u << p)))
                continue;
            peso_peft_module *m = &a->mods[a->a.n_modules++];
            *m = (peso_peft_module){l, p, proj_in[p], proj_out[p], off, off + (size_t)rank * proj_in[p]};
            off = m->b_off + (size_t)proj_out[p] * rank;
        }
    a->numel = off;
    a->params = calloc(off + 1, sizeof(float));
    for (size_t i = 0; i < off; i++)
        a->params[i] = (float)sin(0.37 * (double)i) * 0.25f;
}

static void adapter_free(struct adapter *a)
{
    free(a->params);
}

static char *tmpdir(void)
{
    char *d = strdup("/tmp/peso-peft-test-XXXXXX");
    cr_assert(mkdtemp(d));
    return d;
}

static void rmdir_all(char *d)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_assert_eq(system(cmd), 0);
    free(d);
}

static cJSON *read_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "open %s", path);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *o = cJSON_Parse(buf);
    cr_assert(o, "%s is not JSON", path);
    return o;
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

Test(peft, projection_names_and_keys)
{
    static const char *const want[] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                       "gate_proj", "up_proj", "down_proj"};
    for (int p = 0; p < PESO_PEFT_NPROJ; p++) {
        cr_assert_str_eq(peso_peft_proj_name(p), want[p]);
        cr_assert_str_eq(peso_peft_proj_parent(p), p <= O ? "self_attn" : "mlp");
        cr_assert_eq(peso_peft_proj_from_name(want[p]), p);
    }
    cr_assert_str_eq(peso_peft_proj_name(PESO_PEFT_NPROJ), "?");
    cr_assert_eq(peso_peft_proj_from_name("q"), -1, "short names are not PEFT's");
    cr_assert_eq(peso_peft_proj_from_name("lm_head"), -1);
    char key[PESO_PEFT_KEY_MAX];
    peso_peft_key(key, sizeof key, 12, UP, 'B');
    cr_assert_str_eq(key, "base_model.model.model.layers.12.mlp.up_proj.lora_B.weight");
}

Test(peft, written_files_are_peft_format)
{
    struct adapter a;
    adapter_make(&a, 4, 8.0, (1u << Q) | (1u << V) | (1u << DOWN));
    char *dir = tmpdir(), path[512];
    peso_err err;
    cr_assert_eq(peso_peft_write(dir, &a.a, a.params, "meta-llama/Llama-3.2-1B", &err), 0, "%s", err.msg);

    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    cJSON *o = read_json(path);
    cr_assert_str_eq(cJSON_GetObjectItem(o, "peft_type")->valuestring, "LORA");
    cr_assert_str_eq(cJSON_GetObjectItem(o, "task_type")->valuestring, "CAUSAL_LM");
    cr_assert_str_eq(cJSON_GetObjectItem(o, "bias")->valuestring, "none");
    cr_assert_str_eq(cJSON_GetObjectItem(o, "base_model_name_or_path")->valuestring,
                     "meta-llama/Llama-3.2-1B");
    cr_assert_eq(cJSON_GetObjectItem(o, "r")->valuedouble, 4.0);
    cr_assert_eq(cJSON_GetObjectItem(o, "lora_alpha")->valuedouble, 8.0);
    cr_assert_eq(cJSON_GetObjectItem(o, "lora_dropout")->valuedouble, 0.0);
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(o, "fan_in_fan_out")));
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(o, "use_rslora")));
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(o, "use_dora")));
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(o, "init_lora_weights")));
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "modules_to_save")));
    cJSON *t = cJSON_GetObjectItem(o, "target_modules");
    cr_assert_eq(cJSON_GetArraySize(t), 3);
    cr_assert_str_eq(cJSON_GetArrayItem(t, 0)->valuestring, "q_proj");
    cr_assert_str_eq(cJSON_GetArrayItem(t, 1)->valuestring, "v_proj");
    cr_assert_str_eq(cJSON_GetArrayItem(t, 2)->valuestring, "down_proj");
    cJSON_Delete(o);

    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    peso_st *st;
    cr_assert_eq(peso_st_open(&st, path, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_st_count(st), 12);
    cr_assert_str_eq(peso_st_meta(st, "format"), "pt");
    static const struct {
        const char *name;
        int64_t d0, d1;
    } want[] = {
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", 4, 16},
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", 8, 4},
        {"base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", 4, 16},
        {"base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", 4, 4},
        {"base_model.model.model.layers.0.mlp.down_proj.lora_A.weight", 4, 24},
        {"base_model.model.model.layers.0.mlp.down_proj.lora_B.weight", 16, 4},
        {"base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", 4, 16},
        {"base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight", 8, 4},
        {"base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight", 4, 16},
        {"base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", 4, 4},
        {"base_model.model.model.layers.1.mlp.down_proj.lora_A.weight", 4, 24},
        {"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight", 16, 4},
    };
    for (size_t i = 0; i < 12; i++) {
        const peso_st_tensor *x = peso_st_find(st, want[i].name);
        cr_assert(x, "missing %s", want[i].name);
        cr_assert_str_eq(x->dtype, "F32");
        cr_assert_eq(x->ndim, 2);
        cr_assert_eq(x->shape[0], want[i].d0, "%s", want[i].name);
        cr_assert_eq(x->shape[1], want[i].d1, "%s", want[i].name);
        /* the values are the buffer's, row-major; want[] is in module order */
        const peso_peft_module *m = &a.mods[i / 2];
        float got[128];
        cr_assert_eq(peso_st_to_f32(x, got, &err), 0);
        cr_assert_eq(memcmp(got, a.params + (i % 2 ? m->b_off : m->a_off),
                            (size_t)(want[i].d0 * want[i].d1) * sizeof(float)),
                     0, "%s", want[i].name);
    }
    peso_st_close(st);
    adapter_free(&a);
    rmdir_all(dir);
}

Test(peft, round_trip)
{
    struct adapter a, b;
    adapter_make(&a, 3, 5.0, PESO_PEFT_ALL);
    adapter_make(&b, 3, 5.0, PESO_PEFT_ALL);
    memset(b.params, 0, b.numel * sizeof(float));
    char *dir = tmpdir(), base[64];
    peso_err err;
    peso_peft_conf c;
    cr_assert_eq(peso_peft_write(dir, &a.a, a.params, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_peft_read_conf(dir, &c, base, sizeof base, &err), 0, "%s", err.msg);
    cr_assert_eq(c.rank, 3);
    cr_assert_eq(c.alpha, 5.0);
    cr_assert_eq(c.targets, PESO_PEFT_ALL);
    cr_assert_str_eq(base, "");
    cr_assert_eq(peso_peft_read(dir, &b.a, b.params, &err), 0, "%s", err.msg);
    cr_assert_eq(memcmp(a.params, b.params, a.numel * sizeof(float)), 0);
    adapter_free(&a);
    adapter_free(&b);
    rmdir_all(dir);
}

/* adapter_config.json as PEFT 0.13 save_pretrained writes it (keys a
 * reader must tolerate), with BF16 weights. */
Test(peft, reads_peft_written_config_and_bf16)
{
    struct adapter a, b;
    adapter_make(&a, 2, 16.0, (1u << Q) | (1u << K));
    adapter_make(&b, 2, 16.0, (1u << Q) | (1u << K));
    char *dir = tmpdir(), path[512];
    peso_err err;
    write_text(
        dir, "adapter_config.json",
        "{\n  \"alpha_pattern\": {},\n  \"auto_mapping\": null,\n"
        "  \"base_model_name_or_path\": \"meta-llama/Llama-3.2-1B\",\n  \"bias\": \"none\",\n"
        "  \"fan_in_fan_out\": false,\n  \"inference_mode\": true,\n  \"init_lora_weights\": true,\n"
        "  \"layer_replication\": null,\n  \"layers_pattern\": null,\n  \"layers_to_transform\": null,\n"
        "  \"loftq_config\": {},\n  \"lora_alpha\": 16,\n  \"lora_dropout\": 0.05,\n"
        "  \"megatron_config\": null,\n  \"megatron_core\": \"megatron.core\",\n"
        "  \"modules_to_save\": null,\n  \"peft_type\": \"LORA\",\n  \"r\": 2,\n"
        "  \"rank_pattern\": {},\n  \"revision\": null,\n  \"target_modules\": [\n"
        "    \"k_proj\",\n    \"q_proj\"\n  ],\n  \"task_type\": \"CAUSAL_LM\",\n"
        "  \"use_dora\": false,\n  \"use_rslora\": false\n}\n");
    /* weights in BF16, values chosen exact in BF16 */
    peso_st_wtensor w[8];
    char names[8][PESO_PEFT_KEY_MAX];
    for (size_t i = 0; i < a.numel; i++)
        a.params[i] = (float)((int)(i % 17) - 8) / 64.0f;
    for (int i = 0; i < a.a.n_modules; i++)
        for (int ab = 0; ab < 2; ab++) {
            const peso_peft_module *m = &a.a.mods[i];
            peso_peft_key(names[2 * i + ab], PESO_PEFT_KEY_MAX, m->layer, m->proj, ab ? 'B' : 'A');
            w[2 * i + ab] = (peso_st_wtensor){names[2 * i + ab],
                                              PESO_ST_WRITE_BF16,
                                              2,
                                              {ab ? m->out : 2, ab ? 2 : m->in},
                                              a.params + (ab ? m->b_off : m->a_off)};
        }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    cr_assert_eq(peso_st_write(path, w, 8, NULL, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_peft_read(dir, &b.a, b.params, &err), 0, "%s", err.msg);
    for (int i = 0; i < a.a.n_modules; i++) {
        const peso_peft_module *m = &a.a.mods[i];
        size_t na = 2 * (size_t)m->in, nb = 2 * (size_t)m->out;
        cr_assert_eq(memcmp(a.params + m->a_off, b.params + m->a_off, na * sizeof(float)), 0);
        cr_assert_eq(memcmp(a.params + m->b_off, b.params + m->b_off, nb * sizeof(float)), 0);
    }
    /* "all-linear" means the seven projections */
    peso_peft_conf c;
    write_text(dir, "adapter_config.json",
               "{\"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": 32, \"target_modules\": \"all-linear\"}");
    cr_assert_eq(peso_peft_read_conf(dir, &c, NULL, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(c.targets, PESO_PEFT_ALL);
    cr_assert_eq(c.rank, 8);
    adapter_free(&a);
    adapter_free(&b);
    rmdir_all(dir);
}

static void conf_error(const char *dir, const char *json, const char *key)
{
    peso_peft_conf c;
    peso_err err;
    write_text(dir, "adapter_config.json", json);
    cr_assert_eq(peso_peft_read_conf(dir, &c, NULL, 0, &err), -1, "accepted %s", json);
    cr_assert(strstr(err.msg, "adapter_config.json") && strstr(err.msg, key), "'%s' should name %s", err.msg,
              key);
}

Test(peft, unsupported_configs_are_errors)
{
    char *dir = tmpdir();
    const char *base = "\"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": 16";
    char json[512];
#define CONF(extra) (snprintf(json, sizeof json, "{%s, %s}", base, extra), json)
    conf_error(dir, CONF("\"target_modules\": [\"q_proj\"], \"use_rslora\": true"), "use_rslora");
    conf_error(dir, CONF("\"target_modules\": [\"q_proj\"], \"use_dora\": true"), "use_dora");
    conf_error(dir, CONF("\"target_modules\": [\"q_proj\"], \"rank_pattern\": {\"q_proj\": 4}"),
               "rank_pattern");
    conf_error(dir, CONF("\"target_modules\": [\"q_proj\"], \"fan_in_fan_out\": true"), "fan_in_fan_out");
    conf_error(dir, CONF("\"target_modules\": [\"q_proj\"], \"layers_to_transform\": [0]"),
               "layers_to_transform");
    conf_error(dir, CONF("\"target_modules\": [\"q_proj\"], \"modules_to_save\": [\"lm_head\"]"),
               "modules_to_save");
    conf_error(dir, CONF("\"target_modules\": [\"q_proj\"], \"bias\": \"all\""), "bias");
    conf_error(dir, CONF("\"target_modules\": [\"q_proj\", \"lm_head\"]"), "lm_head");
    conf_error(dir, CONF("\"target_modules\": \".*q_proj\""), "target_modules");
    conf_error(dir, "{\"peft_type\": \"PREFIX_TUNING\", \"r\": 8}", "peft_type");
    conf_error(dir,
               "{\"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": 0, \"target_modules\": [\"q_proj\"]}",
               "alpha");
    conf_error(dir,
               "{\"peft_type\": \"LORA\", \"r\": 2.5, \"lora_alpha\": 1, \"target_modules\": [\"q_proj\"]}",
               "'r'");
#undef CONF
    rmdir_all(dir);
}

Test(peft, weights_must_match_the_model)
{
    struct adapter a, b, small;
    adapter_make(&a, 4, 8.0, (1u << Q) | (1u << O));
    adapter_make(&b, 4, 8.0, (1u << Q));
    adapter_make(&small, 2, 8.0, (1u << Q) | (1u << O));
    char *dir = tmpdir(), path[512];
    peso_err err;
    cr_assert_eq(peso_peft_write(dir, &a.a, a.params, NULL, &err), 0, "%s", err.msg);
    /* other targets or rank than the model's */
    cr_assert_eq(peso_peft_read(dir, &b.a, b.params, &err), -1);
    cr_assert(strstr(err.msg, "adapter_config.json") && strstr(err.msg, "r=4"), "%s", err.msg);
    cr_assert_eq(peso_peft_read(dir, &small.a, small.params, &err), -1);
    cr_assert(strstr(err.msg, "r=2"), "%s", err.msg);

    /* a weights file with a key the config does not cover */
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    cr_assert_eq(peso_peft_write_weights(path, &a.a, a.params, &err), 0, "%s", err.msg);
    write_text(dir, "adapter_config.json",
               "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"]}");
    cr_assert_eq(peso_peft_read(dir, &b.a, b.params, &err), -1);
    cr_assert(strstr(err.msg, "adapter_model.safetensors") &&
                  strstr(err.msg, "base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight"),
              "%s", err.msg);

    /* a missing key, and a wrong shape */
    cr_assert_eq(peso_peft_write_weights(path, &b.a, b.params, &err), 0, "%s", err.msg);
    write_text(dir, "adapter_config.json",
               "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\", "
               "\"o_proj\"]}");
    cr_assert_eq(peso_peft_read(dir, &a.a, a.params, &err), -1);
    cr_assert(strstr(err.msg, "adapter_model.safetensors") && strstr(err.msg, "o_proj.lora_A.weight") &&
                  strstr(err.msg, "not found"),
              "%s", err.msg);
    peso_st_wtensor w = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                         PESO_ST_WRITE_F32,
                         2,
                         {16, 4},
                         a.params};
    cr_assert_eq(peso_st_write(path, &w, 1, NULL, 0, &err), 0);
    write_text(dir, "adapter_config.json",
               "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"]}");
    cr_assert_eq(peso_peft_read(dir, &b.a, b.params, &err), -1);
    cr_assert(strstr(err.msg, "q_proj.lora_A.weight") && strstr(err.msg, "[4, 16]"), "%s", err.msg);
    adapter_free(&a);
    adapter_free(&b);
    adapter_free(&small);
    rmdir_all(dir);
}
