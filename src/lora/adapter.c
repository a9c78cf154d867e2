#include "lora/adapter.h"

#include <stdlib.h>

#include "hf/peft.h"

/* l as the format sees it; *mods (malloc'd) holds its modules. */
static peso_peft_layout peft_layout(const peso_lora *l, peso_peft_module **mods)
{
    peso_peft_module *m = peso_calloc(l->n_modules ? (size_t)l->n_modules : 1, sizeof *m);
    for (int i = 0; i < l->n_modules; i++) {
        const peso_lora_module *x = &l->mods[i];
        m[i] = (peso_peft_module){x->layer, (int)x->proj, x->in, x->out, x->a_off, x->b_off};
    }
    *mods = m;
    return (peso_peft_layout){{l->conf.rank, l->conf.alpha, l->conf.targets}, l->n_layers, l->n_modules, m};
}

int peso_lora_adapter_write(const char *dir, const peso_lora *l, const float *params, const char *base_model,
                            peso_err *err)
{
    peso_peft_module *mods;
    peso_peft_layout a = peft_layout(l, &mods);
    int rc = peso_peft_write(dir, &a, params, base_model, err);
    free(mods);
    return rc;
}

int peso_lora_adapter_write_weights(const char *path, const peso_lora *l, const float *buf, peso_err *err)
{
    peso_peft_module *mods;
    peso_peft_layout a = peft_layout(l, &mods);
    int rc = peso_peft_write_weights(path, &a, buf, err);
    free(mods);
    return rc;
}

int peso_lora_adapter_read_conf(const char *dir, peso_lora_conf *c, char *base_model, size_t n, peso_err *err)
{
    peso_peft_conf pc;
    if (peso_peft_read_conf(dir, &pc, base_model, n, err) < 0)
        return -1;
    *c = (peso_lora_conf){pc.rank, pc.alpha, pc.targets};
    return 0;
}

int peso_lora_adapter_read(const char *dir, const peso_lora *l, float *params, peso_err *err)
{
    peso_peft_module *mods;
    peso_peft_layout a = peft_layout(l, &mods);
    int rc = peso_peft_read(dir, &a, params, err);
    free(mods);
    return rc;
}
