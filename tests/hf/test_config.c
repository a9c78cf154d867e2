/* config.json of Llama models: the real Llama-3.2-1B file, the
 * transformers 5 layout, LlamaConfig's defaults, refusals, and the writer. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hf/config.h"

static char dir[64];
static char path[128];

static void make_tmp(void)
{
    strcpy(dir, "/tmp/peso_cfg_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/config.json", dir);
}

static void rm_tmp(void)
{
    unlink(path);
    rmdir(dir);
}

static void write_text(const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static void load_text(peso_llama_config *c, const char *text)
{
    peso_err err;
    write_text(text);
    cr_assert_eq(peso_llama_config_load(c, path, &err), 0, "%s", err.msg);
}

static void expect_refused(const char *text, const char *key, const char *what)
{
    peso_llama_config c;
    peso_err err;
    write_text(text);
    cr_assert_eq(peso_llama_config_load(&c, path, &err), -1, "accepted: %s", text);
    cr_assert(strstr(err.msg, path), "file not named: %s", err.msg);
    cr_assert(strstr(err.msg, key), "'%s' not named: %s", key, err.msg);
    cr_assert(!what || strstr(err.msg, what), "'%s' not in: %s", what, err.msg);
}

static void expect_llama32_1b(const peso_llama_config *c)
{
    cr_assert_eq(c->vocab_size, 128256);
    cr_assert_eq(c->hidden_size, 2048);
    cr_assert_eq(c->intermediate_size, 8192);
    cr_assert_eq(c->num_hidden_layers, 16);
    cr_assert_eq(c->num_attention_heads, 32);
    cr_assert_eq(c->num_key_value_heads, 8);
    cr_assert_eq(c->head_dim, 64);
    cr_assert_eq(c->rms_norm_eps, 1e-5);
    cr_assert_eq(c->rope_theta, 500000.0);
    cr_assert_eq(c->rope_scaling.llama3, 1);
    cr_assert_eq(c->rope_scaling.factor, 32.0);
    cr_assert_eq(c->rope_scaling.low_freq_factor, 1.0);
    cr_assert_eq(c->rope_scaling.high_freq_factor, 4.0);
    cr_assert_eq(c->rope_scaling.original_max_position_embeddings, 8192);
    cr_assert_eq(c->tie_word_embeddings, 1);
    cr_assert_eq(c->max_position_embeddings, 131072);
    cr_assert_eq(c->bos_token_id, 128000);
    cr_assert_eq(c->n_eos, 1);
    cr_assert_eq(c->eos_token_ids[0], 128001);
    cr_assert_str_eq(c->dtype, "bfloat16");
}

Test(hfconfig, llama_3_2_1b_as_published)
{
    peso_llama_config c;
    peso_err err;
    cr_assert_eq(peso_llama_config_load(&c, PESO_FIXTURES "/model/llama-3.2-1b/config.json", &err), 0, "%s",
                 err.msg);
    expect_llama32_1b(&c);
}

Test(hfconfig, transformers_5_layout_and_eos_list, .init = make_tmp, .fini = rm_tmp)
{
    peso_llama_config c;
    load_text(&c, "{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_attention_heads\": 4,"
                  " \"num_key_value_heads\": 2, \"dtype\": \"float32\","
                  " \"eos_token_id\": [128001, 128008, 128009], \"bos_token_id\": null,"
                  " \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000,"
                  " \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
                  " \"original_max_position_embeddings\": 8192}}");
    cr_assert_eq(c.head_dim, 16, "hidden_size / num_attention_heads");
    cr_assert_eq(c.num_key_value_heads, 2);
    cr_assert_eq(c.rope_theta, 500000.0, "an integer is a number too");
    cr_assert_eq(c.rope_scaling.llama3, 1);
    cr_assert_eq(c.rope_scaling.factor, 8.0);
    cr_assert_eq(c.n_eos, 3);
    cr_assert_eq(c.eos_token_ids[2], 128009);
    cr_assert_eq(c.bos_token_id, -1);
    cr_assert_str_eq(c.dtype, "float32");
}

Test(hfconfig, absent_keys_take_llamaconfig_defaults, .init = make_tmp, .fini = rm_tmp)
{
    peso_llama_config c;
    load_text(&c, "{\"model_type\": \"llama\", \"rope_scaling\": null}");
    cr_assert_eq(c.vocab_size, 32000);
    cr_assert_eq(c.hidden_size, 4096);
    cr_assert_eq(c.intermediate_size, 11008);
    cr_assert_eq(c.num_hidden_layers, 32);
    cr_assert_eq(c.num_attention_heads, 32);
    cr_assert_eq(c.num_key_value_heads, 32);
    cr_assert_eq(c.head_dim, 128);
    cr_assert_eq(c.rms_norm_eps, 1e-6);
    cr_assert_eq(c.rope_theta, 10000.0);
    cr_assert_eq(c.rope_scaling.llama3, 0);
    cr_assert_eq(c.tie_word_embeddings, 0);
    cr_assert_eq(c.max_position_embeddings, 2048);
    cr_assert_eq(c.bos_token_id, 1);
    cr_assert_eq(c.n_eos, 1);
    cr_assert_eq(c.eos_token_ids[0], 2);
    cr_assert_str_eq(c.dtype, "");

    load_text(&c, "{\"model_type\": \"llama\", \"rope_scaling\": {\"type\": \"default\"},"
                  " \"eos_token_id\": null, \"head_dim\": 256}");
    cr_assert_eq(c.rope_scaling.llama3, 0);
    cr_assert_eq(c.n_eos, 0);
    cr_assert_eq(c.head_dim, 256, "explicit head_dim wins over hidden / heads");
}

Test(hfconfig, refuses_other_models_and_bad_values, .init = make_tmp, .fini = rm_tmp)
{
    expect_refused("{}", "model_type", "missing");
    expect_refused("{\"model_type\": \"mistral\"}", "model_type", "\"llama\"");
    expect_refused("{\"model_type\": \"llama\", \"architectures\": [\"LlamaModel\"]}", "architectures",
                   "LlamaForCausalLM");
    expect_refused("{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": \"linear\","
                   " \"factor\": 2.0}}",
                   "rope_scaling.rope_type", "linear");
    expect_refused("{\"model_type\": \"llama\", \"rope_scaling\": {\"type\": \"yarn\"}}",
                   "rope_scaling.rope_type", "yarn");
    expect_refused("{\"model_type\": \"llama\", \"rope_scaling\": {\"factor\": 2.0}}", "rope_scaling",
                   "rope_type");
    expect_refused("{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": \"llama3\","
                   " \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0}}",
                   "rope_scaling", "original_max_position_embeddings");
    expect_refused("{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": \"llama3\","
                   " \"factor\": 8.0, \"low_freq_factor\": 4.0, \"high_freq_factor\": 1.0,"
                   " \"original_max_position_embeddings\": 8192}}",
                   "rope_scaling", "low_freq_factor < high_freq_factor");
    expect_refused("{\"model_type\": \"llama\", \"hidden_act\": \"gelu\"}", "hidden_act", "silu");
    expect_refused("{\"model_type\": \"llama\", \"attention_bias\": true}", "attention_bias", NULL);
    expect_refused("{\"model_type\": \"llama\", \"mlp_bias\": true}", "mlp_bias", NULL);
    expect_refused("{\"model_type\": \"llama\", \"vocab_size\": \"big\"}", "vocab_size", "integer");
    expect_refused("{\"model_type\": \"llama\", \"hidden_size\": 1.5}", "hidden_size", "integer");
    expect_refused("{\"model_type\": \"llama\", \"rms_norm_eps\": \"small\"}", "rms_norm_eps", "number");
    expect_refused("{\"model_type\": \"llama\", \"tie_word_embeddings\": 1}", "tie_word_embeddings",
                   "true or false");
    expect_refused("{\"model_type\": \"llama\", \"num_key_value_heads\": 5}", "num_key_value_heads",
                   "multiple");
    expect_refused("{\"model_type\": \"llama\", \"hidden_size\": 100, \"num_attention_heads\": 3}",
                   "head_dim", "divisible");
    expect_refused("{\"model_type\": \"llama\", \"num_hidden_layers\": 0}", "num_hidden_layers", "positive");
    expect_refused("{\"model_type\": \"llama\", \"eos_token_id\": [1, \"x\"]}", "eos_token_id", NULL);
    expect_refused("{\"model_type\": \"llama\",", "cannot read JSON", NULL);
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

Test(hfconfig, writer_round_trips_and_reads_like_transformers, .init = make_tmp, .fini = rm_tmp)
{
    peso_llama_config c;
    peso_err err;
    cr_assert_eq(peso_llama_config_load(&c, PESO_FIXTURES "/model/llama-3.2-1b/config.json", &err), 0, "%s",
                 err.msg);
    cr_assert_eq(peso_llama_config_write(&c, path, &err), 0, "%s", err.msg);
    peso_llama_config d;
    cr_assert_eq(peso_llama_config_load(&d, path, &err), 0, "%s", err.msg);
    expect_llama32_1b(&d);

    char text[4096];
    FILE *f = fopen(path, "r");
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    /* floats spelled as Python's repr spells them */
    cr_assert(strstr(text, "\"rms_norm_eps\": 1e-05,"), "%s", text);
    cr_assert(strstr(text, "\"rope_theta\": 500000.0,"), "%s", text);
    cr_assert(strstr(text, "\"factor\": 32.0,"), "%s", text);
    cr_assert(strstr(text, "\"low_freq_factor\": 1.0,"), "%s", text);
    cr_assert(strstr(text, "\"rope_type\": \"llama3\""), "%s", text);
    cr_assert(strstr(text, "\"eos_token_id\": 128001,"), "%s", text);
    cr_assert_eq(count(text, "\"model_type\": \"llama\""), 1);
    cr_assert_eq(text[n - 1], '\n');
    /* top-level keys in sorted order */
    const char *keys[] = {"architectures",
                          "bos_token_id",
                          "eos_token_id",
                          "head_dim",
                          "hidden_size",
                          "intermediate_size",
                          "max_position_embeddings",
                          "num_attention_heads",
                          "num_hidden_layers",
                          "num_key_value_heads",
                          "rms_norm_eps",
                          "rope_scaling",
                          "rope_theta",
                          "tie_word_embeddings",
                          "torch_dtype",
                          "vocab_size"};
    const char *prev = text;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char q[64];
        snprintf(q, sizeof q, "\n  \"%s\":", keys[i]);
        const char *at = strstr(text, q);
        cr_assert(at && at > prev, "key %s missing or out of order", keys[i]);
        prev = at;
    }
}

Test(hfconfig, writer_spells_floats_shortest, .init = make_tmp, .fini = rm_tmp)
{
    peso_llama_config c;
    peso_err err;
    peso_llama_config_defaults(&c);
    c.rms_norm_eps = 1.5e-6;
    c.rope_theta = 10000.0;
    c.n_eos = 3;
    c.eos_token_ids[0] = 7, c.eos_token_ids[1] = 8, c.eos_token_ids[2] = 9;
    c.bos_token_id = -1;
    cr_assert_eq(peso_llama_config_write(&c, path, &err), 0, "%s", err.msg);
    char text[4096];
    FILE *f = fopen(path, "r");
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    cr_assert(strstr(text, "\"rms_norm_eps\": 1.5e-06,"), "%s", text);
    cr_assert(strstr(text, "\"rope_theta\": 10000.0,"), "%s", text);
    cr_assert(strstr(text, "\"rope_scaling\": null,"), "%s", text);
    cr_assert(strstr(text, "\"bos_token_id\": null,"), "%s", text);
    cr_assert(strstr(text, "\"torch_dtype\": null,"), "%s", text);
    peso_llama_config d;
    cr_assert_eq(peso_llama_config_load(&d, path, &err), 0, "%s", err.msg);
    cr_assert_eq(d.rms_norm_eps, 1.5e-6);
    cr_assert_eq(d.n_eos, 3);
    cr_assert_eq(d.eos_token_ids[1], 8);
    cr_assert_eq(d.bos_token_id, -1);

    c.num_key_value_heads = 3;
    cr_assert_eq(peso_llama_config_write(&c, path, &err), -1, "invalid config not written");
}
