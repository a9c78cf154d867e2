/* Batch files for `peso-model loss`: the three [B, T] integer datasets of
 * a Hugging Face causal-LM batch (input_ids, attention_mask, labels) in
 * HDF5. Any integer storage type is read (h5py writes int64 by default)
 * and range-checked into int32. */
#include <hdf5.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/llama.h"

static int read_2d(hid_t f, const char *path, const char *name, int required, int *B, int *T, int32_t **out,
                   peso_err *err)
{
    *out = NULL;
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0)
        return required ? peso_errf(err, "%s: dataset /%s is missing", path, name) : 0;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0)
        return peso_errf(err, "%s: /%s is not a dataset", path, name);
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    int rank = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[2] = {0, 0};
    int rc = 0;
    if (H5Tget_class(t) != H5T_INTEGER)
        rc = peso_errf(err, "%s: /%s: expected an integer dataset", path, name);
    else if (rank != 2 || H5Sget_simple_extent_dims(sp, dims, NULL) != 2 || dims[0] < 1 || dims[1] < 1 ||
             dims[0] * dims[1] > INT32_MAX / 2)
        rc = peso_errf(err, "%s: /%s: expected a non-empty [B, T] dataset", path, name);
    else if (*B && ((int)dims[0] != *B || (int)dims[1] != *T))
        rc = peso_errf(err, "%s: /%s: shape [%llu, %llu], expected [%d, %d] like /input_ids", path, name,
                       (unsigned long long)dims[0], (unsigned long long)dims[1], *B, *T);
    size_t n = (size_t)(dims[0] * dims[1]);
    int64_t *wide = rc == 0 ? peso_malloc(n * sizeof *wide) : NULL;
    if (rc == 0 && H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, wide) < 0)
        rc = peso_errf(err, "%s: /%s: cannot read", path, name);
    if (rc == 0) {
        *out = peso_malloc(n * sizeof **out);
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (wide[i] < INT32_MIN || wide[i] > INT32_MAX)
                rc = peso_errf(err, "%s: /%s[%zu][%zu] = %lld does not fit in int32", path, name,
                               i / (size_t)dims[1], i % (size_t)dims[1], (long long)wide[i]);
            (*out)[i] = (int32_t)wide[i];
        }
        *B = (int)dims[0];
        *T = (int)dims[1];
    }
    free(wide);
    H5Tclose(t);
    H5Sclose(sp);
    H5Dclose(d);
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
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t h = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (h < 0)
        return peso_errf(err, "%s: cannot open as HDF5", path);
    int B = 0, T = 0;
    int rc = read_2d(h, path, "input_ids", 1, &B, &T, &f->ids, err);
    if (rc == 0)
        rc = read_2d(h, path, "attention_mask", 1, &B, &T, &f->mask, err);
    if (rc == 0)
        rc = read_2d(h, path, "labels", 0, &B, &T, &f->labels, err);
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
