/* Checkpoint files: every field comes back bit for bit, a checkpoint of
 * another config is refused naming each difference, damaged and
 * temporary files are passed over when looking for the newest, and
 * h5dump sees the documented layout. */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/ckpt.h"
#include "common/atomic.h"
#include "model/llama.h"
#include "skip.h"

/* A small model: 2 layers, hidden 8, 2 heads of 4, 1 kv head. */
static void small_model(peso_llama_config *mc, peso_lora_conf *lc)
{
    peso_llama_config_defaults(mc);
    mc->vocab_size = 45;
    mc->hidden_size = 8;
    mc->intermediate_size = 16;
    mc->num_hidden_layers = 2;
    mc->num_attention_heads = 2;
    mc->num_key_value_heads = 1;
    mc->head_dim = 4;
    lc->rank = 2;
    lc->alpha = 3.5;
    lc->targets = (1u << PESO_LORA_Q) | (1u << PESO_LORA_V) | (1u << PESO_LORA_DOWN);
}

/* The trainer's flat: LoRA views plus 5 new embedding and head rows. */
static void small_flat(peso_flat *flat, peso_lora *l, peso_llama_config *mc, peso_lora_conf *lc)
{
    peso_err err;
    small_model(mc, lc);
    peso_flat_init(flat);
    cr_assert_eq(peso_lora_layout(l, lc, mc, flat, &err), 0, "%s", err.msg);
    int rows[2] = {5, 8};
    cr_assert_eq(peso_flat_add(flat, PESO_LLAMA_EMBED_NEW, 2, rows, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_flat_add(flat, PESO_LLAMA_HEAD_NEW, 2, rows, NULL, &err), 0, "%s", err.msg);
}

/* Values whose bits a lossy path would change: -0, a subnormal, a NaN
 * payload, infinities, and otherwise draws from the project RNG. */
static void fill(float *buf, size_t n, uint64_t seed)
{
    peso_rng r;
    peso_rng_seed(&r, seed, 7);
    for (size_t i = 0; i < n; i++)
        buf[i] = (float)peso_rng_normal(&r);
    const uint32_t special[] = {0x80000000u, 0x00000001u, 0x7fc12345u, 0x7f800000u, 0xff800000u};
    for (size_t i = 0; i < 5 && i < n; i++)
        memcpy(&buf[i], &special[i], sizeof(float));
}

static char *tmp_dir(void)
{
    char *d = strdup("/tmp/peso-ckpt-XXXXXX");
    cr_assert_not_null(mkdtemp(d));
    return d;
}

static void rm_dir(char *d)
{
    char cmd[PESO_PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_assert_eq(system(cmd), 0);
    free(d);
}

typedef struct fixture {
    peso_llama_config mc;
    peso_lora_conf lc;
    peso_lora lora;
    peso_flat flat;
    float *params, *past, *mag, *m, *v;
    peso_ckpt ck;
} fixture;

/* A checkpoint holding every kind of field. */
static void make(fixture *fx, int stage, int64_t step, peso_ckpt_kind kind)
{
    peso_err err;
    small_flat(&fx->flat, &fx->lora, &fx->mc, &fx->lc);
    size_t n = fx->flat.numel;
    fx->params = calloc(n, sizeof(float));
    fx->past = calloc(n, sizeof(float));
    fx->m = calloc(n, sizeof(float));
    fx->v = calloc(n, sizeof(float));
    fx->mag = calloc((size_t)fx->lora.n_modules, sizeof(float));
    for (size_t i = 0; i < fx->flat.n_views; i++) {
        const peso_view *vw = &fx->flat.views[i];
        fill(fx->params + vw->offset, vw->numel, 100 + i);
        fill(fx->past + vw->offset, vw->numel, 200 + i);
    }
    fill(fx->m, n, 3);
    fill(fx->v, n, 4);
    fill(fx->mag, (size_t)fx->lora.n_modules, 5);
    peso_ckpt_init(&fx->ck);
    fx->ck.kind = kind;
    fx->ck.stage = stage;
    fx->ck.step = step;
    fx->ck.epoch = 3;
    fx->ck.global_step = 123456789012345LL;
    peso_ckpt_set_text(&fx->ck, "peso", "ab12cd34ef56", "seed: 42\nlora:\n  rank: 2\n");
    peso_ckpt_shape_of(&fx->ck.shape, &fx->mc, &fx->lc);
    cr_assert_eq(peso_ckpt_add_flat(&fx->ck, "", &fx->flat, fx->params, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_ckpt_add_flat(&fx->ck, "past/0", &fx->flat, fx->past, &err), 0, "%s", err.msg);
    int64_t ms = fx->lora.n_modules;
    cr_assert_eq(peso_ckpt_add(&fx->ck, "past/0/magnitude", 1, &ms, fx->mag, &err), 0, "%s", err.msg);
    peso_ckpt_set_optim(&fx->ck, fx->m, fx->v, n, 17);
    peso_rng a, b;
    peso_rng_seed(&a, 42, 1);
    peso_rng_seed(&b, 42, 2);
    a.s[3] = UINT64_MAX; /* the top bit must survive */
    cr_assert_eq(peso_ckpt_add_rng(&fx->ck, "shuffle", &a, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_ckpt_add_rng(&fx->ck, "init", &b, &err), 0, "%s", err.msg);
}

static void unmake(fixture *fx)
{
    peso_ckpt_free(&fx->ck);
    peso_lora_free(&fx->lora);
    peso_flat_free(&fx->flat);
    free(fx->params);
    free(fx->past);
    free(fx->mag);
    free(fx->m);
    free(fx->v);
}

static void write_ckpt(const char *dir, const char *name, int stage, int64_t step, peso_ckpt_kind kind)
{
    fixture fx;
    peso_err err;
    char p[PESO_PATH_MAX];
    make(&fx, stage, step, kind);
    snprintf(p, sizeof p, "%s/%s", dir, name);
    cr_assert_eq(peso_ckpt_write(p, &fx.ck, &err), 0, "%s", err.msg);
    unmake(&fx);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

Test(ckpt, round_trip_every_field_bit_identical)
{
    fixture fx;
    peso_err err;
    make(&fx, 4, 250, PESO_CKPT_PARTIAL);
    char *dir = tmp_dir(), p[PESO_PATH_MAX];
    snprintf(p, sizeof p, "%s/stage-4-step-250.h5", dir);
    cr_assert_eq(peso_ckpt_write(p, &fx.ck, &err), 0, "%s", err.msg);

    peso_ckpt in;
    cr_assert_eq(peso_ckpt_read(p, &in, &err), 0, "%s", err.msg);
    cr_assert_str_eq(in.path, p);
    cr_assert_eq(in.kind, PESO_CKPT_PARTIAL);
    cr_assert_eq(in.stage, 4);
    cr_assert_eq(in.step, 250);
    cr_assert_eq(in.epoch, 3);
    cr_assert_eq(in.global_step, 123456789012345LL);
    cr_assert_str_eq(in.method, "peso");
    cr_assert_str_eq(in.fingerprint, "ab12cd34ef56");
    cr_assert_str_eq(in.config, "seed: 42\nlora:\n  rank: 2\n");
    const peso_ckpt_shape *s = &in.shape;
    cr_assert(s->hidden == 8 && s->layers == 2 && s->heads == 2 && s->kv_heads == 1 && s->head_dim == 4);
    cr_assert(s->vocab == 45 && s->lora_rank == 2 && s->lora_alpha == 3.5);
    cr_assert_eq(s->lora_targets, 0x1u | 0x4u | 0x40u); /* q, v, down */

    /* 2 layers x 3 modules x (A, B) + 2 new-row views, twice, plus the
     * magnitudes. */
    cr_assert_eq(in.n_tensors, 2 * (2 * 3 * 2 + 2) + 1);
    cr_assert_eq(in.n_tensors, fx.ck.n_tensors);
    for (size_t i = 0; i < in.n_tensors; i++) {
        const peso_ckpt_tensor *a = &fx.ck.tensors[i], *b = &in.tensors[i];
        cr_assert_str_eq(b->path, a->path, "tensor %zu", i);
        cr_assert_eq(b->ndim, a->ndim);
        cr_assert_eq(memcmp(b->shape, a->shape, (size_t)a->ndim * sizeof a->shape[0]), 0);
        cr_assert_eq(b->numel, a->numel);
        cr_assert_eq(memcmp(b->data, a->data, a->numel * sizeof(float)), 0, "%s", a->path);
    }
    /* Names and shapes as documented: down_proj B is [out = hidden, r]. */
    const peso_ckpt_tensor *t = peso_ckpt_find(&in, "adapter/model.layers.1.mlp.down_proj.lora_B.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->ndim, 2);
    cr_assert_eq(t->shape[0], 8);
    cr_assert_eq(t->shape[1], 2);
    t = peso_ckpt_find(&in, "adapter/model.layers.0.self_attn.v_proj.lora_A.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->shape[0], 2);
    cr_assert_eq(t->shape[1], 8);
    cr_assert_not_null(peso_ckpt_find(&in, "new_rows/embed"));
    cr_assert_not_null(peso_ckpt_find(&in, "past/0/new_rows/head"));
    cr_assert_not_null(peso_ckpt_find(&in, "past/0/adapter/model.layers.0.self_attn.q_proj.lora_A.weight"));
    cr_assert_null(peso_ckpt_find(&in, "adapter/model.layers.0.self_attn.k_proj.lora_A.weight"));

    /* Back into flat buffers: equal to the originals, padding included. */
    float *got = calloc(fx.flat.numel, sizeof(float));
    cr_assert_eq(peso_ckpt_get_flat(&in, "", &fx.flat, got, &err), 0, "%s", err.msg);
    cr_assert_eq(memcmp(got, fx.params, fx.flat.numel * sizeof(float)), 0);
    memset(got, 0, fx.flat.numel * sizeof(float));
    cr_assert_eq(peso_ckpt_get_flat(&in, "past/0", &fx.flat, got, &err), 0, "%s", err.msg);
    cr_assert_eq(memcmp(got, fx.past, fx.flat.numel * sizeof(float)), 0);
    free(got);

    cr_assert_eq(in.optim_n, fx.flat.numel);
    cr_assert_eq(in.optim_step, 17);
    cr_assert_eq(memcmp(in.optim_m, fx.m, in.optim_n * sizeof(float)), 0);
    cr_assert_eq(memcmp(in.optim_v, fx.v, in.optim_n * sizeof(float)), 0);

    cr_assert_eq(in.n_rngs, 2);
    for (size_t i = 0; i < fx.ck.n_rngs; i++) {
        const peso_rng *r = peso_ckpt_find_rng(&in, fx.ck.rngs[i].name);
        cr_assert_not_null(r, "%s", fx.ck.rngs[i].name);
        cr_assert_eq(memcmp(r->s, fx.ck.rngs[i].state.s, sizeof r->s), 0);
    }
    cr_assert_eq(peso_ckpt_find_rng(&in, "shuffle")->s[3], UINT64_MAX);
    /* Only the final name exists: the temporary one was renamed. */
    char ls[PESO_PATH_MAX + 32];
    snprintf(ls, sizeof ls, "ls '%s' | wc -l", dir);
    FILE *pipe = popen(ls, "r");
    int files = 0;
    cr_assert_eq(fscanf(pipe, "%d", &files), 1);
    pclose(pipe);
    cr_assert_eq(files, 1);
    peso_ckpt_free(&in);
    unmake(&fx);
    rm_dir(dir);
}

Test(ckpt, get_flat_refuses_missing_and_reshaped_tensors)
{
    fixture fx;
    peso_err err;
    make(&fx, 0, 0, PESO_CKPT_FINAL);
    float *buf = calloc(fx.flat.numel, sizeof(float));
    cr_assert_eq(peso_ckpt_get_flat(&fx.ck, "past/1", &fx.flat, buf, &err), -1);
    cr_assert(strstr(err.msg, "/past/1/adapter/model.layers.0.self_attn.q_proj.lora_A.weight is missing"),
              "%s", err.msg);
    /* A model with rank 3: same names, other shapes. */
    peso_flat f3;
    peso_lora l3;
    peso_lora_conf lc3 = fx.lc;
    lc3.rank = 3;
    peso_flat_init(&f3);
    cr_assert_eq(peso_lora_layout(&l3, &lc3, &fx.mc, &f3, &err), 0, "%s", err.msg);
    float *b3 = calloc(f3.numel, sizeof(float));
    cr_assert_eq(peso_ckpt_get_flat(&fx.ck, "", &f3, b3, &err), -1);
    cr_assert(strstr(err.msg, "has shape 2x8, the model's view "
                              "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight is 3x8"),
              "%s", err.msg);
    free(b3);
    free(buf);
    peso_lora_free(&l3);
    peso_flat_free(&f3);
    unmake(&fx);
}

/* SD-LoRA's learnable magnitudes are a flat view of their own: stored as
 * <group>/magnitude (/magnitude for the current adapter) and back. */
Test(ckpt, magnitudes_view_round_trip)
{
    peso_flat flat;
    peso_lora lora;
    peso_llama_config mc;
    peso_lora_conf lc;
    peso_err err;
    small_flat(&flat, &lora, &mc, &lc);
    int three = 3;
    size_t off;
    cr_assert_eq(peso_flat_add(&flat, PESO_LLAMA_MAGNITUDES, 1, &three, &off, &err), 0, "%s", err.msg);
    float *buf = calloc(flat.numel, sizeof(float)), *got = calloc(flat.numel, sizeof(float));
    for (size_t i = 0; i < flat.n_views; i++)
        fill(buf + flat.views[i].offset, flat.views[i].numel, 300 + i);
    const float mags[3] = {1.0f, 0.5f, -2.25f};
    memcpy(buf + off, mags, sizeof mags);
    peso_ckpt ck, in;
    peso_ckpt_init(&ck);
    cr_assert_eq(peso_ckpt_add_flat(&ck, "", &flat, buf, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_ckpt_add_flat(&ck, "past/1", &flat, buf, &err), 0, "%s", err.msg);
    const char *paths[2] = {"magnitude", "past/1/magnitude"};
    for (int i = 0; i < 2; i++) {
        const peso_ckpt_tensor *t = peso_ckpt_find(&ck, paths[i]);
        cr_assert_not_null(t, "%s", paths[i]);
        cr_assert_eq(t->ndim, 1);
        cr_assert_eq(t->shape[0], 3);
        cr_assert_eq(memcmp(t->data, mags, sizeof mags), 0);
    }
    char *dir = tmp_dir(), p[PESO_PATH_MAX];
    snprintf(p, sizeof p, "%s/stage-2.h5", dir);
    cr_assert_eq(peso_ckpt_write(p, &ck, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_ckpt_read(p, &in, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_ckpt_get_flat(&in, "past/1", &flat, got, &err), 0, "%s", err.msg);
    cr_assert_eq(memcmp(got + off, mags, sizeof mags), 0);
    cr_assert_eq(peso_ckpt_get_flat(&in, "", &flat, got, &err), 0, "%s", err.msg);
    cr_assert_eq(memcmp(got, buf, flat.numel * sizeof(float)), 0);
    peso_ckpt_free(&in);
    peso_ckpt_free(&ck);
    rm_dir(dir);
    free(buf);
    free(got);
    peso_lora_free(&lora);
    peso_flat_free(&flat);
}

Test(ckpt, add_refuses_bad_names)
{
    peso_ckpt ck;
    peso_err err;
    float x[2] = {1, 2};
    int64_t two = 2, zero = 0;
    peso_ckpt_init(&ck);
    cr_assert_eq(peso_ckpt_add(&ck, "past/0/magnitude", 1, &two, x, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_ckpt_add(&ck, "past/0/magnitude", 1, &two, x, &err), -1);
    cr_assert(strstr(err.msg, "added twice"), "%s", err.msg);
    cr_assert_eq(peso_ckpt_add(&ck, "past/0/magnitude/x", 1, &two, x, &err), -1);
    cr_assert(strstr(err.msg, "clashes"), "%s", err.msg);
    cr_assert_eq(peso_ckpt_add(&ck, "past//a", 1, &two, x, &err), -1);
    cr_assert_eq(peso_ckpt_add(&ck, "a b", 1, &two, x, &err), -1);
    cr_assert_eq(peso_ckpt_add(&ck, "../a", 1, &two, x, &err), -1);
    cr_assert_eq(peso_ckpt_add(&ck, "optim/m", 1, &two, x, &err), -1);
    cr_assert(strstr(err.msg, "taken by the checkpoint layout"), "%s", err.msg);
    cr_assert_eq(peso_ckpt_add(&ck, "model", 1, &two, x, &err), -1);
    cr_assert_eq(peso_ckpt_add(&ck, "rngs/a", 1, &two, x, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_ckpt_add(&ck, "a", 1, &zero, x, &err), -1);
    cr_assert(strstr(err.msg, "dimension 0 is 0"), "%s", err.msg);
    peso_rng r = {{1, 2, 3, 4}};
    cr_assert_eq(peso_ckpt_add_rng(&ck, "a/b", &r, &err), -1);
    cr_assert_eq(ck.n_tensors, 2);
    peso_ckpt_free(&ck);
}

/* The expectation that matches make()'s checkpoint. */
static peso_ckpt_expect expect_of(const fixture *fx)
{
    peso_ckpt_expect e = {"peso", "ab12cd34ef56", fx->ck.shape};
    return e;
}

Test(ckpt, check_accepts_matching_config)
{
    fixture fx;
    peso_err err;
    make(&fx, 1, 0, PESO_CKPT_FINAL);
    peso_ckpt_expect e = expect_of(&fx);
    cr_assert_eq(peso_ckpt_check(&fx.ck, &e, &err), 0, "%s", err.msg);
    unmake(&fx);
}

Test(ckpt, check_names_each_differing_field)
{
    fixture fx;
    make(&fx, 1, 0, PESO_CKPT_FINAL);
    struct {
        int field;
        const char *msg;
    } cases[] = {
        {0, "model hidden 8 vs 128"},
        {1, "model layers 2 vs 16"},
        {2, "model heads 2 vs 32"},
        {3, "model kv_heads 1 vs 8"},
        {4, "model head_dim 4 vs 64"},
        {5, "model vocab 45 vs 46"},
        {6, "lora rank 2 vs 8"},
        {7, "lora alpha 3.5 vs 16"},
        {8,
         "lora targets q_proj,v_proj,down_proj vs q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"},
        {9, "method peso vs single"},
        {10, "data fingerprint ab12cd34ef56 vs cd34ab12ef56"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        peso_ckpt_expect e = expect_of(&fx);
        peso_err err;
        switch (cases[i].field) {
        case 0: e.shape.hidden = 128; break;
        case 1: e.shape.layers = 16; break;
        case 2: e.shape.heads = 32; break;
        case 3: e.shape.kv_heads = 8; break;
        case 4: e.shape.head_dim = 64; break;
        case 5: e.shape.vocab = 46; break;
        case 6: e.shape.lora_rank = 8; break;
        case 7: e.shape.lora_alpha = 16; break;
        case 8: e.shape.lora_targets = PESO_LORA_ALL; break;
        case 9: e.method = "single"; break;
        default: e.fingerprint = "cd34ab12ef56"; break;
        }
        cr_assert_eq(peso_ckpt_check(&fx.ck, &e, &err), -1, "case %s", cases[i].msg);
        cr_assert(strstr(err.msg, cases[i].msg), "want \"%s\" in: %s", cases[i].msg, err.msg);
        /* Only the one field is named. */
        cr_assert_null(strchr(err.msg, ';'), "%s", err.msg);
    }
    unmake(&fx);
}

Test(ckpt, check_lists_all_differences_and_names_file)
{
    fixture fx;
    peso_err err;
    make(&fx, 1, 0, PESO_CKPT_FINAL);
    char *dir = tmp_dir(), p[PESO_PATH_MAX];
    snprintf(p, sizeof p, "%s/stage-1.h5", dir);
    cr_assert_eq(peso_ckpt_write(p, &fx.ck, &err), 0, "%s", err.msg);
    peso_ckpt in;
    cr_assert_eq(peso_ckpt_read(p, &in, &err), 0, "%s", err.msg);
    peso_ckpt_expect e = expect_of(&fx);
    e.shape.hidden = 64;
    e.method = "single";
    e.fingerprint = "ff";
    cr_assert_eq(peso_ckpt_check(&in, &e, &err), -1);
    cr_assert(strstr(err.msg, p), "%s", err.msg);
    cr_assert(
        strstr(err.msg, "model hidden 8 vs 64; method peso vs single; data fingerprint ab12cd34ef56 vs ff"),
        "%s", err.msg);
    peso_ckpt_free(&in);
    unmake(&fx);
    rm_dir(dir);
}

/* Edits a written checkpoint with HDF5 directly to break one object; the
 * read must fail with "<file>: <object>: <what>". */
static void expect_damage(void (*edit)(hid_t f), const char *obj, const char *what)
{
    char *dir = tmp_dir(), p[PESO_PATH_MAX], want[PESO_PATH_MAX + 256];
    write_ckpt(dir, "stage-1.h5", 1, 0, PESO_CKPT_FINAL);
    snprintf(p, sizeof p, "%s/stage-1.h5", dir);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    edit(f);
    H5Fclose(f);
    peso_ckpt in;
    peso_err err;
    cr_assert_eq(peso_ckpt_read(p, &in, &err), -1, "%s", obj);
    snprintf(want, sizeof want, "%s: %s: %s", p, obj, what);
    cr_assert(strstr(err.msg, want), "want \"%s\" in: %s", want, err.msg);
    peso_ckpt_free(&in);
    rm_dir(dir);
}

static void drop_optim_v(hid_t f)
{
    cr_assert(H5Ldelete(f, "optim/v", H5P_DEFAULT) >= 0);
}

static void drop_lora_alpha(hid_t f)
{
    cr_assert(H5Adelete_by_name(f, "model", "lora_alpha", H5P_DEFAULT) >= 0);
}

/* A dataset of n int32 zeros at path, replacing what was there. */
static void put_ints(hid_t f, const char *path, hsize_t n)
{
    int32_t zero[8] = {0};
    cr_assert(n <= 8);
    cr_assert(H5Ldelete(f, path, H5P_DEFAULT) >= 0);
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t d = H5Dcreate2(f, path, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(d >= 0);
    cr_assert(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, zero) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
}

static void short_rng(hid_t f)
{
    put_ints(f, "rng/shuffle", 3);
}

static void int_tensor(hid_t f)
{
    put_ints(f, "past/0/magnitude", 4);
}

static void other_kind(hid_t f)
{
    cr_assert(H5Adelete(f, "kind") >= 0);
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(t, H5T_VARIABLE);
    const char *k = "other";
    hid_t a = H5Acreate2(f, "kind", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(a >= 0 && H5Awrite(a, t, &k) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
}

Test(ckpt, damaged_objects_are_named)
{
    expect_damage(drop_optim_v, "/optim/v", "dataset is missing");
    expect_damage(drop_lora_alpha, "/model/@lora_alpha", "attribute is missing");
    expect_damage(short_rng, "/rng/shuffle", "expected shape [4], found [3]");
    expect_damage(int_tensor, "/past/0/magnitude", "expected a float dataset, found integer");
    expect_damage(other_kind, "/@kind", "\"other\", expected \"final\" or \"partial\"");
}

Test(ckpt, truncated_file_fails_naming_it)
{
    char *dir = tmp_dir(), p[PESO_PATH_MAX], q[PESO_PATH_MAX];
    write_ckpt(dir, "stage-2.h5", 2, 0, PESO_CKPT_FINAL);
    snprintf(p, sizeof p, "%s/stage-2.h5", dir);
    snprintf(q, sizeof q, "%s/cut.h5", dir);
    FILE *f = fopen(p, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *bytes = malloc((size_t)n);
    cr_assert_eq(fread(bytes, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    peso_err err;
    peso_ckpt in;
    /* Cut at several places: the end of the data, the middle, the header. */
    long cuts[] = {n - 100, n / 2, 200};
    for (size_t i = 0; i < 3; i++) {
        write_bytes(q, bytes, (size_t)cuts[i]);
        cr_assert_eq(peso_ckpt_read(q, &in, &err), -1, "cut at %ld of %ld", cuts[i], n);
        cr_assert(strstr(err.msg, q), "%s", err.msg);
        peso_ckpt_free(&in);
    }
    free(bytes);
    rm_dir(dir);
}

Test(ckpt, newest_orders_by_number_and_final_last)
{
    char *dir = tmp_dir(), p[PESO_PATH_MAX];
    peso_err err;
    int stage;
    int64_t step;
    write_ckpt(dir, "stage-9.h5", 9, 0, PESO_CKPT_FINAL);
    write_ckpt(dir, "stage-10-step-3.h5", 10, 3, PESO_CKPT_PARTIAL);
    write_ckpt(dir, "stage-2-step-40.h5", 2, 40, PESO_CKPT_PARTIAL);
    cr_assert_eq(peso_ckpt_newest(dir, &stage, &step, p, sizeof p, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(stage, 10);
    cr_assert_eq(step, 3);
    cr_assert(strstr(p, "/stage-10-step-3.h5"), "%s", p);
    write_ckpt(dir, "stage-10-step-20.h5", 10, 20, PESO_CKPT_PARTIAL);
    cr_assert_eq(peso_ckpt_newest(dir, &stage, &step, p, sizeof p, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(stage, 10);
    cr_assert_eq(step, 20);
    write_ckpt(dir, "stage-10.h5", 10, 25, PESO_CKPT_FINAL);
    cr_assert_eq(peso_ckpt_newest(dir, &stage, &step, p, sizeof p, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(stage, 10);
    cr_assert_eq(step, -1);
    cr_assert(strstr(p, "/stage-10.h5"), "%s", p);
    rm_dir(dir);
}

Test(ckpt, newest_ignores_tmp_damaged_and_misnamed_files)
{
    char *dir = tmp_dir(), p[PESO_PATH_MAX], q[PESO_PATH_MAX];
    peso_err err;
    int stage;
    int64_t step;
    write_ckpt(dir, "stage-3.h5", 3, 0, PESO_CKPT_FINAL);
    /* A whole checkpoint under a temporary name is still not taken. */
    write_ckpt(dir, "stage-4.h5", 4, 0, PESO_CKPT_FINAL);
    snprintf(p, sizeof p, "%s/stage-4.h5", dir);
    snprintf(q, sizeof q, "%s/stage-4.h5.tmp.999", dir);
    cr_assert_eq(rename(p, q), 0);
    snprintf(q, sizeof q, "%s/stage-5-step-2.h5", dir);
    write_bytes(q, "\x89HDF\r\n\x1a\n garbage", 17);
    /* stage-3's file copied under stage-6's name. */
    write_ckpt(dir, "stage-6.h5", 3, 0, PESO_CKPT_FINAL);
    snprintf(q, sizeof q, "%s/stage-7.h5.bak", dir);
    write_bytes(q, "x", 1);

    peso_ckpt_skipped sk = {0};
    cr_assert_eq(peso_ckpt_newest(dir, &stage, &step, p, sizeof p, &sk, &err), 0, "%s", err.msg);
    cr_assert_eq(stage, 3);
    cr_assert_eq(step, -1);
    cr_assert(strstr(p, "/stage-3.h5"), "%s", p);
    cr_assert_eq(sk.n, 3);
    int saw_tmp = 0, saw_bad = 0, saw_misnamed = 0;
    for (size_t i = 0; i < sk.n; i++) {
        saw_tmp += strstr(sk.msgs[i], "stage-4.h5.tmp.999") && strstr(sk.msgs[i], "temporary") ? 1 : 0;
        saw_bad += strstr(sk.msgs[i], "stage-5-step-2.h5") && strstr(sk.msgs[i], "cannot open") ? 1 : 0;
        saw_misnamed += strstr(sk.msgs[i], "stage-6.h5") && strstr(sk.msgs[i], "stage 3") ? 1 : 0;
    }
    cr_assert_eq(saw_tmp + saw_bad + saw_misnamed, 3, "%s | %s | %s", sk.msgs[0], sk.msgs[1], sk.msgs[2]);
    peso_ckpt_skipped_free(&sk);
    rm_dir(dir);
}

Test(ckpt, newest_of_nothing)
{
    char *dir = tmp_dir(), p[PESO_PATH_MAX], q[PESO_PATH_MAX];
    peso_err err;
    int stage = 5;
    int64_t step = 5;
    cr_assert_eq(peso_ckpt_newest(dir, &stage, &step, p, sizeof p, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(stage, -1);
    cr_assert_str_eq(p, "");
    snprintf(q, sizeof q, "%s/absent", dir);
    cr_assert_eq(peso_ckpt_newest(q, &stage, &step, p, sizeof p, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(stage, -1);
    snprintf(q, sizeof q, "%s/file", dir);
    write_bytes(q, "x", 1);
    cr_assert_eq(peso_ckpt_newest(q, &stage, &step, p, sizeof p, NULL, &err), -1);
    cr_assert(strstr(err.msg, q), "%s", err.msg);
    rm_dir(dir);
}

Test(ckpt, h5dump_lists_layout)
{
    if (system("command -v h5dump >/dev/null 2>&1") != 0)
        peso_test_missing("h5dump is not installed");
    char *dir = tmp_dir(), cmd[PESO_PATH_MAX + 64];
    write_ckpt(dir, "stage-0.h5", 0, 0, PESO_CKPT_FINAL);
    snprintf(cmd, sizeof cmd, "h5dump -H '%s/stage-0.h5'", dir);
    FILE *pipe = popen(cmd, "r");
    cr_assert_not_null(pipe);
    char line[1024];
    int adapter = 0, key = 0, optim = 0, rng = 0;
    while (fgets(line, sizeof line, pipe)) {
        adapter |= strstr(line, "GROUP \"adapter\"") != NULL;
        key |= strstr(line, "DATASET \"model.layers.0.self_attn.q_proj.lora_A.weight\"") != NULL;
        optim |= strstr(line, "GROUP \"optim\"") != NULL;
        rng |= strstr(line, "DATASET \"shuffle\"") != NULL;
    }
    cr_assert_eq(pclose(pipe), 0);
    cr_assert(adapter && key && optim && rng, "adapter %d key %d optim %d rng %d", adapter, key, optim, rng);
    rm_dir(dir);
}
