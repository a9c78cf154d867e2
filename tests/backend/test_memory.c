#include "bt.h"

Test(memory, alloc_zeroes_and_transfers_round_trip)
{
    peso_backend *be = bt_backend();
    peso_err err = {{0}};
    unsigned char host[100], back[100];
    void *a = NULL, *b = NULL;
    cr_assert_eq(be->alloc(be, &a, sizeof host, &err), 0, "%s", err.msg);
    cr_assert_eq(be->alloc(be, &b, sizeof host, &err), 0, "%s", err.msg);
    bt_get(be, back, a, sizeof back);
    for (size_t i = 0; i < sizeof back; i++)
        cr_assert_eq(back[i], 0, "alloc returns zeroed memory");
    for (size_t i = 0; i < sizeof host; i++)
        host[i] = (unsigned char)(i * 7 + 1);
    bt_put(be, a, host, sizeof host);
    cr_assert_eq(be->copy(be, b, a, sizeof host, &err), 0);
    bt_get(be, back, b, sizeof back);
    cr_assert(memcmp(back, host, sizeof host) == 0);
    cr_assert_eq(be->zero(be, (char *)b + 10, 20, &err), 0);
    bt_get(be, back, b, sizeof back);
    for (size_t i = 0; i < sizeof back; i++)
        cr_assert_eq(back[i], i >= 10 && i < 30 ? 0 : host[i]);
    be->free(be, a);
    be->free(be, b);
    peso_backend_destroy(be);
}

Test(memory, backend_by_name)
{
    peso_err err = {{0}};
    peso_backend *be = peso_backend_create("cpu", &err);
    cr_assert(be);
    cr_assert_str_eq(be->name, "cpu");
    cr_assert(peso_backend_supports(be, PESO_F32));
    cr_assert(!peso_backend_supports(be, PESO_BF16), "cpu stores f32 weights only");
    peso_backend_destroy(be);
    cr_assert_null(peso_backend_create("tpu", &err));
    cr_assert(strstr(err.msg, "'tpu'") && strstr(err.msg, "cpu"), "%s", err.msg);
    cr_assert_eq(peso_dtype_size(PESO_BF16), 2u);
    cr_assert_eq(peso_dtype_size(PESO_F32), 4u);
    cr_assert_str_eq(peso_dtype_name(PESO_BF16), "bf16");
}
