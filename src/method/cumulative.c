/* The past adapters of the cumulative family (cumulative.h). */
#include "method/cumulative.h"

#include <stdlib.h>
#include <string.h>

#include "lora/lora.h"

/* PEFT's wrapper prefix of the LoRA view names, which a checkpoint drops */
#define WRAPPER "base_model.model."

static int learnable(const peso_method_stage *s)
{
    return (s->meth->flags & PESO_METHOD_MAGNITUDES) != 0;
}

int peso_cumulative_load(peso_method_stage *s, const peso_ckpt *ck, peso_err *err)
{
    peso_flat lf = peso_method_lora_flat(s->m);
    char probe[PESO_CKPT_NAME_MAX + 64];
    for (int i = 0;; i++) {
        snprintf(probe, sizeof probe, "past/%d/adapter/%s", i, lf.views[0].name + strlen(WRAPPER));
        if (!peso_ckpt_find(ck, probe))
            return 0;
        s->past = peso_realloc(s->past, (size_t)(i + 1) * sizeof *s->past);
        s->past[i] = peso_calloc(s->m->flat.numel, sizeof **s->past);
        s->n_past = i + 1;
        char group[32];
        snprintf(group, sizeof group, "past/%d", i);
        if (peso_ckpt_get_flat(ck, group, &lf, s->past[i], err) < 0)
            return -1;
    }
}

int peso_cumulative_save(const peso_method_stage *s, peso_ckpt *ck, peso_err *err)
{
    peso_flat lf = peso_method_lora_flat(s->m);
    for (int i = 0; i < s->n_past; i++) {
        char group[32];
        snprintf(group, sizeof group, "past/%d", i);
        if (peso_ckpt_add_flat(ck, group, &lf, s->past[i], err) < 0)
            return -1;
    }
    return 0;
}

static void fixed_alpha(peso_method_stage *s)
{
    if (learnable(s) || s->alpha || s->n_past == 0)
        return;
    s->alpha = peso_malloc((size_t)s->n_past * sizeof *s->alpha);
    for (int i = 0; i < s->n_past; i++)
        s->alpha[i] = 1.0f;
}

int peso_cumulative_begin(peso_method_stage *s, float *params, peso_err *err)
{
    const char *variant = s->c->method.variant;
    int latest = strncmp(variant, "latest", 6) == 0, inherit = strstr(variant, "+inherit") != NULL;
    peso_llama *m = s->m;
    size_t n = m->flat.numel;
    /* all: the loaded past adapters and v_{t-1}; latest: v_{t-1} only */
    int keep = latest ? 0 : s->n_past;
    for (int i = keep; i < s->n_past; i++)
        free(s->past[i]);
    s->past = peso_realloc(s->past, (size_t)(keep + 1) * sizeof *s->past);
    s->past[keep] = peso_malloc(n * sizeof **s->past);
    memcpy(s->past[keep], params, n * sizeof *params);
    s->n_past = keep + 1;
    free(s->alpha);
    s->alpha = NULL;
    fixed_alpha(s);
    /* learned magnitudes of the kept adapters stay; the others start at 1 */
    if (learnable(s))
        for (size_t i = (size_t)keep; i < (size_t)m->n_magnitudes; i++)
            params[m->mag_off + i] = 1.0f;
    if (!inherit)
        peso_lora_init(&m->lora, params, s->c->seed ^ ((uint64_t)s->t * 0x9E3779B97F4A7C15ull));
    (void)err;
    return 0;
}

int peso_cumulative_install(peso_method_stage *s, peso_err *err)
{
    fixed_alpha(s);
    return peso_llama_set_past(s->m, s->n_past, (const float *const *)s->past, s->alpha, err);
}

int peso_cumulative_start(peso_method_stage *s, float *params, peso_err *err)
{
    if (peso_cumulative_begin(s, params, err) < 0)
        return -1;
    return peso_cumulative_install(s, err);
}
