/* PESO_CPU_GUARD=1: the cpu backend's memory faults when the host touches
 * it, and still works through the table. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>

#include "backend/backend.h"

static peso_backend *guarded(void)
{
    peso_err err;
    setenv("PESO_CPU_GUARD", "1", 1);
    peso_backend *be = peso_backend_create("cpu", &err);
    cr_assert(be, "%s", err.msg);
    return be;
}

Test(guard, a_host_read_of_backend_memory_faults, .signal = SIGSEGV)
{
    peso_backend *be = guarded();
    float *p;
    peso_err err;
    cr_assert_eq(be->alloc(be, (void **)&p, 64 * sizeof *p, &err), 0, "%s", err.msg);
    volatile float x = p[3]; /* the bug the guard is for */
    (void)x;
}

Test(guard, the_table_works_on_guarded_memory)
{
    peso_backend *be = guarded();
    peso_err err;
    float host[7] = {1, -2, 3, -4, 5, -6, 7}, back[7] = {0}, *x, *y;
    cr_assert_eq(be->alloc(be, (void **)&x, sizeof host, &err), 0, "%s", err.msg);
    cr_assert_eq(be->alloc(be, (void **)&y, sizeof host, &err), 0, "%s", err.msg);
    /* fresh memory is zero */
    cr_assert_eq(be->download(be, back, x, sizeof back, &err), 0, "%s", err.msg);
    for (int i = 0; i < 7; i++)
        cr_assert_eq(back[i], 0.0f);
    double ss = 0;
    cr_assert_eq(be->upload(be, x, host, sizeof host, &err), 0, "%s", err.msg);
    cr_assert_eq(be->copy(be, y, x, sizeof host, &err), 0, "%s", err.msg);
    cr_assert_eq(be->scale(be, y + 1, 6, 2.0f, &err), 0, "%s", err.msg); /* offsets translate too */
    cr_assert_eq(be->sumsq(be, y, 7, &ss, &err), 0, "%s", err.msg);
    cr_assert_eq(ss, 1.0 + 4.0 * (4 + 9 + 16 + 25 + 36 + 49));
    cr_assert_eq(be->download(be, back, y, sizeof back, &err), 0, "%s", err.msg);
    cr_assert_eq(back[0], 1.0f);
    cr_assert_eq(back[6], 14.0f);
    be->free(be, x);
    be->free(be, y);
    peso_backend_destroy(be);
}
