/* Reading and writing safetensors files, the weight format of Hugging Face
 * model folders. A file is an 8-byte little-endian header length N, N bytes
 * of JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * optional "__metadata__": {string: string}}), then the data section that
 * the offsets index. Files are mapped read-only; tensors are converted to
 * float32 (or bfloat16) on request, so a model is never held twice in its
 * file dtype.
 *
 * A peso_st is a set of files that answers by tensor name: one
 * .safetensors file, or the shards listed by a model.safetensors.index.json
 * ({"weight_map": {"tensor": "model-00001-of-00002.safetensors"}}). Every
 * error names the file and the tensor. */
#ifndef PESO_HF_SAFETENSORS_H
#define PESO_HF_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define PESO_ST_MAX_DIMS 8
#define PESO_ST_DTYPE_LEN 16

typedef struct peso_st_tensor {
    const char *name;              /* owned by the set */
    const char *file;              /* path of the file that holds it */
    char dtype[PESO_ST_DTYPE_LEN]; /* as written: "F32", "BF16", "I64", ... */
    int ndim;
    int64_t shape[PESO_ST_MAX_DIMS];
    const void *data; /* into the mapping; not aligned */
    size_t nbytes;
} peso_st_tensor;

typedef struct peso_st peso_st;

/* Opens path: a .safetensors file, or an .index.json whose weight_map names
 * shard files relative to the index's directory. Offsets are checked against
 * the file size, so a truncated file fails here, naming the tensor. */
int peso_st_open(peso_st **out, const char *path, peso_err *err);
/* Opens a model folder: model.safetensors.index.json when present, else
 * model.safetensors. */
int peso_st_open_dir(peso_st **out, const char *dir, peso_err *err);
void peso_st_close(peso_st *st);

/* The path that was opened (file or index), used in messages. */
const char *peso_st_path(const peso_st *st);
size_t peso_st_count(const peso_st *st);
/* Tensors in name order. */
const peso_st_tensor *peso_st_at(const peso_st *st, size_t i);
/* NULL when absent. */
const peso_st_tensor *peso_st_find(const peso_st *st, const char *name);
/* As find, but a missing tensor is an error naming the file and tensor. */
int peso_st_get(const peso_st *st, const char *name, const peso_st_tensor **out, peso_err *err);
/* A __metadata__ value of the first file that has the key, or NULL. */
const char *peso_st_meta(const peso_st *st, const char *key);

size_t peso_st_numel(const peso_st_tensor *t);
/* Fails unless t has exactly ndim dimensions equal to dims, naming the
 * file, tensor, expected and actual shapes. */
int peso_st_expect(const peso_st_tensor *t, int ndim, const int64_t *dims, peso_err *err);
/* Converts F32, BF16 or F16 data to numel floats in dst; any other dtype is
 * an error naming the file, tensor and dtype. */
int peso_st_to_f32(const peso_st_tensor *t, float *dst, peso_err *err);
/* The same into bfloat16 bits (round to nearest even from F32 and F16). */
int peso_st_to_bf16(const peso_st_tensor *t, uint16_t *dst, peso_err *err);
/* get + expect + to_f32: the one call a model loader needs per weight. */
int peso_st_load_f32(const peso_st *st, const char *name, int ndim, const int64_t *dims, float *dst,
                     peso_err *err);

/* bfloat16 <-> float32 bit conversions (round to nearest even; NaN stays
 * NaN). */
uint16_t peso_f32_to_bf16(float f);
float peso_bf16_to_f32(uint16_t h);
float peso_f16_to_f32(uint16_t h);

/* ---- writing ---- */

typedef enum peso_st_wdtype { PESO_ST_WRITE_F32, PESO_ST_WRITE_BF16 } peso_st_wdtype;

typedef struct peso_st_wtensor {
    const char *name;
    peso_st_wdtype dtype; /* stored dtype; values are given as float */
    int ndim;
    int64_t shape[PESO_ST_MAX_DIMS];
    const float *data; /* numel values, row-major */
} peso_st_wtensor;

typedef struct peso_st_kv {
    const char *key;
    const char *value;
} peso_st_kv;

/* Writes the tensors (and __metadata__ when nmeta > 0) to path atomically,
 * laid out as the official library lays them: data ordered by dtype width
 * (F32 before BF16), then by name; header keys in that order after
 * __metadata__; header padded with spaces to a multiple of 8 bytes. Names
 * must be distinct and must not be "__metadata__". */
int peso_st_write(const char *path, const peso_st_wtensor *t, size_t n, const peso_st_kv *meta, size_t nmeta,
                  peso_err *err);

#endif
