/* The continual-method table (method/method.h) as the trainer drives it
 * at a stage t >= 2 (method_stage.h), against what each method is
 * defined to do (DESIGN.md "Continual methods"), written here:
 *   - every registered method (the registry is iterated, so a new one is
 *     covered) in each of its variants and groupings runs load, begin,
 *     step, a training pass, prox, end and save, round-trips its
 *     checkpoint content through load (install() then puts the loaded
 *     past adapters on the model), and leaves the model plain after
 *     peso_method_stage_free + peso_method_model_plain; a method without
 *     begin inherits v_{t-1}; the nine methods of the paper are there;
 *   - the cumulative family in its four variants, from a checkpoint
 *     holding a past adapter: the past list, fresh (PEFT init) or
 *     inherited (A_t, B_t), fixed or learnable magnitudes, the model's
 *     past adapters; InfLoRA's designed A (unit rows orthogonal to the
 *     stored basis), its frozen A ranges, the subspace growing from stage
 *     to stage, and its checkpoint round trip;
 *   - peso_method_of_conf: labels and run names, and the unknown-method
 *     error.
 * The proximal terms are test_method_prox.c's. */
#include <criterion/criterion.h>

#include "method_stage.h"

static const char *const known_methods[] = {"pretrain",  "single",  "peso",   "l2",     "ortho",
                                            "output-kl", "sumlora", "sdlora", "inflora"};

static void expect_same_ckpt(const peso_ckpt *a, const peso_ckpt *b, const char *what)
{
    cr_assert_eq(a->n_tensors, b->n_tensors, "%s: %zu tensors saved, %zu after the round trip", what,
                 a->n_tensors, b->n_tensors);
    for (size_t i = 0; i < a->n_tensors; i++) {
        const peso_ckpt_tensor *x = &a->tensors[i], *y = peso_ckpt_find(b, x->path);
        cr_assert(y, "%s: %s is lost in the round trip", what, x->path);
        cr_assert_eq(x->numel, y->numel, "%s: %s", what, x->path);
        cr_expect(memcmp(x->data, y->data, x->numel * sizeof *x->data) == 0,
                  "%s: %s changed in the round trip", what, x->path);
    }
}

static int is_known(const char *name)
{
    for (size_t i = 0; i < sizeof known_methods / sizeof known_methods[0]; i++)
        if (!strcmp(name, known_methods[i]))
            return 1;
    return 0;
}

/* ---- every registered method ---- */

Test(method_table, the_nine_methods_are_registered_once)
{
    for (size_t i = 0; i < sizeof known_methods / sizeof known_methods[0]; i++) {
        const peso_method *m = peso_method_find(known_methods[i]);
        cr_assert(m, "%s is not registered", known_methods[i]);
        cr_expect_str_eq(m->name, known_methods[i]);
    }
    cr_expect_null(peso_method_find("nope"));
    for (int i = 0; i < peso_n_methods; i++) {
        cr_assert(peso_methods[i]->name && peso_methods[i]->name[0], "entry %d has no name", i);
        cr_expect_eq(peso_method_find(peso_methods[i]->name), peso_methods[i], "%s is registered twice",
                     peso_methods[i]->name);
    }
}

Test(method_table, pretrain_is_frozen_and_has_no_stage)
{
    const peso_method *m = peso_method_find("pretrain");
    cr_assert(m);
    cr_expect(m->flags & PESO_METHOD_FROZEN);
    cr_expect(!m->begin && !m->step && !m->prox && !m->load && !m->save,
              "pretrain trains nothing after stage 1");
    for (int i = 0; i < peso_n_methods; i++)
        if (peso_methods[i]->flags & PESO_METHOD_FROZEN)
            cr_expect(!peso_methods[i]->begin && !peso_methods[i]->prox, "%s is frozen but has a stage",
                      peso_methods[i]->name);
}

/* One stage t = 2 of meth: every callback, a training pass, the
 * checkpoint round trip, the model left plain. */
static void run_stage(const peso_method *meth, const char *variant, const char *group)
{
    mfx f;
    peso_err err;
    mfx_open(&f, meth, variant, group, 0.7, 61);
    peso_method_stage ms;
    stage_init(&f, &ms, meth, 2, 0, 1);
    float *params = stage_begin(&f, &ms, NULL, f.v1);
    const peso_llama *m = f.s.m;
    if (!meth->begin)
        cr_expect(memcmp(params, f.v1, m->flat.numel * sizeof *params) == 0,
                  "%s has no begin but the stage does not start from v_{t-1}", meth->name);
    tbatch b;
    stage_batch(&f, 2, 0, &b);
    peso_llama_batch v = tbatch_view(&b);
    long labels = peso_llama_count_labels(&v);
    if (meth->step)
        meth->step(&ms, labels);
    peso_llama_loss L;
    cr_assert_eq(peso_llama_zero_grads(f.s.m, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_forward_backward(f.s.m, &v, 1.0f / (float)labels, &L, &err), 0, "%s %s: %s",
                 meth->name, variant, err.msg);
    cr_expect(isfinite(L.mean), "%s %s: loss %g", meth->name, variant, L.mean);
    if (meth->prox) {
        double value = NAN;
        cr_assert_eq(meth->prox(&ms, &value, &err), 0, "%s prox: %s", meth->name, err.msg);
        cr_expect(isfinite(value) && value >= 0, "%s %s %s: proximal value %g", meth->name, variant, group,
                  value);
    }
    if (meth->end)
        cr_assert_eq(meth->end(&ms, &err), 0, "%s end: %s", meth->name, err.msg);
    if (meth->save) {
        peso_ckpt ck, again;
        peso_ckpt_init(&ck);
        peso_ckpt_init(&again);
        cr_assert_eq(meth->save(&ms, &ck, &err), 0, "%s save: %s", meth->name, err.msg);
        if (meth->load) {
            peso_method_stage next;
            stage_init(&f, &next, meth, 3, 0, 1);
            cr_assert_eq(meth->load(&next, &ck, &err), 0, "%s load: %s", meth->name, err.msg);
            cr_assert_eq(meth->save(&next, &again, &err), 0, "%s save: %s", meth->name, err.msg);
            expect_same_ckpt(&ck, &again, meth->name);
            /* evaluating a checkpoint: load, then install on the model */
            if (meth->install) {
                cr_assert_eq(meth->install(&next, &err), 0, "%s install: %s", meth->name, err.msg);
                cr_expect_eq(f.s.m->past.n, next.n_past, "%s %s: %d past adapters loaded, %d installed",
                             meth->name, variant, next.n_past, f.s.m->past.n);
            }
            peso_method_stage_free(&next);
        }
        peso_ckpt_free(&ck);
        peso_ckpt_free(&again);
    }
    stage_end(&f, &ms);
    cr_expect(f.s.m->past.n == 0 && !f.s.m->hook.forward && !f.s.m->hook.backward && !f.s.m->freeze_a,
              "%s: the model is not plain after the stage", meth->name);
    free(params);
    mfx_close(&f);
}

Test(method_table, every_method_runs_a_stage)
{
    for (int i = 0; i < peso_n_methods; i++) {
        const peso_method *m = peso_methods[i];
        if (m->flags & PESO_METHOD_FROZEN)
            continue;
        if (!is_known(m->name))
            cr_log_warn("method %s has only the generic checks here", m->name);
        int nv = m->flags & PESO_METHOD_VARIANT ? 4 : 1, ng = m->flags & PESO_METHOD_GROUP ? 3 : 1;
        for (int v = 0; v < nv; v++)
            for (int g = 0; g < ng; g++)
                run_stage(m, variants[v], groups[g]);
    }
}

/* ---- the cumulative family ---- */

static int module_a_equal(const peso_lora_module *md, int r, const float *x, const float *y)
{
    return memcmp(x + md->a_off, y + md->a_off, (size_t)r * (size_t)md->in * sizeof *x) == 0;
}

static int module_b_equal(const peso_lora_module *md, int r, const float *x, const float *y)
{
    return memcmp(x + md->b_off, y + md->b_off, (size_t)r * (size_t)md->out * sizeof *x) == 0;
}

/* A checkpoint of stage t-1 = 2 holding one past adapter (past/0). */
static float *past_ckpt(const mfx *f, peso_ckpt *ck, uint64_t seed)
{
    peso_err err;
    float *p0 = random_flat(f->s.m, seed);
    peso_flat lf = peso_method_lora_flat(f->s.m);
    peso_ckpt_init(ck);
    cr_assert_eq(peso_ckpt_add_flat(ck, "past/0", &lf, p0, &err), 0, "%s", err.msg);
    return p0;
}

/* Stage 3 of a cumulative method from a checkpoint with one past adapter. */
static void expect_cumulative(const char *name, const char *variant)
{
    mfx f;
    const peso_method *meth = peso_method_find(name);
    cr_assert(meth);
    mfx_open(&f, meth, variant, "module", 2.0, 101);
    const peso_llama *m = f.s.m;
    const peso_lora *l = &m->lora;
    int r = l->conf.rank, all = !strncmp(variant, "all", 3), inherit = strstr(variant, "+inherit") != NULL;
    int sd = !strcmp(name, "sdlora"), inf = !strcmp(name, "inflora");
    size_t span = m->lora_span, n = m->flat.numel;
    peso_ckpt ck;
    float *p0 = past_ckpt(&f, &ck, 102);
    peso_method_stage ms;
    stage_init(&f, &ms, meth, 3, 0, 1);
    float *params = stage_begin(&f, &ms, &ck, f.v1);

    /* the past list: [loaded, v_{t-1}] or [v_{t-1}] */
    cr_assert_eq(ms.n_past, all ? 2 : 1, "%s %s: %d past adapters", name, variant, ms.n_past);
    if (all)
        cr_expect(memcmp(ms.past[0], p0, span * sizeof *p0) == 0, "%s %s: the loaded adapter changed", name,
                  variant);
    cr_expect(memcmp(ms.past[ms.n_past - 1], f.v1, span * sizeof *p0) == 0,
              "%s %s: the newest past adapter is not v_{t-1}", name, variant);
    cr_expect_eq(m->past.n, ms.n_past, "%s %s: the model has %d past adapters, the stage %d", name, variant,
                 m->past.n, ms.n_past);
    cr_expect_eq(m->past.learnable, sd, "%s %s: learnable %d", name, variant, m->past.learnable);

    /* magnitudes: fixed 1.0, or learnable with the new ones at 1.0 */
    if (sd) {
        cr_expect_null(ms.alpha, "sdlora's magnitudes are fixed");
        for (int i = 0; i < N_MAG; i++) {
            float want = all && i == 0 ? f.v1[m->mag_off] : 1.0f;
            cr_expect_eq(params[m->mag_off + (size_t)i], want, "sdlora %s: magnitude %d is %g, expected %g",
                         variant, i, (double)params[m->mag_off + (size_t)i], (double)want);
        }
    } else {
        cr_assert(ms.alpha, "%s: no fixed magnitudes", name);
        for (int i = 0; i < ms.n_past; i++)
            cr_expect_eq(ms.alpha[i], 1.0f, "%s %s: alpha %d = %g", name, variant, i, (double)ms.alpha[i]);
    }

    /* (A_t, B_t): inherited or fresh; InfLoRA's A is designed either way */
    for (int mi = 0; mi < l->n_modules; mi++) {
        const peso_lora_module *md = &l->mods[mi];
        if (inherit) {
            cr_expect(module_b_equal(md, r, params, f.v1), "%s %s: module %d's B is not inherited", name,
                      variant, mi);
            if (!inf)
                cr_expect(module_a_equal(md, r, params, f.v1), "%s %s: module %d's A is not inherited", name,
                          variant, mi);
        } else {
            for (size_t i = 0; i < (size_t)r * (size_t)md->out; i++)
                cr_assert_eq(params[md->b_off + i], 0.0f, "%s %s: module %d's fresh B is not 0", name,
                             variant, mi);
            cr_expect(!module_a_equal(md, r, params, f.v1), "%s %s: module %d's fresh A is v_{t-1}'s", name,
                      variant, mi);
            double bound = 1.0 / sqrt((double)md->in);
            for (size_t i = 0; !inf && i < (size_t)r * (size_t)md->in; i++)
                cr_assert(fabsf(params[md->a_off + i]) <= bound,
                          "%s %s: module %d's fresh A outside PEFT's "
                          "U(-1/sqrt(in), 1/sqrt(in))",
                          name, variant, mi);
        }
    }
    /* the new rows are the stage's as they were */
    for (size_t i = span; i < n; i++)
        if (!m->n_magnitudes || i < m->mag_off)
            cr_assert_eq(params[i], f.v1[i], "%s %s: entry %zu beyond the adapter changed", name, variant, i);

    stage_end(&f, &ms);
    cr_expect_eq(f.s.m->past.n, 0);
    peso_ckpt_free(&ck);
    free(p0);
    free(params);
    mfx_close(&f);
}

Test(method_table, sumlora_variants)
{
    for (int v = 0; v < 4; v++)
        expect_cumulative("sumlora", variants[v]);
}

Test(method_table, sdlora_variants)
{
    for (int v = 0; v < 4; v++)
        expect_cumulative("sdlora", variants[v]);
}

Test(method_table, inflora_variants)
{
    for (int v = 0; v < 4; v++)
        expect_cumulative("inflora", variants[v]);
}

/* ---- InfLoRA's subspace ---- */

/* Every designed A row of params unit-norm and orthogonal to the basis
 * the method saves (inflora/k, inflora/basis/<i>); returns the basis
 * rows summed over the modules. */
static int expect_designed_a(const peso_method_stage *ms, const float *params, const char *what)
{
    peso_err err;
    peso_ckpt ck;
    peso_ckpt_init(&ck);
    cr_assert_eq(ms->meth->save(ms, &ck, &err), 0, "%s", err.msg);
    const peso_lora *l = &ms->m->lora;
    const peso_ckpt_tensor *k = peso_ckpt_find(&ck, "inflora/k");
    cr_assert(k, "%s: no inflora/k saved", what);
    cr_assert_eq(k->numel, (size_t)l->n_modules);
    int total = 0;
    for (int mi = 0; mi < l->n_modules; mi++) {
        const peso_lora_module *md = &l->mods[mi];
        int rows = (int)k->data[mi], in = md->in;
        total += rows;
        cr_expect(rows >= 1 && rows <= in - l->conf.rank, "%s: module %d has %d basis rows", what, mi, rows);
        char path[64];
        snprintf(path, sizeof path, "inflora/basis/%d", mi);
        const peso_ckpt_tensor *b = peso_ckpt_find(&ck, path);
        cr_assert(b && b->numel == (size_t)rows * (size_t)in, "%s: %s missing or not [%d, %d]", what, path,
                  rows, in);
        for (int a = 0; a < l->conf.rank; a++) {
            const float *row = params + md->a_off + (size_t)a * (size_t)in;
            double nn = 0;
            for (int c = 0; c < in; c++)
                nn += (double)row[c] * row[c];
            cr_expect(fabs(sqrt(nn) - 1.0) < 1e-5, "%s: module %d, A row %d has norm %.9g", what, mi, a,
                      sqrt(nn));
            for (int j = 0; j < rows; j++) {
                double d = 0;
                for (int c = 0; c < in; c++)
                    d += (double)row[c] * b->data[(size_t)j * (size_t)in + (size_t)c];
                cr_expect(fabs(d) < 1e-5, "%s: module %d, A row %d . basis row %d = %.3g", what, mi, a, j, d);
            }
        }
    }
    peso_ckpt_free(&ck);
    return total;
}

static void expect_a_frozen(const mfx *f, const char *what)
{
    const peso_lora *l = &f->s.m->lora;
    for (int mi = 0; mi < l->n_modules; mi++) {
        int found = 0;
        for (int i = 0; i < f->n_fr; i++)
            found |= f->fr_off[i] == l->mods[mi].a_off &&
                     f->fr_n[i] == (size_t)l->conf.rank * (size_t)l->mods[mi].in;
        cr_expect(found, "%s: module %d's A was not passed to freeze", what, mi);
    }
    cr_expect_eq(f->s.m->freeze_a, 1, "%s: the model trains A", what);
}

/* Stages 2 and 3 of inflora, the second from the first's checkpoint. */
static void expect_inflora_chain(const char *variant)
{
    mfx f;
    peso_err err;
    const peso_method *meth = peso_method_find("inflora");
    mfx_open(&f, meth, variant, "module", 2.0, 111);
    int all = !strncmp(variant, "all", 3);

    /* stage 2: the subspace of D1 under v_1, then A_2 from D2 */
    peso_method_stage s2;
    stage_init(&f, &s2, meth, 2, 0, 1);
    float *p2 = stage_begin(&f, &s2, NULL, f.v1);
    cr_expect(f.n_calls == 2 && f.calls[0] == 1 && f.calls[1] == 2,
              "stage 2 read the batches of %d stages (%d, %d)", f.n_calls, f.calls[0], f.calls[1]);
    expect_a_frozen(&f, "stage 2");
    int k2 = expect_designed_a(&s2, p2, "stage 2");
    cr_assert_eq(meth->end(&s2, &err), 0, "%s", err.msg);
    peso_ckpt ck2;
    peso_ckpt_init(&ck2);
    cr_assert_eq(meth->save(&s2, &ck2, &err), 0, "%s", err.msg);
    float **past2 = s2.past;
    int n_past2 = s2.n_past;
    s2.past = NULL;
    s2.n_past = 0;
    stage_end(&f, &s2);

    /* stage 3 from stage 2's checkpoint: the basis is loaded, D1 is not
     * read again; v_2 = stage 2's start with its B trained */
    float *v2 = copy_flat(f.s.m, p2);
    const peso_lora *l = &f.s.m->lora;
    for (int mi = 0; mi < l->n_modules; mi++)
        for (size_t i = 0; i < (size_t)l->conf.rank * (size_t)l->mods[mi].out; i++)
            v2[l->mods[mi].b_off + i] += 0.01f * (float)((i % 7) + 1);
    f.n_calls = 0;
    f.n_fr = 0;
    peso_method_stage s3;
    stage_init(&f, &s3, meth, 3, 0, 1);
    float *p3 = stage_begin(&f, &s3, &ck2, v2);
    cr_expect(f.n_calls == 1 && f.calls[0] == 3, "stage 3 read the batches of %d stages (first %d)",
              f.n_calls, f.calls[0]);
    cr_assert_eq(s3.n_past, all ? 2 : 1, "stage 3: %d past adapters", s3.n_past);
    if (all)
        cr_expect(memcmp(s3.past[0], past2[0], f.s.m->lora_span * sizeof(float)) == 0,
                  "stage 3: the first past adapter is not stage 2's");
    cr_expect(memcmp(s3.past[s3.n_past - 1], v2, f.s.m->lora_span * sizeof(float)) == 0,
              "stage 3: the newest past adapter is not v_2");
    expect_a_frozen(&f, "stage 3");
    int k3 = expect_designed_a(&s3, p3, "stage 3");
    cr_expect(k3 > k2, "stage 2's inputs did not join the subspace (%d rows, then %d)", k2, k3);

    /* save, then load into a fresh stage: the same content */
    cr_assert_eq(meth->end(&s3, &err), 0, "%s", err.msg);
    peso_ckpt ck3, again;
    peso_ckpt_init(&ck3);
    peso_ckpt_init(&again);
    cr_assert_eq(meth->save(&s3, &ck3, &err), 0, "%s", err.msg);
    peso_method_stage s4;
    stage_init(&f, &s4, meth, 4, 0, 1);
    cr_assert_eq(meth->load(&s4, &ck3, &err), 0, "%s", err.msg);
    cr_assert_eq(s4.n_past, s3.n_past);
    for (int i = 0; i < s4.n_past; i++)
        cr_expect(memcmp(s4.past[i], s3.past[i], f.s.m->lora_span * sizeof(float)) == 0,
                  "past adapter %d changed in the round trip", i);
    cr_assert_eq(meth->save(&s4, &again, &err), 0, "%s", err.msg);
    expect_same_ckpt(&ck3, &again, "inflora");

    peso_method_stage_free(&s4);
    stage_end(&f, &s3);
    for (int i = 0; i < n_past2; i++)
        free(past2[i]);
    free(past2);
    peso_ckpt_free(&ck2);
    peso_ckpt_free(&ck3);
    peso_ckpt_free(&again);
    free(p2);
    free(p3);
    free(v2);
    mfx_close(&f);
}

Test(method_table, inflora_subspace_all)
{
    expect_inflora_chain("all");
}

Test(method_table, inflora_subspace_latest_inherit)
{
    expect_inflora_chain("latest+inherit");
}

/* ---- names ---- */

/* method, variant, group, lambda -> label, run name */
static const struct {
    const char *name, *variant, *group;
    double lambda;
    const char *label, *run;
} names[] = {
    {"peso", "all", "module", 2, "peso", "peso-lambda2"},
    {"peso", "all", "module", 0.5, "peso", "peso-lambda0.5"},
    {"peso", "all", "rank", 2, "peso group=rank", "peso-group-rank-lambda2"},
    {"peso", "latest", "matrix", 1, "peso group=matrix", "peso-group-matrix-lambda1"},
    {"l2", "all", "rank", 2, "l2", "l2-lambda2"},
    {"ortho", "all", "module", 0.1, "ortho", "ortho-lambda0.1"},
    {"output-kl", "all", "module", 2, "output-kl", "output-kl-lambda2"},
    {"single", "latest", "rank", 2, "single", "single"},
    {"pretrain", "all", "module", 2, "pretrain", "pretrain"},
    {"sumlora", "all+inherit", "module", 2, "sumlora all+inherit", "sumlora-all+inherit"},
    {"sumlora", "all", "rank", 2, "sumlora all", "sumlora-all"},
    {"sdlora", "latest", "module", 2, "sdlora latest", "sdlora-latest"},
    {"inflora", "latest+inherit", "module", 2, "inflora latest+inherit", "inflora-latest+inherit"},
};

Test(method_table, labels_and_run_names)
{
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        peso_conf c;
        peso_conf_defaults(&c);
        snprintf(c.method.name, sizeof c.method.name, "%s", names[i].name);
        snprintf(c.method.variant, sizeof c.method.variant, "%s", names[i].variant);
        snprintf(c.method.group, sizeof c.method.group, "%s", names[i].group);
        c.method.lambda = names[i].lambda;
        const peso_method *m = NULL;
        char label[128], run[128];
        peso_err err;
        cr_assert_eq(peso_method_of_conf(&c, &m, label, sizeof label, run, sizeof run, &err), 0, "%s",
                     err.msg);
        cr_expect_eq(m, peso_method_find(names[i].name));
        cr_expect_str_eq(label, names[i].label, "%s %s %s %g: label", names[i].name, names[i].variant,
                         names[i].group, names[i].lambda);
        cr_expect_str_eq(run, names[i].run, "%s %s %s %g: run name", names[i].name, names[i].variant,
                         names[i].group, names[i].lambda);
    }
}

Test(method_table, unknown_method_names_the_key_and_the_methods)
{
    peso_conf c;
    peso_conf_defaults(&c);
    snprintf(c.method.name, sizeof c.method.name, "%s", "ewc");
    const peso_method *m = NULL;
    char label[128], run[128];
    peso_err err;
    cr_assert_eq(peso_method_of_conf(&c, &m, label, sizeof label, run, sizeof run, &err), -1);
    cr_expect(strstr(err.msg, "method.name"), "%s", err.msg);
    cr_expect(strstr(err.msg, "ewc"), "%s", err.msg);
    for (int i = 0; i < peso_n_methods; i++)
        cr_expect(strstr(err.msg, peso_methods[i]->name), "the message does not list %s: %s",
                  peso_methods[i]->name, err.msg);
}
