/* Rows by index (gather_rows): against a plain copy loop, with repeated
 * and out-of-order indices, an output poisoned with NaN before the call
 * (every row must be written, nothing past n), odd widths, and the
 * argument checks (nothing written on an error). */
#include "bt.h"

static void gather_case(int n_src, int width, const int32_t *idx, int n)
{
    peso_backend *be = bt_backend();
    peso_rng r;
    peso_rng_seed(&r, 61, (uint64_t)width);
    float *src = bt_rand(&r, (size_t)n_src * width, -1, 1);
    size_t out_n = ((size_t)n + 1) * width; /* one row past n stays poisoned */
    float *out = malloc(out_n * sizeof *out);
    for (size_t i = 0; i < out_n; i++)
        out[i] = NAN;
    float *src_ = bt_dev(be, src, (size_t)n_src * width * sizeof *src), *out_ = bt_dev(be, out, out_n * sizeof *out);
    int32_t *idx_ = bt_dev(be, idx, (size_t)(n ? n : 1) * sizeof *idx);
    peso_err err;
    cr_assert_eq(be->gather_rows(be, out_, src_, n_src, width, idx_, n, &err), 0, "%s", err.msg);
    bt_get(be, out, out_, out_n * sizeof *out);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < width; c++)
            cr_assert_eq(out[(size_t)i * width + c], src[(size_t)idx[i] * width + c], "row %d col %d", i, c);
    for (int c = 0; c < width; c++)
        cr_assert(isnan(out[(size_t)n * width + c]), "written past row %d", n);
    be->free(be, src_);
    be->free(be, out_);
    be->free(be, idx_);
    free(src);
    free(out);
    peso_backend_destroy(be);
}

Test(gather_rows, copies_the_indexed_rows)
{
    const int32_t idx[6] = {4, 0, 4, 2, 6, 1};
    gather_case(7, 1, idx, 6);
    gather_case(7, 67, idx, 6);
    gather_case(7, 576, idx, 6);
    gather_case(7, 67, idx, 0);
    int32_t many[300];
    for (int i = 0; i < 300; i++)
        many[i] = (i * 37) % 211;
    gather_case(211, 129, many, 300); /* over the threading threshold */
}

Test(gather_rows, checks_its_arguments_and_writes_nothing)
{
    peso_backend *be = bt_backend();
    float src[12] = {0}, out[8];
    for (int i = 0; i < 8; i++)
        out[i] = 7.0f;
    const int32_t bad[2][2] = {{0, 3}, {-1, 0}};
    float *src_ = bt_dev(be, src, sizeof src), *out_ = bt_dev(be, out, sizeof out);
    peso_err err;
    for (int k = 0; k < 2; k++) {
        int32_t *idx_ = bt_dev(be, bad[k], sizeof bad[k]);
        cr_assert_eq(be->gather_rows(be, out_, src_, 3, 4, idx_, 2, &err), -1);
        cr_assert(strstr(err.msg, "gather_rows: idx["), "%s", err.msg);
        be->free(be, idx_);
    }
    const int32_t ok[2] = {0, 1};
    int32_t *idx_ = bt_dev(be, ok, sizeof ok);
    cr_assert_eq(be->gather_rows(be, out_, src_, 3, 0, idx_, 2, &err), -1);
    cr_assert(strstr(err.msg, "width=0"), "%s", err.msg);
    cr_assert_eq(be->gather_rows(be, out_, src_, 3, 4, idx_, -1, &err), -1);
    bt_get(be, out, out_, sizeof out);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(out[i], 7.0f, "written on an error at %d", i);
    be->free(be, idx_);
    be->free(be, src_);
    be->free(be, out_);
    peso_backend_destroy(be);
}
