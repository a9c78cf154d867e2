/* LoRA layout, names and PEFT's init. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "lora/lora.h"

/* Llama-3.2-1B shapes with 3 layers */
static peso_llama_config cfg(void)
{
    peso_llama_config c;
    peso_llama_config_defaults(&c);
    c.hidden_size = 2048;
    c.intermediate_size = 8192;
    c.num_hidden_layers = 3;
    c.num_attention_heads = 32;
    c.num_key_value_heads = 8;
    c.head_dim = 64;
    return c;
}

Test(lora, names_and_keys_as_peft)
{
    const char *want[7] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    for (int p = 0; p < PESO_LORA_NPROJ; p++) {
        cr_assert_str_eq(peso_lora_proj_name((peso_lora_proj)p), want[p]);
        cr_assert_str_eq(peso_lora_proj_parent((peso_lora_proj)p), p < 4 ? "self_attn" : "mlp");
    }
    char key[PESO_LORA_KEY_MAX];
    peso_lora_key(key, sizeof key, 0, PESO_LORA_Q, 'A');
    cr_assert_str_eq(key, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    peso_lora_key(key, sizeof key, 15, PESO_LORA_DOWN, 'B');
    cr_assert_str_eq(key, "base_model.model.model.layers.15.mlp.down_proj.lora_B.weight");
    peso_lora_key(key, sizeof key, 7, PESO_LORA_GATE, 'A');
    cr_assert_str_eq(key, "base_model.model.model.layers.7.mlp.gate_proj.lora_A.weight");
}

Test(lora, targets_parse)
{
    unsigned m;
    peso_err err;
    cr_assert_eq(peso_lora_targets_parse("q,k,v,o,gate,up,down", &m, &err), 0, "%s", err.msg);
    cr_assert_eq(m, 0x7fu);
    cr_assert_eq(peso_lora_targets_parse("all", &m, &err), 0);
    cr_assert_eq(m, 0x7fu);
    cr_assert_eq(peso_lora_targets_parse("q_proj,v_proj", &m, &err), 0);
    cr_assert_eq(m, (1u << 0) | (1u << 2));
    cr_assert_eq(peso_lora_targets_parse("down", &m, &err), 0);
    cr_assert_eq(m, 1u << 6);
    cr_assert_eq(peso_lora_targets_parse("q,lm_head", &m, &err), -1);
    cr_assert(strstr(err.msg, "'lm_head'"), "%s", err.msg);
    cr_assert_eq(peso_lora_targets_parse("q,,v", &m, &err), -1);
    cr_assert_eq(peso_lora_targets_parse("", &m, &err), -1);
}

Test(lora, dims_follow_gqa_shapes)
{
    peso_llama_config c = cfg();
    int want[7][2] = {{2048, 2048}, {2048, 512},  {2048, 512}, {2048, 2048},
                      {2048, 8192}, {2048, 8192}, {8192, 2048}};
    for (int p = 0; p < 7; p++) {
        int in, out;
        peso_lora_proj_dims(&c, (peso_lora_proj)p, &in, &out);
        cr_assert_eq(in, want[p][0], "proj %d in", p);
        cr_assert_eq(out, want[p][1], "proj %d out", p);
    }
    peso_lora_conf l = {16, 32.0, (1u << PESO_LORA_Q) | (1u << PESO_LORA_V)};
    cr_assert_eq(peso_lora_numel(&l, &c), (size_t)3 * 16 * ((2048 + 2048) + (2048 + 512)));
    cr_assert_eq(peso_lora_scaling(&l), 2.0);
}

Test(lora, layout_views_in_layer_then_projection_order)
{
    peso_llama_config c = cfg();
    peso_lora_conf lc = {4, 8.0, (1u << PESO_LORA_K) | (1u << PESO_LORA_UP)};
    peso_flat f;
    peso_lora l;
    peso_err err;
    peso_flat_init(&f);
    cr_assert_eq(peso_lora_layout(&l, &lc, &c, &f, &err), 0, "%s", err.msg);
    cr_assert_eq(l.n_modules, 6);
    cr_assert_eq(f.n_views, 12);
    cr_assert_float_eq(l.scaling, 2.0f, 0.0f);
    const char *first[4] = {
        "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight",
        "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight",
        "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight",
    };
    int shapes[4][2] = {{4, 2048}, {512, 4}, {4, 2048}, {8192, 4}};
    for (int i = 0; i < 4; i++) {
        cr_assert_str_eq(f.views[i].name, first[i]);
        cr_assert_eq(f.views[i].shape[0], shapes[i][0]);
        cr_assert_eq(f.views[i].shape[1], shapes[i][1]);
    }
    const peso_lora_module *m = peso_lora_find(&l, 2, PESO_LORA_UP);
    cr_assert(m && m->layer == 2 && m->in == 2048 && m->out == 8192);
    cr_assert_eq(m->a_off,
                 peso_flat_find(&f, "base_model.model.model.layers.2.mlp.up_proj.lora_A.weight")->offset);
    cr_assert_null(peso_lora_find(&l, 1, PESO_LORA_Q));
    cr_assert_null(peso_lora_find(&l, 3, PESO_LORA_K));
    peso_lora_free(&l);
    peso_flat_free(&f);
}

/* kaiming_uniform_(a = sqrt(5)) on A [r, in] is U(-1/sqrt(in), 1/sqrt(in)):
 * check the bound, mean 0 and variance bound^2 / 3; B = 0; deterministic
 * by seed and different across seeds. */
Test(lora, peft_init)
{
    peso_llama_config c = cfg();
    c.num_hidden_layers = 1;
    peso_lora_conf lc = {8, 16.0, PESO_LORA_ALL};
    peso_flat f;
    peso_lora l;
    peso_err err;
    peso_flat_init(&f);
    cr_assert_eq(peso_lora_layout(&l, &lc, &c, &f, &err), 0, "%s", err.msg);
    float *p = calloc(f.numel, sizeof *p), *q = calloc(f.numel, sizeof *q);
    for (size_t i = 0; i < f.numel; i++)
        p[i] = 1.0f; /* B must be overwritten */
    peso_lora_init(&l, p, 5);
    peso_lora_init(&l, q, 5);
    cr_assert_eq(memcmp(p, q, f.numel * sizeof *p), 0);
    for (int i = 0; i < l.n_modules; i++) {
        const peso_lora_module *m = &l.mods[i];
        size_t na = (size_t)8 * m->in, nb = (size_t)8 * m->out;
        double bound = 1.0 / sqrt((double)m->in), s = 0.0, ss = 0.0;
        for (size_t j = 0; j < na; j++) {
            double a = p[m->a_off + j];
            cr_assert(fabs(a) <= bound);
            s += a;
            ss += a * a;
        }
        double mean = s / na, var = ss / na - mean * mean, want = bound * bound / 3.0;
        cr_assert(fabs(mean) < 4.0 * sqrt(want / na), "module %d mean %g", i, mean);
        cr_assert(fabs(var - want) < 0.03 * want, "module %d variance %g, expected %g", i, var, want);
        for (size_t j = 0; j < nb; j++)
            cr_assert_eq(p[m->b_off + j], 0.0f);
    }
    peso_lora_init(&l, q, 6);
    cr_assert_neq(memcmp(p, q, f.numel * sizeof *p), 0);
    free(p);
    free(q);
    peso_lora_free(&l);
    peso_flat_free(&f);
}

/* B from N(0, std^2): the first draw is std times the first normal of the
 * documented stream; over all B entries mean 0 and variance std^2; A is
 * exactly PEFT's init (the B draws do not consume A's stream). */
Test(lora, b_normal_init)
{
    peso_llama_config c = cfg();
    c.num_hidden_layers = 1;
    peso_lora_conf lc = {8, 16.0, (1u << PESO_LORA_Q) | (1u << PESO_LORA_DOWN)};
    peso_flat f;
    peso_lora l;
    peso_err err;
    peso_flat_init(&f);
    cr_assert_eq(peso_lora_layout(&l, &lc, &c, &f, &err), 0, "%s", err.msg);
    float *p = calloc(f.numel, sizeof *p), *q = calloc(f.numel, sizeof *q);
    peso_lora_init(&l, p, 7);
    peso_lora_init(&l, q, 7);
    peso_lora_init_b_normal(&l, p, 7, 0.1);
    peso_rng rng;
    peso_rng_seed(&rng, 7, PESO_LORA_B_RNG_STREAM);
    cr_assert_float_eq(p[l.mods[0].b_off], (float)(0.1 * peso_rng_normal(&rng)), 0.0f);
    double s = 0.0, ss = 0.0;
    size_t n = 0;
    for (int i = 0; i < l.n_modules; i++) {
        const peso_lora_module *m = &l.mods[i];
        size_t na = (size_t)8 * m->in;
        cr_assert_eq(memcmp(p + m->a_off, q + m->a_off, na * sizeof *p), 0, "A of module %d", i);
        for (size_t j = 0; j < (size_t)8 * m->out; j++, n++) {
            s += p[m->b_off + j];
            ss += (double)p[m->b_off + j] * p[m->b_off + j];
        }
    }
    double mean = s / n, var = ss / n - mean * mean;
    cr_assert_eq(n, (size_t)8 * (2048 + 2048));
    cr_assert(fabs(mean) < 4.0 * 0.1 / sqrt((double)n), "mean %g", mean);
    cr_assert(fabs(var / 0.01 - 1.0) < 0.05, "variance %g, expected 0.01", var);
    memcpy(q, p, f.numel * sizeof *p);
    peso_lora_init_b_normal(&l, q, 7, 0.1);
    cr_assert_eq(memcmp(p, q, f.numel * sizeof *p), 0);
    peso_lora_init_b_normal(&l, q, 8, 0.1);
    cr_assert_neq(memcmp(p, q, f.numel * sizeof *p), 0);
    free(p);
    free(q);
    peso_lora_free(&l);
    peso_flat_free(&f);
}

Test(lora, conf_check)
{
    peso_err err;
    peso_lora_conf bad_rank = {0, 16.0, PESO_LORA_ALL}, bad_alpha = {8, -1.0, PESO_LORA_ALL};
    cr_assert_eq(peso_lora_conf_check(&bad_rank, "x.yaml", &err), -1);
    cr_assert(strstr(err.msg, "x.yaml") && strstr(err.msg, "rank 0"), "%s", err.msg);
    cr_assert_eq(peso_lora_conf_check(&bad_alpha, "x.yaml", &err), -1);
    cr_assert(strstr(err.msg, "alpha"), "%s", err.msg);
}
