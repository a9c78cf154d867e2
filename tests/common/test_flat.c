#include <stdio.h>

#include "common/flat.h"
#include <criterion/criterion.h>

Test(flat, views_are_aligned_and_found_by_name)
{
    peso_flat f;
    peso_flat_init(&f);
    peso_err err = {{0}};
    size_t off;
    int a[2] = {3, 5}, b[1] = {7}, c[3] = {2, 2, 4};
    cr_assert_eq(peso_flat_add(&f, "layers.0.q.lora_A", 2, a, &off, &err), 0, "%s", err.msg);
    cr_assert_eq(off, 0u);
    cr_assert_eq(peso_flat_add(&f, "layers.0.q.lora_B", 1, b, &off, &err), 0);
    cr_assert_eq(off, 16u, "15 floats round up to 16");
    cr_assert_eq(peso_flat_add(&f, "embed.new", 3, c, &off, &err), 0);
    cr_assert_eq(off, 32u, "16 + 7 = 23 rounds up to 32");
    cr_assert_eq(f.numel, 48u);
    const peso_view *v = peso_flat_find(&f, "layers.0.q.lora_B");
    cr_assert(v);
    cr_assert_eq(v->numel, 7u);
    cr_assert_eq(v->ndim, 1);
    cr_assert_eq(v->shape[0], 7);
    float buf[48];
    cr_assert_eq(peso_flat_at(buf, v), buf + 16);
    cr_assert_null(peso_flat_find(&f, "layers.0.k.lora_A"));
    cr_assert_eq(peso_flat_add(&f, "embed.new", 1, b, NULL, &err), -1);
    cr_assert(strstr(err.msg, "'embed.new' is already"), "%s", err.msg);
    int bad[2] = {3, 0};
    cr_assert_eq(peso_flat_add(&f, "x", 2, bad, NULL, &err), -1);
    cr_assert(strstr(err.msg, "dimension 1 is 0"), "%s", err.msg);
    cr_assert_eq(f.n_views, 3u);
    peso_flat_free(&f);
    cr_assert_eq(f.n_views, 0u);
}

Test(flat, many_views_grow_the_table)
{
    peso_flat f;
    peso_flat_init(&f);
    peso_err err = {{0}};
    char name[32];
    for (int i = 0; i < 300; i++) {
        int shape[1] = {16};
        snprintf(name, sizeof name, "v%d", i);
        cr_assert_eq(peso_flat_add(&f, name, 1, shape, NULL, &err), 0, "%s", err.msg);
    }
    cr_assert_eq(f.numel, 300u * 16);
    cr_assert_eq(peso_flat_find(&f, "v299")->offset, 299u * 16);
    peso_flat_free(&f);
}
