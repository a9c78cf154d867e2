/* The output-KL regularizer (DESIGN.md "Continual methods", an ablation
 * of PESO): per adapted module and real token, KL between the softmax of
 * the module's LoRA output under v_t and under the frozen v_{t-1}. The
 * module input x is a constant of the term (stop-gradient), so its whole
 * gradient is known as soon as the module's forward has run: it goes into
 * A and B right there, and the backward pass never sees the term. The
 * softmax-KL is peso_prox_output_kl on host copies of z and z_prev (the
 * rows of real tokens), its dz uploaded again; a GPU backend would run
 * that kernel as an op on the device buffers instead. */
#include <stdlib.h>
#include <string.h>

#include "method/prox.h"
#include "model/llama_internal.h"

void peso_llama_okl_free(peso_llama *m)
{
    peso_llama_okl *o = &m->okl;
    m->be->free(m->be, o->prev);
    free(o->hz);
    free(o->hzp);
    free(o->hdz);
    o->prev = NULL;
    o->hz = o->hzp = o->hdz = NULL;
    o->hcap = 0;
}

int peso_llama_okl_width(const peso_llama_config *c, const peso_lora_conf *l)
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

int peso_llama_set_output_kl(peso_llama *m, const float *prev, peso_err *err)
{
    double scale = m->okl.scale;
    peso_llama_okl_free(m);
    if (!prev)
        return 0;
    if (m->lora.n_modules == 0)
        return peso_errf(err, "output kl: %s has no LoRA modules", m->dir);
    size_t bytes = m->lora_span * sizeof(float);
    if (m->be->alloc(m->be, (void **)&m->okl.prev, bytes, err) < 0 ||
        m->be->upload(m->be, m->okl.prev, prev, bytes, err) < 0) {
        peso_llama_okl_free(m);
        return peso_err_prefix(err, "output kl: previous adapter (%zu floats)", m->lora_span);
    }
    m->okl.scale = scale;
    return 0;
}

void peso_llama_output_kl_scale(peso_llama *m, double scale)
{
    m->okl.scale = scale;
}

static void grow_host(peso_llama_okl *o, size_t n)
{
    if (n <= o->hcap)
        return;
    free(o->hz);
    free(o->hzp);
    free(o->hdz);
    o->hz = peso_malloc(n * sizeof(float));
    o->hzp = peso_malloc(n * sizeof(float));
    o->hdz = peso_malloc(n * sizeof(float));
    o->hcap = n;
}

/* z and z_prev [N, out] on the device (oz, ozp). */
static int outputs(peso_llama *m, const peso_lora_module *md, const float *x, const float *lu, peso_err *err)
{
    peso_backend *be = m->be;
    peso_llama_acts *ac = m->acts;
    int N = ac->B * ac->T, r = m->lora.conf.rank;
    float s = m->lora.scaling;
    if (peso_linear(be, ac->oz, lu, m->params + md->b_off, PESO_F32, N, md->out, r, s, 0.0f, err) < 0 ||
        peso_linear(be, ac->olu, x, m->okl.prev + md->a_off, PESO_F32, N, r, md->in, 1.0f, 0.0f, err) < 0)
        return -1;
    return peso_linear(be, ac->ozp, ac->olu, m->okl.prev + md->b_off, PESO_F32, N, md->out, r, s, 0.0f, err);
}

/* The KL of each batch row's real tokens on the host; with grad, dz (zero
 * on padding) back into oz. */
static int kl_rows(peso_llama *m, int out, int grad, peso_err *err)
{
    peso_backend *be = m->be;
    peso_llama_acts *ac = m->acts;
    peso_llama_okl *o = &m->okl;
    size_t row = (size_t)ac->T * out;
    grow_host(o, (size_t)ac->B * row);
    if (grad)
        memset(o->hdz, 0, (size_t)ac->B * row * sizeof(float));
    for (int b = 0; b < ac->B; b++) {
        int len = ac->h_lens[b];
        size_t at = (size_t)b * row, bytes = (size_t)len * out * sizeof(float);
        double v;
        if (len == 0)
            continue;
        if (be->download(be, o->hz + at, ac->oz + at, bytes, err) < 0 ||
            be->download(be, o->hzp + at, ac->ozp + at, bytes, err) < 0 ||
            peso_prox_output_kl(o->hz + at, o->hzp + at, len, out, o->scale, grad ? o->hdz + at : NULL, &v,
                                err) < 0)
            return -1;
        ac->okl_sum += v;
    }
    return grad ? be->upload(be, ac->oz, o->hdz, (size_t)ac->B * row * sizeof(float), err) : 0;
}

/* z = scaling (x A^T) B^T: dB += scaling dz^T (x A^T), dA += (scaling dz
 * B)^T x; x gets nothing. */
static int okl_backward(peso_llama *m, const peso_lora_module *md, const float *x, const float *lu,
                        peso_err *err)
{
    peso_backend *be = m->be;
    peso_llama_acts *ac = m->acts;
    int N = ac->B * ac->T, r = m->lora.conf.rank;
    float *dlu = m->freeze_a ? NULL : ac->odlu;
    if ((dlu && be->zero(be, dlu, (size_t)N * r * sizeof(float), err) < 0) ||
        peso_linear_backward(be, dlu, m->grads + md->b_off, ac->oz, lu, m->params + md->b_off, PESO_F32, N,
                             md->out, r, m->lora.scaling, err) < 0)
        return -1;
    if (!dlu)
        return 0;
    return peso_linear_backward(be, NULL, m->grads + md->a_off, dlu, x, m->params + md->a_off, PESO_F32, N, r,
                                md->in, 1.0f, err);
}

int peso_llama_okl_module(peso_llama *m, int l, peso_lora_proj p, const float *x, const float *lu,
                          peso_err *err)
{
    const peso_lora_module *md = peso_lora_find(&m->lora, l, p);
    peso_okl_mode mode = m->acts->okl;
    if (mode == PESO_OKL_OFF || !md)
        return 0;
    int grad = mode == PESO_OKL_GRAD;
    if (outputs(m, md, x, lu, err) < 0 || kl_rows(m, md->out, grad, err) < 0 ||
        (grad && okl_backward(m, md, x, lu, err) < 0))
        return peso_err_prefix(err, "output kl, layer %d %s", l, peso_lora_proj_name(p));
    return 0;
}
