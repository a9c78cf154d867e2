#include "common/flat.h"

#include <stdlib.h>
#include <string.h>

void peso_flat_init(peso_flat *f)
{
    memset(f, 0, sizeof *f);
}

void peso_flat_free(peso_flat *f)
{
    for (size_t i = 0; i < f->n_views; i++)
        free(f->views[i].name);
    free(f->views);
    peso_flat_init(f);
}

const peso_view *peso_flat_find(const peso_flat *f, const char *name)
{
    for (size_t i = 0; i < f->n_views; i++)
        if (strcmp(f->views[i].name, name) == 0)
            return &f->views[i];
    return NULL;
}

int peso_flat_add(peso_flat *f, const char *name, int ndim, const int *shape, size_t *offset,
                  peso_err *err)
{
    if (ndim < 1 || ndim > PESO_FLAT_MAX_DIMS)
        return peso_errf(err, "flat view '%s': %d dimensions, expected 1..%d", name, ndim,
                         PESO_FLAT_MAX_DIMS);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 1)
            return peso_errf(err, "flat view '%s': dimension %d is %d, expected >= 1", name, d,
                             shape[d]);
        numel *= (size_t)shape[d];
    }
    if (peso_flat_find(f, name))
        return peso_errf(err, "flat view '%s' is already in the layout", name);
    peso_grow((void **)&f->views, &f->cap, f->n_views + 1, sizeof *f->views);
    peso_view *v = &f->views[f->n_views++];
    memset(v, 0, sizeof *v);
    v->name = peso_strdup(name);
    v->offset = (f->numel + PESO_FLAT_ALIGN - 1) / PESO_FLAT_ALIGN * PESO_FLAT_ALIGN;
    v->numel = numel;
    v->ndim = ndim;
    memcpy(v->shape, shape, (size_t)ndim * sizeof *shape);
    f->numel = v->offset + numel;
    if (offset)
        *offset = v->offset;
    return 0;
}

float *peso_flat_at(float *base, const peso_view *v)
{
    return base + v->offset;
}
