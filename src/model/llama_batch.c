/* Batch files for `peso-model loss`: the three [B, T] integer datasets of
 * a Hugging Face causal-LM batch (input_ids, attention_mask, labels) in
 * HDF5. Any integer storage type is read (h5py writes int64 by default)
 * and range-checked into int32. */
#include <hdf5.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/h5.h"
#include "model/llama.h"

/* Dataset name as a non-empty [B, T] array of int32 values; *B and *T, when
 * set, are the shape it must have. A missing dataset that is not required
 * leaves *out NULL. */
static int read_2d(peso_h5r *r, hid_t f, const char *name, int required, int *B, int *T, int32_t **out)
{
    *out = NULL;
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0)
        return required ? peso_errf(r->err, "%s: dataset /%s is missing", r->file, name) : 0;
    hsize_t dims[2];
    int rank;
    hid_t d = peso_h5_r_data_open(r, f, name, H5T_INTEGER, 2, 2, &rank, dims);
    if (d < 0)
        return -1;
    int rc = 0;
    if (dims[0] < 1 || dims[1] < 1 || dims[0] * dims[1] > INT32_MAX / 2)
        rc = peso_h5_r_fail_at(r, d, NULL, "expected a non-empty [B, T] dataset, found [%llu, %llu]",
                               (unsigned long long)dims[0], (unsigned long long)dims[1]);
    else if (*B && ((int)dims[0] != *B || (int)dims[1] != *T))
        rc = peso_h5_r_fail_at(r, d, NULL, "shape [%llu, %llu], expected [%d, %d] like /input_ids",
                               (unsigned long long)dims[0], (unsigned long long)dims[1], *B, *T);
    size_t n = (size_t)(dims[0] * dims[1]);
    int64_t *wide = rc == 0 ? peso_malloc(n * sizeof *wide) : NULL;
    if (rc == 0)
        rc = peso_h5_r_data_read(r, d, H5T_NATIVE_INT64, wide);
    H5Dclose(d);
    if (rc == 0) {
        *out = peso_malloc(n * sizeof **out);
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (wide[i] < INT32_MIN || wide[i] > INT32_MAX)
                rc = peso_errf(r->err, "%s: /%s[%zu][%zu] = %lld does not fit in int32", r->file, name,
                               i / (size_t)dims[1], i % (size_t)dims[1], (long long)wide[i]);
            (*out)[i] = (int32_t)wide[i];
        }
        *B = (int)dims[0];
        *T = (int)dims[1];
    }
    free(wide);
    return rc;
}

long peso_llama_count_labels(const peso_llama_batch *b)
{
    long n = 0;
    if (!b->labels)
        return 0;
    for (int r = 0; r < b->B; r++)
        for (int t = 1; t <= b->lens[r] && t < b->T; t++)
            n += b->labels[(size_t)r * b->T + t] != PESO_LABEL_IGNORE;
    return n;
}

int peso_llama_lens_from_mask(const int32_t *mask, int B, int T, int32_t *lens, const char *where,
                              peso_err *err)
{
    for (int b = 0; b < B; b++) {
        int len = 0;
        for (int t = 0; t < T; t++) {
            int32_t v = mask[(size_t)b * T + t];
            if (v != 0 && v != 1)
                return peso_errf(err, "%s: attention_mask[%d][%d] = %d, expected 0 or 1", where, b, t, v);
            if (v == 1 && len != t)
                return peso_errf(err,
                                 "%s: attention_mask[%d][%d] = 1 after a 0: only right padding is "
                                 "supported",
                                 where, b, t);
            len += v;
        }
        lens[b] = len;
    }
    return 0;
}

int peso_llama_batch_read(peso_llama_batch_file *f, const char *path, peso_err *err)
{
    memset(f, 0, sizeof *f);
    peso_h5r r = {path, err};
    hid_t h = peso_h5_r_open(&r, NULL);
    if (h < 0)
        return -1;
    int B = 0, T = 0;
    int rc = read_2d(&r, h, "input_ids", 1, &B, &T, &f->ids);
    if (rc == 0)
        rc = read_2d(&r, h, "attention_mask", 1, &B, &T, &f->mask);
    if (rc == 0)
        rc = read_2d(&r, h, "labels", 0, &B, &T, &f->labels);
    H5Fclose(h);
    if (rc == 0) {
        f->lens = peso_malloc((size_t)B * sizeof *f->lens);
        rc = peso_llama_lens_from_mask(f->mask, B, T, f->lens, path, err);
    }
    if (rc < 0) {
        peso_llama_batch_file_free(f);
        return -1;
    }
    f->batch = (peso_llama_batch){B, T, f->ids, f->lens, f->labels};
    return 0;
}

void peso_llama_batch_file_free(peso_llama_batch_file *f)
{
    free(f->ids);
    free(f->mask);
    free(f->lens);
    free(f->labels);
    memset(f, 0, sizeof *f);
}
