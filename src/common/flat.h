/* A layout of named tensors inside one flat float32 buffer, as in llm.c:
 * parameters, gradients and each optimizer moment are separate buffers of
 * peso_flat.numel floats with this same layout, so "all gradients" is one
 * pointer and one length (one all-reduce, one AdamW call) while each
 * module reaches its tensors through views. The layout is host metadata;
 * the buffers themselves come from be->alloc. */
#ifndef PESO_COMMON_FLAT_H
#define PESO_COMMON_FLAT_H

#include <stddef.h>

#include "common/err.h"

#define PESO_FLAT_MAX_DIMS 4
/* View offsets are multiples of this many floats (64 bytes), so every
 * view is aligned for vector loads on CPU and GPU; the gaps stay zero. */
#define PESO_FLAT_ALIGN 16

typedef struct peso_view {
    char *name;
    size_t offset; /* in floats from the start of the buffer */
    size_t numel;
    int ndim;
    int shape[PESO_FLAT_MAX_DIMS];
} peso_view;

typedef struct peso_flat {
    peso_view *views;
    size_t n_views, cap;
    size_t numel; /* buffer length in floats, padding included */
} peso_flat;

void peso_flat_init(peso_flat *f);
void peso_flat_free(peso_flat *f);
/* Appends a view; *offset (may be NULL) receives its offset. Errors on a
 * repeated name or a shape with a dimension < 1. */
int peso_flat_add(peso_flat *f, const char *name, int ndim, const int *shape, size_t *offset,
                  peso_err *err);
/* The view called name, or NULL. */
const peso_view *peso_flat_find(const peso_flat *f, const char *name);
/* base + the view's offset: a view into a buffer with this layout. */
float *peso_flat_at(float *base, const peso_view *v);

#endif
