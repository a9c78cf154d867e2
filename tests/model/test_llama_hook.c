/* The projection hook (peso_llama_set_hook): which passes call it, for
 * which projections, with what batch geometry; and the gradient its
 * backward receives, against central differences of the loss in the
 * output it may add to. */
#include <criterion/criterion.h>

#include "llama_setup.h"

typedef struct seen {
    int calls[3];   /* per pass */
    int key[3][64]; /* layer * PESO_LORA_NPROJ + proj of each call */
    int B, T, lens_ok;
    const int32_t *want_lens;
} seen;

static int count_forward(void *ctx, peso_llama *m, const peso_llama_site *s, peso_err *err)
{
    seen *c = ctx;
    (void)err;
    if (c->calls[s->pass] < 64)
        c->key[s->pass][c->calls[s->pass]] = s->layer * PESO_LORA_NPROJ + (int)s->proj;
    c->calls[s->pass]++;
    c->B = s->B;
    c->T = s->T;
    for (int b = 0; b < s->B; b++)
        c->lens_ok &= s->lens[b] == c->want_lens[b];
    c->lens_ok &= s->mod == &m->lora.mods[s->module] && s->mod->layer == s->layer && s->mod->proj == s->proj;
    return 0;
}

Test(hook, called_once_per_adapted_projection_of_hooked_passes)
{
    setup s;
    unsigned targets = (1u << PESO_LORA_Q) | (1u << PESO_LORA_V) | (1u << PESO_LORA_DOWN);
    setup_open(&s, 1, 0, targets, 31);
    tbatch b;
    int lens[2] = {6, 4};
    tbatch_make(&b, 2, 6, lens, s.m->cfg.vocab_size, 0, 32);
    peso_llama_batch v = tbatch_view(&b);
    seen c = {.lens_ok = 1, .want_lens = b.lens};
    peso_llama_hook h = {.forward = count_forward, .ctx = &c};
    peso_llama_set_hook(s.m, &h);
    peso_err err;
    peso_llama_loss loss;
    int n = s.m->lora.n_modules;
    cr_assert_eq(n, 3 * s.m->cfg.num_hidden_layers);
    cr_assert_eq(peso_llama_forward(s.m, &v, &loss, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_forward_backward(s.m, &v, 1.0f, &loss, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_observe(s.m, &v, &err), 0, "%s", err.msg);
    /* passes that decode or read hidden states do not call it */
    int32_t pos = 3;
    float *logits = malloc((size_t)s.m->cfg.vocab_size * sizeof *logits);
    float *hidden = malloc(2 * (size_t)s.m->cfg.hidden_size * sizeof *hidden);
    cr_assert_eq(peso_llama_logits(s.m, &v, &pos, 1, logits, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_hidden_mean(s.m, &v, hidden, &err), 0, "%s", err.msg);
    cr_assert_eq(c.calls[PESO_LLAMA_PASS_LOSS], n);
    cr_assert_eq(c.calls[PESO_LLAMA_PASS_TRAIN], n);
    cr_assert_eq(c.calls[PESO_LLAMA_PASS_OBSERVE], n);
    /* layer by layer, q before v before down */
    for (int p = 0; p < 3; p++)
        for (int i = 1; i < n; i++)
            cr_assert(c.key[p][i] > c.key[p][i - 1], "pass %d: call %d out of order", p, i);
    cr_assert(c.B == 2 && c.T == 6 && c.lens_ok, "site geometry [%d, %d], lens/module ok %d", c.B, c.T,
              c.lens_ok);
    /* removed: nothing more */
    peso_llama_set_hook(s.m, NULL);
    cr_assert_eq(peso_llama_forward(s.m, &v, &loss, &err), 0, "%s", err.msg);
    cr_assert_eq(c.calls[PESO_LLAMA_PASS_LOSS], n);
    free(logits);
    free(hidden);
    setup_close(&s);
}

/* One output element y[row, col] of one module, nudged by delta in the
 * forward; the backward's dy for that module is kept. */
typedef struct probe {
    int module;
    size_t row, col;
    float delta;
    float *dy; /* host [B*T, out] */
} probe;

static int nudge(void *ctx, peso_llama *m, const peso_llama_site *s, peso_err *err)
{
    probe *p = ctx;
    if (s->module != p->module || p->delta == 0.0f)
        return 0;
    float v;
    float *at = s->y + p->row * (size_t)s->mod->out + p->col;
    if (m->be->download(m->be, &v, at, sizeof v, err) < 0)
        return -1;
    v += p->delta;
    return m->be->upload(m->be, at, &v, sizeof v, err);
}

static int keep_dy(void *ctx, peso_llama *m, const peso_llama_site *s, const float *dy, peso_err *err)
{
    probe *p = ctx;
    if (s->module != p->module)
        return 0;
    return m->be->download(m->be, p->dy, dy, (size_t)s->B * s->T * s->mod->out * sizeof(float), err);
}

static double loss_with(setup *s, const peso_llama_batch *v, probe *p, float delta)
{
    peso_err err;
    peso_llama_loss loss;
    p->delta = delta;
    cr_assert_eq(peso_llama_forward(s->m, v, &loss, &err), 0, "%s", err.msg);
    p->delta = 0.0f;
    return loss.sum;
}

Test(hook, backward_gets_the_gradient_of_the_output)
{
    setup s;
    setup_open(&s, 0, 0, PESO_LORA_ALL, 41);
    setup_randomize_b(&s, 42);
    tbatch b;
    int lens[2] = {7, 5};
    tbatch_make(&b, 2, 7, lens, s.m->cfg.vocab_size, 0, 43);
    peso_llama_batch v = tbatch_view(&b);
    peso_err err;
    peso_llama_loss loss;
    /* q of layer 0 (its gradient crosses attention and both layers) and
     * down of the last layer (a residual output) */
    int L = s.m->cfg.num_hidden_layers,
        mods[2] = {s.m->lora.index[PESO_LORA_Q], s.m->lora.index[(L - 1) * PESO_LORA_NPROJ + PESO_LORA_DOWN]};
    for (int k = 0; k < 2; k++) {
        const peso_lora_module *md = &s.m->lora.mods[mods[k]];
        probe p = {.module = mods[k]};
        p.dy = calloc((size_t)b.B * b.T * md->out, sizeof *p.dy);
        peso_llama_hook h = {.forward = nudge, .backward = keep_dy, .ctx = &p};
        peso_llama_set_hook(s.m, &h);
        cr_assert_eq(peso_llama_zero_grads(s.m, &err), 0, "%s", err.msg);
        cr_assert_eq(peso_llama_forward_backward(s.m, &v, 1.0f, &loss, &err), 0, "%s", err.msg);
        double mx = 0.0;
        for (size_t i = 0; i < (size_t)b.B * b.T * md->out; i++)
            mx = fmax(mx, fabs(p.dy[i]));
        cr_assert(mx > 0.0, "module %d: no gradient reached the hook", mods[k]);
        /* real rows of both batch rows; padding rows get no gradient */
        size_t rows[3] = {2, (size_t)b.T + 4, (size_t)b.T + 6};
        for (int j = 0; j < 3; j++) {
            p.row = rows[j];
            p.col = (size_t)(5 * j + 1) % (size_t)md->out;
            const float h = 1e-2f;
            double fd = (loss_with(&s, &v, &p, h) - loss_with(&s, &v, &p, -h)) / (2.0 * h);
            double got = p.dy[p.row * md->out + p.col];
            if (j == 2)
                cr_assert_eq(got, 0.0, "module %d: gradient %g on a padding row", mods[k], got);
            else
                cr_assert(fabs(got - fd) <= 2e-3 * mx + 1e-3 * fabs(fd),
                          "module %d row %zu col %zu: dy %.7g, central difference %.7g", mods[k], p.row,
                          p.col, got, fd);
        }
        peso_llama_set_hook(s.m, NULL);
        free(p.dy);
    }
    setup_close(&s);
}
