/* A peso_lora as a PEFT folder (lora/adapter.h): the file holds exactly
 * the flat's LoRA views under their own names and shapes, and reads back
 * into another model's buffer; the format's own checks are tests/hf's. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hf/safetensors.h"
#include "lora/adapter.h"

/* 3 layers, hidden 12, 4 heads of 3, 2 kv heads, intermediate 20: no
 * two of a module's dimensions alike, so a swapped shape shows */
static peso_llama_config cfg(void)
{
    peso_llama_config c;
    peso_llama_config_defaults(&c);
    c.hidden_size = 12;
    c.intermediate_size = 20;
    c.num_hidden_layers = 3;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 3;
    return c;
}

struct model {
    peso_flat flat;
    peso_lora lora;
    float *params;
};

/* An embedding table before the LoRA views, so offsets do not start at 0. */
static void model_make(struct model *m, int rank, double alpha, unsigned targets)
{
    peso_llama_config c = cfg();
    peso_lora_conf lc = {rank, alpha, targets};
    peso_err err;
    size_t off;
    peso_flat_init(&m->flat);
    cr_assert_eq(peso_flat_add(&m->flat, "embed", 2, (int[]){3, 12}, &off, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_lora_layout(&m->lora, &lc, &c, &m->flat, &err), 0, "%s", err.msg);
    m->params = calloc(m->flat.numel + 1, sizeof(float));
    for (size_t i = 0; i < m->flat.numel; i++)
        m->params[i] = (float)cos(0.11 * (double)i);
}

static void model_free(struct model *m)
{
    peso_lora_free(&m->lora);
    peso_flat_free(&m->flat);
    free(m->params);
}

/* The two files of an adapter folder, then the folder. */
static void remove_adapter(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, PESO_PEFT_CONFIG);
    cr_assert_eq(unlink(path), 0, "%s", path);
    snprintf(path, sizeof path, "%s/%s", dir, PESO_PEFT_WEIGHTS);
    cr_assert_eq(unlink(path), 0, "%s", path);
    cr_assert_eq(rmdir(dir), 0, "%s", dir);
}

Test(adapter, file_holds_the_flats_lora_views)
{
    struct model a;
    model_make(&a, 3, 6.0, (1u << PESO_LORA_K) | (1u << PESO_LORA_UP));
    char dir[] = "/tmp/peso-lora-adapter-XXXXXX", path[512];
    cr_assert(mkdtemp(dir));
    peso_err err;
    cr_assert_eq(peso_lora_adapter_write(dir, &a.lora, a.params, "tiny", &err), 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/%s", dir, PESO_PEFT_WEIGHTS);
    peso_st *st;
    cr_assert_eq(peso_st_open(&st, path, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_st_count(st), a.flat.n_views - 1, "every LoRA view, not the embedding");
    for (size_t v = 1; v < a.flat.n_views; v++) {
        const peso_view *w = &a.flat.views[v];
        const peso_st_tensor *t = peso_st_find(st, w->name);
        cr_assert(t, "missing %s", w->name);
        cr_assert_eq(t->ndim, 2);
        cr_assert_eq(t->shape[0], w->shape[0], "%s", w->name);
        cr_assert_eq(t->shape[1], w->shape[1], "%s", w->name);
        float *got = malloc(w->numel * sizeof *got);
        cr_assert_eq(peso_st_to_f32(t, got, &err), 0, "%s", err.msg);
        cr_assert_eq(memcmp(got, a.params + w->offset, w->numel * sizeof(float)), 0, "%s", w->name);
        free(got);
    }
    peso_st_close(st);

    peso_lora_conf c;
    char base[16];
    cr_assert_eq(peso_lora_adapter_read_conf(dir, &c, base, sizeof base, &err), 0, "%s", err.msg);
    cr_assert_eq(c.rank, 3);
    cr_assert_eq(c.alpha, 6.0);
    cr_assert_eq(c.targets, (1u << PESO_LORA_K) | (1u << PESO_LORA_UP));
    cr_assert_str_eq(base, "tiny");
    model_free(&a);
    remove_adapter(dir);
}

Test(adapter, reads_into_the_lora_views_only)
{
    struct model a, b;
    model_make(&a, 2, 4.0, PESO_LORA_ALL);
    model_make(&b, 2, 4.0, PESO_LORA_ALL);
    for (size_t i = 0; i < b.flat.numel; i++)
        b.params[i] = -1.0f;
    char dir[] = "/tmp/peso-lora-adapter-XXXXXX";
    cr_assert(mkdtemp(dir));
    peso_err err;
    cr_assert_eq(peso_lora_adapter_write(dir, &a.lora, a.params, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_lora_adapter_read(dir, &b.lora, b.params, &err), 0, "%s", err.msg);
    for (int i = 0; i < b.lora.n_modules; i++) {
        const peso_lora_module *m = &b.lora.mods[i];
        size_t na = 2 * (size_t)m->in, nb = 2 * (size_t)m->out;
        cr_assert_eq(memcmp(a.params + m->a_off, b.params + m->a_off, na * sizeof(float)), 0);
        cr_assert_eq(memcmp(a.params + m->b_off, b.params + m->b_off, nb * sizeof(float)), 0);
    }
    cr_assert_eq(b.params[0], -1.0f, "the embedding view was written");

    /* the format's refusal reaches the caller unchanged */
    struct model small;
    model_make(&small, 1, 4.0, PESO_LORA_ALL);
    cr_assert_eq(peso_lora_adapter_read(dir, &small.lora, small.params, &err), -1);
    cr_assert(strstr(err.msg, "adapter_config.json") && strstr(err.msg, "r=2") && strstr(err.msg, "r=1"),
              "%s", err.msg);
    model_free(&small);
    model_free(&a);
    model_free(&b);
    remove_adapter(dir);
}
