/* output-kl: single evolving LoRA plus, per adapted module and real
 * token, lambda * KL between the softmax of the module's LoRA output
 * under v_t and under v_{t-1}, averaged over the step's tokens (an
 * ablation of PESO). The term is a projection hook (output_kl.h). */
#include "method/output_kl.h"

#include <stdlib.h>
#include <string.h>

#include "method/method.h"

static int okl_forward(void *ctx, peso_llama *m, const peso_llama_site *s, peso_err *err);

static void free_scratch(peso_okl *o)
{
    peso_backend *be = o->m->be;
    be->free(be, o->oz);
    be->free(be, o->ozp);
    be->free(be, o->olu);
    be->free(be, o->odlu);
    o->oz = o->ozp = o->olu = o->odlu = NULL;
    o->rows = 0;
}

void peso_okl_free(peso_okl *o)
{
    if (!o->m)
        return;
    peso_llama_set_hook(o->m, NULL);
    free_scratch(o);
    o->m->be->free(o->m->be, o->prev);
    memset(o, 0, sizeof *o);
}

int peso_okl_width(const peso_llama_config *c, const peso_lora_conf *l)
{
    int w = 0;
    for (int p = 0; p < PESO_LORA_NPROJ; p++) {
        int in, out;
        peso_lora_proj_dims(c, (peso_lora_proj)p, &in, &out);
        if ((l->targets & (1u << p)) && out > w)
            w = out;
    }
    return w;
}

int peso_okl_init(peso_okl *o, peso_llama *m, const float *prev, peso_err *err)
{
    memset(o, 0, sizeof *o);
    if (m->lora.n_modules == 0)
        return peso_errf(err, "output kl: %s has no LoRA modules", m->dir);
    o->m = m;
    o->scale = 1.0;
    size_t bytes = m->lora_span * sizeof(float);
    if (m->be->alloc(m->be, (void **)&o->prev, bytes, err) < 0 ||
        m->be->upload(m->be, o->prev, prev, bytes, err) < 0) {
        peso_okl_free(o);
        return peso_err_prefix(err, "output kl: previous adapter (%zu floats)", m->lora_span);
    }
    peso_llama_hook h = {.forward = okl_forward, .ctx = o};
    peso_llama_set_hook(m, &h);
    return 0;
}

double peso_okl_take(peso_okl *o)
{
    double v = o->sum;
    o->sum = 0.0;
    return v;
}

/* Device scratch for rows rows, grown when a larger batch arrives. */
static int grow_scratch(peso_okl *o, size_t rows, peso_err *err)
{
    if (rows <= o->rows)
        return 0;
    peso_backend *be = o->m->be;
    size_t w = (size_t)peso_okl_width(&o->m->cfg, &o->m->lora.conf), r = (size_t)o->m->lora.conf.rank;
    free_scratch(o);
    if (be->alloc(be, (void **)&o->oz, rows * w * sizeof(float), err) < 0 ||
        be->alloc(be, (void **)&o->ozp, rows * w * sizeof(float), err) < 0 ||
        be->alloc(be, (void **)&o->olu, rows * r * sizeof(float), err) < 0 ||
        be->alloc(be, (void **)&o->odlu, rows * r * sizeof(float), err) < 0) {
        free_scratch(o);
        return peso_err_prefix(err, "output kl: scratch for %zu rows", rows);
    }
    o->rows = rows;
    return 0;
}

/* z and z_prev [N, out] on the device (oz, ozp). */
static int outputs(peso_okl *o, const peso_llama_site *s, int N, peso_err *err)
{
    peso_llama *m = o->m;
    peso_backend *be = m->be;
    const peso_lora_module *md = s->mod;
    int r = m->lora.conf.rank;
    float sc = m->lora.scaling;
    if (peso_linear(be, o->oz, s->lu, m->params + md->b_off, PESO_F32, N, md->out, r, sc, 0.0f, err) < 0 ||
        peso_linear(be, o->olu, s->x, o->prev + md->a_off, PESO_F32, N, r, md->in, 1.0f, 0.0f, err) < 0)
        return -1;
    return peso_linear(be, o->ozp, o->olu, o->prev + md->b_off, PESO_F32, N, md->out, r, sc, 0.0f, err);
}

/* The KL of each batch row's real tokens; with grad, dz (zero on
 * padding) over oz in place. */
static int kl_rows(peso_okl *o, const peso_llama_site *s, int grad, peso_err *err)
{
    peso_backend *be = o->m->be;
    double v;
    if (be->row_kl(be, o->oz, o->ozp, s->dev_lens, s->B, s->T, s->mod->out, o->scale, grad ? o->oz : NULL, &v,
                   err) < 0)
        return -1;
    o->sum += v;
    return 0;
}

/* z = scaling (x A^T) B^T: dB += scaling dz^T (x A^T), dA += (scaling dz
 * B)^T x; x gets nothing. */
static int kl_backward(peso_okl *o, const peso_llama_site *s, int N, peso_err *err)
{
    peso_llama *m = o->m;
    peso_backend *be = m->be;
    const peso_lora_module *md = s->mod;
    int r = m->lora.conf.rank;
    float *dlu = m->freeze_a ? NULL : o->odlu;
    if ((dlu && be->zero(be, dlu, (size_t)N * r * sizeof(float), err) < 0) ||
        peso_linear_backward(be, dlu, m->grads + md->b_off, o->oz, s->lu, m->params + md->b_off, PESO_F32, N,
                             md->out, r, m->lora.scaling, err) < 0)
        return -1;
    if (!dlu)
        return 0;
    return peso_linear_backward(be, NULL, m->grads + md->a_off, dlu, s->x, m->params + md->a_off, PESO_F32, N,
                                r, md->in, 1.0f, err);
}

static int okl_forward(void *ctx, peso_llama *m, const peso_llama_site *s, peso_err *err)
{
    peso_okl *o = ctx;
    (void)m;
    if (s->pass == PESO_LLAMA_PASS_OBSERVE)
        return 0;
    int N = s->B * s->T, grad = s->pass == PESO_LLAMA_PASS_TRAIN;
    if (grow_scratch(o, (size_t)N, err) < 0 || outputs(o, s, N, err) < 0 || kl_rows(o, s, grad, err) < 0 ||
        (grad && kl_backward(o, s, N, err) < 0))
        return peso_err_prefix(err, "output kl");
    return 0;
}

/* ---- the method ---- */

static int begin(peso_method_stage *s, float *params, peso_err *err)
{
    (void)params;
    s->priv = peso_calloc(1, sizeof(peso_okl));
    return peso_okl_init(s->priv, s->m, s->prev, err);
}

/* lambda over the step's tokens: the term is a mean over them */
static void step(peso_method_stage *s, long tokens)
{
    ((peso_okl *)s->priv)->scale = s->c->method.lambda / (double)tokens;
}

static int prox(peso_method_stage *s, double *value, peso_err *err)
{
    (void)err;
    *value = peso_okl_take(s->priv);
    return 0;
}

static void okl_free(peso_method_stage *s)
{
    if (!s->priv)
        return;
    peso_okl_free(s->priv);
    free(s->priv);
}

const peso_method peso_method_output_kl = {
    .name = "output-kl",
    .flags = PESO_METHOD_LAMBDA,
    .begin = begin,
    .step = step,
    .prox = prox,
    .free = okl_free,
};
