#include "lora/lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

/* The projections are numbered as PEFT numbers them (hf/peft.h). */
_Static_assert(PESO_LORA_NPROJ == PESO_PEFT_NPROJ, "peso_lora_proj must follow hf/peft.h's projections");

const char *peso_lora_proj_name(peso_lora_proj p)
{
    return peso_peft_proj_name((int)p);
}

const char *peso_lora_proj_parent(peso_lora_proj p)
{
    return peso_peft_proj_parent((int)p);
}

int peso_lora_proj_from_name(const char *s, peso_lora_proj *p)
{
    for (int i = 0; i < PESO_LORA_NPROJ; i++) {
        const char *name = peso_peft_proj_name(i);
        size_t n = strlen(name) - strlen("_proj");
        if (strcmp(s, name) == 0 || (strlen(s) == n && strncmp(s, name, n) == 0)) {
            *p = (peso_lora_proj)i;
            return 0;
        }
    }
    return -1;
}

int peso_lora_targets_parse(const char *list, unsigned *mask, peso_err *err)
{
    if (strcmp(list, "all") == 0) {
        *mask = PESO_LORA_ALL;
        return 0;
    }
    unsigned m = 0;
    const char *s = list;
    for (;;) {
        const char *end = strchr(s, ',');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        char name[32];
        peso_lora_proj p;
        if (n == 0 || n >= sizeof name)
            return peso_errf(err,
                             "LoRA targets '%s': empty or overlong name, expected a list "
                             "of q,k,v,o,gate,up,down",
                             list);
        memcpy(name, s, n);
        name[n] = '\0';
        if (peso_lora_proj_from_name(name, &p) < 0)
            return peso_errf(err,
                             "LoRA targets '%s': unknown projection '%s', expected one of "
                             "q,k,v,o,gate,up,down (or q_proj, ...)",
                             list, name);
        m |= 1u << p;
        if (!end)
            break;
        s = end + 1;
    }
    *mask = m;
    return 0;
}

void peso_lora_proj_dims(const peso_llama_config *c, peso_lora_proj p, int *in, int *out)
{
    int q = c->num_attention_heads * c->head_dim;
    int kv = c->num_key_value_heads * c->head_dim;
    switch (p) {
    case PESO_LORA_Q: *in = c->hidden_size, *out = q; break;
    case PESO_LORA_K:
    case PESO_LORA_V: *in = c->hidden_size, *out = kv; break;
    case PESO_LORA_O: *in = q, *out = c->hidden_size; break;
    case PESO_LORA_GATE:
    case PESO_LORA_UP: *in = c->hidden_size, *out = c->intermediate_size; break;
    default: *in = c->intermediate_size, *out = c->hidden_size; break;
    }
}

double peso_lora_scaling(const peso_lora_conf *c)
{
    return c->alpha / c->rank;
}

int peso_lora_conf_check(const peso_lora_conf *c, const char *where, peso_err *err)
{
    if (c->rank < 1)
        return peso_errf(err, "%s: LoRA rank %d, expected >= 1", where, c->rank);
    if (!isfinite(c->alpha) || c->alpha <= 0.0)
        return peso_errf(err, "%s: LoRA alpha %g, expected a finite number > 0", where, c->alpha);
    if (c->targets & ~PESO_LORA_ALL)
        return peso_errf(err, "%s: LoRA target mask 0x%x has bits outside the 7 projections", where,
                         c->targets);
    return 0;
}

size_t peso_lora_numel(const peso_lora_conf *c, const peso_llama_config *mc)
{
    size_t per_layer = 0;
    for (int p = 0; p < PESO_LORA_NPROJ; p++) {
        if (!(c->targets & (1u << p)))
            continue;
        int in, out;
        peso_lora_proj_dims(mc, (peso_lora_proj)p, &in, &out);
        per_layer += (size_t)c->rank * ((size_t)in + (size_t)out);
    }
    return per_layer * (size_t)mc->num_hidden_layers;
}

void peso_lora_key(char *buf, size_t n, int layer, peso_lora_proj p, char which)
{
    peso_peft_key(buf, n, layer, (int)p, which);
}

static int add_module(peso_lora *l, peso_flat *flat, int layer, peso_lora_proj p, const peso_llama_config *mc,
                      peso_err *err)
{
    peso_lora_module *m = &l->mods[l->n_modules];
    char key[PESO_LORA_KEY_MAX];
    m->layer = layer;
    m->proj = p;
    peso_lora_proj_dims(mc, p, &m->in, &m->out);
    int ashape[2] = {l->conf.rank, m->in}, bshape[2] = {m->out, l->conf.rank};
    peso_lora_key(key, sizeof key, layer, p, 'A');
    if (peso_flat_add(flat, key, 2, ashape, &m->a_off, err) < 0)
        return -1;
    peso_lora_key(key, sizeof key, layer, p, 'B');
    if (peso_flat_add(flat, key, 2, bshape, &m->b_off, err) < 0)
        return -1;
    l->index[layer * PESO_LORA_NPROJ + p] = l->n_modules++;
    return 0;
}

int peso_lora_layout(peso_lora *l, const peso_lora_conf *c, const peso_llama_config *mc, peso_flat *flat,
                     peso_err *err)
{
    memset(l, 0, sizeof *l);
    if (c->targets && peso_lora_conf_check(c, "LoRA", err) < 0)
        return -1;
    l->conf = *c;
    l->scaling = c->targets ? (float)peso_lora_scaling(c) : 0.0f;
    l->n_layers = mc->num_hidden_layers;
    size_t slots = (size_t)l->n_layers * PESO_LORA_NPROJ;
    l->index = peso_malloc(slots * sizeof *l->index);
    for (size_t i = 0; i < slots; i++)
        l->index[i] = -1;
    l->mods = peso_calloc(slots ? slots : 1, sizeof *l->mods);
    for (int layer = 0; layer < l->n_layers; layer++)
        for (int p = 0; p < PESO_LORA_NPROJ; p++)
            if ((c->targets & (1u << p)) && add_module(l, flat, layer, (peso_lora_proj)p, mc, err) < 0) {
                peso_lora_free(l);
                return -1;
            }
    return 0;
}

void peso_lora_free(peso_lora *l)
{
    free(l->mods);
    free(l->index);
    memset(l, 0, sizeof *l);
}

const peso_lora_module *peso_lora_find(const peso_lora *l, int layer, peso_lora_proj p)
{
    if (layer < 0 || layer >= l->n_layers || (unsigned)p >= PESO_LORA_NPROJ)
        return NULL;
    int i = l->index[layer * PESO_LORA_NPROJ + p];
    return i < 0 ? NULL : &l->mods[i];
}

void peso_lora_init(const peso_lora *l, float *params, uint64_t seed)
{
    peso_rng rng;
    peso_rng_seed(&rng, seed, PESO_LORA_RNG_STREAM);
    for (int i = 0; i < l->n_modules; i++) {
        const peso_lora_module *m = &l->mods[i];
        /* kaiming_uniform_(a=sqrt(5)): gain sqrt(2/(1+5)), bound gain*sqrt(3/fan_in) */
        double bound = 1.0 / sqrt((double)m->in);
        float *a = params + m->a_off;
        for (size_t j = 0; j < (size_t)l->conf.rank * (size_t)m->in; j++)
            a[j] = (float)((2.0 * peso_rng_uniform(&rng) - 1.0) * bound);
        memset(params + m->b_off, 0, (size_t)m->out * (size_t)l->conf.rank * sizeof(float));
    }
}

void peso_lora_init_b_normal(const peso_lora *l, float *params, uint64_t seed, double std)
{
    peso_rng rng;
    peso_rng_seed(&rng, seed, PESO_LORA_B_RNG_STREAM);
    for (int i = 0; i < l->n_modules; i++) {
        const peso_lora_module *m = &l->mods[i];
        float *b = params + m->b_off;
        for (size_t j = 0; j < (size_t)m->out * (size_t)l->conf.rank; j++)
            b[j] = (float)(std * peso_rng_normal(&rng));
    }
}
