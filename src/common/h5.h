/* HDF5 helpers shared by every file the project reads or writes in HDF5
 * (dataset, checkpoints, embeddings, batches): a quiet error stack whose
 * reason text goes into peso_err messages, the string type the layouts
 * use, a writer context that keeps the first failure so a layout writes
 * as one straight sequence of calls, and typed readers that check what
 * they read and name the file and object in every message. */
#ifndef PESO_COMMON_H5_H
#define PESO_COMMON_H5_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Buffer sizes for peso_h5_reason and peso_h5_obj_path. */
#define PESO_H5_REASON 256
#define PESO_H5_OBJ 512

/* Switches off HDF5's own printing of its error stack (messages go through
 * peso_err instead). Call before the first HDF5 call of an entry point. */
void peso_h5_quiet(void);

/* The innermost error description of the current HDF5 failure (the
 * function that detected it, e.g. "truncated file: eof = ..."), or "".
 * Read it before the next HDF5 call, which clears the stack. */
void peso_h5_reason(char buf[PESO_H5_REASON]);

/* "/group/name" for name under loc (name NULL: loc itself; "?" stands for
 * a location HDF5 cannot name). */
void peso_h5_obj_path(hid_t loc, const char *name, char *buf, size_t n);

/* A new variable-length UTF-8 string type; the caller closes it. */
hid_t peso_h5_vlen_str(void);

/* Writer context: after the first failure (recorded in err as "<file>:
 * cannot write <what> <object path>: <reason>") every writer call does
 * nothing, and failed stays 1. */
typedef struct peso_h5w {
    const char *file;
    peso_err *err;
    int failed;
} peso_h5w;

/* Records a failure on name under loc (only the first one counts). */
void peso_h5_w_fail(peso_h5w *w, hid_t loc, const char *name, const char *what);

/* A new group name under loc, or -1 (failure recorded). */
hid_t peso_h5_w_group(peso_h5w *w, hid_t loc, const char *name);

/* Closes a group from peso_h5_w_group; -1 is ignored. */
void peso_h5_close_group(hid_t g);

/* Attribute of n elements (n = 0: scalar), file type ftype, buffer type mtype. */
void peso_h5_w_attr(peso_h5w *w, hid_t loc, const char *name, hid_t ftype, hid_t mtype, hsize_t n,
                    const void *buf);
void peso_h5_w_attr_i32(peso_h5w *w, hid_t loc, const char *name, int32_t v);
void peso_h5_w_attr_i64(peso_h5w *w, hid_t loc, const char *name, int64_t v);
void peso_h5_w_attr_f64(peso_h5w *w, hid_t loc, const char *name, double v);
/* A scalar variable-length string attribute; NULL writes "". */
void peso_h5_w_attr_str(peso_h5w *w, hid_t loc, const char *name, const char *s);

/* A dataset at path under loc (parent groups created as needed) of rank
 * dims (rank 0: scalar). */
void peso_h5_w_data(peso_h5w *w, hid_t loc, const char *path, hid_t ftype, hid_t mtype, int rank,
                    const hsize_t *dims, const void *buf);
/* One-dimensional integer datasets of n values. */
void peso_h5_w_i32(peso_h5w *w, hid_t loc, const char *name, const int32_t *v, size_t n);
void peso_h5_w_i64(peso_h5w *w, hid_t loc, const char *name, const int64_t *v, size_t n);

/* Output files are written under a temporary name and renamed when whole:
 * peso_h5_create_tmp creates "<path>.tmp.<pid>" (its name in tmp[n]);
 * peso_h5_commit flushes and closes it and, if nothing failed, renames it
 * to path, else removes it. Both return -1 (with the message) on failure;
 * create returns the file id otherwise. */
hid_t peso_h5_create_tmp(const char *path, char *tmp, size_t n, peso_err *err);
int peso_h5_commit(peso_h5w *w, hid_t f, const char *tmp, const char *path, peso_err *err);

/* Reader context: every reader below checks what it opens (kind, class,
 * rank, length) before it reads, and a failure fills err with
 * "<file>: <object>: <message>", with " (<reason>)" added when HDF5
 * reported one, and returns -1. Objects are named by their path from the
 * root, attributes as "<path>/@<name>" ("/blocks/1/@users"). The readers
 * live in h5_read.c. */
typedef struct peso_h5r {
    const char *file;
    peso_err *err;
} peso_h5r;

/* Fills r->err as above; returns -1. The reason is read from the current
 * error stack, which every HDF5 call clears: call this before any other. */
int peso_h5_r_fail(peso_h5r *r, const char *obj, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same about name under loc (NULL: loc itself; "@x" for attribute x). */
int peso_h5_r_fail_at(peso_h5r *r, hid_t loc, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Opens r->file read-only, HDF5's printing switched off. On failure
 * "<file>: <what> (<reason>)", what NULL meaning "cannot open as an HDF5
 * file". */
hid_t peso_h5_r_open(peso_h5r *r, const char *what);

/* The group name under loc (close it with H5Gclose). */
hid_t peso_h5_r_group(peso_h5r *r, hid_t loc, const char *name);

/* Attribute name of loc holding n values of class cls (n = 1: a scalar or
 * a one-element array), converted to mtype into out. */
int peso_h5_r_attr(peso_h5r *r, hid_t loc, const char *name, H5T_class_t cls, hid_t mtype, hssize_t n,
                   void *out);
int peso_h5_r_attr_int(peso_h5r *r, hid_t loc, const char *name, int *v);
int peso_h5_r_attr_i64(peso_h5r *r, hid_t loc, const char *name, int64_t *v);
int peso_h5_r_attr_f64(peso_h5r *r, hid_t loc, const char *name, double *v);
/* One string (variable or fixed length) into a new copy *out, set also
 * after a failed read (free it). */
int peso_h5_r_attr_str(peso_h5r *r, hid_t loc, const char *name, char **out);

/* Opens dataset name under loc of class cls and min_rank..max_rank
 * dimensions; *rank and dims[0..rank) get its extent (dims may be NULL
 * when max_rank is 0). Close it with H5Dclose. */
hid_t peso_h5_r_data_open(peso_h5r *r, hid_t loc, const char *name, H5T_class_t cls, int min_rank,
                          int max_rank, int *rank, hsize_t *dims);
/* Reads all of the open dataset d, converted to mtype, into buf (nothing
 * when d is empty). */
int peso_h5_r_data_read(peso_h5r *r, hid_t d, hid_t mtype, void *buf);

/* A one-dimensional dataset of class cls and expect values (expect < 0:
 * any number), converted to mtype (elt bytes a value) into a new buffer
 * *buf of at least one element (free it); *n gets the length (n may be
 * NULL). *buf is left alone when the dataset is refused, and set also
 * when its read fails. */
int peso_h5_r_vec(peso_h5r *r, hid_t loc, const char *name, H5T_class_t cls, hid_t mtype, size_t elt,
                  int64_t expect, void **buf, size_t *n);
int peso_h5_r_i32(peso_h5r *r, hid_t loc, const char *name, int64_t expect, int32_t **v, size_t *n);
int peso_h5_r_i64(peso_h5r *r, hid_t loc, const char *name, int64_t expect, int64_t **v, size_t *n);
int peso_h5_r_f32(peso_h5r *r, hid_t loc, const char *name, int64_t expect, float **v, size_t *n);

/* A one-dimensional string dataset (variable or fixed length, any
 * character set) of expect entries (expect < 0: any number) into new
 * copies (*out)[0..*n), "" for a null entry; set as the vector readers
 * set *buf (free each string, then the array). */
int peso_h5_r_strs(peso_h5r *r, hid_t loc, const char *name, int64_t expect, char ***out, size_t *n);
/* A scalar string dataset into a new copy *out, set also after a failed
 * read (free it). */
int peso_h5_r_str(peso_h5r *r, hid_t loc, const char *name, char **out);

#endif
