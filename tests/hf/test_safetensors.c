/* safetensors reader and writer. The fixtures were written by the official
 * safetensors library (tools/reference/make_safetensors_fixtures.py); the
 * values below are the same numbers, exact in their dtypes. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hf/safetensors.h"

#define FIX PESO_FIXTURES "/model/"

static peso_st *open_ok(const char *path)
{
    peso_st *st;
    peso_err err;
    cr_assert_eq(peso_st_open(&st, path, &err), 0, "%s", err.msg);
    return st;
}

static void expect_floats(const peso_st *st, const char *name, const float *want, size_t n)
{
    const peso_st_tensor *t;
    peso_err err;
    cr_assert_eq(peso_st_get(st, name, &t, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_st_numel(t), n, "%s: numel", name);
    float got[16];
    cr_assert_eq(peso_st_to_f32(t, got, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < n; i++) {
        if (isnan(want[i]))
            cr_expect(isnan(got[i]), "%s[%zu] = %g, expected NaN", name, i, got[i]);
        else
            cr_expect(memcmp(&got[i], &want[i], 4) == 0, "%s[%zu] = %.9g, expected %.9g", name, i, got[i],
                      want[i]);
    }
}

static void expect_error(int rc, const peso_err *err, const char *a, const char *b, const char *c)
{
    cr_assert_eq(rc, -1, "expected a failure");
    cr_assert(strstr(err->msg, a), "'%s' not in: %s", a, err->msg);
    cr_assert(!b || strstr(err->msg, b), "'%s' not in: %s", b, err->msg);
    cr_assert(!c || strstr(err->msg, c), "'%s' not in: %s", c, err->msg);
}

Test(safetensors, reads_official_file_exactly)
{
    peso_st *st = open_ok(FIX "st_basic.safetensors");
    cr_assert_eq(peso_st_count(st), 6);
    const char *names[] = {"bf16", "f16", "f32", "f64", "i64", "scalar"};
    for (size_t i = 0; i < 6; i++)
        cr_assert_str_eq(peso_st_at(st, i)->name, names[i]);
    cr_assert_null(peso_st_at(st, 6));
    cr_assert_str_eq(peso_st_meta(st, "format"), "pt");
    cr_assert_str_eq(peso_st_meta(st, "note"), "peso fixture");
    cr_assert_null(peso_st_meta(st, "absent"));

    const peso_st_tensor *t = peso_st_find(st, "f32");
    cr_assert_str_eq(t->dtype, "F32");
    cr_assert_eq(t->ndim, 2);
    cr_assert_eq(t->shape[0], 2);
    cr_assert_eq(t->shape[1], 3);
    cr_assert_eq(t->nbytes, 24);
    expect_floats(st, "f32", (float[]){0.0f, -1.5f, 3.25f, 0.001f, 123456.789f, -7.0f}, 6);
    expect_floats(st, "bf16", (float[]){1.0f, -2.0f, 3.140625f, 65280.0f, ldexpf(1.0f, -130), -INFINITY}, 6);
    expect_floats(st, "f16", (float[]){0.5f, -65504.0f, ldexpf(1.0f, -14), ldexpf(1.0f, -24), INFINITY, NAN},
                  6);
    t = peso_st_find(st, "scalar");
    cr_assert_eq(t->ndim, 0);
    expect_floats(st, "scalar", (float[]){7.5f}, 1);
    peso_st_close(st);
}

Test(safetensors, converts_to_bf16)
{
    peso_st *st = open_ok(FIX "st_basic.safetensors");
    uint16_t h[6];
    peso_err err;
    /* bits from ml_dtypes.bfloat16(np.float32(x)) */
    cr_assert_eq(peso_st_to_bf16(peso_st_find(st, "f32"), h, &err), 0, "%s", err.msg);
    const uint16_t want[] = {0x0000, 0xbfc0, 0x4050, 0x3a83, 0x47f1, 0xc0e0};
    for (int i = 0; i < 6; i++)
        cr_expect_eq(h[i], want[i], "f32[%d] -> 0x%04x, expected 0x%04x", i, h[i], want[i]);
    cr_assert_eq(peso_st_to_bf16(peso_st_find(st, "bf16"), h, &err), 0, "%s", err.msg);
    cr_expect_eq(h[0], 0x3f80);
    cr_expect_eq(h[5], 0xff80);
    cr_assert_eq(peso_st_to_bf16(peso_st_find(st, "f16"), h, &err), 0, "%s", err.msg);
    cr_expect_eq(h[0], 0x3f00); /* 0.5 */
    cr_expect_eq(h[1], 0xc780); /* -65504 rounds to -65536 */
    cr_expect_eq(h[3], 0x3380); /* 2^-24 */
    peso_st_close(st);
}

Test(safetensors, bf16_rounds_to_nearest_even)
{
    /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: even (1.0) wins;
     * 1 + 3*2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: 1 + 2^-6 wins */
    cr_assert_eq(peso_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80);
    cr_assert_eq(peso_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82);
    cr_assert_eq(peso_f32_to_bf16(1.0f + ldexpf(1, -8) + ldexpf(1, -20)), 0x3f81);
    cr_assert_eq(peso_f32_to_bf16(-INFINITY), 0xff80);
    uint16_t n = peso_f32_to_bf16(NAN);
    cr_assert((n & 0x7f80) == 0x7f80 && (n & 0x7f), "NaN stays NaN: 0x%04x", n);
    cr_assert_eq(peso_bf16_to_f32(0x4049), 3.140625f);
}

#ifdef __FLT16_MANT_DIG__
Test(safetensors, f16_conversion_matches_the_compiler_for_all_65536_values)
{
    for (uint32_t u = 0; u < 65536; u++) {
        uint16_t h = (uint16_t)u;
        _Float16 x;
        memcpy(&x, &h, 2);
        float want = (float)x, got = peso_f16_to_f32(h);
        if (isnan(want))
            cr_assert(isnan(got), "0x%04x", u);
        else
            cr_assert(memcmp(&got, &want, 4) == 0, "0x%04x: %g, expected %g", u, got, want);
    }
}
#endif

Test(safetensors, unsupported_dtype_names_file_tensor_and_dtype)
{
    peso_st *st = open_ok(FIX "st_basic.safetensors");
    float out[2];
    peso_err err;
    expect_error(peso_st_to_f32(peso_st_find(st, "i64"), out, &err), &err, "st_basic.safetensors", "'i64'",
                 "I64");
    expect_error(peso_st_to_f32(peso_st_find(st, "f64"), out, &err), &err, "st_basic.safetensors", "'f64'",
                 "F64");
    uint16_t h[2];
    expect_error(peso_st_to_bf16(peso_st_find(st, "f64"), h, &err), &err, "'f64'", "F64", NULL);
    peso_st_close(st);
}

Test(safetensors, missing_tensor_and_wrong_shape)
{
    peso_st *st = open_ok(FIX "st_basic.safetensors");
    const peso_st_tensor *t;
    peso_err err;
    expect_error(peso_st_get(st, "model.norm.weight", &t, &err), &err, "st_basic.safetensors",
                 "'model.norm.weight'", "not found");
    cr_assert_null(t);
    t = peso_st_find(st, "f32");
    cr_assert_eq(peso_st_expect(t, 2, (int64_t[]){2, 3}, &err), 0);
    expect_error(peso_st_expect(t, 2, (int64_t[]){3, 2}, &err), &err, "st_basic.safetensors", "'f32'",
                 "shape [2, 3], expected [3, 2]");
    expect_error(peso_st_expect(t, 1, (int64_t[]){6}, &err), &err, "'f32'", "expected [6]", NULL);
    float buf[6];
    expect_error(peso_st_load_f32(st, "f32", 1, (int64_t[]){6}, buf, &err), &err, "'f32'", "expected [6]",
                 NULL);
    expect_error(peso_st_load_f32(st, "x", 1, (int64_t[]){6}, buf, &err), &err, "'x'", "not found", NULL);
    cr_assert_eq(peso_st_load_f32(st, "f32", 2, (int64_t[]){2, 3}, buf, &err), 0, "%s", err.msg);
    cr_assert_eq(buf[2], 3.25f);
    peso_st_close(st);
}

Test(safetensors, sharded_index_resolves_names_across_shards)
{
    peso_st *st;
    peso_err err;
    cr_assert_eq(peso_st_open_dir(&st, FIX "sharded", &err), 0, "%s", err.msg);
    cr_assert(strstr(peso_st_path(st), "model.safetensors.index.json"));
    cr_assert_eq(peso_st_count(st), 3);
    /* embed = arange(6) * 0.5 - 1, lm_head = -embed */
    expect_floats(st, "model.embed_tokens.weight", (float[]){-1, -0.5f, 0, 0.5f, 1, 1.5f}, 6);
    expect_floats(st, "lm_head.weight", (float[]){1, 0.5f, -0.0f, -0.5f, -1, -1.5f}, 6);
    expect_floats(st, "model.norm.weight", (float[]){1.0f, 0.5f}, 2);
    cr_assert(strstr(peso_st_find(st, "lm_head.weight")->file, "model-00002-of-00002"));
    cr_assert(strstr(peso_st_find(st, "model.norm.weight")->file, "model-00001-of-00002"));
    cr_assert_str_eq(peso_st_meta(st, "format"), "pt");
    expect_error(peso_st_get(st, "model.layers.0.mlp.up_proj.weight", &(const peso_st_tensor *){0}, &err),
                 &err, "model.safetensors.index.json", "'model.layers.0.mlp.up_proj.weight'", NULL);
    peso_st_close(st);
}

/* ---- malformed files, written into a temporary directory ---- */

static char tmpdir[64];

static void make_tmp(void)
{
    strcpy(tmpdir, "/tmp/peso_st_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmp(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

static void tmp_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(p, 1, n, f), n);
    fclose(f);
}

static size_t read_bytes(const char *path, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* A file with the given header (length prefix computed) and data bytes. */
static void write_st(const char *path, const char *header, size_t data_len)
{
    unsigned char buf[1024] = {0};
    size_t h = strlen(header);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    write_bytes(path, buf, 8 + h + data_len);
}

static void expect_open_error(const char *path, const char *a, const char *b)
{
    peso_st *st;
    peso_err err;
    expect_error(peso_st_open(&st, path, &err), &err, path, a, b);
    cr_assert_null(st);
}

Test(safetensors, truncated_file_names_the_tensor, .init = make_tmp, .fini = rm_tmp)
{
    unsigned char buf[1024];
    size_t n = read_bytes(FIX "st_basic.safetensors", buf, sizeof buf);
    char path[256];
    tmp_path(path, sizeof path, "model.safetensors");
    /* f16 is the last tensor in the data section: [64, 76) */
    write_bytes(path, buf, n - 4);
    expect_open_error(path, "'f16'", "truncated");
    write_bytes(path, buf, 6);
    expect_open_error(path, "shorter than the 8-byte header length", NULL);
}

Test(safetensors, bad_headers, .init = make_tmp, .fini = rm_tmp)
{
    char path[256];
    tmp_path(path, sizeof path, "x.safetensors");
    unsigned char big[16] = {0xe8, 0x03, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(path, big, 10);
    expect_open_error(path, "header length 1000 runs past the end", NULL);

    write_st(path, "{\"a\": {\"dtype\": \"F32\", ", 0);
    expect_open_error(path, "not valid JSON", NULL);
    write_st(path, "[1, 2]  ", 0);
    expect_open_error(path, "must be a JSON object", NULL);
    write_st(path, "{}x", 0);
    expect_open_error(path, "unexpected byte", NULL);
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
    expect_open_error(path, "'a'", "4 bytes of data for 2 F32 elements");
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4);
    expect_open_error(path, "'a'", "data_offsets");
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
    expect_open_error(path, "'a'", "shape[0]");
    write_st(path, "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_open_error(path, "'a'", "dtype");
    write_st(path, "{\"__metadata__\":{\"k\":1}}", 0);
    expect_open_error(path, "__metadata__", "'k'");

    /* valid: a 0-d tensor and an unknown-to-us but well-formed I32 */
    write_st(path, "{\"s\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}    ", 4);
    peso_st *st = open_ok(path);
    cr_assert_eq(peso_st_count(st), 1);
    peso_st_close(st);
}

Test(safetensors, header_integers_whitespace_and_repeated_keys, .init = make_tmp, .fini = rm_tmp)
{
    char path[256];
    tmp_path(path, sizeof path, "x.safetensors");
    /* sizes must be written as integers; above 2^53 they are refused by
     * value, even where a double would round them to a valid one */
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4);
    expect_open_error(path, "'a'", "shape[0]");
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4e0]}}", 4);
    expect_open_error(path, "'a'", "data_offsets");
    write_st(path, "{\"a\":{\"dtype\":\"U8\",\"shape\":[9007199254740993],\"data_offsets\":[0,4]}}", 4);
    expect_open_error(path, "'a'", "9007199254740993 exceeds 2^53");
    write_st(path, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,18446744073709551620]}}", 4);
    expect_open_error(path, "'a'", "18446744073709551620 exceeds 2^53");

    /* JSON whitespace may follow the header object, as the official
     * reader allows; a key given twice keeps its last value, as there */
    write_st(
        path,
        "{\"__metadata__\":{\"k\":\"old\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]},\"__metadata__\":{\"k\":\"new\"}}\n\t "
        " ",
        8);
    peso_st *st = open_ok(path);
    cr_assert_eq(peso_st_count(st), 1);
    const peso_st_tensor *t = peso_st_find(st, "a");
    cr_assert_str_eq(t->dtype, "U8");
    cr_assert_eq(t->shape[0], 4);
    cr_assert_eq(t->nbytes, 4);
    cr_assert_str_eq(peso_st_meta(st, "k"), "new");
    peso_st_close(st);
}

static void write_text(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text));
}

Test(safetensors, bad_sharded_sets, .init = make_tmp, .fini = rm_tmp)
{
    char index[256], shard[256];
    tmp_path(index, sizeof index, "model.safetensors.index.json");
    tmp_path(shard, sizeof shard, "model-00001-of-00002.safetensors");
    write_st(shard, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}    ", 4);

    write_text(index, "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\","
                      " \"b\": \"model-00002-of-00002.safetensors\"}}");
    expect_open_error(index, "model-00002-of-00002.safetensors", "'b'");
    peso_err err;
    peso_st *st;
    cr_assert_eq(peso_st_open(&st, index, &err), -1);
    cr_assert(strstr(err.msg, "No such file"), "%s", err.msg);

    write_text(index, "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\","
                      " \"c\": \"model-00001-of-00002.safetensors\"}}");
    expect_open_error(index, "'c'", "does not hold it");

    write_text(index, "{\"weights\": {}}");
    expect_open_error(index, "weight_map", NULL);
    write_text(index, "{\"weight_map\": {\"a\": \"../x.safetensors\"}}");
    expect_open_error(index, "'a'", "not a file name");
    write_text(index, "{\"weight_map\": ");
    expect_open_error(index, "cannot read index JSON", NULL);

    char dup[256];
    tmp_path(dup, sizeof dup, "model-00002-of-00002.safetensors");
    write_st(dup, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}    ", 4);
    write_text(index, "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\","
                      " \"b\": \"model-00002-of-00002.safetensors\"}}");
    expect_open_error(index, "'a' appears in both", NULL);

    expect_error(peso_st_open_dir(&st, "/nonexistent-dir", &err), &err, "/nonexistent-dir",
                 "no model.safetensors", NULL);
}

/* ---- writer ---- */

/* The file the official library writes for these tensors (checked byte for
 * byte against safetensors.numpy.save_file by test_safetensors_py.sh):
 * F32 data first, then BF16, names sorted within a dtype. */
static const float w_a[6] = {0.0f, -1.5f, 3.25f, 0.001f, 123456.789f, -7.0f};
static const float w_b[3] = {1.0f, 1.01171875f, 3.140625f};
static const float w_z[1] = {7.5f};
static const char w_header[] = "{\"__metadata__\":{\"format\":\"pt\"},"
                               "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                               "\"z\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[24,28]},"
                               "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[28,34]}}";

static int write_sample(const char *path, peso_err *err)
{
    peso_st_wtensor t[3] = {
        {.name = "z", .dtype = PESO_ST_WRITE_F32, .ndim = 0, .data = w_z},
        {.name = "b", .dtype = PESO_ST_WRITE_BF16, .ndim = 1, .shape = {3}, .data = w_b},
        {.name = "a", .dtype = PESO_ST_WRITE_F32, .ndim = 2, .shape = {2, 3}, .data = w_a},
    };
    peso_st_kv meta = {"format", "pt"};
    return peso_st_write(path, t, 3, &meta, 1, err);
}

Test(safetensors, writer_lays_out_as_the_official_library, .init = make_tmp, .fini = rm_tmp)
{
    const char *export = getenv("PESO_ST_EXPORT_DIR");
    char path[256];
    if (export)
        snprintf(path, sizeof path, "%s/c_written.safetensors", export);
    else
        tmp_path(path, sizeof path, "c_written.safetensors");
    peso_err err;
    cr_assert_eq(write_sample(path, &err), 0, "%s", err.msg);

    unsigned char buf[1024];
    size_t n = read_bytes(path, buf, sizeof buf);
    size_t h = strlen(w_header), padded = (h + 7) / 8 * 8;
    cr_assert_eq(buf[0] | (buf[1] << 8), (int)padded, "header length");
    cr_assert(memcmp(buf + 8, w_header, h) == 0, "header: %.*s", (int)h, (const char *)buf + 8);
    for (size_t i = h; i < padded; i++)
        cr_assert_eq(buf[8 + i], ' ', "padding is spaces");
    cr_assert_eq(n, 8 + padded + 34);
    /* bf16 of 1.01171875 (a tie) rounds to even: 0x3f82, little-endian */
    cr_assert_eq(buf[8 + padded + 30], 0x82);
    cr_assert_eq(buf[8 + padded + 31], 0x3f);

    peso_st *st = open_ok(path);
    expect_floats(st, "a", w_a, 6);
    expect_floats(st, "z", w_z, 1);
    expect_floats(st, "b", (float[]){1.0f, 1.015625f, 3.140625f}, 3);
    cr_assert_str_eq(peso_st_find(st, "b")->dtype, "BF16");
    cr_assert_str_eq(peso_st_meta(st, "format"), "pt");
    peso_st_close(st);

    char tmp_left[300];
    snprintf(tmp_left, sizeof tmp_left, "%s.tmp.%ld", path, (long)getpid());
    cr_assert_neq(access(tmp_left, F_OK), 0, "no temporary file left behind");
}

Test(safetensors, writer_refuses_bad_names, .init = make_tmp, .fini = rm_tmp)
{
    char path[256];
    tmp_path(path, sizeof path, "bad.safetensors");
    float v = 1;
    peso_err err;
    peso_st_wtensor dup[2] = {
        {.name = "w", .dtype = PESO_ST_WRITE_F32, .ndim = 1, .shape = {1}, .data = &v},
        {.name = "w", .dtype = PESO_ST_WRITE_BF16, .ndim = 1, .shape = {1}, .data = &v},
    };
    expect_error(peso_st_write(path, dup, 2, NULL, 0, &err), &err, path, "'w' given twice", NULL);
    peso_st_wtensor meta = {.name = "__metadata__", .ndim = 0, .data = &v};
    expect_error(peso_st_write(path, &meta, 1, NULL, 0, &err), &err, "__metadata__", NULL, NULL);
    cr_assert_neq(access(path, F_OK), 0, "nothing written");
}
