/* Loading model folders: every dtype and the sharded layout hold the same
 * model; tied heads; and bad folders fail naming the file and tensor. */
#include <criterion/criterion.h>
#include <stdint.h>

#include "llama_setup.h"

static peso_backend *cpu(void)
{
    peso_err err;
    peso_backend *be = peso_backend_create("cpu", &err);
    cr_assert(be, "%s", err.msg);
    return be;
}

static peso_llama_opts opts(void)
{
    peso_llama_opts o;
    peso_llama_opts_defaults(&o);
    o.lora.rank = 2;
    return o;
}

/* Loss sum of a fixed batch on the model in dir. */
static double folder_loss(const char *dir)
{
    peso_backend *be = cpu();
    peso_llama *m;
    peso_err err;
    peso_llama_opts o = opts();
    cr_assert_eq(peso_llama_load(&m, dir, be, &o, &err), 0, "%s", err.msg);
    tbatch b;
    int lens[2] = {6, 4};
    tbatch_make(&b, 2, 6, lens, 40, 0, 41);
    peso_llama_batch v = tbatch_view(&b);
    peso_llama_loss l;
    cr_assert_eq(peso_llama_forward(m, &v, &l, &err), 0, "%s", err.msg);
    peso_llama_free(m);
    peso_backend_destroy(be);
    return l.sum;
}

/* The load error for dir, which must fail. */
static void load_error(const char *dir, peso_err *err)
{
    peso_backend *be = cpu();
    peso_llama *m = (peso_llama *)1;
    peso_llama_opts o = opts();
    cr_assert_eq(peso_llama_load(&m, dir, be, &o, err), -1, "loading %s should fail", dir);
    cr_assert_null(m);
    peso_backend_destroy(be);
}

static void expect_msg(const peso_err *err, const char *a, const char *b, const char *c)
{
    cr_assert(strstr(err->msg, a) && strstr(err->msg, b) && (!c || strstr(err->msg, c)),
              "message '%s' should name '%s', '%s' and '%s'", err->msg, a, b, c ? c : "");
}

/* A safetensors file written here byte by byte, for dtypes the library
 * writer does not produce: dtype[i] is "F32", "F16" or "I32"; values are
 * exact in F16 (tiny weights are multiples of 2^-7 below 2). */
static uint16_t f16_bits(float f)
{
    if (f == 0.0f)
        return 0;
    uint32_t x;
    memcpy(&x, &f, 4);
    int e = (int)((x >> 23) & 0xff) - 127 + 15;
    cr_assert(e > 0 && e < 31 && (x & 0x1fff) == 0, "%g is not exact in F16", f);
    return (uint16_t)(((x >> 16) & 0x8000) | ((uint32_t)e << 10) | ((x >> 13) & 0x3ff));
}

static void raw_write(const char *path, const peso_st_wtensor *t, size_t n, const char *const *dtype)
{
    char hdr[16384];
    size_t len = 0, off = 0;
    len += (size_t)snprintf(hdr + len, sizeof hdr - len, "{");
    for (size_t i = 0; i < n; i++) {
        size_t numel = 1, w = strcmp(dtype[i], "F16") == 0 ? 2 : 4;
        for (int d = 0; d < t[i].ndim; d++)
            numel *= (size_t)t[i].shape[d];
        len += (size_t)snprintf(hdr + len, sizeof hdr - len, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld",
                                i ? "," : "", t[i].name, dtype[i], (long long)t[i].shape[0]);
        if (t[i].ndim == 2)
            len += (size_t)snprintf(hdr + len, sizeof hdr - len, ",%lld", (long long)t[i].shape[1]);
        len += (size_t)snprintf(hdr + len, sizeof hdr - len, "],\"data_offsets\":[%zu,%zu]}", off,
                                off + numel * w);
        off += numel * w;
    }
    len += (size_t)snprintf(hdr + len, sizeof hdr - len, "}");
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    uint64_t hl = len;
    fwrite(&hl, 8, 1, f);
    fwrite(hdr, 1, len, f);
    for (size_t i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++)
            numel *= (size_t)t[i].shape[d];
        for (size_t j = 0; j < numel; j++) {
            float v = t[i].data[j];
            if (strcmp(dtype[i], "F16") == 0) {
                uint16_t h = f16_bits(v);
                fwrite(&h, 2, 1, f);
            } else if (strcmp(dtype[i], "I32") == 0) {
                int32_t k = (int32_t)v;
                fwrite(&k, 4, 1, f);
            } else {
                fwrite(&v, 4, 1, f);
            }
        }
    }
    fclose(f);
}

/* the tiny folder with one dtype per tensor: F16 everywhere, except
 * odd_name which gets odd_dtype */
static void write_raw_folder(const tiny *t, const char *dir, const char *odd_name, const char *odd_dtype)
{
    peso_st_wtensor w[TINY_MAX_TENSORS];
    char names[TINY_MAX_TENSORS][96], path[512];
    const char *dt[TINY_MAX_TENSORS];
    size_t n = tiny_tensors(t, w, names, PESO_ST_WRITE_F32);
    for (size_t i = 0; i < n; i++)
        dt[i] = odd_name && strcmp(w[i].name, odd_name) == 0 ? odd_dtype : "F16";
    tiny_write_config(t, dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    raw_write(path, w, n, dt);
}

Test(llama_load, f32_bf16_f16_and_sharded_folders_hold_one_model)
{
    peso_llama_config c;
    tiny_config(&c, 0);
    tiny t;
    tiny_init(&t, &c, 201);
    char *f32 = tiny_tmpdir(), *bf16 = tiny_tmpdir(), *f16 = tiny_tmpdir(), *sh = tiny_tmpdir();
    tiny_write(&t, f32, PESO_ST_WRITE_F32);
    tiny_write(&t, bf16, PESO_ST_WRITE_BF16);
    write_raw_folder(&t, f16, NULL, NULL);

    /* two shards and the index transformers writes */
    peso_st_wtensor w[TINY_MAX_TENSORS];
    char names[TINY_MAX_TENSORS][96], path[512], index[8192];
    peso_err err;
    size_t n = tiny_tensors(&t, w, names, PESO_ST_WRITE_BF16), half = n / 2, len = 0;
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", sh);
    cr_assert_eq(peso_st_write(path, w, half, NULL, 0, &err), 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", sh);
    cr_assert_eq(peso_st_write(path, w + half, n - half, NULL, 0, &err), 0, "%s", err.msg);
    len += (size_t)snprintf(index, sizeof index, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(index + len, sizeof index - len,
                                "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "", w[i].name,
                                i < half ? 1 : 2);
    snprintf(index + len, sizeof index - len, "}}\n");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", sh);
    FILE *f = fopen(path, "w");
    fputs(index, f);
    fclose(f);
    tiny_write_config(&t, sh);

    double want = folder_loss(f32);
    cr_assert(isfinite(want) && want > 0);
    cr_assert_eq(folder_loss(bf16), want);
    cr_assert_eq(folder_loss(f16), want);
    cr_assert_eq(folder_loss(sh), want);
    tiny_rmdir(f32);
    tiny_rmdir(bf16);
    tiny_rmdir(f16);
    tiny_rmdir(sh);
    tiny_free(&t);
}

/* Tied: no lm_head.weight needed, and one present is ignored. */
Test(llama_load, tied_head_ignores_lm_head)
{
    peso_llama_config c;
    tiny_config(&c, 1);
    tiny t, u;
    tiny_init(&t, &c, 211);
    char *plain = tiny_tmpdir(), *extra = tiny_tmpdir();
    tiny_write(&t, plain, PESO_ST_WRITE_F32);
    /* the same weights plus a stray lm_head.weight */
    peso_rng r;
    peso_rng_seed(&r, 212, 1);
    u = t;
    u.head = tiny_rand(&r, 40 * 32, 0.0, 1.0);
    tiny_write(&u, extra, PESO_ST_WRITE_F32);
    free(u.head);
    cr_assert_eq(folder_loss(plain), folder_loss(extra));
    tiny_rmdir(plain);
    tiny_rmdir(extra);
    tiny_free(&t);
}

Test(llama_load, missing_tensor_names_file_and_tensor)
{
    tiny t;
    peso_llama_config c;
    peso_err err;
    tiny_config(&c, 0);
    tiny_init(&t, &c, 221);
    char *dir = tiny_tmpdir();
    tiny_write_skip(&t, dir, PESO_ST_WRITE_F32, "model.layers.1.mlp.up_proj.weight");
    load_error(dir, &err);
    expect_msg(&err, "/model.safetensors", "'model.layers.1.mlp.up_proj.weight'", "not found");
    tiny_write_skip(&t, dir, PESO_ST_WRITE_F32, "lm_head.weight");
    load_error(dir, &err);
    expect_msg(&err, "/model.safetensors", "'lm_head.weight'", "not found");
    tiny_rmdir(dir);
    tiny_free(&t);
}

Test(llama_load, wrong_shape_names_file_tensor_and_shapes)
{
    tiny t;
    peso_llama_config c;
    peso_err err;
    tiny_config(&c, 0);
    tiny_init(&t, &c, 231);
    char *dir = tiny_tmpdir();
    /* k_proj is [16, 32]; the folder claims 2 kv heads but the file holds 4 */
    t.cfg.num_key_value_heads = 4;
    free(t.w[0][1]);
    free(t.w[1][1]);
    free(t.w[0][2]);
    free(t.w[1][2]);
    peso_rng r;
    peso_rng_seed(&r, 1, 1);
    for (int l = 0; l < 2; l++)
        for (int p = 1; p <= 2; p++)
            t.w[l][p] = tiny_rand(&r, 32 * 32, 0.0, 0.1);
    tiny_write(&t, dir, PESO_ST_WRITE_F32);
    t.cfg.num_key_value_heads = 2;
    tiny_write_config(&t, dir);
    load_error(dir, &err);
    expect_msg(&err, "/model.safetensors", "'model.layers.0.self_attn.k_proj.weight'", "[16, 32]");
    tiny_rmdir(dir);
    tiny_free(&t);
}

Test(llama_load, truncated_file_names_file_and_tensor)
{
    tiny t;
    peso_llama_config c;
    peso_err err;
    tiny_config(&c, 1);
    tiny_init(&t, &c, 241);
    char *dir = tiny_tmpdir(), path[512];
    tiny_write(&t, dir, PESO_ST_WRITE_F32);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    cr_assert_eq(truncate(path, size - 100), 0);
    load_error(dir, &err);
    /* the writer orders data by name: the last tensor is the one cut */
    expect_msg(&err, "/model.safetensors", "'model.norm.weight'", NULL);
    tiny_rmdir(dir);
    tiny_free(&t);
}

Test(llama_load, unsupported_dtype_names_file_tensor_and_dtype)
{
    tiny t;
    peso_llama_config c;
    peso_err err;
    tiny_config(&c, 1);
    tiny_init(&t, &c, 251);
    char *dir = tiny_tmpdir();
    write_raw_folder(&t, dir, "model.layers.0.input_layernorm.weight", "I32");
    load_error(dir, &err);
    expect_msg(&err, "/model.safetensors", "'model.layers.0.input_layernorm.weight'", "I32");
    tiny_rmdir(dir);
    tiny_free(&t);
}

Test(llama_load, missing_files_are_named)
{
    tiny t;
    peso_llama_config c;
    peso_err err;
    tiny_config(&c, 1);
    tiny_init(&t, &c, 261);
    char *dir = tiny_tmpdir(), path[512];
    load_error(dir, &err);
    expect_msg(&err, dir, "config.json", NULL);
    tiny_write_config(&t, dir);
    load_error(dir, &err);
    expect_msg(&err, dir, "model.safetensors", NULL);
    snprintf(path, sizeof path, "%s/config.json", dir);
    remove(path);
    tiny_rmdir(dir);
    tiny_free(&t);
}

/* Llama-3.2-1B's config.json as its publisher ships it: the counts every
 * LoRA tutorial prints for it (1,235,814,400 parameters; r = 8 on all
 * seven projections: 5,636,096 trainable). */
Test(llama_load, llama_3_2_1b_config_counts)
{
    peso_llama_config c;
    peso_err err;
    cr_assert_eq(peso_llama_config_load(&c, PESO_FIXTURES "/model/llama-3.2-1b/config.json", &err), 0, "%s",
                 err.msg);
    cr_assert_eq(peso_llama_config_check(&c, "1b", &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_base_numel(&c), 1235814400u);
    peso_lora_conf l = {8, 16.0, PESO_LORA_ALL};
    cr_assert_eq(peso_lora_numel(&l, &c), 5636096u);
    /* activations for one [8, 256] batch with a backward, per token: in
     * each layer 4C (two norm outputs, x + attention, layer output) + 2Hq
     * (q, attention output) + 2Hkv + 3F + 32 (lse) + 2 (rstd) + 7r; then
     * the embedding output and the final norm (2C + 1) */
    size_t N = 8 * 256, C = 2048, Hq = 2048, F = 8192, Hkv = 512;
    size_t per_layer = 4 * C + 2 * Hq + 2 * Hkv + 3 * F + 32 + 2 + 7 * 8;
    size_t want = N * (16 * per_layer + C + C + 1);
    cr_assert_eq(peso_llama_acts_numel(&c, &l, 8, 256, 1), want);
}
