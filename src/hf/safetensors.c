#include "hf/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/atomic.h"
#include "common/json.h"

/* The official reader refuses headers above 100 MB; so do we, so that a
 * corrupt length cannot make us parse gigabytes of tensor data as JSON. */
#define ST_MAX_HEADER 100000000ull
/* Sizes and offsets above 2^53 (9 PB) cannot describe a real file; refusing
 * them keeps every accepted value exact as a double too. */
#define ST_MAX_INT (1ull << 53)

struct st_file {
    char *path;
    void *map;
    size_t size;
    const unsigned char *data; /* start of the data section */
    size_t data_size;
    char **meta_keys, **meta_vals;
    size_t nmeta;
};

struct peso_st {
    char *path;
    struct st_file *files;
    size_t nfiles;
    peso_st_tensor *t;
    size_t n, cap;
};

/* ---- dtypes ---- */

/* Element sizes in bits of the dtypes the format defines; a tensor of a
 * known dtype must have exactly numel * bits / 8 bytes. */
static const struct {
    const char *name;
    int bits;
} st_dtypes[] = {
    {"BOOL", 8}, {"U8", 8},   {"I8", 8},    {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"I16", 16},
    {"U16", 16}, {"F16", 16}, {"BF16", 16}, {"I32", 32},    {"U32", 32},    {"F32", 32},    {"C64", 64},
    {"F64", 64}, {"I64", 64}, {"U64", 64},  {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6},
};

static int dtype_bits(const char *dtype)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(st_dtypes[i].name, dtype) == 0)
            return st_dtypes[i].bits;
    return 0;
}

uint16_t peso_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN, sign kept */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float peso_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float peso_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else {
        /* subnormal: shift the mantissa up until its leading 1 is implicit */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400u));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- reading one file ---- */

static void file_free(struct st_file *f)
{
    if (f->map)
        munmap(f->map, f->size);
    for (size_t i = 0; i < f->nmeta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->path);
}

static int map_file(struct st_file *f, peso_err *err)
{
    int fd = open(f->path, O_RDONLY);
    if (fd < 0)
        return peso_errf(err, "%s: cannot open: %s", f->path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return peso_errf(err, "%s: cannot stat: %s", f->path, strerror(e));
    }
    f->size = (size_t)sb.st_size;
    if (f->size < 8) {
        close(fd);
        return peso_errf(err, "%s: file is %zu bytes, shorter than the 8-byte header length", f->path,
                         f->size);
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return peso_errf(err, "%s: cannot map: %s", f->path, strerror(e));
    }
    return 0;
}

static int parse_meta(struct st_file *f, const cJSON *m, peso_err *err)
{
    if (!cJSON_IsObject(m))
        return peso_errf(err, "%s: header key '__metadata__' must be an object of strings", f->path);
    size_t n = (size_t)cJSON_GetArraySize(m);
    f->meta_keys = peso_calloc(n, sizeof *f->meta_keys);
    f->meta_vals = peso_calloc(n, sizeof *f->meta_vals);
    for (const cJSON *v = m->child; v; v = v->next) {
        if (!cJSON_IsString(v))
            return peso_errf(err, "%s: __metadata__ key '%s' must be a string", f->path, v->string);
        f->meta_keys[f->nmeta] = peso_strdup(v->string);
        f->meta_vals[f->nmeta] = peso_strdup(v->valuestring);
        f->nmeta++;
    }
    return 0;
}

/* A size or offset: 0 when v is an integer in [0, 2^53]; -1 when it is no
 * non-negative integer; -2 when it is a larger one (beyond int64 too). */
static int get_u64(const cJSON *v, uint64_t *out)
{
    int64_t x;
    if (peso_json_int64(v, &x) != 0)
        return cJSON_IsNumber(v) && v->valuestring && !strpbrk(v->valuestring, "-.eE") ? -2 : -1;
    if (x < 0)
        return -1;
    if ((uint64_t)x > ST_MAX_INT)
        return -2;
    *out = (uint64_t)x;
    return 0;
}

static int too_large(const struct st_file *f, const char *name, const char *what, const cJSON *v,
                     peso_err *err)
{
    return peso_errf(err, "%s: tensor '%s': %s %s exceeds 2^53, the largest size supported", f->path, name,
                     what, v->valuestring);
}

static int parse_shape(const struct st_file *f, const char *name, const cJSON *shape, peso_st_tensor *t,
                       peso_err *err)
{
    if (!cJSON_IsArray(shape))
        return peso_errf(err, "%s: tensor '%s': 'shape' must be an array of integers", f->path, name);
    size_t nd = (size_t)cJSON_GetArraySize(shape);
    if (nd > PESO_ST_MAX_DIMS)
        return peso_errf(err, "%s: tensor '%s': %zu dimensions, at most %d supported", f->path, name, nd,
                         PESO_ST_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    size_t i = 0;
    for (const cJSON *v = shape->child; v; v = v->next, i++) {
        uint64_t d;
        int rc = get_u64(v, &d);
        if (rc == -2)
            return too_large(f, name, "a dimension", v, err);
        if (rc != 0)
            return peso_errf(err, "%s: tensor '%s': shape[%zu] is not a non-negative integer", f->path, name,
                             i);
        if (d != 0 && numel > (uint64_t)SIZE_MAX / 8 / d)
            return peso_errf(err, "%s: tensor '%s': shape overflows", f->path, name);
        numel *= d;
        t->shape[i] = (int64_t)d;
    }
    return 0;
}

static int parse_offsets(const struct st_file *f, const char *name, const cJSON *offs, uint64_t x[2],
                         peso_err *err)
{
    const cJSON *v = cJSON_IsArray(offs) && cJSON_GetArraySize(offs) == 2 ? offs->child : NULL;
    int rc = v ? 0 : -1;
    for (int i = 0; rc == 0 && i < 2; i++, v = v->next)
        if ((rc = get_u64(v, &x[i])) == -2)
            return too_large(f, name, "data offset", v, err);
    if (rc != 0 || x[0] > x[1])
        return peso_errf(err, "%s: tensor '%s': 'data_offsets' must be [begin, end] with 0 <= begin <= end",
                         f->path, name);
    return 0;
}

static int parse_tensor(const struct st_file *f, const char *name, const cJSON *info, peso_st_tensor *t,
                        peso_err *err)
{
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(info, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(info, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(info, "data_offsets");
    if (!cJSON_IsObject(info) || !dtype || !shape || !offs)
        return peso_errf(err, "%s: tensor '%s': expected an object with dtype, shape and data_offsets",
                         f->path, name);
    if (!cJSON_IsString(dtype) || strlen(dtype->valuestring) >= PESO_ST_DTYPE_LEN)
        return peso_errf(err, "%s: tensor '%s': 'dtype' must be a short string", f->path, name);
    strcpy(t->dtype, dtype->valuestring);
    if (parse_shape(f, name, shape, t, err) != 0)
        return -1;
    uint64_t off[2] = {0, 0};
    if (parse_offsets(f, name, offs, off, err) != 0)
        return -1;
    uint64_t begin = off[0], end = off[1];
    if (end > f->data_size)
        return peso_errf(err,
                         "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                         "] run past the end of the data section (%zu bytes): file truncated?",
                         f->path, name, begin, end, f->data_size);
    t->name = name;
    t->file = f->path;
    t->data = f->data + begin;
    t->nbytes = (size_t)(end - begin);
    int bits = dtype_bits(t->dtype);
    uint64_t want = (uint64_t)peso_st_numel(t) * (uint64_t)bits;
    if (bits && (want + 7) / 8 != t->nbytes)
        return peso_errf(err, "%s: tensor '%s': %zu bytes of data for %zu %s elements (expected %" PRIu64 ")",
                         f->path, name, t->nbytes, peso_st_numel(t), t->dtype, (want + 7) / 8);
    return 0;
}

/* Parses the header JSON (copied, since the parser needs a NUL after it);
 * JSON whitespace may follow the object, as the official reader allows,
 * and the official writer pads with spaces. */
static cJSON *parse_header(const struct st_file *f, size_t hlen, peso_err *err)
{
    char *h = peso_malloc(hlen + 1);
    memcpy(h, (const char *)f->map + 8, hlen);
    h[hlen] = '\0';
    size_t used = 0;
    cJSON *root = peso_json_parse(h, hlen, &used, err);
    size_t i = used;
    while (root && i < hlen && (h[i] == ' ' || h[i] == '\t' || h[i] == '\n' || h[i] == '\r'))
        i++;
    free(h);
    if (!root) {
        peso_err_prefix(err, "%s: header (%zu bytes) is not valid JSON", f->path, hlen);
        return NULL;
    }
    if (i < hlen) {
        cJSON_Delete(root);
        peso_errf(err, "%s: unexpected byte after the header JSON at offset %zu", f->path, 8 + i);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        peso_errf(err, "%s: header must be a JSON object", f->path);
        return NULL;
    }
    return root;
}

static void add_tensor(peso_st *st, const peso_st_tensor *t)
{
    peso_grow((void **)&st->t, &st->cap, st->n + 1, sizeof *st->t);
    st->t[st->n] = *t;
    st->t[st->n].name = peso_strdup(t->name);
    st->n++;
}

static int read_file(peso_st *st, struct st_file *f, peso_err *err)
{
    if (map_file(f, err) != 0)
        return -1;
    const unsigned char *p = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | p[i];
    if (hlen > f->size - 8)
        return peso_errf(err,
                         "%s: header length %" PRIu64
                         " runs past the end of the file (%zu bytes): file truncated or not safetensors",
                         f->path, hlen, f->size);
    if (hlen > ST_MAX_HEADER)
        return peso_errf(err, "%s: header length %" PRIu64 " exceeds the %llu-byte limit", f->path, hlen,
                         ST_MAX_HEADER);
    f->data = p + 8 + hlen;
    f->data_size = f->size - 8 - (size_t)hlen;
    cJSON *root = parse_header(f, (size_t)hlen, err);
    if (!root)
        return -1;
    int rc = 0;
    for (const cJSON *v = root->child; v && rc == 0; v = v->next) {
        if (strcmp(v->string, "__metadata__") == 0) {
            rc = parse_meta(f, v, err);
        } else {
            peso_st_tensor t = {0};
            rc = parse_tensor(f, v->string, v, &t, err);
            if (rc == 0)
                add_tensor(st, &t);
        }
    }
    cJSON_Delete(root);
    return rc;
}

static struct st_file *new_file(peso_st *st, const char *path)
{
    st->files = peso_realloc(st->files, (st->nfiles + 1) * sizeof *st->files);
    struct st_file *f = &st->files[st->nfiles++];
    memset(f, 0, sizeof *f);
    f->path = peso_strdup(path);
    return f;
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const peso_st_tensor *)a)->name, ((const peso_st_tensor *)b)->name);
}

/* Sorts the tensors by name; a name in two shards is an error. */
static int finish(peso_st *st, peso_err *err)
{
    qsort(st->t, st->n, sizeof *st->t, cmp_tensor);
    for (size_t i = 1; i < st->n; i++)
        if (strcmp(st->t[i - 1].name, st->t[i].name) == 0)
            return peso_errf(err, "%s: tensor '%s' appears in both %s and %s", st->path, st->t[i].name,
                             st->t[i - 1].file, st->t[i].file);
    return 0;
}

/* ---- sharded sets ---- */

static int shard_path(char *out, size_t n, const char *index, const char *shard)
{
    const char *slash = strrchr(index, '/');
    int dirlen = slash ? (int)(slash - index + 1) : 0;
    int w = snprintf(out, n, "%.*s%s", dirlen, index, shard);
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

static struct st_file *find_file(peso_st *st, const char *path)
{
    for (size_t i = 0; i < st->nfiles; i++)
        if (strcmp(st->files[i].path, path) == 0)
            return &st->files[i];
    return NULL;
}

/* Opens every shard the weight map names, once, in order of first mention. */
static int open_shards(peso_st *st, const cJSON *map, peso_err *err)
{
    char path[PESO_PATH_MAX];
    for (const cJSON *shard = map->child; shard; shard = shard->next) {
        const char *tname = shard->string;
        if (!cJSON_IsString(shard))
            return peso_errf(err, "%s: weight_map['%s'] must be a file name", st->path, tname);
        const char *s = shard->valuestring;
        if (strchr(s, '/') || shard_path(path, sizeof path, st->path, s) != 0)
            return peso_errf(err, "%s: weight_map['%s'] = '%s' is not a file name in the index's folder",
                             st->path, tname, s);
        if (find_file(st, path))
            continue;
        if (read_file(st, new_file(st, path), err) != 0)
            return peso_err_prefix(err, "%s: shard '%s' (for tensor '%s')", st->path, s, tname);
    }
    return 0;
}

/* Every tensor the weight map names must be in the shard it names. */
static int check_weight_map(peso_st *st, const cJSON *map, peso_err *err)
{
    char path[PESO_PATH_MAX];
    for (const cJSON *shard = map->child; shard; shard = shard->next) {
        const char *tname = shard->string;
        shard_path(path, sizeof path, st->path, shard->valuestring);
        const peso_st_tensor *t = peso_st_find(st, tname);
        if (!t || strcmp(t->file, path) != 0)
            return peso_errf(err, "%s: weight_map puts tensor '%s' in %s, which does not hold it", st->path,
                             tname, path);
    }
    return 0;
}

static int read_index(peso_st *st, peso_err *err)
{
    cJSON *root = peso_json_load(st->path, "index JSON", err);
    if (!root)
        return -1;
    const cJSON *map = peso_json_get(root, "weight_map");
    int rc;
    if (!cJSON_IsObject(map))
        rc = peso_errf(err, "%s: expected an object 'weight_map' mapping tensor names to shard files",
                       st->path);
    else if (open_shards(st, map, err) != 0 || finish(st, err) != 0)
        rc = -1;
    else
        rc = check_weight_map(st, map, err);
    cJSON_Delete(root);
    return rc;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int peso_st_open(peso_st **out, const char *path, peso_err *err)
{
    peso_st *st = peso_calloc(1, sizeof *st);
    st->path = peso_strdup(path);
    int rc;
    if (ends_with(path, ".json"))
        rc = read_index(st, err);
    else
        rc = read_file(st, new_file(st, path), err) != 0 ? -1 : finish(st, err);
    if (rc != 0) {
        peso_st_close(st);
        *out = NULL;
        return -1;
    }
    *out = st;
    return 0;
}

int peso_st_open_dir(peso_st **out, const char *dir, peso_err *err)
{
    char path[PESO_PATH_MAX];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK) == 0)
        return peso_st_open(out, path, err);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (access(path, F_OK) == 0)
        return peso_st_open(out, path, err);
    *out = NULL;
    return peso_errf(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
}

void peso_st_close(peso_st *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n; i++)
        free((char *)st->t[i].name);
    free(st->t);
    for (size_t i = 0; i < st->nfiles; i++)
        file_free(&st->files[i]);
    free(st->files);
    free(st->path);
    free(st);
}

/* ---- queries ---- */

const char *peso_st_path(const peso_st *st)
{
    return st->path;
}

size_t peso_st_count(const peso_st *st)
{
    return st->n;
}

const peso_st_tensor *peso_st_at(const peso_st *st, size_t i)
{
    return i < st->n ? &st->t[i] : NULL;
}

const peso_st_tensor *peso_st_find(const peso_st *st, const char *name)
{
    peso_st_tensor key = {.name = name};
    return bsearch(&key, st->t, st->n, sizeof *st->t, cmp_tensor);
}

int peso_st_get(const peso_st *st, const char *name, const peso_st_tensor **out, peso_err *err)
{
    *out = peso_st_find(st, name);
    if (!*out)
        return peso_errf(err, "%s: tensor '%s' not found (%zu tensors present)", st->path, name, st->n);
    return 0;
}

const char *peso_st_meta(const peso_st *st, const char *key)
{
    for (size_t i = 0; i < st->nfiles; i++)
        for (size_t k = 0; k < st->files[i].nmeta; k++)
            if (strcmp(st->files[i].meta_keys[k], key) == 0)
                return st->files[i].meta_vals[k];
    return NULL;
}

size_t peso_st_numel(const peso_st_tensor *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->shape[i];
    return n;
}

static void format_shape(char *buf, size_t n, int ndim, const int64_t *dims)
{
    size_t w = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && w < n; i++)
        w += (size_t)snprintf(buf + w, n - w, "%s%" PRId64, i ? ", " : "", dims[i]);
    if (w < n)
        snprintf(buf + w, n - w, "]");
}

int peso_st_expect(const peso_st_tensor *t, int ndim, const int64_t *dims, peso_err *err)
{
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == dims[i];
    if (ok)
        return 0;
    char want[256], got[256];
    format_shape(want, sizeof want, ndim, dims);
    format_shape(got, sizeof got, t->ndim, t->shape);
    return peso_errf(err, "%s: tensor '%s': shape %s, expected %s", t->file, t->name, got, want);
}

static int unsupported(const peso_st_tensor *t, peso_err *err)
{
    return peso_errf(err, "%s: tensor '%s': unsupported dtype %s (supported: F32, BF16, F16)", t->file,
                     t->name, t->dtype);
}

static uint16_t load16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static float load_f32(const unsigned char *p)
{
    uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int peso_st_to_f32(const peso_st_tensor *t, float *dst, peso_err *err)
{
    const unsigned char *p = t->data;
    size_t n = peso_st_numel(t);
    if (strcmp(t->dtype, "F32") == 0) {
        for (size_t i = 0; i < n; i++)
            dst[i] = load_f32(p + 4 * i);
    } else if (strcmp(t->dtype, "BF16") == 0) {
        for (size_t i = 0; i < n; i++)
            dst[i] = peso_bf16_to_f32(load16(p + 2 * i));
    } else if (strcmp(t->dtype, "F16") == 0) {
        for (size_t i = 0; i < n; i++)
            dst[i] = peso_f16_to_f32(load16(p + 2 * i));
    } else {
        return unsupported(t, err);
    }
    return 0;
}

int peso_st_to_bf16(const peso_st_tensor *t, uint16_t *dst, peso_err *err)
{
    const unsigned char *p = t->data;
    size_t n = peso_st_numel(t);
    if (strcmp(t->dtype, "F32") == 0) {
        for (size_t i = 0; i < n; i++)
            dst[i] = peso_f32_to_bf16(load_f32(p + 4 * i));
    } else if (strcmp(t->dtype, "BF16") == 0) {
        for (size_t i = 0; i < n; i++)
            dst[i] = load16(p + 2 * i);
    } else if (strcmp(t->dtype, "F16") == 0) {
        for (size_t i = 0; i < n; i++)
            dst[i] = peso_f32_to_bf16(peso_f16_to_f32(load16(p + 2 * i)));
    } else {
        return unsupported(t, err);
    }
    return 0;
}

int peso_st_load_f32(const peso_st *st, const char *name, int ndim, const int64_t *dims, float *dst,
                     peso_err *err)
{
    const peso_st_tensor *t;
    if (peso_st_get(st, name, &t, err) != 0 || peso_st_expect(t, ndim, dims, err) != 0)
        return -1;
    return peso_st_to_f32(t, dst, err);
}

/* ---- writing ---- */

struct sbuf {
    char *p;
    size_t n, cap;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    peso_grow((void **)&b->p, &b->cap, b->n + n + 1, 1);
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_put(b, tmp, (size_t)w);
}

/* A JSON string as serde_json writes it: ", \ and control characters
 * escaped, everything else (UTF-8 included) verbatim. */
static void sb_json_str(struct sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        switch (*c) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        default:
            if (*c < 0x20)
                sb_printf(b, "\\u%04x", *c);
            else
                sb_put(b, (const char *)c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static size_t wnumel(const peso_st_wtensor *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->shape[i];
    return n;
}

static size_t wbytes(const peso_st_wtensor *t)
{
    return wnumel(t) * (t->dtype == PESO_ST_WRITE_F32 ? 4 : 2);
}

/* The official writer orders data by dtype, widest first, then by name. */
static int cmp_worder(const void *a, const void *b)
{
    const peso_st_wtensor *x = *(const peso_st_wtensor *const *)a;
    const peso_st_wtensor *y = *(const peso_st_wtensor *const *)b;
    if (x->dtype != y->dtype)
        return x->dtype == PESO_ST_WRITE_F32 ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int check_wtensors(const char *path, const peso_st_wtensor *t, size_t n, peso_err *err)
{
    for (size_t i = 0; i < n; i++) {
        const peso_st_wtensor *w = &t[i];
        if (!w->name || !*w->name || strcmp(w->name, "__metadata__") == 0)
            return peso_errf(err, "%s: tensor %zu: name must be non-empty and not '__metadata__'", path, i);
        if (w->ndim < 0 || w->ndim > PESO_ST_MAX_DIMS)
            return peso_errf(err, "%s: tensor '%s': %d dimensions (0..%d supported)", path, w->name, w->ndim,
                             PESO_ST_MAX_DIMS);
        for (int d = 0; d < w->ndim; d++)
            if (w->shape[d] < 0)
                return peso_errf(err, "%s: tensor '%s': negative dimension", path, w->name);
    }
    return 0;
}

/* After sorting by (dtype, name), equal names are neighbours only within a
 * dtype; compare every pair so that a name given as F32 and BF16 is caught. */
static int check_unique(const char *path, const peso_st_wtensor **order, size_t n, peso_err *err)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(order[i]->name, order[j]->name) == 0)
                return peso_errf(err, "%s: tensor '%s' given twice", path, order[i]->name);
    return 0;
}

static void build_header(struct sbuf *h, const peso_st_wtensor **order, size_t n, const peso_st_kv *meta,
                         size_t nmeta)
{
    sb_put(h, "{", 1);
    if (nmeta > 0) {
        sb_put(h, "\"__metadata__\":{", 16);
        for (size_t i = 0; i < nmeta; i++) {
            if (i)
                sb_put(h, ",", 1);
            sb_json_str(h, meta[i].key);
            sb_put(h, ":", 1);
            sb_json_str(h, meta[i].value);
        }
        sb_put(h, "}", 1);
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const peso_st_wtensor *w = order[i];
        if (i || nmeta)
            sb_put(h, ",", 1);
        sb_json_str(h, w->name);
        sb_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", w->dtype == PESO_ST_WRITE_F32 ? "F32" : "BF16");
        for (int d = 0; d < w->ndim; d++)
            sb_printf(h, "%s%" PRId64, d ? "," : "", w->shape[d]);
        sb_printf(h, "],\"data_offsets\":[%zu,%zu]}", off, off + wbytes(w));
        off += wbytes(w);
    }
    sb_put(h, "}", 1);
    while (h->n % 8)
        sb_put(h, " ", 1);
}

static int write_data(FILE *fp, const peso_st_wtensor *w)
{
    unsigned char buf[4096];
    size_t n = wnumel(w), k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        if (w->dtype == PESO_ST_WRITE_F32) {
            memcpy(&u, &w->data[i], 4);
            buf[k++] = (unsigned char)u;
            buf[k++] = (unsigned char)(u >> 8);
            buf[k++] = (unsigned char)(u >> 16);
            buf[k++] = (unsigned char)(u >> 24);
        } else {
            u = peso_f32_to_bf16(w->data[i]);
            buf[k++] = (unsigned char)u;
            buf[k++] = (unsigned char)(u >> 8);
        }
        if (k + 4 > sizeof buf || i + 1 == n) {
            if (fwrite(buf, 1, k, fp) != k)
                return -1;
            k = 0;
        }
    }
    return 0;
}

static int write_body(FILE *fp, const struct sbuf *h, const peso_st_wtensor **order, size_t n)
{
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)((uint64_t)h->n >> (8 * i));
    if (fwrite(len, 1, 8, fp) != 8 || fwrite(h->p, 1, h->n, fp) != h->n)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (write_data(fp, order[i]) != 0)
            return -1;
    return 0;
}

static int write_atomic(const char *path, const struct sbuf *h, const peso_st_wtensor **order, size_t n,
                        peso_err *err)
{
    char tmp[PESO_PATH_MAX];
    peso_tmp_path(tmp, sizeof tmp, path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp)
        return peso_errf(err, "%s: cannot create: %s", tmp, strerror(errno));
    int bad = write_body(fp, h, order, n);
    if (fclose(fp) != 0 || bad) {
        peso_errf(err, "%s: write failed: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return peso_commit_file(tmp, path, err);
}

int peso_st_write(const char *path, const peso_st_wtensor *t, size_t n, const peso_st_kv *meta, size_t nmeta,
                  peso_err *err)
{
    if (check_wtensors(path, t, n, err) != 0)
        return -1;
    const peso_st_wtensor **order = peso_malloc(n * sizeof *order);
    for (size_t i = 0; i < n; i++)
        order[i] = &t[i];
    qsort(order, n, sizeof *order, cmp_worder);
    struct sbuf h = {0};
    int rc = check_unique(path, order, n, err);
    if (rc == 0) {
        build_header(&h, order, n, meta, nmeta);
        rc = write_atomic(path, &h, order, n, err);
    }
    free(h.p);
    free(order);
    return rc;
}
